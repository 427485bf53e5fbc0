//! Events out to the owner's own tools (n8n, Zapier, a CRM, a spreadsheet): what happened —
//! a message in or out, a handoff opened or closed, a conversation ended, the budget exceeded,
//! the WhatsApp session's state — as one outbound webhook (`EVENTS_WEBHOOK_URL`) in the
//! [Standard Webhooks](https://www.standardwebhooks.com/) shape.
//!
//! The service that sees an event publishes it on the events stream ([`Events::publish`] or,
//! inside a handler's output, [`Events::event`]), ordered per conversation; the ledger delivers
//! them ([`sign`], [`body`]) at least once, with retries and backoff in place, a failing event
//! dead-lettered after the bus's `MAX_DELIVERIES` (listed and replayed on the console) while the
//! conversation's later events go on. A receiver that is slow or down never slows an answer: only
//! the ledger waits for it. The stream is capped ([`Events::full`]): past `EVENTS_MAX_QUEUED`
//! waiting events, new ones are dropped and counted.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::SecretString;
use sha2::Sha256;

use crate::bus::{Bus, Publish, Stream};
use crate::proto::{Envelope, OwnerEvent, Payload};

/// The `data.schema` of every event: bumped when a field changes meaning or goes away.
pub const SCHEMA: u32 = 1;

/// Events dropped because the stream was full (counter, label `type`).
pub const DROPPED: &str = "events_dropped_total";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A customer's message reached the bot (or the owner wrote from the business's phone).
    MessageIn,
    /// A message went to a customer (the bot's answer, a notice, a person's reply).
    MessageOut,
    /// A conversation was handed to a person.
    HandoffOpened,
    /// A handoff ended (a person closed it, or its time ran out).
    HandoffClosed,
    /// A conversation ended after its idle time, with its outcome.
    ConversationEnded,
    /// The daily budget was reached: paid calls stop for the day.
    BudgetExceeded,
    /// The WhatsApp session changed state (linked, waiting for a QR code, disconnected, …).
    WhatsappState,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 7] = [
        Kind::MessageIn,
        Kind::MessageOut,
        Kind::HandoffOpened,
        Kind::HandoffClosed,
        Kind::ConversationEnded,
        Kind::BudgetExceeded,
        Kind::WhatsappState,
    ];

    /// The event's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MessageIn => "message.in",
            Kind::MessageOut => "message.out",
            Kind::HandoffOpened => "handoff.opened",
            Kind::HandoffClosed => "handoff.closed",
            Kind::ConversationEnded => "conversation.ended",
            Kind::BudgetExceeded => "budget.exceeded",
            Kind::WhatsappState => "whatsapp.state",
        }
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown event {s:?} (expected some of {})",
                    names.join(", ")
                )
            })
    }
}

/// The events webhook's settings, as every service reads them.
#[derive(Clone, Default)]
pub struct EventsConfig {
    /// `EVENTS_WEBHOOK_URL`: where events are posted (none: no events at all). A credential.
    pub url: Option<SecretString>,
    /// `EVENTS_WEBHOOK_SECRET` (`whsec_<base64>`), decoded: the signing key.
    pub secret: Option<Arc<[u8]>>,
    /// `EVENTS`: which kinds (unset: all).
    pub kinds: Vec<Kind>,
    /// `EVENTS_INCLUDE_TEXT`: whether message text goes into `message.in`/`message.out`.
    pub include_text: bool,
    /// `EVENTS_MAX_QUEUED`: waiting events past which new ones are dropped.
    pub max_queued: u64,
}

impl std::fmt::Debug for EventsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsConfig")
            .field("url", &self.url.as_ref().map(|_| "[redacted]"))
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("kinds", &self.kinds)
            .field("include_text", &self.include_text)
            .field("max_queued", &self.max_queued)
            .finish()
    }
}

impl EventsConfig {
    /// Whether events of `kind` are wanted at all.
    pub fn wants(&self, kind: Kind) -> bool {
        self.url.is_some() && self.kinds.contains(&kind)
    }
}

/// The key of a `whsec_<base64>` secret.
pub fn decode_secret(s: &str) -> Result<Vec<u8>, String> {
    let b64 = s
        .strip_prefix("whsec_")
        .ok_or("expected whsec_ followed by base64")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        // Not the decoder's words: they quote a character of the secret and its place.
        .map_err(|_| "the part after whsec_ is not valid base64".to_owned())?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "the key is {} bytes; expected 24 to 64 random bytes",
            key.len()
        ));
    }
    Ok(key)
}

/// `webhook-signature`: `v1,` and the base64 HMAC-SHA256 of `id.timestamp.body` under `key`.
pub fn sign(key: &[u8], id: &str, timestamp_secs: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{sig}")
}

