//! Inbound: what every transport hands its received messages to. Normalise, admit (duplicates,
//! rate limits), store media, publish — and start the typing indicator.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redis::aio::ConnectionManager;
use shared::bus::{Keys, Publish, Publisher, Stream};
use shared::proto::{self, Envelope, Identity, Inbound, Outbound, Payload, identity, inbound};
use shared::redact::Redacted;
use tokio_util::sync::CancellationToken;

use crate::admit::{Admission, Admitter, Scope};
use crate::config::{Config, DEDUP_WINDOW, TYPING_CAP, TransportKind};
use crate::media::{MediaError, MediaStore};
use crate::metrics as m;
use crate::transport::{ReceiptStatus, Transports, to_proto};

/// Records a receipt's status once. KEYS[1] the sent record (`<our id>|<sent ms>`);
/// ARGV[1] the receipts key prefix, ARGV[2] status, ARGV[3] now (ms), ARGV[4] lifetime (ms).
/// Returns the sent record when the status is new for that message, else nil.
static RECEIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local found = redis.call('GET', KEYS[1])
if not found then return false end
local id = string.match(found, '^([^|]*)')
local key = ARGV[1] .. id
if redis.call('HSETNX', key, ARGV[2], ARGV[3]) == 0 then return false end
redis.call('PEXPIRE', key, ARGV[4])
return found
",
    )
});

/// A message as a transport received it, before normalisation.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub transport: TransportKind,
    /// The transport's id of the message (duplicates are dropped on it).
    pub transport_message_id: String,
    /// Our id, when the transport assigned one already (the web chat answers with it).
    pub message_id: Option<String>,
    pub chat_id: String,
    pub identities: Vec<Identity>,
    pub kind: inbound::Kind,
    /// Text, or the caption of a media message.
    pub text: String,
    pub media: Option<MediaBytes>,
    /// Transport time, unix ms (0 = unknown: now).
    pub sent_at_ms: i64,
    pub display_name: String,
}

/// Media bytes with their (sniffed) MIME type.
#[derive(Debug, Clone)]
pub struct MediaBytes {
    pub bytes: Vec<u8>,
    pub mime: String,
}

/// What became of an accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Published { message_id: String },
    Duplicate { message_id: String },
    Limited { message_id: String, notified: bool },
}

impl Outcome {
    pub fn message_id(&self) -> &str {
        match self {
            Self::Published { message_id }
            | Self::Duplicate { message_id }
            | Self::Limited { message_id, .. } => message_id,
        }
    }
}

/// Why a message could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Media(#[from] MediaError),
    #[error("the message store is unavailable: {0}")]
    Unavailable(#[source] shared::bus::Reason),
}

impl From<redis::RedisError> for IngestError {
    fn from(e: redis::RedisError) -> Self {
        Self::Unavailable(shared::bus::Reason::new("Redis", e))
    }
}

impl From<shared::bus::BusError> for IngestError {
    fn from(e: shared::bus::BusError) -> Self {
        Self::Unavailable(shared::bus::Reason::new("the bus", e))
    }
}

/// The inbound side of the gateway, shared by every transport.
#[derive(Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

struct Inner {
    publisher: Publisher,
    admitter: Admitter,
    media: MediaStore,
    keys: Keys,
    conn: ConnectionManager,
    rate_notice: String,
    busy_notice: String,
    transports: Mutex<Transports>,
    typing: Mutex<HashMap<(TransportKind, String), (u64, CancellationToken)>>,
    typing_gen: std::sync::atomic::AtomicU64,
}

/// The order key of a contact's inbound messages (the brain answers them in order).
fn sender_key(identities: &[Identity], chat_id: &str) -> String {
    identities
        .iter()
        .find(|i| i.kind == identity::Kind::Phone as i32)
        .or_else(|| identities.first())
        .map(|i| i.value.clone())
        .unwrap_or_else(|| format!("chat:{chat_id}"))
}

pub use shared::proto::chat_order_key;

