//! The sidecar's NDJSON protocol (PROTOCOL.md): the lines it writes, and what the gateway
//! does with each — session state, answers to requests, received messages.

use super::*;

/// One line from the sidecar.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Event {
    Qr {
        qr: String,
    },
    PairingCode {
        code: String,
    },
    Authenticated,
    AuthFailure {
        error: String,
    },
    Ready,
    State {
        state: String,
    },
    Message(WaMessage),
    /// The business wrote to a customer from its own phone (a message the sidecar did not
    /// send).
    OwnerMessage(WaOwnerMessage),
    Ignored {
        reason: String,
    },
    MessageAck {
        id: String,
        ack: i32,
    },
    /// Someone called; the sidecar declined it.
    Call(WaCall),
    Disconnected {
        reason: String,
    },
    Result {
        r#ref: Option<String>,
        id: Option<String>,
        media: Option<WaMedia>,
    },
    Error {
        r#ref: Option<String>,
        error: String,
        #[serde(default)]
        retryable: bool,
    },
    Heartbeat {
        state: Option<String>,
        page_alive: Option<bool>,
    },
}

#[derive(Debug, Deserialize)]
pub(super) struct WaMessage {
    id: String,
    from: String,
    phone: Option<String>,
    lid: Option<String>,
    kind: String,
    #[serde(default)]
    body: String,
    timestamp: Option<i64>,
    name: Option<String>,
    media: Option<WaMedia>,
}

/// A declined call, as the sidecar reports it.
#[derive(Debug, Deserialize)]
pub(super) struct WaCall {
    id: Option<String>,
    from: String,
    phone: Option<String>,
    #[serde(default)]
    group: bool,
    #[serde(default = "yes")]
    rejected: bool,
}

fn yes() -> bool {
    true
}

/// The owner's message from the phone, as the sidecar reports it.
#[derive(Debug, Deserialize)]
pub(super) struct WaOwnerMessage {
    id: String,
    to: String,
    phone: Option<String>,
    lid: Option<String>,
    #[serde(default)]
    body: String,
    timestamp: Option<i64>,
}

