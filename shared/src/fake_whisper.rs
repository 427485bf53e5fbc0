//! (Tests and benchmarks; feature `test-utils`.) A local stand-in for OpenAI's `POST /v1/audio/transcriptions`, speaking its real HTTP API
//! (multipart in, JSON or an OpenAI error object out). It checks what it receives — a WAV at
//! 16 kHz mono of plausible length, the model, the language — and answers as scripted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Transcribes as this text.
    Ok(&'static str),
    /// Fails with this HTTP status.
    Status(u16),
    /// 429 with `Retry-After` seconds.
    RateLimited(u64),
    /// Answer after a delay.
    Slow(Duration, &'static str),
}

/// What one request carried.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The model asked for.
    pub model: String,
    /// The language hint, if any.
    pub language: Option<String>,
    /// The WAV's sample rate.
    pub sample_rate: u32,
    /// The WAV's channels.
    pub channels: u16,
    /// The audio's length.
    pub seconds: f64,
    /// When it arrived.
    pub at: std::time::Instant,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Answer>,
    /// Answer when the script is empty (default: a transcript).
    otherwise: Option<Answer>,
    seen: Vec<Seen>,
    bad: Vec<String>,
}

/// A local OpenAI transcription server answering from a script.
#[derive(Clone, Default)]
pub struct FakeWhisper {
    inner: Arc<Mutex<Inner>>,
    /// Its base URL (ending in `/v1`), for `WHISPER_BASE_URL`.
    pub base_url: String,
}

impl FakeWhisper {
    /// Starts the server: `script` in order, then `otherwise` (or an error).
    pub fn start(script: Vec<Answer>, otherwise: Option<Answer>) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            script: script.into(),
            otherwise,
            ..Default::default()
        }));
        let app = axum::Router::new()
            .route("/v1/audio/transcriptions", post(transcribe))
            .with_state(inner.clone());
        let addr = crate::testing::serve_on_own_thread(app);
        Self {
            inner,
            base_url: format!("http://{addr}/v1"),
        }
    }

    /// What each request carried, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.inner.lock().unwrap().seen.clone()
    }

    /// Requests that were not what the API expects.
    pub fn bad(&self) -> Vec<String> {
        self.inner.lock().unwrap().bad.clone()
    }
}

fn openai_error(status: u16, message: &str) -> Response {
    let body = serde_json::json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}});
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

async fn transcribe(State(inner): State<Arc<Mutex<Inner>>>, mut form: Multipart) -> Response {
    let mut model = None;
    let mut language = None;
    let mut wav = None;
    let mut format = None;
    while let Ok(Some(field)) = form.next_field().await {
        match field.name().unwrap_or("") {
            "file" => wav = Some(field.bytes().await.unwrap().to_vec()),
            "model" => model = Some(field.text().await.unwrap()),
            "language" => language = Some(field.text().await.unwrap()),
            "response_format" => format = Some(field.text().await.unwrap()),
            _ => {}
        }
    }
    let (Some(model), Some(wav)) = (model, wav) else {
        inner
            .lock()
            .unwrap()
            .bad
            .push("no model or file part".into());
        return openai_error(400, "you must provide a model and a file");
    };
    let Some((sample_rate, channels, seconds)) = parse_wav(&wav) else {
        inner
            .lock()
            .unwrap()
            .bad
            .push("file is not a PCM WAV".into());
        return openai_error(400, "Invalid file format.");
    };
    if format.as_deref().is_some_and(|f| f != "json") {
        inner
            .lock()
            .unwrap()
            .bad
            .push(format!("response_format {format:?}"));
    }
    let answer = {
        let mut i = inner.lock().unwrap();
        i.seen.push(Seen {
            model,
            language,
            sample_rate,
            channels,
            seconds,
            at: std::time::Instant::now(),
        });
        i.script
            .pop_front()
            .or_else(|| i.otherwise.clone())
            .unwrap_or(Answer::Ok("hello from the fake"))
    };
    match answer {
        Answer::Ok(text) => axum::Json(serde_json::json!({"text": text})).into_response(),
        Answer::Status(s) => {
            openai_error(s, "The server had an error while processing your request.")
        }
        Answer::RateLimited(after) => {
            let mut r = openai_error(429, "Rate limit reached");
            r.headers_mut()
                .insert("retry-after", after.to_string().parse().unwrap());
            r
        }
        Answer::Slow(d, text) => {
            tokio::time::sleep(d).await;
            axum::Json(serde_json::json!({"text": text})).into_response()
        }
    }
}

/// (sample rate, channels, seconds) of a PCM WAV.
fn parse_wav(b: &[u8]) -> Option<(u32, u16, f64)> {
    if b.len() < 44 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return None;
    }
    let mut pos = 12;
    let mut fmt = None;
    while pos + 8 <= b.len() {
        let id = &b[pos..pos + 4];
        let size = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().ok()?) as usize;
        let body = pos + 8;
        if id == b"fmt " {
            let channels = u16::from_le_bytes(b[body + 2..body + 4].try_into().ok()?);
            let rate = u32::from_le_bytes(b[body + 4..body + 8].try_into().ok()?);
            let byte_rate = u32::from_le_bytes(b[body + 8..body + 12].try_into().ok()?);
            fmt = Some((rate, channels, byte_rate));
        }
        if id == b"data" {
            let (rate, channels, byte_rate) = fmt?;
            let len = size.min(b.len() - body);
            return Some((rate, channels, len as f64 / f64::from(byte_rate)));
        }
        pos = body + size + (size & 1);
    }
    None
}
