//! The console API: `/console/api/…` on the brain's internal listener, which the gateway
//! passes signed-in admins through to. The brain checks each call itself — the session's
//! cookie and CSRF token (against the same Redis as the gateway) and, in the database, that
//! its admin still is one (no role is cached) — so reaching this listener directly signs
//! nobody in. Every action is written to the audit log before it is done, and refused when it
//! cannot be. The routes are [`shared::console::BRAIN_API`]'s, the list the gateway passes
//! through by.
//!
//! - [`conversations`]: the list, one conversation, reply as the business, hand back, pause.
//! - [`costs`]: spend, tokens, calls, audio, the budget, a daily series, top contacts.
//! - [`knowledge`]: the knowledge base's files — view, edit, upload, delete; re-indexed at once.
//! - [`import`]: a PDF or a web page ([`fetch`]) as Markdown to save into the knowledge base.
//! - [`manage`]: settings, the whitelist, dead letters, the audit log.

pub mod conversations;
pub mod convert;
pub mod costs;
pub mod fetch;
pub mod import;
pub mod knowledge;
pub mod manage;
pub mod questions;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{Extension, Router};
use shared::console::{Console, Session};
use shared::db::Db;

use crate::knowledge::Knowledge;
use crate::settings::Settings;

/// What the console's handlers share: the database, the bus, the settings and the knowledge
/// base — not the brain.
#[derive(Clone)]
pub struct Api {
    pub(crate) db: Db,
    pub(crate) bus: shared::bus::Bus,
    pub(crate) settings: Arc<Settings>,
    pub(crate) knowledge: Arc<Knowledge>,
    pub(crate) clock: shared::clock::SharedClock,
    console: Console,
    /// What the owner's tools hear (`EVENTS_WEBHOOK_URL`).
    pub(crate) events: shared::events::Events,
}

/// A console call that failed: its status and a reason for the page.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    /// 400 with `why`.
    pub fn bad(why: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, why.into())
    }

    /// 404 with `why`.
    pub fn not_found(why: impl Into<String>) -> Self {
        Self(StatusCode::NOT_FOUND, why.into())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::warn!(error = %e, "console: database error");
        Self(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is not answering; try again".into(),
        )
    }
}

impl From<shared::bus::BusError> for ApiError {
    fn from(e: shared::bus::BusError) -> Self {
        tracing::warn!(error = %e, "console: Redis error");
        Self(
            StatusCode::SERVICE_UNAVAILABLE,
            "Redis is not answering; try again".into(),
        )
    }
}

impl From<shared::bus::HandleError> for ApiError {
    fn from(e: shared::bus::HandleError) -> Self {
        tracing::warn!(error = %e, "console: action failed");
        Self(
            StatusCode::SERVICE_UNAVAILABLE,
            "that did not work this time; try again".into(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        shared::http::json_error(self.0, self.1)
    }
}

/// A handler's result.
pub type ApiResult<T> = Result<axum::Json<T>, ApiError>;

impl Api {
    /// The API over the brain's database, bus, settings and knowledge base, at the time
    /// `clock` tells.
    pub fn new(
        db: Db,
        bus: shared::bus::Bus,
        settings: Arc<Settings>,
        knowledge: Arc<Knowledge>,
        clock: shared::clock::SharedClock,
        events: shared::events::Events,
    ) -> Self {
        let console = Console::new(&bus, shared::console::LINK_TTL);
        Self {
            db,
            bus,
            settings,
            knowledge,
            clock,
            console,
            events,
        }
    }

    /// Records `action` by `session`'s admin in the audit log — before the action is done: an
    /// action that cannot be recorded is refused (503) and not done.
    pub(crate) async fn audit(
        &self,
        session: &Session,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), ApiError> {
        crate::store::audit(
            &self.db,
            &session.admin.name,
            action,
            target,
            detail,
            self.clock.now_ms(),
        )
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "console: the audit log cannot be written; the action is refused");
            Self::unaudited()
        })
    }

    /// The refusal of an action the audit log could not record.
    fn unaudited() -> ApiError {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit log cannot be written right now, so nothing was done; try again".into(),
        )
    }

    /// The routes of [`shared::console::BRAIN_API`] — that list and no other — every one
    /// behind the session check.
    pub fn routes(self) -> Router {
        shared::console::BRAIN_API
            .iter()
            .fold(Router::new(), |router, r| router.route(r.path, handler(r)))
            .fallback(|| async {
                shared::http::json_error(StatusCode::NOT_FOUND, "no such console route")
            })
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                authorize,
            ))
            .with_state(self)
    }
}

