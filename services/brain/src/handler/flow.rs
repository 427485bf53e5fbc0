//! One inbound message and one transcript, from the stored outbox through the rules to the
//! commit.

use shared::bus::{HandleError, Publish};
use shared::proto::{Inbound, Transcript, inbound, transcript};

use super::Brain;
use crate::config::Config;
use crate::domain::{Author, Counts, Decision, Direction, Effect, LogKind, Mark, Outcome, Reason};
use crate::metrics as m;
use crate::rules::{Heard, Message, Source, Step};
use crate::store::{self, Contact, Known, LogEntry, OrRetry};

/// The sender's identities as (kind, value) pairs, as contacts are stored.
fn sender_identities(ib: &Inbound) -> Vec<(String, String)> {
    ib.identities
        .iter()
        .filter(|i| !i.value.is_empty())
        .map(|i| (i.kind().label().to_owned(), i.value.clone()))
        .collect()
}

/// The events an outbox row holds, to publish again.
fn stored_events(bytes: &[u8]) -> Result<Vec<Publish>, HandleError> {
    store::decode_events(bytes).map_err(|e| HandleError::permanent("stored events", e))
}

/// How a handled message is committed: under its own id, or — a transcript's answer — under
/// the voice note's.
struct Handled<'a> {
    ib: &'a Inbound,
    contact: &'a Contact,
    /// The outbox row's key.
    key: String,
    /// What makes the reply ids of this answer differ from the message's others.
    salt: &'static str,
    /// The `kind` label of the message count.
    kind: &'static str,
    day: String,
    now: i64,
}

impl Brain {
    pub(super) async fn handle_inbound(
        &self,
        ib: &Inbound,
        absorbed: bool,
    ) -> Result<Vec<Publish>, HandleError> {
        let identities = checked_sender(ib)?;
        let now = self.clock.now_ms();
        let today = self.cfg.days.day_of(now);
        let text = ib.text.trim();
        let may_answer = match ib.kind() {
            inbound::Kind::Text => !text.starts_with('!'),
            inbound::Kind::Image => true,
            _ => false,
        };
        let turns = if may_answer { self.cfg.memory_turns } else { 0 };
        let ask = store::Ask {
            inbound_id: ib.message_id.clone(),
            identities,
            day: today.clone(),
            memory: may_answer,
        };
        let snap = self.reads.read(ask).await.or_retry()?;
        if let Some(stored) = snap.answered {
            metrics::counter!(m::REPUBLISHED).increment(1);
            tracing::info!("already answered: republishing the stored reply");
            return stored_events(&stored);
        }
        let (contact, known) = match snap.contact {
            Some(c) => (c, snap.known),
            None => {
                // A new sender (or a new identity of one): linked in a write, then read.
                let c = store::resolve(&self.db, &sender_identities(ib), now)
                    .await
                    .or_retry()?;
                let known = store::known(&self.db, &c.id, &today, turns)
                    .await
                    .or_retry()?;
                (c, known)
            }
        };
        tracing::Span::current().record(
            "contact",
            tracing::field::display(shared::redact::Redacted(&contact.id)),
        );
        let msg = Message {
            ib,
            text,
            source: Source::Typed,
            absorbed,
            deadline_ms: None,
            lang: crate::domain::lang_of(text, &known.memory),
        };
        let decision = self.follow(&msg, &contact, known, &today, now).await?;
        let handled = Handled {
            ib,
            contact: &contact,
            key: ib.message_id.clone(),
            salt: "",
            kind: ib.kind().label(),
            day: today,
            now,
        };
        self.finish(handled, decision, None).await
    }

