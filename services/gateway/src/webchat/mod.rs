//! The `webchat` transport: a chat page at `/chat` and its JSON API on the public listener.
//!
//! - `POST /chat/api/visitors` → `201 {"visitor", "token"}` (visitor mode; with
//!   `{"user_id", "user_hash"}` the business's own user, the same visitor on every device).
//! - `POST /chat/api/{contact}/messages`: JSON `{"text"}` or multipart (`file`, `caption`) →
//!   `202 {"id"}`; bad input → 4xx `{"error"}`; Redis down → 503.
//! - `GET /chat/api/{contact}/messages`: the conversation, oldest first.
//! - `GET /chat/api/{contact}/events`: server-sent events (`message`, and `typing`), resuming
//!   after `Last-Event-ID` (or `?after=<id>`; `?after=0` replays everything).
//!
//! In demo mode (`WEBCHAT_DEMO=true`, loopback only) a `{contact}` stands for that phone
//! number and nothing is checked; otherwise it is a visitor ([`visitor`]): a user of its own
//! (never an admin, never a phone number), and every call needs that visitor's token (or
//! `WEBCHAT_TOKEN`, the server-to-server key).

mod history;
pub mod visitor;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use secrecy::SecretString;
use serde::Deserialize;
use shared::http::json_error;
use shared::phone::Phone;
use shared::proto::{Identity, identity, inbound, outbound};

pub use history::{ChatMessage, History, Note};

use crate::config::{Config, TransportKind};
use crate::ingest::{Incoming, IngestError, MediaBytes, Outcome};
use crate::media::{MediaError, sniff};
use crate::transport::{OutgoingText, ReceiptStatus, SendError, Sent, SessionState, Transport};

const PAGE: &str = include_str!("page.html");

/// A refused request: a status and a reason, answered as `{"error": reason}`.
#[derive(Debug)]
pub struct Reject(StatusCode, String);

impl Reject {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self(status, reason.into())
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        json_error(self.0, self.1)
    }
}
/// Longest text message accepted (bytes).
const MAX_TEXT_BYTES: usize = 64 * 1024;

/// The largest caption of a photo or voice note (WhatsApp allows 1,024 characters).
const MAX_CAPTION_BYTES: usize = 4 * 1024;

/// What the history keeps of a message a rate limit refused.
const LIMITED_TEXT_CHARS: usize = 200;

/// `text` cut to `max` characters, marked when cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// The web chat transport and its HTTP API.
#[derive(Clone)]
pub struct Webchat {
    inner: Arc<Inner>,
}

struct Inner {
    history: History,
    ingest: crate::ingest::Ingest,
    /// Demo mode: contacts stand for phone numbers (the public listener is loopback).
    local: bool,
    visitors: Visitors,
    max_media: u64,
    /// Origins allowed to call the API from their pages (CORS).
    origins: Vec<String>,
    /// Ends open event streams (the public listener's graceful shutdown waits for them).
    shutdown: tokio_util::sync::CancellationToken,
    /// Open event streams, and the caps.
    streams: std::sync::Mutex<OpenStreams>,
    max_streams: usize,
    max_streams_per_contact: usize,
    /// File uploads being read.
    uploads: Arc<tokio::sync::Semaphore>,
}

/// Visitor mode's keys and the limit on creating visitors.
struct Visitors {
    conn: redis::aio::ConnectionManager,
    /// Where the generated server key is kept when `WEBCHAT_SECRET` is unset.
    secret_key: String,
    keys_prefix: shared::bus::Keys,
    secret: Option<SecretString>,
    server_token: Option<SecretString>,
    identity: Option<SecretString>,
    /// Loaded on first use (the generated key needs Redis).
    keys: tokio::sync::OnceCell<visitor::Keys>,
    per_hour: u32,
    proxy_header: Option<axum::http::HeaderName>,
}

impl Visitors {
    /// The server's visitor keys: `WEBCHAT_SECRET`, or the key kept in Redis — created by
    /// the first replica that asks, read by the others.
    async fn keys(&self) -> Result<&visitor::Keys, Reject> {
        self.keys
            .get_or_try_init(|| async {
                let secret = match &self.secret {
                    Some(s) => s.clone(),
                    None => SecretString::from(
                        shared::redis_conn::shared_secret(&mut self.conn.clone(), &self.secret_key)
                            .await
                            .map_err(|e| redis_down(&e))?,
                    ),
                };
                Ok(visitor::Keys::new(
                    secret,
                    self.server_token.clone(),
                    self.identity.clone(),
                ))
            })
            .await
    }

