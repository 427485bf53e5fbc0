//! Handing a conversation to a person: when the customer asks for one, when the model marks
//! that it cannot help (`[[HANDOFF]]`) or did not know twice in a row (`[[UNSURE]]`), when no
//! model is configured and the knowledge base has no answer, when the day's budget is spent.
//! The customer is told someone will reply; each admin gets a WhatsApp message with the
//! contact, the last messages and a one-line summary; `ALERT_WEBHOOK_URL` gets the reason and
//! the reference only. While handed off the bot is silent for that contact; with no reply from
//! a person in `HANDOFF_TIMEOUT_MIN`, it is back with an apology ([`Brain::expire_handoffs`]).

use super::*;

/// The model's mark that a person is needed (stripped from what the customer sees).
pub(crate) const MARK_HANDOFF: &str = "[[HANDOFF]]";
/// The model's mark that it did not know (stripped).
pub(crate) const MARK_UNSURE: &str = "[[UNSURE]]";
/// What the model is told about the marks.
pub(crate) const MARK_RULES: &str = "If the customer needs something only a person can do (a complaint, a problem with an order, an exception to a policy), end your answer with [[HANDOFF]]. If the business information does not answer the question, say so briefly and end your answer with [[UNSURE]].";

/// Why a conversation goes to a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The customer asked for a person.
    Asked,
    /// The model marked that a person is needed.
    CannotAnswer,
    /// The model did not know twice in a row.
    RepeatedFailure,
    /// The day's budget is spent.
    Budget,
    /// No model is configured and the knowledge base has no answer.
    NoLlm,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Asked => "asked",
            Self::CannotAnswer => "cannot_answer",
            Self::RepeatedFailure => "repeated_failure",
            Self::Budget => "budget",
            Self::NoLlm => "no_llm",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Asked => "asked for a person",
            Self::CannotAnswer => "the assistant could not help",
            Self::RepeatedFailure => "the assistant did not know, twice in a row",
            Self::Budget => "today's AI budget is spent",
            Self::NoLlm => "the knowledge base has no answer (no AI configured)",
        }
    }
}

/// The short reference of a contact's handoff (stable per contact).
pub(crate) fn reference_of(contact_id: &str) -> String {
    let h = blake3::hash(format!("handoff|{contact_id}").as_bytes()).to_hex();
    format!("H-{}", h[..6].to_ascii_uppercase())
}

impl Brain {
    /// Whether `text` asks for a person (`HANDOFF_PHRASES`).
    pub(super) fn asks_for_person(&self, text: &str) -> bool {
        let t = crate::knowledge::framed(text);
        self.handoff_phrases.iter().any(|p| t.contains(p.as_str()))
    }

    /// Hands the conversation to a person (see the module docs): the customer's notice, the
    /// admins' messages, the handoff recorded with the message.
    pub(super) fn hand_off(
        &self,
        ib: &Inbound,
        contact: &Contact,
        reason: Reason,
        question: &str,
        memory: &[Turn],
    ) -> Decision {
        let reference = reference_of(&contact.id);
        let now = shared::ids::now_ms();
        let hours = &self.cfg.hours;
        let closed = (!hours.is_open(now)).then(|| {
            self.cfg
                .messages
                .closed
                .replace("{when}", &hours.describe(hours.next_open(now)))
        });
        // Asked again while closed: they are waiting already; the same answer, no new alert.
        if contact.handoff.is_some() {
            let mut d = Decision::notice(
                closed.as_deref().unwrap_or(&self.cfg.messages.handoff),
                Outcome::HandedOff,
            );
            d.turns.push(Turn {
                role: "user",
                content: question.to_owned(),
            });
            return d;
        }
        metrics::counter!(m::HANDOFFS, "reason" => reason.as_str()).increment(1);
        tracing::info!(
            reference,
            reason = reason.as_str(),
            "handed off to a person"
        );
        let text = alert_text(ib, &reference, reason, question, memory);
        // The operator's words where they fit the reason (BUDGET_MESSAGE, MSG_NOT_CONFIGURED).
        let msgs = &self.cfg.messages;
        let notice = match (&closed, reason) {
            (Some(c), _) => c,
            (None, Reason::Budget) => &msgs.budget,
            (None, Reason::NoLlm) => &msgs.not_configured,
            (None, _) => &msgs.handoff,
        };
        let mut d = Decision::notice(notice, Outcome::HandedOff);
        d.turns.push(Turn {
            role: "user",
            content: question.to_owned(),
        });
        for admin in &self.cfg.admins {
            let id = blake3::hash(format!("handoff|{}|{admin}", ib.message_id).as_bytes()).to_hex()
                [..26]
                .to_owned();
            d.extra
                .push(Publish::admin_alert("brain", id, &text, admin.as_str()));
        }
        d.handoff = Some(store::NewHandoff {
            reference: reference.clone(),
            reason: reason.as_str(),
            // Counted in opening minutes: the clock does not run while nobody can answer.
            deadline_ms: hours.add_open(now, self.cfg.handoff_timeout),
            chat: (ib.transport, ib.chat_id.clone()),
        });
        self.notify_webhook(&reference, reason);
        d
    }

