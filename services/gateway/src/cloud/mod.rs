//! The `cloud` transport: the official WhatsApp Business Cloud API.
//!
//! - [`webhook`]: `/webhooks/whatsapp` on the public listener verifies Meta's handshake and
//!   each delivery's signature, keeps the body on the webhooks stream and answers `200`.
//! - [`inbound::Webhooks`]: the consumer of that stream reads the messages (text, voice
//!   notes, photos; the rest as `other`) and statuses inside, fetches media from the Graph
//!   API into the media store, hands messages to the ingest and statuses to the receipts.
//!   Failures retry with the bus's backoff; what can never be read is dead-lettered.
//! - [`Cloud`]: sends replies (`POST {graph}/{phone-number-id}/messages`), marks messages read
//!   with the typing indicator, checks the access token at startup and periodically for
//!   `/readyz`, and alerts the business when WhatsApp refuses a reply because the customer's
//!   24-hour window is closed (131047: only an approved template could reach them; Switchboard
//!   does not send templates).

mod graph;
pub mod inbound;
pub mod payload;
pub mod webhook;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shared::proto::{Identity, identity};
use tokio_util::sync::CancellationToken;

pub use graph::{Graph, GraphError, WINDOW_CLOSED};

use crate::alert::{Alert, Alerts};
use crate::config::{CloudConfig, TransportKind};
use crate::metrics::SendOutcome;
use crate::transport::{OutgoingText, SendError, Sent, SessionState, Transport};

/// The typing indicator lasts 25 s: shown again for the same message only after this.
const TYPING_RENEW: Duration = Duration::from_secs(20);
/// Chats remembered for read marks and typing; older entries go when there are more.
const LATEST_CAP: usize = 10_000;

/// How a send ended, by what the Graph API answered.
fn send_outcome<T>(result: &Result<T, GraphError>) -> SendOutcome {
    match result {
        Ok(_) => SendOutcome::Sent,
        Err(GraphError::Throttled(_)) => SendOutcome::Throttled,
        Err(GraphError::Transient(_)) => SendOutcome::Transient,
        Err(GraphError::Unauthorized { .. }) => SendOutcome::Unauthorized,
        Err(e) if e.code() == Some(WINDOW_CLOSED) => SendOutcome::WindowClosed,
        Err(GraphError::Refused { .. }) => SendOutcome::Refused,
    }
}

/// A chat's latest customer message.
struct Latest {
    wamid: String,
    at: Instant,
    typing_shown: Option<Instant>,
}

struct Inner {
    graph: Graph,
    state: AtomicU8,
    alerts: Alerts,
    latest: Mutex<HashMap<String, Latest>>,
    /// `WA_READ_RECEIPTS`.
    read_receipts: bool,
    /// `WA_TYPING` (shown only with a read mark on this API).
    typing: bool,
    /// Typing with the read mark itself (no burst window to wait out first).
    typing_at_once: bool,
}

/// The Cloud API transport (see the module docs).
#[derive(Clone)]
pub struct Cloud {
    inner: Arc<Inner>,
}

fn encode(s: SessionState) -> u8 {
    match s {
        SessionState::Connected => 0,
        SessionState::WaitingForQr => 1,
        SessionState::Disconnected => 2,
    }
}

impl Cloud {
    /// The transport; not ready until [`Cloud::watch_token`] has seen the token work.
    pub fn new(cfg: &CloudConfig, alerts: Alerts) -> Self {
        Self {
            inner: Arc::new(Inner {
                graph: Graph::new(cfg),
                state: AtomicU8::new(encode(SessionState::Disconnected)),
                alerts,
                latest: Mutex::new(HashMap::new()),
                read_receipts: cfg.read_receipts,
                typing: cfg.read_receipts && cfg.typing,
                typing_at_once: cfg.read_receipts && cfg.typing && cfg.burst_window.is_zero(),
            }),
        }
    }

