//! The `brain` service: answers customers — LLM chat with memory, vision, commands, access
//! control — with every model call resilient and every answer written through an outbox.

// Every public item says what it is for; the lint keeps it so.
#![warn(missing_docs)]

pub mod burst;
pub mod chat;
pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod domain;
pub mod handler;
pub mod hours;
pub mod knowledge;
pub mod messages;
pub mod metrics;
pub mod rules;
pub mod settings;
pub mod store;
pub mod tell;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shared::bus::Stream;
use shared::config::ServiceName;
use shared::service::{Context, Running, Spec, Tasks};

pub use config::Config;

/// How the shared skeleton runs this service.
pub const SPEC: Spec = Spec {
    name: ServiceName::Brain,
    uses_db: true,
    consumes: &[Stream::Inbound, Stream::Transcripts],
    publishes: &[
        Stream::Outbound,
        Stream::Transcribe,
        Stream::Usage,
        Stream::Events,
    ],
};

/// How often handoffs nobody answered are looked for.
const HANDOFF_CHECK: Duration = Duration::from_secs(15);

/// How often the memory cleanup runs (it deletes what is older than `MEMORY_TTL_DAYS`).
const CLEANUP_EVERY: Duration = Duration::from_secs(3600);

/// Builds the service; its main future returns when `ctx.shutdown` is cancelled.
pub fn start(ctx: Context<Config>) -> anyhow::Result<Running> {
    metrics::register();
    let db = ctx.db.context("the brain needs its database")?;
    if ctx.config.endpoint.configured {
        tracing::info!("mode: AI answers, with the knowledge base and handoff to a person");
    } else {
        tracing::warn!(
            "mode: no LLM configured (OPENAI_API_KEY / OPENAI_BASE_URL): answering from the knowledge base's FAQ; any other question is handed to a person"
        );
    }
    let llm_check = llm_check(ctx.config.endpoint.configured);
    let admins: Vec<String> = ctx
        .config
        .admins
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    let ttl = ctx.config.memory_ttl;
    let handoff_timeout = ctx.config.handoff_timeout;
    let ctx_idle = ctx.config.conversation_idle;
    let knowledge = knowledge_base(&ctx.config);
    let settings = settings::Settings::new(ctx.config, db.clone());
    let clock: shared::clock::SharedClock = Arc::new(shared::clock::SystemClock);
    let owner = shared::events::Events::new(ctx.common.events.clone(), "brain");
    let console = console::Api::new(
        db.clone(),
        ctx.bus.clone(),
        settings.clone(),
        knowledge.clone(),
        clock.clone(),
        owner.clone(),
    )
    .routes();
    let brain = handler::Brain::new(
        settings,
        db.clone(),
        ctx.bus.clone(),
        knowledge.clone(),
        clock.clone(),
        owner.clone(),
    );
    let expiring = brain.clone();
    let idle = ctx_idle;
    let handoff_check = HANDOFF_CHECK.min(handoff_timeout / 2);
    let consumer = ctx.bus.consumer(Stream::Inbound, brain.clone());
    let transcripts = ctx.bus.consumer(Stream::Transcripts, brain);
    let mut tasks = Tasks::new(ctx.shutdown);
    let shutdown = tasks.shutdown().clone();
    {
        let db = db.clone();
        let shutdown = shutdown.clone();
        let clock = clock.clone();
        tasks.spawn("inbound consumer", async move {
            // Admins as ADMIN_NUMBERS says, before the first message is answered.
            let revoked = store::bootstrap_admins(&db, &admins, clock.now_ms())
                .await
                .context("cannot record ADMIN_NUMBERS as admins")?;
            if revoked > 0 {
                tracing::info!(revoked, "admin role revoked: the number left ADMIN_NUMBERS");
            }
            Ok(consumer.run(shutdown).await?)
        });
    }
    knowledge_tasks(&mut tasks, knowledge, db.clone());
    watch_events(&mut tasks, owner, ctx.bus);
    tasks.spawn("transcript consumer", async move {
        Ok(transcripts.run(shutdown).await?)
    });
    upkeep(&mut tasks, expiring, db, clock, ttl, handoff_check, idle);
    Ok(Running {
        routes: Some(console),
        checks: vec![llm_check],
        tasks,
    })
}

