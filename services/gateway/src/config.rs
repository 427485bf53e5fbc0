//! The gateway's own configuration.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use shared::config::{CommonConfig, Env};

/// A transport the gateway can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// WhatsApp Web in Chromium.
    Web,
    /// The official WhatsApp Business Cloud API.
    Cloud,
    /// The gateway's web chat page and JSON API.
    Webchat,
}

impl TransportKind {
    /// The name in `TRANSPORTS`, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Cloud => "cloud",
            Self::Webchat => "webchat",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "web" => Some(Self::Web),
            "cloud" => Some(Self::Cloud),
            "webchat" => Some(Self::Webchat),
            _ => None,
        }
    }
}

/// Gateway settings (beyond the common variables).
#[derive(Debug, Clone)]
pub struct Config {
    /// `TRANSPORTS` (default `webchat`): comma-separated `web`, `cloud`, `webchat`.
    pub transports: Vec<TransportKind>,
    /// `PUBLIC_ADDR` (default `127.0.0.1:8080`): the public listener (web chat, webhooks).
    pub public_addr: SocketAddr,
    /// The owner's console at `/console`.
    pub console: ConsoleConfig,
    /// `WEBCHAT_DEMO` (default false): conversations are phone numbers and nothing is checked
    /// — for trying the bot on this machine only (refused unless `PUBLIC_ADDR` is loopback).
    /// Otherwise the web chat serves visitors, each with its own token.
    pub webchat_demo: bool,
    /// `WEBCHAT_TOKEN`: a server-to-server key that may act on any issued visitor.
    pub webchat_token: Option<SecretString>,
    /// `WEBCHAT_SECRET`: the key visitor ids and tokens are made with; unset = one generated
    /// once and kept in Redis (so replicas agree).
    pub webchat_secret: Option<SecretString>,
    /// `WEBCHAT_IDENTITY_SECRET`: the business signs its user ids with it (`user_hash`), to
    /// get the same visitor on every device.
    pub webchat_identity_secret: Option<SecretString>,
    /// `WEBCHAT_VISITOR_TOKEN_DAYS` (default 30, 1–365): how long a visitor token is valid
    /// (the page renews it before then); tokens issued before expiry existed stay valid this
    /// long after the upgrade.
    pub visitor_token_days: u32,
    /// `WEBCHAT_FRAME_ANCESTORS` (default `'self'`): the sites that may embed the chat page in
    /// a frame, as the page's CSP `frame-ancestors` source list.
    pub webchat_frame_ancestors: String,
    /// `WEBCHAT_VISITORS_PER_HOUR` (default 20; 0 = off): anonymous visitors one client
    /// address may create per hour.
    pub visitors_per_hour: u32,
    /// `WEBCHAT_VISITORS` (default `open`): `off` creates no visitors (403); the brain then
    /// refuses existing ones too.
    pub visitors_open: bool,
    /// `TRUSTED_PROXY_HEADER`: the header a reverse proxy puts the client's address in (like
    /// `X-Forwarded-For`; its last entry is used); unset = the connection's address.
    pub trusted_proxy_header: Option<axum::http::HeaderName>,
    /// `TRUSTED_PROXIES` (default `127.0.0.1/32,::1/128`): the networks whose connections'
    /// `TRUSTED_PROXY_HEADER` is believed; from anywhere else the header is ignored.
    pub trusted_proxies: Vec<shared::net::Cidr>,
    /// `HTTP_RATE_LIMIT_PER_ADDRESS` (default 600; 0 = off): requests a minute one client
    /// address may make on the public listener (Cloud API webhooks exempt).
    pub http_rate_per_address: u32,
    /// `MEDIA_TTL_HOURS` (default 24): how long stored media lives.
    pub media_ttl: Duration,
    /// `MAX_MEDIA_MB` (default 16): the largest single media item (and web chat body).
    pub max_media_bytes: u64,
    /// `MEDIA_CAP_MB` (default 256): total bytes of stored media; the oldest items are evicted
    /// to stay under it.
    pub media_cap_bytes: u64,
    /// `PUBLIC_MAX_CONNECTIONS` (default 4096): connections the public listener serves at once.
    pub max_connections: usize,
    /// `PUBLIC_MAX_CONNECTIONS_PER_ADDRESS` (default 256): connections one client address
    /// (the TCP peer; IPv6 by /64) may hold at once; more are closed at once.
    pub max_connections_per_address: usize,
    /// `PUBLIC_HEADER_TIMEOUT_SECS` (default 10): a request's headers must arrive within this.
    pub header_timeout: Duration,
    /// `PUBLIC_BODY_TIMEOUT_SECS` (default 10): a request's body must arrive whole within
    /// this (`408`); event streams' responses are not timed.
    pub body_timeout: Duration,
    /// `WEBCHAT_MAX_STREAMS` (default 2000): open web chat event streams, all conversations.
    pub max_streams: usize,
    /// `WEBCHAT_MAX_STREAMS_PER_CONTACT` (default 8): open event streams of one conversation.
    pub max_streams_per_contact: usize,
    /// `WEBCHAT_MAX_UPLOADS` (default 16): file uploads read at once.
    pub max_uploads: usize,
    /// `RATE_LIMIT_PER_CONTACT` (default 10; 0 = off): messages per minute per sender.
    pub rate_per_contact: u32,
    /// `RATE_LIMIT_GLOBAL` (default 100; 0 = off): messages per minute over all senders.
    pub rate_global: u32,
    /// `RATE_LIMIT_VISITORS` (default 100; 0 = off): messages per minute over all web chat
    /// visitors — their own budget, apart from `RATE_LIMIT_GLOBAL`'s.
    pub rate_visitors: u32,
    /// `RATE_LIMIT_NOTICE`: what a limited sender is told (once per minute).
    pub rate_notice: String,
    /// `BUSY_NOTICE`: what a sender is told when the global limit is reached.
    pub busy_notice: String,
    /// What the gateway keeps: text limit, histories' lifetime, Redis's high-water mark.
    pub storage: crate::storage::Storage,
    /// The `web` transport (WhatsApp Web in Chromium through the sidecar).
    pub web: WebConfig,
    /// The `cloud` transport (the official Cloud API), when `TRANSPORTS` names it.
    pub cloud: Option<CloudConfig>,
    /// `ALERT_WEBHOOK_URL`: transport alerts (a logged-out session, a message WhatsApp
    /// refused) are POSTed here too.
    pub alert_webhook: Option<SecretString>,
    /// `ADMIN_NUMBERS`: admins told about transport alerts.
    pub admins: Vec<shared::phone::Phone>,
    /// `WEBCHAT_ALLOWED_ORIGINS`: origins whose pages may call the web chat API (a widget on
    /// the business's website), comma-separated, or `*`; unset = same origin only.
    pub webchat_origins: Vec<String>,
}

