//! One trace across publisher and consumer: the consumer's span continues the trace context
//! carried in the envelope, and what the handler publishes carries it on — as seen by a local
//! OTLP/HTTP receiver.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use prost::Message;
use redis::AsyncCommands;
use shared::bus::{Bus, Publish, Stream};
use shared::config::{BusConfig, Dsn};
use shared::proto::{Envelope, Inbound, Payload};
use shared::testing::{KeyPrefix, ServiceProcess, TempDir, redis_url};

// The parts of opentelemetry-proto's ExportTraceServiceRequest this test reads.
#[derive(Clone, PartialEq, Message)]
struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}
#[derive(Clone, PartialEq, Message)]
struct ResourceSpans {
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpans>,
}
#[derive(Clone, PartialEq, Message)]
struct ScopeSpans {
    #[prost(message, repeated, tag = "2")]
    spans: Vec<Span>,
}
#[derive(Clone, PartialEq, Message)]
struct Span {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    name: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_spans_continue_the_publishers_trace() {
    let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let otlp = format!("http://{}", shared::testing::serve_on_own_thread(app));

    let url = redis_url();
    let keys = KeyPrefix::new(&url);
    let prefix = keys.prefix.clone();
    let dir = TempDir::new("trace");
    let env: HashMap<String, String> = HashMap::from([
        ("REDIS_URL".into(), url.clone()),
        ("STREAM_PREFIX".into(), prefix.clone()),
        (
            "DATA_DIR".into(),
            dir.path().join("data").display().to_string(),
        ),
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), otlp),
    ]);
    let worker = ServiceProcess::spawn(
        env!("CARGO_BIN_EXE_bus-worker"),
        &env,
        "127.0.0.1:1",
        dir.path(),
    );

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let mut envelope = Envelope::new(
        "test",
        Payload::Inbound(Inbound {
            message_id: "m1".into(),
            chat_id: "c1".into(),
            ..Default::default()
        }),
    );
    envelope.trace_context = HashMap::from([(
        "traceparent".to_owned(),
        format!("00-{trace_id}-{parent}-01"),
    )]);
    let bus = Bus::with_parts(
        &Dsn::new(url.clone()),
        &prefix,
        BusConfig::default(),
        "test",
    )
    .unwrap();
    bus.publisher()
        .publish(Publish::ordered(Stream::Inbound, envelope, "c1"))
        .await
        .unwrap();

    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let answer = shared::testing::wait_for(Duration::from_secs(20), async || {
        let r: redis::streams::StreamRangeReply = conn
            .xrange_all(bus.keys().stream(Stream::Outbound))
            .await
            .unwrap();
        r.ids
            .first()
            .map(|e| Envelope::decode(e.get::<Vec<u8>>("e").unwrap().as_slice()).unwrap())
    })
    .await
    .unwrap_or_else(|| panic!("no answer:\n{}", worker.log_text()));
    let carried = answer
        .trace_context
        .get("traceparent")
        .cloned()
        .unwrap_or_default();
    assert!(
        carried.starts_with(&format!("00-{trace_id}-")),
        "answer carries {carried:?}"
    );
    assert!(
        !carried.contains(parent),
        "the answer's parent must be the consumer span"
    );

    // Exporting is batched: SIGTERM flushes it.
    let status = worker.terminate_async(Duration::from_secs(20)).await;
    assert!(
        status.0.is_some_and(|s| s.success()),
        "{}",
        status.1.log_text()
    );

    let bodies = received.lock().unwrap().clone();
    let spans: Vec<Span> = bodies
        .iter()
        .filter_map(|b| ExportTraceServiceRequest::decode(b.as_ref()).ok())
        .flat_map(|r| r.resource_spans)
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect();
    let handle = spans
        .iter()
        .find(|s| s.name == "bus.handle")
        .unwrap_or_else(|| {
            panic!(
                "no bus.handle span among {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(hex(&handle.trace_id), trace_id);
    assert_eq!(hex(&handle.parent_span_id), parent);
    assert!(
        carried.contains(&hex(&handle.span_id)),
        "answer's parent is the handle span"
    );
}
