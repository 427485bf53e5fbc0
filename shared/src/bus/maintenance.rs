//! Stream gauges and trimming.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::{StreamInfoGroupsReply, StreamPendingReply};
use tokio_util::sync::CancellationToken;

use super::keys::{Keys, Stream};
use super::metrics as m;
use super::{Bus, Result};

/// Depth, pending and lag of one stream and its group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Entries in the stream.
    pub length: u64,
    /// Entries read and not yet acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to the group (`None` when Redis cannot tell).
    pub lag: Option<u64>,
    /// Dead letters.
    pub dlq_length: u64,
}

pub(crate) async fn stats(
    conn: &mut ConnectionManager,
    keys: &Keys,
    stream: Stream,
) -> Result<StreamStats> {
    let key = keys.stream(stream);
    let (length, dlq_length): (u64, u64) = redis::pipe()
        .cmd("XLEN")
        .arg(&key)
        .cmd("XLEN")
        .arg(keys.dlq(stream))
        .query_async(conn)
        .await?;
    let groups: redis::RedisResult<StreamInfoGroupsReply> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&key)
        .query_async(conn)
        .await;
    let (pending, lag) = match groups {
        Ok(g) => g
            .groups
            .iter()
            .find(|g| g.name == stream.group())
            .map_or((0, None), |g| (g.pending as u64, g.lag.map(|l| l as u64))),
        Err(_) => (0, None),
    };
    Ok(StreamStats {
        length,
        pending,
        lag,
        dlq_length,
    })
}

/// The next possible stream id after `id` (`a-b` → `a-(b+1)`).
fn next_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    let ms: u64 = ms.parse().ok()?;
    let seq: u64 = seq.parse().ok()?;
    Some(match seq.checked_add(1) {
        Some(s) => (ms, s),
        None => (ms + 1, 0),
    })
}

fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Trims `stream` by `MINID` below the oldest entry that some group has not acknowledged (the
/// oldest pending entry, or the first not yet delivered). Returns how many entries went.
pub async fn trim_acknowledged(
    conn: &mut ConnectionManager,
    keys: &Keys,
    stream: Stream,
) -> Result<u64> {
    let key = keys.stream(stream);
    let groups: StreamInfoGroupsReply = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&key)
        .query_async(conn)
        .await
    {
        Ok(g) => g,
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => {
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    if groups.groups.is_empty() {
        // Nobody consumes it yet: keep everything.
        return Ok(0);
    }
    let mut floor: Option<(u64, u64)> = None;
    for g in &groups.groups {
        let mut candidate = next_id(&g.last_delivered_id);
        if g.pending > 0 {
            let summary: StreamPendingReply = redis::cmd("XPENDING")
                .arg(&key)
                .arg(&g.name)
                .query_async(conn)
                .await?;
            if let StreamPendingReply::Data(d) = summary
                && let Some(oldest) = parse_id(&d.start_id)
            {
                candidate = Some(candidate.map_or(oldest, |c| c.min(oldest)));
            }
        }
        let Some(c) = candidate else {
            return Ok(0);
        };
        floor = Some(floor.map_or(c, |f| f.min(c)));
    }
    let Some((ms, seq)) = floor else {
        return Ok(0);
    };
    let trimmed: u64 = redis::cmd("XTRIM")
        .arg(&key)
        .arg("MINID")
        .arg(format!("{ms}-{seq}"))
        .query_async(conn)
        .await?;
    Ok(trimmed)
}

/// Trims `stream`'s dead letters older than `retention` (by their id's time: when they were
/// dead-lettered). Returns how many were removed.
pub async fn trim_dead_letters(
    conn: &mut ConnectionManager,
    keys: &Keys,
    stream: Stream,
    retention: Duration,
) -> redis::RedisResult<u64> {
    let oldest = crate::ids::now_ms().saturating_sub(retention.as_millis() as i64);
    redis::cmd("XTRIM")
        .arg(keys.dlq(stream))
        .arg("MINID")
        .arg(format!("{}-0", oldest.max(0)))
        .query_async(conn)
        .await
}

/// Updates the stream gauges every few seconds and trims every `BUS_TRIM_INTERVAL_SECS`.
pub(crate) async fn maintenance_loop(bus: Bus, stream: Stream, stop: CancellationToken) {
    let mut conn = bus.connection();
    let trim_every = bus.config().trim_interval;
    let mut last_trim = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(2).min(trim_every));
    let name = stream.name();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if last_trim.elapsed() >= trim_every {
            last_trim = tokio::time::Instant::now();
            match trim_acknowledged(&mut conn, bus.keys(), stream).await {
                Ok(n) if n > 0 => {
                    tracing::debug!(stream = name, trimmed = n, "trimmed acknowledged entries")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(stream = name, error = %e, "trim failed"),
            }
            let retention = bus.config().dlq_retention;
            match trim_dead_letters(&mut conn, bus.keys(), stream, retention).await {
                Ok(n) if n > 0 => {
                    tracing::info!(stream = name, trimmed = n, "old dead letters trimmed")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(stream = name, error = %e, "dead-letter trim failed"),
            }
        }
        match stats(&mut conn, bus.keys(), stream).await {
            Ok(s) => {
                metrics::gauge!(m::REDIS_UP).set(1.0);
                metrics::gauge!(m::STREAM_LENGTH, "stream" => name).set(s.length as f64);
                metrics::gauge!(m::PENDING, "stream" => name).set(s.pending as f64);
                metrics::gauge!(m::CONSUMER_LAG, "stream" => name).set(s.lag.unwrap_or(0) as f64);
                metrics::gauge!(m::DLQ_LENGTH, "stream" => name).set(s.dlq_length as f64);
            }
            Err(_) => metrics::gauge!(m::REDIS_UP).set(0.0),
        }
        if let Ok(info) = redis::cmd("INFO")
            .arg("memory")
            .query_async::<String>(&mut conn)
            .await
        {
            let (used, max) = memory_of(&info);
            metrics::gauge!(m::REDIS_USED_MEMORY).set(used as f64);
            metrics::gauge!(m::REDIS_MAXMEMORY).set(max as f64);
        }
    }
}

/// `used_memory` and `maxmemory` (0: no limit) from `INFO memory`.
pub fn memory_of(info: &str) -> (u64, u64) {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("used_memory"), field("maxmemory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memory_from_info() {
        let info =
            "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:268435456\r\n";
        assert_eq!(memory_of(info), (1_048_576, 268_435_456));
    }

    #[test]
    fn next_id_steps_the_sequence() {
        assert_eq!(next_id("5-0"), Some((5, 1)));
        assert_eq!(next_id("0-0"), Some((0, 1)));
        assert_eq!(next_id(&format!("7-{}", u64::MAX)), Some((8, 0)));
        assert_eq!(next_id("bad"), None);
    }
}
