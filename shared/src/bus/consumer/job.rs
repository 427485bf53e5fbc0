//! One entry's job: waiting for its contact's turn, the handler (panics caught), then the
//! acknowledgement with the outputs, a retry with backoff, or a dead letter.

use super::*;

/// The text of a caught panic.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Handles an entry whose turn it is, with retries in place, and acknowledges or
/// dead-letters it.
pub(super) async fn run_job<H: Handler>(inner: &Arc<Inner<H>>, job: Job) {
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
            DeadLetterKind::MaxDeliveries,
            &format!("exceeded MAX_DELIVERIES={max}; last error: {reason}"),
        )
        .await;
        finish(inner, &id, slot);
        return;
    }

    let mut busy = 0u32;
    loop {
        let (outcome, span) = attempt(inner, &delivery).await;
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
                    DeadLetterKind::Permanent,
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
                if !retry_later(inner, &mut delivery, &reason, &span).await {
                    break;
                }
            }
        }
    }
    finish(inner, &id, slot);
}

/// One call of the handler, panics caught as failures; `None` when the hard stop came first.
async fn attempt<H: Handler>(
    inner: &Arc<Inner<H>>,
    delivery: &Delivery,
) -> (Option<Result<Vec<Publish>, HandleError>>, tracing::Span) {
    let stream = inner.stream.name();
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
    (outcome, span)
}

/// A failed attempt: dead-lettered past `MAX_DELIVERIES`, else recorded and tried again after
/// a backoff. `false` when the entry is done with here (dead-lettered, or released because
/// the consumer is stopping).
async fn retry_later<H>(
    inner: &Inner<H>,
    delivery: &mut Delivery,
    reason: &Reason,
    span: &tracing::Span,
) -> bool {
    let stream = inner.stream.name();
    let max = inner.bus.config().max_deliveries;
    let id = delivery.entry_id.clone();
    inner.progressed();
    metrics::counter!(m::FAILED, "stream" => stream).increment(1);
    tracing::warn!(parent: span, stream, error = %reason, deliveries = delivery.deliveries, "handler failed; will retry");
    if delivery.deliveries >= max {
        dead_letter(
            inner,
            &entry_of(delivery),
            delivery.deliveries,
            DeadLetterKind::MaxDeliveries,
            &format!("exceeded MAX_DELIVERIES={max}; last error: {reason}"),
        )
        .await;
        return false;
    }
    let wait = retry_delay(inner.bus.config(), delivery.deliveries);
    delivery.deliveries += 1;
    // Record the attempt in Redis (delivery count, last error) so a consumer that takes the
    // entry over knows its history.
    record_retry(inner, &id, delivery.deliveries, &reason.to_string()).await;
    // Waiting out a backoff is work, not a stuck consumer: the watchdog hears of it every few
    // seconds (a wait of `BUS_RETRY_MAX_MS` may be longer than its limit).
    let until = tokio::time::Instant::now() + wait;
    loop {
        let step = until
            .saturating_duration_since(tokio::time::Instant::now())
            .min(std::time::Duration::from_secs(5));
        if step.is_zero() {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(step) => inner.progressed(),
            () = inner.stopping.cancelled() => {
                release(inner, &id).await;
                return false;
            }
        }
    }
}

pub(super) fn finish<H>(inner: &Inner<H>, id: &str, slot: Option<OwnedSemaphorePermit>) {
    inner.held.lock().expect("held lock").remove(id);
    inner.progressed();
    drop(slot);
}

/// Exponential backoff with ±20% jitter: base · 2^(n-1), capped.
pub(super) fn retry_delay(cfg: &crate::config::BusConfig, attempt: u32) -> Duration {
    let exp = cfg
        .retry_base
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)));
    let capped = exp.min(cfg.retry_max);
    let jitter: f64 = rand::random_range(0.8..1.2);
    capped.mul_f64(jitter)
}

/// Backoff while a dependency is busy: short (a write lock is held for milliseconds),
/// 5 ms doubling to 500 ms, with ±20% jitter.
pub(super) fn busy_delay(attempt: u32) -> Duration {
    let ms = 5u64
        .saturating_mul(1 << attempt.saturating_sub(1).min(7))
        .min(500);
    Duration::from_millis(ms).mul_f64(rand::random_range(0.8..1.2))
}

/// How waiting for a turn ended.
pub(super) enum Turn {
    /// This entry is the head of its contact's order list: handle it.
    Go,
    /// Another entry joined this lane; look again at which is oldest.
    Woken,
    /// Shutdown: hand the entry back.
    Stopping,
}

/// Polls until the entry is the head of its contact's order list (across replicas).
pub(super) async fn wait_turn<H>(inner: &Inner<H>, token: &str, id: &str, wake: &Notify) -> Turn {
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

/// Publishes the handler's outputs and acknowledges the entry in one `MULTI`/`EXEC`; retried
/// until Redis accepts it (or the drain deadline passes: then the entry stays pending and is
/// redelivered, which idempotent handlers absorb).
pub(super) async fn ack<H>(inner: &Inner<H>, delivery: &Delivery, outputs: &[Publish]) {
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

pub(super) fn add_ack<H>(
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

pub(super) async fn exec_retrying<H>(inner: &Inner<H>, pipe: &redis::Pipeline, what: &str) -> bool {
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
pub(super) async fn dead_letter<H>(
    inner: &Inner<H>,
    entry: &StreamId,
    deliveries: u32,
    kind: DeadLetterKind,
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
        .arg(kind.label())
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
        metrics::counter!(m::DEAD_LETTERED, "stream" => inner.stream.name(), "reason" => kind.label())
            .increment(1);
        tracing::error!(
            stream = inner.stream.name(),
            entry_id = %entry.id,
            deliveries,
            reason = kind.label(),
            error = %reason,
            "entry dead-lettered"
        );
    }
}

/// Rebuilds the raw entry of a decoded delivery (for the dead-letter stream).
pub(super) fn entry_of(d: &Delivery) -> StreamId {
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

pub(super) async fn record_retry<H>(inner: &Inner<H>, id: &str, deliveries: u32, reason: &str) {
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

pub(super) async fn last_error<H>(inner: &Inner<H>, id: &str) -> Option<String> {
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
pub(super) async fn release<H>(inner: &Inner<H>, id: &str) {
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

pub(super) fn truncate(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}