impl From<WaOwnerMessage> for WaMessage {
    /// Read like a customer's message in the customer's chat (its identities are theirs).
    fn from(o: WaOwnerMessage) -> Self {
        Self {
            id: o.id,
            from: o.to,
            phone: o.phone,
            lid: o.lid,
            kind: "text".to_owned(),
            body: o.body,
            timestamp: o.timestamp,
            name: None,
            media: None,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct WaMedia {
    mime: String,
    data: String,
}

/// What a command's `result` carries.
#[derive(Debug, Default)]
pub(super) struct Answer {
    pub(super) id: Option<String>,
    pub(super) media: Option<WaMedia>,
}

pub(super) type Reply = Result<Answer, (String, bool)>;

impl Web {
    pub(super) fn on_line(&self, line: &str) {
        let event: Event = match serde_json::from_str(line) {
            Ok(e) => e,
            Err(e) => {
                metrics::counter!(PROTOCOL_ERRORS).increment(1);
                // The line may hold message text: log only its length and the parse error.
                tracing::warn!(len = line.len(), error = %e, "skipping a sidecar line that is not a protocol message");
                return;
            }
        };
        match event {
            Event::Qr { qr } => self.on_qr(&qr),
            Event::PairingCode { code } => {
                tracing::info!("WhatsApp Web pairing code ready: see the gateway's internal /qr");
                eprintln!("\nWhatsApp pairing code: {code}\n");
                self.inner
                    .session
                    .lock()
                    .expect("session lock")
                    .pairing_code = Some(code);
                self.set_state(SessionState::WaitingForQr);
            }
            Event::Authenticated => tracing::info!("WhatsApp Web linked"),
            Event::AuthFailure { error } => {
                tracing::warn!(error = %error, "WhatsApp Web refused the stored session");
            }
            Event::Ready => {
                {
                    let mut s = self.inner.session.lock().expect("session lock");
                    s.ready = true;
                    s.qr = None;
                    s.pairing_code = None;
                    s.logged_out = false;
                    s.unhealthy_since = None;
                }
                self.set_state(SessionState::Connected);
            }
            Event::State { state } => self.on_state(&state),
            Event::Heartbeat { state, page_alive } => self.on_heartbeat(state, page_alive),
            // Taken one at a time, in arrival order: a contact's messages are published in the
            // order WhatsApp delivered them.
            Event::Message(m) => {
                let _ = self.inner.messages.send(m);
            }
            Event::OwnerMessage(o) => {
                let this = self.clone();
                tokio::spawn(async move { this.on_owner_message(o.into()).await });
            }
            Event::Ignored { reason } => {
                let reason = match reason.as_str() {
                    "group" => "group",
                    "broadcast" => "broadcast",
                    "status" => "status",
                    _ => "from_me",
                };
                metrics::counter!(IGNORED, "reason" => reason).increment(1);
            }
            Event::MessageAck { id, ack } => self.on_ack(id, ack),
            Event::Call(call) => {
                let this = self.clone();
                tokio::spawn(async move { this.on_call(call).await });
            }
            Event::Disconnected { reason } => self.on_disconnected(&reason),
            Event::Result { r#ref, id, media } => self.answer(r#ref, Ok(Answer { id, media })),
            Event::Error {
                r#ref,
                error,
                retryable,
            } => {
                if r#ref.is_none() {
                    tracing::warn!(error = %error, "the sidecar reports an error");
                }
                self.answer(r#ref, Err((error, retryable)));
            }
        }
    }

    /// A QR code to scan: kept for `/qr`, printed once.
    fn on_qr(&self, qr: &str) {
        let fresh = {
            let mut s = self.inner.session.lock().expect("session lock");
            let fresh = s.qr.as_deref() != Some(qr);
            s.qr = Some(qr.to_owned());
            fresh
        };
        self.set_state(SessionState::WaitingForQr);
        if fresh {
            tracing::info!(
                "WhatsApp Web waits for a QR scan: open the gateway's internal /qr or scan the code printed below"
            );
            if let Ok(code) = qrcode::QrCode::new(qr.as_bytes()) {
                let text = code
                    .render::<qrcode::render::unicode::Dense1x2>()
                    .quiet_zone(true)
                    .build();
                eprintln!("\n{text}\n");
            }
        }
    }

    /// The sidecar is alive; its session state, unless its page stopped answering.
    fn on_heartbeat(&self, state: Option<String>, page_alive: Option<bool>) {
        {
            let mut s = self.inner.session.lock().expect("session lock");
            s.last_heartbeat = Instant::now();
        }
        if let Some(state) = state {
            // A page that no longer answers the probe is not connected, whatever the
            // library's last state says.
            let healthy = page_alive != Some(false);
            self.on_state(if healthy {
                &state
            } else {
                "PAGE_NOT_RESPONDING"
            });
        }
    }

    /// WhatsApp's acknowledgement of a message we sent: its receipt.
    fn on_ack(&self, id: String, ack: i32) {
        let status = match ack {
            -1 => Some(ReceiptStatus::Failed),
            2 => Some(ReceiptStatus::Delivered),
            3 | 4 => Some(ReceiptStatus::Read),
            _ => None,
        };
        if let Some(status) = status {
            let receipts = self.inner.receipts.clone();
            tokio::spawn(async move {
                if let Err(e) = receipts.receipt(TransportKind::Web, &id, status).await {
                    tracing::warn!(error = %e, "cannot record a delivery receipt");
                }
            });
        }
    }

    /// The session dropped; logged out means a new QR scan (and the admins are told).
    fn on_disconnected(&self, reason: &str) {
        let logged_out =
            reason.eq_ignore_ascii_case("LOGOUT") || reason.eq_ignore_ascii_case("UNPAIRED");
        {
            let mut s = self.inner.session.lock().expect("session lock");
            s.ready = false;
            s.logged_out |= logged_out;
        }
        if logged_out {
            self.set_state(SessionState::WaitingForQr);
            let this = self.clone();
            tokio::spawn(async move { this.alert_logged_out().await });
        } else {
            self.set_state(SessionState::Disconnected);
        }
    }

    pub(super) fn on_state(&self, state: &str) {
        let connected = state == "CONNECTED";
        let ready = {
            let mut s = self.inner.session.lock().expect("session lock");
            if connected {
                s.unhealthy_since = None;
            } else if s.ready {
                s.unhealthy_since.get_or_insert_with(Instant::now);
            }
            s.ready
        };
        if connected && ready {
            self.set_state(SessionState::Connected);
        } else if !connected && ready {
            self.set_state(SessionState::Disconnected);
        }
    }

    pub(super) fn answer(&self, r: Option<String>, reply: Reply) {
        if let Some(r) = r
            && let Some(tx) = self.inner.pending.lock().expect("pending lock").remove(&r)
        {
            let _ = tx.send(reply);
        }
    }

    pub(super) async fn on_message(&self, m: WaMessage) {
        // Re-sent after an outage longer than the dedup window, it may have been answered
        // before and its records be gone: dropped, never answered twice.
        if crate::storage::past_dedup_window(m.timestamp, shared::ids::now_ms()) {
            metrics::counter!(crate::metrics::WEB_STALE).increment(1);
            tracing::warn!(
                timestamp = m.timestamp,
                "a WhatsApp Web message older than the dedup window: dropped (a re-sent backlog?)"
            );
            return;
        }
        let identities = identities_of(&m);
        let mut kind = match m.kind.as_str() {
            "text" => inbound::Kind::Text,
            "voice" => inbound::Kind::Voice,
            "image" => inbound::Kind::Image,
            _ => inbound::Kind::Other,
        };
        // The sidecar could not download it with the message: ask again once.
        let mut m = m;
        if m.media.is_none() && matches!(kind, inbound::Kind::Voice | inbound::Kind::Image) {
            match self
                .request(
                    serde_json::json!({"type": "download_media", "id": m.id}),
                    Duration::from_secs(60),
                )
                .await
            {
                Ok(a) => m.media = a.media,
                Err((e, _)) => tracing::warn!(error = %e, "cannot download a media message"),
            }
        }
        let media = match &m.media {
            Some(media) if matches!(kind, inbound::Kind::Voice | inbound::Kind::Image) => {
                decode_media(media).or_else(|| {
                    kind = inbound::Kind::Other;
                    None
                })
            }
            _ => None,
        };
        let incoming = Incoming {
            transport: TransportKind::Web,
            transport_message_id: m.id.clone(),
            message_id: None,
            chat_id: m.from.clone(),
            identities,
            kind,
            text: m.body.clone(),
            media,
            sent_at_ms: m.timestamp.map_or(0, |t| t * 1000),
            display_name: m.name.clone().unwrap_or_default(),
        };
        // The library will not deliver it again: keep trying while Redis is away.
        let mut wait = Duration::from_millis(200);
        for attempt in 1..=8 {
            match self.inner.ingest.accept(incoming.clone()).await {
                Ok(crate::ingest::Outcome::Published { .. }) => {
                    // Blue ticks: the bot has it (`WA_READ_RECEIPTS`).
                    if self.inner.cfg.read_receipts {
                        self.command(serde_json::json!({"type": "seen", "chat": m.from}));
                    }
                    return;
                }
                Ok(_) => return,
                Err(crate::ingest::IngestError::Unavailable(e)) if attempt < 8 => {
                    tracing::warn!(error = %e, attempt, "cannot take a WhatsApp message yet; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a WhatsApp message could not be taken");
                    return;
                }
            }
        }
    }
}

impl Web {
    /// A call, declined by the sidecar: counted, and the caller gets `CALL_REJECT_MESSAGE` —
    /// at most once an hour (someone who calls again and again is not texted each time); not
    /// a group, not a call the sidecar could not decline.
    async fn on_call(&self, call: WaCall) {
        if !call.rejected {
            tracing::warn!("a WhatsApp call could not be declined");
            return;
        }
        metrics::counter!(CALLS, "transport" => "web").increment(1);
        let Some(text) = self.inner.cfg.call_reject_message.as_deref() else {
            return;
        };
        let person = call.from.ends_with("@c.us") || call.from.ends_with("@lid");
        if call.group || !person {
            return;
        }
        let as_message = WaMessage {
            id: call.id.clone().unwrap_or_default(),
            from: call.from.clone(),
            phone: call.phone.clone(),
            lid: None,
            kind: "other".into(),
            body: String::new(),
            timestamp: None,
            name: None,
            media: None,
        };
        let hour = shared::ids::now_ms() / 3_600_000;
        let caller = Incoming {
            transport: TransportKind::Web,
            transport_message_id: format!("call:{}:{hour}", call.from),
            message_id: None,
            chat_id: call.from,
            identities: identities_of(&as_message),
            kind: inbound::Kind::Other,
            text: String::new(),
            media: None,
            sent_at_ms: 0,
            display_name: String::new(),
        };
        if let Err(e) = self.inner.ingest.tell(&caller, text).await {
            tracing::warn!(error = %e, "cannot answer a declined call with a text");
        }
    }

    /// A message the business wrote from its phone: unless the gateway sent it itself (its
    /// sent record, written once the send returns, is looked for after a moment), the brain
    /// is told so it pauses for that customer.
    async fn on_owner_message(&self, m: WaMessage) {
        tokio::time::sleep(OWNER_CHECK_DELAY).await;
        match self.inner.receipts.is_sent(TransportKind::Web, &m.id).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell whether a message of ours was the owner's");
                return;
            }
        }
        let incoming = Incoming {
            transport: TransportKind::Web,
            transport_message_id: m.id.clone(),
            message_id: None,
            chat_id: m.from.clone(),
            identities: identities_of(&m),
            kind: inbound::Kind::Text,
            text: m.body.clone(),
            media: None,
            sent_at_ms: m.timestamp.map_or(0, |t| t * 1000),
            display_name: String::new(),
        };
        if let Err(e) = self.inner.ingest.business_said(&incoming).await {
            tracing::warn!(error = %e, "cannot pass on the owner's message");
        }
    }
}

/// How long after the owner's message its sent record is looked for (a send of ours records
/// it as soon as the send returns).
const OWNER_CHECK_DELAY: Duration = Duration::from_secs(2);

/// Who sent a WhatsApp message: the phone number (when the sidecar knows it), the WhatsApp id
/// and the LID.
fn identities_of(m: &WaMessage) -> Vec<Identity> {
    let mut identities = Vec::new();
    let phone = m.phone.clone().or_else(|| phone_of_wa_id(&m.from));
    if let Some(p) = phone
        .as_deref()
        .and_then(|p| shared::phone::Phone::parse(p).ok())
    {
        identities.push(Identity {
            kind: identity::Kind::Phone as i32,
            value: p.as_str().to_owned(),
        });
    }
    if m.from.ends_with("@c.us") {
        identities.push(Identity {
            kind: identity::Kind::WaId as i32,
            value: m.from.clone(),
        });
    }
    if let Some(lid) = m
        .lid
        .clone()
        .or_else(|| m.from.ends_with("@lid").then(|| m.from.clone()))
    {
        identities.push(Identity {
            kind: identity::Kind::Lid as i32,
            value: lid,
        });
    }
    identities
}

/// A media message's bytes and their real type; `None` (the message becomes "other") when
/// they do not decode or are not audio or an image.
fn decode_media(media: &WaMedia) -> Option<MediaBytes> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&media.data)
        .ok()?;
    match crate::media::sniff(&bytes, &media.mime) {
        Ok(s) => Some(MediaBytes {
            bytes,
            mime: s.mime,
        }),
        Err(e) => {
            tracing::info!(error = %e, "unreadable media: treated as another kind");
            None
        }
    }
}