    /// A transcript came back: the voice note's text goes through the rules like a typed one
    /// (but for commands and STOP/START), and is answered — or what went wrong is said.
    pub(super) async fn handle_transcript(
        &self,
        t: &Transcript,
    ) -> Result<Vec<Publish>, HandleError> {
        let key = format!("{}{}", store::VOICE_KEY, t.message_id);
        if let Some(stored) = store::outbox(&self.db, &key).await.or_retry()? {
            metrics::counter!(m::REPUBLISHED).increment(1);
            return stored_events(&stored);
        }
        let Some((bytes, deadline_ms)) = store::voice_pending(&self.db, &t.message_id)
            .await
            .or_retry()?
        else {
            tracing::info!("transcript for no waiting voice note (answered or expired)");
            return Ok(Vec::new());
        };
        let ib = <Inbound as prost::Message>::decode(bytes.as_slice())
            .map_err(|e| HandleError::permanent("stored inbound", e))?;
        let now = self.clock.now_ms();
        let today = self.cfg.days.day_of(now);
        let contact = store::resolve(&self.db, &sender_identities(&ib), now)
            .await
            .or_retry()?;
        let known = store::known(&self.db, &contact.id, &today, self.cfg.memory_turns)
            .await
            .or_retry()?;
        let text = t.text.trim();
        let heard = heard(t, text);
        let msg = Message {
            ib: &ib,
            text,
            source: Source::Transcript(heard),
            absorbed: heard == Heard::Ok
                && crate::burst::voice_joins(&self.bus, &self.cfg, &ib).await?,
            deadline_ms: Some(deadline_ms),
            lang: crate::domain::lang_of(text, &known.memory),
        };
        let mut decision = self.follow(&msg, &contact, known, &today, now).await?;
        if decision.outcome == Outcome::Answered {
            decision.outcome = Outcome::AnsweredVoice;
        }
        decision.effects.push(Effect::TranscriptDone {
            message_id: ib.message_id.clone(),
            text: text.to_owned(),
        });
        let handled = Handled {
            ib: &ib,
            contact: &contact,
            key,
            salt: ":voice",
            kind: "voice",
            day: today,
            now,
        };
        self.finish(handled, decision, Some(text)).await
    }

    /// What the rules decide for `msg`, and what their step leads to. The rules read the
    /// environment's configuration (the admins' settings change none of them); answering reads
    /// the configuration in effect.
    async fn follow(
        &self,
        msg: &Message<'_>,
        contact: &Contact,
        known: Known,
        day: &str,
        now: i64,
    ) -> Result<Decision, HandleError> {
        let step = self
            .rules
            .decide(msg, contact, &known.memory, &self.cfg, day, now);
        match step {
            Step::Done(d) => Ok(d),
            Step::Command(c) => c.run(&self.office, contact, &msg.ib.message_id).await,
            Step::Transcribe => {
                let eff = self.current().await?;
                self.transcribe(msg.ib, contact, &known, &eff, now, msg.lang)
                    .await
            }
            Step::Answer { deadline_ms } => {
                let eff = self.current().await?;
                self.answer(msg, contact, known, &eff, now, deadline_ms)
                    .await
            }
        }
    }

    /// Counts, holds alerts past the digest's threshold, tells the handoff's webhook, and
    /// commits `decision`; the events to publish.
    async fn finish(
        &self,
        h: Handled<'_>,
        mut decision: Decision,
        transcript: Option<&str>,
    ) -> Result<Vec<Publish>, HandleError> {
        self.limit_alerts(h.ib, &h.key, &mut decision).await?;
        count(h.kind, &decision);
        if let Some(mark) = conversation_mark(&self.cfg, &decision) {
            decision.effects.push(Effect::Conversation(mark));
        }
        let events = self.events(h.ib, &decision, h.salt);
        let log = log_entries(h.ib, &decision, &events, transcript);
        let outcome = decision.outcome;
        let replies = decision.replies.len();
        // The webhook hears of a handoff before its commit: at least once (again if the commit
        // fails and the message is delivered again), like the admins' alerts in the outbox.
        if let Some(h) = decision.handoff() {
            tracing::info!(
                reference = h.reference,
                reason = h.reason.as_str(),
                "handed off to a person"
            );
            self.notify_webhook(&h.reference, h.reason);
        }
        let told = crate::tell::owner_events(
            &self.owner,
            &h.contact.id,
            h.ib,
            transcript.is_none(),
            &decision,
            &events,
        );
        let mut events = events;
        events.extend(told);
        let commit = store::Commit::new(
            h.key,
            h.contact.id.clone(),
            decision,
            &events,
            log,
            h.day,
            h.now,
        );
        let Some(stored) = self.commit(commit).await? else {
            tracing::info!(
                outcome = outcome.as_str(),
                replies,
                "inbound message handled"
            );
            return Ok(events);
        };
        // Another delivery committed first: its events, not these.
        stored_events(&stored)
    }
}