/// Settings of the `web` transport.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// `WA_SIDECAR_DIR`: the sidecar's folder (default: found next to the executable or in the
    /// source tree, `services/gateway/wa-sidecar`).
    pub sidecar_dir: std::path::PathBuf,
    /// `WA_NODE` (default `node`).
    pub node: String,
    /// `CHROMIUM_PATH` (default `/usr/bin/chromium`).
    pub chromium: String,
    /// `WA_SESSION_DIR` (default `data/wa-session`): the linked-device session.
    pub session_dir: std::path::PathBuf,
    /// `WA_PAIRING_NUMBER`: pair by code instead of QR.
    pub pairing_number: Option<String>,
    /// `WA_HEARTBEAT_SECS` (default 15).
    pub heartbeat: Duration,
    /// `WA_STUCK_SECS` (default 120): not connected this long while "ready" = stuck.
    pub stuck: Duration,
    /// `WA_REPLY_DELAY_MS` (default `800-2000`): typing shown this long (jittered) before a send.
    pub reply_delay_ms: (u64, u64),
}

/// Settings of the `cloud` transport (all four credentials are required when it runs).
#[derive(Debug, Clone)]
pub struct CloudConfig {
    /// `WA_CLOUD_PHONE_NUMBER_ID`: the business phone number's id (not the number).
    pub phone_number_id: String,
    /// `WA_CLOUD_ACCESS_TOKEN`: a system user's access token with `whatsapp_business_messaging`.
    pub access_token: SecretString,
    /// `WA_CLOUD_APP_SECRET`: the Meta app's secret; webhook bodies are signed with it.
    pub app_secret: SecretString,
    /// `WA_CLOUD_VERIFY_TOKEN`: the token Meta's webhook setup echoes back.
    pub verify_token: SecretString,
    /// `WA_CLOUD_GRAPH_URL` (default [`GRAPH_URL`]): the Graph API, version included.
    pub graph_url: String,
    /// `WA_CLOUD_CHECK_SECS` (default 300): how often the access token is checked.
    pub check_every: Duration,
}

