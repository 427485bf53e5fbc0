//! Who may use a web chat conversation.
//!
//! In demo mode (`WEBCHAT_DEMO=true`, loopback only) a conversation is a phone number and
//! nothing is checked. Otherwise conversations belong to *visitors*: `POST /chat/api/visitors`
//! issues an id and a token, and every call on `/chat/api/{visitor}/…` needs
//! `Authorization: Bearer <token>`.
//!
//! Nothing about a visitor is stored: the id carries a MAC (so only issued ids are valid) and
//! the token is `<id>.<HMAC of the id>`, both under the server key (`WEBCHAT_SECRET`, or one
//! generated once and kept in Redis so replicas agree). The id in the token tells a wrong
//! token (401) from another visitor's (404). `WEBCHAT_TOKEN`, when set, is a server-to-server
//! key that may act on any issued visitor.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;

use super::{Reject, Webchat, redis_down};

type HmacSha256 = Hmac<Sha256>;

/// Random part of an anonymous visitor's id, in hex digits.
const RANDOM_HEX: usize = 20;
/// The id's MAC, in hex digits.
const ID_MAC_HEX: usize = 12;
/// Length of a visitor id: a letter, the body, the MAC.
pub const ID_LEN: usize = 1 + RANDOM_HEX + ID_MAC_HEX;

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No token, or one this server did not issue (401).
    Unauthenticated,
    /// A valid token of another visitor, or a visitor that does not exist (404).
    NotFound,
}

/// The server's keys for visitors.
#[derive(Clone)]
pub struct Keys {
    /// The server key (`WEBCHAT_SECRET` or the one kept in Redis).
    secret: SecretString,
    /// `WEBCHAT_TOKEN`: may act on any issued visitor.
    server_token: Option<SecretString>,
    /// `WEBCHAT_IDENTITY_SECRET`: the business signs its user ids with it.
    identity: Option<SecretString>,
}

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
        m.update(b"\x1f");
    }
    m
}

