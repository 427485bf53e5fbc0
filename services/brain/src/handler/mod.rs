//! Answering one inbound message. In order: a redelivered message republishes its stored
//! events; the contact is resolved from its identities; STOP/START; access control; commands;
//! guards (length, budget, the visitors' shared allowance, the contact's daily tokens); then the
//! model. Handoff alerts past `ALERT_DIGEST_AFTER` are held for a digest ([`digest`]). Memory rows, the
//! disclosure mark and the outbox row are committed in one transaction keyed by the inbound
//! message id, and the events are published with the acknowledgement.

mod answer;
mod decide;
mod digest;
mod flow;
mod handoff;

pub(crate) use handoff::{MARK_HANDOFF, MARK_RULES, MARK_UNSURE, Reason};

use std::sync::Arc;

use shared::bus::{Bus, Delivery, HandleError, Handler, Publish, Stream};
use shared::db::{Db, retry_busy};
use shared::llm::CallError;
use shared::proto::{
    Envelope, Inbound, Outbound, Payload, Transcript, UsageRecord, chat_order_key, inbound,
    outbound, transcript, usage_record,
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

/// The brain: answers inbound messages and transcripts (the bus's handler of both streams).
pub struct Brain {
    pub(crate) cfg: Config,
    pub(crate) db: Db,
    pub(crate) bus: Bus,
    pub(crate) chat: Chat,
    pub(crate) knowledge: Arc<crate::knowledge::Knowledge>,
    /// `HANDOFF_PHRASES`, framed for whole-word matching ([`crate::knowledge::framed`]).
    handoff_phrases: Vec<String>,
    commits: store::Committer,
    console: shared::console::Console,
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

    fn console(&self) -> &shared::console::Console {
        &self.console
    }
}

impl Brain {
    /// A brain on `db` and `bus`, answering from `knowledge`.
    pub fn new(
        cfg: Config,
        db: Db,
        bus: Bus,
        knowledge: Arc<crate::knowledge::Knowledge>,
    ) -> Arc<Self> {
        let chat = Chat::new(&cfg);
        let commits = store::committer(db.clone());
        let console = shared::console::Console::new(&bus, shared::console::LINK_TTL);
        let handoff_phrases = cfg
            .handoff_phrases
            .iter()
            .map(|p| crate::knowledge::framed(p))
            .collect();
        Arc::new(Self {
            handoff_phrases,
            cfg,
            db,
            bus,
            chat,
            knowledge,
            commits,
            console,
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
                // What is remembered and logged of a text stays within MAX_INPUT_CHARS, whoever
                // published it (the gateway cuts it already; `text_cut` says it was longer).
                let mut fitted = std::borrow::Cow::Borrowed(ib);
                if ib.text.len() > self.cfg.max_input_chars {
                    shared::proto::fit_text(fitted.to_mut(), self.cfg.max_input_chars);
                }
                let ib = fitted.as_ref();
                let absorbed = self.in_burst(ib, &d).await?;
                match self.handle_inbound(ib, absorbed).await {
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
