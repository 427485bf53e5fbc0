//! Deciding what a message gets: opt-out, access, commands, the kind of message, and the
//! guards before a paid call (budget, the web chat visitors' shared allowance, the contact's
//! tokens).

use super::*;

impl Brain {
    pub(super) async fn decide(
        &self,
        ib: &Inbound,
        contact: &Contact,
        known: Known,
        absorbed: bool,
    ) -> Result<Decision, HandleError> {
        let now = shared::ids::now_ms();
        let text = ib.text.trim();
        let msgs = &self.cfg.messages;
        // The owner wrote to this customer from the business's phone: their turn, and quiet.
        if ib.from_business {
            return Ok(handoff::owner_said(
                text,
                now + self.cfg.owner_pause.as_millis() as i64,
            ));
        }
        // Opt-out first: an opted-out contact hears nothing but the START confirmation.
        if contact.opted_out {
            if text.eq_ignore_ascii_case("start") {
                store::set_opted_out(&self.db, &contact.id, false, now)
                    .await
                    .or_retry()?;
                return Ok(Decision::notice(&msgs.opted_in, Outcome::OptedIn));
            }
            return Ok(Decision::silent(Outcome::OptedOut));
        }
        if text.eq_ignore_ascii_case("stop") {
            store::set_opted_out(&self.db, &contact.id, true, now)
                .await
                .or_retry()?;
            metrics::counter!(m::OPT_OUTS).increment(1);
            return Ok(Decision::notice(&msgs.opted_out, Outcome::OptedOut));
        }
        if !self.allowed(ib, contact) {
            return self.refuse(contact, now).await;
        }
        if ib.kind() == inbound::Kind::Text && text.starts_with('!') {
            return Command::parse(text).run(self, contact).await;
        }
        // Handed to a person: the bot keeps quiet, and remembers what was said.
        // Outside business hours the bot keeps helping while the customer waits for a person;
        // while the owner is answering, it keeps quiet.
        let paused = contact.paused_until_ms.is_some_and(|until| until > now);
        if paused || (contact.handoff.is_some() && self.cfg.hours.is_open(now)) {
            return Ok(handoff::while_handed_off(ib, text));
        }
        // More follows within the burst window: the last message answers them all.
        if absorbed {
            return Ok(handoff::in_burst(ib));
        }
        if ib.kind() == inbound::Kind::Text && self.asks_for_person(text) {
            return Ok(self.hand_off(ib, contact, Reason::Asked, text, &known.memory));
        }
        match ib.kind() {
            inbound::Kind::Text => {}
            inbound::Kind::Image => {}
            inbound::Kind::Voice => return self.transcribe(ib, contact, &known).await,
            inbound::Kind::Other | inbound::Kind::Unspecified => {
                return Ok(Decision::notice(&msgs.unsupported, Outcome::Unsupported));
            }
        }
        // Cut to MAX_INPUT_CHARS on the way in (`Brain::handle`, the gateway).
        if ib.text_cut {
            return Ok(Decision::notice(&msgs.too_long, Outcome::TooLong));
        }
        let budget = match ib.kind() {
            inbound::Kind::Image => self.cfg.image_deadline,
            _ => self.cfg.text_deadline,
        };
        self.answer(ib, contact, text, Instant::now() + budget, known)
            .await
    }

    /// `ACCESS_MODE` governs phone identities; web chat visitors are served unless
    /// `WEBCHAT_VISITORS=off` (within their rate limit at the gateway, and the allowance all
    /// visitors share, [`Brain::guards`]).
    fn allowed(&self, ib: &Inbound, contact: &Contact) -> bool {
        if shared::proto::is_visitor(&ib.identities) {
            self.cfg.visitors_open
        } else {
            contact.role == Role::Admin || contact.allowed || self.cfg.access == AccessMode::Open
        }
    }

    /// Not on the whitelist: told once a day, silent otherwise.
    async fn refuse(&self, contact: &Contact, now: i64) -> Result<Decision, HandleError> {
        let today = self.today();
        metrics::counter!(m::REFUSALS).increment(1);
        if contact.last_refusal_day.as_deref() == Some(today.as_str()) {
            return Ok(Decision::silent(Outcome::RefusedSilently));
        }
        store::set_refusal_day(&self.db, &contact.id, &today, now)
            .await
            .or_retry()?;
        Ok(Decision::notice(
            &self.cfg.messages.not_allowed,
            Outcome::Refused,
        ))
    }

    /// What stops a paid call: no LLM, the daily budget, the visitors' shared allowance (for a
    /// visitor), the contact's daily tokens.
    pub(super) async fn guards(
        &self,
        ib: &Inbound,
        known: &Known,
    ) -> Result<Option<Decision>, HandleError> {
        let msgs = &self.cfg.messages;
        if !self.cfg.endpoint.configured {
            return Ok(Some(Decision::notice(
                &msgs.not_configured,
                Outcome::NotConfigured,
            )));
        }
        let today = self.today();
        if shared::usage::is_over_budget(&self.bus, &today)
            .await
            .map_err(|e| HandleError::retry("budget mark", e))?
        {
            return Ok(Some(Decision::notice(&msgs.budget, Outcome::Budget)));
        }
        if shared::proto::is_visitor(&ib.identities) {
            use shared::usage::VisitorUse;
            let mut uses = vec![VisitorUse::Tokens];
            if ib.kind() == inbound::Kind::Voice {
                uses.push(VisitorUse::Audio);
            }
            let mut spent = false;
            for what in uses {
                spent |= shared::usage::visitor_spent(
                    &self.bus,
                    &self.cfg.days,
                    self.cfg.visitors,
                    what,
                    shared::ids::now_ms(),
                )
                .await
                .map_err(|e| HandleError::retry("visitor allowance", e))?;
            }
            if spent {
                return Ok(Some(Decision::notice(
                    &msgs.visitor_budget,
                    Outcome::VisitorBudget,
                )));
            }
        }
        if self.cfg.contact_daily_tokens > 0
            && known.tokens_today.max(0) as u64 >= self.cfg.contact_daily_tokens
        {
            return Ok(Some(Decision::notice(
                &msgs.token_budget,
                Outcome::TokenBudget,
            )));
        }
        Ok(None)
    }

    /// A voice note: a transcription job and a progress notice; the answer comes with the
    /// transcript.
    pub(super) async fn transcribe(
        &self,
        ib: &Inbound,
        contact: &Contact,
        known: &Known,
    ) -> Result<Decision, HandleError> {
        if let Some(stop) = self.guards(ib, known).await? {
            return Ok(stop);
        }
        let Some(media) = ib.media.clone() else {
            return Ok(Decision::notice(
                &self.cfg.messages.transcription_failed,
                Outcome::VoiceMissing,
            ));
        };
        let deadline_ms = shared::ids::now_ms() + self.cfg.voice_deadline.as_millis() as i64;
        let job = shared::proto::TranscriptionJob {
            message_id: ib.message_id.clone(),
            media: Some(media),
            contact_id: contact.id.clone(),
            deadline_at_ms: deadline_ms,
            language: String::new(),
            visitor: shared::proto::is_visitor(&ib.identities),
        };
        let mut d = Decision::notice(&self.cfg.messages.listening, Outcome::Transcribing);
        d.extra.push(Publish::new(
            Stream::Transcribe,
            Envelope::new("brain", Payload::TranscriptionJob(job)),
        ));
        d.voice_deadline_ms = Some(deadline_ms);
        Ok(d)
    }
}
