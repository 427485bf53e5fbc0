//! The decisions the rules and the answer share: an answer, the model's marks read, a handoff
//! to a person, the owner's own message, a message while a person has the conversation.

use shared::bus::Publish;
use shared::proto::{Inbound, identity, inbound, outbound};

use super::{Message, Source};
use crate::config::Config;
use crate::domain::{AnsweredBy, Decision, Effect, NewHandoff, Outcome, Reason, Speaker, Turn};
use crate::store::Contact;

/// The model's mark that a person is needed (stripped from what the customer sees).
pub const MARK_HANDOFF: &str = "[[HANDOFF]]";
/// The model's mark that it did not know (stripped).
pub const MARK_UNSURE: &str = "[[UNSURE]]";
/// What the model is told about the marks.
pub const MARK_RULES: &str = "If the customer needs something only a person can do (a complaint, a problem with an order, an exception to a policy), end your answer with [[HANDOFF]]. If the business information does not answer the question, say so briefly and end your answer with [[UNSURE]].";

/// The short reference of a contact's handoff (stable per contact).
pub fn reference_of(contact_id: &str) -> String {
    let h = blake3::hash(format!("handoff|{contact_id}").as_bytes()).to_hex();
    format!("H-{}", h[..6].to_ascii_uppercase())
}

/// Hands the conversation to a person: the customer's notice (the closed-hours one outside
/// business hours), each admin's alert, the handoff recorded with the message. Asked again
/// while waiting: the same notice, no new alert.
pub fn hand_off(
    ib: &Inbound,
    contact: &Contact,
    reason: Reason,
    question: &str,
    memory: &[Turn],
    cfg: &Config,
    now: i64,
) -> Decision {
    let reference = reference_of(&contact.id);
    let hours = &cfg.hours;
    let lang = crate::domain::lang_of(question, memory);
    let msgs = cfg.messages.get(lang);
    let closed = (!hours.is_open(now)).then(|| {
        msgs.closed
            .replace("{when}", &hours.describe_in(hours.next_open(now), lang))
    });
    let remembered = Effect::Remember(Turn::customer(question));
    if contact.handoff.is_some() {
        return Decision::notice(
            closed.as_deref().unwrap_or(&msgs.handoff),
            Outcome::HandedOff,
        )
        .with(remembered);
    }
    // The operator's words where they fit the reason (BUDGET_MESSAGE, MSG_NOT_CONFIGURED).
    let notice = match (&closed, reason) {
        (Some(c), _) => c,
        (None, Reason::Budget) => &msgs.budget,
        (None, Reason::NoLlm) => &msgs.not_configured,
        (None, _) => &msgs.handoff,
    };
    let mut d = Decision::notice(notice, Outcome::HandedOff).with(remembered);
    let text = alert_text(ib, &reference, reason, question, memory);
    for admin in &cfg.admins {
        let id = blake3::hash(format!("handoff|{}|{admin}", ib.message_id).as_bytes()).to_hex()
            [..26]
            .to_owned();
        d.effects.push(Effect::publish(Publish::admin_alert(
            "brain",
            id,
            &text,
            admin.as_str(),
        )));
    }
    d.with(Effect::HandOff(NewHandoff {
        reference,
        reason,
        // Counted in opening minutes: the clock does not run while nobody can answer.
        deadline_ms: hours.add_open(now, cfg.handoff_timeout),
        chat: (ib.transport, ib.chat_id.clone()),
    }))
}

/// A guard stopped the paid call: with no model, or none left today, a person takes over.
pub fn stopped(
    ib: &Inbound,
    contact: &Contact,
    text: &str,
    memory: &[Turn],
    stop: Decision,
    cfg: &Config,
    now: i64,
) -> Decision {
    let asked = if text.is_empty() { "[photo]" } else { text };
    match stop.outcome {
        // A person has it already: what the knowledge base cannot answer waits for them.
        Outcome::NotConfigured if contact.handoff.is_some() => {
            Decision::silent(Outcome::WhileHandedOff)
                .with(Effect::Remember(Turn::customer(asked.trim())))
        }
        Outcome::NotConfigured => hand_off(ib, contact, Reason::NoLlm, asked, memory, cfg, now),
        Outcome::Budget => hand_off(ib, contact, Reason::Budget, asked, memory, cfg, now),
        _ => stop,
    }
}

/// The model's answer, its marks read and stripped: `[[HANDOFF]]` hands the conversation to a
/// person; `[[UNSURE]]` is answered, and a second one in a row hands it off.
pub fn marked(
    ib: &Inbound,
    contact: &Contact,
    question: String,
    answer: &str,
    memory: &[Turn],
    cfg: &Config,
    now: i64,
) -> Decision {
    let handoff = answer.contains(MARK_HANDOFF);
    let unsure = answer.contains(MARK_UNSURE);
    let text = answer
        .replace(MARK_HANDOFF, "")
        .replace(MARK_UNSURE, "")
        .trim()
        .to_owned();
    // Nothing but a mark says the model had nothing to say: a person, then.
    if handoff || text.is_empty() {
        return hand_off(
            ib,
            contact,
            Reason::CannotAnswer,
            &question,
            memory,
            cfg,
            now,
        );
    }
    if unsure {
        let streak = contact.unanswered_streak + 1;
        if streak >= 2 {
            return hand_off(
                ib,
                contact,
                Reason::RepeatedFailure,
                &question,
                memory,
                cfg,
                now,
            );
        }
        // The run goes on (from 0: `answered` sets no streak of its own).
        return answered(ib, contact, question, text, AnsweredBy::Model, cfg)
            .with(Effect::Streak(streak));
    }
    answered(ib, contact, question, text, AnsweredBy::Model, cfg)
}

