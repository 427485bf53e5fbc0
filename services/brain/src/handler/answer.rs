//! What the rules leave to answering: a voice note sent to the transcriber, and a question
//! answered — the knowledge base, the guards that protect the owner's money, the model (with
//! memory and a photo) — with its events and usage record.

use shared::lang::Lang;
use std::time::Duration;

use shared::bus::{HandleError, Publish, Stream};
use shared::llm::CallError;
use shared::proto::{
    Envelope, Inbound, Outbound, Payload, UsageRecord, chat_order_key, inbound, usage_record,
};
use tokio::time::Instant;

use super::Brain;
use crate::chat::{Answer, Image};
use crate::config::Config;
use crate::domain::{AnsweredBy, Decision, Effect, Outcome, Turn};
use crate::metrics as m;
use crate::rules::{self, MARK_RULES, Message};
use crate::store::{Contact, Known};

impl Brain {
    /// The outbound events (and extras) of a decision.
    pub(super) fn events(&self, ib: &Inbound, d: &Decision, salt: &str) -> Vec<Publish> {
        let order = chat_order_key(ib.transport(), &ib.chat_id);
        let mut out: Vec<Publish> = d
            .replies
            .iter()
            .enumerate()
            .map(|(i, (kind, text))| {
                let id = blake3::hash(format!("reply{salt}|{}|{i}", ib.message_id).as_bytes())
                    .to_hex()[..26]
                    .to_owned();
                Publish::ordered(
                    Stream::Outbound,
                    Envelope::new(
                        "brain",
                        Payload::Outbound(Outbound {
                            message_id: id,
                            transport: ib.transport,
                            chat_id: ib.chat_id.clone(),
                            kind: *kind as i32,
                            text: text.clone(),
                            in_reply_to: ib.message_id.clone(),
                            identities: ib.identities.clone(),
                            also_answers: d.also_answers().to_vec(),
                        }),
                    ),
                    order.clone(),
                )
            })
            .collect();
        out.extend(d.publishes().cloned());
        out
    }

    /// The usage record of a paid call (a visitor's tokens were reserved before it,
    /// [`Brain::reserve_for_visitor`]).
    pub(super) fn usage(
        &self,
        contact: &Contact,
        ib: &Inbound,
        a: &Answer,
        op: usage_record::Operation,
    ) -> Publish {
        metrics::counter!(m::TOKENS, "model" => a.response_model.clone(), "direction" => "prompt")
            .increment(a.prompt_tokens);
        metrics::counter!(m::TOKENS, "model" => a.response_model.clone(), "direction" => "completion")
            .increment(a.completion_tokens);
        let u = UsageRecord {
            usage_id: blake3::hash(format!("chat|{}", ib.message_id).as_bytes()).to_hex()[..26]
                .to_owned(),
            contact_id: contact.id.clone(),
            requested_model: a.requested_model.clone(),
            response_model: a.response_model.clone(),
            operation: op as i32,
            prompt_tokens: a.prompt_tokens,
            completion_tokens: a.completion_tokens,
            audio_seconds: 0.0,
            latency_ms: a.latency_ms,
            message_id: ib.message_id.clone(),
            at_ms: self.clock.now_ms(),
        };
        Publish::new(Stream::Usage, Envelope::new("brain", Payload::Usage(u)))
    }

    /// Answers the message's text by `deadline_ms`. With `BURST_WINDOW_MS`, the customer's
    /// unanswered messages just before it (the burst, remembered as they came) join it as one
    /// question; only the message's own text is remembered again.
    pub(super) async fn answer(
        &self,
        msg: &Message<'_>,
        contact: &Contact,
        mut known: Known,
        eff: &Config,
        now: i64,
        deadline_ms: i64,
    ) -> Result<Decision, HandleError> {
        let deadline = Instant::now() + Duration::from_millis((deadline_ms - now).max(0) as u64);
        let (ib, text) = (msg.ib, msg.text);
        let asking = Asking {
            contact,
            eff,
            now,
            deadline,
            lang: msg.lang,
            vector: None,
        };
        let gathered =
            crate::burst::gather(&self.db, eff, ib, &contact.id, &mut known.memory, text).await?;
        let Some(burst) = gathered else {
            return self.answer_question(&asking, ib, text, known).await;
        };
        let with_photo = burst.with_photo(ib);
        let d = self
            .answer_question(
                &asking,
                with_photo.as_ref().unwrap_or(ib),
                &burst.question,
                known,
            )
            .await?;
        Ok(burst.settle(d, text))
    }

