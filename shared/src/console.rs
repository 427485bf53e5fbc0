//! The owner's console: one-time sign-in links, sessions and their CSRF tokens, all kept in
//! Redis so every gateway and brain replica agrees — the gateway signs people in and serves
//! the page; the brain, which serves the console API behind it, checks the same session again
//! on every call (a request that reaches the brain's internal listener directly is refused
//! just the same).
//!
//! Nothing secret is kept in the clear: link tokens and session ids are stored under their
//! BLAKE3 hash, so a read of Redis cannot sign anybody in.

use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use crate::bus::{Bus, Keys};
use crate::config::Env;

/// The session cookie's name.
pub const COOKIE: &str = "sb_console";
/// The header every state-changing request carries its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a sign-in link stays valid.
pub const LINK_TTL: Duration = Duration::from_secs(600);
/// How long a session lasts by default (`CONSOLE_SESSION_HOURS`).
pub const DEFAULT_SESSION_HOURS: u64 = 12;

/// One route of the brain's console API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRoute {
    /// Its method (`GET`, `POST`, `PUT`, `DELETE`).
    pub method: &'static str,
    /// Its path in axum's syntax: `{name}` stands for one path segment.
    pub path: &'static str,
    /// Whether the gateway passes a browser's call through (`false`: only the gateway itself
    /// calls it — recording its own actions, checking an admin's role).
    pub from_browser: bool,
}

const fn route(method: &'static str, path: &'static str) -> ApiRoute {
    ApiRoute {
        method,
        path,
        from_browser: true,
    }
}

const fn gateway_only(method: &'static str, path: &'static str) -> ApiRoute {
    ApiRoute {
        method,
        path,
        from_browser: false,
    }
}

/// The largest body of a console import (a PDF): the gateway passes this route's bodies up
/// to it, once it has checked the session (every other console body: 2 MB).
pub const MAX_IMPORT_BYTES: usize = 10 * 1024 * 1024;

/// The one console route whose body may be [`MAX_IMPORT_BYTES`].
pub const IMPORT_PDF: &str = "/console/api/knowledge/import/pdf";

/// The brain's console API, the one list both sides use: the brain builds its router from
/// it (a route missing here does not exist there) and the gateway passes through only the
/// calls it matches — anything else is answered 404 without reaching the brain.
pub const BRAIN_API: &[ApiRoute] = &[
    route("GET", "/console/api/conversations"),
    route("GET", "/console/api/conversations/{contact}"),
    route("GET", "/console/api/conversations/{contact}/media/{row}"),
    route("POST", "/console/api/conversations/{contact}/reply"),
    route("POST", "/console/api/conversations/{contact}/resume"),
    route("POST", "/console/api/conversations/{contact}/pause"),
    route("GET", "/console/api/costs"),
    route("GET", "/console/api/settings"),
    route("PUT", "/console/api/settings"),
    route("GET", "/console/api/whitelist"),
    route("POST", "/console/api/whitelist"),
    route("GET", "/console/api/knowledge"),
    route("GET", "/console/api/knowledge/{name}"),
    route("PUT", "/console/api/knowledge/{name}"),
    route("DELETE", "/console/api/knowledge/{name}"),
    route("POST", "/console/api/knowledge/import/pdf"),
    route("POST", "/console/api/knowledge/import/url"),
    route("GET", "/console/api/questions"),
    route("POST", "/console/api/questions/faq"),
    route("GET", "/console/api/deadletters"),
    route("POST", "/console/api/deadletters/{stream}/{action}"),
    route("GET", "/console/api/audit"),
    gateway_only("POST", "/console/api/audit"),
    gateway_only("GET", "/console/api/session"),
];

impl ApiRoute {
    /// Whether the request path `path` (as sent, percent-encoding and all) is this route's.
    pub fn matches_path(&self, path: &str) -> bool {
        let mut want = self.path.split('/');
        let mut got = path.split('/');
        loop {
            match (want.next(), got.next()) {
                (None, None) => return true,
                (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') => {
                    if g.is_empty() {
                        return false;
                    }
                }
                (Some(w), Some(g)) if w == g => {}
                _ => return false,
            }
        }
    }
}

