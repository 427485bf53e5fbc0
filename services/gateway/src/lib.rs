//! The `gateway` service: holds the WhatsApp session (and the web chat), publishes inbound
//! messages and delivers outbound ones.
//!
//! - [`ingest`]: every transport hands received messages to [`ingest::Ingest`] — duplicates
//!   dropped, rate limits enforced (Redis GCRA shared by all replicas), media stored, event
//!   published.
//! - [`deliver`]: the outbound consumer — order per chat, WhatsApp formatting, splitting,
//!   sent-records against double sends, retries and dead letters.
//! - [`transport`]: the trait and the set of configured transports; [`webchat`] is one.
//! - [`storage`]: what is kept in Redis and for how long, and Redis's high-water mark.
//! - Two listeners: the internal `GATEWAY_HTTP_ADDR` (health, readiness, metrics, `/qr`) and the
//!   public `PUBLIC_ADDR` (web chat, webhooks and the owner's [`console`]), behind its [`edge`]
//!   (client addresses, throttle, demo mode's local-only rule).

// Every public item says what it is for; the lint keeps it so.
#![warn(missing_docs)]

pub mod admit;
pub mod alert;
pub mod cloud;
pub mod commands;
pub mod config;
pub mod console;
pub mod deliver;
pub mod edge;
pub mod format;
pub mod ingest;
pub mod media;
pub mod metrics;
pub mod receipts;
pub mod storage;
pub mod transport;
pub mod typing;
pub mod web;
pub mod webchat;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use shared::bus::Stream;
use shared::config::ServiceName;
use shared::http::{CheckStatus, ExtraCheck, json_error};
use shared::service::{Context, Running, Spec, Tasks};

pub use commands::Commands;
pub use config::Config;

use crate::config::TransportKind;
use crate::transport::{SessionState, Transport, Transports};

/// How the shared skeleton runs this service.
pub const SPEC: Spec = Spec {
    name: ServiceName::Gateway,
    uses_db: false,
    consumes: &[Stream::Outbound, Stream::Webhooks],
    publishes: &[
        Stream::Inbound,
        Stream::Outbound,
        Stream::Webhooks,
        Stream::Events,
    ],
};

/// Builds the service; its main future returns when `ctx.shutdown` is cancelled.
pub fn start(ctx: Context<Config>) -> anyhow::Result<Running> {
    let cfg = ctx.config;
    let bus = ctx.bus;
    let shutdown = ctx.shutdown;
    let events = shared::events::Events::new(ctx.common.events, "gateway");
    metrics::register(&cfg.transports);

    let (typing, indicators) = typing::channel(cfg.web.typing, cfg.web.burst_window);
    let receipts = receipts::Receipts::new(&bus);
    let ingest = ingest::Ingest::new(&bus, &cfg, typing.clone());
    let Built {
        transports,
        public,
        webchat_history,
        web_transport,
        cloud,
        high_water: webchat_high_water,
    } = build_transports(&cfg, &bus, &ingest, &events, &shutdown)?;
    let console = console::ConsoleRoutes::new(&cfg.console, &bus, transports.clone());
    let public = public.merge(console.routes()).fallback(|| async {
        json_error(
            StatusCode::NOT_FOUND,
            "no such route (the web chat is at /chat, the owner's console at /console)",
        )
    });
    let public = edge::Edge::new(&cfg).wrap(public);
    edge::warn_without_proxy_header(&cfg);

    let public_listener = bind_public(cfg.public_addr)?;

    let deliverer = Arc::new(deliver::Deliverer::new(
        transports.clone(),
        receipts.clone(),
        typing,
        &bus,
    ));
    let consumer = bus.consumer(Stream::Outbound, deliverer);

    let routes = internal_routes(&transports);
    let check = transport_check(&transports);

    let mut tasks = Tasks::new(shutdown);
    let shutdown = tasks.shutdown().clone();
    {
        let shutdown = shutdown.clone();
        tasks.spawn("outbound consumer", async move {
            Ok(consumer.run(shutdown).await?)
        });
    }
    {
        let transports = transports.clone();
        tasks.spawn("typing indicators", async move {
            indicators.run(transports, shutdown).await;
            Ok(())
        });
    }
    spawn_transports(&mut tasks, web_transport, webchat_history, &bus);
    if let (Some(c), Some(cloud_cfg)) = (cloud, &cfg.cloud) {
        spawn_cloud(&mut tasks, c, cloud_cfg, &cfg, &bus, ingest, receipts);
    }
    spawn_public(&mut tasks, &cfg, &bus, public_listener, public);
    if let Some(hw) = webchat_high_water.filter(|_| cfg.storage.high_water_percent > 0) {
        let (conn, percent) = (bus.connection(), cfg.storage.high_water_percent);
        tasks.every("Redis high water", storage::CHECK_EVERY, move || {
            let (hw, mut conn) = (hw.clone(), conn.clone());
            async move { hw.check(&mut conn, percent).await }
        });
    }
    tasks.every("session state", Duration::from_secs(5), move || {
        for t in transports.all() {
            metrics::session_state(t.kind(), t.state());
        }
        std::future::ready(())
    });
    Ok(Running {
        routes: Some(routes),
        checks: vec![check],
        tasks,
    })
}

