//! Runs one consumer of the shared bus with the test handler until SIGTERM.
//!
//! Variables: the common ones (`REDIS_URL`, `STREAM_PREFIX`, `RECLAIM_IDLE_SECS`,
//! `MAX_DELIVERIES`, `BUS_*`, `OTEL_EXPORTER_OTLP_ENDPOINT`, …) plus `WORKER_STREAM` (default
//! `inbound`), `WORKER_SLEEP_MS`, `WORKER_FAIL`, `WORKER_ANSWER` (default true),
//! `WORKER_RECORD` (default true), `WORKER_PANIC_FIRST`, `WORKER_DEADLINE_MS`, and
//! `WORKER_HTTP_ADDR` (optional: serve `/healthz`, `/readyz`, `/metrics` there).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bustool::{Behaviour, TestHandler};
use shared::bus::{Bus, Stream};
use shared::config::{Env, ServiceName};

fn main() -> ExitCode {
    let loaded = shared::service::load_config(ServiceName::Brain, Env::from_process(), |env, _| {
        let stream: Stream = env
            .opt("WORKER_STREAM", "a stream name")
            .unwrap_or(Stream::Inbound);
        let behaviour = Behaviour {
            sleep: Duration::from_millis(env.int_in("WORKER_SLEEP_MS", 0, 0, 3_600_000)),
            fail: env.flag("WORKER_FAIL", false),
            answer: env.flag("WORKER_ANSWER", true),
            record: env.flag("WORKER_RECORD", true),
            panic_first: env.flag("WORKER_PANIC_FIRST", false),
            deadline: env
                .opt::<u64>("WORKER_DEADLINE_MS", "milliseconds")
                .map(Duration::from_millis),
        };
        let http: Option<std::net::SocketAddr> = env.opt("WORKER_HTTP_ADDR", "host:port");
        (stream, behaviour, http)
    });
    let (common, (stream, behaviour, http)) = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bus-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let guard = match shared::telemetry::init(&common) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("bus-worker: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let res = rt.block_on(async move {
        let shutdown = shared::shutdown::on_signals();
        let bus = Bus::new(&common)?;
        let http_stop = tokio_util::sync::CancellationToken::new();
        let _stop_http = http_stop.clone().drop_guard();
        if let Some(addr) = http {
            // The internal listener: `/healthz` tells a stuck consumer.
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let readiness = shared::http::Readiness {
                bus: bus.clone(),
                db: None,
                extra: Vec::new(),
            };
            let metrics = shared::metrics::install("bus-worker");
            let router = shared::http::internal_router(readiness, metrics);
            // Serves until the consumer has stopped: `/healthz` answers during the drain.
            tokio::spawn(shared::http::serve(listener, router, http_stop.clone()));
        }
        let name = shared::bus::consumer_name("bus-worker");
        let handler = Arc::new(TestHandler {
            bus: bus.clone(),
            name: name.clone(),
            behaviour,
        });
        bus.consumer(stream, handler).run(shutdown).await?;
        anyhow::Ok(())
    });
    drop(rt);
    drop(guard);
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bus-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
