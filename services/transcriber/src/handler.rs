//! One transcription job: fetch the voice note from the media store, convert it with ffmpeg,
//! transcribe it with Whisper (resilient call), publish the transcript and a usage record.
//! A job that fails for good publishes a failure transcript (so the customer is told) and is
//! dead-lettered with the reason.

use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::audio::{AudioInput, AudioResponseFormat, CreateTranscriptionRequest};
use serde::Deserialize;
use shared::bus::{Delivery, HandleError, Handler, Publish, Publisher, Reason, Stream};
use shared::llm::{Breaker, CallError};
use shared::proto::{
    Envelope, Payload, Transcript, TranscriptionJob, UsageRecord, transcript, usage_record,
};

use crate::audio::{AudioError, Wav, to_wav};
use crate::config::{Config, WHISPER_MAX_BYTES};
use crate::gate::Gate;
use crate::metrics as m;

/// The transcription job handler: media from the store, ffmpeg, Whisper, the transcript.
pub struct Transcriber {
    cfg: Config,
    client: Client<OpenAIConfig>,
    breaker: Breaker,
    bus: shared::bus::Bus,
    publisher: Publisher,
    /// Bounds CPU-heavy conversions to the cores available, earliest deadline first.
    ffmpeg_slots: Gate,
}

/// How a job ended, short of success. A failure keeps what caused it as its source (the
/// [`Reason`]'s chain: `cannot run ffmpeg: /usr/bin/ffmpeg: No such file or directory`).
#[derive(Debug, thiserror::Error)]
enum JobError {
    /// Over `MAX_AUDIO_SECONDS` or the upload limit: a friendly answer, not an incident.
    #[error("{reason}")]
    TooLong { seconds: f64, reason: String },
    /// A visitor's note over what is left of the visitors' daily audio: not sent to Whisper.
    #[error("over what is left of VISITOR_DAILY_AUDIO_SECONDS today")]
    Budget { seconds: f64 },
    /// Worth another delivery (Redis or the machine failing).
    #[error(transparent)]
    Retry(Reason),
    /// Will not work: the customer is told, the job dead-lettered.
    #[error(transparent)]
    Failed(Reason),
}

/// A transcription.
struct Done {
    text: String,
    language: String,
    seconds: f64,
    latency: Duration,
}

/// What Whisper-compatible servers answer for `response_format=json` (some add more).
#[derive(Deserialize)]
struct WhisperJson {
    text: String,
    #[serde(default)]
    language: Option<String>,
}

impl Transcriber {
    /// A handler on `bus`, converting at most as many notes at once as there are cores.
    pub fn new(cfg: Config, bus: &shared::bus::Bus) -> Self {
        let client = shared::llm::client(&cfg.endpoint, cfg.policy.timeout);
        let breaker = Breaker::new("whisper", cfg.policy.clone());
        Self {
            client,
            breaker,
            bus: bus.clone(),
            publisher: bus.publisher(),
            ffmpeg_slots: Gate::new(cfg.ffmpeg_concurrency),
            cfg,
        }
    }

    async fn run(
        &self,
        job: &TranscriptionJob,
        deadline_ms: i64,
        deadline: Instant,
    ) -> Result<Done, JobError> {
        if Instant::now() >= deadline {
            return Err(JobError::Failed(
                "the voice message's deadline passed before work started".into(),
            ));
        }
        if !self.cfg.endpoint.configured {
            return Err(JobError::Failed(
                "speech recognition is not configured: set WHISPER_API_KEY or OPENAI_API_KEY \
                 (or WHISPER_BASE_URL for a local server)"
                    .into(),
            ));
        }
        let wav = self.convert(job, deadline_ms).await?;
        if job.visitor {
            self.reserve_visitor_audio(wav.seconds).await?;
        }
        self.recognise(job, wav, deadline).await
    }

    /// Takes a visitor's note's seconds from the visitors' daily audio allowance, before any
    /// paid call; `Budget` when they do not fit.
    async fn reserve_visitor_audio(&self, seconds: f64) -> Result<(), JobError> {
        let reserved = shared::usage::reserve_visitor_audio(
            &self.bus,
            &self.cfg.days,
            self.cfg.visitors,
            (seconds * 1000.0).ceil() as u64,
            shared::ids::now_ms(),
        )
        .await
        .map_err(|e| JobError::Retry(Reason::new("visitor audio allowance unavailable", e)))?;
        if reserved {
            Ok(())
        } else {
            Err(JobError::Budget { seconds })
        }
    }