/// The transports' own work: the WhatsApp Web sidecar, the web chat's notifications.
fn spawn_transports(
    tasks: &mut Tasks,
    web_transport: Option<web::Web>,
    webchat_history: Option<webchat::History>,
    bus: &shared::bus::Bus,
) {
    let shutdown = tasks.shutdown().clone();
    if let Some(w) = web_transport {
        let shutdown = shutdown.clone();
        tasks.spawn("WhatsApp Web", async move {
            w.run(shutdown).await;
            Ok(())
        });
    }
    if let Some(history) = webchat_history {
        let client = bus.client().clone();
        tasks.spawn("web chat notifications", async move {
            history.relay(client, shutdown).await;
            Ok(())
        });
    }
}

/// The Cloud API's own work: the webhooks consumer and the access-token check.
fn spawn_cloud(
    tasks: &mut Tasks,
    c: cloud::Cloud,
    cloud_cfg: &config::CloudConfig,
    cfg: &Config,
    bus: &shared::bus::Bus,
    ingest: ingest::Ingest,
    receipts: receipts::Receipts,
) {
    let shutdown = tasks.shutdown().clone();
    let handler = cloud::inbound::Webhooks::new(
        c.clone(),
        ingest,
        receipts,
        cloud_cfg.phone_number_id.clone(),
        cfg.max_media_bytes,
    );
    let consumer = bus.consumer(Stream::Webhooks, Arc::new(handler));
    {
        let shutdown = shutdown.clone();
        tasks.spawn("webhooks consumer", async move {
            Ok(consumer.run(shutdown).await?)
        });
    }
    let every = cloud_cfg.check_every;
    tasks.spawn("Cloud API token check", async move {
        c.watch_token(every, shutdown).await;
        Ok(())
    });
}

/// The public listener, once Redis is known to hold the media store.
fn spawn_public(
    tasks: &mut Tasks,
    cfg: &Config,
    bus: &shared::bus::Bus,
    listener: tokio::net::TcpListener,
    public: Router,
) {
    let limits = shared::http::PublicLimits {
        max_connections: cfg.max_connections,
        max_per_address: cfg.max_connections_per_address,
        header_timeout: cfg.header_timeout,
        body_timeout: cfg.body_timeout,
    };
    let (room_bus, media_cap) = (bus.clone(), cfg.media_cap_bytes);
    let shutdown = tasks.shutdown().clone();
    tasks.spawn("public listener", async move {
        media::check_redis_room(&room_bus, media_cap).await?;
        Ok(shared::http::serve_public(listener, public, limits, shutdown).await?)
    });
}

/// The transports `TRANSPORTS` asks for, and what the service runs for them.
struct Built {
    transports: Transports,
    /// The public routes (the web chat's).
    public: Router,
    webchat_history: Option<webchat::History>,
    web_transport: Option<web::Web>,
    cloud: Option<cloud::Cloud>,
    /// The web chat's view of Redis's high-water mark, kept up to date by a task.
    high_water: Option<storage::HighWater>,
}

