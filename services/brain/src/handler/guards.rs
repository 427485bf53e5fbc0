//! What a paid call depends on (the daily budget, the web chat visitors' shared allowance, the
//! contact's daily tokens), read for the rules' guard ([`rules::guard`]), and a voice note sent
//! to the transcriber behind the same guard.

use shared::bus::{HandleError, Publish, Stream};
use shared::lang::Lang;
use shared::proto::{Envelope, Inbound, Payload, inbound};

use super::Brain;
use crate::config::Config;
use crate::domain::{Decision, Effect, Outcome};
use crate::rules::{self, Spend};
use crate::store::{Contact, Known};

impl Brain {
    /// What stops a paid call ([`rules::guard`]), with what it depends on read first: the
    /// day's budget mark, the visitors' shared allowance (for a visitor), the contact's tokens.
    pub(super) async fn guards(
        &self,
        ib: &Inbound,
        known: &Known,
        eff: &Config,
        lang: Lang,
    ) -> Result<Option<Decision>, HandleError> {
        if !eff.endpoint.configured {
            return Ok(rules::guard(&Spend::default(), eff, lang));
        }
        let now = self.clock.now_ms();
        let over_budget = shared::usage::is_over_budget(&self.bus, &eff.days.day_of(now))
            .await
            .map_err(|e| HandleError::retry("budget mark", e))?;
        let mut visitors_spent = false;
        if shared::proto::is_visitor(&ib.identities) {
            use shared::usage::VisitorUse;
            let mut uses = vec![VisitorUse::Tokens];
            if ib.kind() == inbound::Kind::Voice {
                uses.push(VisitorUse::Audio);
            }
            for what in uses {
                visitors_spent |=
                    shared::usage::visitor_spent(&self.bus, &eff.days, eff.visitors, what, now)
                        .await
                        .map_err(|e| HandleError::retry("visitor allowance", e))?;
            }
        }
        let spend = Spend {
            over_budget,
            visitors_spent,
            tokens_today: known.tokens_today,
        };
        Ok(rules::guard(&spend, eff, lang))
    }

    /// A voice note: a transcription job and a progress notice; the answer comes with the
    /// transcript.
    pub(super) async fn transcribe(
        &self,
        ib: &Inbound,
        contact: &Contact,
        known: &Known,
        eff: &Config,
        now: i64,
        lang: Lang,
    ) -> Result<Decision, HandleError> {
        if let Some(stop) = self.guards(ib, known, eff, lang).await? {
            // Without a model (or budget) the voice note goes to a person like a question
            // would — alerted, or quietly remembered when a person has it already.
            let memory = &known.memory;
            return Ok(rules::stopped(
                ib,
                contact,
                "[voice note]",
                memory,
                stop,
                eff,
                now,
            ));
        }
        let Some(media) = ib.media.clone() else {
            return Ok(Decision::notice(
                &eff.messages.get(lang).transcription_failed,
                Outcome::VoiceMissing,
            ));
        };
        let deadline_ms = now + eff.voice_deadline.as_millis() as i64;
        let job = shared::proto::TranscriptionJob {
            message_id: ib.message_id.clone(),
            media: Some(media),
            contact_id: contact.id.clone(),
            deadline_at_ms: deadline_ms,
            language: String::new(),
            visitor: shared::proto::is_visitor(&ib.identities),
        };
        Ok(
            Decision::notice(&eff.messages.get(lang).listening, Outcome::Transcribing)
                .with(Effect::publish(Publish::new(
                    Stream::Transcribe,
                    Envelope::new("brain", Payload::TranscriptionJob(job)),
                )))
                .with(Effect::AwaitTranscript {
                    inbound: prost::Message::encode_to_vec(ib),
                    deadline_ms,
                }),
        )
    }
}