/// Whether the gateway passes a browser's `method` `path` through to the brain: only a
/// route of [`BRAIN_API`] a browser may call, with its method (`HEAD` goes where `GET` does).
pub fn passes_through(method: &Method, path: &str) -> bool {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    BRAIN_API
        .iter()
        .any(|r| r.from_browser && r.method == method && r.matches_path(path))
}

/// Who is signed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admin {
    /// What the audit log and the page show: the admin's number, or `operator` for a link the
    /// operator made with `gateway console-link`.
    pub name: String,
    /// The admin's contact, when the link came from WhatsApp (`!console`).
    pub contact_id: Option<String>,
}

/// A signed-in session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// Who.
    pub admin: Admin,
    /// The token state-changing requests must echo in [`CSRF_HEADER`].
    pub csrf: String,
    /// When it ends (unix ms).
    pub expires_ms: i64,
}

/// Why a console request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No session cookie, or one that is unknown, signed out or expired (401).
    NoSession,
    /// A state-changing request without its session's CSRF token (403).
    Csrf,
    /// Redis could not be asked (503).
    Unavailable,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let (status, why) = match self {
            Self::NoSession => (
                StatusCode::UNAUTHORIZED,
                "sign in first: an admin sends !console on WhatsApp for a sign-in link",
            ),
            Self::Csrf => (
                StatusCode::FORBIDDEN,
                "missing or wrong x-csrf-token header for this session",
            ),
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the console cannot check sessions right now (Redis unreachable)",
            ),
        };
        crate::http::json_error(status, why)
    }
}

/// Sign-in links and sessions.
#[derive(Clone)]
pub struct Console {
    conn: ConnectionManager,
    keys: Keys,
    session_ttl: Duration,
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn digest(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex()[..40].to_owned()
}

impl Console {
    /// Sessions on `bus`'s Redis, lasting `session_ttl`.
    pub fn new(bus: &Bus, session_ttl: Duration) -> Self {
        Self {
            conn: bus.connection(),
            keys: bus.keys().clone(),
            session_ttl,
        }
    }

    /// How long a session lasts.
    pub fn session_ttl(&self) -> Duration {
        self.session_ttl
    }

    fn link_key(&self, token: &str) -> String {
        self.keys.key(&format!("console:link:{}", digest(token)))
    }

    fn session_key(&self, sid: &str) -> String {
        self.keys.key(&format!("console:session:{}", digest(sid)))
    }

    /// A one-time sign-in token for `admin`, valid [`LINK_TTL`].
    pub async fn issue_link(&self, admin: &Admin) -> redis::RedisResult<String> {
        let token = random_token();
        let body = serde_json::to_string(admin).expect("an admin serializes");
        let mut conn = self.conn.clone();
        let _: () = conn
            .set_ex(self.link_key(&token), body, LINK_TTL.as_secs())
            .await?;
        Ok(token)
    }

    /// Whom the link `token` signs in — once: the link is gone after this.
    pub async fn redeem(&self, token: &str) -> redis::RedisResult<Option<Admin>> {
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let mut conn = self.conn.clone();
        let body: Option<String> = conn.get_del(self.link_key(token)).await?;
        Ok(body.and_then(|b| serde_json::from_str(&b).ok()))
    }

    /// Opens a session for `admin`: its id (the cookie's value) and the session.
    pub async fn open(&self, admin: Admin) -> redis::RedisResult<(String, Session)> {
        let sid = random_token();
        let session = Session {
            admin,
            csrf: random_token(),
            expires_ms: crate::ids::now_ms() + self.session_ttl.as_millis() as i64,
        };
        let body = serde_json::to_string(&session).expect("a session serializes");
        let mut conn = self.conn.clone();
        let _: () = conn
            .set_ex(self.session_key(&sid), body, self.session_ttl.as_secs())
            .await?;
        Ok((sid, session))
    }

    /// The live session with id `sid`.
    pub async fn session(&self, sid: &str) -> redis::RedisResult<Option<Session>> {
        let mut conn = self.conn.clone();
        let body: Option<String> = conn.get(self.session_key(sid)).await?;
        Ok(body
            .and_then(|b| serde_json::from_str::<Session>(&b).ok())
            .filter(|s| s.expires_ms > crate::ids::now_ms()))
    }

    /// Ends the session `sid`: its cookie signs nobody in anywhere from now on.
    pub async fn close(&self, sid: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: () = conn.del(self.session_key(sid)).await?;
        Ok(())
    }

