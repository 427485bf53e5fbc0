//! The public listener's edge: who a request comes from, how often it may come, and — in demo
//! mode — that it comes from this machine.
//!
//! - [`ClientAddress`]: the one client address every per-client limit keys on. The TCP peer,
//!   unless the peer is a trusted proxy (`TRUSTED_PROXIES`), whose `TRUSTED_PROXY_HEADER`
//!   names the client; keyed by [`shared::net::address_key`] (IPv4 whole, IPv6 by /64).
//! - [`Throttle`]: `HTTP_RATE_LIMIT_PER_ADDRESS` requests a minute per client address, an
//!   in-process GCRA (each replica counts its own), checked before any handler (so before any
//!   Redis write). Signed Cloud API webhook deliveries are exempt (a `POST` of the webhook
//!   path carrying `X-Hub-Signature-256`): Meta posts them from a few addresses at any volume,
//!   and each is refused before any write unless its signature is right. The webhook's `GET`
//!   handshake and unsigned posts are throttled like any request.
//! - Demo mode (`WEBCHAT_DEMO=true`: web chat conversations are phone numbers, admins
//!   included) answers only requests made on this machine: a request from a TCP peer that is
//!   not loopback, that went through a proxy (any header a proxy or CDN adds: [`proxy_header`])
//!   or names another host (`Host`) gets `403`, whatever its method. A proxy on this machine
//!   that rewrites `Host` and adds none of these headers cannot be told from a browser: the
//!   docs say so.
//!
//! Connection limits (per address, body and header timeouts) are
//! [`shared::http::serve_public`]'s.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use shared::http::{PUBLIC_REFUSED, json_error};

use crate::config::{Config, TransportKind};

/// Where requests come from: the TCP peer, or — from a trusted proxy — the address its header
/// names.
#[derive(Debug, Clone)]
pub struct ClientAddress {
    header: Option<HeaderName>,
    trusted: Arc<[shared::net::Cidr]>,
}

impl ClientAddress {
    /// From `TRUSTED_PROXY_HEADER` and `TRUSTED_PROXIES`.
    pub fn new(cfg: &Config) -> Self {
        Self {
            header: cfg.trusted_proxy_header.clone(),
            trusted: cfg.trusted_proxies.clone().into(),
        }
    }

    /// The key per-client limits use for a request from `peer` (the TCP peer) with
    /// `headers`: the last entry of the last `TRUSTED_PROXY_HEADER` line (the one the proxy
    /// added: a proxy may append a line of its own after the client's, as HAProxy's `option
    /// forwardfor` does) when the peer is in `TRUSTED_PROXIES` and the entry is an address,
    /// else the peer — IPv4 whole, IPv6 by /64. `None` without a peer.
    pub fn key(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
        let peer = peer?.ip();
        let named = self
            .header
            .as_ref()
            .filter(|_| self.trusted.iter().any(|c| c.contains(peer)))
            .and_then(|name| headers.get_all(name).iter().next_back())
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').map(str::trim).find(|p| !p.is_empty()))
            .and_then(parse_address);
        Some(shared::net::address_key(named.unwrap_or(peer)))
    }

    /// [`ClientAddress::key`] of a request served by [`shared::http::serve_public`].
    pub fn key_of<B>(&self, request: &axum::http::Request<B>) -> Option<IpAddr> {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        self.key(request.headers(), peer)
    }
}

/// An address as proxies write it: `203.0.113.5`, `203.0.113.5:4711`, `2001:db8::1`,
/// `[2001:db8::1]:4711`.
fn parse_address(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            s.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|r| r.parse().ok())
        })
}

/// Requests per minute per client address, in this process: GCRA with a burst of a whole
/// minute's allowance.
#[derive(Debug)]
pub struct Throttle {
    /// Time between requests at the steady rate.
    interval: Duration,
    /// How far ahead of now a client's theoretical arrival time may run (the burst).
    tolerance: Duration,
    state: Mutex<ThrottleState>,
}

#[derive(Debug)]
struct ThrottleState {
    /// Each client's theoretical arrival time; a time in the past is the same as no entry.
    tat: HashMap<IpAddr, Instant>,
    pruned: Instant,
}

/// How often entries in the past are dropped (memory holds a minute of clients or so).
const PRUNE_EVERY: Duration = Duration::from_secs(30);

impl Throttle {
    /// `per_minute` requests a minute per client (at least 1).
    pub fn new(per_minute: u32) -> Self {
        let interval = Duration::from_secs(60) / per_minute.max(1);
        Self {
            interval,
            tolerance: Duration::from_secs(60).saturating_sub(interval),
            state: Mutex::new(ThrottleState {
                tat: HashMap::new(),
                pruned: Instant::now(),
            }),
        }
    }

    /// Counts a request of `client` at `now`; `Err(wait)` when it is over the limit.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut s = self.state.lock().expect("never poisoned");
        if now.saturating_duration_since(s.pruned) >= PRUNE_EVERY {
            s.tat.retain(|_, t| *t > now);
            s.pruned = now;
        }
        let tat = s.tat.get(&client).copied().unwrap_or(now).max(now);
        let ahead = tat - now;
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        s.tat.insert(client, tat + self.interval);
        Ok(())
    }
}

