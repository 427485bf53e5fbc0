//! The consumer: blocking batched reads on a dedicated connection, bounded concurrency,
//! per-contact order, retries in place, renewal of held entries, reclaiming of idle ones,
//! dead-lettering, and a bounded drain on shutdown.

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
use super::{Bus, BusError, scripts};
use crate::proto::Envelope;

/// What a handler gets.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Stream entry id (changes if the event is replayed from the DLQ; not a business key).
    pub entry_id: String,
    pub stream: Stream,
    pub envelope: Envelope,
    /// 1 on the first delivery.
    pub deliveries: u32,
    /// The order token when the entry was published with an order key.
    pub order_token: Option<String>,
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
        while let Some(e) = next {
            // Many errors already show their source in their own text: shown once.
            let text = e.to_string();
            if !shown.contains(&text) {
                write!(f, ": {text}")?;
                shown = text;
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
    pub async fn run(self, shutdown: CancellationToken) -> super::Result<()> {
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
        let maint = tokio::spawn(super::maintenance::maintenance_loop(
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
    pub async fn process_available(&self) -> super::Result<usize> {
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

async fn read_loop<H: Handler>(inner: &Arc<Inner<H>>, shutdown: &CancellationToken) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut backoff = Duration::from_millis(100);
    let block = inner.bus.config().block;
    loop {
        // Hold at least one slot before reading: bounded read-ahead.
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            p = inner.slots.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let mut slots = first;
        let extra = inner
            .slots
            .available_permits()
            .min(inner.bus.config().batch.saturating_sub(1));
        if extra > 0
            && let Ok(more) = inner.slots.clone().try_acquire_many_owned(extra as u32)
        {
            slots.merge(more);
        }
        if shutdown.is_cancelled() {
            return;
        }
        let c = match &mut conn {
            Some(c) => c,
            None => match crate::redis_conn::blocking_connection(inner.bus.client()).await {
                Ok(c) => {
                    backoff = Duration::from_millis(100);
                    conn.insert(c)
                }
                Err(e) => {
                    redis_down(inner.stream, &e);
                    drop(slots);
                    sleep_or_cancel(backoff, shutdown).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        match read_batch(inner, c, slots, Some(block)).await {
            Ok(mut taken) => {
                metrics::gauge!(m::REDIS_UP).set(1.0);
                check_heads(inner, c, &mut taken).await;
                for t in taken {
                    dispatch(inner, t);
                }
            }
            Err(e) => {
                if let BusError::Redis(re) = &e
                    && re.code() == Some("NOGROUP")
                {
                    // The stream or group was deleted under us (FLUSHALL, a restored backup).
                    let _ = inner.bus.ensure_group(inner.stream).await;
                } else {
                    tracing::warn!(stream = inner.stream.name(), error = %e, "read failed; reconnecting");
                    metrics::gauge!(m::REDIS_UP).set(0.0);
                    conn = None;
                    sleep_or_cancel(backoff, shutdown).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

fn redis_down(stream: Stream, e: &redis::RedisError) {
    metrics::gauge!(m::REDIS_UP).set(0.0);
    tracing::warn!(stream = stream.name(), error = %e, "redis unreachable; retrying");
}

async fn sleep_or_cancel(d: Duration, token: &CancellationToken) {
    tokio::select! {
        () = token.cancelled() => {},
        () = tokio::time::sleep(d) => {},
    }
}

/// `XREADGROUP … COUNT <slots> [BLOCK ms] STREAMS <stream> >`; unused slots are returned.
async fn read_batch<H: Handler>(
    inner: &Arc<Inner<H>>,
    conn: &mut MultiplexedConnection,
    slots: OwnedSemaphorePermit,
    block: Option<Duration>,
) -> super::Result<Vec<Taken>> {
    let count = slots.num_permits();
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(inner.group)
        .arg(&inner.name)
        .arg("COUNT")
        .arg(count);
    if let Some(b) = block {
        cmd.arg("BLOCK").arg(b.as_millis() as u64);
    }
    cmd.arg("STREAMS").arg(&inner.stream_key).arg(">");
    let reply: Option<StreamReadReply> = cmd.query_async(conn).await?;
    let entries: Vec<StreamId> = reply
        .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
        .unwrap_or_default();
    let mut slots = Some(slots);
    let mut taken = Vec::with_capacity(entries.len());
    for entry in entries {
        // One slot each; the last entry takes what is left (never more entries than slots).
        let slot = match slots.as_mut() {
            Some(s) if s.num_permits() > 1 => s.split(1),
            _ => slots.take(),
        };
        taken.push(Taken {
            entry,
            deliveries: 1,
            slot,
            head: false,
        });
    }
    Ok(taken)
}

/// Marks the entries of a read that are the heads of their contacts' order lists, in one
/// round trip (each would otherwise ask on its own before running). On an error nothing is
/// marked: each asks for its turn as usual.
async fn check_heads<H>(inner: &Inner<H>, conn: &mut MultiplexedConnection, taken: &mut [Taken]) {
    let ordered: Vec<(usize, String)> = taken
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            t.entry
                .get::<String>("k")
                .filter(|k| !k.is_empty())
                .map(|k| (i, k))
        })
        .collect();
    if ordered.is_empty() {
        return;
    }
    let script = redis::Script::new(scripts::ORDER_HEADS);
    let mut inv = script.key(&inner.stream_key);
    inv.arg(inner.group);
    for (i, token) in &ordered {
        inv.key(inner.bus.keys().order(inner.stream, token))
            .arg(&taken[*i].entry.id);
    }
    match inv.invoke_async::<Vec<i64>>(conn).await {
        Ok(heads) => {
            for ((i, _), go) in ordered.iter().zip(heads) {
                taken[*i].head = go == 1;
            }
        }
        Err(e) => tracing::debug!(error = %e, "order check of a read failed; each entry asks"),
    }
}

/// Decodes an entry and queues it on its contact's lane (or runs it at once if unordered).
fn dispatch<H: Handler>(inner: &Arc<Inner<H>>, t: Taken) {
    let stream = inner.stream.name();
    metrics::counter!(m::CONSUMED, "stream" => stream).increment(1);
    let id = t.entry.id.clone();
    {
        let mut held = inner.held.lock().expect("held lock");
        if !held.insert(id.clone()) {
            // Reclaimed an entry this consumer is already working on.
            return;
        }
    }
    let envelope = match decode(&t.entry) {
        Ok(e) => e,
        Err(reason) => {
            let inner = inner.clone();
            inner.tracker.clone().spawn(async move {
                dead_letter(&inner, &t.entry, t.deliveries, "undecodable", &reason).await;
                finish(&inner, &t.entry.id, t.slot);
            });
            return;
        }
    };
    let order_token: Option<String> = t.entry.get::<String>("k").filter(|k| !k.is_empty());
    let key = EntryKey::parse(&id);
    let job = Job {
        delivery: Delivery {
            entry_id: id,
            stream: inner.stream,
            envelope,
            deliveries: t.deliveries,
            order_token: order_token.clone(),
        },
        slot: t.slot,
        head: t.head,
    };
    let Some(token) = order_token else {
        let inner2 = inner.clone();
        inner
            .tracker
            .spawn(async move { run_job(&inner2, job).await });
        return;
    };
    let mut lanes = inner.lanes.lock().expect("lanes lock");
    if let Some(lane) = lanes.get_mut(&token) {
        lane.jobs.insert(key, job);
        lane.wake.notify_one();
        return;
    }
    lanes.insert(
        token.clone(),
        Lane {
            jobs: BTreeMap::from([(key, job)]),
            wake: Arc::new(Notify::new()),
        },
    );
    let inner2 = inner.clone();
    inner
        .tracker
        .spawn(async move { lane_worker(inner2, token).await });
}

/// Runs one contact's entries, oldest first; exits (and removes its lane) when none is left.
async fn lane_worker<H: Handler>(inner: Arc<Inner<H>>, token: String) {
    loop {
        let (key, job, wake) = {
            let mut lanes = inner.lanes.lock().expect("lanes lock");
            let Some(lane) = lanes.get_mut(&token) else {
                return;
            };
            match lane.jobs.pop_first() {
                Some((key, job)) => (key, job, lane.wake.clone()),
                None => {
                    lanes.remove(&token);
                    return;
                }
            }
        };
        let turn = if job.head {
            Turn::Go
        } else {
            wait_turn(&inner, &token, &job.delivery.entry_id, &wake).await
        };
        match turn {
            Turn::Go => run_job(&inner, job).await,
            Turn::Stopping => {
                release(&inner, &job.delivery.entry_id).await;
                finish(&inner, &job.delivery.entry_id, job.slot);
            }
            Turn::Woken => {
                // Another entry joined the lane: it may be older than this one (reclaimed
                // from a dead consumer). Put this one back and take the oldest.
                let mut lanes = inner.lanes.lock().expect("lanes lock");
                lanes
                    .get_mut(&token)
                    .expect("a lane lives while its worker runs")
                    .jobs
                    .insert(key, job);
            }
        }
    }
}

fn decode(entry: &StreamId) -> Result<Envelope, String> {
    let Some(Value::BulkString(bytes)) = entry.map.get("e") else {
        return Err("entry has no envelope field `e`".to_owned());
    };
    let env = Envelope::decode(bytes.as_slice()).map_err(|e| format!("protobuf: {e}"))?;
    if env.payload.is_none() {
        return Err("envelope has no payload".to_owned());
    }
    Ok(env)
}

/// The text of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Handles an entry whose turn it is, with retries in place, and acknowledges or
/// dead-letters it.
async fn run_job<H: Handler>(inner: &Arc<Inner<H>>, job: Job) {
    let Job {
        mut delivery, slot, ..
    } = job;
    let id = delivery.entry_id.clone();
    let stream = inner.stream.name();
    let max = inner.bus.config().max_deliveries;

    if inner.stopping.is_cancelled() {
        release(inner, &id).await;
        finish(inner, &id, slot);
        return;
    }
    if delivery.deliveries > max {
        let reason = last_error(inner, &id)
            .await
            .unwrap_or_else(|| "handler never completed (consumer died or stalled)".to_owned());
        let entry = entry_of(&delivery);
        dead_letter(
            inner,
            &entry,
            delivery.deliveries - 1,
            "max_deliveries",
            &format!("exceeded MAX_DELIVERIES={max}; last error: {reason}"),
        )
        .await;
        finish(inner, &id, slot);
        return;
    }

    let mut busy = 0u32;
    loop {
        let span = tracing::info_span!(
            "bus.handle",
            stream,
            kind = delivery.envelope.payload.as_ref().map_or("", |p| p.kind()),
            event_id = %delivery.envelope.event_id,
            deliveries = delivery.deliveries,
        );
        crate::telemetry::set_parent_from(&span, &delivery.envelope.trace_context);
        let started = Instant::now();
        // A panicking handler is a failed attempt like any other: its entry is retried, then
        // dead-lettered, and never wedges its contact.
        let call = std::panic::AssertUnwindSafe(inner.handler.handle(delivery.clone()))
            .catch_unwind()
            .instrument(span.clone());
        let outcome = tokio::select! {
            r = call => Some(r.unwrap_or_else(|panic| {
                metrics::counter!(m::PANICS, "stream" => stream).increment(1);
                Err(HandleError::Retry(format!("handler panicked: {}", panic_message(&*panic)).into()))
            })),
            () = inner.hard_stop.cancelled() => None,
        };
        metrics::histogram!(m::HANDLE_SECONDS, "stream" => stream)
            .record(started.elapsed().as_secs_f64());
        match outcome {
            None => {
                release(inner, &id).await;
                break;
            }
            Some(Ok(outputs)) => {
                ack(inner, &delivery, &outputs).instrument(span).await;
                break;
            }
            Some(Err(HandleError::Permanent(reason))) => {
                metrics::counter!(m::FAILED, "stream" => stream).increment(1);
                tracing::warn!(parent: &span, stream, error = %reason, "handler failed permanently");
                dead_letter(
                    inner,
                    &entry_of(&delivery),
                    delivery.deliveries,
                    "permanent",
                    &reason.to_string(),
                )
                .await;
                break;
            }
            Some(Err(HandleError::Busy(reason))) => {
                metrics::counter!(m::BUSY, "stream" => stream).increment(1);
                tracing::debug!(parent: &span, stream, error = %reason, "dependency busy; trying again");
                busy += 1;
                tokio::select! {
                    () = tokio::time::sleep(busy_delay(busy)) => {},
                    () = inner.stopping.cancelled() => {
                        release(inner, &id).await;
                        break;
                    }
                }
            }
            Some(Err(HandleError::Retry(reason))) => {
                inner.progressed();
                metrics::counter!(m::FAILED, "stream" => stream).increment(1);
                tracing::warn!(parent: &span, stream, error = %reason, deliveries = delivery.deliveries, "handler failed; will retry");
                if delivery.deliveries >= max {
                    dead_letter(
                        inner,
                        &entry_of(&delivery),
                        delivery.deliveries,
                        "max_deliveries",
                        &format!("exceeded MAX_DELIVERIES={max}; last error: {reason}"),
                    )
                    .await;
                    break;
                }
                let wait = retry_delay(inner.bus.config(), delivery.deliveries);
                delivery.deliveries += 1;
                // Record the attempt in Redis (delivery count, last error) so a consumer that
                // takes the entry over knows its history.
                record_retry(inner, &id, delivery.deliveries, &reason.to_string()).await;
                tokio::select! {
                    () = tokio::time::sleep(wait) => {},
                    () = inner.stopping.cancelled() => {
                        release(inner, &id).await;
                        break;
                    }
                }
            }
        }
    }
    finish(inner, &id, slot);
}

fn finish<H>(inner: &Inner<H>, id: &str, slot: Option<OwnedSemaphorePermit>) {
    inner.held.lock().expect("held lock").remove(id);
    inner.progressed();
    drop(slot);
}

/// Exponential backoff with ±20% jitter: base · 2^(n-1), capped.
fn retry_delay(cfg: &crate::config::BusConfig, attempt: u32) -> Duration {
    let exp = cfg
        .retry_base
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)));
    let capped = exp.min(cfg.retry_max);
    let jitter: f64 = rand::random_range(0.8..1.2);
    capped.mul_f64(jitter)
}

/// Backoff while a dependency is busy: short (a write lock is held for milliseconds),
/// 5 ms doubling to 500 ms, with ±20% jitter.
fn busy_delay(attempt: u32) -> Duration {
    let ms = 5u64
        .saturating_mul(1 << attempt.saturating_sub(1).min(7))
        .min(500);
    Duration::from_millis(ms).mul_f64(rand::random_range(0.8..1.2))
}

/// How waiting for a turn ended.
enum Turn {
    /// This entry is the head of its contact's order list: handle it.
    Go,
    /// Another entry joined this lane; look again at which is oldest.
    Woken,
    /// Shutdown: hand the entry back.
    Stopping,
}

/// Polls until the entry is the head of its contact's order list (across replicas).
async fn wait_turn<H>(inner: &Inner<H>, token: &str, id: &str, wake: &Notify) -> Turn {
    let keys = inner.bus.keys();
    let order_key = keys.order(inner.stream, token);
    let script = redis::Script::new(scripts::ORDER_TURN);
    let mut conn = inner.bus.connection();
    let mut wait = Duration::from_millis(5);
    loop {
        let res: redis::RedisResult<i64> = script
            .key(&order_key)
            .key(&inner.stream_key)
            .arg(inner.group)
            .arg(id)
            .invoke_async(&mut conn)
            .await;
        match res {
            Ok(1) => return Turn::Go,
            Ok(_) => {}
            Err(e) => {
                // Waiting on Redis is not being stuck.
                inner.progressed();
                tracing::warn!(error = %e, "order check failed; retrying");
            }
        }
        tokio::select! {
            () = inner.stopping.cancelled() => return Turn::Stopping,
            () = wake.notified() => return Turn::Woken,
            () = tokio::time::sleep(wait) => {},
        }
        wait = (wait * 2).min(Duration::from_millis(200));
    }
}

/// Watches for a stuck consumer: entries held, none finished for longer than the handler's
/// deadline plus `RECLAIM_IDLE_SECS`. Returns how long it was idle when it found it stuck.
async fn watchdog<H: Handler>(
    inner: Arc<Inner<H>>,
    stop: CancellationToken,
    shutdown: CancellationToken,
) -> Option<Duration> {
    let limit = inner.handler.deadline() + inner.bus.config().reclaim_idle;
    let mut tick = tokio::time::interval(
        (limit / 20).clamp(Duration::from_millis(100), Duration::from_secs(1)),
    );
    loop {
        tokio::select! {
            () = stop.cancelled() => return None,
            _ = tick.tick() => {}
        }
        let held = inner.held.lock().expect("held lock").len();
        let mut progress = inner.progress.lock().expect("progress lock");
        if held == 0 {
            *progress = Instant::now();
            continue;
        }
        let idle = progress.elapsed();
        if idle > limit {
            drop(progress);
            let stream = inner.stream.name();
            metrics::counter!(m::STUCK, "stream" => stream).increment(1);
            crate::http::set_unhealthy(format!("the {stream} consumer is stuck"));
            tracing::error!(
                stream,
                held,
                idle_secs = idle.as_secs(),
                limit_secs = limit.as_secs(),
                "consumer stuck: holds entries and finished none; stopping the process so it is restarted"
            );
            shutdown.cancel();
            return Some(idle);
        }
    }
}

/// Publishes the handler's outputs and acknowledges the entry in one `MULTI`/`EXEC`; retried
/// until Redis accepts it (or the drain deadline passes: then the entry stays pending and is
/// redelivered, which idempotent handlers absorb).
async fn ack<H>(inner: &Inner<H>, delivery: &Delivery, outputs: &[Publish]) {
    let keys = inner.bus.keys();
    let mut pipe = redis::pipe();
    pipe.atomic();
    for p in outputs {
        add_publish(&mut pipe, keys, p);
        pipe.ignore();
    }
    add_ack(
        &mut pipe,
        inner,
        keys,
        &delivery.entry_id,
        delivery.order_token.as_deref(),
        // A first delivery has no recorded error to clear.
        delivery.deliveries > 1,
    );
    if exec_retrying(inner, &pipe, "ack").await {
        metrics::counter!(m::ACKED, "stream" => inner.stream.name()).increment(1);
        for p in outputs {
            metrics::counter!(m::PUBLISHED, "stream" => p.stream.name()).increment(1);
        }
    }
}

fn add_ack<H>(
    pipe: &mut redis::Pipeline,
    inner: &Inner<H>,
    keys: &Keys,
    id: &str,
    token: Option<&str>,
    clear_error: bool,
) {
    pipe.cmd("XACK")
        .arg(&inner.stream_key)
        .arg(inner.group)
        .arg(id)
        .ignore();
    if let Some(t) = token {
        pipe.cmd("LREM")
            .arg(keys.order(inner.stream, t))
            .arg(1)
            .arg(id)
            .ignore();
    }
    if clear_error {
        pipe.cmd("HDEL")
            .arg(keys.errors(inner.stream))
            .arg(id)
            .ignore();
    }
}

async fn exec_retrying<H>(inner: &Inner<H>, pipe: &redis::Pipeline, what: &str) -> bool {
    let mut conn = inner.bus.connection();
    let mut wait = Duration::from_millis(20);
    loop {
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => return true,
            Err(e) => {
                // Waiting on Redis is not being stuck.
                inner.progressed();
                metrics::gauge!(m::REDIS_UP).set(0.0);
                tracing::warn!(stream = inner.stream.name(), error = %e, "{what} failed; retrying");
            }
        }
        tokio::select! {
            () = inner.hard_stop.cancelled() => return false,
            () = tokio::time::sleep(wait) => {},
        }
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

/// Moves an entry to `<stream>:dlq` with its original fields plus why, and acknowledges it.
async fn dead_letter<H>(
    inner: &Inner<H>,
    entry: &StreamId,
    deliveries: u32,
    kind: &'static str,
    reason: &str,
) {
    let keys = inner.bus.keys();
    let token = entry.get::<String>("k").filter(|k| !k.is_empty());
    let mut pipe = redis::pipe();
    pipe.atomic();
    let xadd = pipe.cmd("XADD").arg(keys.dlq(inner.stream)).arg("*");
    for (field, value) in &entry.map {
        if let Value::BulkString(b) = value {
            xadd.arg(field).arg(b.as_slice());
        }
    }
    xadd.arg("dlq_reason")
        .arg(reason)
        .arg("dlq_kind")
        .arg(kind)
        .arg("dlq_deliveries")
        .arg(deliveries)
        .arg("dlq_source_id")
        .arg(&entry.id)
        .arg("dlq_group")
        .arg(inner.group)
        .arg("dlq_consumer")
        .arg(&inner.name)
        .arg("dlq_at_ms")
        .arg(crate::ids::now_ms())
        .ignore();
    add_ack(&mut pipe, inner, keys, &entry.id, token.as_deref(), true);
    if exec_retrying(inner, &pipe, "dead-letter").await {
        metrics::counter!(m::DEAD_LETTERED, "stream" => inner.stream.name(), "reason" => kind)
            .increment(1);
        tracing::error!(
            stream = inner.stream.name(),
            entry_id = %entry.id,
            deliveries,
            reason = kind,
            error = %reason,
            "entry dead-lettered"
        );
    }
}

/// Rebuilds the raw entry of a decoded delivery (for the dead-letter stream).
fn entry_of(d: &Delivery) -> StreamId {
    let mut map = HashMap::new();
    map.insert(
        "e".to_owned(),
        Value::BulkString(d.envelope.encode_to_vec()),
    );
    if let Some(t) = &d.order_token {
        map.insert("k".to_owned(), Value::BulkString(t.as_bytes().to_vec()));
    }
    StreamId {
        id: d.entry_id.clone(),
        map,
        ..Default::default()
    }
}

async fn record_retry<H>(inner: &Inner<H>, id: &str, deliveries: u32, reason: &str) {
    let mut pipe = redis::pipe();
    pipe.cmd("HSET")
        .arg(inner.bus.keys().errors(inner.stream))
        .arg(id)
        .arg(truncate(reason, 500))
        .ignore();
    pipe.cmd("XCLAIM")
        .arg(&inner.stream_key)
        .arg(inner.group)
        .arg(&inner.name)
        .arg(0)
        .arg(id)
        .arg("RETRYCOUNT")
        .arg(deliveries)
        .arg("JUSTID")
        .ignore();
    if let Err(e) = pipe.query_async::<()>(&mut inner.bus.connection()).await {
        tracing::warn!(error = %e, "could not record the retry in redis");
    }
}

async fn last_error<H>(inner: &Inner<H>, id: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(inner.bus.keys().errors(inner.stream))
        .arg(id)
        .query_async::<Option<String>>(&mut inner.bus.connection())
        .await
        .ok()
        .flatten()
}

/// Hands an entry back: its idle time is set past the reclaim timeout, so another consumer
/// takes it over at its next reclaim pass.
async fn release<H>(inner: &Inner<H>, id: &str) {
    let idle = inner.bus.config().reclaim_idle.as_millis() as u64 + 1;
    let res: redis::RedisResult<Value> = redis::cmd("XCLAIM")
        .arg(&inner.stream_key)
        .arg(inner.group)
        .arg(&inner.name)
        .arg(0)
        .arg(id)
        .arg("IDLE")
        .arg(idle)
        .arg("JUSTID")
        .query_async(&mut inner.bus.connection())
        .await;
    if let Err(e) = res {
        tracing::warn!(error = %e, "could not release an entry; it will be reclaimed after the idle timeout");
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The renewal/reclaim period: a third of the idle timeout, so an owner renews at least twice
/// before anyone could take over.
fn side_period(cfg: &crate::config::BusConfig) -> Duration {
    (cfg.reclaim_idle / 3).max(Duration::from_millis(100))
}

async fn renew_loop<H: Handler>(inner: Arc<Inner<H>>, stop: CancellationToken) {
    let script = redis::Script::new(scripts::RENEW);
    let mut tick = tokio::time::interval(side_period(inner.bus.config()));
    let mut conn: ConnectionManager = inner.bus.connection();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ids: Vec<String> = inner
            .held
            .lock()
            .expect("held lock")
            .iter()
            .cloned()
            .collect();
        for chunk in ids.chunks(256) {
            let mut inv = script.key(&inner.stream_key);
            inv.arg(inner.group).arg(&inner.name);
            for id in chunk {
                inv.arg(id);
            }
            match inv.invoke_async::<Vec<String>>(&mut conn).await {
                Ok(renewed) if renewed.len() < chunk.len() => {
                    tracing::warn!(
                        stream = inner.stream.name(),
                        lost = chunk.len() - renewed.len(),
                        "entries were taken over by another consumer"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "renewing held entries failed"),
            }
        }
    }
}

/// How often idle entries are looked for: a sixth of the idle timeout, so an entry of a dead
/// consumer is taken over at most that long after it went idle (renewal stays at a third).
fn reclaim_period(cfg: &crate::config::BusConfig) -> Duration {
    (cfg.reclaim_idle / 6).max(Duration::from_millis(100))
}

async fn reclaim_loop<H: Handler>(inner: Arc<Inner<H>>, stop: CancellationToken) {
    let cfg = inner.bus.config().clone();
    let mut tick = tokio::time::interval(reclaim_period(&cfg));
    let mut conn = inner.bus.connection();
    let mut cursor = "0-0".to_owned();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = inner.stopping.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Reclaimed entries take no slots (see `Taken`): they are what the entries holding
        // the slots may be waiting for. Their number is bounded by what dead consumers held.
        loop {
            match reclaim_once(&inner, &mut conn, &cursor, &cfg).await {
                Ok((next, taken)) => {
                    let n = taken.len();
                    for t in taken {
                        tracing::info!(stream = inner.stream.name(), entry_id = %t.entry.id, deliveries = t.deliveries, "reclaimed an idle entry");
                        metrics::counter!(m::RECLAIMED, "stream" => inner.stream.name())
                            .increment(1);
                        dispatch(&inner, t);
                    }
                    let wrapped = next == "0-0";
                    cursor = next;
                    if wrapped || n == 0 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reclaim failed");
                    break;
                }
            }
        }
    }
}

async fn reclaim_once<H: Handler>(
    inner: &Arc<Inner<H>>,
    conn: &mut ConnectionManager,
    cursor: &str,
    cfg: &crate::config::BusConfig,
) -> super::Result<(String, Vec<Taken>)> {
    let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
        .arg(&inner.stream_key)
        .arg(inner.group)
        .arg(&inner.name)
        .arg(cfg.reclaim_idle.as_millis() as u64)
        .arg(cursor)
        .arg("COUNT")
        .arg(cfg.batch.clamp(1, 256))
        .query_async(conn)
        .await?;
    if !reply.deleted_ids.is_empty() {
        // In the pending list but gone from the stream: nothing to handle; acknowledge.
        tracing::warn!(
            count = reply.deleted_ids.len(),
            "pending entries were deleted from the stream"
        );
        let mut c = redis::cmd("XACK");
        c.arg(&inner.stream_key).arg(inner.group);
        for id in &reply.deleted_ids {
            c.arg(id);
        }
        c.query_async::<i64>(conn).await?;
    }
    let mut taken = Vec::new();
    for entry in reply.claimed {
        let pending: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(&inner.stream_key)
            .arg(inner.group)
            .arg(&entry.id)
            .arg(&entry.id)
            .arg(1)
            .query_async(conn)
            .await?;
        let deliveries = pending.ids.first().map_or(1, |p| p.times_delivered as u32);
        taken.push(Taken {
            entry,
            deliveries,
            head: false,
            slot: None,
        });
    }
    Ok((reply.next_stream_id, taken))
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
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
