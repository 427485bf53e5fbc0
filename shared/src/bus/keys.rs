//! Stream names and key layout (see the module docs of [`crate::bus`]).

use std::fmt;
use std::str::FromStr;

/// The logical streams of Switchboard, each consumed by exactly one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Customer messages, gateway → brain.
    Inbound,
    /// Replies, notices and alerts → gateway.
    Outbound,
    /// Voice-note jobs, brain → transcriber.
    Transcribe,
    /// Transcripts, transcriber → brain.
    Transcripts,
    /// Usage records → ledger.
    Usage,
    /// Verified webhook requests of a transport (the Cloud API's), gateway → gateway.
    Webhooks,
    /// What happened, for the owner's own tools (`EVENTS_WEBHOOK_URL`): any service → ledger.
    Events,
}

impl Stream {
    /// Every stream.
    pub const ALL: [Stream; 7] = [
        Stream::Inbound,
        Stream::Outbound,
        Stream::Transcribe,
        Stream::Transcripts,
        Stream::Usage,
        Stream::Webhooks,
        Stream::Events,
    ];

    /// The stream's name in keys, metrics and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Inbound => "inbound",
            Stream::Outbound => "outbound",
            Stream::Transcribe => "transcribe",
            Stream::Transcripts => "transcripts",
            Stream::Usage => "usage",
            Stream::Webhooks => "webhooks",
            Stream::Events => "events",
        }
    }

    /// The consumer group that handles this stream.
    pub fn group(self) -> &'static str {
        match self {
            Stream::Inbound | Stream::Transcripts => "brain",
            Stream::Outbound | Stream::Webhooks => "gateway",
            Stream::Transcribe => "transcriber",
            Stream::Usage => "ledger",
            Stream::Events => "events",
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Stream {
    type Err = super::BusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stream::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| super::BusError::UnknownStream(s.to_owned()))
    }
}

/// The media store's keys ([`Keys::media`]).
#[derive(Debug, Clone)]
pub struct MediaKeys {
    /// The prefix of an item's key: `items` + its SHA-256 in hex.
    pub items: String,
    /// Sorted set: item hash by expiry time.
    pub index: String,
    /// Hash: item hash → bytes.
    pub sizes: String,
    /// Bytes stored in all.
    pub total: String,
}

impl MediaKeys {
    /// The SHA-256 of the item at `key`, when `key` is one of this store's items.
    pub fn item_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.items)
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
    }
}

/// Key names under one prefix; the prefix is the hash tag.
///
/// A key named after a person (a phone number, a visitor) carries a keyed hash of it
/// ([`Keys::hash`]), never the value: the key is a random secret kept in Redis
/// (`{prefix}:hashkey`), created by the first service that asks and shared by every
/// service and replica, so the names cannot be reversed by hashing every phone number.
#[derive(Debug, Clone)]
pub struct Keys {
    tag: String,
    secret: std::sync::Arc<std::sync::OnceLock<[u8; 32]>>,
}

impl Keys {
    /// Keys under `prefix` (`STREAM_PREFIX`).
    pub fn new(prefix: &str) -> Self {
        Self {
            tag: format!("{{{prefix}}}"),
            secret: std::sync::Arc::default(),
        }
    }

