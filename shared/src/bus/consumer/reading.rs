//! Reading: new entries in batches, each contact's entries in order (lanes), dispatched to
//! jobs.

use super::*;

pub(super) async fn read_loop<H: Handler>(inner: &Arc<Inner<H>>, shutdown: &CancellationToken) {
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

pub(super) fn redis_down(stream: Stream, e: &redis::RedisError) {
    metrics::gauge!(m::REDIS_UP).set(0.0);
    tracing::warn!(stream = stream.name(), error = %e, "redis unreachable; retrying");
}

pub(super) async fn sleep_or_cancel(d: Duration, token: &CancellationToken) {
    tokio::select! {
        () = token.cancelled() => {},
        () = tokio::time::sleep(d) => {},
    }
}

/// `XREADGROUP … COUNT <slots> [BLOCK ms] STREAMS <stream> >`; unused slots are returned.
pub(super) async fn read_batch<H: Handler>(
    inner: &Arc<Inner<H>>,
    conn: &mut MultiplexedConnection,
    slots: OwnedSemaphorePermit,
    block: Option<Duration>,
) -> crate::bus::Result<Vec<Taken>> {
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
pub(super) async fn check_heads<H>(
    inner: &Inner<H>,
    conn: &mut MultiplexedConnection,
    taken: &mut [Taken],
) {
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
pub(super) fn dispatch<H: Handler>(inner: &Arc<Inner<H>>, t: Taken) {
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
                dead_letter(
                    &inner,
                    &t.entry,
                    t.deliveries,
                    DeadLetterKind::Undecodable,
                    &reason,
                )
                .await;
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
            max_deliveries: inner.bus.config().max_deliveries,
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
pub(super) async fn lane_worker<H: Handler>(inner: Arc<Inner<H>>, token: String) {
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

pub(super) fn decode(entry: &StreamId) -> Result<Envelope, String> {
    let Some(Value::BulkString(bytes)) = entry.map.get("e") else {
        return Err("entry has no envelope field `e`".to_owned());
    };
    let env = Envelope::decode(bytes.as_slice()).map_err(|e| format!("protobuf: {e}"))?;
    if env.payload.is_none() {
        return Err("envelope has no payload".to_owned());
    }
    Ok(env)
}
