//! Fetching a web page an admin names for the knowledge base, without letting the fetch reach
//! inside the network the brain runs in (server-side request forgery): only `http`/`https`,
//! no credentials in the URL, every address the host resolves to must be public (loopback,
//! private, link-local, carrier-grade NAT, unique-local, multicast, documentation and reserved
//! ranges are refused, IPv4 inside IPv6 included), the connection goes to the address that
//! was checked (a second lookup cannot swap it: DNS rebinding), no proxy from the environment
//! is used, and redirects are followed by hand — each new location checked the same way, at
//! most [`MAX_REDIRECTS`]. The body is read up to a size cap and the whole fetch up to a time
//! cap. `KNOWLEDGE_IMPORT_ALLOW` names `host:port` pairs that may be private (an intranet
//! site); nothing else is exempt.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::Url;
use shared::http_client::BodyError;

/// Redirects followed at most.
pub const MAX_REDIRECTS: usize = 5;

/// Why a URL was not fetched — said to the admin as it is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    /// Not an `http`/`https` URL.
    #[error("that is not a web address (http:// or https://)")]
    NotWeb,
    /// Credentials in the URL.
    #[error("a web address with a user name or password in it is not fetched")]
    Credentials,
    /// The host does not resolve.
    #[error("{0} cannot be found (DNS)")]
    Unresolved(String),
    /// The host is (or resolves to) a private address.
    #[error(
        "{0} is an address inside a private network (loopback, private, link-local or reserved), which the import does not fetch"
    )]
    Private(String),
    /// Too many redirects.
    #[error("more than 5 redirects")]
    Redirects,
    /// The body is over the cap (MB).
    #[error("the page is larger than {0} MB")]
    TooLarge(usize),
    /// The fetch took longer than the cap (seconds).
    #[error("the site did not answer within {0} seconds")]
    Timeout(u64),
    /// An HTTP status that is neither success nor redirect.
    #[error("the site answered {0}")]
    Status(u16),
    /// The connection failed.
    #[error("the site could not be reached: {0}")]
    Unreachable(String),
}

/// A fetched page: its final address, its content type and its body.
#[derive(Debug)]
pub struct Page {
    /// Where it was fetched from, after redirects.
    pub url: Url,
    /// Its `Content-Type`, lower case (empty when absent).
    pub content_type: String,
    /// The body, at most the cap.
    pub body: Vec<u8>,
}

/// What a fetch may do.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The most bytes of body read.
    pub max_bytes: usize,
    /// The whole fetch, redirects included.
    pub timeout: Duration,
    /// `host:port` pairs exempt from the private-address check (lower case).
    pub allow: Vec<String>,
}

/// Whether `ip` is an address on the public internet (see the module docs for what is not).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || ip == Ipv4Addr::new(168, 63, 129, 16) // Azure's host endpoint (WireServer)
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // IPv4 inside IPv6: compatible (::a.b.c.d), NAT64 (64:ff9b::/96), 6to4 (2002::/16).
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return is_public_v4(embedded(s[6], s[7]));
    }
    // SIIT (::ffff:0:a.b.c.d) and NAT64, well-known (64:ff9b::/96) or local-use (64:ff9b:1::/48).
    if s[..5] == [0, 0, 0, 0, 0xffff] && s[5] == 0 {
        return is_public_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x64 && s[1] == 0xff9b {
        return s[2..6] == [0, 0, 0, 0] && is_public_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return is_public_v4(embedded(s[1], s[2]));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] == 0) // Teredo
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])) // discard-only
}

/// The addresses to connect to for `url`: its host resolved, every address public (or the
/// `host:port` allowed).
async fn vetted(url: &Url, allow: &[String]) -> Result<Vec<SocketAddr>, FetchError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::NotWeb);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FetchError::Credentials);
    }
    let host = url.host_str().ok_or(FetchError::NotWeb)?;
    let port = url.port_or_known_default().ok_or(FetchError::NotWeb)?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|_| FetchError::Unresolved(host.to_owned()))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(FetchError::Unresolved(host.to_owned()));
    }
    let allowed = allow.iter().any(|a| *a == format!("{host}:{port}"));
    if !allowed && addrs.iter().any(|a| !is_public(a.ip())) {
        return Err(FetchError::Private(host.to_owned()));
    }
    Ok(addrs)
}

/// Fetches `url` within `limits` (see the module docs).
pub async fn fetch(url: &str, limits: &Limits) -> Result<Page, FetchError> {
    let secs = limits.timeout.as_secs();
    tokio::time::timeout(limits.timeout, fetch_within(url, limits))
        .await
        .unwrap_or(Err(FetchError::Timeout(secs)))
}

async fn fetch_within(url: &str, limits: &Limits) -> Result<Page, FetchError> {
    let mut url = Url::parse(url.trim()).map_err(|_| FetchError::NotWeb)?;
    for _ in 0..=MAX_REDIRECTS {
        let addrs = vetted(&url, &limits.allow).await?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let client = shared::http_client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .resolve_to_addrs(&host, &addrs)
            .user_agent(concat!(
                "Switchboard/",
                env!("CARGO_PKG_VERSION"),
                " (knowledge import)"
            ))
            .build()
            .map_err(|e| FetchError::Unreachable(e.to_string()))?;
        let res = client
            .get(url.clone())
            .header(
                reqwest::header::ACCEPT,
                "text/html, text/markdown, text/plain, application/pdf;q=0.9, */*;q=0.1",
            )
            .send()
            .await
            .map_err(|e| FetchError::Unreachable(without_url(e)))?;
        let status = res.status();
        if status.is_redirection() {
            let next = res
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .ok_or(FetchError::Status(status.as_u16()))?;
            url = next;
            continue;
        }
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let content_type = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let body = shared::http_client::body_at_most(res, limits.max_bytes as u64)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => FetchError::TooLarge(limits.max_bytes / (1024 * 1024)),
                BodyError::Broken(e) => FetchError::Unreachable(without_url(e)),
            })?;
        return Ok(Page {
            url,
            content_type,
            body,
        });
    }
    Err(FetchError::Redirects)
}

/// A client error's text without the URL (the admin typed it; the log need not hold it).
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    match std::error::Error::source(&e) {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.1.1.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "64:ff9b:1::a00:1",
            "::ffff:0:7f00:1",
            "168.63.129.16",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn addresses_are_refused_before_any_connection() {
        let limits = Limits {
            max_bytes: 1024,
            timeout: Duration::from_secs(5),
            allow: vec![],
        };
        for (url, want) in [
            ("ftp://example.com/x", FetchError::NotWeb),
            ("file:///etc/passwd", FetchError::NotWeb),
            ("not a url", FetchError::NotWeb),
            ("http://user:pw@example.com/", FetchError::Credentials),
            (
                "http://127.0.0.1:9/",
                FetchError::Private("127.0.0.1".into()),
            ),
            ("http://[::1]:9/", FetchError::Private("[::1]".into())),
            (
                "http://localhost:9/",
                FetchError::Private("localhost".into()),
            ),
            (
                "http://169.254.169.254/latest/meta-data/",
                FetchError::Private("169.254.169.254".into()),
            ),
            (
                "http://0x7f000001/",
                FetchError::Private("127.0.0.1".into()),
            ),
        ] {
            assert_eq!(fetch(url, &limits).await.unwrap_err(), want, "{url}");
        }
    }
}
