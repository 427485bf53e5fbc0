//! The `transcriber` service: turns voice notes into text (ffmpeg + Whisper) as a scalable
//! worker pool. Any number of replicas share the `transcribe` stream through its consumer group;
//! each job is done once (at-least-once delivery, idempotent outputs keyed on the message id).

// Every public item says what it is for; the lint keeps it so.
#![warn(missing_docs)]

pub mod audio;
pub mod config;
mod gate;
pub mod handler;
pub mod metrics;

use std::sync::Arc;

use shared::bus::Stream;
use shared::config::ServiceName;
use shared::service::{Context, Running, Spec, Tasks};

pub use config::Config;

/// How the shared skeleton runs this service.
pub const SPEC: Spec = Spec {
    name: ServiceName::Transcriber,
    uses_db: false,
    consumes: &[Stream::Transcribe],
    publishes: &[Stream::Transcripts, Stream::Usage],
};

/// Builds the service; its main future returns when `ctx.shutdown` is cancelled.
pub fn start(ctx: Context<Config>) -> anyhow::Result<Running> {
    metrics::register();
    if !ctx.config.endpoint.configured {
        tracing::warn!(
            "no speech service configured (WHISPER_API_KEY / OPENAI_API_KEY / WHISPER_BASE_URL): \
             voice notes will be answered with a 'please type' message"
        );
    }
    // A conversion never outlives its ffmpeg timeout: older directories were left by a
    // killed process.
    let swept = audio::sweep_stale(ctx.config.ffmpeg_timeout + std::time::Duration::from_secs(60));
    if swept > 0 {
        tracing::info!(
            swept,
            "removed conversion files a killed transcriber left behind"
        );
    }
    let handler = Arc::new(handler::Transcriber::new(ctx.config, &ctx.bus));
    let consumer = ctx.bus.consumer(Stream::Transcribe, handler);
    let mut tasks = Tasks::new(ctx.shutdown);
    let shutdown = tasks.shutdown().clone();
    tasks.spawn("transcription consumer", async move {
        Ok(consumer.run(shutdown).await?)
    });
    Ok(Running {
        routes: None,
        checks: Vec::new(),
        tasks,
    })
}
