//! A gateway process under test, and what the tests read and write around it.

use std::time::{Duration, Instant};

use shared::bus::{Bus, Publish, Stream};
use shared::config::{BusConfig, Dsn, ServiceName};
use shared::proto::{Envelope, Inbound, Outbound, Payload};
use shared::testing::{ServiceEnv, ServiceProcess, free_port};

pub const BIN: &str = env!("CARGO_BIN_EXE_gateway");

pub struct Gw {
    pub proc: ServiceProcess,
    pub public: String,
    pub senv: ServiceEnv,
    pub redis: String,
    pub bus: Bus,
    pub http: reqwest::Client,
}

impl Gw {
    /// Starts a gateway on the shared Redis with its own prefix and ports.
    pub async fn start(extra: &[(&str, &str)]) -> Self {
        Self::start_on(&shared::testing::redis_url(), None, extra).await
    }

    /// Starts a gateway on `redis`, sharing `prefix` when given (several replicas).
    pub async fn start_on(redis: &str, prefix: Option<&str>, extra: &[(&str, &str)]) -> Self {
        let mut senv = ServiceEnv::new(ServiceName::Gateway, redis, None);
        if let Some(p) = prefix {
            senv.use_prefix(p);
        }
        let public = format!("127.0.0.1:{}", free_port());
        senv.env.insert("PUBLIC_ADDR".into(), public.clone());
        // Conversations are phone numbers unless a test turns demo mode off.
        senv.env.insert("WEBCHAT_DEMO".into(), "true".into());
        senv.env.insert("BUS_RETRY_BASE_MS".into(), "50".into());
        senv.env.insert("BUS_BLOCK_MS".into(), "200".into());
        // Tests make requests faster than any client would (polling); edge tests set it.
        senv.env
            .insert("HTTP_RATE_LIMIT_PER_ADDRESS".into(), "0".into());
        for (k, v) in extra {
            senv.env.insert((*k).to_owned(), (*v).to_owned());
        }
        let public = match senv.env.get("PUBLIC_ADDR") {
            Some(a) if a.starts_with("0.0.0.0:") => a.replace("0.0.0.0", "127.0.0.1"),
            Some(a) => a.clone(),
            None => public,
        };
        let proc = senv.spawn(BIN);
        assert!(
            proc.wait_status("/healthz", 200, Duration::from_secs(60))
                .await,
            "gateway did not start:\n{}",
            proc.log_text()
        );
        let bus = Bus::with_parts(&Dsn::new(redis), &senv.prefix, BusConfig::default(), "test")
            .expect("bus");
        Self {
            proc,
            public: format!("http://{public}"),
            senv,
            redis: redis.to_owned(),
            bus,
            http: shared::http_client::client(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.senv.prefix
    }

    pub fn api(&self, contact: &str, rest: &str) -> String {
        format!("{}/chat/api/{contact}/{rest}", self.public)
    }

    /// `POST` a text; returns the status and JSON body.
    pub async fn send_text(&self, contact: &str, text: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(self.api(contact, "messages"))
            .json(&serde_json::json!({ "text": text }))
            .send()
            .await
            .expect("post");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// `POST` a multipart body.
    pub async fn send_form(
        &self,
        contact: &str,
        form: reqwest::multipart::Form,
    ) -> reqwest::Response {
        self.http
            .post(self.api(contact, "messages"))
            .multipart(form)
            .send()
            .await
            .expect("post form")
    }

    pub async fn listing(&self, contact: &str) -> Vec<serde_json::Value> {
        let r = self
            .http
            .get(self.api(contact, "messages"))
            .send()
            .await
            .expect("list");
        assert_eq!(r.status(), 200);
        r.json().await.expect("listing JSON")
    }

    /// Waits until the listing satisfies `done`; returns it.
    pub async fn wait_listing(
        &self,
        contact: &str,
        timeout: Duration,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let done = shared::testing::wait_for(timeout, async || {
            let l = self.listing(contact).await;
            done(&l).then_some(l)
        })
        .await;
        match done {
            Some(l) => l,
            None => self.listing(contact).await,
        }
    }

    /// Every inbound event published so far.
    pub async fn inbound(&self) -> Vec<Inbound> {
        read_stream(&self.bus, Stream::Inbound)
            .await
            .into_iter()
            .filter_map(|e| match e.payload {
                Some(Payload::Inbound(i)) => Some(i),
                _ => None,
            })
            .collect()
    }

    /// Publishes an outbound event the way the brain does (ordered per chat).
    pub async fn publish_outbound(&self, o: Outbound) {
        let key = gateway::ingest::chat_order_key(o.transport(), &o.chat_id);
        let env = Envelope::new("test", Payload::Outbound(o));
        self.bus
            .publisher()
            .publish(Publish::ordered(Stream::Outbound, env, key))
            .await
            .expect("publish outbound");
    }

    /// The outbound dead letters, once there are `n` (or after 15 s).
    pub async fn dead_letters(&self, n: u64) -> Vec<shared::bus::DeadLetter> {
        let dlq = self.bus.dlq();
        shared::testing::wait_for(Duration::from_secs(15), async || {
            (dlq.len(Stream::Outbound).await.expect("dlq len") >= n).then_some(())
        })
        .await;
        dlq.list(Stream::Outbound, 100).await.expect("dlq list")
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.proc.http))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

/// Decodes every envelope of a stream.
pub async fn read_stream(bus: &Bus, stream: Stream) -> Vec<Envelope> {
    shared::testing::read_envelopes(bus, stream).await
}

/// Value of a metric line (exact name with labels), 0 when absent.
pub fn metric(text: &str, name: &str) -> f64 {
    shared::testing::metric_in(text, name)
}

/// A multipart body with one `file` part.
pub fn file_form(bytes: Vec<u8>, mime: &str) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes)
            .file_name("upload")
            .mime_str(mime)
            .expect("mime"),
    )
}

/// A real 1×1 PNG.
pub const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0xF8, 0xCF, 0xC0, 0xF0,
    0x1F, 0x00, 0x05, 0x00, 0x01, 0xFF, 0x89, 0x99, 0x3D, 0x1D, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

/// Reads server-sent events from a response until `n` events arrived or `timeout`.
pub struct SseReader {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> Self {
        Self {
            stream: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next event (skipping keep-alive comments), or `None` after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                let mut ev = SseEvent {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim().to_owned();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        ev.data.push_str(v.trim_start());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        ev.id = Some(v.trim().to_owned());
                    }
                }
                if any {
                    return Some(ev);
                }
                continue;
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(b))) => self.buf.push_str(&String::from_utf8_lossy(&b)),
                _ => return None,
            }
        }
    }

    /// The next `message` event's JSON (skipping typing events).
    pub async fn next_message(&mut self, timeout: Duration) -> Option<(String, serde_json::Value)> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let ev = self.next(deadline - Instant::now()).await?;
            if ev.event == "message" {
                return Some((
                    ev.id.unwrap_or_default(),
                    serde_json::from_str(&ev.data).expect("event JSON"),
                ));
            }
        }
        None
    }
}
