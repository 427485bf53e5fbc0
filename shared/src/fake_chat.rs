//! (Tests and benchmarks; feature `test-utils`.) A local stand-in for OpenAI's
//! `POST /v1/chat/completions`, speaking its real HTTP API: it records every request body and
//! answers as scripted — by default "You said: <the last user text>" with fixed token usage
//! (100 prompt, 20 completion), model `gpt-4o-2024-08-06`. And `POST /v1/embeddings`, whose
//! vectors know what the test tells it ([`FakeChat::meanings`]): words of one group of
//! synonyms point the same way; every other word a way of its own (hashed).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Answers with this text.
    Text(String),
    /// Fails with this HTTP status.
    Status(u16),
    /// 429 with `Retry-After` seconds.
    RateLimited(u64),
    /// Answers with the text after the delay.
    Slow(Duration, String),
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    otherwise: Option<Reply>,
    requests: Vec<serde_json::Value>,
    /// Groups of words that mean the same (for the embeddings).
    meanings: Vec<Vec<String>>,
    /// How embeddings requests are answered: vectors when `None`, else a status or a delay.
    embeddings: Option<Reply>,
    /// Every text embeddings were asked for, oldest first.
    embedded: Vec<String>,
}

/// The length of the fake's vectors.
const DIMS: usize = 64;

/// A local OpenAI chat-completions server answering from a script.
#[derive(Clone)]
pub struct FakeChat {
    inner: Arc<Mutex<Inner>>,
    /// Its base URL (ending in `/v1`), for `OPENAI_BASE_URL`.
    pub base_url: String,
}

/// `GET /v1/models` as OpenAI answers it: the list with a key, 401 without one.
async fn models(headers: axum::http::HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    let keyed = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7);
    if !keyed {
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": {"message": "You didn't provide an API key.", "type": "invalid_request_error"}})),
        )
            .into_response();
    }
    axum::Json(serde_json::json!({"object": "list", "data": [
        {"id": "gpt-4o", "object": "model", "created": 1_715_367_049, "owned_by": "system"}
    ]}))
    .into_response()
}

impl FakeChat {
    /// Starts the server (echoing `You said: …` when the script is empty).
    pub fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(complete))
            .route("/v1/models", axum::routing::get(models))
            .route("/v1/embeddings", post(embeddings))
            .with_state(inner.clone());
        let addr = crate::testing::serve_on_own_thread(app);
        Self {
            inner,
            base_url: format!("http://{addr}/v1"),
        }
    }

    /// Answers to give, in order, before the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().expect("lock").script.extend(replies);
    }

    /// The answer once the script is used up (default: the echo).
    pub fn otherwise(&self, reply: Reply) {
        self.inner.lock().expect("lock").otherwise = Some(reply);
    }

    /// Groups of words the embeddings read as one meaning (e.g. `["open", "hours", "start"]`).
    pub fn meanings(&self, groups: &[&[&str]]) {
        self.inner.lock().expect("lock").meanings = groups
            .iter()
            .map(|g| g.iter().map(|w| w.to_lowercase()).collect())
            .collect();
    }

    /// How embeddings requests are answered from now on: `Some(Reply::Status(500))` fails them,
    /// `Some(Reply::Slow(d, _))` answers after `d`; `None`, vectors at once.
    pub fn embeddings_reply(&self, reply: Option<Reply>) {
        self.inner.lock().expect("lock").embeddings = reply;
    }

    /// Every text embeddings were asked for, oldest first.
    pub fn embedded(&self) -> Vec<String> {
        self.inner.lock().expect("lock").embedded.clone()
    }

    /// Every chat request body received, oldest first.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.inner.lock().expect("lock").requests.clone()
    }
}

/// An error body as OpenAI sends it.
pub fn openai_error(status: u16, message: &str) -> Response {
    let body = serde_json::json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}});
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

/// A chat completion answering `text`, with fixed usage (100 prompt, 20 completion tokens).
pub fn completion(text: &str) -> Response {
    axum::Json(serde_json::json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": "gpt-4o-2024-08-06",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        "system_fingerprint": "fp_fake"
    }))
    .into_response()
}

/// The text of the last user message (string content or the text parts).
pub fn last_user_text(body: &serde_json::Value) -> String {
    let Some(messages) = body["messages"].as_array() else {
        return String::new();
    };
    let Some(user) = messages.iter().rev().find(|m| m["role"] == "user") else {
        return String::new();
    };
    match &user["content"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

async fn complete(
    State(inner): State<Arc<Mutex<Inner>>>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> Response {
    let reply = {
        let mut i = inner.lock().expect("lock");
        i.requests.push(body.clone());
        i.script.pop_front().or_else(|| i.otherwise.clone())
    };
    match reply {
        None => completion(&format!("You said: {}", last_user_text(&body))),
        Some(Reply::Text(t)) => completion(&t),
        Some(Reply::Status(s)) => {
            openai_error(s, "The server had an error while processing your request.")
        }
        Some(Reply::RateLimited(after)) => {
            let mut r = openai_error(429, "Rate limit reached for requests");
            r.headers_mut()
                .insert("retry-after", after.to_string().parse().expect("header"));
            r
        }
        Some(Reply::Slow(d, t)) => {
            tokio::time::sleep(d).await;
            completion(&t)
        }
    }
}

/// The fake's vector of `text`: one dimension per group of synonyms its words belong to, the
/// other words hashed over the rest (lightly: they tell less).
fn vector(text: &str, meanings: &[Vec<String>]) -> Vec<f32> {
    let mut v = vec![0.0f32; DIMS];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = word.to_lowercase();
        match meanings.iter().position(|g| g.contains(&word)) {
            Some(g) => v[g % DIMS] += 1.0,
            None => {
                let h = word
                    .bytes()
                    .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
                let free = DIMS - meanings.len().min(DIMS - 1);
                v[DIMS - 1 - (h as usize % free)] += 0.3;
            }
        }
    }
    v
}

async fn embeddings(
    State(inner): State<Arc<Mutex<Inner>>>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> Response {
    let texts: Vec<String> = match &body["input"] {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    if texts.is_empty() || texts.iter().any(String::is_empty) {
        return openai_error(
            400,
            "'input' must be a non-empty string or array of strings",
        );
    }
    let (reply, meanings) = {
        let mut i = inner.lock().expect("lock");
        i.embedded.extend(texts.iter().cloned());
        (i.embeddings.clone(), i.meanings.clone())
    };
    match reply {
        Some(Reply::Status(s)) => return openai_error(s, "The server had an error."),
        Some(Reply::Slow(d, _)) => tokio::time::sleep(d).await,
        _ => {}
    }
    let data: Vec<serde_json::Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| serde_json::json!({"object": "embedding", "index": i, "embedding": vector(t, &meanings)}))
        .collect();
    let tokens: usize = texts.iter().map(|t| t.split_whitespace().count()).sum();
    axum::Json(serde_json::json!({
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    }))
    .into_response()
}
