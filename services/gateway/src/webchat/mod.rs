//! The `webchat` transport: a chat page at `/chat` and its JSON API on the public listener.
//!
//! - `POST /chat/api/visitors` → `201 {"visitor", "token", "expires_at", "expires_in"}`
//!   (visitor mode; with `{"user_id", "user_hash"}` the business's own user, the same visitor
//!   on every device).
//! - `POST /chat/api/visitors/{visitor}/token` (with its token) → `200`, the same with a fresh
//!   token; an expired token is a `401` (`WEBCHAT_VISITOR_TOKEN_DAYS`).
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
mod messages;
mod page;
mod streams;
pub mod visitor;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shared::bus::Reason;
use shared::http::json_error;
use shared::phone::Phone;
use shared::proto::{Identity, identity, outbound};

pub use history::{ChatMessage, Direction, History, MessageKind, Note};
use messages::{list_messages, post_message};
use streams::{OpenStreams, events};
use visitor::{Visitors, create_visitor};

use crate::config::{Config, TransportKind};
use crate::transport::{OutgoingText, SendError, Sent, SessionState, Transport};

/// A refused request: a status and a reason, answered as `{"error": reason}` — with a `code`
/// too when the caller's token is refused ([`Reject::token`]).
#[derive(Debug)]
pub struct Reject(StatusCode, String, Option<&'static str>);

/// The conversation `{contact}` of a `/chat/api/{contact}/…` call, extracted only once the
/// caller may act on it ([`Webchat::authorize`]): normalised phone digits in demo mode, else
/// the visitor id.
pub(super) struct Conversation(pub String);

impl axum::extract::FromRequestParts<Webchat> for Conversation {
    type Rejection = Reject;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        wc: &Webchat,
    ) -> Result<Self, Reject> {
        let axum::extract::Path(contact) =
            axum::extract::Path::<String>::from_request_parts(parts, wc)
                .await
                .map_err(|e| Reject::new(StatusCode::BAD_REQUEST, e.body_text()))?;
        wc.authorize(&parts.headers, &contact).await.map(Self)
    }
}

impl Reject {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self(status, reason.into(), None)
    }

    /// The caller's token refused, with a `code` a client acts on: `token_expired` (start a new
    /// visitor, or renew before expiry next time) or `token_unknown` (a token this server does
    /// not take for this visitor: its key changed, or the visitor is another's). Only these
    /// make the chat page start a new visitor; any other 401 or 404 (a proxy's, say) does not.
    fn token(status: StatusCode, reason: &str, code: &'static str) -> Self {
        Self(status, reason.to_owned(), Some(code))
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        match self.2 {
            None => json_error(self.0, self.1),
            Some(code) => (
                self.0,
                axum::Json(serde_json::json!({"error": self.1, "code": code})),
            )
                .into_response(),
        }
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
    receipts: crate::receipts::Receipts,
    /// Demo mode: contacts stand for phone numbers (the public listener is loopback).
    local: bool,
    visitors: Visitors,
    max_media: u64,
    /// `MAX_INPUT_CHARS`: a longer text or caption is refused (413) before anything is stored.
    max_input_chars: usize,
    /// Origins allowed to call the API from their pages (CORS).
    origins: Vec<String>,
    /// The page's Content-Security-Policy.
    csp: axum::http::HeaderValue,
    /// Ends open event streams (the public listener's graceful shutdown waits for them).
    shutdown: tokio_util::sync::CancellationToken,
    /// Open event streams, and the caps.
    streams: std::sync::Mutex<OpenStreams>,
    max_streams: usize,
    max_streams_per_contact: usize,
    max_streams_per_address: usize,
    /// An event stream ends after this long (the page reconnects).
    stream_max_life: std::time::Duration,
    /// File uploads being read.
    uploads: Arc<tokio::sync::Semaphore>,
    /// Past Redis's high-water mark: new visitors and messages are refused.
    high_water: crate::storage::HighWater,
}

