//! One inbound message and one transcript, from the stored outbox to the commit.

use super::*;

impl Brain {
    /// With `BURST_WINDOW_MS`, a customer's text or photo waits the window; when they wrote
    /// again meanwhile it is part of a burst (`true`): remembered, and answered with the last.
    pub(super) async fn in_burst(&self, ib: &Inbound, d: &Delivery) -> Result<bool, HandleError> {
        let window = self.cfg.burst_window;
        if window.is_zero()
            || ib.from_business
            || !matches!(ib.kind(), inbound::Kind::Text | inbound::Kind::Image)
            || ib.text.trim_start().starts_with('!')
        {
            return Ok(false);
        }
        tokio::time::sleep(window).await;
        let later = self
            .bus
            .later_in_order(d.stream, d.order_token.as_deref())
            .await
            .map_err(|e| HandleError::retry("the contact's order", e))?;
        if !later {
            self.voice_of_burst(ib).await?;
        }
        Ok(later)
    }

    /// With bursts on, whether the voice note's sender has messages waiting to be answered
    /// (the voice note then joins their burst).
    async fn in_voice_burst(&self, ib: &Inbound) -> Result<bool, HandleError> {
        if self.cfg.burst_window.is_zero() {
            return Ok(false);
        }
        let key = shared::proto::sender_order_key(&ib.identities, &ib.chat_id);
        let waiting = self
            .bus
            .waiting_in_order(Stream::Inbound, &key)
            .await
            .map_err(|e| HandleError::retry("the contact's order", e))?;
        Ok(waiting > 0)
    }

    /// The burst's last message waits for the contact's voice notes still being transcribed:
    /// their transcripts join the burst (remembered, not answered on their own) first.
    async fn voice_of_burst(&self, ib: &Inbound) -> Result<(), HandleError> {
        let Some((kind, value)) = sender_identities(ib).into_iter().next() else {
            return Ok(());
        };
        let until = std::time::Instant::now() + self.cfg.voice_deadline;
        while std::time::Instant::now() < until
            && store::voice_waiting(&self.db, &kind, &value)
                .await
                .or_retry()?
                > 0
        {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(())
    }

    pub(super) async fn handle_inbound(
        &self,
        ib: &Inbound,
        absorbed: bool,
    ) -> Result<Vec<Publish>, HandleError> {
        let identities = checked_sender(ib)?;
        let today = self.today();
        let text = ib.text.trim();
        let may_answer = match ib.kind() {
            inbound::Kind::Text => !text.starts_with('!'),
            inbound::Kind::Image => true,
            _ => false,
        };
        let turns = if may_answer { self.cfg.memory_turns } else { 0 };
        let snap = store::snapshot(&self.db, &ib.message_id, &identities, &today, turns)
            .await
            .or_retry()?;
        if let Some(stored) = snap.answered {
            metrics::counter!(m::REPUBLISHED).increment(1);
            tracing::info!("already answered: republishing the stored reply");
            return stored_events(&stored);
        }
        let now = shared::ids::now_ms();
        let (contact, known) = match snap.contact {
            Some(c) => (c, snap.known),
            None => {
                // A new sender (or a new identity of one): linked in a write, then read.
                let c = store::resolve(&self.db, &identities, now)
                    .await
                    .or_retry()?;
                let known = store::known(&self.db, &c.id, &today, turns)
                    .await
                    .or_retry()?;
                (c, known)
            }
        };
        tracing::Span::current().record("contact", tracing::field::display(Redacted(&contact.id)));
        let mut decision = self.decide(ib, &contact, known, absorbed).await?;
        self.limit_alerts(ib, &ib.message_id, &mut decision).await?;
        metrics::counter!(m::MESSAGES, "kind" => ib.kind().label(), "outcome" => decision.outcome.as_str())
            .increment(1);
        let events = self.events(ib, &decision, "");
        let encoded = store::encode_events(&events);
        let conversation = self.conversation_mark(&decision);
        let log = log_entries(ib, &decision, &events, None);
        let stored = self
            .commit(store::Commit {
                log,
                log_transcript: None,
                contact_id: Some(contact.id.clone()),
                inbound_id: ib.message_id.clone(),
                turns: decision.turns,
                events: encoded,
                outcome: decision.outcome,
                disclosed: decision.disclosed,
                voice_pending: decision
                    .voice_deadline_ms
                    .map(|dl| (prost::Message::encode_to_vec(ib), dl)),
                voice_done: None,
                handoff: decision.handoff.clone(),
                streak: decision.streak,
                pause_until_ms: decision.pause_until_ms,
                conversation,
                burst_media: decision.burst_media.clone(),
                day: self.today(),
                now_ms: now,
            })
            .await?;
        if stored.is_none() {
            tracing::info!(
                outcome = decision.outcome.as_str(),
                replies = decision.replies.len(),
                "inbound message handled"
            );
        }
        published(stored, events)
    }

    /// A transcript came back: answer the voice note as a text turn (or say what went wrong).
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
        let identities = sender_identities(&ib);
        let now = shared::ids::now_ms();
        let contact = store::resolve(&self.db, &identities, now)
            .await
            .or_retry()?;
        let text = t.text.trim();
        let mut decision = match t.outcome() {
            // The contact wrote again meanwhile: the transcript joins their burst.
            transcript::Outcome::Ok if !text.is_empty() && self.in_voice_burst(&ib).await? => {
                handoff::voice_in_burst(text)
            }
            transcript::Outcome::Ok if !text.is_empty() => {
                let remaining = (deadline_ms - now).max(0) as u64;
                let deadline = Instant::now() + std::time::Duration::from_millis(remaining);
                let known =
                    store::known(&self.db, &contact.id, &self.today(), self.cfg.memory_turns)
                        .await
                        .or_retry()?;
                self.answer(&ib, &contact, text, deadline, known).await?
            }
            _ => self.not_transcribed(t),
        };
        if decision.outcome == Outcome::Answered {
            decision.outcome = Outcome::AnsweredVoice;
        }
        self.limit_alerts(&ib, &key, &mut decision).await?;
        metrics::counter!(m::MESSAGES, "kind" => "voice", "outcome" => decision.outcome.as_str())
            .increment(1);
        let events = self.events(&ib, &decision, ":voice");
        let encoded = store::encode_events(&events);
        let conversation = self.conversation_mark(&decision);
        let log = log_entries(&ib, &decision, &events, Some(text));
        let stored = self
            .commit(store::Commit {
                log,
                log_transcript: Some((ib.message_id.clone(), text.to_owned())),
                contact_id: Some(contact.id.clone()),
                inbound_id: key,
                turns: decision.turns,
                events: encoded,
                outcome: decision.outcome,
                disclosed: decision.disclosed,
                voice_pending: None,
                voice_done: Some(t.message_id.clone()),
                handoff: decision.handoff.clone(),
                streak: decision.streak,
                pause_until_ms: decision.pause_until_ms,
                conversation,
                burst_media: decision.burst_media.clone(),
                day: self.today(),
                now_ms: now,
            })
            .await?;
        published(stored, events)
    }
}