    /// The address a request came from: the trusted proxy's header (its last entry, the one
    /// the proxy added), else the connection's peer.
    fn client(&self, headers: &HeaderMap, peer: Option<std::net::SocketAddr>) -> String {
        if let Some(name) = &self.proxy_header
            && let Some(v) = headers.get(name).and_then(|v| v.to_str().ok())
            && let Some(last) = v.rsplit(',').map(str::trim).find(|p| !p.is_empty())
        {
            return last.to_owned();
        }
        peer.map_or_else(|| "unknown".to_owned(), |p| p.ip().to_string())
    }

    /// Counts an anonymous visitor created from `client`; `Err(seconds)` when over the limit.
    async fn count_creation(&self, keys: &visitor::Keys, client: &str) -> Result<(), Reject> {
        if self.per_hour == 0 {
            return Ok(());
        }
        let key = self
            .keys_prefix
            .key(&format!("wc:vc:{}", keys.key_hash(client)));
        let (n, ttl_ms): (u64, i64) = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(0)
            .arg("PX")
            .arg(3_600_000)
            .arg("NX")
            .ignore()
            .cmd("INCR")
            .arg(&key)
            .cmd("PTTL")
            .arg(&key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| redis_down(&e))?;
        if n > u64::from(self.per_hour) {
            metrics::counter!(crate::metrics::REJECTED, "reason" => "visitor_limit").increment(1);
            let mins = (ttl_ms.max(0) as u64).div_ceil(60_000).max(1);
            return Err(Reject::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many new chats from this address (WEBCHAT_VISITORS_PER_HOUR); try again in {mins} min"
                ),
            ));
        }
        Ok(())
    }
}

/// Open event streams: per conversation, and in all.
#[derive(Default)]
struct OpenStreams {
    per_contact: std::collections::HashMap<String, usize>,
    total: usize,
}

/// An open event stream's place under the caps, given back when the stream ends.
struct StreamSlot {
    wc: Webchat,
    contact: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.wc.inner.streams.lock().expect("streams lock");
        open.total -= 1;
        if let Some(n) = open.per_contact.get_mut(&self.contact) {
            *n -= 1;
            if *n == 0 {
                open.per_contact.remove(&self.contact);
            }
        }
    }
}

impl Webchat {
    /// A place for one more event stream of `contact`, unless a cap is reached.
    fn open_stream(&self, contact: &str) -> Result<StreamSlot, Reject> {
        let inner = &self.inner;
        let mut open = inner.streams.lock().expect("streams lock");
        let n = open.per_contact.get(contact).copied().unwrap_or(0);
        if n >= inner.max_streams_per_contact {
            return Err(Reject::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "this conversation has {n} event streams open already (WEBCHAT_MAX_STREAMS_PER_CONTACT)"
                ),
            ));
        }
        if open.total >= inner.max_streams {
            return Err(Reject::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many event streams open on this server (WEBCHAT_MAX_STREAMS); try again shortly",
            ));
        }
        open.total += 1;
        open.per_contact.insert(contact.to_owned(), n + 1);
        Ok(StreamSlot {
            wc: self.clone(),
            contact: contact.to_owned(),
        })
    }
}

