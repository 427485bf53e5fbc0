//! Answering one inbound message or transcript. In order: a redelivered message republishes
//! its stored events; the contact is resolved from its identities; the rules decide
//! ([`crate::rules`]); what they leave open is done here — a command run, a voice note sent to
//! the transcriber, a question answered (the knowledge base, the guards, the model). Handoff
//! alerts past `ALERT_DIGEST_AFTER` are held for a digest ([`digest`]). The outbox row and the
//! decision's effects are committed in one transaction keyed by the inbound message id, and the
//! events are published with the acknowledgement.

mod answer;
mod digest;
mod flow;
mod guards;
mod handoff;

use std::sync::Arc;

use shared::bus::{Bus, Delivery, HandleError, Handler, Publish};
use shared::clock::SharedClock;
use shared::db::{Db, retry_busy};
use shared::proto::{Inbound, Payload};

use crate::chat::Chat;
use crate::commands::Office;
use crate::config::Config;
use crate::domain::{Decision, Outcome};
use crate::knowledge::Knowledge;
use crate::rules::Rules;
use crate::settings::Settings;
use crate::store::{self, OrRetry};

/// The brain: answers inbound messages and transcripts (the bus's handler of both streams).
pub struct Brain {
    cfg: Arc<Config>,
    db: Db,
    bus: Bus,
    chat: Chat,
    knowledge: Arc<Knowledge>,
    rules: Rules,
    commits: store::Committer,
    reads: store::Reader,
    office: Office,
    clock: SharedClock,
    /// What the owner's tools hear (`EVENTS_WEBHOOK_URL`).
    owner: shared::events::Events,
}

impl Brain {
    /// A brain on `db` and `bus`, answering from `knowledge` with the configuration `settings`
    /// holds, at the time `clock` tells, telling the owner's tools through `owner`.
    pub fn new(
        settings: Arc<Settings>,
        db: Db,
        bus: Bus,
        knowledge: Arc<Knowledge>,
        clock: SharedClock,
        owner: shared::events::Events,
    ) -> Arc<Self> {
        let cfg = settings.base_shared();
        let office = Office {
            db: db.clone(),
            bus: bus.clone(),
            settings,
            console: shared::console::Console::new(&bus, shared::console::LINK_TTL),
            clock: clock.clone(),
            events: owner.clone(),
        };
        Arc::new(Self {
            chat: Chat::new(&cfg),
            rules: Rules::new(&cfg),
            commits: store::committer(db.clone()),
            reads: store::reader(db.clone(), cfg.memory_turns),
            cfg,
            db,
            bus,
            knowledge,
            office,
            clock,
            owner,
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

    /// The configuration in effect for answers (read at most once a second).
    async fn current(&self) -> Result<Arc<Config>, HandleError> {
        self.office.settings.current().await
    }

    /// Ends the conversations silent for `idle`, telling the owner's tools of each first (a
    /// crash in between tells again, under the same event id); the outcomes of those it ended.
    pub async fn end_idle_conversations(
        &self,
        idle: std::time::Duration,
    ) -> Result<Vec<String>, sqlx::Error> {
        let now = self.clock.now_ms();
        let mut ended = Vec::new();
        for c in store::idle_conversations(&self.db, now, idle.as_millis() as i64).await? {
            let data = serde_json::json!({
                "outcome": c.outcome,
                "started_at_ms": c.started_at_ms,
                "ended_at_ms": c.ended_at_ms,
            });
            let kind = shared::events::Kind::ConversationEnded;
            if let Some(mut p) = self.owner.event(kind, Some(&c.contact_id), data) {
                p.envelope.event_id = format!("conversation-{}-ended", c.id);
                if let Err(e) = self.bus.publisher().publish(p).await {
                    // Ended at the next sweep, when the event can be published.
                    tracing::warn!(error = %e, "cannot publish a conversation's end; later");
                    continue;
                }
            }
            if store::end_conversation(&self.db, &c).await? {
                ended.push(c.outcome);
            }
        }
        Ok(ended)
    }

    async fn apologise(&self, ib: &Inbound) -> Result<(), HandleError> {
        let lang = shared::lang::Lang::detect(&ib.text).unwrap_or_default();
        let d = Decision::notice(&self.cfg.messages.get(lang).apology, Outcome::Apology);
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
                let absorbed =
                    crate::burst::more_follows(&self.bus, &self.db, &self.cfg, ib, &d).await?;
                let result = self.handle_inbound(ib, absorbed).await;
                // The last delivery failed too: the customer gets an apology, not silence,
                // and the message goes to the dead letters with its reason.
                d.tell_on_last(result, |_| self.apologise(ib)).await
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
