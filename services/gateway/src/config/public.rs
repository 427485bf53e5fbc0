//! Settings of the public listener's edge and the web chat page: demo mode kept local, trusted
//! proxies, connection limits, the page's frame ancestors and the API's allowed origins.

use std::net::SocketAddr;
use std::time::Duration;

use shared::config::Env;

/// Demo mode (conversations are phone numbers, admins' included, nothing checked) is for
/// this machine only: refused when it could be reached through a proxy or from elsewhere.
pub(super) fn check_demo_is_local(
    env: &mut Env,
    public_addr: SocketAddr,
    public_url: &str,
    proxy_header: &Option<axum::http::HeaderName>,
) {
    const WHY: &str = "demo mode (WEBCHAT_DEMO=true: conversations are phone numbers, admins' \
                       included, nothing checked) is for this machine only";
    if !public_addr.ip().is_loopback() {
        env.problem(
            "WEBCHAT_DEMO",
            format!(
                "{WHY}, but PUBLIC_ADDR ({public_addr}) is not loopback: unset WEBCHAT_DEMO to \
                 serve visitors"
            ),
        );
    }
    if proxy_header.is_some() {
        env.problem(
            "WEBCHAT_DEMO",
            format!(
                "{WHY}, but TRUSTED_PROXY_HEADER is set (a proxy would pass the internet in): \
                 unset WEBCHAT_DEMO to serve visitors, or unset TRUSTED_PROXY_HEADER"
            ),
        );
    }
    let url_host = reqwest::Url::parse(public_url).ok().and_then(|u| {
        let host = u.host_str()?.to_owned();
        Some(u.port().map_or(host.clone(), |p| format!("{host}:{p}")))
    });
    if !url_host.is_some_and(|h| shared::net::is_loopback_host(&h)) {
        env.problem(
            "WEBCHAT_DEMO",
            format!(
                "{WHY}, but PUBLIC_URL ({public_url}) is not this machine: unset WEBCHAT_DEMO \
                 to serve visitors, or unset PUBLIC_URL"
            ),
        );
    }
}

/// Caps on web chat event streams, and their life.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// `WEBCHAT_MAX_STREAMS` (default 2000): open web chat event streams, all conversations.
    pub max_streams: usize,
    /// `WEBCHAT_MAX_STREAMS_PER_CONTACT` (default 8): open event streams of one conversation.
    pub max_streams_per_contact: usize,
    /// `WEBCHAT_MAX_STREAMS_PER_ADDRESS` (default 16): open event streams of one client address
    /// ([`crate::edge::ClientAddress`]).
    pub max_streams_per_address: usize,
    /// `WEBCHAT_STREAM_MAX_SECS` (default 1800): an event stream is ended after this long (the
    /// page reconnects with `Last-Event-ID`, nothing lost).
    pub stream_max_life: Duration,
}

impl StreamLimits {
    pub(super) fn load(env: &mut Env) -> Self {
        Self {
            max_streams: env.int_in("WEBCHAT_MAX_STREAMS", 2000usize, 1, 1_000_000),
            max_streams_per_contact: env.int_in("WEBCHAT_MAX_STREAMS_PER_CONTACT", 8usize, 1, 1000),
            max_streams_per_address: env.int_in(
                "WEBCHAT_MAX_STREAMS_PER_ADDRESS",
                16usize,
                1,
                1_000_000,
            ),
            stream_max_life: env.secs("WEBCHAT_STREAM_MAX_SECS", 1800, 1, 86_400),
        }
    }
}

/// The public listener's connection limits: `PUBLIC_MAX_CONNECTIONS`,
/// `PUBLIC_MAX_CONNECTIONS_PER_ADDRESS`, `PUBLIC_HEADER_TIMEOUT_SECS`, `PUBLIC_BODY_TIMEOUT_SECS`.
pub(super) fn load_public_limits(env: &mut Env) -> (usize, usize, Duration, Duration) {
    (
        env.int_in("PUBLIC_MAX_CONNECTIONS", 4096usize, 1, 1_000_000),
        env.int_in("PUBLIC_MAX_CONNECTIONS_PER_ADDRESS", 256usize, 1, 1_000_000),
        env.secs("PUBLIC_HEADER_TIMEOUT_SECS", 10, 1, 600),
        env.secs("PUBLIC_BODY_TIMEOUT_SECS", 10, 1, 600),
    )
}