    /// Asks the model (the guards that protect the owner's money first).
    async fn answer_question(
        &self,
        asking: &Asking<'_>,
        ib: &Inbound,
        text: &str,
        known: Known,
    ) -> Result<Decision, HandleError> {
        let Asking {
            contact,
            eff,
            now,
            lang,
            ..
        } = *asking;
        // The question's vector (when the knowledge base has vectors), for the FAQ and the
        // model's context alike.
        let vector = if ib.kind() == inbound::Kind::Image {
            None
        } else {
            self.knowledge.question_vector(text).await
        };
        let asking = &Asking {
            vector: vector.as_deref(),
            ..*asking
        };
        if ib.kind() != inbound::Kind::Image
            && let Some(d) = self.knowledge_answer(ib, contact, eff, text, asking)
        {
            return Ok(d);
        }
        // Without a model, a greeting, thanks or goodbye still gets a kind answer (the owner's
        // FAQ entry, when one matched, came first).
        if !eff.endpoint.configured
            && let Some(talk) = rules::small_talk(text)
        {
            return Ok(rules::small_talk_reply(contact, talk, eff, lang));
        }
        if let Some(stop) = self.guards(ib, &known, eff, lang).await? {
            let memory = &known.memory;
            return Ok(rules::stopped(ib, contact, text, memory, stop, eff, now));
        }
        let image_bytes = match self.photo(ib, lang).await? {
            Ok(bytes) => bytes,
            Err(refused) => return Ok(refused),
        };
        let memory = known.memory;
        let question = if text.is_empty() && image_bytes.is_some() {
            "What can you tell me about this photo?".to_owned()
        } else {
            text.to_owned()
        };
        let image = image_bytes.as_deref().map(|bytes| Image {
            bytes,
            mime: ib
                .media
                .as_ref()
                .map_or("image/jpeg", |m| m.mime_type.as_str()),
        });
        let op = if image.is_some() {
            usage_record::Operation::Vision
        } else {
            usage_record::Operation::Chat
        };
        let started = std::time::Instant::now();
        let Some(asked) = self
            .ask_model(ib, eff, &question, &memory, image, asking)
            .await?
        else {
            return Ok(Decision::notice(
                &eff.messages.get(lang).visitor_budget,
                Outcome::VisitorBudget,
            ));
        };
        if asked.as_ref().is_ok_and(|a| !a.text.is_empty()) {
            metrics::histogram!(m::LLM_SECONDS).record(started.elapsed().as_secs_f64());
        }
        Ok(self.model_decided(asking, ib, question, &memory, asked, op))
    }

    /// What the model's answer (or its failure) decides.
    fn model_decided(
        &self,
        asking: &Asking<'_>,
        ib: &Inbound,
        question: String,
        memory: &[Turn],
        asked: Result<Answer, CallError>,
        op: usage_record::Operation,
    ) -> Decision {
        let Asking {
            contact,
            eff,
            now,
            lang,
            ..
        } = *asking;
        let msgs = eff.messages.get(lang);
        match asked {
            Ok(a) if !a.text.is_empty() => {
                let usage = self.usage(contact, ib, &a, op);
                rules::marked(ib, contact, question, &a.text, memory, eff, now)
                    .with(Effect::publish(usage))
            }
            Ok(a) => {
                tracing::warn!("the model returned an empty answer");
                let usage = self.usage(contact, ib, &a, op);
                Decision::notice(&msgs.llm_down, Outcome::EmptyAnswer).with(Effect::publish(usage))
            }
            Err(e) => {
                let outcome = match &e {
                    CallError::CircuitOpen => Outcome::CircuitOpen,
                    CallError::Deadline(_) => Outcome::Deadline,
                    CallError::Failed(_) => Outcome::LlmFailed,
                };
                tracing::warn!(error = %e, "no answer from the model; sending the fallback");
                Decision::notice(&msgs.llm_down, outcome)
            }
        }
    }

    /// Asks the model `question` (after `memory`, with `image`); a visitor's call holds the
    /// most it could use of the visitors' allowance while it runs and is settled to what it
    /// used. `None`: that much is not left today, and no call is made.
    async fn ask_model(
        &self,
        ib: &Inbound,
        eff: &Config,
        question: &str,
        memory: &[Turn],
        image: Option<Image<'_>>,
        asking: &Asking<'_>,
    ) -> Result<Option<Result<Answer, CallError>>, HandleError> {
        let system = format!(
            "{}\n\n{MARK_RULES}\n\n{}",
            self.knowledge.prompt_with(
                &eff.pre_prompt,
                question,
                asking.vector,
                eff.knowledge_context_tokens
            ),
            language_rule(asking.lang)
        );
        let deadline = asking.deadline;
        let reservation = if shared::proto::is_visitor(&ib.identities) {
            let most = most_tokens(eff, &system, memory, question, image.is_some());
            match self.reserve_for_visitor(most).await? {
                Some(r) => Some(r),
                None => return Ok(None),
            }
        } else {
            None
        };
        let asked = self
            .chat
            .ask(eff, &system, memory, question, image, deadline)
            .await;
        if let Some(r) = reservation {
            let used = asked
                .as_ref()
                .map_or(0, |a| a.prompt_tokens + a.completion_tokens);
            self.settle_for_visitor(r, used).await;
        }
        Ok(Some(asked))
    }