/// How the transcriber fared with a voice note (`text`: its transcript, trimmed).
fn heard(t: &Transcript, text: &str) -> Heard {
    match t.outcome() {
        transcript::Outcome::Ok if !text.is_empty() => Heard::Ok,
        transcript::Outcome::TooLong => Heard::TooLong,
        transcript::Outcome::Budget => Heard::Budget,
        _ => {
            tracing::info!(error = %t.error, "voice note not transcribed");
            Heard::Failed
        }
    }
}

/// Counts what handling a message decided.
fn count(kind: &'static str, d: &Decision) {
    metrics::counter!(m::MESSAGES, "kind" => kind, "outcome" => d.outcome.as_str()).increment(1);
    match d.outcome {
        Outcome::Refused | Outcome::RefusedSilently => metrics::counter!(m::REFUSALS).increment(1),
        Outcome::OwnerAnswered => metrics::counter!(m::OWNER_PAUSES).increment(1),
        Outcome::Knowledge => metrics::counter!(m::CALLS_SAVED).increment(1),
        _ => {}
    }
    for e in &d.effects {
        match e {
            Effect::OptOut(true) => metrics::counter!(m::OPT_OUTS).increment(1),
            Effect::HandOff(h) => {
                metrics::counter!(m::HANDOFFS, "reason" => h.reason.as_str()).increment(1)
            }
            _ => {}
        }
    }
}

/// How a decision counts toward the customer's conversation ([`Outcome::counts`]).
fn conversation_mark(cfg: &Config, d: &Decision) -> Option<Mark> {
    let (answered_by, unanswered) = match d.outcome.counts() {
        Counts::Not => return None,
        Counts::Answered(by) => (Some(by), false),
        Counts::Person => (None, false),
        Counts::Unanswered => (None, true),
    };
    let handoff = match d.outcome {
        Outcome::OwnerAnswered => Some(Reason::Owner),
        _ => d.handoff().map(|h| h.reason),
    };
    Some(Mark {
        answered_by,
        handoff,
        unanswered,
        idle_ms: cfg.conversation_idle.as_millis() as i64,
    })
}

/// What the conversation log keeps of handling `ib`: the customer's message (or the owner's,
/// written from the business's phone) and every reply to its chat, with who wrote it (not the
/// admins' alerts the decision also sends). A voice note is logged when it arrives and its
/// transcript filled in when it comes back (`transcript`: this commit answers the transcript,
/// whose message is logged already). Admin commands are not logged (a `!console` answer
/// carries a sign-in link).
fn log_entries(
    ib: &Inbound,
    d: &Decision,
    events: &[Publish],
    transcript: Option<&str>,
) -> Vec<LogEntry> {
    if d.outcome == Outcome::Command {
        return Vec::new();
    }
    let mut log = Vec::new();
    if transcript.is_none() {
        let kind = match ib.kind() {
            inbound::Kind::Text => LogKind::Text,
            inbound::Kind::Voice => LogKind::Voice,
            inbound::Kind::Image => LogKind::Image,
            _ => LogKind::Other,
        };
        log.push(LogEntry {
            direction: if ib.from_business {
                Direction::Out
            } else {
                Direction::In
            },
            kind,
            content: ib.text.clone(),
            author: if ib.from_business {
                Author::Person
            } else {
                Author::Customer
            },
            media: ib
                .media
                .as_ref()
                .filter(|_| kind == LogKind::Image)
                .map(prost::Message::encode_to_vec),
            message_id: ib.message_id.clone(),
            chat: (!ib.from_business).then(|| (ib.transport, ib.chat_id.clone())),
        });
    }
    let author = d.outcome.author();
    for p in events {
        // What went to this chat: the admins' alerts travel with the decision but are theirs.
        if let Some(o) = crate::tell::to_customer(ib, p) {
            log.push(LogEntry {
                direction: Direction::Out,
                kind: LogKind::Text,
                content: o.text.clone(),
                author,
                media: None,
                message_id: o.message_id.clone(),
                chat: None,
            });
        }
    }
    log
}

/// The sender's identities of a well-formed inbound message (an id, a sender): anything else
/// can never be answered and is dead-lettered.
fn checked_sender(ib: &Inbound) -> Result<Vec<(String, String)>, HandleError> {
    if ib.message_id.is_empty() {
        return Err(HandleError::Permanent(
            "inbound message without an id".into(),
        ));
    }
    let identities = sender_identities(ib);
    if identities.is_empty() {
        return Err(HandleError::Permanent(
            "inbound message without a sender identity".into(),
        ));
    }
    Ok(identities)
}
