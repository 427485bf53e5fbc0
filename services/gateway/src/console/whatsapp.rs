//! The console's WhatsApp part, answered by the gateway (it holds the sessions): each
//! transport's state, the QR code or pairing code while unlinked, log out and relink — each
//! recorded in the brain's audit log.

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
    let done = match action.as_str() {
        "logout" => t.logout().await,
        "relink" => t.relink().await,
        _ => {
            return shared::http::json_error(
                StatusCode::NOT_FOUND,
                "the action is logout or relink",
            );
        }
    };
    if let Err(why) = done {
        return shared::http::json_error(StatusCode::CONFLICT, why);
    }
    // The audit log is the brain's: recorded there with this request's own session.
    let record = c
        .inner
        .http
        .post(format!("{}/console/api/audit", c.inner.cfg.brain_url))
        .headers(forwarded(req.headers()))
        .json(&serde_json::json!({"action": format!("whatsapp.{action}"), "target": kind}))
        .send()
        .await;
    if !record.is_ok_and(|r| r.status().is_success()) {
        tracing::warn!(admin_action = %action, "console: could not record a WhatsApp action in the audit log");
    }
    tracing::info!(by = %shared::redact::Redacted(&session.admin.name), transport = %kind, %action, "console: WhatsApp action");
    axum::Json(serde_json::json!({ "done": action })).into_response()
}