impl Webchat {
    pub fn new(
        bus: &shared::bus::Bus,
        cfg: &Config,
        ingest: crate::ingest::Ingest,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                history: History::new(bus.connection(), bus.keys().clone(), cfg.history_ttl),
                ingest,
                local: cfg.webchat_is_local(),
                visitors: Visitors {
                    conn: bus.connection(),
                    secret_key: bus.keys().key("wc:secret"),
                    keys_prefix: bus.keys().clone(),
                    secret: cfg.webchat_secret.clone(),
                    server_token: cfg.webchat_token.clone(),
                    identity: cfg.webchat_identity_secret.clone(),
                    keys: tokio::sync::OnceCell::new(),
                    per_hour: cfg.visitors_per_hour,
                    proxy_header: cfg.trusted_proxy_header.clone(),
                },
                max_media: cfg.max_media_bytes,
                origins: cfg.webchat_origins.clone(),
                shutdown,
                streams: std::sync::Mutex::default(),
                max_streams: cfg.max_streams,
                max_streams_per_contact: cfg.max_streams_per_contact,
                uploads: Arc::new(tokio::sync::Semaphore::new(cfg.max_uploads)),
            }),
        }
    }

    pub fn history(&self) -> &History {
        &self.inner.history
    }

    /// The public routes.
    pub fn routes(&self) -> Router {
        // Bodies are read with their own limit (a JSON 413), not axum's default 2 MB.
        Router::new()
            .route("/chat", get(page))
            .route("/chat/", get(page))
            .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
            .route(
                "/chat/api/{contact}/messages",
                get(list_messages).post(post_message),
            )
            .route("/chat/api/{contact}/events", get(events))
            .route("/chat/api/visitors", axum::routing::post(create_visitor))
            .layer(axum::extract::DefaultBodyLimit::max(
                self.inner.max_media as usize + 256 * 1024,
            ))
            .layer(self.cors())
            .with_state(self.clone())
    }

    /// CORS for a chat widget on the business's own website (`WEBCHAT_ALLOWED_ORIGINS`). The API
    /// uses a bearer token, never cookies, so no credentials are allowed cross-origin.
    fn cors(&self) -> tower_http::cors::CorsLayer {
        use axum::http::{HeaderName, HeaderValue, Method};
        use tower_http::cors::{AllowOrigin, CorsLayer};
        let origins = &self.inner.origins;
        if origins.is_empty() {
            return CorsLayer::new();
        }
        let allow = if origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        };
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("idempotency-key"),
            ])
            .max_age(std::time::Duration::from_secs(600))
    }

    /// Checks who is calling: in demo mode normalises the phone number `{contact}`; otherwise
    /// checks the bearer token against the visitor `{contact}`.
    async fn authorize(&self, headers: &HeaderMap, contact: &str) -> Result<String, Reject> {
        self.inner
            .history
            .ready()
            .await
            .map_err(|e| redis_down(&e))?;
        if !self.inner.local {
            let keys = self.inner.visitors.keys().await?;
            let bearer = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            return match keys.check(bearer, contact) {
                Ok(()) => Ok(contact.to_owned()),
                Err(visitor::Denied::Unauthenticated) => Err(Reject::new(
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong token (Authorization: Bearer <token from POST /chat/api/visitors>)",
                )),
                Err(visitor::Denied::NotFound) => Err(Reject::new(
                    StatusCode::NOT_FOUND,
                    "no such conversation for this token",
                )),
            };
        }
        let bad = || {
            Reject::new(
                StatusCode::BAD_REQUEST,
                "contact must be a phone number in digits with its country code, like 15550001111",
            )
        };
        if !contact.chars().all(|c| c.is_ascii_digit() || c == '+') {
            return Err(bad());
        }
        Phone::parse(contact)
            .map(|p| p.digits().to_owned())
            .map_err(|_| bad())
    }

    /// The identity a conversation speaks with: the phone number in demo mode, else the
    /// visitor.
    fn identities(&self, contact: &str) -> Vec<Identity> {
        if self.inner.local {
            vec![Identity {
                kind: identity::Kind::Phone as i32,
                value: format!("+{contact}"),
            }]
        } else {
            vec![Identity {
                kind: identity::Kind::Webchat as i32,
                value: contact.to_owned(),
            }]
        }
    }
}

#[async_trait::async_trait]
impl Transport for Webchat {
    fn kind(&self) -> TransportKind {
        TransportKind::Webchat
    }

    fn state(&self) -> SessionState {
        SessionState::Connected
    }

    fn chat_for(&self, identities: &[Identity]) -> Option<String> {
        identities.iter().find_map(|i| match i.kind() {
            // A phone number reaches a web chat contact only where contacts are phone numbers.
            identity::Kind::Phone if self.inner.local => {
                Phone::parse(&i.value).ok().map(|p| p.digits().to_owned())
            }
            identity::Kind::Webchat => Some(i.value.clone()),
            _ => None,
        })
    }

    /// Sending is appending to the history, once per id ([`History::append_once`]).
    fn sends_once(&self) -> bool {
        true
    }

