//! The owner's console at `/console` on the public listener: the gateway signs admins in
//! (one-time links from `!console` or `gateway console-link`, sessions in Redis —
//! [`shared::console`]), serves the page, answers the WhatsApp part itself (it holds the
//! sessions) and passes every other `/console/api/…` call through to the brain's internal
//! listener (`BRAIN_URL`), which checks the session again.
//!
//! Nothing here is reachable without a session except the sign-in link itself; state-changing
//! calls need the session's CSRF token in `x-csrf-token`; the cookie is HttpOnly,
//! SameSite=Strict and Secure behind HTTPS.
//!
//! Authority is checked on every request, never cached: roles live in the brain's database,
//! so before answering one of its own routes the gateway asks the brain whether the session's
//! admin still is one (`GET /console/api/session` there, which ends the session of an admin
//! who lost the role); passed-through calls are checked by the brain itself. Only the brain's
//! routes a browser may call ([`shared::console::BRAIN_API`]) are passed through, and a path
//! with dot segments, encoded dots or slashes, backslashes or empty segments is refused (400)
//! before anything else.

mod proxy;
mod whatsapp;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get, post};
use shared::console::{Console, Session};

use crate::config::ConsoleConfig;
use crate::transport::Transports;

const PAGE: &str = include_str!("assets/console.html");
const SCRIPT: &str = include_str!("assets/console.js");
const SIGN_IN: &str = include_str!("assets/sign-in.html");

/// What the console's routes share.
#[derive(Clone)]
pub struct ConsoleRoutes {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ConsoleConfig,
    console: Console,
    transports: Transports,
    http: reqwest::Client,
}

/// Headers every console response carries: no caching, no framing, no referrer (the sign-in
/// link must never leak in one), a tight content policy.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    res
}

impl ConsoleRoutes {
    /// The console over `transports`, with sessions on `bus`'s Redis.
    pub fn new(cfg: &ConsoleConfig, bus: &shared::bus::Bus, transports: Transports) -> Self {
        let http = shared::http_client::builder()
            .timeout(std::time::Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client builds");
        Self {
            inner: Arc::new(Inner {
                console: Console::new(bus, cfg.session_ttl),
                cfg: cfg.clone(),
                transports,
                http,
            }),
        }
    }

    /// The public routes under `/console`.
    pub fn routes(self) -> Router {
        // Answered here: the session's admin must still be one (the brain says).
        let answered = Router::new()
            .route("/console", get(page))
            .route("/console/", get(page))
            .route("/console/app.js", get(script))
            .route("/console/api/session", get(session))
            .route("/console/api/whatsapp", get(whatsapp::state))
            .route("/console/api/whatsapp/qr.svg", get(whatsapp::qr))
            .route("/console/api/whatsapp/{kind}/{action}", post(whatsapp::act))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                require_admin,
            ));
        // Signing out needs only the session; the brain checks passed-through calls itself.
        let signed_in = Router::new()
            .merge(answered)
            .route("/console/logout", post(logout))
            .route("/console/api/{*rest}", any(proxy::pass))
            .route("/console/{*rest}", any(not_found))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                require_session,
            ));
        Router::new()
            .route("/console/login/{token}", get(sign_in_page).post(sign_in))
            .merge(signed_in)
            .layer(axum::middleware::from_fn(plain_path))
            .layer(axum::middleware::from_fn(security_headers))
            .with_state(self)
    }

    /// The brain's `url` for the console path `path_and_query` (already checked plain).
    fn brain(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.inner.cfg.brain_url)
    }
}

/// Whether a request path (as sent, percent-encoding and all) is plain: no `.` or `..`
/// segment, no encoded dot, slash or backslash, no backslash, no empty segment. Anything else
/// could mean another route once a client library or the brain normalizes it.
fn is_plain(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let odd = ["%2e", "%2f", "%5c", "\\", "//"]
        .iter()
        .any(|bad| lower.contains(bad));
    !odd && !path.split('/').any(|seg| seg == "." || seg == "..")
}

/// Every console path is plain ([`is_plain`]) or refused (400) before anything else is done.
async fn plain_path(req: Request, next: Next) -> Response {
    if is_plain(req.uri().path()) {
        next.run(req).await
    } else {
        shared::http::json_error(
            StatusCode::BAD_REQUEST,
            "a console path has no . or .. segments, encoded dots or slashes, backslashes or empty segments",
        )
    }
}

async fn not_found() -> Response {
    shared::http::json_error(StatusCode::NOT_FOUND, "no such console route")
}

/// Every route but the sign-in link needs a live session (and its CSRF token to change
/// anything); the page itself answers a browser without one with how to sign in.
async fn require_session(State(c): State<ConsoleRoutes>, mut req: Request, next: Next) -> Response {
    match c.inner.console.authorize(req.method(), req.headers()).await {
        Ok((sid, session)) => {
            req.extensions_mut().insert(SessionId(sid));
            req.extensions_mut().insert(session);
            next.run(req).await
        }
        Err(refused) => refusal(&req, refused),
    }
}

