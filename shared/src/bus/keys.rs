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
}

impl Stream {
    pub const ALL: [Stream; 5] = [
        Stream::Inbound,
        Stream::Outbound,
        Stream::Transcribe,
        Stream::Transcripts,
        Stream::Usage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stream::Inbound => "inbound",
            Stream::Outbound => "outbound",
            Stream::Transcribe => "transcribe",
            Stream::Transcripts => "transcripts",
            Stream::Usage => "usage",
        }
    }

    /// The consumer group that handles this stream.
    pub fn group(self) -> &'static str {
        match self {
            Stream::Inbound | Stream::Transcripts => "brain",
            Stream::Outbound => "gateway",
            Stream::Transcribe => "transcriber",
            Stream::Usage => "ledger",
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

/// Key names under one prefix; the prefix is the hash tag.
#[derive(Debug, Clone)]
pub struct Keys {
    tag: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            tag: format!("{{{prefix}}}"),
        }
    }

    /// `{prefix}`: the hash tag, for other components' keys (`{prefix}:media:…`).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Any other key of this deployment: `{prefix}:<rest>`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.tag)
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

/// The order token stored in an entry for an order key: a hash, so no phone number sits in
/// Redis key names.
pub fn order_token(order_key: &str) -> String {
    blake3::hash(order_key.as_bytes()).to_hex()[..24].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

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