/// What the edge checks before any handler runs.
#[derive(Debug, Clone)]
pub struct Edge {
    demo: bool,
    client: ClientAddress,
    throttle: Option<Arc<Throttle>>,
    /// Paths whose signed posts the throttle leaves alone (the Cloud API's webhooks).
    exempt: Vec<&'static str>,
}

/// The header a Cloud API webhook delivery is signed in.
const SIGNATURE_HEADER: &str = "x-hub-signature-256";

impl Edge {
    /// The edge `cfg` asks for.
    pub fn new(cfg: &Config) -> Self {
        let mut exempt = Vec::new();
        if cfg.transports.contains(&TransportKind::Cloud) {
            exempt.push(crate::cloud::webhook::PATH);
        }
        Self {
            demo: cfg.demo_gate(),
            client: ClientAddress::new(cfg),
            throttle: (cfg.http_rate_per_address > 0)
                .then(|| Arc::new(Throttle::new(cfg.http_rate_per_address))),
            exempt,
        }
    }

    /// Whether the throttle leaves `request` alone: a signed post of a webhook path (its
    /// signature is checked before anything is written).
    fn exempt<B>(&self, request: &axum::http::Request<B>) -> bool {
        request.method() == axum::http::Method::POST
            && request.headers().contains_key(SIGNATURE_HEADER)
            && self.exempt.contains(&request.uri().path())
    }

    /// `router` behind the edge's checks.
    pub fn wrap(self, router: axum::Router) -> axum::Router {
        router.layer(axum::middleware::from_fn_with_state(Arc::new(self), gate))
    }
}

/// Logs a warning when the public listener is off loopback (so probably behind a proxy) and
/// `TRUSTED_PROXY_HEADER` is unset: every client would then share the proxy's address.
pub fn warn_without_proxy_header(cfg: &Config) {
    if cfg.trusted_proxy_header.is_none() && !cfg.public_addr.ip().is_loopback() {
        tracing::warn!(
            "PUBLIC_ADDR is not loopback and TRUSTED_PROXY_HEADER is unset: behind a proxy, every \
             client shares the proxy's address, and one can spend everyone's per-address \
             allowances; set TRUSTED_PROXY_HEADER to the header the proxy sets (X-Forwarded-For)"
        );
    }
}

/// The edge's checks, in order: demo mode's local-only rule, then the throttle.
async fn gate(State(edge): State<Arc<Edge>>, request: Request, next: Next) -> Response {
    if edge.demo
        && let Err(why) = local_only(&request)
    {
        metrics::counter!(PUBLIC_REFUSED, "reason" => "demo_not_local").increment(1);
        return json_error(StatusCode::FORBIDDEN, why);
    }
    if let Some(throttle) = &edge.throttle
        && !edge.exempt(&request)
        && let Some(client) = edge.client.key_of(&request)
        && let Err(wait) = throttle.check(client, Instant::now())
    {
        metrics::counter!(PUBLIC_REFUSED, "reason" => "throttled").increment(1);
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut r = json_error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many requests from this address (HTTP_RATE_LIMIT_PER_ADDRESS); try again \
                 in {secs} s"
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, secs.max(1).into());
        return r;
    }
    next.run(request).await
}

/// Headers only a proxy or CDN adds, besides any whose name contains `forwarded` or
/// `client-ip` ([`proxy_header`]).
const PROXY_HEADERS: [&str; 3] = ["cf-connecting-ip", "x-real-ip", "via"];

/// Whether a header (its lowercase name) is one a proxy or CDN adds to name the client or
/// itself: `Forwarded`, `X-Forwarded-*`, `X-Original-Forwarded-For`, `X-Client-IP`,
/// `True-Client-IP`, `X-Cluster-Client-IP`, `CF-Connecting-IP`, `X-Real-IP`, `Via`.
fn proxy_header(name: &str) -> bool {
    PROXY_HEADERS.contains(&name) || name.contains("forwarded") || name.contains("client-ip")
}

