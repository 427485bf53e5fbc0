//! Typing indicators: shown while a customer's message waits for its answer (started when the
//! message is accepted, renewed every 8 s, ended by the reply or after 25 s). The ingest and
//! the deliverer ask through a [`Typing`] handle; one task ([`Indicators::run`]) owns the
//! indicators and the transports that show them — so the transports, which hold the ingest,
//! are never held by it.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{TYPING_CAP, TransportKind};
use crate::transport::Transports;

enum Cmd {
    Start(TransportKind, String),
    Stop(TransportKind, String),
    /// An indicator's task ended (its generation, so a newer one is not forgotten).
    Done(TransportKind, String, u64),
}

/// Asks for typing indicators (cheap to clone).
#[derive(Clone)]
pub struct Typing {
    tx: mpsc::UnboundedSender<Cmd>,
    /// `WA_TYPING`: whether WhatsApp chats see it (the web chat always does).
    whatsapp: bool,
}

/// The task that shows the indicators: [`Indicators::run`].
pub struct Indicators {
    rx: mpsc::UnboundedReceiver<Cmd>,
    tx: mpsc::UnboundedSender<Cmd>,
    /// `BURST_WINDOW_MS`: on WhatsApp, typing starts when the window of the chat's last
    /// message ends (more may come until then).
    burst_window: std::time::Duration,
}

/// A handle and the task it talks to; `whatsapp`: `WA_TYPING`; `burst_window`:
/// `BURST_WINDOW_MS`.
pub fn channel(whatsapp: bool, burst_window: std::time::Duration) -> (Typing, Indicators) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Typing {
            tx: tx.clone(),
            whatsapp,
        },
        Indicators {
            rx,
            tx,
            burst_window,
        },
    )
}

impl Typing {
    /// Shows "typing…" in the chat until [`Typing::stop`] or 25 s, renewed every 8 s.
    pub fn start(&self, transport: TransportKind, chat_id: &str) {
        if !self.whatsapp && transport != TransportKind::Webchat {
            return;
        }
        let _ = self.tx.send(Cmd::Start(transport, chat_id.to_owned()));
    }

    /// Ends the typing indicator of a chat (the reply was sent).
    pub fn stop(&self, transport: TransportKind, chat_id: &str) {
        let _ = self.tx.send(Cmd::Stop(transport, chat_id.to_owned()));
    }
}

impl Indicators {
    /// Shows the indicators asked for through the transports, until `shutdown`.
    pub async fn run(mut self, transports: Transports, shutdown: CancellationToken) {
        let mut open: HashMap<(TransportKind, String), (u64, CancellationToken)> = HashMap::new();
        let mut generation = 0u64;
        loop {
            let cmd = tokio::select! {
                () = shutdown.cancelled() => return,
                cmd = self.rx.recv() => match cmd {
                    Some(c) => c,
                    None => return,
                },
            };
            match cmd {
                Cmd::Start(transport, chat) => {
                    let Some(t) = transports.get(transport).cloned() else {
                        continue;
                    };
                    generation += 1;
                    let token = CancellationToken::new();
                    if let Some((_, old)) =
                        open.insert((transport, chat.clone()), (generation, token.clone()))
                    {
                        old.cancel();
                    }
                    let done = self.tx.clone();
                    let this = generation;
                    let wait = self.burst_window;
                    tokio::spawn(async move {
                        show(t, &chat, token, wait).await;
                        let _ = done.send(Cmd::Done(transport, chat, this));
                    });
                }
                Cmd::Stop(transport, chat) => {
                    if let Some((_, token)) = open.remove(&(transport, chat)) {
                        token.cancel();
                    }
                }
                Cmd::Done(transport, chat, g) => {
                    let key = (transport, chat);
                    if open.get(&key).is_some_and(|(current, _)| *current == g) {
                        open.remove(&key);
                    }
                }
            }
        }
    }
}

/// One chat's indicator: on, renewed, then off (unless the reply itself cleared it).
async fn show(
    t: std::sync::Arc<dyn crate::transport::Transport>,
    chat: &str,
    token: CancellationToken,
    burst_window: std::time::Duration,
) {
    // Where the indicator rides on the messages, the acceptance showed it and the reply
    // clears it: only renewals, and the end when no reply came in time, are written here.
    let with_messages = t.typing_with_messages();
    // A burst is answered when its window ends: typing from then (a later message of the
    // chat starts this over; a reply before then ends it unshown).
    if !with_messages && !burst_window.is_zero() {
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(burst_window) => {}
        }
    }
    let deadline = tokio::time::Instant::now() + TYPING_CAP;
    let mut first = true;
    let replied = loop {
        if !(first && with_messages)
            && let Err(e) = t.typing(chat, true).await
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
        let _ = t.typing(chat, false).await;
    }
}
