//! Answering one inbound message. In order: a redelivered message republishes its stored
//! events; the contact is resolved from its identities; STOP/START; access control; commands;
//! guards (length, budget, the contact's daily tokens); then the model. Memory rows, the
//! disclosure mark and the outbox row are committed in one transaction keyed by the inbound
//! message id, and the events are published with the acknowledgement.

use std::sync::Arc;

use shared::bus::{Bus, Delivery, HandleError, Handler, Publish, Stream};
use shared::db::{Db, retry_busy};
use shared::llm::CallError;
use shared::proto::{
    Envelope, Inbound, Outbound, Payload, Transcript, UsageRecord, chat_order_key, identity,
    inbound, outbound, transcript, usage_record,
};
use shared::redact::Redacted;
use tokio::time::Instant;

use crate::chat::{Answer, Chat, Image};
use crate::commands::{self, Command};
use crate::config::{AccessMode, Config};
use crate::decision::{Decision, OrRetry};
use crate::metrics as m;
use crate::outcome::Outcome;
use crate::store::{self, Contact, Known, Role, Turn};

pub struct Brain {
    pub(crate) cfg: Config,
    pub(crate) db: Db,
    pub(crate) bus: Bus,
    pub(crate) chat: Chat,
    commits: store::Committer,
    settings_cache: std::sync::Mutex<Option<(std::time::Instant, Arc<Config>)>>,
}

/// How long answers reuse the admins' settings before reading them again.
const SETTINGS_TTL: std::time::Duration = std::time::Duration::from_secs(1);

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

/// What to publish after a commit: the events just written, or — when another delivery
/// committed first — the events it stored.
fn published(existing: Option<Vec<u8>>, events: Vec<Publish>) -> Result<Vec<Publish>, HandleError> {
    match existing {
        Some(bytes) => stored_events(&bytes),
        None => Ok(events),
    }
}

/// A web chat visitor: only web chat identities (no phone number behind it).
fn is_visitor(ib: &Inbound) -> bool {
    !ib.identities.is_empty()
        && ib
            .identities
            .iter()
            .all(|i| i.kind == identity::Kind::Webchat as i32)
}

impl commands::Context for Brain {
    fn db(&self) -> &Db {
        &self.db
    }

    fn bus(&self) -> &Bus {
        &self.bus
    }

    fn config(&self) -> &Config {
        &self.cfg
    }

    async fn effective(&self) -> Result<Config, HandleError> {
        Brain::effective(self).await
    }

    fn settings_changed(&self) {
        Brain::settings_changed(self);
    }
}

impl Brain {
    pub fn new(cfg: Config, db: Db, bus: Bus) -> Arc<Self> {
        let chat = Chat::new(&cfg);
        let commits = store::committer(db.clone());
        Arc::new(Self {
            cfg,
            db,
            bus,
            chat,
            commits,
            settings_cache: std::sync::Mutex::new(None),
        })
    }

    /// Commits an outcome with whatever else is being committed now. A busy database is
    /// waited out here: a redelivery would ask the model again.
    async fn commit(&self, outcome: store::Commit) -> Result<Option<Vec<u8>>, HandleError> {
        let outcome = Arc::new(outcome);
        retry_busy(|| {
            let o = outcome.clone();
            async move { self.commits.commit(o).await }
        })
        .await
        .or_retry()
    }

    fn today(&self) -> String {
        self.cfg.days.day_of(shared::ids::now_ms())
    }

