//! Console API calls the brain answers (conversations, costs, settings, dead letters, audit),
//! passed through with their cookie and CSRF token; the brain checks the session — and that
//! its admin still is one — again. Only the routes [`shared::console::BRAIN_API`] lists for
//! browsers are passed through (the path already found plain); anything else is answered 404
//! here and never reaches the brain.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ConsoleRoutes, forwarded};

/// Largest body passed through (a knowledge file upload is the biggest) but a PDF to import
/// ([`shared::console::MAX_IMPORT_BYTES`]; the session was checked before any is read).
const MAX_BODY: usize = 2 * 1024 * 1024;

/// How long the brain may take: an import fetches a page (20 s) and converts it (30 s).
fn timeout(path: &str) -> std::time::Duration {
    if path.starts_with("/console/api/knowledge/import/") {
        std::time::Duration::from_secs(75)
    } else {
        std::time::Duration::from_secs(20)
    }
}

/// `ANY /console/api/…`: the brain's answer, status and all. `POST /console/api/audit` is the
/// gateway's own way to record its actions and is never passed through from a browser.
pub(super) async fn pass(State(c): State<ConsoleRoutes>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if !shared::console::passes_through(&parts.method, parts.uri.path()) {
        return super::not_found().await;
    }
    let max = if parts.uri.path() == shared::console::IMPORT_PDF {
        shared::console::MAX_IMPORT_BYTES
    } else {
        MAX_BODY
    };
    let Ok(bytes) = axum::body::to_bytes(body, max).await else {
        return shared::http::json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a console request is at most {} MB", max / (1024 * 1024)),
        );
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/console/api", |p| p.as_str());
    let url = c.brain(path_and_query);
    let sent = c
        .inner
        .http
        .request(parts.method.clone(), url)
        .headers(forwarded(&parts.headers))
        .timeout(timeout(parts.uri.path()))
        .body(bytes)
        .send()
        .await;
    let res = match sent {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "console: the brain did not answer");
            return shared::http::json_error(
                StatusCode::BAD_GATEWAY,
                "the brain is not answering; is it running?",
            );
        }
    };
    let status = res.status();
    let content_type = res.headers().get(header::CONTENT_TYPE).cloned();
    match res.bytes().await {
        Ok(b) => {
            let mut out = Response::new(Body::from(b));
            *out.status_mut() = status;
            if let Some(ct) = content_type {
                out.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            out
        }
        Err(_) => {
            shared::http::json_error(StatusCode::BAD_GATEWAY, "the brain's answer was cut off")
                .into_response()
        }
    }
}
