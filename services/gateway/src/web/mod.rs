//! The `web` transport: WhatsApp Web in Debian's Chromium, driven by whatsapp-web.js in a small
//! Node sidecar (`wa-sidecar/`, protocol in its PROTOCOL.md) that this module starts, talks to
//! over stdin/stdout and supervises: restarted with capped backoff when it exits, stops
//! answering heartbeats (3 periods) or stays not-connected for `WA_STUCK_SECS` while "ready".
//! The session lives on disk (`WA_SESSION_DIR`), so a restart never asks for the QR again.

mod protocol;
mod supervise;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;
use shared::proto::{Identity, identity, inbound, outbound};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{TransportKind, WebConfig};
use crate::ingest::{Incoming, Ingest, MediaBytes};
use crate::transport::{
    OutgoingText, Pairing, ReceiptStatus, SendError, Sent, SessionState, Transport,
};
use protocol::*;

/// Sidecar restarts by reason.
pub const RESTARTS: &str = "gateway_web_restarts_total";
/// WhatsApp messages not served (groups, broadcasts, status, our own).
pub const IGNORED: &str = "gateway_web_ignored_total";
/// Sidecar lines that were not protocol messages.
pub const PROTOCOL_ERRORS: &str = "gateway_web_protocol_errors_total";
/// Calls declined, by transport.
pub const CALLS: &str = "gateway_calls_rejected_total";
/// Memory of the Node sidecar.
pub const SIDECAR_RSS: &str = "gateway_web_sidecar_memory_bytes";
/// Memory of its Chromium.
pub const BROWSER_RSS: &str = "gateway_web_browser_memory_bytes";

const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Describes the transport's metrics and registers them at zero.
pub fn register_metrics() {
    metrics::describe_counter!(RESTARTS, "Sidecar restarts by reason (exit, zombie, stuck)");
    metrics::describe_counter!(
        IGNORED,
        "WhatsApp messages not served (group, broadcast, status, from_me)"
    );
    metrics::describe_counter!(
        PROTOCOL_ERRORS,
        "Sidecar lines that were not valid protocol messages"
    );
    metrics::describe_gauge!(SIDECAR_RSS, "Memory (PSS) of the Node sidecar");
    metrics::describe_gauge!(
        BROWSER_RSS,
        "Memory (PSS, shared pages split) of the sidecar's Chromium processes"
    );
    for r in ["exit", "zombie", "stuck"] {
        metrics::counter!(RESTARTS, "reason" => r).absolute(0);
    }
    for r in ["group", "broadcast", "status", "from_me"] {
        metrics::counter!(IGNORED, "reason" => r).absolute(0);
    }
    metrics::counter!(PROTOCOL_ERRORS).absolute(0);
    metrics::describe_counter!(CALLS, "WhatsApp calls declined (the bot cannot talk)");
    metrics::counter!(CALLS, "transport" => "web").absolute(0);
    metrics::gauge!(SIDECAR_RSS).set(0.0);
    metrics::gauge!(BROWSER_RSS).set(0.0);
}

#[derive(Debug)]
struct Session {
    state: SessionState,
    qr: Option<String>,
    pairing_code: Option<String>,
    /// The library said `ready` (since the last start).
    ready: bool,
    /// Since when the library reports a state other than CONNECTED while ready.
    unhealthy_since: Option<Instant>,
    last_heartbeat: Instant,
    /// The session was logged out: a new QR is needed.
    logged_out: bool,
}

struct Inner {
    cfg: WebConfig,
    ingest: Ingest,
    receipts: crate::receipts::Receipts,
    alerts: crate::alert::Alerts,
    session: Mutex<Session>,
    commands: Mutex<Option<mpsc::UnboundedSender<String>>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    next_ref: AtomicU64,
    messages: mpsc::UnboundedSender<WaMessage>,
    queue: Mutex<Option<mpsc::UnboundedReceiver<WaMessage>>>,
}

#[derive(Clone)]
/// The WhatsApp Web transport (see the module docs).
pub struct Web {
    inner: Arc<Inner>,
}

/// `+15550001111` from `15550001111@c.us`.
fn phone_of_wa_id(id: &str) -> Option<String> {
    let digits = id.strip_suffix("@c.us")?;
    shared::phone::Phone::parse(digits)
        .ok()
        .map(|p| p.as_str().to_owned())
}

impl Web {
    /// The transport; the sidecar starts with [`Web::run`].
    pub fn new(
        cfg: WebConfig,
        ingest: Ingest,
        alerts: crate::alert::Alerts,
        bus: &shared::bus::Bus,
    ) -> Self {
        let (messages, queue) = mpsc::unbounded_channel();
        Self {
            inner: Arc::new(Inner {
                cfg,
                ingest,
                receipts: crate::receipts::Receipts::new(bus),
                alerts,
                session: Mutex::new(Session {
                    state: SessionState::Disconnected,
                    qr: None,
                    pairing_code: None,
                    ready: false,
                    unhealthy_since: None,
                    last_heartbeat: Instant::now(),
                    logged_out: false,
                }),
                commands: Mutex::new(None),
                pending: Mutex::new(HashMap::new()),
                next_ref: AtomicU64::new(1),
                messages,
                queue: Mutex::new(Some(queue)),
            }),
        }
    }