/// The first line of the first reply to `contact`, when it has not had it: `AUTOMATED_DISCLOSURE`
/// when no model is configured (nothing the customer hears is an AI's), `AI_DISCLOSURE`
/// otherwise — an FAQ answer first included, since the contact is told only once and the model
/// writes what follows.
pub fn disclosure<'c>(
    contact: &Contact,
    by: AnsweredBy,
    cfg: &'c Config,
    lang: shared::lang::Lang,
) -> Option<&'c str> {
    let text = match by {
        AnsweredBy::Knowledge if !cfg.endpoint.configured => &cfg.automated_disclosure,
        AnsweredBy::Model | AnsweredBy::Knowledge => &cfg.ai_disclosure,
    }
    .get(lang);
    (!contact.disclosed && !text.is_empty()).then_some(text)
}

/// `text` answers `question`, written `by` the model or the knowledge base: the reply (with the
/// disclosure the first time, and what was understood of a voice note) and the memory turns.
pub fn answered(
    ib: &Inbound,
    contact: &Contact,
    question: String,
    text: String,
    by: AnsweredBy,
    cfg: &Config,
) -> Decision {
    let mut reply = text.clone();
    let disclose = disclosure(contact, by, cfg, crate::domain::lang_of(&question, &[]));
    if let Some(first) = disclose {
        reply = format!("{first}\n\n{reply}");
    }
    // A voice note's answer may start with what was understood.
    if ib.kind() == inbound::Kind::Voice && cfg.echo_transcript {
        reply = format!("🎤 \"{question}\"\n\n{reply}");
    }
    let user_turn = if ib.kind() == inbound::Kind::Image {
        format!("[photo] {question}")
    } else {
        question
    };
    let mut d = Decision {
        replies: vec![(outbound::Kind::Reply, reply)],
        outcome: Outcome::Answered,
        effects: vec![
            Effect::Remember(Turn::customer(user_turn)),
            Effect::Remember(Turn::business(text)),
        ],
    };
    if disclose.is_some() {
        d.effects.push(Effect::Disclose);
    }
    // An answer that knew ends a run of ones that did not.
    if contact.unanswered_streak != 0 {
        d.effects.push(Effect::Streak(0));
    }
    d
}

/// The owner's own message to the customer: remembered as the business's turn, and the bot
/// quiet for that customer until `until_ms`.
pub(super) fn owner_said(text: &str, until_ms: i64) -> Decision {
    Decision::silent(Outcome::OwnerAnswered)
        .with(Effect::Remember(Turn::business(text)))
        .with(Effect::PauseUntil(until_ms))
}

/// A message while a person has the conversation: no answer, remembered.
pub(super) fn while_handed_off(msg: &Message<'_>) -> Decision {
    let text = msg.text;
    let content = match (msg.source, msg.ib.kind()) {
        (Source::Transcript(_), _) if !text.is_empty() => format!("[voice] {text}"),
        (Source::Transcript(_), _) => "[voice note]".to_owned(),
        (_, inbound::Kind::Text) => text.to_owned(),
        (_, inbound::Kind::Voice) => "[voice note]".to_owned(),
        (_, inbound::Kind::Image) => format!("[photo] {text}"),
        _ => "[attachment]".to_owned(),
    };
    Decision::silent(Outcome::WhileHandedOff).with(Effect::Remember(Turn::customer(content.trim())))
}

/// What each admin is sent: the contact, a one-line summary, the last messages, and how to
/// answer.
pub fn alert_text(
    ib: &Inbound,
    reference: &str,
    reason: Reason,
    question: &str,
    memory: &[Turn],
) -> String {
    let who = ib
        .identities
        .iter()
        .find(|i| i.kind() == identity::Kind::Phone)
        .map_or_else(|| "a web chat visitor".to_owned(), |i| i.value.clone());
    let mut last = String::new();
    for t in memory.iter().rev().take(4).rev() {
        let who = match t.speaker {
            Speaker::Customer => "›",
            Speaker::Business => "‹",
        };
        last.push_str(&format!("\n{who} {}", one_line(&t.content, 200)));
    }
    last.push_str(&format!("\n› {}", one_line(question, 200)));
    format!(
        "🙋 {reference}: a customer needs a person ({}).\nContact: {who}\nSummary: {}\nLast messages:{last}\n\nAnswer: !reply {reference} <text> · back to the bot: !resume {reference}",
        reason.describe(),
        one_line(question, 100),
    )
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