/// The knowledge base of `KNOWLEDGE_DIR`, with its embedder when one is configured.
fn knowledge_base(config: &Config) -> Arc<knowledge::Knowledge> {
    let embedder = config.embeddings.as_ref().map(|e| match e {
        config::Embeddings::Local(dir) => knowledge::embed::Embedder::local(dir),
        config::Embeddings::Provider { endpoint, model } => {
            knowledge::embed::Embedder::remote(endpoint, model.clone())
        }
    });
    if let Some(e) = &embedder {
        tracing::info!(embedder = %e.describe(), "knowledge base: matching by meaning too, once its vectors are ready");
    }
    Arc::new(knowledge::Knowledge::with_embedder(
        &config.knowledge_dir,
        embedder,
    ))
}

/// Whether the events stream is full (`EVENTS_MAX_QUEUED`), looked at once a second while
/// events are on.
fn watch_events(tasks: &mut Tasks, owner: shared::events::Events, bus: shared::bus::Bus) {
    if owner.config().url.is_some() {
        tasks.every("events queue", Duration::from_secs(1), move || {
            let (owner, bus) = (owner.clone(), bus.clone());
            async move { owner.look(&bus).await }
        });
    }
}

/// The knowledge base's own work: its vectors, and watching its folder and the console's files.
fn knowledge_tasks(tasks: &mut Tasks, knowledge: Arc<knowledge::Knowledge>, db: shared::db::Db) {
    let shutdown = tasks.shutdown().clone();
    let k = knowledge.clone();
    tasks.spawn("knowledge base vectors", async move {
        k.fill_vectors(shutdown).await;
        Ok(())
    });
    let shutdown = tasks.shutdown().clone();
    tasks.spawn("knowledge base watch", async move {
        knowledge.watch(Some(db), shutdown).await;
        Ok(())
    });
}

/// The brain's periodic work: handoffs nobody answered, conversations gone silent, old memory.
fn upkeep(
    tasks: &mut Tasks,
    brain: Arc<handler::Brain>,
    db: shared::db::Db,
    clock: shared::clock::SharedClock,
    ttl: Duration,
    handoff_check: Duration,
    idle: Duration,
) {
    let digests = brain.clone();
    let sweeper = brain.clone();
    tasks.every("handoff timeouts", handoff_check, move || {
        let brain = brain.clone();
        async move {
            if let Err(e) = brain.expire_handoffs().await {
                tracing::warn!(error = %e, "cannot check the handoffs' timeouts");
            }
        }
    });
    let digest_check = HANDOFF_CHECK.min(digests.digest_window() / 4);
    tasks.every("handoff digests", digest_check, move || {
        let brain = digests.clone();
        async move {
            if let Err(e) = brain.send_digests().await {
                tracing::warn!(error = %e, "cannot send the handoff digests");
            }
        }
    });

    tasks.every(
        "conversation outcomes",
        HANDOFF_CHECK.min(idle / 2),
        move || {
            let brain = sweeper.clone();
            async move {
                match brain.end_idle_conversations(idle).await {
                    Ok(ended) => {
                        for outcome in ended {
                            ::metrics::counter!(metrics::CONVERSATIONS, "outcome" => outcome)
                                .increment(1);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot close idle conversations"),
                }
            }
        },
    );
    tasks.every("memory cleanup", CLEANUP_EVERY, move || {
        let db = db.clone();
        let clock = clock.clone();
        async move {
            let before = clock.now_ms() - ttl.as_millis() as i64;
            match store::cleanup(&db, before).await {
                Ok(n) => {
                    ::metrics::counter!(metrics::CLEANED).increment(n);
                    if n > 0 {
                        tracing::info!(deleted = n, "memory cleanup");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "memory cleanup failed"),
            }
        }
    });
}

/// `/readyz` says whether a model is configured, for information: never a reason for 503 (with
/// none the brain still serves the knowledge base and hands off).
fn llm_check(configured: bool) -> shared::http::ExtraCheck {
    Arc::new(move || {
        Box::pin(async move {
            vec![(
                "info:llm".to_owned(),
                shared::http::CheckStatus {
                    ok: true,
                    state: Some(if configured { "configured" } else { "none" }.to_owned()),
                    error: None,
                },
            )]
        })
    })
}
