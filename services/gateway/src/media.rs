//! The media store: voice notes and images live in Redis under their SHA-256 (the same bytes are
//! stored once), with a TTL, a per-item limit and a total cap; events carry only a
//! [`MediaRef`]. When the cap would be exceeded the oldest items are evicted — by then they have
//! long been transcribed or looked at.
//!
//! Keys: `{prefix}:media:<sha256>` (the bytes), `{prefix}:media:of:<keyed hash of the sender>`
//! (their items, for `!forget`: `shared::bus::Bus::forget`), `{prefix}:media:index` (sorted set: hash by
//! expiry time), `{prefix}:media:sizes` (hash: hash → bytes), `{prefix}:media:total` (bytes
//! stored).

use std::time::Duration;

use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use shared::bus::Keys;
use shared::proto::{MediaRef, inbound};

/// KEYS: 1 data, 2 index, 3 sizes, 4 total. ARGV: 1 hash, 2 bytes, 3 ttl ms, 4 cap bytes,
/// 5 data key prefix. Returns `{evicted, total}`.
const STORE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local total = tonumber(redis.call('GET', KEYS[4]) or '0')
local function forget(m)
  local sz = tonumber(redis.call('HGET', KEYS[3], m) or '0')
  redis.call('HDEL', KEYS[3], m)
  redis.call('ZREM', KEYS[2], m)
  total = total - sz
end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do forget(m) end
local size = string.len(ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
  if total < 0 then total = 0 end
  redis.call('SET', KEYS[4], total)
  return {0, total}
end
local evicted = 0
while total + size > cap do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #oldest == 0 then break end
  redis.call('DEL', ARGV[5] .. oldest[1])
  forget(oldest[1])
  evicted = evicted + 1
end
if total < 0 then total = 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], size)
total = total + size
redis.call('SET', KEYS[4], total)
return {evicted, total}
";

/// Metric: bytes held by the media store.
pub const STORE_BYTES: &str = "gateway_media_store_bytes";
/// Metric: items evicted to stay under the cap.
pub const EVICTED: &str = "gateway_media_evicted_total";

/// Why bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// Over `MAX_MEDIA_MB`.
    #[error("the file is larger than the {limit_mb} MB limit")]
    TooLarge {
        /// `MAX_MEDIA_MB`.
        limit_mb: u64,
    },
    #[error(
        "unsupported file type {0}: send a voice note (audio) or a photo (JPEG, PNG, WebP, GIF)"
    )]
    /// Not audio or an image we take (the type told from the bytes).
    Unsupported(String),
    /// Claims to be a known type but is not valid.
    #[error("the file is not a valid {0}")]
    Corrupt(&'static str),
    /// No bytes.
    #[error("the file is empty")]
    Empty,
}

/// What the bytes are, decided from the bytes themselves (never from the declared type alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sniffed {
    /// Voice note or photo.
    pub kind: inbound::Kind,
    /// The MIME type told from the bytes.
    pub mime: String,
}

/// Image types the vision models take.
const IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/webp", "image/gif"];

/// Decides whether `bytes` are a voice note or a photo we accept. `declared` is the sender's
/// MIME type (may be empty), used only to tell an audio WebM/MP4 from a video and to word errors.
pub fn sniff(bytes: &[u8], declared: &str) -> Result<Sniffed, MediaError> {
    if bytes.is_empty() {
        return Err(MediaError::Empty);
    }
    let declared = declared
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let detected = infer::get(bytes);
    if let Some(t) = detected {
        let mime = t.mime_type();
        match t.matcher_type() {
            infer::MatcherType::Audio => {
                // Opus voice notes (WhatsApp's format) live in an Ogg container: name the
                // container, which is what decoders and upload APIs go by.
                let mime = if mime == "audio/opus" {
                    "audio/ogg"
                } else {
                    mime
                };
                return Ok(Sniffed {
                    kind: inbound::Kind::Voice,
                    mime: mime.to_owned(),
                });
            }
            infer::MatcherType::Image if IMAGE_TYPES.contains(&mime) => {
                return match imagesize::blob_size(bytes) {
                    Ok(s) if s.width > 0 && s.height > 0 => Ok(Sniffed {
                        kind: inbound::Kind::Image,
                        mime: mime.to_owned(),
                    }),
                    _ => Err(MediaError::Corrupt("image")),
                };
            }
            // Browsers record voice as WebM/Opus or MP4/AAC, which sniff as video containers.
            infer::MatcherType::Video
                if declared.starts_with("audio/")
                    && matches!(mime, "video/webm" | "video/mp4" | "video/x-matroska") =>
            {
                return Ok(Sniffed {
                    kind: inbound::Kind::Voice,
                    mime: declared,
                });
            }
            _ => return Err(MediaError::Unsupported(mime.to_owned())),
        }
    }
    if declared.starts_with("audio/") {
        Err(MediaError::Corrupt("audio file"))
    } else if declared.starts_with("image/") {
        Err(MediaError::Corrupt("image"))
    } else if declared.is_empty() {
        Err(MediaError::Unsupported("(unknown)".to_owned()))
    } else {
        Err(MediaError::Unsupported(declared))
    }
}

/// The store.
#[derive(Clone)]
pub struct MediaStore {
    conn: ConnectionManager,
    keys: Keys,
    ttl: Duration,
    max_item: u64,
    cap: u64,
    script: redis::Script,
}

impl MediaStore {
    /// A store on Redis with these limits.
    pub fn new(
        conn: ConnectionManager,
        keys: Keys,
        ttl: Duration,
        max_item: u64,
        cap: u64,
    ) -> Self {
        Self {
            conn,
            keys,
            ttl,
            max_item,
            cap,
            script: redis::Script::new(STORE),
        }
    }

