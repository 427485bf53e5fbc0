//! The `Transport` trait every channel implements (WhatsApp Web, Cloud API, web chat), and the
//! set of transports one gateway runs.
//!
//! A transport receives messages (by its own means: an HTTP route, a webhook, a session) and
//! hands each to the ingest; it sends text and typing indicators for the outbound path,
//! reports its session state for `/readyz`, and reports delivery receipts (the gateway's
//! `receipts` module). This module depends on none of those.

use std::sync::Arc;

use shared::proto::{self, Identity};

use crate::config::{MAX_TEXT_CHARS, TransportKind};

/// A transport's session, for `/readyz` and the `gateway_session_state` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Serving.
    Connected,
    /// Waiting for someone to scan the QR code on the internal `/qr`.
    WaitingForQr,
    /// Not serving (starting, reconnecting, logged out).
    Disconnected,
}

impl SessionState {
    /// Every state (for metrics registered at zero).
    pub const ALL: [SessionState; 3] = [Self::Connected, Self::WaitingForQr, Self::Disconnected];

    /// The state's name in `/readyz` and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::WaitingForQr => "waiting_for_qr",
            Self::Disconnected => "disconnected",
        }
    }
}

/// One text message to send (one part of a split reply).
#[derive(Debug, Clone)]
pub struct OutgoingText {
    /// Our id of this part (the outbound message id, `.2`, `.3`… for later parts).
    pub id: String,
    /// The chat, in the transport's own terms.
    pub chat_id: String,
    /// Already converted to WhatsApp formatting and at most the transport's length limit.
    pub text: String,
    /// Reply, notice or alert.
    pub kind: proto::outbound::Kind,
    /// The customer message it answers (empty for alerts).
    pub in_reply_to: String,
    /// The customer's other messages it answers too (a burst's earlier ones).
    pub also_answers: Vec<String>,
    /// The deliverer's record of this part being sent, for a transport that
    /// [`Transport::sends_once`]: its send is a Redis write, and it writes these commands in
    /// the same transaction (one round trip instead of two) and says so in [`Sent::recorded`].
    pub record: Vec<redis::Cmd>,
}

/// The transport accepted a message.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The transport's id of the sent message (delivery receipts refer to it).
    pub transport_message_id: String,
    /// The transport had sent a message with this id before and did not send it again (only
    /// a transport that [`Transport::sends_once`] says so).
    pub already: bool,
    /// The part's [`OutgoingText::record`] was written with it.
    pub recorded: bool,
}

/// Why a send failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// Worth retrying (network, 5xx, rate limited, session reconnecting).
    #[error("transient: {0}")]
    Transient(#[source] shared::bus::Reason),
    /// Will never succeed (unknown chat, blocked, bad request).
    #[error("permanent: {0}")]
    Permanent(#[source] shared::bus::Reason),
}

/// A delivery receipt's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptStatus {
    /// On the customer's device.
    Delivered,
    /// Read by the customer.
    Read,
    /// Could not be delivered.
    Failed,
}

impl ReceiptStatus {
    /// The status's name, as recorded and counted.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
        }
    }
}

/// A channel to customers.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Which transport this is.
    fn kind(&self) -> TransportKind;

    /// Its session now.
    fn state(&self) -> SessionState;

    /// The chat that reaches a recipient known only by identities (alerts to admins), if this
    /// transport can reach it.
    fn chat_for(&self, identities: &[Identity]) -> Option<String>;

    /// The longest text one message may carry.
    fn max_text_chars(&self) -> usize {
        MAX_TEXT_CHARS
    }

    /// Whether `send_text` itself never sends the same message id twice (the deliverer then
    /// skips its own sent-record check, one Redis round trip per message).
    fn sends_once(&self) -> bool {
        false
    }

    /// Sends one text message.
    async fn send_text(&self, msg: &OutgoingText) -> Result<Sent, SendError>;

    /// Shows (`on`) or clears the typing indicator in a chat. Best effort.
    async fn typing(&self, chat_id: &str, on: bool) -> Result<(), SendError>;

    /// Whether the typing indicator rides on the messages themselves: shown by the write that
    /// accepts an inbound message, cleared by the write that sends the reply (the web chat).
    /// The gateway then only renews it and clears it when no reply came in time.
    fn typing_with_messages(&self) -> bool {
        false
    }

    /// How this transport links an account (WhatsApp Web), or `None` when it never does: the
    /// QR code and/or pairing code waiting to be used (both `None` once linked).
    fn pairing(&self) -> Option<Pairing> {
        None
    }

    /// Unlinks the account (the console's "log out"); a new QR follows. Only transports that
    /// link an account (WhatsApp Web) can.
    async fn logout(&self) -> Result<(), String> {
        Err(format!(
            "the {} transport has no linked device to log out",
            self.kind().as_str()
        ))
    }

    /// Restarts the session (the console's "relink"): a fresh QR while unlinked, a reconnect
    /// while linked.
    async fn relink(&self) -> Result<(), String> {
        Err(format!(
            "the {} transport has no session to relink",
            self.kind().as_str()
        ))
    }
}

/// A transport's pending link, for the internal `/qr`.
#[derive(Debug, Clone, Default)]
pub struct Pairing {
    /// The QR code to scan, as text.
    pub qr: Option<String>,
    /// The pairing code to type, when pairing by code.
    pub code: Option<String>,
}

/// The transports one gateway runs, in `TRANSPORTS` order.
#[derive(Clone, Default)]
pub struct Transports {
    list: Vec<Arc<dyn Transport>>,
}

impl Transports {
    /// The transports run.
    pub fn new(list: Vec<Arc<dyn Transport>>) -> Self {
        Self { list }
    }

    /// Every transport.
    pub fn all(&self) -> &[Arc<dyn Transport>] {
        &self.list
    }

    /// The transport of `kind`, if run.
    pub fn get(&self, kind: TransportKind) -> Option<&Arc<dyn Transport>> {
        self.list.iter().find(|t| t.kind() == kind)
    }

    /// The transport for an outbound message: the one it names, or (for alerts that name
    /// none) the first that can reach the recipient.
    pub fn route(
        &self,
        transport: proto::Transport,
        chat_id: &str,
        identities: &[Identity],
    ) -> Result<(Arc<dyn Transport>, String), String> {
        let named = match transport {
            proto::Transport::Web => Some(TransportKind::Web),
            proto::Transport::Cloud => Some(TransportKind::Cloud),
            proto::Transport::Webchat => Some(TransportKind::Webchat),
            proto::Transport::Unspecified => None,
        };
        match named {
            Some(kind) => {
                let t = self.get(kind).ok_or_else(|| {
                    format!(
                        "transport {} is not configured on this gateway",
                        kind.as_str()
                    )
                })?;
                let chat = if chat_id.is_empty() {
                    t.chat_for(identities)
                        .ok_or_else(|| "no chat for the recipient".to_owned())?
                } else {
                    chat_id.to_owned()
                };
                Ok((t.clone(), chat))
            }
            None => self
                .list
                .iter()
                .find_map(|t| t.chat_for(identities).map(|c| (t.clone(), c)))
                .ok_or_else(|| "no configured transport can reach the recipient".to_owned()),
        }
    }
}

/// The protobuf value of a transport kind.
pub fn to_proto(kind: TransportKind) -> proto::Transport {
    match kind {
        TransportKind::Web => proto::Transport::Web,
        TransportKind::Cloud => proto::Transport::Cloud,
        TransportKind::Webchat => proto::Transport::Webchat,
    }
}
