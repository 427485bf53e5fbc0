//! The consumer: blocking batched reads on a dedicated connection, bounded concurrency,
//! per-contact order, retries in place, renewal of held entries, reclaiming of idle ones,
//! dead-lettering, and a bounded drain on shutdown.

mod job;
mod reading;
mod upkeep;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use prost::Message;
use redis::Value;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::keys::{Keys, Stream};
use super::metrics as m;
use super::publish::{Publish, add_publish};
use super::{Bus, BusError, DeadLetterKind, scripts};
use crate::proto::Envelope;
use job::*;
use reading::*;
use upkeep::*;

/// What a handler gets.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Stream entry id (changes if the event is replayed from the DLQ; not a business key).
    pub entry_id: String,
    /// The stream it came from.
    pub stream: Stream,
    /// The event.
    pub envelope: Envelope,
    /// 1 on the first delivery.
    pub deliveries: u32,
    /// The order token when the entry was published with an order key.
    pub order_token: Option<String>,
    /// `MAX_DELIVERIES`: the delivery with this number is the last ([`Delivery::is_last`]).
    pub max_deliveries: u32,
}

impl Delivery {
    /// The last delivery `MAX_DELIVERIES` allows: a [`HandleError::Retry`] now sends the entry
    /// to the dead letters.
    pub fn is_last(&self) -> bool {
        self.deliveries >= self.max_deliveries
    }

    /// "Tell the customer, then dead-letter on the last delivery", written once: a
    /// [`HandleError::Retry`] on the [last](Delivery::is_last) delivery runs `tell` (an
    /// apology, a failure transcript: the customer hears something rather than nothing) and
    /// becomes [`HandleError::Permanent`], whose reason says so and keeps the failure as its
    /// cause. Anything else passes through untouched, and `tell` is not called. When telling
    /// fails, that error is returned (retryable: the entry is dead-lettered as
    /// `max_deliveries`, with the reason it could not be told).
    pub async fn tell_on_last<T, Fut>(
        &self,
        result: Result<T, HandleError>,
        tell: impl FnOnce(Reason) -> Fut,
    ) -> Result<T, HandleError>
    where
        Fut: Future<Output = Result<(), HandleError>>,
    {
        match result {
            Err(HandleError::Retry(reason)) if self.is_last() => {
                tell(reason.clone()).await?;
                Err(HandleError::Permanent(Reason::new(
                    format!(
                        "after {} deliveries; the customer was told",
                        self.deliveries
                    ),
                    reason,
                )))
            }
            other => other,
        }
    }
}

