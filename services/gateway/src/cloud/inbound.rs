//! The consumer of the webhooks stream: each kept webhook body is read, its media fetched,
//! its messages handed to the ingest (duplicates of Meta's redeliveries dropped there, on the
//! message id) and its statuses to the receipts. A failure worth retrying (Redis, the Graph
//! API throttled or down) retries the whole body with the bus's backoff — messages already
//! taken are then duplicates — and a body that is not a notification is dead-lettered.
//!
//! A signature proves Meta wrote a body, not when: a captured body posted again is as well
//! signed as the first time. Messages and statuses whose own `timestamp` is more than
//! [`REPLAY_WINDOW`] older than the delivery's arrival are therefore ignored (counted in
//! `gateway_cloud_stale_total`), never answered: by then the dedup records of the first delivery
//! may be gone, and WhatsApp's 24-hour customer-service window, in which a reply can be sent, is
//! closed anyway.

use std::time::Duration;

use shared::bus::{Delivery, HandleError, Handler, Publish, Reason};
use shared::proto::{Identity, Payload, identity, inbound};

use super::payload::{Media, Message, Notification, Status, Value};
use super::{Cloud, GraphError, WINDOW_CLOSED};
use crate::config::TransportKind;
use crate::ingest::{Incoming, Ingest, IngestError, MediaBytes, Outcome};
use crate::receipts::Receipts;
use crate::transport::ReceiptStatus;

/// How much older than its delivery a message or status may be and still be taken: WhatsApp's
/// customer-service window (a reply to anything older cannot be sent as a plain message).
pub const REPLAY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Whether an item stamped `timestamp` (unix seconds, as Meta writes it) is older than
/// [`REPLAY_WINDOW`] at `received_at_ms`. An item without a readable timestamp is stale: Meta
/// stamps every message and status, and one that cannot be dated cannot be told from a replay.
pub fn stale(timestamp: &str, received_at_ms: i64) -> bool {
    let window_ms = i64::try_from(REPLAY_WINDOW.as_millis()).unwrap_or(i64::MAX);
    match timestamp.trim().parse::<i64>() {
        Ok(secs) => secs.saturating_mul(1000) < received_at_ms.saturating_sub(window_ms),
        Err(_) => true,
    }
}

/// Whether an item (`kind`: `message` or `status`) stamped `timestamp` is to be handled;
/// a [`stale`] one is logged and counted instead.
fn fresh(kind: &'static str, timestamp: &str, received_at_ms: i64) -> bool {
    if !stale(timestamp, received_at_ms) {
        return true;
    }
    metrics::counter!(crate::metrics::CLOUD_STALE, "kind" => kind).increment(1);
    tracing::warn!(
        kind,
        timestamp,
        "a Cloud API item older than the replay window: ignored (a replayed delivery?)"
    );
    false
}

/// The webhooks stream's handler (see the module docs).
pub struct Webhooks {
    cloud: Cloud,
    ingest: Ingest,
    receipts: Receipts,
    phone_number_id: String,
    max_media: u64,
}

impl Webhooks {
    /// A handler for the business number `phone_number_id`, taking media up to `max_media`
    /// bytes.
    pub fn new(
        cloud: Cloud,
        ingest: Ingest,
        receipts: Receipts,
        phone_number_id: String,
        max_media: u64,
    ) -> Self {
        Self {
            cloud,
            ingest,
            receipts,
            phone_number_id,
            max_media,
        }
    }

    /// A voice note's or photo's bytes from the Graph API: `Ok(None)` when they can never be
    /// had (expired, too large, not audio or an image) — the message is then `other`.
    async fn fetch(&self, media: &Media) -> Result<Option<MediaBytes>, HandleError> {
        let graph = self.cloud.graph();
        let fetched = async {
            let info = graph.media(&media.id).await?;
            if info.file_size.is_some_and(|n| n > self.max_media) {
                return Err(GraphError::Refused {
                    code: 0,
                    message: format!("the media is larger than {} bytes", self.max_media),
                });
            }
            graph.download(&info.url, self.max_media).await
        }
        .await;
        let bytes = match fetched {
            Ok(b) => b,
            Err(e @ (GraphError::Throttled(_) | GraphError::Transient(_))) => {
                return Err(HandleError::Retry(Reason::new("fetching media", e)));
            }
            Err(e) => {
                tracing::warn!(error = %e, "media cannot be fetched: the message is taken as another kind");
                return Ok(None);
            }
        };
        match crate::media::sniff(&bytes, &media.mime_type) {
            Ok(s) => Ok(Some(MediaBytes {
                bytes,
                mime: s.mime,
            })),
            Err(e) => {
                tracing::info!(error = %e, "unreadable media: the message is taken as another kind");
                Ok(None)
            }
        }
    }

