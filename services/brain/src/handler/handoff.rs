//! Handing a conversation to a person: when the customer asks for one, when the model marks
//! that it cannot help (`[[HANDOFF]]`) or did not know twice in a row (`[[UNSURE]]`), when no
//! model is configured and the knowledge base has no answer, when the day's budget is spent.
//! The customer is told someone will reply; each admin gets a WhatsApp message with the
//! contact, the last messages and a one-line summary; `ALERT_WEBHOOK_URL` gets the reason and
//! the reference only. While handed off the bot is silent for that contact; with no reply from
//! a person in `HANDOFF_TIMEOUT_MIN`, it is back with an apology ([`Brain::expire_handoffs`]).

use shared::proto::outbound;

use super::Brain;
use crate::domain::Reason;
use crate::metrics as m;
use crate::store;

impl Brain {
    /// Tells `ALERT_WEBHOOK_URL` of a handoff: the reference and the reason, no text, no number.
    pub(super) fn notify_webhook(&self, reference: &str, reason: Reason) {
        let Some(url) = self.cfg.alert_webhook.clone() else {
            return;
        };
        let body = serde_json::json!({
            "text": format!("Conversation {reference} was handed to a person: {}.", reason.describe()),
            "switchboard": {"kind": "handoff", "reference": reference, "reason": reason.as_str()},
        });
        tokio::spawn(async move {
            let sent =
                shared::webhook::post_alert(&shared::http_client::client(), &url, &body).await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "cannot send the handoff to ALERT_WEBHOOK_URL");
            }
        });
    }

    /// Gives back to the bot every handoff nobody answered in time, telling each customer.
    pub async fn expire_handoffs(&self) -> Result<usize, sqlx::Error> {
        let now = self.clock.now_ms();
        let due = store::handoffs_due(&self.db, now).await?;
        let mut n = 0;
        for c in due {
            let Some(h) = c.handoff.clone() else { continue };
            if let Err(e) = crate::tell::handoff_closed(&self.owner, &self.bus, &c, "timeout").await
            {
                // Ended at the next check, when its event can be published.
                tracing::warn!(error = %e, "cannot publish a handoff's end; later");
                continue;
            }
            if !store::end_handoff(&self.db, &c.id, now).await? {
                continue;
            }
            let id = blake3::hash(format!("handoff-timeout|{}|{}", c.id, h.since_ms).as_bytes())
                .to_hex()[..26]
                .to_owned();
            // In the language of the customer's last words.
            let today = self.cfg.days.day_of(now);
            let memory = store::known(&self.db, &c.id, &today, self.cfg.memory_turns)
                .await?
                .memory;
            let lang = crate::domain::lang_of("", &memory);
            let text = &self.cfg.messages.get(lang).handoff_timeout;
            let sent =
                crate::commands::send_to(&self.db, &self.bus, &c, id, outbound::Kind::Notice, text)
                    .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "cannot tell a customer their handoff timed out");
            }
            metrics::counter!(m::HANDOFF_TIMEOUTS).increment(1);
            n += 1;
        }
        Ok(n)
    }
}