    /// The voice note from the media store, converted to WAV (at most as many at once as
    /// there are cores, earliest deadline first).
    async fn convert(&self, job: &TranscriptionJob, deadline_ms: i64) -> Result<Wav, JobError> {
        let media = job
            .media
            .as_ref()
            .ok_or_else(|| JobError::Failed("the job has no media reference".into()))?;
        let bytes = self
            .bus
            .read_media(media)
            .await
            .map_err(|e| JobError::Retry(Reason::new("media store unavailable", e)))?;
        let bytes = bytes.ok_or_else(|| {
            JobError::Failed("the voice note is missing or expired from the media store".into())
        })?;
        let slot = self.ffmpeg_slots.acquire(deadline_ms).await;
        let max = self.cfg.max_audio_seconds;
        let wav = to_wav(&self.cfg.ffmpeg, &bytes, max, self.cfg.ffmpeg_timeout).await;
        drop(slot);
        drop(bytes);
        let wav = wav.map_err(|e| match e {
            e @ AudioError::Io { .. } => JobError::Retry(Reason::from_error(e)),
            AudioError::TooLong { seconds } => JobError::TooLong {
                seconds,
                reason: format!(
                    "{seconds:.0} s of audio (or more: converting stops past the limit) is over MAX_AUDIO_SECONDS ({max:.0})"
                ),
            },
            other => JobError::Failed(Reason::from_error(other)),
        })?;
        metrics::histogram!(m::FFMPEG_SECONDS).record(wav.took.as_secs_f64());
        metrics::histogram!(m::AUDIO_SECONDS).record(wav.seconds);
        if wav.bytes.len() as u64 > WHISPER_MAX_BYTES {
            return Err(JobError::TooLong {
                seconds: wav.seconds,
                reason: "the converted audio is over Whisper's 25 MB upload limit".into(),
            });
        }
        Ok(wav)
    }

    /// Whisper's transcript of `wav`.
    async fn recognise(
        &self,
        job: &TranscriptionJob,
        wav: Wav,
        deadline: Instant,
    ) -> Result<Done, JobError> {
        let audio = bytes::Bytes::from(wav.bytes);
        let language = if job.language.is_empty() {
            self.cfg.language.clone()
        } else {
            Some(job.language.clone())
        };
        let request = CreateTranscriptionRequest {
            file: AudioInput::from_bytes("voice.wav".to_owned(), audio),
            model: self.cfg.model.clone(),
            language: language.clone(),
            response_format: Some(AudioResponseFormat::Json),
            ..Default::default()
        };
        let called = shared::llm::call(&self.breaker, deadline.into(), || {
            let request = request.clone();
            async move {
                self.client
                    .audio()
                    .transcription()
                    .create_raw(request)
                    .await
            }
        })
        .await
        .map_err(|e| match e {
            CallError::CircuitOpen => JobError::Failed(
                "the speech service is failing; not calling it for now (circuit open)".into(),
            ),
            CallError::Deadline(r) => JobError::Failed(Reason::new("voice deadline reached", r)),
            CallError::Failed(r) => JobError::Failed(Reason::new("speech service", r)),
        })?;
        metrics::histogram!(m::WHISPER_SECONDS).record(called.latency.as_secs_f64());
        let parsed: WhisperJson = serde_json::from_slice(&called.value)
            .map_err(|e| JobError::Failed(Reason::new("speech service: unexpected response", e)))?;
        Ok(Done {
            text: parsed.text.trim().to_owned(),
            language: parsed.language.or(language).unwrap_or_default(),
            seconds: wav.seconds,
            latency: called.latency,
        })
    }

    /// The transcript of a job done, and its usage record.
    fn transcribed(&self, job: &TranscriptionJob, done: Done) -> Vec<Publish> {
        let usage = UsageRecord {
            usage_id: blake3::hash(format!("transcription|{}", job.message_id).as_bytes()).to_hex()
                [..26]
                .to_owned(),
            contact_id: job.contact_id.clone(),
            requested_model: self.cfg.model.clone(),
            response_model: self.cfg.model.clone(),
            operation: usage_record::Operation::Transcription as i32,
            audio_seconds: done.seconds,
            latency_ms: done.latency.as_millis() as u64,
            message_id: job.message_id.clone(),
            at_ms: shared::ids::now_ms(),
            ..Default::default()
        };
        vec![
            self.transcript(
                job,
                Transcript {
                    message_id: job.message_id.clone(),
                    outcome: transcript::Outcome::Ok as i32,
                    text: done.text,
                    language: done.language,
                    audio_seconds: done.seconds,
                    error: String::new(),
                },
            ),
            Publish::new(
                Stream::Usage,
                Envelope::new("transcriber", Payload::Usage(usage)),
            ),
        ]
    }

