//! The console's WhatsApp part, answered by the gateway (it holds the sessions): each
//! transport's state, the QR code or pairing code while unlinked, log out and relink — each
//! recorded in the brain's audit log first: an action the log cannot record is not done.

use axum::Extension;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shared::console::Session;

use super::{ConsoleRoutes, forwarded};
use crate::transport::SessionState;

/// `GET /console/api/whatsapp`: every transport, its state, and its pairing code while one
/// waits (the QR is at `qr.svg`).
pub(super) async fn state(State(c): State<ConsoleRoutes>) -> Response {
    let list: Vec<serde_json::Value> = c
        .inner
        .transports
        .all()
        .iter()
        .map(|t| {
            let pairing = t.pairing();
            serde_json::json!({
                "kind": t.kind().as_str(),
                "state": t.state().as_str(),
                "connected": t.state() == SessionState::Connected,
                "qr": pairing.as_ref().is_some_and(|p| p.qr.is_some()),
                "pairing_code": pairing.and_then(|p| p.code),
                "can_logout": t.kind() == crate::config::TransportKind::Web,
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "transports": list })).into_response()
}

/// `GET /console/api/whatsapp/qr.svg`: the QR code to scan, while one waits.
pub(super) async fn qr(State(c): State<ConsoleRoutes>) -> Response {
    let code = c
        .inner
        .transports
        .all()
        .iter()
        .find_map(|t| t.pairing().and_then(|p| p.qr));
    match code.as_deref().and_then(crate::qr_svg) {
        Some(svg) => svg,
        None => {
            shared::http::json_error(StatusCode::NOT_FOUND, "no QR code is waiting to be scanned")
        }
    }
}

/// `POST /console/api/whatsapp/{kind}/logout|relink`.
pub(super) async fn act(
    State(c): State<ConsoleRoutes>,
    Extension(session): Extension<Session>,
    Path((kind, action)): Path<(String, String)>,
    req: Request,
) -> Response {
    let Some(t) = c
        .inner
        .transports
        .all()
        .iter()
        .find(|t| t.kind().as_str() == kind)
    else {
        return shared::http::json_error(
            StatusCode::NOT_FOUND,
            format!("no {kind:?} transport here"),
        );
    };
    if !matches!(action.as_str(), "logout" | "relink") {
        return shared::http::json_error(StatusCode::NOT_FOUND, "the action is logout or relink");
    }
    if t.pairing().is_none() {
        return shared::http::json_error(
            StatusCode::CONFLICT,
            format!("the {kind} transport links no WhatsApp account to {action}"),
        );
    }
    // The audit log is the brain's: recorded there first, with this request's own session
    // (so the brain checks once more that its admin still is one).
    let audit = format!("whatsapp.{action}");
    if let Err(refused) = record(&c, req.headers(), &audit, &kind).await {
        return refused;
    }
    let done = if action == "logout" {
        t.logout().await
    } else {
        t.relink().await
    };
    if let Err(why) = done {
        // Best effort: the log already says it was asked for; say it did not happen.
        let _ = record(&c, req.headers(), &format!("{audit}.failed"), &kind).await;
        return shared::http::json_error(StatusCode::CONFLICT, why);
    }
    tracing::info!(by = %shared::redact::Redacted(&session.admin.name), transport = %kind, %action, "console: WhatsApp action");
    axum::Json(serde_json::json!({ "done": action })).into_response()
}

/// Records a WhatsApp `action` on `target` in the brain's audit log with the session in
/// `headers`; the answer to give when it could not be recorded.
async fn record(
    c: &ConsoleRoutes,
    headers: &axum::http::HeaderMap,
    action: &str,
    target: &str,
) -> Result<(), Response> {
    let sent = c
        .inner
        .http
        .post(c.brain("/console/api/audit"))
        .headers(forwarded(headers))
        .json(&serde_json::json!({"action": action, "target": target}))
        .send()
        .await;
    match sent.map(|r| r.status().as_u16()) {
        Ok(200..=299) => Ok(()),
        Ok(401) => Err(shared::console::Refused::NoSession.into_response()),
        Ok(status) => {
            tracing::warn!(status, admin_action = %action, "console: the audit log refused a WhatsApp action; not done");
            Err(unaudited())
        }
        Err(e) => {
            tracing::warn!(error = %e, admin_action = %action, "console: the brain did not answer; a WhatsApp action was not done");
            Err(unaudited())
        }
    }
}

fn unaudited() -> Response {
    shared::http::json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the audit log cannot be written right now, so nothing was done; try again",
    )
}