    /// Whether messages are marked read (`WA_READ_RECEIPTS`).
    pub fn read_receipts(&self) -> bool {
        self.inner.read_receipts
    }

    /// Its Graph API client.
    pub fn graph(&self) -> &Graph {
        &self.inner.graph
    }

    fn set_state(&self, state: SessionState) {
        let old = self.inner.state.swap(encode(state), Ordering::Relaxed);
        if old != encode(state) {
            tracing::info!(state = state.as_str(), "Cloud API");
        }
        crate::metrics::session_state(TransportKind::Cloud, state);
    }

    /// Notes what a Graph call says about the token.
    fn note<T>(&self, result: &Result<T, GraphError>) {
        match result {
            Ok(_) => self.set_state(SessionState::Connected),
            Err(GraphError::Unauthorized { .. }) => self.set_state(SessionState::Disconnected),
            Err(_) => {}
        }
    }

    /// Checks the access token now and every `every` until `shutdown`.
    pub async fn watch_token(self, every: Duration, shutdown: CancellationToken) {
        loop {
            let result = self.inner.graph.check().await;
            match &result {
                Ok(()) => {}
                Err(GraphError::Unauthorized { .. } | GraphError::Refused { .. }) => {
                    self.set_state(SessionState::Disconnected);
                    tracing::error!(error = %result.as_ref().unwrap_err(), "the Cloud API refuses the access token or phone number id");
                }
                Err(e) => tracing::warn!(error = %e, "cannot check the Cloud API access token"),
            }
            self.note(&result);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// A new customer message `wamid` in `chat` was taken: marks it read (and so every
    /// earlier one) with the typing indicator, and remembers it so the indicator can be
    /// renewed while the bot works. Best effort.
    pub async fn taken(&self, chat: &str, wamid: &str) {
        if !self.inner.read_receipts {
            // No read mark, and so no typing indicator either (it rides on the mark).
            return;
        }
        {
            let mut latest = self.inner.latest.lock().expect("latest lock");
            if latest.len() >= LATEST_CAP {
                latest.retain(|_, l| l.at.elapsed() < Duration::from_secs(600));
            }
            latest.insert(
                chat.to_owned(),
                Latest {
                    wamid: wamid.to_owned(),
                    at: Instant::now(),
                    typing_shown: self.inner.typing_at_once.then(Instant::now),
                },
            );
        }
        let result = self
            .inner
            .graph
            .mark_read(wamid, self.inner.typing_at_once)
            .await;
        self.note(&result);
        if let Err(e) = result {
            tracing::debug!(error = %e, "cannot mark a message read");
        }
    }

    /// WhatsApp refused a reply to `chat`: the customer last wrote over 24 hours ago. Tells
    /// the business (admins once an hour per chat) — by webhook only when `chat` is an admin's
    /// own: a message to them would be refused the same way, and tell of itself again.
    pub async fn window_closed(&self, chat: &str) {
        SendOutcome::WindowClosed.count();
        let tail: String = chat
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let text = format!(
            "A reply could not be delivered to a customer (…{tail}): they last wrote more than 24 hours ago, and WhatsApp lets a business write first only with an approved template, which Switchboard does not send. Answer them from the WhatsApp Business app or Meta's inbox."
        );
        let hour = shared::ids::now_ms() / 3_600_000;
        let once = blake3::hash(format!("{chat}|{hour}").as_bytes()).to_hex();
        self.inner
            .alerts
            .raise(Alert {
                kind: "window_closed",
                transport: TransportKind::Cloud,
                text: &text,
                once_key: &once[..32],
                to_admins: !self.inner.alerts.is_admin(chat),
            })
            .await;
    }
}

#[async_trait::async_trait]
impl Transport for Cloud {
    fn kind(&self) -> TransportKind {
        TransportKind::Cloud
    }

    fn state(&self) -> SessionState {
        match self.inner.state.load(Ordering::Relaxed) {
            0 => SessionState::Connected,
            1 => SessionState::WaitingForQr,
            _ => SessionState::Disconnected,
        }
    }

    fn chat_for(&self, identities: &[Identity]) -> Option<String> {
        identities.iter().find_map(|i| match i.kind() {
            identity::Kind::CloudWaId => Some(i.value.clone()),
            identity::Kind::Phone => shared::phone::Phone::parse(&i.value)
                .ok()
                .map(|p| p.digits().to_owned()),
            _ => None,
        })
    }

    async fn send_text(&self, msg: &OutgoingText) -> Result<Sent, SendError> {
        let result = self.inner.graph.send_text(&msg.chat_id, &msg.text).await;
        self.note(&result);
        let outcome = send_outcome(&result);
        // A closed window is counted where it is handled ([`Cloud::window_closed`]), also
        // when a status tells of it.
        if outcome != SendOutcome::WindowClosed {
            outcome.count();
        }
        match result {
            Ok(wamid) => Ok(Sent {
                transport_message_id: wamid,
                already: false,
                recorded: false,
            }),
            Err(e @ (GraphError::Throttled(_) | GraphError::Transient(_))) => Err(
                SendError::Transient(shared::bus::Reason::new("Cloud API", e)),
            ),
            // Retried: the operator may fix the token before the retries run out.
            Err(e @ GraphError::Unauthorized { .. }) => Err(SendError::Transient(
                shared::bus::Reason::new("Cloud API", e),
            )),
            Err(e) => {
                if e.code() == Some(WINDOW_CLOSED) {
                    self.window_closed(&msg.chat_id).await;
                    return Err(SendError::Permanent(shared::bus::Reason::new(
                        "outside the customer's 24-hour window (an approved template is needed)",
                        e,
                    )));
                }
                Err(SendError::Permanent(shared::bus::Reason::new(
                    "Cloud API",
                    e,
                )))
            }
        }
    }

    async fn typing(&self, chat_id: &str, on: bool) -> Result<(), SendError> {
        // WhatsApp clears the indicator itself, when the reply comes or after 25 s.
        if !on || !self.inner.typing {
            return Ok(());
        }
        let wamid = {
            let mut latest = self.inner.latest.lock().expect("latest lock");
            let Some(l) = latest.get_mut(chat_id) else {
                return Ok(());
            };
            if l.typing_shown.is_some_and(|t| t.elapsed() < TYPING_RENEW) {
                return Ok(());
            }
            l.typing_shown = Some(Instant::now());
            l.wamid.clone()
        };
        let result = self.inner.graph.mark_read(&wamid, true).await;
        self.note(&result);
        result.map_err(|e| SendError::Transient(shared::bus::Reason::new("Cloud API typing", e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_is_counted_by_what_graph_answered_under_the_same_labels() {
        assert_eq!(
            SendOutcome::ALL.map(SendOutcome::label),
            [
                "sent",
                "throttled",
                "transient",
                "window_closed",
                "refused",
                "unauthorized"
            ]
        );
        let refused = |code| {
            Err::<(), _>(GraphError::Refused {
                code,
                message: "no".into(),
            })
        };
        let cases = [
            (Ok(()), SendOutcome::Sent),
            (
                Err(GraphError::Throttled("slow down".into())),
                SendOutcome::Throttled,
            ),
            (
                Err(GraphError::Transient("503".into())),
                SendOutcome::Transient,
            ),
            (
                Err(GraphError::Unauthorized {
                    code: 190,
                    message: "expired".into(),
                }),
                SendOutcome::Unauthorized,
            ),
            (refused(WINDOW_CLOSED), SendOutcome::WindowClosed),
            (refused(100), SendOutcome::Refused),
        ];
        for (result, want) in cases {
            assert_eq!(send_outcome(&result), want, "{result:?}");
        }
    }
}