    /// Loads (or creates) the secret of [`Keys::hash`]; a no-op once loaded. Every path that
    /// names keys after people runs this first (publishing, consuming, admission, the web
    /// chat's handlers).
    pub async fn ready<C>(&self, conn: &mut C) -> redis::RedisResult<()>
    where
        C: redis::aio::ConnectionLike + Send,
    {
        if self.secret.get().is_some() {
            return Ok(());
        }
        let key = self.key("hashkey");
        let kept = crate::redis_conn::shared_secret(conn, &key).await?;
        let bytes = hex::decode(kept).ok();
        let secret: [u8; 32] = bytes.and_then(|b| b.try_into().ok()).ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "the key-name secret in Redis is not 64 hex digits",
                key,
            ))
        })?;
        let _ = self.secret.set(secret);
        Ok(())
    }

    /// A keyed hash of `value` (a phone number, an order key, a visitor), for key names.
    ///
    /// # Panics
    /// When [`Keys::ready`] has not succeeded yet (a path that forgot it: a bug).
    pub fn hash(&self, value: &str) -> String {
        let secret = self
            .secret
            .get()
            .expect("Keys::ready must run before a key is named after a person");
        blake3::keyed_hash(secret, value.as_bytes()).to_hex()[..32].to_owned()
    }

    /// `{prefix}`: the hash tag, for other components' keys (`{prefix}:media:…`).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Any other key of this deployment: `{prefix}:<rest>`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.tag)
    }

    /// `{prefix}:wc:h:<hash>`: the web chat's history of one conversation.
    pub fn webchat_history(&self, contact: &str) -> String {
        self.key(&format!("wc:h:{}", self.hash(contact)))
    }

    /// `{prefix}:wc:hi:<hash>`: the index of that history — message id → entry id, and the
    /// bytes it holds (`#bytes`) — so a page is read from where it starts and the history is
    /// held to its size.
    pub fn webchat_history_index(&self, contact: &str) -> String {
        self.key(&format!("wc:hi:{}", self.hash(contact)))
    }

    /// The gateway's media store: the items (`{prefix}:media:<sha256>`), their index by expiry,
    /// their sizes and the total — the layout the store, the readers and `!forget` share.
    pub fn media(&self) -> MediaKeys {
        MediaKeys {
            items: self.key("media:"),
            index: self.key("media:index"),
            sizes: self.key("media:sizes"),
            total: self.key("media:total"),
        }
    }

    /// `{prefix}:media:of:<hash>`: the media items one sender sent (a set of SHA-256s), so
    /// `!forget` can erase them.
    pub fn media_of(&self, sender: &str) -> String {
        self.key(&format!("media:of:{}", self.hash(sender)))
    }

    /// `{prefix}:v1:<stream>`.
    pub fn stream(&self, s: Stream) -> String {
        format!("{}:v1:{}", self.tag, s.name())
    }

    /// `{prefix}:v1:<stream>:dlq`.
    pub fn dlq(&self, s: Stream) -> String {
        format!("{}:dlq", self.stream(s))
    }

    /// `{prefix}:v1:<stream>:order:<token>`.
    pub fn order(&self, s: Stream, token: &str) -> String {
        format!("{}:order:{token}", self.stream(s))
    }

    /// `{prefix}:v1:<stream>:errors`.
    pub fn errors(&self, s: Stream) -> String {
        format!("{}:errors", self.stream(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_keyed_hashes_that_cannot_be_recomputed_without_the_secret() {
        let phone = "+15550001111";
        let a = Keys::new("sb");
        let _ = a.secret.set([7; 32]);
        let b = Keys::new("sb");
        let _ = b.secret.set([8; 32]);
        assert_ne!(a.hash(phone), b.hash(phone), "keyed");
        assert_ne!(
            a.hash(phone),
            blake3::hash(phone.as_bytes()).to_hex()[..32],
            "not a plain hash"
        );
        let history = a.webchat_history("15550001111");
        assert!(history.starts_with("{sb}:wc:h:") && !history.contains("1555"));
    }

    #[test]
    #[should_panic(expected = "Keys::ready")]
    fn naming_a_key_after_a_person_before_the_secret_is_loaded_is_a_bug() {
        let _ = Keys::new("sb").hash("+15550001111");
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let k = Keys::new("sb");
        assert_eq!(k.stream(Stream::Inbound), "{sb}:v1:inbound");
        assert_eq!(k.dlq(Stream::Usage), "{sb}:v1:usage:dlq");
        assert_eq!(k.order(Stream::Outbound, "ab"), "{sb}:v1:outbound:order:ab");
        assert_eq!(k.key("media:x"), "{sb}:media:x");
        for s in Stream::ALL {
            assert_eq!(s.name().parse::<Stream>().unwrap(), s);
        }
        assert!("nope".parse::<Stream>().is_err());
    }
}