    /// Reserves `most` tokens of the visitors' shared allowance for a call: `None` when they
    /// are not left today.
    async fn reserve_for_visitor(
        &self,
        most: u64,
    ) -> Result<Option<shared::usage::VisitorReservation>, HandleError> {
        shared::usage::reserve_visitor(
            &self.bus,
            &self.cfg.days,
            self.cfg.visitors,
            shared::usage::VisitorUse::Tokens,
            most,
            self.clock.now_ms(),
        )
        .await
        .map_err(|e| HandleError::retry("visitor allowance", e))
    }

    /// Settles a visitor's reservation to the tokens the call `used` (0 when it failed). A
    /// Redis failure here is logged: the call is made, and the reservation (never less than
    /// the call could use) stays counted.
    async fn settle_for_visitor(&self, r: shared::usage::VisitorReservation, used: u64) {
        if let Err(e) = shared::usage::settle_visitor(&self.bus, r, used).await {
            tracing::warn!(error = %e, "cannot settle a visitor's tokens");
        }
    }

    /// A photo's bytes (`Ok(None)` for other messages), or the notice that refuses it.
    async fn photo(
        &self,
        ib: &Inbound,
        lang: Lang,
    ) -> Result<Result<Option<Vec<u8>>, Decision>, HandleError> {
        if ib.kind() != inbound::Kind::Image {
            return Ok(Ok(None));
        }
        let msgs = self.cfg.messages.get(lang);
        let media = ib.media.as_ref();
        if media.is_some_and(|m| m.size_bytes > self.cfg.max_image_bytes) {
            return Ok(Err(Decision::notice(
                &msgs.image_too_large,
                Outcome::ImageTooLarge,
            )));
        }
        let bytes = match media {
            Some(m) => self
                .bus
                .read_media(m)
                .await
                .map_err(|e| HandleError::retry("media store", e))?,
            None => None,
        };
        Ok(bytes
            .map(Some)
            .ok_or_else(|| Decision::notice(&msgs.llm_down, Outcome::ImageMissing)))
    }

    /// The knowledge base's answer to `question`, when one of its FAQ entries matches it
    /// confidently: no model call.
    fn knowledge_answer(
        &self,
        ib: &Inbound,
        contact: &Contact,
        eff: &Config,
        question: &str,
        asking: &Asking<'_>,
    ) -> Option<Decision> {
        let lang = asking.lang;
        let index = self.knowledge.current();
        let hit = index
            .faq_with(question, asking.vector)
            .filter(crate::knowledge::Hit::is_direct)?;
        // An answer written in another language than the customer's: the model translates it
        // (the knowledge is in its context); without one, it is sent saying so.
        let asked_in = Lang::detect_remembered(question);
        let written_in = Lang::detect_remembered(&hit.entry.answer)
            .filter(|a| asked_in.is_some_and(|q| q == lang && q != *a));
        if written_in.is_some() && eff.endpoint.configured {
            return None;
        }
        tracing::info!(
            confidence = hit.confidence,
            "answered from the knowledge base"
        );
        let mut d = rules::answered(
            ib,
            contact,
            question.to_owned(),
            match written_in {
                Some(other) => format!(
                    "{}\n\n{}",
                    crate::messages::written_in(lang, other),
                    hit.entry.answer
                ),
                None => hit.entry.answer.clone(),
            },
            AnsweredBy::Knowledge,
            eff,
        );
        d.outcome = Outcome::Knowledge;
        Some(d)
    }
}

/// What the model is told of the customer's language: to answer in it.
fn language_rule(lang: Lang) -> String {
    format!(
        "Answer in the language the customer writes in (this customer writes in {}), \
         whatever the language of the knowledge above.",
        lang.name()
    )
}

/// What answering one question works with: whose it is, the configuration in effect, the time
/// it was taken and when its answer is due.
#[derive(Clone, Copy)]
struct Asking<'a> {
    contact: &'a Contact,
    eff: &'a Config,
    now: i64,
    deadline: Instant,
    /// The customer's language (the bot's own messages are in it).
    lang: Lang,
    /// The question's vector, when the knowledge base matches by meaning.
    vector: Option<&'a [f32]>,
}

/// Tokens a photo may take at most: gpt-4o bills one at up to 1,445 (high detail, 8 tiles);
/// models that bill images as more tokens (gpt-4o-mini, up to some 48,000) fit too.
const PHOTO_MOST_TOKENS: u64 = 50_000;

/// The most tokens a call can use, reserved from the visitors' allowance before it: the
/// prompt's bytes (a byte-level tokenizer never makes more tokens than bytes), a few per
/// message for the chat format, a photo's most, and `MAX_TOKENS` for the answer.
fn most_tokens(eff: &Config, system: &str, memory: &[Turn], question: &str, photo: bool) -> u64 {
    const PER_MESSAGE: u64 = 8;
    let texts =
        system.len() + question.len() + memory.iter().map(|t| t.content.len()).sum::<usize>();
    let messages = memory.len() as u64 + 2;
    texts as u64
        + messages * PER_MESSAGE
        + if photo { PHOTO_MOST_TOKENS } else { 0 }
        + u64::from(eff.max_tokens)
}