/// A refused request's answer: the page tells a browser without a session how to sign in.
fn refusal(req: &Request, refused: shared::console::Refused) -> Response {
    match refused {
        shared::console::Refused::NoSession
            if matches!(req.uri().path(), "/console" | "/console/") =>
        {
            (
                StatusCode::UNAUTHORIZED,
                Html(SIGN_IN.replace("{{body}}", NEED_LINK)),
            )
                .into_response()
        }
        refused => refused.into_response(),
    }
}

/// The gateway's own routes answer an admin who still is one: the brain, which keeps the
/// roles, is asked on every request (no role is cached, so a demotion applies at once) and
/// ends the session of an admin who lost the role.
async fn require_admin(State(c): State<ConsoleRoutes>, req: Request, next: Next) -> Response {
    let asked = c
        .inner
        .http
        .get(c.brain("/console/api/session"))
        .headers(forwarded(req.headers()))
        .send()
        .await;
    match asked.map(|r| r.status().as_u16()) {
        Ok(200) => next.run(req).await,
        Ok(401) => refusal(&req, shared::console::Refused::NoSession),
        Ok(status) => {
            tracing::warn!(
                status,
                "console: the brain did not confirm the admin's role"
            );
            cannot_check_role()
        }
        Err(e) => {
            tracing::warn!(error = %e, "console: the brain did not answer a role check");
            cannot_check_role()
        }
    }
}

fn cannot_check_role() -> Response {
    shared::http::json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the console cannot check the admin's role right now (the brain is not answering)",
    )
}

/// The session's id (the cookie's value), for sign-out.
#[derive(Clone)]
struct SessionId(String);

const NEED_LINK: &str = "<h1>Sign in</h1><p>The console is for the business's admins. Send \
<code>!console</code> to the bot from an admin's WhatsApp (or run <code>gateway console-link</code> \
on the server) and open the link you get. It works once, for 10 minutes.</p>";

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

/// `GET /console/login/{token}`: a button that signs in. The link itself signs nobody in —
/// a link preview fetching it must not use it up.
async fn sign_in_page(Path(token): Path<String>) -> Response {
    let valid_shape = token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid_shape {
        return (
            StatusCode::NOT_FOUND,
            Html(SIGN_IN.replace("{{body}}", USED_LINK)),
        )
            .into_response();
    }
    let body = format!(
        "<h1>Sign in to the console</h1><form method=\"post\" action=\"/console/login/{token}\">\
         <button type=\"submit\">Sign in</button></form>"
    );
    Html(SIGN_IN.replace("{{body}}", &body)).into_response()
}

const USED_LINK: &str = "<h1>This link does not work</h1><p>Sign-in links work once, for 10 \
minutes. Send <code>!console</code> again for a new one.</p>";

/// `POST /console/login/{token}`: uses the link up and opens a session.
async fn sign_in(State(c): State<ConsoleRoutes>, Path(token): Path<String>) -> Response {
    let admin = match c.inner.console.redeem(&token).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            return (
                StatusCode::FORBIDDEN,
                Html(SIGN_IN.replace("{{body}}", USED_LINK)),
            )
                .into_response();
        }
        Err(_) => return shared::console::Refused::Unavailable.into_response(),
    };
    let Ok((sid, _)) = c.inner.console.open(admin).await else {
        return shared::console::Refused::Unavailable.into_response();
    };
    tracing::info!("console: an admin signed in");
    let cookie =
        shared::console::set_cookie(&sid, c.inner.console.session_ttl(), c.inner.cfg.secure());
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/console/".to_owned()),
        ],
    )
        .into_response()
}

/// `POST /console/logout`: ends the session (its cookie signs nobody in anywhere after).
async fn logout(State(c): State<ConsoleRoutes>, req: Request) -> Response {
    let Some(SessionId(sid)) = req.extensions().get::<SessionId>().cloned() else {
        return shared::console::Refused::NoSession.into_response();
    };
    if c.inner.console.close(&sid).await.is_err() {
        return shared::console::Refused::Unavailable.into_response();
    }
    let clear = shared::console::set_cookie("", std::time::Duration::ZERO, c.inner.cfg.secure());
    (
        [(header::SET_COOKIE, clear)],
        axum::Json(serde_json::json!({"signed_out": true})),
    )
        .into_response()
}

/// `GET /console/api/session`: who is signed in, the CSRF token for changes, when it ends.
async fn session(req: Request) -> Response {
    match req.extensions().get::<Session>() {
        Some(s) => axum::Json(serde_json::json!({
            "admin": s.admin.name,
            "csrf": s.csrf,
            "expires_ms": s.expires_ms,
        }))
        .into_response(),
        None => shared::console::Refused::NoSession.into_response(),
    }
}

/// The headers a console call is passed on with: its cookie and CSRF token (the brain checks
/// the session again) and its content type.
fn forwarded(headers: &HeaderMap) -> reqwest::header::HeaderMap {
    let mut out = reqwest::header::HeaderMap::new();
    for name in [header::COOKIE, header::CONTENT_TYPE] {
        for v in headers.get_all(&name) {
            out.append(name.clone(), v.clone());
        }
    }
    if let Some(v) = headers.get(shared::console::CSRF_HEADER) {
        out.insert(shared::console::CSRF_HEADER, v.clone());
    }
    out
}