    /// The session a request carries (its cookie), with the CSRF token checked when the
    /// method changes state; and the session's id.
    pub async fn authorize(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<(String, Session), Refused> {
        let sid = session_cookie(headers).ok_or(Refused::NoSession)?;
        let session = self
            .session(&sid)
            .await
            .map_err(|_| Refused::Unavailable)?
            .ok_or(Refused::NoSession)?;
        let safe = matches!(*method, Method::GET | Method::HEAD);
        if !safe {
            let sent = headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !same(sent.as_bytes(), session.csrf.as_bytes()) {
                return Err(Refused::Csrf);
            }
        }
        Ok((sid, session))
    }
}

/// Constant-time equality of two byte strings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session id in a request's `Cookie` headers.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value for a session: HttpOnly, SameSite=Strict, scoped to `/console`,
/// `Secure` when the console is served over HTTPS; an empty `sid` with no age clears it.
pub fn set_cookie(sid: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{COOKIE}={sid}; Path=/console; Max-Age={}; HttpOnly; SameSite=Strict{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `PUBLIC_URL` (default `http://<PUBLIC_ADDR>`): where the owner and customers reach the
/// public listener; sign-in links start with it. Read by the gateway and the brain.
pub fn public_url(env: &mut Env) -> String {
    let addr = env.string("PUBLIC_ADDR", "127.0.0.1:8080");
    match env.http_url("PUBLIC_URL") {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{addr}"),
    }
}

/// `CONSOLE_SESSION_HOURS` (default 12, 1–720): how long a console session lasts.
pub fn session_ttl(env: &mut Env) -> Duration {
    Duration::from_secs(3600 * env.int_in("CONSOLE_SESSION_HOURS", DEFAULT_SESSION_HOURS, 1, 720))
}

/// The sign-in link for `token`.
pub fn link(public_url: &str, token: &str) -> String {
    format!("{public_url}/console/login/{token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others_and_is_strict_and_http_only() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; sb_console=abc ; b=2".parse().unwrap());
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        h.clear();
        h.append(
            header::COOKIE,
            "sb_console_x=1; x=sb_console".parse().unwrap(),
        );
        assert_eq!(session_cookie(&h), None);
        let c = set_cookie("abc", Duration::from_secs(60), true);
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Max-Age=60",
            "Path=/console",
        ] {
            assert!(c.contains(part), "{c}");
        }
        assert!(!set_cookie("abc", Duration::from_secs(60), false).contains("Secure"));
    }

    #[test]
    fn only_the_brains_browser_routes_pass_through() {
        let get = Method::GET;
        let post = Method::POST;
        for (m, p, want) in [
            (&get, "/console/api/conversations", true),
            (&get, "/console/api/conversations/c1/media/3", true),
            (&post, "/console/api/conversations/c1/reply", true),
            (&post, "/console/api/conversations", false),
            (&get, "/console/api/conversations//media/3", false),
            (&get, "/console/api/conversations/c1/", false),
            (&get, "/console/api/audit", true),
            (&post, "/console/api/audit", false),
            (&get, "/console/api/session", false),
            (&get, "/console/api/metrics", false),
            (&get, "/metrics", false),
            (&Method::HEAD, "/console/api/costs", true),
            (&Method::DELETE, "/console/api/costs", false),
        ] {
            assert_eq!(passes_through(m, p), want, "{m} {p}");
        }
        // Each route once, and every path under the API.
        for (i, r) in BRAIN_API.iter().enumerate() {
            assert!(r.path.starts_with("/console/api/"), "{r:?}");
            assert!(
                !BRAIN_API[..i]
                    .iter()
                    .any(|o| o.method == r.method && o.path == r.path),
                "{r:?} twice"
            );
        }
    }

    #[test]
    fn public_url_defaults_to_the_public_address_and_drops_a_trailing_slash() {
        let mut env = Env::from_pairs([("PUBLIC_ADDR", "0.0.0.0:9000")]);
        assert_eq!(public_url(&mut env), "http://0.0.0.0:9000");
        let mut env = Env::from_pairs([("PUBLIC_URL", "https://shop.example/")]);
        assert_eq!(public_url(&mut env), "https://shop.example");
        let mut env = Env::from_pairs([("PUBLIC_URL", "ftp://x")]);
        let _ = public_url(&mut env);
        assert!(!env.problems().is_empty());
    }
}