/// The request body of an event: `{"type", "timestamp" (RFC 3339), "data"}`.
pub fn body(kind: &str, at_ms: i64, data_json: &str) -> Vec<u8> {
    let timestamp = jiff::Timestamp::from_millisecond(at_ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string();
    let data: serde_json::Value =
        serde_json::from_str(data_json).unwrap_or(serde_json::Value::Null);
    serde_json::to_vec(&serde_json::json!({"type": kind, "timestamp": timestamp, "data": data}))
        .expect("JSON values serialise")
}

/// Publishing events: what a service holds to tell the owner's tools.
#[derive(Clone)]
pub struct Events {
    cfg: Arc<EventsConfig>,
    full: Arc<AtomicBool>,
    producer: &'static str,
}

impl Events {
    /// Events as `cfg` says, published by `producer` (the service's name).
    pub fn new(cfg: EventsConfig, producer: &'static str) -> Self {
        metrics::describe_counter!(
            DROPPED,
            "Events for the owner's webhook dropped because too many waited"
        );
        for k in Kind::ALL {
            let _ = metrics::counter!(DROPPED, "type" => k.as_str());
        }
        Self {
            cfg: Arc::new(cfg),
            full: Arc::default(),
            producer,
        }
    }

    /// No events (tests, tools).
    pub fn off() -> Self {
        Self::new(EventsConfig::default(), "none")
    }

    /// The settings.
    pub fn config(&self) -> &EventsConfig {
        &self.cfg
    }

    /// Whether events of `kind` are wanted.
    pub fn wants(&self, kind: Kind) -> bool {
        self.cfg.wants(kind)
    }

    /// Whether message text goes into events.
    pub fn include_text(&self) -> bool {
        self.cfg.include_text
    }

    /// Whether the stream holds `EVENTS_MAX_QUEUED` or more (as last looked, see
    /// [`Events::watch`]).
    pub fn full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// Looks at the stream's length once; `watch` is this every second.
    pub async fn look(&self, bus: &Bus) {
        if self.cfg.url.is_none() {
            return;
        }
        let len: redis::RedisResult<u64> = redis::cmd("XLEN")
            .arg(bus.keys().stream(Stream::Events))
            .query_async(&mut bus.connection())
            .await;
        if let Ok(len) = len {
            self.full
                .store(len >= self.cfg.max_queued, Ordering::Relaxed);
        }
    }

    /// The event to publish on the events stream — in order with every other event of
    /// `contact` (none: of its kind) — or `None` when it is not wanted or the stream is full
    /// (counted). `data` gets `schema`, and `contact` when there is one.
    pub fn event(
        &self,
        kind: Kind,
        contact: Option<&str>,
        mut data: serde_json::Value,
    ) -> Option<Publish> {
        if !self.wants(kind) {
            return None;
        }
        if self.full() {
            metrics::counter!(DROPPED, "type" => kind.as_str()).increment(1);
            return None;
        }
        if let Some(map) = data.as_object_mut() {
            map.insert("schema".into(), SCHEMA.into());
            if let Some(c) = contact {
                map.insert("contact".into(), c.into());
            }
        }
        let env = Envelope::new(
            self.producer,
            Payload::OwnerEvent(OwnerEvent {
                r#type: kind.as_str().to_owned(),
                data_json: data.to_string(),
                contact_id: contact.unwrap_or_default().to_owned(),
            }),
        );
        let order = match contact {
            Some(c) => format!("contact:{c}"),
            None => format!("kind:{}", kind.as_str()),
        };
        Some(Publish::ordered(Stream::Events, env, order))
    }

    /// Publishes an event at once (outside a handler's output), logging a failure: an event
    /// is never worth failing the work that saw it.
    pub async fn publish(
        &self,
        bus: &Bus,
        kind: Kind,
        contact: Option<&str>,
        data: serde_json::Value,
    ) {
        let Some(p) = self.event(kind, contact, data) else {
            return;
        };
        if let Err(e) = bus.publisher().publish(p).await {
            tracing::warn!(error = %e, kind = kind.as_str(), "cannot publish an event for the owner's webhook");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_standard_webhooks_one() {
        // The example of the Standard Webhooks specification (its reference libraries' test).
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_and_kinds_are_checked() {
        assert!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(decode_secret("whsec_!!!").is_err());
        assert!(decode_secret("whsec_AAAA").is_err(), "3 bytes is too short");
        assert_eq!("handoff.opened".parse::<Kind>(), Ok(Kind::HandoffOpened));
        assert!(
            "handoff.open"
                .parse::<Kind>()
                .unwrap_err()
                .contains("message.in")
        );
    }

    #[test]
    fn an_event_carries_its_schema_and_goes_on_the_events_stream() {
        let cfg = EventsConfig {
            url: Some("https://hooks.example/x".to_owned().into()),
            secret: Some(Arc::from(vec![7u8; 32])),
            kinds: vec![Kind::MessageIn],
            include_text: false,
            max_queued: 100,
        };
        let events = Events::new(cfg, "brain");
        assert!(
            events
                .event(Kind::MessageOut, Some("c1"), serde_json::json!({}))
                .is_none()
        );
        let p = events
            .event(
                Kind::MessageIn,
                Some("c1"),
                serde_json::json!({"kind": "text"}),
            )
            .unwrap();
        assert_eq!(p.stream, Stream::Events);
        let Some(Payload::OwnerEvent(e)) = &p.envelope.payload else {
            panic!("not an owner event");
        };
        let data: serde_json::Value = serde_json::from_str(&e.data_json).unwrap();
        assert_eq!(
            data,
            serde_json::json!({"contact": "c1", "kind": "text", "schema": 1})
        );
        assert_eq!(e.contact_id, "c1");
        let b: serde_json::Value =
            serde_json::from_slice(&body(&e.r#type, 1_765_000_000_123, &e.data_json)).unwrap();
        assert_eq!(b["type"], "message.in");
        assert_eq!(b["timestamp"], "2025-12-06T05:46:40.123Z");
        assert_eq!(b["data"]["contact"], "c1");
    }
}
