//! Who may use a web chat conversation.
//!
//! In demo mode (`WEBCHAT_DEMO=true`, loopback only) a conversation is a phone number and
//! nothing is checked. Otherwise conversations belong to *visitors*: `POST /chat/api/visitors`
//! issues an id and a token, and every call on `/chat/api/{visitor}/…` needs
//! `Authorization: Bearer <token>`.
//!
//! Nothing about a visitor is stored: the id carries a MAC (so only issued ids are valid) and
//! the token is `<id>.<expiry>.<HMAC of both>` (expiry in Unix seconds, `WEBCHAT_VISITOR_TOKEN_DAYS`
//! after it was issued), all under the server key (`WEBCHAT_SECRET`, or one generated once and
//! kept in Redis so replicas agree). The id in the token tells a wrong token (401) from another
//! visitor's (404); an expired token is a 401 that says so (the page then starts a new
//! visitor). `POST /chat/api/visitors/{visitor}/token` with a valid token answers a fresh one:
//! the page renews its token halfway through its life. Tokens issued before expiry existed
//! (`<id>.<HMAC of the id>`) stay valid until `WEBCHAT_VISITOR_TOKEN_DAYS` after a version that
//! knows expiry first checked a token (that time is kept in Redis with SET NX, so replicas
//! agree).
//! `WEBCHAT_TOKEN`, when set, is a server-to-server key that may act on any issued visitor;
//! it does not expire.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde::Deserialize;

use super::{Reject, Webchat, redis_down};

mod keys;

pub(crate) use keys::now;
pub use keys::{Denied, ID_LEN, Issued, Keys, looks_like_visitor, same, user_hash};

/// Visitor mode's keys and the limit on creating visitors.
pub(super) struct Visitors {
    pub(super) conn: redis::aio::ConnectionManager,
    pub(super) keys_prefix: shared::bus::Keys,
    pub(super) secret: Option<SecretString>,
    pub(super) server_token: Option<SecretString>,
    pub(super) identity: Option<SecretString>,
    /// Loaded on first use (the generated key needs Redis).
    pub(super) keys: tokio::sync::OnceCell<Keys>,
    pub(super) per_hour: u32,
    /// `WEBCHAT_VISITOR_TOKEN_DAYS`.
    pub(super) token_days: u32,
    /// The client address the per-address limit keys on.
    pub(super) client: crate::edge::ClientAddress,
    /// `WEBCHAT_VISITORS=open`: new visitors may be created.
    pub(super) open: bool,
}

impl Visitors {
    /// The server's visitor keys: `WEBCHAT_SECRET`, or the key kept in Redis — created by
    /// the first replica that asks, read by the others. Tokens without an expiry stay valid
    /// `WEBCHAT_VISITOR_TOKEN_DAYS` after a version that knows expiry first needed its keys
    /// (no token could be checked before; the time is kept in Redis, the first replica's wins).
    pub(super) async fn keys(&self) -> Result<&Keys, Reject> {
        self.keys
            .get_or_try_init(|| async {
                let lifetime = 86_400 * i64::from(self.token_days);
                let (since,): (i64,) = redis::pipe()
                    .cmd("SET")
                    .arg(self.keys_prefix.key("wc:tokens-expire-since"))
                    .arg(now())
                    .arg("NX")
                    .ignore()
                    .cmd("GET")
                    .arg(self.keys_prefix.key("wc:tokens-expire-since"))
                    .query_async(&mut self.conn.clone())
                    .await
                    .map_err(|e| redis_down(&e))?;
                let secret = match &self.secret {
                    Some(s) => s.clone(),
                    None => SecretString::from(
                        shared::redis_conn::shared_secret(
                            &mut self.conn.clone(),
                            &self.keys_prefix.key("wc:secret"),
                        )
                        .await
                        .map_err(|e| redis_down(&e))?,
                    ),
                };
                Ok(
                    Keys::new(secret, self.server_token.clone(), self.identity.clone())
                        .with_expiry(lifetime, Some(since.saturating_add(lifetime))),
                )
            })
            .await
    }

    /// The address a request came from ([`crate::edge::ClientAddress`]).
    fn client(&self, headers: &HeaderMap, peer: Option<std::net::SocketAddr>) -> String {
        self.client
            .key(headers, peer)
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string())
    }

    /// Counts an anonymous visitor created from `client`; `Err(seconds)` when over the limit.
    async fn count_creation(&self, keys: &Keys, client: &str) -> Result<(), Reject> {
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewVisitor {
    user_id: Option<String>,
    user_hash: Option<String>,
}

/// `POST /chat/api/visitors`: a new visitor (anonymous, limited per client address), or the
/// visitor of a user the business vouches for.
pub(super) async fn create_visitor(State(wc): State<Webchat>, request: Request) -> Response {
    if wc.inner.high_water.is_over() {
        return crate::storage::HighWater::refusal();
    }
    match new_visitor(&wc, request).await {
        Ok(issued) => (
            StatusCode::CREATED,
            [(header::CACHE_CONTROL, "no-store")],
            Json(issued.json(now())),
        )
            .into_response(),
        Err(r) => r.into_response(),
    }
}

/// Visitors do not exist in demo mode.
fn no_visitors_in_demo(wc: &Webchat) -> Result<(), Reject> {
    if wc.inner.local {
        return Err(Reject::new(
            StatusCode::NOT_FOUND,
            "visitors are off in demo mode (WEBCHAT_DEMO=true): a conversation is a phone number",
        ));
    }
    Ok(())
}

/// `POST /chat/api/visitors/{visitor}/token` with the visitor's valid token (or
/// `WEBCHAT_TOKEN`): a fresh token, `{"visitor", "token", "expires_at", "expires_in"}`.
pub(super) async fn renew_token(
    State(wc): State<Webchat>,
    axum::extract::Path(visitor): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let renewed = async {
        no_visitors_in_demo(&wc)?;
        let visitor = wc.authorize(&headers, &visitor).await?;
        Ok::<_, Reject>(wc.inner.visitors.keys().await?.issue(visitor, now()))
    };
    match renewed.await {
        Ok(issued) => (
            [(header::CACHE_CONTROL, "no-store")],
            Json(issued.json(now())),
        )
            .into_response(),
        Err(r) => r.into_response(),
    }
}

async fn new_visitor(wc: &Webchat, request: Request) -> Result<Issued, Reject> {
    no_visitors_in_demo(wc)?;
    if !wc.inner.visitors.open {
        return Err(Reject::new(
            StatusCode::FORBIDDEN,
            "this web chat serves no visitors (WEBCHAT_VISITORS=off)",
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
            Ok(keys.new_visitor(now()))
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
            keys.user_visitor(&user_id, &user_hash, now())
                .ok_or_else(|| {
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