    /// How long an item is kept.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Checks the size limit (before anything else is done with the bytes).
    pub fn check_size(&self, len: u64) -> Result<(), MediaError> {
        if len > self.max_item {
            Err(MediaError::TooLarge {
                limit_mb: self.max_item / (1024 * 1024),
            })
        } else {
            Ok(())
        }
    }

    /// Stores the bytes (or refreshes the TTL of identical bytes) and returns their reference.
    pub async fn put(&self, bytes: &[u8], mime: &str) -> redis::RedisResult<MediaRef> {
        let sha = hex::encode(Sha256::digest(bytes));
        let store = self.keys.media();
        let key = format!("{}{sha}", store.items);
        let (evicted, total): (u64, u64) = self
            .script
            .key(&key)
            .key(&store.index)
            .key(&store.sizes)
            .key(&store.total)
            .arg(&sha)
            .arg(bytes)
            .arg(self.ttl.as_millis() as u64)
            .arg(self.cap)
            .arg(&store.items)
            .invoke_async(&mut self.conn.clone())
            .await?;
        metrics::gauge!(STORE_BYTES).set(total as f64);
        if evicted > 0 {
            metrics::counter!(EVICTED).increment(evicted);
            tracing::info!(evicted, "media store full: evicted the oldest items");
        }
        Ok(MediaRef {
            key,
            mime_type: mime.to_owned(),
            size_bytes: bytes.len() as u64,
            sha256: sha,
        })
    }
}

/// What Redis needs beside the media store: the streams, the web chat's histories, rate
/// limits and records.
pub const REDIS_HEADROOM_BYTES: u64 = 64 * 1024 * 1024;

/// Checks that Redis's `maxmemory` holds the media store (`MEDIA_CAP_MB`) plus
/// [`REDIS_HEADROOM_BYTES`]: with `noeviction` a full Redis refuses every write, and the whole
/// pipeline stops. An error when it does not; a warning when it cannot tell (Redis not
/// reachable yet, `CONFIG` disabled by a managed Redis).
pub async fn check_redis_room(bus: &shared::bus::Bus, media_cap_bytes: u64) -> anyhow::Result<()> {
    let mut conn = bus.connection();
    let asked = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory")
            .query_async::<Vec<String>>(&mut conn),
    )
    .await;
    let maxmemory = match asked {
        Ok(Ok(v)) => v.get(1).and_then(|m| m.parse::<u64>().ok()).unwrap_or(0),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read Redis's maxmemory: make sure it holds MEDIA_CAP_MB plus 64 MB");
            return Ok(());
        }
        Err(_) => {
            tracing::warn!(
                "Redis did not answer in time: its maxmemory is not checked against MEDIA_CAP_MB"
            );
            return Ok(());
        }
    };
    const MB: u64 = 1024 * 1024;
    if maxmemory > 0 && media_cap_bytes + REDIS_HEADROOM_BYTES > maxmemory {
        anyhow::bail!(
            "MEDIA_CAP_MB ({} MB) plus {} MB for streams and histories does not fit in Redis's maxmemory ({} MB): \
             when Redis is full every write fails; set MEDIA_CAP_MB to at most {} or raise maxmemory",
            media_cap_bytes / MB,
            REDIS_HEADROOM_BYTES / MB,
            maxmemory / MB,
            maxmemory.saturating_sub(REDIS_HEADROOM_BYTES) / MB
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real 1×1 PNG.
    const PNG: &[u8] = &[
        0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F,
        0x15, 0xC4, 0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0xF8,
        0xCF, 0xC0, 0xF0, 0x1F, 0x00, 0x05, 0x00, 0x01, 0xFF, 0x89, 0x99, 0x3D, 0x1D, 0x00, 0x00,
        0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
    ];

    #[test]
    fn sniffs_images_and_audio_from_bytes() {
        assert_eq!(sniff(PNG, "").unwrap().kind, inbound::Kind::Image);
        assert_eq!(sniff(PNG, "audio/ogg").unwrap().mime, "image/png");
        let ogg = b"OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00rest-of-page";
        assert_eq!(sniff(ogg, "").unwrap().kind, inbound::Kind::Voice);
        let webm = [
            0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x86, 0x81, 0x01, 0x42, 0x82, 0x84, b'w', b'e',
            b'b', b'm',
        ];
        assert_eq!(
            sniff(&webm, "audio/webm;codecs=opus").unwrap().kind,
            inbound::Kind::Voice
        );
        assert!(matches!(
            sniff(&webm, "video/webm"),
            Err(MediaError::Unsupported(_))
        ));
    }

    #[test]
    fn refuses_garbage_and_other_types() {
        let garbage = [7u8; 300];
        assert_eq!(
            sniff(&garbage, "audio/ogg"),
            Err(MediaError::Corrupt("audio file"))
        );
        assert_eq!(
            sniff(&garbage, "image/jpeg"),
            Err(MediaError::Corrupt("image"))
        );
        assert!(matches!(
            sniff(&garbage, "text/plain"),
            Err(MediaError::Unsupported(_))
        ));
        assert!(matches!(
            sniff(b"%PDF-1.7\n...", "application/pdf"),
            Err(MediaError::Unsupported(_))
        ));
        // A PNG signature followed by garbage is not an image.
        let mut fake = PNG[..8].to_vec();
        fake.extend_from_slice(&[0u8; 40]);
        assert_eq!(sniff(&fake, "image/png"), Err(MediaError::Corrupt("image")));
        assert_eq!(sniff(b"", "image/png"), Err(MediaError::Empty));
    }
}
