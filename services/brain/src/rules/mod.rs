//! The rules: what a message gets, decided from the message, what is known of its sender, the
//! configuration and the time — and nothing else. Deciding reads nothing and writes nothing;
//! it returns a [`Step`]: a finished [`Decision`] (its changes as effects), a command to run,
//! a voice note to transcribe, or a question to answer. A transcript is a text that arrived
//! late and goes through the same rules, except that commands and STOP/START come only from
//! typed text.
//!
//! In order: the owner's own message; opt-out (STOP/START); access; commands; a person has the
//! conversation (handoff, the owner's pause); a burst; a request for a person; the kind of
//! message; a text cut to `MAX_INPUT_CHARS`; then the question.

mod person;
mod replies;
mod small_talk;
pub use small_talk::{Talk, small_talk, small_talk_reply};
#[cfg(test)]
mod tests;

pub use replies::{
    MARK_HANDOFF, MARK_RULES, MARK_UNSURE, alert_text, answered, hand_off, marked, reference_of,
    stopped,
};

use shared::lang::Lang;
use shared::proto::{Inbound, inbound};

use crate::burst;
use crate::commands::Command;
use crate::config::{AccessMode, Config};
use crate::domain::{Decision, Effect, Outcome, Turn};
pub use crate::domain::{Heard, Message, Source};
use crate::store::{Contact, Role};

/// What comes after the rules.
#[derive(Debug)]
pub enum Step {
    /// Decided.
    Done(Decision),
    /// A `!` command, run for its sender.
    Command(Command),
    /// A voice note: transcribed (the guards that protect the owner's money first).
    Transcribe,
    /// A question: the knowledge base, the guards, then the model, due by `deadline_ms`.
    Answer {
        /// When the answer is due (unix ms).
        deadline_ms: i64,
    },
}

/// The rules of one deployment: its configuration's handoff phrases, framed once.
#[derive(Debug, Clone)]
pub struct Rules {
    /// `HANDOFF_PHRASES`, framed for whole-word matching ([`crate::knowledge::framed`]).
    phrases: Vec<String>,
}

impl Rules {
    /// The rules of `cfg`.
    pub fn new(cfg: &Config) -> Self {
        Self::with_phrases(&cfg.handoff_phrases)
    }

    /// The rules with `phrases` as `HANDOFF_PHRASES` (what the answer-quality benchmark runs).
    pub fn with_phrases(phrases: &[String]) -> Self {
        Self {
            phrases: phrases
                .iter()
                .map(|p| crate::knowledge::framed(p))
                .collect(),
        }
    }

    /// Whether `text` asks for a person: a `HANDOFF_PHRASES` phrase asked for, not merely
    /// written ([`person`]).
    pub fn asks_for_person(&self, text: &str) -> bool {
        person::asks_for(&self.phrases, text)
    }

    /// What `msg` from `contact` (whose last turns are `memory`) gets at `now` (unix ms) on
    /// `day` (the business's day).
    pub fn decide(
        &self,
        msg: &Message<'_>,
        contact: &Contact,
        memory: &[Turn],
        cfg: &Config,
        day: &str,
        now: i64,
    ) -> Step {
        let (ib, text) = (msg.ib, msg.text);
        let typed = msg.source.is_typed();
        let msgs = cfg.messages.get(msg.lang);
        // The owner wrote to this customer from the business's phone: their turn, and quiet.
        if ib.from_business {
            return Step::Done(replies::owner_said(
                text,
                now + cfg.owner_pause.as_millis() as i64,
            ));
        }
        // Opt-out first: an opted-out contact hears nothing but the START confirmation.
        if contact.opted_out {
            if typed && text.eq_ignore_ascii_case("start") {
                return Step::Done(
                    Decision::notice(&msgs.opted_in, Outcome::OptedIn).with(Effect::OptOut(false)),
                );
            }
            return Step::Done(Decision::silent(Outcome::OptedOut));
        }
        if typed && text.eq_ignore_ascii_case("stop") {
            return Step::Done(
                Decision::notice(&msgs.opted_out, Outcome::OptedOut).with(Effect::OptOut(true)),
            );
        }
        if !allowed(ib, contact, cfg) {
            return Step::Done(refuse(contact, cfg, day, msg.lang));
        }
        if typed && ib.kind() == inbound::Kind::Text && text.starts_with('!') {
            return Step::Command(Command::parse(text));
        }
        // Handed to a person: the bot keeps quiet, and remembers what was said. Outside
        // business hours the bot keeps helping while the customer waits for a person; while
        // the owner is answering, it keeps quiet.
        // Handed off only because no model is configured: the knowledge base still answers
        // what it knows (and small talk); the rest waits for the person quietly ([`stopped`]).
        let paused = contact.paused_until_ms.is_some_and(|until| until > now);
        let for_no_model = !cfg.endpoint.configured
            && contact
                .handoff
                .as_ref()
                .is_some_and(|h| h.reason == crate::domain::Reason::NoLlm);
        if paused || (contact.handoff.is_some() && cfg.hours.is_open(now) && !for_no_model) {
            return Step::Done(replies::while_handed_off(msg));
        }
        if msg.absorbed {
            return Step::Done(burst::absorbed(msg));
        }
        let asks = match msg.source {
            Source::Typed => ib.kind() == inbound::Kind::Text,
            Source::Transcript(_) => true,
        };
        if asks && self.asks_for_person(text) {
            return Step::Done(hand_off(
                ib,
                contact,
                crate::domain::Reason::Asked,
                text,
                memory,
                cfg,
                now,
            ));
        }
        if let Source::Transcript(heard) = msg.source {
            return match not_heard(heard, cfg, msg.lang) {
                Some(notice) => Step::Done(notice),
                None => Step::Answer {
                    deadline_ms: msg
                        .deadline_ms
                        .unwrap_or(now + cfg.voice_deadline.as_millis() as i64),
                },
            };
        }
        let deadline = match ib.kind() {
            inbound::Kind::Text => cfg.text_deadline,
            inbound::Kind::Image => cfg.image_deadline,
            inbound::Kind::Voice => return Step::Transcribe,
            // While a person has it, what the bot could not use waits for them.
            inbound::Kind::Other | inbound::Kind::Unspecified if for_no_model => {
                return Step::Done(replies::while_handed_off(msg));
            }
            inbound::Kind::Other | inbound::Kind::Unspecified => {
                return Step::Done(Decision::notice(&msgs.unsupported, Outcome::Unsupported));
            }
        };
        // Cut to MAX_INPUT_CHARS on the way in (the gateway, `Brain::handle`).
        if ib.text_cut && for_no_model {
            return Step::Done(replies::while_handed_off(msg));
        }
        if ib.text_cut {
            return Step::Done(Decision::notice(&msgs.too_long, Outcome::TooLong));
        }
        Step::Answer {
            deadline_ms: now + deadline.as_millis() as i64,
        }
    }
}

