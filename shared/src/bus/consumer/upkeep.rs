//! Upkeep beside the reading: renewing held entries, reclaiming a dead consumer's, and the
//! watchdog that stops a stuck consumer.

use super::*;

/// Watches for a stuck consumer: entries held, none finished for longer than the handler's
/// deadline plus `RECLAIM_IDLE_SECS`. Returns how long it was idle when it found it stuck.
pub(super) async fn watchdog<H: Handler>(
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
            crate::liveness::set_unhealthy(format!("the {stream} consumer is stuck"));
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

/// The renewal/reclaim period: a third of the idle timeout, so an owner renews at least twice
/// before anyone could take over.
pub(super) fn side_period(cfg: &crate::config::BusConfig) -> Duration {
    (cfg.reclaim_idle / 3).max(Duration::from_millis(100))
}

pub(super) async fn renew_loop<H: Handler>(inner: Arc<Inner<H>>, stop: CancellationToken) {
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
pub(super) fn reclaim_period(cfg: &crate::config::BusConfig) -> Duration {
    (cfg.reclaim_idle / 6).max(Duration::from_millis(100))
}

pub(super) async fn reclaim_loop<H: Handler>(inner: Arc<Inner<H>>, stop: CancellationToken) {
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

pub(super) async fn reclaim_once<H: Handler>(
    inner: &Arc<Inner<H>>,
    conn: &mut ConnectionManager,
    cursor: &str,
    cfg: &crate::config::BusConfig,
) -> crate::bus::Result<(String, Vec<Taken>)> {
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