    /// Shown with the inbound's history entry, cleared with the reply's.
    fn typing_with_messages(&self) -> bool {
        true
    }

    async fn send_text(&self, msg: &OutgoingText) -> Result<Sent, SendError> {
        let contact = if self.inner.local {
            Phone::parse(&msg.chat_id)
                .ok()
                .map(|p| p.digits().to_owned())
                .filter(|c| *c == msg.chat_id)
        } else {
            visitor::looks_like_visitor(&msg.chat_id).then(|| msg.chat_id.clone())
        }
        .ok_or_else(|| SendError::Permanent("not a web chat contact".to_owned()))?;
        let kind = match msg.kind {
            outbound::Kind::Notice => "notice",
            outbound::Kind::Alert => "alert",
            outbound::Kind::Reply | outbound::Kind::Unspecified => "reply",
        };
        let m = ChatMessage {
            id: msg.id.clone(),
            direction: "out".to_owned(),
            kind: kind.to_owned(),
            text: msg.text.clone(),
            in_reply_to: (!msg.in_reply_to.is_empty()).then(|| msg.in_reply_to.clone()),
            at: now_rfc3339(),
        };
        let appended = self
            .inner
            .history
            .append_once(&contact, &m, msg.kind != outbound::Kind::Alert, &msg.record)
            .await
            .map_err(|e| SendError::Transient(format!("web chat history unavailable: {e}")))?;
        Ok(Sent {
            transport_message_id: msg.id.clone(),
            already: !appended,
            recorded: true,
        })
    }

    async fn typing(&self, chat_id: &str, on: bool) -> Result<(), SendError> {
        self.inner
            .history
            .typing(chat_id, on)
            .await
            .map_err(|e| SendError::Transient(e.to_string()))
    }
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Millisecond)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

/// The chat page; it learns the mode from `<body data-mode>`.
async fn page(State(wc): State<Webchat>) -> impl IntoResponse {
    let mode = if wc.inner.local { "demo" } else { "visitor" };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Html(PAGE.replacen("data-mode=\"visitor\"", &format!("data-mode=\"{mode}\""), 1)),
    )
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewVisitor {
    user_id: Option<String>,
    user_hash: Option<String>,
}

/// `POST /chat/api/visitors`: a new visitor (anonymous, limited per client address), or the
/// visitor of a user the business vouches for.
async fn create_visitor(State(wc): State<Webchat>, request: Request) -> Response {
    match new_visitor(&wc, request).await {
        Ok((visitor, token)) => (
            StatusCode::CREATED,
            [(header::CACHE_CONTROL, "no-store")],
            Json(serde_json::json!({"visitor": visitor, "token": token})),
        )
            .into_response(),
        Err(r) => r.into_response(),
    }
}

async fn new_visitor(wc: &Webchat, request: Request) -> Result<(String, String), Reject> {
    if wc.inner.local {
        return Err(Reject::new(
            StatusCode::NOT_FOUND,
            "visitors are off in demo mode (WEBCHAT_DEMO=true): a conversation is a phone number",
        ));
    }
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 4096)
        .await
        .map_err(|_| Reject::new(StatusCode::PAYLOAD_TOO_LARGE, "the body is over 4 KB"))?;
    let asked: NewVisitor = if body.iter().all(u8::is_ascii_whitespace) {
        NewVisitor::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            Reject::new(
                StatusCode::BAD_REQUEST,
                format!("expected no body, or JSON {{\"user_id\", \"user_hash\"}}: {e}"),
            )
        })?
    };
    let v = &wc.inner.visitors;
    let keys = v.keys().await?;
    match (asked.user_id, asked.user_hash) {
        (None, None) => {
            v.count_creation(keys, &v.client(&headers, peer)).await?;
            Ok(keys.new_visitor())
        }
        (Some(user_id), Some(user_hash)) => {
            if !keys.verifies_users() {
                return Err(Reject::new(
                    StatusCode::BAD_REQUEST,
                    "user_id is not accepted: this server has no WEBCHAT_IDENTITY_SECRET",
                ));
            }
            if user_id.is_empty() || user_id.len() > 256 {
                return Err(Reject::new(
                    StatusCode::BAD_REQUEST,
                    "user_id must be 1 to 256 bytes",
                ));
            }
            keys.user_visitor(&user_id, &user_hash).ok_or_else(|| {
                Reject::new(
                    StatusCode::UNAUTHORIZED,
                    "user_hash is not HMAC-SHA256(WEBCHAT_IDENTITY_SECRET, user_id) in hex",
                )
            })
        }
        _ => Err(Reject::new(
            StatusCode::BAD_REQUEST,
            "user_id and user_hash go together",
        )),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<String>,
    before: Option<String>,
}