/// Whether `id` has a visitor id's shape (its MAC is checked by [`Keys::issued`]).
pub fn looks_like_visitor(id: &str) -> bool {
    id.len() == ID_LEN
        && (id.starts_with('v') || id.starts_with('u'))
        && id[1..]
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// Constant-time equality of two byte strings.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Keys {
    /// Keys from the server key, with the optional server token and identity secret.
    pub fn new(
        secret: SecretString,
        server_token: Option<SecretString>,
        identity: Option<SecretString>,
    ) -> Self {
        Self {
            secret,
            server_token,
            identity,
        }
    }

    fn key(&self) -> &[u8] {
        self.secret.expose_secret().as_bytes()
    }

    /// `body` (a letter and hex digits) with its MAC: an id only this server can issue.
    fn seal(&self, body: &str) -> String {
        let tag = mac(self.key(), &[b"visitor-id", body.as_bytes()])
            .finalize()
            .into_bytes();
        format!("{body}{}", &hex::encode(tag)[..ID_MAC_HEX])
    }

    /// Whether `id` is a visitor id this server issued.
    pub fn issued(&self, id: &str) -> bool {
        if !looks_like_visitor(id) {
            return false;
        }
        let body = &id[..ID_LEN - ID_MAC_HEX];
        same(self.seal(body).as_bytes(), id.as_bytes())
    }

    /// The token of visitor `id`.
    pub fn token(&self, id: &str) -> String {
        let tag = mac(self.key(), &[b"visitor-token", id.as_bytes()])
            .finalize()
            .into_bytes();
        format!(
            "{id}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// A new anonymous visitor: its id and token.
    pub fn new_visitor(&self) -> (String, String) {
        let random: [u8; RANDOM_HEX / 2] = rand::random();
        let id = self.seal(&format!("v{}", hex::encode(random)));
        let token = self.token(&id);
        (id, token)
    }

    /// A keyed hash of `value` (for Redis key names: no address or id in the clear, and none
    /// that can be guessed back without the server key).
    pub fn key_hash(&self, value: &str) -> String {
        let tag = mac(self.key(), &[b"redis-key", value.as_bytes()])
            .finalize()
            .into_bytes();
        hex::encode(tag)[..32].to_owned()
    }

    /// Whether the business's user verification is configured.
    pub fn verifies_users(&self) -> bool {
        self.identity.is_some()
    }

    /// The visitor of a user the business vouches for (`user_hash` = hex HMAC-SHA256 of
    /// `user_id` under `WEBCHAT_IDENTITY_SECRET`): the same visitor on every device. `None`
    /// when the hash is wrong (or verification is not configured).
    pub fn user_visitor(&self, user_id: &str, user_hash: &str) -> Option<(String, String)> {
        let identity = self.identity.as_ref()?;
        let given = hex::decode(user_hash).ok()?;
        let mut m = HmacSha256::new_from_slice(identity.expose_secret().as_bytes())
            .expect("HMAC takes any key length");
        m.update(user_id.as_bytes());
        m.verify_slice(&given).ok()?;
        let tag = mac(self.key(), &[b"user", user_id.as_bytes()])
            .finalize()
            .into_bytes();
        let id = self.seal(&format!("u{}", &hex::encode(tag)[..RANDOM_HEX]));
        let token = self.token(&id);
        Some((id, token))
    }

    /// Checks a bearer token against the visitor in the path.
    pub fn check(&self, bearer: Option<&str>, visitor: &str) -> Result<(), Denied> {
        let given = bearer.unwrap_or("");
        if given.is_empty() {
            return Err(Denied::Unauthenticated);
        }
        if let Some(server) = &self.server_token
            && same(given.as_bytes(), server.expose_secret().as_bytes())
        {
            return if self.issued(visitor) {
                Ok(())
            } else {
                Err(Denied::NotFound)
            };
        }
        let Some((id, _)) = given.split_once('.') else {
            return Err(Denied::Unauthenticated);
        };
        if !self.issued(id) || !same(self.token(id).as_bytes(), given.as_bytes()) {
            return Err(Denied::Unauthenticated);
        }
        if id == visitor {
            Ok(())
        } else {
            Err(Denied::NotFound)
        }
    }
}

/// The visitor user-hash a business computes: hex HMAC-SHA256 of `user_id` under `secret`.
pub fn user_hash(secret: &str, user_id: &str) -> String {
    let mut m = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    m.update(user_id.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

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
    /// `WEBCHAT_VISITORS=open`: new visitors may be created.
    pub(super) open: bool,
    pub(super) proxy_header: Option<axum::http::HeaderName>,
}

impl Visitors {
    /// The server's visitor keys: `WEBCHAT_SECRET`, or the key kept in Redis — created by
    /// the first replica that asks, read by the others.
    pub(super) async fn keys(&self) -> Result<&Keys, Reject> {
        self.keys
            .get_or_try_init(|| async {
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
                Ok(Keys::new(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(identity: Option<&str>) -> Keys {
        Keys::new(
            SecretString::from("k".repeat(40)),
            Some(SecretString::from("server-token-0123456789")),
            identity.map(SecretString::from),
        )
    }

    #[test]
    fn a_visitor_token_opens_its_own_conversation_only() {
        let k = keys(None);
        let (a, ta) = k.new_visitor();
        let (b, tb) = k.new_visitor();
        assert_ne!(a, b);
        assert!(k.issued(&a) && k.issued(&b));
        assert_eq!(k.check(Some(&ta), &a), Ok(()));
        assert_eq!(k.check(Some(&tb), &a), Err(Denied::NotFound));
        assert_eq!(k.check(None, &a), Err(Denied::Unauthenticated));
        assert_eq!(k.check(Some("nope"), &a), Err(Denied::Unauthenticated));
        // The right shape under another server key is a wrong token.
        let other = Keys::new(SecretString::from("x".repeat(40)), None, None);
        assert_eq!(
            k.check(Some(&other.token(&a)), &a),
            Err(Denied::Unauthenticated)
        );
        // An id that was never issued: 404 even for the server token.
        let forged = format!("v{}", "0".repeat(ID_LEN - 1));
        assert!(!k.issued(&forged));
        assert_eq!(
            k.check(Some("server-token-0123456789"), &forged),
            Err(Denied::NotFound)
        );
        assert_eq!(k.check(Some("server-token-0123456789"), &a), Ok(()));
        assert_eq!(
            k.check(Some("server-token-0123456789"), "15550001111"),
            Err(Denied::NotFound)
        );
    }

    #[test]
    fn a_user_the_business_vouches_for_is_one_visitor_everywhere() {
        let k = keys(Some("identity-secret-123"));
        let hash = user_hash("identity-secret-123", "customer-42");
        let (id1, t1) = k.user_visitor("customer-42", &hash).expect("right hash");
        let (id2, t2) = k.user_visitor("customer-42", &hash.to_uppercase()).unwrap();
        assert_eq!((&id1, &t1), (&id2, &t2));
        assert!(id1.starts_with('u') && k.issued(&id1));
        assert_eq!(k.check(Some(&t1), &id1), Ok(()));
        assert!(k.user_visitor("customer-43", &hash).is_none());
        assert!(k.user_visitor("customer-42", "zz").is_none());
        assert!(
            k.user_visitor("customer-42", &user_hash("other", "customer-42"))
                .is_none()
        );
        assert!(keys(None).user_visitor("customer-42", &hash).is_none());
    }
}
