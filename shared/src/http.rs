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
    /// Connections one client address ([`crate::net::address_key`]: IPv4 whole, IPv6 by /64) may hold
    /// at once, whatever the address (loopback included); one more is closed at once.
    pub max_per_address: usize,
    /// A request's headers must arrive within this (slow clients are cut off).
    pub header_timeout: Duration,
    /// A request's body must arrive within this once its handler starts reading it, plus a
    /// second per [`BODY_MIN_RATE`] bytes received, never more than this ahead of now: cut
    /// after this long without a byte, or below the average rate (`408`, connection closed).
    /// Responses (server-sent events) are never timed.
    pub body_timeout: Duration,
}

/// Counter of connections and requests the public listener refused at its edge, by reason
/// ([`REFUSED_REASONS`]); the service registers it at zero.
pub const PUBLIC_REFUSED: &str = "http_public_refused_total";
/// The reasons [`PUBLIC_REFUSED`] counts: a connection over [`PublicLimits::max_per_address`],
/// a body slower than [`PublicLimits::body_timeout`], and the service's own (`throttled`,
/// `demo_not_local`).
pub const REFUSED_REASONS: [&str; 4] = [
    "address_connections",
    "body_timeout",
    "throttled",
    "demo_not_local",
];

/// The connections each client address holds; a slot gives its place back when dropped.
#[derive(Clone, Default)]
struct AddressSlots(Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

struct AddressSlot {
    slots: AddressSlots,
    key: std::net::IpAddr,
}

impl AddressSlots {
    /// A place for one more connection of `key`, unless it already holds `max`.
    fn take(&self, key: std::net::IpAddr, max: usize) -> Option<AddressSlot> {
        let mut held = self.0.lock().expect("never poisoned");
        let n = held.entry(key).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            slots: self.clone(),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = self.slots.0.lock().expect("never poisoned");
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// The slowest a request body may arrive, on average, once [`PublicLimits::body_timeout`] has
/// passed: each this many bytes received earn the body one more second, so an upload over a
/// slow link (a phone's 3G, ~48 KB/s) completes while a client trickling a few bytes is cut
/// off (Apache's `mod_reqtimeout` MinRate idea). Time earned is never banked beyond one
/// `body_timeout` ahead of now: a body sent fast and then stalled or trickled is cut
/// `body_timeout` after its pace dropped, so holding a connection costs a client this much
/// bandwidth for as long as it holds it.
pub const BODY_MIN_RATE: u64 = 32 * 1024;

/// A request body that must keep arriving, timed from the handler's first read; a handler that
/// never reads it is not timed (the connection closes after its response). The body's time
/// runs out `limit` after the first read, each byte received earns it more
/// ([`BODY_MIN_RATE`]), and the time left never exceeds `limit`: so it is cut after `limit`
/// with no new bytes, and whenever `received < (elapsed − limit) × BODY_MIN_RATE`, with no
/// credit saved up by a fast start. When the time is up the body fails, and `timed_out` tells
/// the server to answer `408`.
struct TimedBody {
    inner: hyper::body::Incoming,
    limit: Duration,
    /// When the body's time runs out (set at the handler's first read).
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    timed_out: Arc<std::sync::atomic::AtomicBool>,
}

impl TimedBody {
    fn new(inner: hyper::body::Incoming, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            deadline: None,
            timed_out: Arc::default(),
        }
    }
}

impl hyper::body::Body for TimedBody {
    type Data = hyper::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.timed_out.load(std::sync::atomic::Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        let limit = this.limit;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let Some(Ok(f)) = &frame
                && let Some(data) = f.data_ref()
            {
                let earned = Duration::from_micros(
                    (data.len() as u64).saturating_mul(1_000_000) / BODY_MIN_RATE,
                );
                let cap = tokio::time::Instant::now() + limit;
                let next = (deadline.deadline() + earned).min(cap);
                deadline.as_mut().reset(next);
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if deadline.as_mut().poll(cx).is_ready() {
            this.timed_out
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Poll::Ready(Some(Err("the request body did not arrive in time".into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `router` on a listener open to the internet until `shutdown`: at most
/// `max_connections` at once and `max_per_address` per client address (more are closed at
/// once, never queued), each request's headers within `header_timeout` and its body within
/// `body_timeout`; on shutdown, open connections finish their requests.
pub async fn serve_public(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: PublicLimits,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let per_address = AddressSlots::default();
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
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (stream, peer) = stream;
        let Some(address_slot) =
            per_address.take(crate::net::address_key(peer.ip()), limits.max_per_address)
        else {
            // Closed now: a queue would let one address hold the listener all the same.
            metrics::counter!(PUBLIC_REFUSED, "reason" => "address_connections").increment(1);
            tracing::debug!(
                "connection refused: its address holds PUBLIC_MAX_CONNECTIONS_PER_ADDRESS"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(timed_service(
            router.clone(),
            peer,
            limits.body_timeout,
        ));
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(address_slot);
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// `router` for one connection from `peer`: handlers read the address as axum's
/// `ConnectInfo`, and a request body slower than `body_timeout` is answered `408`.
fn timed_service(
    router: Router,
    peer: std::net::SocketAddr,
    body_timeout: Duration,
) -> impl tower::Service<
    axum::http::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    tower::service_fn(move |request: axum::http::Request<hyper::body::Incoming>| {
        let router = router.clone();
        async move {
            let (mut parts, body) = request.into_parts();
            parts.extensions.insert(axum::extract::ConnectInfo(peer));
            let body = TimedBody::new(body, body_timeout);
            let timed_out = body.timed_out.clone();
            let body = axum::body::Body::new(body);
            let request = axum::http::Request::from_parts(parts, body);
            let response = tower::ServiceExt::oneshot(router, request).await?;
            if timed_out.load(std::sync::atomic::Ordering::Relaxed) {
                metrics::counter!(PUBLIC_REFUSED, "reason" => "body_timeout").increment(1);
                let mut r = json_error(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive in time (PUBLIC_BODY_TIMEOUT_SECS)",
                );
                r.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
                return Ok(r);
            }
            Ok(response)
        }
    })
}

/// A JSON error body `{"error": "..."}` with a status, for every HTTP API.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> axum::response::Response {
    (status, Json(serde_json::json!({"error": message.into()}))).into_response()
}