/// The conversation, oldest first: the newest `limit` messages (at most and by default
/// 1,000), older than the message `before` when paging back.
async fn list_messages(
    State(wc): State<Webchat>,
    Path(contact): Path<String>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let contact = match wc.authorize(&headers, &contact).await {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => history::MAX_PAGE,
        Some(Ok(n)) if (1..=history::MAX_PAGE).contains(&n) => n,
        Some(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("limit must be a number from 1 to {}", history::MAX_PAGE),
            );
        }
    };
    let before = q.before.filter(|b| !b.is_empty());
    if before.as_ref().is_some_and(|b| b.len() > 200) {
        return json_error(StatusCode::BAD_REQUEST, "before must be a message id");
    }
    match wc
        .inner
        .history
        .page(&contact, limit, before.as_deref())
        .await
    {
        Ok(Some(list)) => Json(list).into_response(),
        Ok(None) => json_error(
            StatusCode::NOT_FOUND,
            "no message with the id given in before (it may have expired)",
        ),
        Err(e) => unavailable(&e),
    }
}

fn unavailable(e: &dyn std::fmt::Display) -> Response {
    redis_down(e).into_response()
}

fn redis_down(e: &dyn std::fmt::Display) -> Reject {
    tracing::warn!(error = %e, "web chat: Redis unavailable");
    Reject::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the chat is temporarily unavailable; try again shortly",
    )
}

#[derive(Deserialize)]
struct TextBody {
    text: Option<serde_json::Value>,
}

/// What a POST carried, validated.
struct Posted {
    kind: inbound::Kind,
    text: String,
    media: Option<MediaBytes>,
}

async fn post_message(
    State(wc): State<Webchat>,
    Path(contact): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let contact = match wc.authorize(&headers, &contact).await {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let limit = wc.inner.max_media;
    let too_large = || {
        metrics::counter!(crate::metrics::REJECTED, "reason" => "too_large").increment(1);
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            MediaError::TooLarge {
                limit_mb: limit / (1024 * 1024),
            }
            .to_string(),
        )
    };
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit + 256 * 1024)
    {
        return too_large();
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let posted = if content_type.starts_with("application/json") {
        read_json(request).await
    } else if content_type.starts_with("multipart/form-data") {
        // Uploads are read whole into memory: a bounded number at once.
        let Ok(_upload) = wc.inner.uploads.clone().try_acquire_owned() else {
            metrics::counter!(crate::metrics::REJECTED, "reason" => "busy").increment(1);
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many uploads in progress (WEBCHAT_MAX_UPLOADS); try again shortly",
            );
        };
        read_multipart(request, limit).await
    } else {
        Err(Reject::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/json {\"text\": \"...\"} or multipart/form-data with a file part",
        ))
    };
    let posted = match posted {
        Ok(p) => p,
        Err(r) => {
            if r.0 == StatusCode::PAYLOAD_TOO_LARGE {
                if r.1 == "too large" {
                    return too_large();
                }
                // A text or caption over its limit: its own reason.
                metrics::counter!(crate::metrics::REJECTED, "reason" => "too_large").increment(1);
            }
            if r.0 == StatusCode::BAD_REQUEST {
                metrics::counter!(crate::metrics::REJECTED, "reason" => "bad_request").increment(1);
            }
            return r.into_response();
        }
    };
    let message_id = shared::ids::new_id();
    // An Idempotency-Key makes a retried POST a duplicate instead of a second message.
    let transport_message_id = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map_or_else(|| message_id.clone(), |k| format!("{contact}:{k}"));
    let in_msg = ChatMessage {
        id: message_id.clone(),
        direction: "in".to_owned(),
        kind: posted.kind.label().to_owned(),
        text: posted.text.clone(),
        in_reply_to: None,
        at: now_rfc3339(),
    };
    let incoming = Incoming {
        transport: TransportKind::Webchat,
        transport_message_id,
        message_id: Some(message_id),
        chat_id: contact.clone(),
        identities: wc.identities(&contact),
        kind: posted.kind,
        text: posted.text,
        media: posted.media,
        sent_at_ms: 0,
        display_name: String::new(),
    };
    let history = wc.inner.history.clone();
    let outcome = wc
        .inner
        .ingest
        .accept_with(incoming, move |pipe, published| {
            if published {
                history.append_commands(pipe, &contact, &in_msg);
                history.typing_commands(pipe, &contact);
            } else {
                // Refused by a rate limit: kept short, so a flood cannot fill Redis.
                let mut short = in_msg.clone();
                short.text = shorten(&short.text, LIMITED_TEXT_CHARS);
                history.append_commands(pipe, &contact, &short);
            }
        })
        .await;
    match outcome {
        Ok(o) => {
            let status = match &o {
                Outcome::Published { .. } => "accepted",
                Outcome::Duplicate { .. } => "duplicate",
                Outcome::Limited { .. } => "rate_limited",
            };
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({"id": o.message_id(), "status": status})),
            )
                .into_response()
        }
        Err(IngestError::Media(e)) => media_error(&e),
        Err(IngestError::Unavailable(e)) => unavailable(&e),
    }
}