/// The handler of one of [`shared::console::BRAIN_API`]'s routes.
///
/// # Panics
/// When the list names a route this has no handler for (the brain's first test start says so).
fn handler(r: &shared::console::ApiRoute) -> MethodRouter<Api> {
    use conversations as c;
    match (r.method, r.path) {
        ("GET", "/console/api/conversations") => get(c::list),
        ("GET", "/console/api/conversations/{contact}") => get(c::show),
        ("GET", "/console/api/conversations/{contact}/media/{row}") => get(c::media),
        ("POST", "/console/api/conversations/{contact}/reply") => post(c::reply),
        ("POST", "/console/api/conversations/{contact}/resume") => post(c::resume),
        ("POST", "/console/api/conversations/{contact}/pause") => post(c::pause),
        ("GET", "/console/api/costs") => get(costs::costs),
        ("GET", "/console/api/settings") => get(manage::settings),
        ("PUT", "/console/api/settings") => put(manage::set_setting),
        ("GET", "/console/api/whitelist") => get(manage::whitelist),
        ("POST", "/console/api/whitelist") => post(manage::change_contact),
        ("GET", "/console/api/knowledge") => get(knowledge::list),
        ("GET", "/console/api/knowledge/{name}") => get(knowledge::show),
        ("PUT", "/console/api/knowledge/{name}") => put(knowledge::put),
        ("DELETE", "/console/api/knowledge/{name}") => delete(knowledge::delete),
        ("POST", "/console/api/knowledge/import/pdf") => {
            post(import::pdf).layer(axum::extract::DefaultBodyLimit::max(import::MAX_PDF_BYTES))
        }
        ("POST", "/console/api/knowledge/import/url") => post(import::url),
        ("GET", "/console/api/questions") => get(questions::list),
        ("POST", "/console/api/questions/faq") => post(questions::add),
        ("GET", "/console/api/deadletters") => get(manage::dead_letters),
        ("POST", "/console/api/deadletters/{stream}/{action}") => post(manage::dead_letter_action),
        ("GET", "/console/api/audit") => get(manage::audit),
        ("POST", "/console/api/audit") => post(manage::record),
        ("GET", "/console/api/session") => get(session),
        (method, path) => {
            panic!("BRAIN_API names {method} {path}, which the brain has no handler for")
        }
    }
}

/// `GET /console/api/session`: who is signed in — the gateway asks before answering its own
/// console routes, so a session whose admin lost the role ends there too (no role is cached).
async fn session(Extension(session): Extension<Session>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"admin": session.admin.name}))
}

/// Every console call needs a live session (and, to change anything, its CSRF token) of an
/// admin who still is one; the session goes to the handler as an extension.
async fn authorize(State(api): State<Api>, mut req: Request, next: Next) -> Response {
    let (sid, session) = match api.console.authorize(req.method(), req.headers()).await {
        Ok(s) => s,
        Err(refused) => return refused.into_response(),
    };
    // An admin signed in from WhatsApp stays one: a session whose admin lost the role ends,
    // here and on the gateway.
    if let Some(id) = &session.admin.contact_id {
        match crate::store::contact(&api.db, id).await {
            Ok(Some(c)) if c.role == crate::store::Role::Admin => {}
            Ok(_) => {
                let _ = api.console.close(&sid).await;
                tracing::info!("console: a session ended: its admin is no longer one");
                return shared::console::Refused::NoSession.into_response();
            }
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    req.extensions_mut().insert(session);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_of_the_shared_list_has_its_handler() {
        for r in shared::console::BRAIN_API {
            let _ = super::handler(r);
        }
    }
}
