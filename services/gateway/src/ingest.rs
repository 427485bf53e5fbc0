//! Inbound: what every transport hands its received messages to. Normalise, admit (duplicates,
//! rate limits), store media, publish — and ask for the typing indicator.

use std::sync::Arc;

use redis::aio::ConnectionManager;
use shared::bus::{Keys, Publish, Publisher, Stream};
use shared::lang::{Lang, Text};
use shared::proto::{self, Envelope, Identity, Inbound, Outbound, Payload, inbound};
use shared::redact::Redacted;

use crate::admit::{Admission, Admitter, Scope};
use crate::config::{Config, TransportKind};
use crate::media::{MediaError, MediaStore};
use crate::metrics as m;
use crate::transport::to_proto;
use crate::typing::Typing;

/// A message as a transport received it, before normalisation.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The transport it came through.
    pub transport: TransportKind,
    /// The transport's id of the message (duplicates are dropped on it).
    pub transport_message_id: String,
    /// Our id, when the transport assigned one already (the web chat answers with it).
    pub message_id: Option<String>,
    /// The chat to answer in (the transport's own id).
    pub chat_id: String,
    /// Who sent it (phone number, WhatsApp ids, web chat visitor).
    pub identities: Vec<Identity>,
    /// Text, voice note, photo or other.
    pub kind: inbound::Kind,
    /// Text, or the caption of a media message.
    pub text: String,
    /// A voice note's or photo's bytes.
    pub media: Option<MediaBytes>,
    /// Transport time, unix ms (0 = unknown: now).
    pub sent_at_ms: i64,
    /// The sender's name, as the transport shows it.
    pub display_name: String,
}

/// Media bytes with their (sniffed) MIME type.
#[derive(Debug, Clone)]
pub struct MediaBytes {
    /// The bytes as received.
    pub bytes: Vec<u8>,
    /// The MIME type told from the bytes.
    pub mime: String,
}

/// What became of an accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Published to the brain.
    Published {
        /// Our id of the message.
        message_id: String,
    },
    /// Seen before: dropped.
    Duplicate {
        /// The id the first copy got.
        message_id: String,
    },
    /// Over a rate limit: not published.
    Limited {
        /// Our id of the message.
        message_id: String,
        /// The sender was told (once a window).
        notified: bool,
    },
}

impl Outcome {
    /// Our id of the message (the first copy's, for a duplicate).
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
    /// The media was refused (size, type, content).
    #[error("{0}")]
    Media(#[from] MediaError),
    #[error("the message store is unavailable: {0}")]
    /// Redis could not be reached or refused the write.
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
    rate_notice: Text,
    busy_notice: Text,
    typing: Typing,
    max_input_chars: usize,
}

use shared::proto::sender_order_key as sender_key;

pub use shared::proto::chat_order_key;

impl Ingest {
    /// An ingest on `bus`, asking `typing` for indicators.
    pub fn new(bus: &shared::bus::Bus, cfg: &Config, typing: Typing) -> Self {
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
                typing,
                max_input_chars: cfg.storage.max_input_chars,
            }),
        }
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
        let visitor = shared::proto::is_visitor(&msg.identities);
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
                return self
                    .limited(&msg, message_id, &sender, scope, notify, &extra)
                    .await;
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
        inner.typing.start(msg.transport, &msg.chat_id);
        Ok(Outcome::Published { message_id })
    }

    /// A message over a rate limit: its sender told once a window, `extra` written anyway.
    async fn limited(
        &self,
        msg: &Incoming,
        message_id: String,
        sender: &str,
        scope: Scope,
        notify: bool,
        extra: &impl Fn(&mut redis::Pipeline, bool),
    ) -> Result<Outcome, IngestError> {
        metrics::counter!(m::RATE_LIMITED, "scope" => scope.as_str()).increment(1);
        tracing::info!(
            scope = scope.as_str(),
            sender = %Redacted(sender),
            notify,
            "message refused by a rate limit"
        );
        if notify {
            let notice = match scope {
                Scope::Contact => &self.inner.rate_notice,
                Scope::Global => &self.inner.busy_notice,
            };
            let text = notice.get(Lang::detect(&msg.text).unwrap_or_default());
            self.notice(msg, &message_id, text, extra).await?;
        } else {
            let mut pipe = redis::pipe();
            pipe.atomic();
            extra(&mut pipe, false);
            pipe.query_async::<()>(&mut self.inner.conn.clone()).await?;
        }
        Ok(Outcome::Limited {
            message_id,
            notified: notify,
        })
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
        let mut inbound = Inbound {
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
            from_business: false,
            text_cut: false,
        };
        // A WhatsApp message cannot be refused: at most MAX_INPUT_CHARS of it is kept, and the
        // brain answers it as too long.
        shared::proto::fit_text(&mut inbound, inner.max_input_chars);
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

    /// The business wrote `text` to a customer itself (the owner answering from the phone):
    /// published for the brain in order with that customer's messages (never limited), so it
    /// remembers the business's turn and pauses.
    pub async fn business_said(&self, msg: &Incoming) -> Result<(), IngestError> {
        let sender = sender_key(&msg.identities, &msg.chat_id);
        let mut inbound = Inbound {
            message_id: shared::ids::new_id(),
            transport: to_proto(msg.transport) as i32,
            transport_message_id: msg.transport_message_id.clone(),
            identities: msg.identities.clone(),
            chat_id: msg.chat_id.clone(),
            kind: inbound::Kind::Text as i32,
            text: msg.text.clone(),
            media: None,
            sent_at_ms: if msg.sent_at_ms > 0 {
                msg.sent_at_ms
            } else {
                shared::ids::now_ms()
            },
            display_name: String::new(),
            from_business: true,
            text_cut: false,
        };
        shared::proto::fit_text(&mut inbound, self.inner.max_input_chars);
        let env = Envelope::new("gateway", Payload::Inbound(inbound));
        self.inner
            .publisher
            .publish(Publish::ordered(Stream::Inbound, env, sender))
            .await?;
        metrics::counter!(m::OWNER_MESSAGES, "transport" => msg.transport.as_str()).increment(1);
        tracing::info!("the business answered a customer itself");
        Ok(())
    }

    /// Sends `text` to the chat of `msg` (not a customer's message: a declined call) as a
    /// notice, once for its `transport_message_id`.
    pub async fn tell(&self, msg: &Incoming, text: &str) -> Result<(), IngestError> {
        self.notice(msg, &msg.transport_message_id, text, &|_, _| {})
            .await
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
                also_answers: Vec::new(),
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
}