fn media_error(e: &MediaError) -> Response {
    media_reject(e).into_response()
}

fn media_reject(e: &MediaError) -> Reject {
    let (status, reason) = match e {
        MediaError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        MediaError::Unsupported(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_type"),
        MediaError::Corrupt(_) | MediaError::Empty => {
            (StatusCode::UNPROCESSABLE_ENTITY, "corrupt_media")
        }
    };
    metrics::counter!(crate::metrics::REJECTED, "reason" => reason).increment(1);
    Reject::new(status, e.to_string())
}

async fn read_json(request: Request) -> Result<Posted, Reject> {
    let body = axum::body::to_bytes(request.into_body(), MAX_TEXT_BYTES)
        .await
        .map_err(|_| {
            Reject::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the message is longer than 64 KB",
            )
        })?;
    let parsed: TextBody = serde_json::from_slice(&body).map_err(|e| {
        Reject::new(
            StatusCode::BAD_REQUEST,
            format!("expected JSON like {{\"text\": \"...\"}}: {e}"),
        )
    })?;
    let text = match parsed.text {
        Some(serde_json::Value::String(s)) => s,
        Some(_) => {
            return Err(Reject::new(
                StatusCode::BAD_REQUEST,
                "\"text\" must be a string",
            ));
        }
        None => return Err(Reject::new(StatusCode::BAD_REQUEST, "\"text\" is required")),
    };
    let text = text.trim().to_owned();
    if text.is_empty() {
        return Err(Reject::new(StatusCode::BAD_REQUEST, "\"text\" is empty"));
    }
    Ok(Posted {
        kind: inbound::Kind::Text,
        text,
        media: None,
    })
}

async fn read_multipart(request: Request, limit: u64) -> Result<Posted, Reject> {
    let mut mp = Multipart::from_request(request, &())
        .await
        .map_err(|e| Reject::new(StatusCode::BAD_REQUEST, format!("bad multipart body: {e}")))?;
    let mut file: Option<(Vec<u8>, String)> = None;
    let mut caption = String::new();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return Err(Reject::new(
                    e.status(),
                    format!("bad multipart body: {}", e.body_text()),
                ));
            }
        };
        match field.name() {
            Some("file") => {
                let declared = field.content_type().unwrap_or("").to_owned();
                let bytes = field.bytes().await.map_err(|e| {
                    Reject::new(
                        e.status(),
                        format!("cannot read the file: {}", e.body_text()),
                    )
                })?;
                if bytes.len() as u64 > limit {
                    return Err(Reject::new(StatusCode::PAYLOAD_TOO_LARGE, "too large"));
                }
                file = Some((bytes.to_vec(), declared));
            }
            Some("caption") => {
                caption = field
                    .text()
                    .await
                    .map_err(|e| {
                        Reject::new(
                            StatusCode::BAD_REQUEST,
                            format!("bad caption: {}", e.body_text()),
                        )
                    })?
                    .trim()
                    .to_owned();
                if caption.len() > MAX_CAPTION_BYTES {
                    return Err(Reject::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the caption is longer than 4 KB",
                    ));
                }
            }
            _ => {}
        }
    }
    let Some((bytes, declared)) = file else {
        return Err(Reject::new(
            StatusCode::BAD_REQUEST,
            "multipart body needs a \"file\" part (audio or image)",
        ));
    };
    let sniffed = sniff(&bytes, &declared).map_err(|e| media_reject(&e))?;
    Ok(Posted {
        kind: sniffed.kind,
        text: caption,
        media: Some(MediaBytes {
            bytes,
            mime: sniffed.mime,
        }),
    })
}