impl Brain {
    /// What the customer is told of a voice note that was not transcribed.
    fn not_transcribed(&self, t: &Transcript) -> Decision {
        let msgs = &self.cfg.messages;
        match t.outcome() {
            transcript::Outcome::TooLong => {
                Decision::notice(&msgs.voice_too_long, Outcome::VoiceTooLong)
            }
            transcript::Outcome::Budget => {
                Decision::notice(&msgs.visitor_budget, Outcome::VisitorBudget)
            }
            _ => {
                tracing::info!(error = %t.error, "voice note not transcribed");
                Decision::notice(&msgs.transcription_failed, Outcome::TranscriptionFailed)
            }
        }
    }

    /// How a decision counts toward the customer's conversation (commands, opt-outs, refusals
    /// and a voice note waiting for its transcript do not).
    fn conversation_mark(&self, d: &Decision) -> Option<(store::Mark, i64)> {
        let (answered_by, unanswered) = match d.outcome {
            Outcome::Answered | Outcome::AnsweredVoice => (Some("model"), false),
            Outcome::Knowledge => (Some("knowledge"), false),
            Outcome::HandedOff | Outcome::OwnerAnswered => (None, false),
            Outcome::Command
            | Outcome::OptedIn
            | Outcome::OptedOut
            | Outcome::Refused
            | Outcome::RefusedSilently
            | Outcome::Transcribing => return None,
            _ => (None, true),
        };
        let handoff = match d.outcome {
            Outcome::OwnerAnswered => Some("owner"),
            _ => d.handoff.as_ref().map(|h| h.reason),
        };
        Some((
            store::Mark {
                answered_by,
                handoff,
                unanswered,
            },
            self.cfg.conversation_idle.as_millis() as i64,
        ))
    }
}

/// What the conversation log keeps of handling `ib`: the customer's message (or the owner's,
/// written from the business's phone) and every reply, with who wrote it. A voice note is
/// logged when it arrives and its transcript filled in when it comes back (`transcript`: this
/// commit answers the transcript, whose message is logged already). Admin commands are not
/// logged (a `!console` answer carries a sign-in link).
fn log_entries(
    ib: &Inbound,
    d: &Decision,
    events: &[Publish],
    transcript: Option<&str>,
) -> Vec<store::LogEntry> {
    use store::{Author, LogEntry};
    if d.outcome == Outcome::Command {
        return Vec::new();
    }
    let mut log = Vec::new();
    if transcript.is_none() {
        let kind = match ib.kind() {
            inbound::Kind::Text => "text",
            inbound::Kind::Voice => "voice",
            inbound::Kind::Image => "image",
            _ => "other",
        };
        log.push(LogEntry {
            inbound: !ib.from_business,
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
                .filter(|_| kind == "image")
                .map(prost::Message::encode_to_vec),
            message_id: ib.message_id.clone(),
            chat: (!ib.from_business).then(|| (ib.transport, ib.chat_id.clone())),
        });
    }
    let author = match d.outcome {
        Outcome::Answered | Outcome::AnsweredVoice => Author::Model,
        Outcome::Knowledge => Author::Knowledge,
        _ => Author::Bot,
    };
    for p in events {
        if let Some(Payload::Outbound(o)) = &p.envelope.payload {
            log.push(LogEntry {
                inbound: false,
                kind: "text",
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