/// `ACCESS_MODE` governs phone identities; web chat visitors are served unless
/// `WEBCHAT_VISITORS=off` (within their rate limit at the gateway, and the allowance all
/// visitors share).
fn allowed(ib: &Inbound, contact: &Contact, cfg: &Config) -> bool {
    if shared::proto::is_visitor(&ib.identities) {
        cfg.visitors_open
    } else {
        contact.role == Role::Admin || contact.allowed || cfg.access == AccessMode::Open
    }
}

/// What a paid call depends on besides the configuration (read from Redis and the database).
#[derive(Debug, Clone, Copy, Default)]
pub struct Spend {
    /// Today's spend reached `DAILY_BUDGET_USD` (the ledger's mark).
    pub over_budget: bool,
    /// The web chat visitors' shared allowance for today is used up (for a visitor).
    pub visitors_spent: bool,
    /// The contact's tokens today.
    pub tokens_today: i64,
}

/// What stops a paid call, in order: no model configured, the day's budget spent, the
/// visitors' shared allowance used up, the contact's daily tokens spent. `None`: go ahead.
/// What the customer is told is in `lang`.
pub fn guard(spend: &Spend, cfg: &Config, lang: Lang) -> Option<Decision> {
    let msgs = cfg.messages.get(lang);
    if !cfg.endpoint.configured {
        return Some(Decision::notice(
            &msgs.not_configured,
            Outcome::NotConfigured,
        ));
    }
    if spend.over_budget {
        return Some(Decision::notice(&msgs.budget, Outcome::Budget));
    }
    if spend.visitors_spent {
        return Some(Decision::notice(
            &msgs.visitor_budget,
            Outcome::VisitorBudget,
        ));
    }
    if cfg.contact_daily_tokens > 0 && spend.tokens_today.max(0) as u64 >= cfg.contact_daily_tokens
    {
        return Some(Decision::notice(&msgs.token_budget, Outcome::TokenBudget));
    }
    None
}

/// What the customer is told of a voice note that was not transcribed (`None`: it was).
fn not_heard(heard: Heard, cfg: &Config, lang: Lang) -> Option<Decision> {
    let msgs = cfg.messages.get(lang);
    Some(match heard {
        Heard::Ok => return None,
        Heard::TooLong => Decision::notice(&msgs.voice_too_long, Outcome::VoiceTooLong),
        Heard::Budget => Decision::notice(&msgs.visitor_budget, Outcome::VisitorBudget),
        Heard::Failed => Decision::notice(&msgs.transcription_failed, Outcome::TranscriptionFailed),
    })
}

/// Not on the whitelist: told once a day, silent otherwise.
fn refuse(contact: &Contact, cfg: &Config, day: &str, lang: Lang) -> Decision {
    if contact.last_refusal_day.as_deref() == Some(day) {
        return Decision::silent(Outcome::RefusedSilently);
    }
    Decision::notice(&cfg.messages.get(lang).not_allowed, Outcome::Refused)
        .with(Effect::RefusedToday)
}
