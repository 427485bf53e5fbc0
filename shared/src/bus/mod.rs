//! The Redis Streams bus every service uses.
//!
//! # Keys
//!
//! Every key of a deployment lives under one Redis Cluster hash tag made of `STREAM_PREFIX`
//! (default `sb`), so multi-key transactions (publish + ack) are legal on a cluster:
//!
//! | key | what |
//! |---|---|
//! | `{sb}:v1:inbound` | gateway → brain: customer messages (group `brain`) |
//! | `{sb}:v1:outbound` | brain, ledger → gateway: replies, notices, alerts (group `gateway`) |
//! | `{sb}:v1:transcribe` | brain → transcriber: voice-note jobs (group `transcriber`) |
//! | `{sb}:v1:transcripts` | transcriber → brain: transcripts (group `brain`) |
//! | `{sb}:v1:usage` | brain, transcriber → ledger: usage records (group `ledger`) |
//! | `{sb}:v1:<stream>:dlq` | dead letters of that stream: original fields + `dlq_reason`, `dlq_deliveries`, … |
//! | `{sb}:v1:<stream>:order:<token>` | ids of unacknowledged entries of one contact, in stream order |
//! | `{sb}:v1:<stream>:errors` | hash: entry id → last handler error (for the dead letter's reason) |
//!
//! Each entry holds the prost-encoded [`Envelope`](crate::proto::Envelope) in field `e` and, for
//! ordered entries, an order token (a hash of the contact) in field `k`.
//!
//! # Guarantees
//!
//! - At-least-once: an entry is acknowledged only after its handler returned, in the same
//!   `MULTI`/`EXEC` as the events the handler produced; handlers are idempotent.
//! - Groups are created from id `0` (with `MKSTREAM`) by publishers and consumers alike, so
//!   nothing published before a consumer first starts is skipped.
//! - A failing entry is retried in place (it stays pending, with backoff) and dead-lettered after
//!   `MAX_DELIVERIES`; an undecodable entry is dead-lettered at once.
//! - Entries idle for `RECLAIM_IDLE_SECS` (a crashed or stuck consumer) are taken over with
//!   `XAUTOCLAIM`; a live consumer renews the idle time of every entry it holds, so slow work is
//!   never stolen.
//! - Per-contact order: entries published with the same order key are handled one at a time, in
//!   stream order, across all replicas — each entry waits until it is the head of its contact's
//!   order list, and leaves the list in the transaction that acknowledges it.
//! - Trimming is by `MINID` below the oldest entry that some group has not yet acknowledged.

mod consumer;
mod dlq;
mod forget;
mod keys;
mod maintenance;
pub mod metrics;
mod publish;
mod scripts;

use redis::aio::ConnectionManager;

pub use consumer::{Consumer, Delivery, HandleError, Handler, Reason};
pub use dlq::{DeadLetter, DeadLetterKind, Dlq};
pub use forget::{Erased, Person};
pub use keys::{Keys, MediaKeys, Stream};
pub use maintenance::{StreamStats, memory_of, trim_acknowledged, trim_dead_letters};
pub use publish::{Publish, Publisher};

use crate::config::{BusConfig, CommonConfig};

/// Errors of the bus itself.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Redis failed or could not be reached.
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(
        "unknown stream {0:?} (expected one of inbound, outbound, transcribe, transcripts, usage, webhooks, events)"
    )]
    /// A stream name that is not one of ours.
    UnknownStream(String),
    #[error("the {stream} consumer is stuck: it held entries and finished none for {idle_secs} s")]
    /// A consumer held entries and finished none for too long.
    Stuck {
        /// Its stream.
        stream: Stream,
        /// How long it made no progress.
        idle_secs: u64,
    },
}

/// The bus's results.
pub type Result<T, E = BusError> = std::result::Result<T, E>;

/// Everything needed to publish to and consume from the streams of one deployment.
#[derive(Clone)]
pub struct Bus {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    cfg: BusConfig,
    service: &'static str,
}

impl Bus {
    /// Lazily connected: a service starts while Redis is down and connects when it can.
    pub fn new(common: &CommonConfig) -> Result<Self> {
        Self::with_parts(
            &common.redis_url,
            &common.stream_prefix,
            common.bus.clone(),
            common.service.as_str(),
        )
    }

