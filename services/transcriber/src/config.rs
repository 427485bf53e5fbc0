//! The transcriber's own configuration.

use std::time::Duration;

use shared::config::{CommonConfig, Env};
use shared::llm::{Endpoint, Policy};

/// Transcriber settings (beyond the common variables).
#[derive(Debug, Clone)]
pub struct Config {
    /// `FFMPEG_PATH` (default `ffmpeg` on `PATH`).
    pub ffmpeg: String,
    /// `FFMPEG_TIMEOUT_SECS` (default 30): one conversion at most.
    pub ffmpeg_timeout: Duration,
    /// `FFMPEG_CONCURRENCY` (default: the number of CPUs): conversions at once; Whisper calls
    /// are not bounded by it (they wait on the network, not the CPU).
    pub ffmpeg_concurrency: usize,
    /// `MAX_AUDIO_SECONDS` (default 600): longer voice notes get a friendly "too long".
    pub max_audio_seconds: f64,
    /// `WHISPER_MODEL` (default `whisper-1`).
    pub model: String,
    /// `WHISPER_BASE_URL` / `WHISPER_API_KEY`, defaulting to `OPENAI_BASE_URL` / `OPENAI_API_KEY`.
    pub endpoint: Endpoint,
    /// `WHISPER_LANGUAGE`: ISO-639-1 hint (auto-detection on short clips can pick wrong).
    pub language: Option<String>,
    /// `VOICE_DEADLINE_SECS` (default 45): a voice message's overall deadline when the job
    /// carries none.
    pub voice_deadline: Duration,
    /// Timeouts, retries and circuit breaker (`LLM_*`, `BREAKER_*`).
    pub policy: Policy,
    /// `VISITOR_DAILY_AUDIO_SECONDS` (with the brain's `VISITOR_DAILY_TOKENS`): the audio all
    /// web chat visitors share per day; a visitor's note over what is left is not transcribed.
    pub visitors: shared::usage::VisitorAllowance,
    /// `LEDGER_TIMEZONE`: the day the visitors' allowance counts.
    pub days: shared::usage::Days,
}

/// Whisper's upload limit.
pub const WHISPER_MAX_BYTES: u64 = 25 * 1024 * 1024;

impl Config {
    /// Reads the transcriber's variables; problems are recorded in `env`.
    pub fn load(env: &mut Env, _common: &CommonConfig) -> Self {
        let language = env
            .opt_string("WHISPER_LANGUAGE")
            .map(|l| l.to_ascii_lowercase());
        if let Some(l) = &language
            && !(l.len() == 2 && l.chars().all(|c| c.is_ascii_lowercase()))
        {
            env.problem(
                "WHISPER_LANGUAGE",
                format!("expected a two-letter ISO-639-1 code like en or de, got {l:?}"),
            );
        }
        Self {
            ffmpeg: env.string("FFMPEG_PATH", "ffmpeg"),
            ffmpeg_timeout: env.secs("FFMPEG_TIMEOUT_SECS", 30, 1, 600),
            ffmpeg_concurrency: env.int_in(
                "FFMPEG_CONCURRENCY",
                std::thread::available_parallelism().map_or(2, |n| n.get()),
                1,
                256,
            ),
            max_audio_seconds: env.int_in("MAX_AUDIO_SECONDS", 600u32, 1, 7200) as f64,
            model: env.string("WHISPER_MODEL", "whisper-1"),
            endpoint: Endpoint::from_env(env, "WHISPER_"),
            language,
            voice_deadline: env.secs("VOICE_DEADLINE_SECS", 45, 5, 600),
            policy: Policy::from_env(env),
            visitors: shared::usage::VisitorAllowance::from_env(env),
            days: shared::usage::Days::from_env(env),
        }
    }
}
