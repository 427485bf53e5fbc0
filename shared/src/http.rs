//! The internal listener every service has (`<SERVICE>_HTTP_ADDR`): `/healthz` (liveness),
//! `/readyz` (Redis, database and service-specific checks, JSON per dependency, 503 when one
//! fails) and `/metrics` (Prometheus). Never exposed publicly.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

use crate::bus::Bus;
use crate::db::Db;

/// The state of one dependency.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckStatus {
    /// The dependency answers.
    pub ok: bool,
    /// A state name where there is more than up/down (a transport: `connected`, `needs_qr`…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CheckStatus {
    /// A dependency that answers.
    pub fn ok() -> Self {
        Self {
            ok: true,
            state: None,
            error: None,
        }
    }

    /// A dependency that does not, and why.
    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            state: None,
            error: Some(error.into()),
        }
    }
}

/// A service-specific readiness check returning named statuses. A status named `info:<name>`
/// is information, not a dependency: `/readyz` shows its state at the top level as
/// `"<name>": "<state>"` and it never makes the service unready.
pub type ExtraCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Vec<(String, CheckStatus)>> + Send>> + Send + Sync>;

/// What `/readyz` looks at.
#[derive(Clone)]
pub struct Readiness {
    /// Redis (through the bus).
    pub bus: Bus,
    /// The database, for services that have one.
    pub db: Option<Db>,
    /// The service's own checks (transports).
    pub extra: Vec<ExtraCheck>,
}

#[derive(Serialize)]
struct ReadyBody {
    status: &'static str,
    #[serde(flatten)]
    info: BTreeMap<String, String>,
    checks: BTreeMap<String, CheckStatus>,
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl Readiness {
    /// Runs every check (each bounded by a timeout).
    pub async fn check(&self) -> (bool, BTreeMap<String, CheckStatus>) {
        let mut checks = BTreeMap::new();
        let redis = match tokio::time::timeout(CHECK_TIMEOUT, self.bus.ping()).await {
            Ok(Ok(())) => CheckStatus::ok(),
            Ok(Err(e)) => CheckStatus::failed(e.to_string()),
            Err(_) => CheckStatus::failed("timed out"),
        };
        checks.insert("redis".to_owned(), redis);
        if let Some(db) = &self.db {
            let status = match tokio::time::timeout(CHECK_TIMEOUT, db.ping()).await {
                Ok(Ok(())) => CheckStatus::ok(),
                Ok(Err(e)) => CheckStatus::failed(e.to_string()),
                Err(_) => CheckStatus::failed("timed out"),
            };
            checks.insert("database".to_owned(), status);
        }
        for extra in &self.extra {
            for (name, status) in extra().await {
                checks.insert(name, status);
            }
        }
        let ready = checks.values().all(|c| c.ok);
        (ready, checks)
    }
}

#[derive(Clone)]
struct AppState {
    readiness: Readiness,
    metrics: PrometheusHandle,
}

/// `/healthz`, `/readyz`, `/metrics`; services merge their own internal routes into it.
pub fn internal_router(readiness: Readiness, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(AppState { readiness, metrics })
}

async fn healthz() -> impl IntoResponse {
    match crate::liveness::unhealthy() {
        None => (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "stuck", "reason": reason})),
        ),
    }
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let (ready, mut checks) = s.readiness.check().await;
    let info_keys: Vec<String> = checks
        .keys()
        .filter(|k| k.starts_with("info:"))
        .cloned()
        .collect();
    let mut info = BTreeMap::new();
    for k in info_keys {
        if let Some(c) = checks.remove(&k) {
            info.insert(k["info:".len()..].to_owned(), c.state.unwrap_or_default());
        }
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(ReadyBody {
            status: if ready { "ready" } else { "not_ready" },
            info,
            checks,
        }),
    )
}

async fn render_metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Limits of a listener open to the internet.
#[derive(Debug, Clone, Copy)]
pub struct PublicLimits {
    /// Connections served at once; the next waits in the kernel's backlog.
    pub max_connections: usize,
    /// A request's headers must arrive within this (slow clients are cut off). Bodies and
    /// responses (server-sent events) are not timed here.
    pub header_timeout: std::time::Duration,
}

/// Serves `router` on a listener open to the internet until `shutdown`: at most
/// `max_connections` at once, each request's headers within `header_timeout`; on shutdown,
/// open connections finish their requests.
pub async fn serve_public(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: PublicLimits,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            s = slots.clone().acquire_owned() => s.expect("never closed"),
        };
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            a = listener.accept() => match a {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (stream, peer) = stream;
        let _ = stream.set_nodelay(true);
        // Handlers read the client's address as axum's `ConnectInfo`.
        let service = tower::ServiceExt::map_request(
            router.clone(),
            move |mut r: axum::http::Request<hyper::body::Incoming>| {
                r.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                r
            },
        );
        let service = hyper_util::service::TowerToHyperService::new(service);
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A JSON error body `{"error": "..."}` with a status, for every HTTP API.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> axum::response::Response {
    (status, Json(serde_json::json!({"error": message.into()}))).into_response()
}