    /// A bus on `url` with these settings; `service` names the consumers and producers.
    pub fn with_parts(
        url: &crate::config::Dsn,
        prefix: &str,
        cfg: BusConfig,
        service: &'static str,
    ) -> Result<Self> {
        let client = crate::redis_conn::client(url)?;
        let conn = crate::redis_conn::manager(&client)?;
        Ok(Self {
            client,
            conn,
            keys: Keys::new(prefix),
            cfg,
            service,
        })
    }

    /// The key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The bus settings.
    pub fn config(&self) -> &BusConfig {
        &self.cfg
    }

    /// The service this process is.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The shared auto-reconnecting connection (never use it for blocking reads).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The Redis client (for dedicated connections such as subscriptions).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// `PING`.
    pub async fn ping(&self) -> Result<()> {
        let mut c = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut c).await?;
        Ok(())
    }

    /// Creates the consuming group of `stream` from id `0` if missing (idempotent).
    pub async fn ensure_group(&self, stream: Stream) -> Result<()> {
        let mut c = self.conn.clone();
        // A consumer's handlers publish (and name keys) from here on.
        self.keys.ready(&mut c).await?;
        let res: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.keys.stream(stream))
            .arg(stream.group())
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await;
        match res {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Bus::ensure_group`] for several streams, retried until Redis answers or `shutdown`.
    pub async fn ensure_groups_retrying(
        &self,
        streams: &[Stream],
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<()> {
        let mut delay = std::time::Duration::from_millis(100);
        loop {
            let mut failed = None;
            for s in streams {
                if let Err(e) = self.ensure_group(*s).await {
                    failed = Some(e);
                    break;
                }
            }
            match failed {
                None => return Ok(()),
                Some(e) => {
                    tracing::warn!(error = %e, "cannot create consumer groups yet; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return Err(e),
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(std::time::Duration::from_secs(5));
                }
            }
        }
    }

    /// A publisher on this bus.
    pub fn publisher(&self) -> Publisher {
        Publisher::new(self.conn.clone(), self.keys.clone(), self.service)
    }

    /// The bytes of a media item the gateway stored (`None`: expired or evicted). Only keys
    /// of this deployment's media store are read, whatever an event says.
    pub async fn read_media(&self, media: &crate::proto::MediaRef) -> Result<Option<Vec<u8>>> {
        if self.keys.media().item_of(&media.key).is_none() {
            return Ok(None);
        }
        Ok(redis::cmd("GET")
            .arg(&media.key)
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// The dead letters.
    pub fn dlq(&self) -> Dlq {
        Dlq::new(self.conn.clone(), self.keys.clone())
    }

    /// A consumer of `stream` in its group, named after this replica.
    pub fn consumer<H: Handler>(&self, stream: Stream, handler: std::sync::Arc<H>) -> Consumer<H> {
        Consumer::new(self.clone(), stream, consumer_name(self.service), handler)
    }

    /// Whether entries published after the one being handled wait behind it in its order
    /// (`order_token` of its [`Delivery`]): the contact wrote again.
    pub async fn later_in_order(&self, stream: Stream, order_token: Option<&str>) -> Result<bool> {
        let Some(token) = order_token else {
            return Ok(false);
        };
        Ok(self.order_len(stream, token).await? > 1)
    }

    /// Entries of order `token` not yet acknowledged (its order list's length).
    async fn order_len(&self, stream: Stream, token: &str) -> Result<u64> {
        Ok(redis::cmd("LLEN")
            .arg(self.keys().order(stream, token))
            .query_async(&mut self.connection())
            .await?)
    }

    /// How many entries with `order_key` wait to be handled (published, not acknowledged).
    pub async fn waiting_in_order(&self, stream: Stream, order_key: &str) -> Result<u64> {
        self.keys().ready(&mut self.connection()).await?;
        self.order_len(stream, &self.keys().hash(order_key)).await
    }

    /// Depth, pending and lag of a stream for metrics and `dlq list`.
    pub async fn stats(&self, stream: Stream) -> Result<StreamStats> {
        maintenance::stats(&mut self.conn.clone(), &self.keys, stream).await
    }
}

/// A consumer name unique to this replica: `<service>-<hostname>-<random>`.
pub fn consumer_name(service: &str) -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let suffix: u32 = rand::random();
    format!("{service}-{host}-{suffix:08x}")
}