    /// Tells `ALERT_WEBHOOK_URL` of a handoff: the reference and the reason, no text, no number.
    fn notify_webhook(&self, reference: &str, reason: Reason) {
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
        let now = shared::ids::now_ms();
        let due = store::handoffs_due(&self.db, now).await?;
        let mut n = 0;
        for c in due {
            let Some(h) = c.handoff.clone() else { continue };
            if !store::end_handoff(&self.db, &c.id, now).await? {
                continue;
            }
            let id = blake3::hash(format!("handoff-timeout|{}|{}", c.id, h.since_ms).as_bytes())
                .to_hex()[..26]
                .to_owned();
            let text = &self.cfg.messages.handoff_timeout;
            let sent =
                commands::send_to(&self.db, &self.bus, &c, id, outbound::Kind::Notice, text).await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "cannot tell a customer their handoff timed out");
            }
            metrics::counter!(m::HANDOFF_TIMEOUTS).increment(1);
            n += 1;
        }
        Ok(n)
    }
}

/// What each admin is sent: the contact, a one-line summary, the last messages, and how to
/// answer.
fn alert_text(
    ib: &Inbound,
    reference: &str,
    reason: Reason,
    question: &str,
    memory: &[Turn],
) -> String {
    let who = ib
        .identities
        .iter()
        .find(|i| i.kind() == shared::proto::identity::Kind::Phone)
        .map_or_else(|| "a web chat visitor".to_owned(), |i| i.value.clone());
    let mut last = String::new();
    for t in memory.iter().rev().take(4).rev() {
        let who = if t.role == "user" { "›" } else { "‹" };
        last.push_str(&format!("\n{who} {}", one_line(&t.content, 200)));
    }
    last.push_str(&format!("\n› {}", one_line(question, 200)));
    format!(
        "🙋 {reference}: a customer needs a person ({}).\nContact: {who}\nSummary: {}\nLast messages:{last}\n\nAnswer: !reply {reference} <text> · back to the bot: !resume {reference}",
        reason.describe(),
        one_line(question, 100),
    )
}

/// The owner's own message to the customer: remembered as the business's turn, and the bot
/// quiet for that customer until `until_ms`.
pub(super) fn owner_said(text: &str, until_ms: i64) -> Decision {
    metrics::counter!(m::OWNER_PAUSES).increment(1);
    let mut d = Decision::silent(Outcome::OwnerAnswered);
    d.turns.push(Turn {
        role: "assistant",
        content: text.to_owned(),
    });
    d.pause_until_ms = Some(until_ms);
    d
}

/// A text or photo followed by more within the burst window: remembered, no answer of its own
/// (a photo's media kept for the burst's answer).
pub(super) fn in_burst(ib: &Inbound) -> Decision {
    let mut d = Decision::silent(Outcome::Burst);
    let photo = ib.kind() == inbound::Kind::Image;
    d.turns.push(Turn {
        role: "user",
        content: if photo {
            format!("[photo] {}", ib.text.trim()).trim().to_owned()
        } else {
            ib.text.trim().to_owned()
        },
    });
    if photo {
        d.burst_media = ib.media.as_ref().map(prost::Message::encode_to_vec);
    }
    d
}

/// A voice note's transcript joining a burst: remembered, answered with the burst's last.
pub(super) fn voice_in_burst(text: &str) -> Decision {
    let mut d = Decision::silent(Outcome::Burst);
    d.turns.push(Turn {
        role: "user",
        content: format!("[voice] {text}"),
    });
    d
}

/// A message while a person has the conversation: no answer, remembered.
pub(super) fn while_handed_off(ib: &Inbound, text: &str) -> Decision {
    let content = match ib.kind() {
        inbound::Kind::Text => text.to_owned(),
        inbound::Kind::Voice => "[voice note]".to_owned(),
        inbound::Kind::Image => format!("[photo] {text}"),
        _ => "[attachment]".to_owned(),
    };
    let mut d = Decision::silent(Outcome::WhileHandedOff);
    d.turns.push(Turn {
        role: "user",
        content: content.trim().to_owned(),
    });
    d
}

/// `text` on one line, at most `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_match_whole_words_in_any_case_and_accent() {
        use crate::knowledge::framed;
        assert_eq!(
            framed("¿Puedo hablar con ALGUIEN?"),
            " puedo hablar con alguien "
        );
        assert!(framed("Atención al CLIENTE").contains(&framed("atencion al cliente")));
        assert!(framed("I want a HUMAN please").contains(&framed("human")));
        assert!(!framed("humanitarian aid").contains(&framed("human")));
        assert!(reference_of("c1").starts_with("H-"));
        assert_eq!(reference_of("c1"), reference_of("c1"));
        assert_eq!(one_line("a\n b   c", 10), "a b c");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }
}