    async fn message(&self, value: &Value, m: &Message) -> Result<(), HandleError> {
        let chat = m.chat();
        if chat.is_empty() || m.id.is_empty() {
            tracing::warn!("a Cloud API message without a sender or an id: ignored");
            return Ok(());
        }
        let (mut kind, text, media) = match m.kind.as_str() {
            "text" => (
                inbound::Kind::Text,
                m.text.as_ref().map(|t| t.body.clone()).unwrap_or_default(),
                None,
            ),
            "audio" => (inbound::Kind::Voice, String::new(), m.audio.as_ref()),
            "image" => {
                let caption = m
                    .image
                    .as_ref()
                    .map(|i| i.caption.clone())
                    .unwrap_or_default();
                (inbound::Kind::Image, caption, m.image.as_ref())
            }
            _ => (inbound::Kind::Other, String::new(), None),
        };
        let media = match media {
            Some(r) => self.fetch(r).await?,
            None => None,
        };
        if matches!(kind, inbound::Kind::Voice | inbound::Kind::Image) && media.is_none() {
            kind = inbound::Kind::Other;
        }
        let mut incoming = Incoming {
            transport: TransportKind::Cloud,
            transport_message_id: m.id.clone(),
            message_id: None,
            chat_id: chat.to_owned(),
            identities: identities_of(chat),
            kind,
            text,
            media,
            sent_at_ms: m.timestamp.parse::<i64>().map_or(0, |s| s * 1000),
            display_name: value.name_of(chat).to_owned(),
        };
        let outcome = match self.ingest.accept(incoming.clone()).await {
            Err(IngestError::Media(e)) => {
                tracing::info!(error = %e, "media refused: the message is taken as another kind");
                incoming.kind = inbound::Kind::Other;
                incoming.media = None;
                self.ingest.accept(incoming).await
            }
            other => other,
        };
        match outcome {
            Ok(Outcome::Published { .. }) => {
                self.cloud.taken(chat, &m.id).await;
                Ok(())
            }
            Ok(Outcome::Duplicate { .. }) => Ok(()),
            Ok(Outcome::Limited { .. }) => {
                if self.cloud.read_receipts()
                    && let Err(e) = self.cloud.graph().mark_read(&m.id, false).await
                {
                    tracing::debug!(error = %e, "cannot mark a limited message read");
                }
                Ok(())
            }
            Err(IngestError::Unavailable(r)) => Err(HandleError::Retry(r)),
            Err(e @ IngestError::Media(_)) => Err(HandleError::Permanent(Reason::new(
                "the message could not be taken",
                e,
            ))),
        }
    }

    async fn status(&self, s: &Status) -> Result<(), HandleError> {
        let status = match s.status.as_str() {
            "delivered" => ReceiptStatus::Delivered,
            "read" => ReceiptStatus::Read,
            "failed" => ReceiptStatus::Failed,
            _ => return Ok(()), // `sent` is recorded when the send answers
        };
        let new = self
            .receipts
            .receipt(TransportKind::Cloud, &s.id, status)
            .await
            .map_err(|e| HandleError::retry("recording a receipt", e))?;
        if new && status == ReceiptStatus::Failed {
            let codes: Vec<i64> = s.errors.iter().map(|e| e.code).collect();
            tracing::warn!(?codes, "WhatsApp could not deliver a reply");
            if codes.contains(&WINDOW_CLOSED) {
                let chat = if s.recipient_id.is_empty() {
                    &s.recipient_user_id
                } else {
                    &s.recipient_id
                };
                self.cloud.window_closed(chat).await;
            }
        }
        Ok(())
    }
}

/// A Cloud API sender's identities: the phone number (when `chat` is one) and the Cloud id.
pub fn identities_of(chat: &str) -> Vec<Identity> {
    let phone = chat
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| shared::phone::Phone::parse(chat).ok())
        .flatten()
        .map(|p| Identity {
            kind: identity::Kind::Phone as i32,
            value: p.as_str().to_owned(),
        });
    phone
        .into_iter()
        .chain(std::iter::once(Identity {
            kind: identity::Kind::CloudWaId as i32,
            value: chat.to_owned(),
        }))
        .collect()
}

impl Handler for Webhooks {
    #[tracing::instrument(name = "gateway.webhook", skip_all)]
    async fn handle(&self, d: Delivery) -> Result<Vec<Publish>, HandleError> {
        let Some(Payload::Webhook(w)) = &d.envelope.payload else {
            return Err(HandleError::Permanent("not a webhook delivery".into()));
        };
        let n = Notification::parse(&w.body).map_err(|e| {
            HandleError::Permanent(Reason::new(
                "the webhook body is not a Cloud API notification",
                e,
            ))
        })?;
        let received = w.received_at_ms;
        for value in n.changes_for(&self.phone_number_id) {
            for m in &value.messages {
                if fresh("message", &m.timestamp, received) {
                    self.message(value, m).await?;
                }
            }
            for s in &value.statuses {
                if fresh("status", &s.timestamp, received) {
                    self.status(s).await?;
                }
            }
        }
        Ok(Vec::new())
    }

    /// Media downloads may take a while.
    fn deadline(&self) -> std::time::Duration {
        std::time::Duration::from_secs(120)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_older_than_the_window_before_their_delivery_are_stale() {
        let received = 1_750_000_000_000;
        let secs = |s: i64| (received / 1000 + s).to_string();
        assert!(!stale(&secs(0), received));
        assert!(!stale(&secs(-24 * 3600), received), "at the edge");
        assert!(stale(&secs(-24 * 3600 - 1), received));
        assert!(stale(&secs(-30 * 86_400), received));
        // Meta's clock a little ahead of ours is no replay.
        assert!(!stale(&secs(120), received));
        for bad in ["", "soon", "-", "1.5e9"] {
            assert!(stale(bad, received), "{bad:?}");
        }
    }
}
