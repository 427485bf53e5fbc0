//! The storage budget: what the gateway keeps in Redis and for how long.
//!
//! - Texts: at most `MAX_INPUT_CHARS` characters of a message are kept (a longer web chat post is
//!   refused, a longer WhatsApp message cut and marked); a conversation's web chat history is
//!   held to its size, and lives minutes until the bot answers in it
//!   ([`crate::webchat::History`]); a message a rate limit refused is not kept in it.
//! - Records: dedup and delivery records live [`DEDUP_WINDOW`], a refused message's one minute
//!   ([`crate::admit::LIMITED_SEEN_TTL`]).
//! - Redis's high-water mark ([`HighWater`]). Redis runs with `maxmemory` and `noeviction`: once
//!   full, every write fails and WhatsApp, the Cloud API and the web chat all stop. The web chat
//!   is the one channel anyone can write to without a phone number, so past
//!   `REDIS_HIGH_WATER_PERCENT` of `maxmemory` it refuses new visitors and new messages (`503`
//!   with `Retry-After`) and leaves the room above the mark to WhatsApp's and the Cloud API's
//!   customers. Redis's memory is read every second by one task, never per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared::config::Env;

/// How often Redis's memory is read.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// What a refused web chat client is asked to wait, seconds.
pub const RETRY_AFTER_SECS: u64 = 60;

/// How long the gateway's dedup and delivery records live (`gw:seen`, `gw:sent`, `gw:tmid`,
/// `gw:receipt`): as long as the same thing can arrive again, not longer — they are most of
/// what each message leaves in Redis. The Cloud API's messages and statuses older than its
/// replay window (24 h by their timestamp) are ignored, so a redelivery after that can never
/// be taken twice nor matched; WhatsApp Web re-emits messages around a reconnect (minutes); a
/// web chat client retries within seconds; the bus redelivers an entry within minutes
/// (`RECLAIM_IDLE_SECS` × `MAX_DELIVERIES` plus its backoff). One hour more covers clocks.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(25 * 3600);

/// Whether a message stamped `timestamp` (unix seconds, as WhatsApp Web gives it) is older than
/// [`DEDUP_WINDOW`] at `now_ms`: its dedup record may be gone, so taking it could answer it a
/// second time (WhatsApp Web re-sends what arrived while the gateway was down, however long).
/// One without a timestamp is taken (the sidecar stamps every message).
pub fn past_dedup_window(timestamp: Option<i64>, now_ms: i64) -> bool {
    let window_ms = i64::try_from(DEDUP_WINDOW.as_millis()).unwrap_or(i64::MAX);
    timestamp.is_some_and(|secs| secs.saturating_mul(1000) < now_ms.saturating_sub(window_ms))
}

/// The storage budget's settings.
#[derive(Debug, Clone)]
pub struct Storage {
    /// `MAX_INPUT_CHARS` (default 4096, the brain's limit): the longest text kept of a message;
    /// a longer web chat post is refused, a longer WhatsApp message cut to it.
    pub max_input_chars: usize,
    /// `MEMORY_TTL_DAYS` (default 7): how long the web chat keeps a history the bot answered in
    /// (one it never answered lives `unanswered_ttl`).
    pub history_ttl: Duration,
    /// `WEBCHAT_UNANSWERED_TTL_SECS` (default 600): how long a web chat history the bot never
    /// answered in lives after its last message (the visitor's posts, notices): anyone can open
    /// visitors, so what they leave unanswered must drain in minutes ([`crate::webchat::History`]).
    pub unanswered_ttl: Duration,
    /// `REDIS_HIGH_WATER_PERCENT` (default 80; 0 = off, and off while Redis has no
    /// `maxmemory`): past this share of Redis's `maxmemory` the web chat refuses new visitors
    /// and messages, so WhatsApp keeps the rest.
    pub high_water_percent: u8,
}

impl Storage {
    /// Reads the variables; problems are recorded in `env`.
    pub fn load(env: &mut Env) -> Self {
        Self {
            max_input_chars: shared::proto::max_input_chars(env),
            history_ttl: Duration::from_secs(86_400 * env.int_in("MEMORY_TTL_DAYS", 7u64, 1, 3650)),
            unanswered_ttl: env.secs("WEBCHAT_UNANSWERED_TTL_SECS", 600, 1, 86_400),
            high_water_percent: env.int_in("REDIS_HIGH_WATER_PERCENT", 80u8, 0, 100),
        }
    }
}

/// Whether Redis is past its high-water mark, as last read (shared by the web chat's handlers
/// and the task that reads it).
#[derive(Clone, Default)]
pub struct HighWater(Arc<AtomicBool>);

impl HighWater {
    /// Past the mark at the last reading.
    pub fn is_over(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Reads Redis's memory and records whether it is past `percent` of `maxmemory` (never
    /// when `maxmemory` is 0 or `percent` is 0). A failed reading keeps the last state.
    pub async fn check(&self, conn: &mut redis::aio::ConnectionManager, percent: u8) {
        let info = match redis::cmd("INFO")
            .arg("memory")
            .query_async::<String>(conn)
            .await
        {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read Redis's memory");
                return;
            }
        };
        let (used, max) = shared::bus::memory_of(&info);
        let over = is_past(used, max, percent);
        if over != self.0.swap(over, Ordering::Relaxed) {
            if over {
                tracing::warn!(
                    used_bytes = used,
                    maxmemory = max,
                    percent,
                    "Redis is past its high-water mark: the web chat refuses new visitors and messages"
                );
            } else {
                tracing::info!("Redis is back under its high-water mark: the web chat is open");
            }
        }
        metrics::gauge!(crate::metrics::REDIS_HIGH_WATER).set(f64::from(u8::from(over)));
    }

    /// The web chat's refusal while Redis is past the mark, counted.
    pub fn refusal() -> Response {
        metrics::counter!(crate::metrics::REJECTED, "reason" => "redis_high_water").increment(1);
        let mut r = shared::http::json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the chat is busy; please try again in a minute",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, RETRY_AFTER_SECS.into());
        r.into_response()
    }
}

/// Whether `used` bytes are past `percent` of `max` (never when either is 0).
fn is_past(used: u64, max: u64, percent: u8) -> bool {
    max > 0 && percent > 0 && u128::from(used) * 100 > u128::from(max) * u128::from(percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_is_a_share_of_maxmemory_and_off_without_one() {
        assert!(!is_past(80, 100, 80));
        assert!(is_past(81, 100, 80));
        assert!(!is_past(u64::MAX, 0, 80), "no maxmemory: no mark");
        assert!(!is_past(99, 100, 0), "0 turns it off");
        assert!(is_past(u64::MAX, u64::MAX - 1, 100));
    }
}