impl Ingest {
    pub fn new(bus: &shared::bus::Bus, cfg: &Config) -> Self {
        let conn = bus.connection();
        let keys = bus.keys().clone();
        Self {
            inner: Arc::new(Inner {
                publisher: bus.publisher(),
                admitter: Admitter::new(
                    conn.clone(),
                    keys.clone(),
                    crate::admit::Limits {
                        per_contact: cfg.rate_per_contact,
                        global: cfg.rate_global,
                        visitors: cfg.rate_visitors,
                    },
                ),
                media: MediaStore::new(
                    conn.clone(),
                    keys.clone(),
                    cfg.media_ttl,
                    cfg.max_media_bytes,
                    cfg.media_cap_bytes,
                ),
                keys,
                conn,
                rate_notice: cfg.rate_notice.clone(),
                busy_notice: cfg.busy_notice.clone(),
                transports: Mutex::new(Transports::default()),
                typing: Mutex::new(HashMap::new()),
                typing_gen: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Transports are built after the ingest they feed; they are registered here for typing.
    pub fn set_transports(&self, transports: Transports) {
        *self.inner.transports.lock().expect("transports lock") = transports;
    }

    /// Takes one received message: drops it if seen before, enforces the rate limits (telling
    /// the sender once per window), stores its media and publishes it to the brain.
    pub async fn accept(&self, msg: Incoming) -> Result<Outcome, IngestError> {
        self.accept_with(msg, |_, _| {}).await
    }

    /// [`Ingest::accept`], with `extra` commands written in the same transaction as the
    /// message's publication (or its notice): the web chat records its history entry this way.
    /// `extra`'s flag says whether the message is published (not refused by a rate limit).
    /// Not run for duplicates.
    #[tracing::instrument(name = "gateway.inbound", skip_all, fields(transport = msg.transport.as_str(), message_id))]
    pub async fn accept_with(
        &self,
        msg: Incoming,
        extra: impl Fn(&mut redis::Pipeline, bool),
    ) -> Result<Outcome, IngestError> {
        let inner = &self.inner;
        let transport = msg.transport.as_str();
        let message_id = msg.message_id.clone().unwrap_or_else(shared::ids::new_id);
        tracing::Span::current().record("message_id", message_id.as_str());
        let sender = sender_key(&msg.identities, &msg.chat_id);
        // Web chat visitors (no phone identity) spend a global budget of their own.
        let visitor = !msg.identities.is_empty()
            && msg
                .identities
                .iter()
                .all(|i| i.kind == identity::Kind::Webchat as i32);
        let admission = inner
            .admitter
            .admit(
                transport,
                &msg.transport_message_id,
                &sender,
                &message_id,
                visitor,
            )
            .await?;
        match admission {
            Admission::Duplicate { first_id } => {
                metrics::counter!(m::DUPLICATES, "transport" => transport).increment(1);
                tracing::debug!(first_id, "duplicate message dropped");
                return Ok(Outcome::Duplicate {
                    message_id: first_id,
                });
            }
            Admission::Limited { scope, notify } => {
                metrics::counter!(m::RATE_LIMITED, "scope" => scope.as_str()).increment(1);
                tracing::info!(
                    scope = scope.as_str(),
                    sender = %Redacted(&sender),
                    notify,
                    "message refused by a rate limit"
                );
                if notify {
                    let text = match scope {
                        Scope::Contact => &inner.rate_notice,
                        Scope::Global => &inner.busy_notice,
                    };
                    self.notice(&msg, &message_id, text, &extra).await?;
                } else {
                    let mut pipe = redis::pipe();
                    pipe.atomic();
                    extra(&mut pipe, false);
                    pipe.query_async::<()>(&mut inner.conn.clone()).await?;
                }
                return Ok(Outcome::Limited {
                    message_id,
                    notified: notify,
                });
            }
            Admission::Accepted => {}
        }
        match self.publish(&msg, &message_id, &sender, &extra).await {
            Ok(()) => {}
            Err(e) => {
                inner
                    .admitter
                    .release(transport, &msg.transport_message_id)
                    .await;
                return Err(e);
            }
        }
        metrics::counter!(m::INBOUND, "transport" => transport, "kind" => msg.kind.label())
            .increment(1);
        tracing::info!(
            kind = msg.kind.label(),
            sender = %Redacted(&sender),
            "inbound message published"
        );
        self.start_typing(msg.transport, &msg.chat_id);
        Ok(Outcome::Published { message_id })
    }

    async fn publish(
        &self,
        msg: &Incoming,
        message_id: &str,
        sender: &str,
        extra: &impl Fn(&mut redis::Pipeline, bool),
    ) -> Result<(), IngestError> {
        let inner = &self.inner;
        let media = match &msg.media {
            Some(mb) => {
                inner.media.check_size(mb.bytes.len() as u64)?;
                Some(inner.media.put(&mb.bytes, &mb.mime).await?)
            }
            None => None,
        };
        let sent_at_ms = if msg.sent_at_ms > 0 {
            msg.sent_at_ms
        } else {
            shared::ids::now_ms()
        };
        let inbound = Inbound {
            message_id: message_id.to_owned(),
            transport: to_proto(msg.transport) as i32,
            transport_message_id: msg.transport_message_id.clone(),
            identities: msg.identities.clone(),
            chat_id: msg.chat_id.clone(),
            kind: msg.kind as i32,
            text: msg.text.clone(),
            media,
            sent_at_ms,
            display_name: msg.display_name.clone(),
        };
        let media_sha = inbound.media.as_ref().map(|m| m.sha256.clone());
        let env = Envelope::new("gateway", Payload::Inbound(inbound));
        let transport = msg.transport.as_str();
        inner
            .publisher
            .publish_with(&[Publish::ordered(Stream::Inbound, env, sender)], |pipe| {
                if let Some(sha) = &media_sha {
                    // Whose media it is, so `!forget` can erase it.
                    let of = inner.keys.media_of(sender);
                    pipe.cmd("SADD").arg(&of).arg(sha).ignore();
                    pipe.cmd("PEXPIRE")
                        .arg(&of)
                        .arg(inner.media.ttl().as_millis() as u64)
                        .ignore();
                }
                inner.admitter.seen_commands(
                    pipe,
                    transport,
                    &msg.transport_message_id,
                    message_id,
                );
                extra(pipe, true);
            })
            .await?;
        Ok(())
    }

    /// Publishes a notice answering `msg` (delivered through the outbound stream like any reply).
    async fn notice(
        &self,
        msg: &Incoming,
        in_reply_to: &str,
        text: &str,
        extra: &impl Fn(&mut redis::Pipeline, bool),
    ) -> Result<(), IngestError> {
        let transport = to_proto(msg.transport);
        let id = blake3::hash(format!("notice|{in_reply_to}").as_bytes()).to_hex()[..26].to_owned();
        let env = Envelope::new(
            "gateway",
            Payload::Outbound(Outbound {
                message_id: id,
                transport: transport as i32,
                chat_id: msg.chat_id.clone(),
                kind: proto::outbound::Kind::Notice as i32,
                text: text.to_owned(),
                in_reply_to: in_reply_to.to_owned(),
                identities: msg.identities.clone(),
            }),
        );
        // One transaction: nobody can deliver the notice before the limited message's own
        // records (the web chat's history entry) exist.
        self.inner
            .publisher
            .publish_with(
                &[Publish::ordered(
                    Stream::Outbound,
                    env,
                    chat_order_key(transport, &msg.chat_id),
                )],
                |pipe| extra(pipe, false),
            )
            .await?;
        Ok(())
    }

    /// Shows "typing…" in the chat until [`Ingest::stop_typing`] or 25 s, renewed every 8 s.
    pub fn start_typing(&self, transport: TransportKind, chat_id: &str) {
        let Some(t) = self
            .inner
            .transports
            .lock()
            .expect("transports lock")
            .get(transport)
            .cloned()
        else {
            return;
        };
        let token = CancellationToken::new();
        let generation = self
            .inner
            .typing_gen
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some((_, old)) = self
            .inner
            .typing
            .lock()
            .expect("typing lock")
            .insert((transport, chat_id.to_owned()), (generation, token.clone()))
        {
            old.cancel();
        }
        let chat = chat_id.to_owned();
        let inner = self.inner.clone();
        // Where the indicator rides on the messages, the acceptance showed it and the reply
        // clears it: only renewals, and the end when no reply came in time, are written here.
        let with_messages = t.typing_with_messages();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + TYPING_CAP;
            let mut first = true;
            let replied = loop {
                if !(first && with_messages)
                    && let Err(e) = t.typing(&chat, true).await
                {
                    tracing::debug!(error = %e, "typing indicator failed");
                }
                first = false;
                tokio::select! {
                    () = token.cancelled() => break true,
                    () = tokio::time::sleep_until(deadline) => break false,
                    () = tokio::time::sleep(std::time::Duration::from_secs(8)) => {}
                }
            };
            if !(replied && with_messages) {
                let _ = t.typing(&chat, false).await;
            }
            let mut typing = inner.typing.lock().expect("typing lock");
            if typing
                .get(&(transport, chat.clone()))
                .is_some_and(|(g, _)| *g == generation)
            {
                typing.remove(&(transport, chat));
            }
        });
    }

    /// Ends the typing indicator of a chat (the reply was sent).
    pub fn stop_typing(&self, transport: TransportKind, chat_id: &str) {
        if let Some(t) = self
            .inner
            .typing
            .lock()
            .expect("typing lock")
            .remove(&(transport, chat_id.to_owned()))
        {
            t.1.cancel();
        }
    }

    /// Records that a transport sent our message `id` as `transport_message_id`, so later
    /// receipts can be matched (7 days).
    pub fn sent_commands(
        &self,
        pipe: &mut redis::Pipeline,
        transport: TransportKind,
        transport_message_id: &str,
        id: &str,
    ) {
        pipe.cmd("SET")
            .arg(self.receipt_key(transport, transport_message_id))
            .arg(format!("{id}|{}", shared::ids::now_ms()))
            .arg("PX")
            .arg(DEDUP_WINDOW.as_millis() as u64)
            .ignore();
    }

    fn receipt_key(&self, transport: TransportKind, transport_message_id: &str) -> String {
        let h = blake3::hash(transport_message_id.as_bytes()).to_hex();
        self.inner
            .keys
            .key(&format!("gw:tmid:{}:{}", transport.as_str(), &h[..32]))
    }

    /// A transport reports what became of a message it sent. Records the status (once per
    /// status), counts it and logs failures.
    pub async fn receipt(
        &self,
        transport: TransportKind,
        transport_message_id: &str,
        status: ReceiptStatus,
    ) -> redis::RedisResult<bool> {
        let key = self.receipt_key(transport, transport_message_id);
        // One round trip: which of our messages it was, and whether this status is new.
        let found: Option<String> = RECEIPT
            .key(&key)
            .arg(self.inner.keys.key("gw:receipt:"))
            .arg(status.as_str())
            .arg(shared::ids::now_ms())
            .arg(DEDUP_WINDOW.as_millis() as u64)
            .invoke_async(&mut self.inner.conn.clone())
            .await?;
        let Some(found) = found else {
            return Ok(false);
        };
        let (id, sent_ms) = found.split_once('|').unwrap_or((found.as_str(), "0"));
        metrics::counter!(m::RECEIPTS, "transport" => transport.as_str(), "status" => status.as_str())
            .increment(1);
        if status == ReceiptStatus::Delivered
            && let Ok(sent) = sent_ms.parse::<i64>()
            && sent > 0
        {
            let secs = (shared::ids::now_ms() - sent).max(0) as f64 / 1000.0;
            metrics::histogram!(m::RECEIPT_LATENCY, "transport" => transport.as_str()).record(secs);
        }
        if status == ReceiptStatus::Failed {
            tracing::warn!(
                message_id = id,
                transport = transport.as_str(),
                "the transport reports a message failed to deliver"
            );
        }
        Ok(true)
    }

    /// Statuses recorded for one of our outbound message ids (`delivered`, `read`, `failed`).
    pub async fn receipts_of(&self, id: &str) -> redis::RedisResult<Vec<String>> {
        let mut c = self.inner.conn.clone();
        redis::cmd("HKEYS")
            .arg(self.inner.keys.key(&format!("gw:receipt:{id}")))
            .query_async(&mut c)
            .await
    }
}