    fn transcript(&self, job: &TranscriptionJob, t: Transcript) -> Publish {
        let env = Envelope::new("transcriber", Payload::Transcript(t));
        if job.contact_id.is_empty() {
            Publish::new(Stream::Transcripts, env)
        } else {
            Publish::ordered(Stream::Transcripts, env, job.contact_id.clone())
        }
    }

    /// A job that will not succeed: counted, logged, and the customer told (through the
    /// brain) before the job goes to the dead letters.
    async fn give_up(&self, job: &TranscriptionJob, reason: Reason) -> Result<(), HandleError> {
        metrics::counter!(m::JOBS, "outcome" => "failed").increment(1);
        tracing::warn!(error = %reason, "transcription failed for good");
        self.publisher
            .publish(self.failure(job, transcript::Outcome::Failed, &reason.to_string(), 0.0))
            .await
            .map_err(|e| HandleError::retry("cannot publish the failure", e))?;
        Ok(())
    }

    fn failure(
        &self,
        job: &TranscriptionJob,
        outcome: transcript::Outcome,
        error: &str,
        seconds: f64,
    ) -> Publish {
        self.transcript(
            job,
            Transcript {
                message_id: job.message_id.clone(),
                outcome: outcome as i32,
                audio_seconds: seconds,
                error: error.to_owned(),
                ..Default::default()
            },
        )
    }
}

impl Handler for Transcriber {
    #[tracing::instrument(name = "transcriber.job", skip_all, fields(message_id))]
    async fn handle(&self, d: Delivery) -> Result<Vec<Publish>, HandleError> {
        let Some(Payload::TranscriptionJob(job)) = &d.envelope.payload else {
            return Err(HandleError::Permanent("not a transcription job".into()));
        };
        tracing::Span::current().record("message_id", job.message_id.as_str());
        let now_ms = shared::ids::now_ms();
        let deadline_ms = if job.deadline_at_ms > 0 {
            job.deadline_at_ms
        } else {
            d.envelope.created_at_ms + self.cfg.voice_deadline.as_millis() as i64
        };
        let deadline = Instant::now() + Duration::from_millis((deadline_ms - now_ms).max(0) as u64);
        let outcome = match self.run(job, deadline_ms, deadline).await {
            Ok(done) => {
                metrics::counter!(m::JOBS, "outcome" => "ok").increment(1);
                tracing::info!(
                    audio_seconds = done.seconds,
                    latency_ms = done.latency.as_millis() as u64,
                    "voice note transcribed"
                );
                Ok(self.transcribed(job, done))
            }
            Err(JobError::TooLong { seconds, reason }) => {
                metrics::counter!(m::JOBS, "outcome" => "too_long").increment(1);
                tracing::info!(audio_seconds = seconds, "voice note too long");
                Ok(vec![self.failure(
                    job,
                    transcript::Outcome::TooLong,
                    &reason,
                    seconds,
                )])
            }
            Err(e @ JobError::Budget { seconds }) => {
                metrics::counter!(m::JOBS, "outcome" => "visitor_budget").increment(1);
                tracing::info!(
                    audio_seconds = seconds,
                    "visitors' daily audio allowance spent; not transcribed"
                );
                Ok(vec![self.failure(
                    job,
                    transcript::Outcome::Budget,
                    &e.to_string(),
                    seconds,
                )])
            }
            Err(JobError::Retry(reason)) => Err(HandleError::Retry(reason)),
            Err(JobError::Failed(reason)) => {
                self.give_up(job, reason.clone()).await?;
                Err(HandleError::Permanent(reason))
            }
        };
        // A retry on the last delivery is the end too: the customer is told the same way.
        let outcome = d
            .tell_on_last(outcome, |reason| self.give_up(job, reason))
            .await;
        if let Err(HandleError::Retry(reason)) = &outcome {
            metrics::counter!(m::JOBS, "outcome" => "retry").increment(1);
            tracing::warn!(error = %reason, deliveries = d.deliveries, "transcription will be retried");
        }
        outcome
    }

    /// A job never outlives its voice deadline; some room for publishing.
    fn deadline(&self) -> Duration {
        self.cfg.voice_deadline + Duration::from_secs(15)
    }
}