impl Webchat {
    /// The web chat on `bus`, feeding `ingest`; its event streams end with `shutdown`.
    pub fn new(
        bus: &shared::bus::Bus,
        cfg: &Config,
        ingest: crate::ingest::Ingest,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                history: History::new(
                    bus.connection(),
                    bus.keys().clone(),
                    cfg.storage.history_ttl,
                    cfg.storage.unanswered_ttl,
                ),
                ingest,
                receipts: crate::receipts::Receipts::new(bus),
                local: cfg.webchat_is_local(),
                visitors: Visitors {
                    conn: bus.connection(),
                    keys_prefix: bus.keys().clone(),
                    secret: cfg.webchat_secret.clone(),
                    server_token: cfg.webchat_token.clone(),
                    identity: cfg.webchat_identity_secret.clone(),
                    keys: tokio::sync::OnceCell::new(),
                    per_hour: cfg.visitors_per_hour,
                    token_days: cfg.visitor_token_days,
                    client: crate::edge::ClientAddress::new(cfg),
                    open: cfg.visitors_open,
                },
                max_media: cfg.max_media_bytes,
                max_input_chars: cfg.storage.max_input_chars,
                origins: cfg.webchat_origins.clone(),
                csp: page::policy(&cfg.webchat_frame_ancestors),
                shutdown,
                streams: std::sync::Mutex::default(),
                max_streams: cfg.streams.max_streams,
                max_streams_per_contact: cfg.streams.max_streams_per_contact,
                max_streams_per_address: cfg.streams.max_streams_per_address,
                stream_max_life: cfg.streams.stream_max_life,
                uploads: Arc::new(tokio::sync::Semaphore::new(cfg.max_uploads)),
                high_water: crate::storage::HighWater::default(),
            }),
        }
    }

    /// The histories (the notification relay runs on them).
    pub fn history(&self) -> &History {
        &self.inner.history
    }

    /// Its view of Redis's high-water mark (a task keeps it up to date).
    pub fn high_water(&self) -> &crate::storage::HighWater {
        &self.inner.high_water
    }

    /// The public routes.
    pub fn routes(&self) -> Router {
        // Bodies are read with their own limit (a JSON 413), not axum's default 2 MB.
        Router::new()
            .route("/chat", get(page::page))
            .route("/chat/", get(page::page))
            .route("/chat/page.css", get(page::style))
            .route("/chat/page.js", get(page::script))
            .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
            .route(
                "/chat/api/{contact}/messages",
                get(list_messages).post(post_message),
            )
            .route("/chat/api/{contact}/events", get(events))
            .route("/chat/api/visitors", axum::routing::post(create_visitor))
            .route(
                "/chat/api/visitors/{visitor}/token",
                axum::routing::post(visitor::renew_token),
            )
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
            return match keys.check(bearer, contact, visitor::now()) {
                Ok(()) => Ok(contact.to_owned()),
                Err(visitor::Denied::Unauthenticated) => Err(Reject::token(
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong token (Authorization: Bearer <token from POST /chat/api/visitors>)",
                    "token_unknown",
                )),
                Err(visitor::Denied::Expired) => Err(Reject::token(
                    StatusCode::UNAUTHORIZED,
                    "the token expired (WEBCHAT_VISITOR_TOKEN_DAYS): renew tokens before they \
                     expire (POST /chat/api/visitors/{visitor}/token), or start a new chat \
                     with POST /chat/api/visitors",
                    "token_expired",
                )),
                Err(visitor::Denied::NotFound) => Err(Reject::token(
                    StatusCode::NOT_FOUND,
                    "no such conversation for this token",
                    "token_unknown",
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
        .ok_or_else(|| SendError::Permanent("not a web chat contact".into()))?;
        let m = ChatMessage {
            id: msg.id.clone(),
            direction: Direction::Out,
            kind: msg.kind.into(),
            text: msg.text.clone(),
            in_reply_to: (!msg.in_reply_to.is_empty()).then(|| msg.in_reply_to.clone()),
            answers: msg.also_answers.clone(),
            at: now_rfc3339(),
        };
        let appended = self
            .inner
            .history
            .append_once(&contact, &m, msg.kind != outbound::Kind::Alert, &msg.record)
            .await
            .map_err(|e| SendError::Transient(Reason::new("web chat history unavailable", e)))?;
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
            .map_err(|e| SendError::Transient(Reason::new("web chat typing indicator", e)))
    }
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Millisecond)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
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