/// The Graph API the `cloud` transport calls by default (its current version).
pub const GRAPH_URL: &str = "https://graph.facebook.com/v26.0";

impl CloudConfig {
    /// Read whether or not `cloud` runs (so `vars` lists them); problems and a configuration
    /// only when it does.
    fn load(env: &mut Env, enabled: bool) -> Option<Self> {
        let phone_number_id = env.opt_string("WA_CLOUD_PHONE_NUMBER_ID");
        let access_token = env.secret("WA_CLOUD_ACCESS_TOKEN");
        let app_secret = env.secret("WA_CLOUD_APP_SECRET");
        let verify_token = env.secret("WA_CLOUD_VERIFY_TOKEN");
        let graph_url = env
            .http_url("WA_CLOUD_GRAPH_URL")
            .unwrap_or_else(|| GRAPH_URL.to_owned());
        let check_every = env.secs("WA_CLOUD_CHECK_SECS", 300, 5, 86_400);
        if !enabled {
            return None;
        }
        match &phone_number_id {
            None => env.problem(
                "WA_CLOUD_PHONE_NUMBER_ID",
                "is required with TRANSPORTS=cloud: the business phone number's id",
            ),
            Some(id) if !id.bytes().all(|b| b.is_ascii_digit()) => env.problem(
                "WA_CLOUD_PHONE_NUMBER_ID",
                "expected the phone number's id (digits, from the app's WhatsApp > API Setup \
                 page), not the number",
            ),
            Some(_) => {}
        }
        for (name, value, what) in [
            (
                "WA_CLOUD_ACCESS_TOKEN",
                &access_token,
                "a system user's access token",
            ),
            ("WA_CLOUD_APP_SECRET", &app_secret, "the Meta app's secret"),
            (
                "WA_CLOUD_VERIFY_TOKEN",
                &verify_token,
                "a token of your choice, also entered in the app's webhook setup",
            ),
        ] {
            if value.is_none() {
                env.problem(name, format!("is required with TRANSPORTS=cloud: {what}"));
            }
        }
        Some(Self {
            phone_number_id: phone_number_id?,
            access_token: access_token?,
            app_secret: app_secret?,
            verify_token: verify_token?,
            graph_url,
            check_every,
        })
    }
}