/// How a handler failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HandleError {
    /// Transient: the entry stays pending and is tried again after a backoff, up to
    /// `MAX_DELIVERIES` deliveries in all.
    #[error("retryable: {0}")]
    Retry(#[source] Reason),
    /// Will never succeed: dead-lettered now.
    #[error("permanent: {0}")]
    Permanent(#[source] Reason),
    /// A dependency is saturated (the database's write lock is taken, its pool is exhausted):
    /// backpressure, not a failure. Tried again after a backoff without counting a delivery,
    /// so it never turns into a dead letter or an apology; a consumer that makes no progress
    /// at all for too long is reported stuck instead.
    #[error("busy: {0}")]
    Busy(#[source] Reason),
}

/// Any error, as a cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a handler failed: what it was doing, and the error that stopped it (kept as the
/// source, so the chain reaches the logs and the dead letter). Shown as the whole chain:
/// `media store: connection refused (os error 111)`.
#[derive(Debug, Clone)]
pub struct Reason {
    what: String,
    cause: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl Reason {
    /// `what` failed because of `cause`.
    pub fn new(what: impl Into<String>, cause: impl Into<BoxError>) -> Self {
        Self {
            what: what.into(),
            cause: Some(std::sync::Arc::from(cause.into())),
        }
    }

    /// An error that says itself what failed (`cannot run ffmpeg: …`): shown as its chain.
    pub fn from_error(cause: impl Into<BoxError>) -> Self {
        Self {
            what: String::new(),
            cause: Some(std::sync::Arc::from(cause.into())),
        }
    }
}

impl From<String> for Reason {
    fn from(what: String) -> Self {
        Self { what, cause: None }
    }
}

impl From<&str> for Reason {
    fn from(what: &str) -> Self {
        what.to_owned().into()
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)?;
        let mut next: Option<&(dyn std::error::Error + 'static)> =
            self.cause.as_deref().map(|c| c as _);
        let mut shown = String::new();
        let mut separator = if self.what.is_empty() { "" } else { ": " };
        while let Some(e) = next {
            // Many errors already show their source in their own text: shown once.
            let text = e.to_string();
            if !shown.contains(&text) {
                write!(f, "{separator}{text}")?;
                shown = text;
                separator = ": ";
            }
            next = e.source();
        }
        Ok(())
    }
}

impl std::error::Error for Reason {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_deref().map(|c| c as _)
    }
}

impl HandleError {
    /// Worth another delivery: `what` failed because of `cause`.
    pub fn retry(what: impl Into<String>, cause: impl Into<BoxError>) -> Self {
        Self::Retry(Reason::new(what, cause))
    }

    /// Will never succeed: `what` failed because of `cause`.
    pub fn permanent(what: impl Into<String>, cause: impl Into<BoxError>) -> Self {
        Self::Permanent(Reason::new(what, cause))
    }

    /// A database error: [`HandleError::Busy`] when the database is only saturated
    /// ([`crate::db::is_busy`]), otherwise worth another delivery.
    pub fn database(e: sqlx::Error) -> Self {
        if crate::db::is_busy(&e) {
            HandleError::Busy(Reason::new("database", e))
        } else {
            HandleError::Retry(Reason::new("database", e))
        }
    }
}

/// Handles one entry. Returns the events to publish; they are published atomically with the
/// acknowledgement of the entry. Must be idempotent (delivery is at-least-once).
pub trait Handler: Send + Sync + 'static {
    /// Handles one delivery (see the trait's docs).
    fn handle(
        &self,
        delivery: Delivery,
    ) -> impl Future<Output = Result<Vec<Publish>, HandleError>> + Send;

    /// The longest one call of [`Handler::handle`] may take (its own deadlines). A consumer
    /// that holds entries and finishes none for this long plus `RECLAIM_IDLE_SECS` is stuck.
    fn deadline(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// A raw entry taken from the stream. A read entry holds one of the consumer's
/// `BUS_CONCURRENCY` slots; a reclaimed one holds none, so taking over a dead consumer's
/// entries never waits for slots held by entries queued behind those very entries.
struct Taken {
    entry: StreamId,
    deliveries: u32,
    slot: Option<OwnedSemaphorePermit>,
    /// Known to be the head of its contact's order list (checked with the rest of its read):
    /// it runs without asking again. A head stays the head until it is finished.
    head: bool,
}

struct Inner<H> {
    bus: Bus,
    stream: Stream,
    stream_key: String,
    group: &'static str,
    name: String,
    handler: Arc<H>,
    /// `BUS_CONCURRENCY` slots: read entries not yet finished (running or waiting their turn).
    slots: Arc<Semaphore>,
    /// Entries this consumer holds (queued or in progress): renewed so nobody steals them.
    held: Mutex<HashSet<String>>,
    /// The entries of each order token waiting for their turn, by stream id, each drained by
    /// one worker task at a time.
    lanes: Mutex<HashMap<String, Lane>>,
    tracker: TaskTracker,
    /// Cancelled when reading stops (shutdown requested).
    stopping: CancellationToken,
    /// Cancelled when the drain deadline passed: in-progress handlers are abandoned.
    hard_stop: CancellationToken,
    /// When this consumer last finished an entry, held none, or waited on Redis: the clock of
    /// the stuck watchdog.
    progress: Mutex<Instant>,
}

impl<H> Inner<H> {
    fn progressed(&self) {
        *self.progress.lock().expect("progress lock") = Instant::now();
    }
}

/// One contact's entries on this consumer. Ordered by stream id, not by arrival: an entry
/// reclaimed from a dead consumer is older than the ones this consumer read after it, and
/// must go first (the order list in Redis says so too).
struct Lane {
    jobs: BTreeMap<EntryKey, Job>,
    /// Woken when an entry joins the lane, so a worker waiting for its turn looks again.
    wake: Arc<Notify>,
}

/// A stream id (`<ms>-<seq>`) as a sortable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct EntryKey(u64, u64);

impl EntryKey {
    fn parse(id: &str) -> Self {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        Self(ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    }
}

struct Job {
    delivery: Delivery,
    slot: Option<OwnedSemaphorePermit>,
    head: bool,
}

/// A consumer of one stream in its group. Cheap to build; [`Consumer::run`] runs it.
pub struct Consumer<H> {
    inner: Arc<Inner<H>>,
}

impl<H: Handler> Consumer<H> {
    pub(crate) fn new(bus: Bus, stream: Stream, name: String, handler: Arc<H>) -> Self {
        let stream_key = bus.keys().stream(stream);
        let slots = Arc::new(Semaphore::new(bus.config().concurrency));
        Self {
            inner: Arc::new(Inner {
                stream,
                stream_key,
                group: stream.group(),
                name,
                handler,
                slots,
                held: Mutex::new(HashSet::new()),
                lanes: Mutex::new(HashMap::new()),
                tracker: TaskTracker::new(),
                stopping: CancellationToken::new(),
                hard_stop: CancellationToken::new(),
                progress: Mutex::new(Instant::now()),
                bus,
            }),
        }
    }

    /// This consumer's name in the group.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Runs until `shutdown`: reads, reclaims, renews and trims; then stops reading, lets
    /// in-flight work finish within `SHUTDOWN_GRACE_SECS`, and hands back what is left.
    ///
    /// A consumer that holds entries and finishes none for longer than its handler's deadline
    /// plus `RECLAIM_IDLE_SECS` is stuck: it marks the process unhealthy (`/healthz` 503),
    /// cancels `shutdown` (the process's token: the whole service stops) and returns
    /// [`BusError::Stuck`], so the process exits non-zero and its supervisor restarts it.
    pub async fn run(self, shutdown: CancellationToken) -> crate::bus::Result<()> {
        let inner = self.inner;
        if let Err(e) = inner
            .bus
            .ensure_groups_retrying(&[inner.stream], &shutdown)
            .await
        {
            // Asked to stop while Redis was still unreachable: a clean stop, not a failure.
            if shutdown.is_cancelled() {
                return Ok(());
            }
            return Err(e);
        }
        tracing::info!(stream = inner.stream.name(), consumer = %inner.name, "consumer started");

        let side = CancellationToken::new();
        let renew = tokio::spawn(renew_loop(inner.clone(), side.clone()));
        let reclaim = tokio::spawn(reclaim_loop(inner.clone(), side.clone()));
        let maint = tokio::spawn(crate::bus::maintenance::maintenance_loop(
            inner.bus.clone(),
            inner.stream,
            side.clone(),
        ));
        let watchdog = tokio::spawn(watchdog(inner.clone(), side.clone(), shutdown.clone()));

        read_loop(&inner, &shutdown).await;

        // Drain: nothing new is read or reclaimed; queued entries not yet started are released.
        inner.stopping.cancel();
        inner.tracker.close();
        let grace = inner.bus.config().shutdown_grace;
        if tokio::time::timeout(grace, inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                stream = inner.stream.name(),
                "in-flight work did not finish within the shutdown grace; releasing it"
            );
            inner.hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), inner.tracker.wait()).await;
        }
        side.cancel();
        let (_, _, _, stuck) = tokio::join!(renew, reclaim, maint, watchdog);
        tracing::info!(stream = inner.stream.name(), "consumer stopped");
        match stuck {
            Ok(Some(idle)) => Err(BusError::Stuck {
                stream: inner.stream,
                idle_secs: idle.as_secs(),
            }),
            _ => Ok(()),
        }
    }

    /// Reads and handles what is available now, then returns (tests drive consumers this way
    /// when they need determinism). Returns how many entries were taken.
    pub async fn process_available(&self) -> crate::bus::Result<usize> {
        let inner = &self.inner;
        inner.bus.ensure_group(inner.stream).await?;
        let mut conn = crate::redis_conn::blocking_connection(inner.bus.client()).await?;
        let mut total = 0;
        loop {
            let slot = inner
                .slots
                .clone()
                .acquire_many_owned(1)
                .await
                .expect("open");
            let taken = read_batch(inner, &mut conn, slot, None).await?;
            if taken.is_empty() {
                break;
            }
            total += taken.len();
            for t in taken {
                dispatch(inner, t);
            }
        }
        inner.tracker.close();
        inner.tracker.wait().await;
        inner.tracker.reopen();
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_with_jitter_and_a_cap() {
        let cfg = crate::config::BusConfig {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(1000),
            ..Default::default()
        };
        for (attempt, base) in [
            (1, 100.0),
            (2, 200.0),
            (3, 400.0),
            (4, 800.0),
            (5, 1000.0),
            (30, 1000.0),
        ] {
            let d = retry_delay(&cfg, attempt).as_secs_f64() * 1000.0;
            assert!(
                d >= base * 0.8 - 0.001 && d <= base * 1.2 + 0.001,
                "attempt {attempt}: {d}"
            );
        }
    }

    #[test]
    fn a_reason_shows_its_causes_once_each_and_keeps_them_as_sources() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let r = Reason::new("media store", io());
        assert_eq!(r.to_string(), "media store: no such file");
        assert!(std::error::Error::source(&r).is_some());
        // An error that names what failed itself: no empty prefix.
        let r = Reason::from_error(io());
        assert_eq!(r.to_string(), "no such file");
        // Nested: each text once, even when an outer one repeats an inner one.
        let r = Reason::new("after 3 deliveries", Reason::new("media store", io()));
        assert_eq!(
            r.to_string(),
            "after 3 deliveries: media store: no such file"
        );
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
