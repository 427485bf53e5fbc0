//! The `ledger` service: consumes usage records (chat, vision, transcription), prices them
//! exactly from the price table, stores each once, aggregates per day in `LEDGER_TIMEZONE`,
//! raises cost alerts (log, metric, WhatsApp to admins, webhook) once per day per threshold,
//! and keeps the over-budget mark the brain obeys before any paid call.

// Every public item says what it is for; the lint keeps it so.
#![warn(missing_docs)]

pub mod config;
pub mod events;
pub mod handler;
pub mod metrics;
pub mod pricing;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use shared::bus::Stream;
use shared::clock::SystemClock;
use shared::config::ServiceName;
use shared::service::{Context, Running, Spec, Tasks};

pub use config::Config;
pub use handler::Ledger;

/// How the shared skeleton runs this service.
pub const SPEC: Spec = Spec {
    name: ServiceName::Ledger,
    uses_db: true,
    consumes: &[Stream::Usage, Stream::Events],
    publishes: &[Stream::Outbound, Stream::Events],
};

/// Builds the ledger; its main future returns when `ctx.shutdown` is cancelled.
pub fn start(ctx: Context<Config>) -> anyhow::Result<Running> {
    let db = ctx
        .db
        .ok_or_else(|| anyhow::anyhow!("the ledger needs its database"))?;
    metrics::register(
        &ctx.config.prices,
        ctx.config.daily_budget.map(|b| b.as_f64()),
        ctx.config.cost_alert.as_f64(),
    );
    let limits = shared::usage::Limits {
        alert_pico: Some(ctx.config.cost_alert.pico()),
        budget_pico: ctx.config.daily_budget.map(|b| b.pico()),
    };
    let limits_bus = ctx.bus.clone();
    let events = shared::events::Events::new(ctx.common.events.clone(), "ledger");
    let ledger = Ledger::with_events(
        db,
        ctx.bus.clone(),
        ctx.config,
        Arc::new(SystemClock),
        events,
    );
    let consumer = ctx.bus.consumer(Stream::Usage, ledger.clone());
    let mut tasks = Tasks::new(ctx.shutdown);
    let shutdown = tasks.shutdown().clone();
    if let (Some(url), Some(key)) = (&ctx.common.events.url, &ctx.common.events.secret) {
        let deliverer = events::Deliverer::new(url.clone(), key.clone())?;
        let events = ctx.bus.consumer(Stream::Events, Arc::new(deliverer));
        let shutdown = shutdown.clone();
        tasks.spawn(
            "events consumer",
            async move { Ok(events.run(shutdown).await?) },
        );
    }
    tasks.spawn("usage consumer", async move {
        // The limits for the owner's console, before the first record.
        if let Err(e) = shared::usage::keep_limits(&limits_bus, limits).await {
            tracing::warn!(error = %e, "cannot keep the budget limits for the console");
        }
        Ok(consumer.run(shutdown).await?)
    });
    tasks.every("budget reconcile", Duration::from_secs(60), move || {
        let ledger = ledger.clone();
        async move {
            if let Err(e) = ledger.reconcile_budget().await {
                tracing::warn!(error = %e, "budget reconcile failed");
            }
        }
    });
    Ok(Running {
        routes: None,
        checks: Vec::new(),
        tasks,
    })
}
