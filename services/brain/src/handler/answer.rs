//! Asking the model: the answer (with memory and an image), its events and its usage record.

use super::*;

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
                            also_answers: d.also_answers.clone(),
                        }),
                    ),
                    order.clone(),
                )
            })
            .collect();
        out.extend(d.extra.iter().cloned());
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
            at_ms: shared::ids::now_ms(),
        };
        Publish::new(Stream::Usage, Envelope::new("brain", Payload::Usage(u)))
    }

    /// Answers `text`. With `BURST_WINDOW_MS`, the customer's unanswered messages just before
    /// it (the burst, remembered as they came) join it as one question; only `text` is
    /// remembered again.
    pub(super) async fn answer(
        &self,
        ib: &Inbound,
        contact: &Contact,
        text: &str,
        deadline: Instant,
        mut known: Known,
    ) -> Result<Decision, HandleError> {
        let burst_from = if self.cfg.burst_window.is_zero() {
            known.memory.len()
        } else {
            known
                .memory
                .iter()
                .rposition(|t| t.role != "user")
                .map_or(0, |i| i + 1)
        };
        if burst_from == known.memory.len() {
            return self
                .answer_question(ib, contact, text, deadline, known)
                .await;
        }
        let mut lines: Vec<String> = known
            .memory
            .drain(burst_from..)
            .map(|t| t.content)
            .collect();
        let earlier = store::last_turn_ids(&self.db, &contact.id, lines.len())
            .await
            .or_retry()?;
        lines.push(text.to_owned());
        // A photo of the burst goes with its answer (the last message's own photo wins).
        let kept = store::take_burst_media(&self.db, &contact.id)
            .await
            .or_retry()?
            .and_then(|b| <shared::proto::MediaRef as prost::Message>::decode(b.as_slice()).ok());
        let with_photo = match kept {
            Some(media) if ib.kind() != inbound::Kind::Image => Some(Inbound {
                kind: inbound::Kind::Image as i32,
                media: Some(media),
                ..ib.clone()
            }),
            _ => None,
        };
        let mut d = self
            .answer_question(
                with_photo.as_ref().unwrap_or(ib),
                contact,
                &lines.join("\n"),
                deadline,
                known,
            )
            .await?;
        if let Some(turn) = d.turns.iter_mut().find(|t| t.role == "user") {
            turn.content = text.to_owned();
        }
        d.also_answers = earlier;
        Ok(d)
    }

    /// Asks the model (the guards that protect the owner's money first).
    async fn answer_question(
        &self,
        ib: &Inbound,
        contact: &Contact,
        text: &str,
        deadline: Instant,
        known: Known,
    ) -> Result<Decision, HandleError> {
        let msgs = &self.cfg.messages;
        let eff = self.effective_for_answers().await?;
        if ib.kind() != inbound::Kind::Image
            && let Some(d) = self.knowledge_answer(ib, contact, &eff, text)
        {
            return Ok(d);
        }
        if let Some(stop) = self.guards(ib, &known).await? {
            return Ok(self.stopped(ib, contact, text, &known.memory, stop));
        }
        let image_bytes = match self.photo(ib).await? {
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
            .ask_model(ib, &eff, &question, &memory, image, deadline)
            .await?
        else {
            return Ok(Decision::notice(
                &msgs.visitor_budget,
                Outcome::VisitorBudget,
            ));
        };
        match asked {
            Ok(a) if !a.text.is_empty() => {
                metrics::histogram!(m::LLM_SECONDS).record(started.elapsed().as_secs_f64());
                let usage = self.usage(contact, ib, &a, op);
                let mut d = self.marked(ib, contact, &eff, question, &a.text, &memory);
                d.extra.push(usage);
                Ok(d)
            }
            Ok(a) => {
                tracing::warn!("the model returned an empty answer");
                let mut d = Decision::notice(&msgs.llm_down, Outcome::EmptyAnswer);
                d.extra.push(self.usage(contact, ib, &a, op));
                Ok(d)
            }
            Err(e) => {
                let outcome = match &e {
                    CallError::CircuitOpen => Outcome::CircuitOpen,
                    CallError::Deadline(_) => Outcome::Deadline,
                    CallError::Failed(_) => Outcome::LlmFailed,
                };
                tracing::warn!(error = %e, "no answer from the model; sending the fallback");
                Ok(Decision::notice(&msgs.llm_down, outcome))
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
        deadline: Instant,
    ) -> Result<Option<Result<Answer, CallError>>, HandleError> {
        let system = format!(
            "{}\n\n{MARK_RULES}",
            self.knowledge.prompt(&eff.pre_prompt, question)
        );
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
            shared::ids::now_ms(),
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
    async fn photo(&self, ib: &Inbound) -> Result<Result<Option<Vec<u8>>, Decision>, HandleError> {
        if ib.kind() != inbound::Kind::Image {
            return Ok(Ok(None));
        }
        let msgs = &self.cfg.messages;
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

    /// A guard stopped the paid call: with no model, or none left today, a person takes over.
    fn stopped(
        &self,
        ib: &Inbound,
        contact: &Contact,
        text: &str,
        memory: &[Turn],
        stop: Decision,
    ) -> Decision {
        let asked = if text.is_empty() { "[photo]" } else { text };
        match stop.outcome {
            Outcome::NotConfigured => self.hand_off(ib, contact, Reason::NoLlm, asked, memory),
            Outcome::Budget => self.hand_off(ib, contact, Reason::Budget, asked, memory),
            _ => stop,
        }
    }

    /// The model's answer, its marks read and stripped: `[[HANDOFF]]` hands the conversation
    /// to a person; `[[UNSURE]]` is answered, and a second one in a row hands it off.
    fn marked(
        &self,
        ib: &Inbound,
        contact: &Contact,
        eff: &Config,
        question: String,
        answer: &str,
        memory: &[Turn],
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
            return self.hand_off(ib, contact, Reason::CannotAnswer, &question, memory);
        }
        if unsure {
            let streak = contact.unanswered_streak + 1;
            if streak >= 2 {
                return self.hand_off(ib, contact, Reason::RepeatedFailure, &question, memory);
            }
            let mut d = self.answered(ib, contact, eff, question, text);
            d.streak = Some(streak);
            return d;
        }
        self.answered(ib, contact, eff, question, text)
    }

    /// The knowledge base's answer to `question`, when one of its FAQ entries matches it
    /// confidently: no model call.
    fn knowledge_answer(
        &self,
        ib: &Inbound,
        contact: &Contact,
        eff: &Config,
        question: &str,
    ) -> Option<Decision> {
        let index = self.knowledge.current();
        let hit = index
            .faq(question)
            .filter(|h| h.confidence >= crate::knowledge::DIRECT)?;
        metrics::counter!(m::CALLS_SAVED).increment(1);
        tracing::info!(
            confidence = hit.confidence,
            "answered from the knowledge base"
        );
        let mut d = self.answered(
            ib,
            contact,
            eff,
            question.to_owned(),
            hit.entry.answer.clone(),
        );
        d.outcome = Outcome::Knowledge;
        Some(d)
    }

    /// `text` answers `question`: the reply (with the AI disclosure the first time, and what
    /// was understood of a voice note) and the memory turns.
    fn answered(
        &self,
        ib: &Inbound,
        contact: &Contact,
        eff: &Config,
        question: String,
        text: String,
    ) -> Decision {
        let mut reply = text.clone();
        let disclose = !contact.disclosed && !self.cfg.ai_disclosure.is_empty();
        if disclose {
            reply = format!("{}\n\n{reply}", self.cfg.ai_disclosure);
        }
        // A voice note's answer may start with what was understood.
        if ib.kind() == inbound::Kind::Voice && eff.echo_transcript {
            reply = format!("🎤 \"{question}\"\n\n{reply}");
        }
        let user_turn = if ib.kind() == inbound::Kind::Image {
            format!("[photo] {question}")
        } else {
            question
        };
        Decision {
            replies: vec![(outbound::Kind::Reply, reply)],
            turns: vec![
                Turn {
                    role: "user",
                    content: user_turn,
                },
                Turn {
                    role: "assistant",
                    content: text,
                },
            ],
            extra: Vec::new(),
            disclosed: disclose,
            outcome: Outcome::Answered,
            voice_deadline_ms: None,
            handoff: None,
            // An answer that knew ends a run of ones that did not.
            streak: (contact.unanswered_streak != 0).then_some(0),
            pause_until_ms: None,
            also_answers: Vec::new(),
            burst_media: None,
        }
    }
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