impl WebConfig {
    fn load(env: &mut Env, enabled: bool) -> Self {
        let sidecar_dir = match env.opt_string("WA_SIDECAR_DIR") {
            Some(d) => std::path::PathBuf::from(d),
            None => find_sidecar().unwrap_or_else(|| "wa-sidecar".into()),
        };
        if enabled && !sidecar_dir.join("index.mjs").exists() {
            env.problem(
                "WA_SIDECAR_DIR",
                format!(
                    "no WhatsApp Web sidecar (index.mjs) in {}; set WA_SIDECAR_DIR",
                    sidecar_dir.display()
                ),
            );
        }
        let delay = env.string("WA_REPLY_DELAY_MS", "800-2000");
        let reply_delay_ms = match delay.split_once('-') {
            Some((a, b)) => match (a.trim().parse::<u64>(), b.trim().parse::<u64>()) {
                (Ok(a), Ok(b)) if a <= b && b <= 60_000 => (a, b),
                _ => {
                    env.problem(
                        "WA_REPLY_DELAY_MS",
                        "expected a range of milliseconds like 800-2000",
                    );
                    (800, 2000)
                }
            },
            None => match delay.trim().parse::<u64>() {
                Ok(n) if n <= 60_000 => (n, n),
                _ => {
                    env.problem(
                        "WA_REPLY_DELAY_MS",
                        "expected milliseconds like 1000 or a range like 800-2000",
                    );
                    (800, 2000)
                }
            },
        };
        Self {
            sidecar_dir,
            node: env.string("WA_NODE", "node"),
            chromium: env.string("CHROMIUM_PATH", "/usr/bin/chromium"),
            session_dir: env.string("WA_SESSION_DIR", "data/wa-session").into(),
            pairing_number: env.opt_string("WA_PAIRING_NUMBER"),
            heartbeat: env.secs("WA_HEARTBEAT_SECS", 15, 1, 600),
            stuck: env.secs("WA_STUCK_SECS", 120, 5, 3600),
            reply_delay_ms,
        }
    }
}

/// The sidecar next to the executable (images), or in the source tree (`target/<profile>/`).
fn find_sidecar() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [
        dir.join("wa-sidecar"),
        dir.join("../share/switchboard/wa-sidecar"),
        dir.join("../../services/gateway/wa-sidecar"),
        dir.join("../../../services/gateway/wa-sidecar"),
    ]
    .into_iter()
    .find(|d| d.join("index.mjs").exists())
}

/// Longest a typing indicator is shown for one message.
pub const TYPING_CAP: Duration = Duration::from_secs(25);
/// The owner's console (`/console` on the public listener).
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// `PUBLIC_URL` (default `http://<PUBLIC_ADDR>`): where the owner reaches the console;
    /// cookies are `Secure` when it is `https://`.
    pub public_url: String,
    /// `BRAIN_URL` (default `http://127.0.0.1:9182`): the brain's internal listener, which
    /// serves the console API the gateway passes signed-in admins through to.
    pub brain_url: String,
    /// `CONSOLE_SESSION_HOURS` (default 12): how long a sign-in lasts.
    pub session_ttl: std::time::Duration,
}

impl ConsoleConfig {
    fn load(env: &mut Env) -> Self {
        Self {
            public_url: shared::console::public_url(env),
            brain_url: env
                .http_url("BRAIN_URL")
                .unwrap_or_else(|| "http://127.0.0.1:9182".to_owned()),
            session_ttl: shared::console::session_ttl(env),
        }
    }