/// Demo mode's rule: a request made on this machine (a loopback TCP peer), not through a
/// proxy, naming this machine.
fn local_only<B>(request: &axum::http::Request<B>) -> Result<(), String> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_canonical());
    if !peer.is_some_and(|p| p.is_loopback()) {
        return Err(
            "demo mode (WEBCHAT_DEMO=true) answers this machine only, and this connection \
             comes from another; unset WEBCHAT_DEMO to serve visitors"
                .to_owned(),
        );
    }
    if let Some(name) = request.headers().keys().find(|n| proxy_header(n.as_str())) {
        return Err(format!(
            "demo mode (WEBCHAT_DEMO=true) answers this machine only, and this request came \
             through a proxy ({name}); unset WEBCHAT_DEMO to serve visitors"
        ));
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let authority = request.uri().authority().map(|a| a.as_str());
    let local = host
        .or(authority)
        .is_some_and(shared::net::is_loopback_host)
        && authority.is_none_or(shared::net::is_loopback_host);
    if local {
        Ok(())
    } else {
        Err(
            "demo mode (WEBCHAT_DEMO=true) answers this machine only: the Host must be \
             localhost, 127.x.x.x or [::1]; unset WEBCHAT_DEMO to serve visitors"
                .to_owned(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn client(trusted: &[&str]) -> ClientAddress {
        ClientAddress {
            header: Some(HeaderName::from_static("x-forwarded-for")),
            trusted: trusted
                .iter()
                .map(|c| shared::net::Cidr::parse(c).unwrap())
                .collect(),
        }
    }

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(s.parse().unwrap(), 4711))
    }

    #[test]
    fn the_proxy_header_is_believed_only_from_a_trusted_proxy() {
        let c = client(&["127.0.0.1/32", "::1/128"]);
        let forged = headers(&[("x-forwarded-for", "203.0.113.5")]);
        assert_eq!(
            c.key(&forged, peer("198.51.100.7")),
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(
            c.key(&forged, peer("127.0.0.1")),
            Some("203.0.113.5".parse().unwrap())
        );
        // The last entry is the proxy's; ports and brackets are accepted; garbage is not.
        let chain = headers(&[("x-forwarded-for", "10.0.0.9, [2001:db8::7]:443")]);
        assert_eq!(
            c.key(&chain, peer("::1")),
            Some("2001:db8::".parse().unwrap())
        );
        // Of several lines, the last is the proxy's: the client wrote the ones before it.
        let mut lines = headers(&[("x-forwarded-for", "198.51.100.1, 198.51.100.2")]);
        lines.append("x-forwarded-for", "203.0.113.9".parse().unwrap());
        assert_eq!(
            c.key(&lines, peer("127.0.0.1")),
            Some("203.0.113.9".parse().unwrap())
        );
        let garbage = headers(&[("x-forwarded-for", "unknown")]);
        assert_eq!(
            c.key(&garbage, peer("127.0.0.1")),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(c.key(&forged, None), None);
    }

    /// A demo-mode request for `/chat` from `peer` (none: no peer known) with `headers`.
    fn demo_request(peer: Option<&str>, pairs: &[(&str, &str)]) -> Result<(), String> {
        let mut r = axum::http::Request::get("/chat").body(()).unwrap();
        *r.headers_mut() = headers(pairs);
        r.headers_mut()
            .insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        if let Some(p) = peer {
            r.extensions_mut()
                .insert(ConnectInfo(SocketAddr::new(p.parse().unwrap(), 4711)));
        }
        local_only(&r)
    }

    #[test]
    fn demo_mode_answers_loopback_peers_without_proxy_headers_only() {
        for p in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(demo_request(Some(p), &[]), Ok(()), "{p}");
        }
        for p in ["192.0.2.2", "10.0.0.1", "2001:db8::1", "::ffff:192.0.2.2"] {
            let why = demo_request(Some(p), &[]).unwrap_err();
            assert!(why.contains("another"), "{p}: {why}");
        }
        assert!(demo_request(None, &[]).is_err(), "no peer: refused");
        for name in [
            "forwarded",
            "x-forwarded-for",
            "x-original-forwarded-for",
            "cf-connecting-ip",
            "true-client-ip",
            "x-client-ip",
            "x-cluster-client-ip",
            "x-real-ip",
            "via",
        ] {
            let why = demo_request(Some("127.0.0.1"), &[(name, "203.0.113.5")]).unwrap_err();
            assert!(why.contains(name), "{name}: {why}");
        }
        // Ordinary headers pass.
        let browser = [("user-agent", "Mozilla/5.0"), ("accept", "text/html")];
        assert_eq!(demo_request(Some("127.0.0.1"), &browser), Ok(()));
    }

    #[test]
    fn ipv4_is_keyed_whole_and_ipv6_by_its_64() {
        let c = client(&[]);
        let none = HeaderMap::new();
        let key = |p: &str| c.key(&none, peer(p)).unwrap();
        assert_ne!(key("203.0.113.5"), key("203.0.113.6"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:203.0.113.5"), key("203.0.113.5"));
    }

    #[test]
    fn the_throttle_allows_a_minute_at_once_then_the_steady_rate() {
        let t = Throttle::new(60);
        let (a, b) = (
            "203.0.113.5".parse().unwrap(),
            "203.0.113.6".parse().unwrap(),
        );
        let now = Instant::now();
        for _ in 0..60 {
            assert_eq!(t.check(a, now), Ok(()));
        }
        let wait = t.check(a, now).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(
            t.check(b, now),
            Ok(()),
            "another client has its own allowance"
        );
        assert_eq!(t.check(a, now + Duration::from_secs(1)), Ok(()));
        assert!(t.check(a, now + Duration::from_secs(1)).is_err());
        // Entries in the past are dropped, and a client back after a while starts afresh.
        let later = now + Duration::from_secs(120);
        assert_eq!(t.check(b, later), Ok(()));
        assert_eq!(t.state.lock().unwrap().tat.len(), 1);
        for _ in 0..60 {
            assert_eq!(t.check(a, later), Ok(()));
        }
    }
}