#[derive(Deserialize)]
struct EventsQuery {
    after: Option<String>,
}

fn valid_entry_id(id: &str) -> bool {
    id == "0"
        || id.split_once('-').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        })
}

async fn events(
    State(wc): State<Webchat>,
    Path(contact): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Response {
    let contact = match wc.authorize(&headers, &contact).await {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(q.after);
    let last = match resume {
        Some(id) if valid_entry_id(&id) => {
            if id == "0" {
                "0-0".to_owned()
            } else {
                id
            }
        }
        Some(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "Last-Event-ID must be an event id this stream sent (like 1700000000000-0)",
            );
        }
        None => match wc.inner.history.last_id(&contact).await {
            Ok(id) => id,
            Err(e) => return unavailable(&e),
        },
    };
    let slot = match wc.open_stream(&contact) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    use futures_util::StreamExt;
    let shutdown = wc.inner.shutdown.clone().cancelled_owned();
    let stream = sse_stream(wc, contact, last, slot).take_until(shutdown);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

struct SseState {
    wc: Webchat,
    contact: String,
    last: String,
    pending: std::collections::VecDeque<Event>,
    notes: history::Listener,
    /// Held while the stream is open.
    _slot: StreamSlot,
    /// The last read returned less than a page: nothing newer until the next notification
    /// (one arriving meanwhile is queued in `notes`), so no read before waiting.
    caught_up: bool,
}

/// Entries read from the history at a time.
const READ_PAGE: usize = 100;

fn sse_stream(
    wc: Webchat,
    contact: String,
    last: String,
    slot: StreamSlot,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> {
    let notes = wc
        .inner
        .history
        .listen(&wc.inner.history.contact_hash(&contact));
    let state = SseState {
        wc,
        contact,
        last,
        pending: std::collections::VecDeque::new(),
        notes,
        _slot: slot,
        caught_up: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(ev) = s.pending.pop_front() {
                return Some((Ok(ev), s));
            }
            let read = if s.caught_up {
                Ok(Vec::new())
            } else {
                s.wc.inner
                    .history
                    .after(&s.contact, Some(&s.last), READ_PAGE)
                    .await
            };
            match read {
                Ok(entries) if !entries.is_empty() => {
                    s.caught_up = entries.len() < READ_PAGE;
                    for (id, msg) in entries {
                        if msg.direction == "out" {
                            let ingest = s.wc.inner.ingest.clone();
                            let mid = msg.id.clone();
                            tokio::spawn(async move {
                                let _ = ingest
                                    .receipt(TransportKind::Webchat, &mid, ReceiptStatus::Delivered)
                                    .await;
                            });
                        }
                        let data = serde_json::to_string(&msg).expect("serialises");
                        s.pending
                            .push_back(Event::default().event("message").id(id.clone()).data(data));
                        s.last = id;
                    }
                    continue;
                }
                Ok(_) => s.caught_up = true,
                Err(e) => {
                    tracing::debug!(error = %e, "web chat events: Redis unavailable; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            // Nothing new: wait for a notification (or poll again after a while).
            // Only this contact's notifications arrive here, so any of them ends the wait.
            let deadline = tokio::time::sleep(Duration::from_secs(5));
            tokio::pin!(deadline);
            tokio::select! {
                () = &mut deadline => s.caught_up = false,
                note = s.notes.notes.recv() => match note {
                    Ok(Note::Typing(on)) => {
                        s.pending.push_back(
                            Event::default().event("typing").data(format!("{{\"on\":{on}}}")),
                        );
                    }
                    Ok(Note::Message) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        s.caught_up = false;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        deadline.as_mut().await;
                        s.caught_up = false;
                    }
                }
            }
        }
    })
}