    fn command(&self, mut cmd: serde_json::Value) -> bool {
        cmd["v"] = serde_json::json!(1);
        let line = cmd.to_string();
        match self.inner.commands.lock().expect("commands lock").as_ref() {
            Some(tx) => tx.send(line).is_ok(),
            None => false,
        }
    }

    /// Sends a command that answers `result`/`error`, waiting up to `timeout`.
    async fn request(&self, mut cmd: serde_json::Value, timeout: Duration) -> Reply {
        let r = format!("r{}", self.inner.next_ref.fetch_add(1, Ordering::Relaxed));
        cmd["ref"] = serde_json::json!(r);
        let (tx, rx) = oneshot::channel();
        self.inner
            .pending
            .lock()
            .expect("pending lock")
            .insert(r.clone(), tx);
        if !self.command(cmd) {
            self.inner.pending.lock().expect("pending lock").remove(&r);
            return Err(("the WhatsApp Web session is restarting".into(), true));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(("the WhatsApp Web session restarted".into(), true)),
            Err(_) => {
                self.inner.pending.lock().expect("pending lock").remove(&r);
                Err(("no answer from the WhatsApp Web session".into(), true))
            }
        }
    }

    fn set_state(&self, state: SessionState) {
        let mut s = self.inner.session.lock().expect("session lock");
        if s.state != state {
            tracing::info!(state = state.as_str(), "WhatsApp Web session");
            self.inner.alerts.state_changed(TransportKind::Web, state);
        }
        s.state = state;
        crate::metrics::session_state(TransportKind::Web, state);
    }
}

#[async_trait::async_trait]
impl Transport for Web {
    fn kind(&self) -> TransportKind {
        TransportKind::Web
    }

    fn state(&self) -> SessionState {
        self.inner.session.lock().expect("session lock").state
    }

    fn chat_for(&self, identities: &[Identity]) -> Option<String> {
        identities.iter().find_map(|i| match i.kind() {
            identity::Kind::Phone => shared::phone::Phone::parse(&i.value)
                .ok()
                .map(|p| format!("{}@c.us", p.digits())),
            identity::Kind::WaId | identity::Kind::Lid => Some(i.value.clone()),
            _ => None,
        })
    }

    async fn send_text(&self, msg: &OutgoingText) -> Result<Sent, SendError> {
        // Anti-ban: answer customers, never write to one first (alerts go to the business's own
        // admins).
        if msg.kind != outbound::Kind::Alert && msg.in_reply_to.is_empty() {
            return Err(SendError::Permanent(
                "WhatsApp Web only answers messages; it never writes to a customer first".into(),
            ));
        }
        if self.state() != SessionState::Connected {
            return Err(SendError::Transient(
                "the WhatsApp Web session is not connected".into(),
            ));
        }
        // Like a person: typing for a moment, then the message.
        let (lo, hi) = self.inner.cfg.reply_delay_ms;
        if hi > 0 {
            if self.inner.cfg.typing {
                self.command(
                    serde_json::json!({"type": "typing", "chat": msg.chat_id, "on": true}),
                );
            }
            let ms = if hi > lo {
                rand::random_range(lo..=hi)
            } else {
                lo
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        match self
            .request(
                serde_json::json!({"type": "send", "chat": msg.chat_id, "text": msg.text}),
                SEND_TIMEOUT,
            )
            .await
        {
            Ok(Answer { id, .. }) => Ok(Sent {
                transport_message_id: id.unwrap_or_else(|| msg.id.clone()),
                already: false,
                recorded: false,
            }),
            Err((e, true)) => Err(SendError::Transient(e.into())),
            Err((e, false)) => Err(SendError::Permanent(e.into())),
        }
    }

    async fn typing(&self, chat_id: &str, on: bool) -> Result<(), SendError> {
        if self.command(serde_json::json!({"type": "typing", "chat": chat_id, "on": on})) {
            Ok(())
        } else {
            Err(SendError::Transient(
                "the WhatsApp Web session is restarting".into(),
            ))
        }
    }

    async fn logout(&self) -> Result<(), String> {
        self.request(
            serde_json::json!({"type": "logout"}),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
        self.inner.session.lock().expect("session lock").logged_out = true;
        tracing::info!("WhatsApp Web logged out from the console; restarting for a new QR");
        self.command(serde_json::json!({"type": "shutdown"}));
        Ok(())
    }

    async fn relink(&self) -> Result<(), String> {
        if self.command(serde_json::json!({"type": "shutdown"})) {
            tracing::info!("WhatsApp Web session restarted from the console");
            Ok(())
        } else {
            Err("the WhatsApp Web session is restarting already".into())
        }
    }

    fn pairing(&self) -> Option<Pairing> {
        let s = self.inner.session.lock().expect("session lock");
        Some(Pairing {
            qr: s.qr.clone(),
            code: s.pairing_code.clone(),
        })
    }
}
