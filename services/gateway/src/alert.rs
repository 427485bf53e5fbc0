//! Alerts about a transport — a logged-out WhatsApp Web session, a reply the Cloud API would
//! not deliver — for the people who can act: POSTed to `ALERT_WEBHOOK_URL` and sent to each
//! admin (`ADMIN_NUMBERS`) as a message through any transport that reaches them.

use shared::bus::{Publish, Publisher};

use crate::config::{Config, TransportKind};

/// Where transport alerts go (see the module docs).
#[derive(Clone)]
pub struct Alerts {
    webhook: Option<secrecy::SecretString>,
    admins: Vec<shared::phone::Phone>,
    http: reqwest::Client,
    publisher: Publisher,
    /// Session states for the owner's tools, published in order by one task.
    states:
        Option<tokio::sync::mpsc::UnboundedSender<(TransportKind, crate::transport::SessionState)>>,
}

/// One alert.
pub struct Alert<'a> {
    /// What happened, as `switchboard.kind` in the webhook body (`session_logged_out`, …).
    pub kind: &'a str,
    /// The transport it is about.
    pub transport: TransportKind,
    /// The text people read.
    pub text: &'a str,
    /// Alerts with the same key reach each admin once (a repeat is not sent again).
    pub once_key: &'a str,
    /// Whether the admins are messaged too (not when the alert is about reaching them).
    pub to_admins: bool,
}

impl Alerts {
    /// Alerts configured by `cfg`, admin messages published on `bus`, the owner's tools told
    /// of the session's state through `events`.
    pub fn new(cfg: &Config, bus: &shared::bus::Bus, events: &shared::events::Events) -> Self {
        Self {
            webhook: cfg.alert_webhook.clone(),
            admins: cfg.admins.clone(),
            http: shared::http_client::client(),
            publisher: bus.publisher(),
            states: events
                .wants(shared::events::Kind::WhatsappState)
                .then(|| state_publisher(bus.clone(), events.clone())),
        }
    }

    /// Tells the owner's tools (`whatsapp.state`) that `transport`'s session is now `state`
    /// (in the background and in order: a state change never waits for Redis).
    pub fn state_changed(&self, transport: TransportKind, state: crate::transport::SessionState) {
        if let Some(tx) = &self.states {
            let _ = tx.send((transport, state));
        }
    }

    /// Whether the WhatsApp chat `digits` (a phone number's digits) is an admin's.
    pub fn is_admin(&self, digits: &str) -> bool {
        self.admins.iter().any(|a| a.digits() == digits)
    }

    /// Sends `alert`; failures are logged, never returned (an alert is best effort).
    pub async fn raise(&self, alert: Alert<'_>) {
        if let Some(url) = &self.webhook {
            let body = serde_json::json!({
                "text": alert.text,
                "switchboard": {"kind": alert.kind, "transport": alert.transport.as_str()},
            });
            if let Err(e) = shared::webhook::post_alert(&self.http, url, &body).await {
                tracing::warn!(error = %e, kind = alert.kind, "cannot send an alert to ALERT_WEBHOOK_URL");
            }
        }
        let admins = if alert.to_admins {
            self.admins.as_slice()
        } else {
            &[]
        };
        for admin in admins {
            let id = blake3::hash(format!("{}|{}|{admin}", alert.kind, alert.once_key).as_bytes())
                .to_hex()[..26]
                .to_owned();
            if let Err(e) = self
                .publisher
                .publish(Publish::admin_alert(
                    "gateway",
                    id,
                    alert.text,
                    admin.as_str(),
                ))
                .await
            {
                tracing::warn!(error = %e, kind = alert.kind, "cannot queue an alert for an admin");
            }
        }
    }
}

/// The task publishing session states one after the other, each tried until Redis takes it.
fn state_publisher(
    bus: shared::bus::Bus,
    events: shared::events::Events,
) -> tokio::sync::mpsc::UnboundedSender<(TransportKind, crate::transport::SessionState)> {
    let (tx, mut rx) =
        tokio::sync::mpsc::unbounded_channel::<(TransportKind, crate::transport::SessionState)>();
    tokio::spawn(async move {
        while let Some((transport, state)) = rx.recv().await {
            let data =
                serde_json::json!({"transport": transport.as_str(), "state": state.as_str()});
            let kind = shared::events::Kind::WhatsappState;
            let Some(p) = events.event(kind, None, data) else {
                continue;
            };
            let mut wait = std::time::Duration::from_millis(200);
            while let Err(e) = bus.publisher().publish(p.clone()).await {
                tracing::warn!(error = %e, "cannot publish the session's state yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(10));
            }
        }
    });
    tx
}
