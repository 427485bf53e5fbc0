//! A local Graph API speaking the Cloud API's shapes: the phone number's record (token
//! check), `POST /{phone-number-id}/messages` (texts, read marks with typing), media
//! (`GET /{media-id}` then the download URL, both with the access token). Answers to sends can
//! be scripted (errors as Meta words them); every request is recorded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub const PHONE_NUMBER_ID: &str = "106540352242922";
pub const TOKEN: &str = "EAAtest-access-token";
pub const VERSION: &str = "v26.0";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub authorization: String,
    pub body: serde_json::Value,
}

#[derive(Default)]
struct Inner {
    base: String,
    sends: VecDeque<(u16, serde_json::Value)>,
    media: HashMap<String, (String, Vec<u8>)>,
    media_failures: VecDeque<u16>,
    seen: Vec<Seen>,
    next: u64,
}

#[derive(Clone)]
pub struct FakeGraph {
    inner: Arc<Mutex<Inner>>,
    /// `WA_CLOUD_GRAPH_URL` (the version included).
    pub url: String,
}

/// Meta's error body.
pub fn graph_error(code: i64, message: &str) -> serde_json::Value {
    serde_json::json!({"error": {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": message},
        "fbtrace_id": "AbCdEfGh123"
    }})
}

/// The caller's `Authorization`, when it carries the access token.
fn authorized(headers: &HeaderMap) -> Option<String> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    (auth == format!("Bearer {TOKEN}")).then(|| auth.to_owned())
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(graph_error(
            190,
            "Invalid OAuth access token - Cannot parse access token",
        )),
    )
        .into_response()
}

impl FakeGraph {
    pub fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .route(&format!("/{VERSION}/{{id}}"), get(object))
            .route(&format!("/{VERSION}/{{id}}/messages"), post(messages))
            .route("/download/{id}", get(download))
            .with_state(inner.clone());
        let addr = shared::testing::serve_on_own_thread(app);
        let base = format!("http://{addr}");
        inner.lock().unwrap().base = base.clone();
        Self {
            inner,
            url: format!("{base}/{VERSION}"),
        }
    }

    /// The next sends get these answers (status, body), in order; then success.
    pub fn script_sends(&self, answers: impl IntoIterator<Item = (u16, serde_json::Value)>) {
        self.inner.lock().unwrap().sends.extend(answers);
    }

    /// Media `id` holds `bytes` of `mime`.
    pub fn add_media(&self, id: &str, mime: &str, bytes: Vec<u8>) {
        self.inner
            .lock()
            .unwrap()
            .media
            .insert(id.to_owned(), (mime.to_owned(), bytes));
    }

    /// The next media lookups fail with these HTTP statuses.
    pub fn fail_media(&self, statuses: impl IntoIterator<Item = u16>) {
        self.inner.lock().unwrap().media_failures.extend(statuses);
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.inner.lock().unwrap().seen.clone()
    }

    /// The `POST …/messages` bodies so far.
    pub fn posted(&self) -> Vec<serde_json::Value> {
        self.seen()
            .into_iter()
            .filter(|s| s.path.ends_with("/messages"))
            .map(|s| s.body)
            .collect()
    }
}

async fn object(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(auth) = authorized(&headers) else {
        return unauthorized();
    };
    let mut g = inner.lock().unwrap();
    g.seen.push(Seen {
        path: format!("/{VERSION}/{id}"),
        authorization: auth,
        body: serde_json::Value::Null,
    });
    if id == PHONE_NUMBER_ID {
        return Json(serde_json::json!({"id": PHONE_NUMBER_ID})).into_response();
    }
    if let Some(status) = g.media_failures.pop_front() {
        let code = StatusCode::from_u16(status).unwrap();
        return (code, Json(graph_error(131_016, "Service unavailable"))).into_response();
    }
    match g.media.get(&id) {
        Some((mime, bytes)) => Json(serde_json::json!({
            "messaging_product": "whatsapp",
            "url": format!("{}/download/{id}", g.base),
            "mime_type": mime,
            "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "file_size": bytes.len().to_string(),
            "id": id,
        }))
        .into_response(),
        None => (
            StatusCode::BAD_REQUEST,
            Json(graph_error(
                100,
                "Unsupported get request. Object does not exist",
            )),
        )
            .into_response(),
    }
}

async fn messages(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    let Some(auth) = authorized(&headers) else {
        return unauthorized();
    };
    let mut g = inner.lock().unwrap();
    g.seen.push(Seen {
        path: format!("/{VERSION}/{id}/messages"),
        authorization: auth,
        body: body.clone(),
    });
    if id != PHONE_NUMBER_ID || body["messaging_product"] != "whatsapp" {
        return (
            StatusCode::BAD_REQUEST,
            Json(graph_error(100, "Invalid parameter")),
        )
            .into_response();
    }
    if body["status"] == "read" {
        return Json(serde_json::json!({"success": true})).into_response();
    }
    if let Some((status, answer)) = g.sends.pop_front() {
        return (StatusCode::from_u16(status).unwrap(), Json(answer)).into_response();
    }
    g.next += 1;
    let to = body["to"].as_str().unwrap_or("").to_owned();
    Json(serde_json::json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to}],
        "messages": [{"id": format!("wamid.FAKE{}", g.next)}],
    }))
    .into_response()
}

async fn download(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if authorized(&headers).is_none() {
        return unauthorized();
    }
    let g = inner.lock().unwrap();
    match g.media.get(&id) {
        Some((mime, bytes)) => ([("content-type", mime.clone())], bytes.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