fn build_transports(
    cfg: &Config,
    bus: &shared::bus::Bus,
    ingest: &ingest::Ingest,
    events: &shared::events::Events,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Built> {
    let mut list: Vec<Arc<dyn Transport>> = Vec::new();
    let mut public = Router::new();
    let mut webchat_history = None;
    let mut web_transport: Option<web::Web> = None;
    let mut cloud_transport = None;
    let mut high_water = None;
    for kind in &cfg.transports {
        match kind {
            TransportKind::Webchat => {
                let wc = webchat::Webchat::new(bus, cfg, ingest.clone(), shutdown.clone());
                public = public.merge(wc.routes());
                webchat_history = Some(wc.history().clone());
                high_water = Some(wc.high_water().clone());
                list.push(Arc::new(wc));
            }
            TransportKind::Web => {
                web::register_metrics();
                let w = web::Web::new(
                    cfg.web.clone(),
                    ingest.clone(),
                    alert::Alerts::new(cfg, bus, events),
                    bus,
                );
                web_transport = Some(w.clone());
                list.push(Arc::new(w));
            }
            TransportKind::Cloud => {
                let cloud_cfg = cfg
                    .cloud
                    .as_ref()
                    .context("the cloud transport has no configuration")?;
                let c = cloud::Cloud::new(cloud_cfg, alert::Alerts::new(cfg, bus, events));
                public = public.merge(cloud::webhook::routes(cloud_cfg, bus));
                cloud_transport = Some(c.clone());
                list.push(Arc::new(c));
            }
        }
    }
    Ok(Built {
        transports: Transports::new(list),
        public,
        webchat_history,
        web_transport,
        cloud: cloud_transport,
        high_water,
    })
}

/// The public listener, bound now so a taken port stops startup.
fn bind_public(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on PUBLIC_ADDR {addr}"))?;
    listener.set_nonblocking(true)?;
    tracing::info!(public_addr = %addr, "public listener (web chat, webhooks)");
    Ok(tokio::net::TcpListener::from_std(listener)?)
}

/// The gateway's routes on the internal listener: `/qr`.
fn internal_routes(transports: &Transports) -> Router {
    let transports = transports.clone();
    Router::new().route(
        "/qr",
        get(move |q: axum::extract::Query<QrQuery>| {
            let t = transports.clone();
            async move { qr(&t, &q) }
        }),
    )
}

/// `/readyz`: each transport's session, ready when connected.
fn transport_check(transports: &Transports) -> ExtraCheck {
    let transports = transports.clone();
    Arc::new(move || {
        let t = transports.clone();
        Box::pin(async move {
            t.all()
                .iter()
                .map(|t| {
                    let state = t.state();
                    (
                        format!("transport:{}", t.kind().as_str()),
                        CheckStatus {
                            ok: state == SessionState::Connected,
                            state: Some(state.as_str().to_owned()),
                            error: None,
                        },
                    )
                })
                .collect()
        })
    })
}

#[derive(serde::Deserialize)]
struct QrQuery {
    format: Option<String>,
}

/// `code` drawn as a 256-px SVG QR code response (none when it cannot be encoded); `/qr` and
/// the console share it.
pub(crate) fn qr_svg(code: &str) -> Option<axum::response::Response> {
    use axum::response::IntoResponse;
    let qr = qrcode::QrCode::new(code.as_bytes()).ok()?;
    let svg = qr
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .build();
    Some(([(axum::http::header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

/// `/qr` (internal listener only): the QR code to link WhatsApp as an SVG image (or the
/// pairing code), `?format=json` for the session state and the raw values.
fn qr(transports: &Transports, q: &QrQuery) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some((t, p)) = transports
        .all()
        .iter()
        .find_map(|t| t.pairing().map(|p| (t, p)))
    else {
        return json_error(
            StatusCode::NOT_FOUND,
            "no transport is waiting for a QR code to be scanned",
        );
    };
    let state = t.state();
    let (code, pairing) = (p.qr, p.code);
    if q.format.as_deref() == Some("json") || (code.is_none() && pairing.is_some()) {
        return axum::Json(serde_json::json!({
            "transport": t.kind().as_str(),
            "state": state.as_str(),
            "qr": code,
            "pairing_code": pairing,
        }))
        .into_response();
    }
    match code.as_deref().and_then(qr_svg) {
        Some(svg) => svg,
        None => json_error(
            StatusCode::NOT_FOUND,
            format!(
                "no QR code to scan: the WhatsApp Web session is {}",
                state.as_str()
            ),
        ),
    }
}