/// `TRUSTED_PROXY_HEADER`, and `TRUSTED_PROXIES`: comma-separated networks (CIDRs or
/// addresses).
pub(super) fn load_proxies(
    env: &mut Env,
) -> (Option<axum::http::HeaderName>, Vec<shared::net::Cidr>) {
    let header = load_proxy_header(env);
    let raw = env.string("TRUSTED_PROXIES", "127.0.0.1/32,::1/128");
    let mut nets = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match shared::net::Cidr::parse(part) {
            Some(c) => nets.push(c),
            None => env.problem(
                "TRUSTED_PROXIES",
                format!(
                    "{part:?} is not a network like 10.0.0.0/8, 127.0.0.1/32 or ::1/128 (no \
                     bits set past the prefix)"
                ),
            ),
        }
    }
    (header, nets)
}

/// `TRUSTED_PROXY_HEADER`: a header name, if set.
pub(super) fn load_proxy_header(env: &mut Env) -> Option<axum::http::HeaderName> {
    let h = env.opt_string("TRUSTED_PROXY_HEADER")?;
    match axum::http::HeaderName::from_bytes(h.trim().as_bytes()) {
        Ok(name) => Some(name),
        Err(_) => {
            env.problem(
                "TRUSTED_PROXY_HEADER",
                format!("{h:?} is not a header name (like X-Forwarded-For)"),
            );
            None
        }
    }
}

/// `WEBCHAT_FRAME_ANCESTORS`: `'self'`, `'none'` (alone), or origins like
/// `https://shop.example`, `https://*.shop.example`, `http://localhost:3000` (no path),
/// separated by spaces or commas; returned space-separated for the CSP.
pub(super) fn frame_ancestors(env: &mut Env) -> String {
    const VAR: &str = "WEBCHAT_FRAME_ANCESTORS";
    let raw = env.string(VAR, "'self'");
    let sources: Vec<&str> = raw
        .split([' ', ',', '\t'])
        .filter(|s| !s.is_empty())
        .collect();
    let mut bad: Vec<&str> = sources
        .iter()
        .copied()
        .filter(|s| !frame_source(s))
        .collect();
    if sources.len() > 1 && sources.contains(&"'none'") {
        bad.push("'none' (it stands alone)");
    }
    if sources.is_empty() || !bad.is_empty() {
        env.problem(
            VAR,
            format!(
                "expected 'self', 'none' or origins like https://shop.example (separated by \
                 spaces or commas); cannot use {}",
                if bad.is_empty() {
                    "an empty list".to_owned()
                } else {
                    bad.join(", ")
                }
            ),
        );
        return "'none'".to_owned();
    }
    sources.join(" ")
}

/// One `frame-ancestors` source: `'self'`, `'none'`, or `http(s)://host[:port]` (the host
/// may start with `*.`).
pub(super) fn frame_source(s: &str) -> bool {
    if matches!(s, "'self'" | "'none'") {
        return true;
    }
    let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, port) = rest.split_once(':').unwrap_or((rest, ""));
    let host = host.strip_prefix("*.").unwrap_or(host);
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    host.split('.').all(label_ok)
        && (port.is_empty() || (port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())))
}

/// `WEBCHAT_ALLOWED_ORIGINS`: origins like `https://shop.example`, or `*`.
pub(super) fn load_origins(env: &mut Env) -> Vec<String> {
    let origins: Vec<String> = env
        .string("WEBCHAT_ALLOWED_ORIGINS", "")
        .split(',')
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    for o in &origins {
        if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
            env.problem(
                "WEBCHAT_ALLOWED_ORIGINS",
                format!("expected origins like https://shop.example or *, got {o:?}"),
            );
        }
    }
    origins
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ancestors(value: &str) -> (String, Vec<String>) {
        let mut env = Env::from_pairs([("WEBCHAT_FRAME_ANCESTORS", value)]);
        let got = frame_ancestors(&mut env);
        let problems = env.problems().iter().map(|p| p.message.clone()).collect();
        (got, problems)
    }

    #[test]
    fn frame_ancestors_are_a_checked_csp_source_list() {
        assert_eq!(
            ancestors("'self', https://shop.example  https://*.shop.example:8443"),
            (
                "'self' https://shop.example https://*.shop.example:8443".to_owned(),
                vec![]
            )
        );
        assert_eq!(ancestors("'none'").0, "'none'");
        // Blank is the default, as for every variable.
        assert_eq!(ancestors(" ").0, "'self'");
        for bad in [
            "*",
            "shop.example",
            "https://shop.example/path",
            "'self'; script-src *",
            "'unsafe-inline'",
            "'none' 'self'",
            "https://-x.example",
            "javascript:alert(1)",
        ] {
            let (got, problems) = ancestors(bad);
            assert_eq!(got, "'none'", "{bad:?}");
            assert_eq!(problems.len(), 1, "{bad:?}");
        }
    }
}