    /// The outbound events (and extras) of a decision.
    fn events(&self, ib: &Inbound, d: &Decision, salt: &str) -> Vec<Publish> {
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
                        }),
                    ),
                    order.clone(),
                )
            })
            .collect();
        out.extend(d.extra.iter().cloned());
        out
    }

    fn usage(
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

    async fn decide(
        &self,
        ib: &Inbound,
        contact: &Contact,
        known: Known,
    ) -> Result<Decision, HandleError> {
        let now = shared::ids::now_ms();
        let text = ib.text.trim();
        let msgs = &self.cfg.messages;
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
        // ACCESS_MODE governs phone identities; web chat visitors are always served (within
        // their own budget, which the gateway enforces).
        let allowed = contact.role == Role::Admin
            || contact.allowed
            || self.cfg.access == AccessMode::Open
            || is_visitor(ib);
        if !allowed {
            let today = self.today();
            metrics::counter!(m::REFUSALS).increment(1);
            if contact.last_refusal_day.as_deref() == Some(today.as_str()) {
                return Ok(Decision::silent(Outcome::RefusedSilently));
            }
            store::set_refusal_day(&self.db, &contact.id, &today, now)
                .await
                .or_retry()?;
            return Ok(Decision::notice(&msgs.not_allowed, Outcome::Refused));
        }
        if ib.kind() == inbound::Kind::Text && text.starts_with('!') {
            return Command::parse(text).run(self, contact).await;
        }
        match ib.kind() {
            inbound::Kind::Text => {}
            inbound::Kind::Image => {}
            inbound::Kind::Voice => return self.transcribe(ib, contact, &known).await,
            inbound::Kind::Other | inbound::Kind::Unspecified => {
                return Ok(Decision::notice(&msgs.unsupported, Outcome::Unsupported));
            }
        }
        if text.chars().count() > self.cfg.max_input_chars {
            return Ok(Decision::notice(&msgs.too_long, Outcome::TooLong));
        }
        let budget = match ib.kind() {
            inbound::Kind::Image => self.cfg.image_deadline,
            _ => self.cfg.text_deadline,
        };
        self.answer(ib, contact, text, Instant::now() + budget, known)
            .await
    }

    /// The configuration with admins' `!config set` values applied.
    pub(crate) async fn effective(&self) -> Result<Config, HandleError> {
        let settings = store::settings(&self.db).await.or_retry()?;
        Ok(crate::settings::apply(&self.cfg, &settings))
    }

    /// [`Brain::effective`] for answering: read at most once a second. A `!config set` clears
    /// this process's copy at once; other replicas see it within a second.
    async fn effective_for_answers(&self) -> Result<Arc<Config>, HandleError> {
        {
            let cached = self.settings_cache.lock().expect("settings cache");
            if let Some((at, cfg)) = &*cached
                && at.elapsed() < SETTINGS_TTL
            {
                return Ok(cfg.clone());
            }
        }
        let cfg = Arc::new(self.effective().await?);
        *self.settings_cache.lock().expect("settings cache") =
            Some((std::time::Instant::now(), cfg.clone()));
        Ok(cfg)
    }

    /// Admins changed a setting: the next answer reads the settings again.
    pub(crate) fn settings_changed(&self) {
        *self.settings_cache.lock().expect("settings cache") = None;
    }

    /// What stops a paid call: no LLM, the daily budget, the contact's daily tokens.
    async fn guards(&self, known: &Known) -> Result<Option<Decision>, HandleError> {
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
    async fn transcribe(
        &self,
        ib: &Inbound,
        contact: &Contact,
        known: &Known,
    ) -> Result<Decision, HandleError> {
        if let Some(stop) = self.guards(known).await? {
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
        };
        let mut d = Decision::notice(&self.cfg.messages.listening, Outcome::Transcribing);
        d.extra.push(Publish::new(
            Stream::Transcribe,
            Envelope::new("brain", Payload::TranscriptionJob(job)),
        ));
        d.voice_deadline_ms = Some(deadline_ms);
        Ok(d)
    }

    /// Asks the model (the guards that protect the owner's money first).
    async fn answer(
        &self,
        ib: &Inbound,
        contact: &Contact,
        text: &str,
        deadline: Instant,
        known: Known,
    ) -> Result<Decision, HandleError> {
        let msgs = &self.cfg.messages;
        if let Some(stop) = self.guards(&known).await? {
            return Ok(stop);
        }
        let eff = self.effective_for_answers().await?;
        let image_bytes = match ib.kind() {
            inbound::Kind::Image => {
                let media = ib.media.as_ref();
                if media.is_some_and(|m| m.size_bytes > self.cfg.max_image_bytes) {
                    return Ok(Decision::notice(
                        &msgs.image_too_large,
                        Outcome::ImageTooLarge,
                    ));
                }
                let bytes = match media {
                    Some(m) => self
                        .bus
                        .read_media(m)
                        .await
                        .map_err(|e| HandleError::retry("media store", e))?,
                    None => None,
                };
                let Some(bytes) = bytes else {
                    return Ok(Decision::notice(&msgs.llm_down, Outcome::ImageMissing));
                };
                Some(bytes)
            }
            _ => None,
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
        match self
            .chat
            .ask(&eff, &eff.pre_prompt, &memory, &question, image, deadline)
            .await
        {
            Ok(a) if !a.text.is_empty() => {
                metrics::histogram!(m::LLM_SECONDS).record(started.elapsed().as_secs_f64());
                let mut reply = a.text.clone();
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
                Ok(Decision {
                    replies: vec![(outbound::Kind::Reply, reply)],
                    turns: vec![
                        Turn {
                            role: "user",
                            content: user_turn,
                        },
                        Turn {
                            role: "assistant",
                            content: a.text.clone(),
                        },
                    ],
                    extra: vec![self.usage(contact, ib, &a, op)],
                    disclosed: disclose,
                    outcome: Outcome::Answered,
                    voice_deadline_ms: None,
                })
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

    async fn handle_inbound(&self, ib: &Inbound) -> Result<Vec<Publish>, HandleError> {
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
        let decision = self.decide(ib, &contact, known).await?;
        metrics::counter!(m::MESSAGES, "kind" => ib.kind().label(), "outcome" => decision.outcome.as_str())
            .increment(1);
        let events = self.events(ib, &decision, "");
        let encoded = store::encode_events(&events);
        let stored = self
            .commit(store::Commit {
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
}

impl Brain {
    /// A transcript came back: answer the voice note as a text turn (or say what went wrong).
    async fn handle_transcript(&self, t: &Transcript) -> Result<Vec<Publish>, HandleError> {
        let key = format!("voice:{}", t.message_id);
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
        let msgs = &self.cfg.messages;
        let text = t.text.trim();
        let mut decision = match t.outcome() {
            transcript::Outcome::Ok if !text.is_empty() => {
                let remaining = (deadline_ms - now).max(0) as u64;
                let deadline = Instant::now() + std::time::Duration::from_millis(remaining);
                let known =
                    store::known(&self.db, &contact.id, &self.today(), self.cfg.memory_turns)
                        .await
                        .or_retry()?;
                self.answer(&ib, &contact, text, deadline, known).await?
            }
            transcript::Outcome::TooLong => {
                Decision::notice(&msgs.voice_too_long, Outcome::VoiceTooLong)
            }
            _ => {
                tracing::info!(error = %t.error, "voice note not transcribed");
                Decision::notice(&msgs.transcription_failed, Outcome::TranscriptionFailed)
            }
        };
        if decision.outcome == Outcome::Answered {
            decision.outcome = Outcome::AnsweredVoice;
        }
        metrics::counter!(m::MESSAGES, "kind" => "voice", "outcome" => decision.outcome.as_str())
            .increment(1);
        let events = self.events(&ib, &decision, ":voice");
        let encoded = store::encode_events(&events);
        let stored = self
            .commit(store::Commit {
                contact_id: Some(contact.id.clone()),
                inbound_id: key,
                turns: decision.turns,
                events: encoded,
                outcome: decision.outcome,
                disclosed: decision.disclosed,
                voice_pending: None,
                voice_done: Some(t.message_id.clone()),
                now_ms: now,
            })
            .await?;
        published(stored, events)
    }
}

impl Brain {
    async fn apologise(&self, ib: &Inbound) -> Result<(), HandleError> {
        let d = Decision::notice(&self.cfg.messages.apology, Outcome::Apology);
        for p in self.events(ib, &d, ":apology") {
            self.bus
                .publisher()
                .publish(p)
                .await
                .map_err(|e| HandleError::retry("cannot send the apology", e))?;
        }
        Ok(())
    }
}

impl Handler for Brain {
    #[tracing::instrument(name = "brain.inbound", skip_all, fields(message_id, contact))]
    async fn handle(&self, d: Delivery) -> Result<Vec<Publish>, HandleError> {
        match &d.envelope.payload {
            Some(Payload::Inbound(ib)) => {
                tracing::Span::current().record("message_id", ib.message_id.as_str());
                match self.handle_inbound(ib).await {
                    // The last delivery failed too: the customer gets an apology, not silence,
                    // and the message goes to the dead letters with its reason.
                    Err(HandleError::Retry(reason))
                        if d.deliveries >= self.bus.config().max_deliveries =>
                    {
                        self.apologise(ib).await?;
                        Err(HandleError::Permanent(
                            format!(
                                "{reason} (after {} deliveries; the customer got an apology)",
                                d.deliveries
                            )
                            .into(),
                        ))
                    }
                    other => other,
                }
            }
            Some(Payload::Transcript(t)) => {
                tracing::Span::current().record("message_id", t.message_id.as_str());
                self.handle_transcript(t).await
            }
            Some(other) => Err(HandleError::Permanent(
                format!("unexpected {} event for the brain", other.kind()).into(),
            )),
            None => Err(HandleError::Permanent("empty envelope".into())),
        }
    }

    /// The longest answer deadline, plus room for a busy database.
    fn deadline(&self) -> std::time::Duration {
        let c = &self.cfg;
        c.text_deadline.max(c.image_deadline).max(c.voice_deadline)
            + std::time::Duration::from_secs(15)
    }
}