    /// Cookies carry `Secure` (the console is served over HTTPS).
    pub fn secure(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

/// WhatsApp's limit on one text message.
pub const MAX_TEXT_CHARS: usize = 4096;

const MB: u64 = 1024 * 1024;

impl Config {
    /// Reads the gateway's variables; problems are recorded in `env`.
    pub fn load(env: &mut Env, _common: &CommonConfig) -> Self {
        let transports = load_transports(env);
        let public_addr = env.addr("PUBLIC_ADDR", "127.0.0.1:8080");
        let console = ConsoleConfig::load(env);
        let webchat = transports.contains(&TransportKind::Webchat);
        let webchat_demo = env.flag("WEBCHAT_DEMO", false);
        let webchat_token = env.secret("WEBCHAT_TOKEN");
        let webchat_secret = env.secret("WEBCHAT_SECRET");
        let webchat_identity_secret = env.secret("WEBCHAT_IDENTITY_SECRET");
        check_lengths(
            env,
            [
                ("WEBCHAT_TOKEN", &webchat_token, 16),
                ("WEBCHAT_SECRET", &webchat_secret, 32),
                ("WEBCHAT_IDENTITY_SECRET", &webchat_identity_secret, 16),
            ],
        );
        let visitor_token_days = env.int_in("WEBCHAT_VISITOR_TOKEN_DAYS", 30u32, 1, 365);
        let webchat_frame_ancestors = frame_ancestors(env);
        let visitors_per_hour = env.int_in("WEBCHAT_VISITORS_PER_HOUR", 20u32, 0, 1_000_000);
        let visitors_open = shared::usage::visitors_open(env);
        let (trusted_proxy_header, trusted_proxies) = load_proxies(env);
        if webchat && webchat_demo {
            check_demo_is_local(env, public_addr, &console.public_url, &trusted_proxy_header);
        }
        let http_rate_per_address = env.int_in("HTTP_RATE_LIMIT_PER_ADDRESS", 600u32, 0, 1_000_000);
        let (media_ttl, max_media_bytes, media_cap_bytes) = load_media(env);
        let (max_connections, max_connections_per_address, header_timeout, body_timeout) =
            load_public_limits(env);
        let max_streams = env.int_in("WEBCHAT_MAX_STREAMS", 2000usize, 1, 1_000_000);
        let max_streams_per_contact =
            env.int_in("WEBCHAT_MAX_STREAMS_PER_CONTACT", 8usize, 1, 1000);
        let max_uploads = env.int_in("WEBCHAT_MAX_UPLOADS", 16usize, 1, 10_000);
        let rate_per_contact = env.int_in("RATE_LIMIT_PER_CONTACT", 10u32, 0, 100_000);
        let rate_global = env.int_in("RATE_LIMIT_GLOBAL", 100u32, 0, 10_000_000);
        let rate_visitors = env.int_in("RATE_LIMIT_VISITORS", 100u32, 0, 10_000_000);
        let (rate_notice, busy_notice) = load_notices(env);
        let web = WebConfig::load(env, transports.contains(&TransportKind::Web));
        let cloud = CloudConfig::load(env, transports.contains(&TransportKind::Cloud));
        let alert_webhook = env.secret_http_url("ALERT_WEBHOOK_URL");
        let (admins, _) = shared::phone::parse_list(&env.string("ADMIN_NUMBERS", ""));
        let webchat_origins = load_origins(env);
        Self {
            transports,
            public_addr,
            console,
            webchat_demo,
            webchat_token,
            webchat_secret,
            webchat_identity_secret,
            visitor_token_days,
            webchat_frame_ancestors,
            visitors_per_hour,
            visitors_open,
            trusted_proxy_header,
            trusted_proxies,
            http_rate_per_address,
            media_ttl,
            max_media_bytes,
            media_cap_bytes,
            max_connections,
            max_connections_per_address,
            header_timeout,
            body_timeout,
            max_streams,
            max_streams_per_contact,
            max_uploads,
            rate_per_contact,
            rate_global,
            rate_visitors,
            rate_notice,
            busy_notice,
            storage: crate::storage::Storage::load(env),
            web,
            cloud,
            alert_webhook,
            admins,
            webchat_origins,
        }
    }

    /// Web chat conversations stand for phone numbers only in demo mode (loopback only).
    pub fn webchat_is_local(&self) -> bool {
        self.webchat_demo && self.public_addr.ip().is_loopback()
    }

    /// The public listener answers only requests made on this machine (demo mode's web chat
    /// runs: a conversation is a phone number, admins' included).
    pub fn demo_gate(&self) -> bool {
        self.webchat_is_local() && self.transports.contains(&TransportKind::Webchat)
    }
}

/// Demo mode (conversations are phone numbers, admins' included, nothing checked) is for
/// this machine only: refused when it could be reached through a proxy or from elsewhere.
fn check_demo_is_local(
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

/// The public listener's connection limits: `PUBLIC_MAX_CONNECTIONS`,
/// `PUBLIC_MAX_CONNECTIONS_PER_ADDRESS`, `PUBLIC_HEADER_TIMEOUT_SECS`, `PUBLIC_BODY_TIMEOUT_SECS`.
fn load_public_limits(env: &mut Env) -> (usize, usize, Duration, Duration) {
    (
        env.int_in("PUBLIC_MAX_CONNECTIONS", 4096usize, 1, 1_000_000),
        env.int_in("PUBLIC_MAX_CONNECTIONS_PER_ADDRESS", 256usize, 1, 1_000_000),
        env.secs("PUBLIC_HEADER_TIMEOUT_SECS", 10, 1, 600),
        env.secs("PUBLIC_BODY_TIMEOUT_SECS", 10, 1, 600),
    )
}

/// `TRUSTED_PROXY_HEADER`, and `TRUSTED_PROXIES`: comma-separated networks (CIDRs or
/// addresses).
fn load_proxies(env: &mut Env) -> (Option<axum::http::HeaderName>, Vec<shared::net::Cidr>) {
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

/// `TRANSPORTS`: known, each once, at least one.
fn load_transports(env: &mut Env) -> Vec<TransportKind> {
    let mut transports = Vec::new();
    for part in env
        .string("TRANSPORTS", "webchat")
        .split(',')
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| !p.is_empty())
    {
        match TransportKind::parse(&part) {
            Some(t) if !transports.contains(&t) => transports.push(t),
            Some(_) => {}
            None => env.problem(
                "TRANSPORTS",
                format!("unknown transport {part:?}: expected web, cloud or webchat"),
            ),
        }
    }
    if transports.is_empty() {
        env.problem("TRANSPORTS", "at least one transport is needed");
    }
    transports
}

/// Secrets shorter than their minimum are problems.
fn check_lengths<const N: usize>(
    env: &mut Env,
    secrets: [(&str, &Option<SecretString>, usize); N],
) {
    for (name, value, min) in secrets {
        if value
            .as_ref()
            .is_some_and(|v| v.expose_secret().len() < min)
        {
            env.problem(
                name,
                format!("expected at least {min} characters (a random secret)"),
            );
        }
    }
}

/// `RATE_LIMIT_NOTICE` and `BUSY_NOTICE`: what a sender over a limit is told.
fn load_notices(env: &mut Env) -> (String, String) {
    let rate = env.string(
        "RATE_LIMIT_NOTICE",
        "You're sending messages faster than I can answer. Please wait a minute, then send \
         your question again.",
    );
    let busy = env.string(
        "BUSY_NOTICE",
        "We're receiving a lot of messages right now. Please try again in a minute.",
    );
    (rate, busy)
}

/// `TRUSTED_PROXY_HEADER`: a header name, if set.
fn load_proxy_header(env: &mut Env) -> Option<axum::http::HeaderName> {
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
fn frame_ancestors(env: &mut Env) -> String {
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
fn frame_source(s: &str) -> bool {
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
fn load_origins(env: &mut Env) -> Vec<String> {
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

/// `MEDIA_TTL_HOURS`, `MAX_MEDIA_MB`, `MEDIA_CAP_MB` (the cap holds at least one item).
fn load_media(env: &mut Env) -> (Duration, u64, u64) {
    let media_ttl = Duration::from_secs(3600 * env.int_in("MEDIA_TTL_HOURS", 24u64, 1, 24 * 30));
    let max_media_bytes = MB * env.int_in("MAX_MEDIA_MB", 16u64, 1, 100);
    let media_cap_bytes = MB * env.int_in("MEDIA_CAP_MB", 256u64, 1, 64 * 1024);
    if media_cap_bytes < max_media_bytes {
        env.problem(
            "MEDIA_CAP_MB",
            "must be at least MAX_MEDIA_MB (one item must fit in the store)",
        );
    }
    (media_ttl, max_media_bytes, media_cap_bytes)
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
