//! The gateway's own configuration.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use shared::config::{CommonConfig, Env};
use shared::lang::Text;

mod public;
mod whatsapp;

pub use public::StreamLimits;
use public::{
    check_demo_is_local, frame_ancestors, load_origins, load_proxies, load_public_limits,
};
pub use whatsapp::{CloudConfig, GRAPH_URL, WebConfig};

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
    /// Caps on web chat event streams and their life.
    pub streams: StreamLimits,
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
    pub rate_notice: Text,
    /// `BUSY_NOTICE`: what a sender is told when the global limit is reached.
    pub busy_notice: Text,
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
        let max_uploads = env.int_in("WEBCHAT_MAX_UPLOADS", 16usize, 1, 10_000);
        let rate_per_contact = env.int_in("RATE_LIMIT_PER_CONTACT", 10u32, 0, 100_000);
        let rate_global = env.int_in("RATE_LIMIT_GLOBAL", 100u32, 0, 10_000_000);
        let rate_visitors = env.int_in("RATE_LIMIT_VISITORS", 100u32, 0, 10_000_000);
        let (rate_notice, busy_notice) = load_notices(env);
        let (web, cloud) = load_whatsapp(env, &transports);
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
            streams: StreamLimits::load(env),
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

/// `RATE_LIMIT_NOTICE` and `BUSY_NOTICE`: what a sender over a limit is told, in the
/// language they write ([`shared::lang`]; `RATE_LIMIT_NOTICE_ES`… per language).
fn load_notices(env: &mut Env) -> (Text, Text) {
    let rate = Text::from_env(
        env,
        "RATE_LIMIT_NOTICE",
        [
            "You're sending messages faster than I can answer. Please wait a minute, then send \
             your question again.",
            "Estás enviando mensajes más rápido de lo que puedo responder. Espera un minuto y \
             vuelve a enviar tu pregunta, por favor.",
            "Você está enviando mensagens mais rápido do que consigo responder. Espere um minuto \
             e envie sua pergunta de novo, por favor.",
        ],
    );
    let busy = Text::from_env(
        env,
        "BUSY_NOTICE",
        [
            "We're receiving a lot of messages right now. Please try again in a minute.",
            "Ahora mismo estamos recibiendo muchos mensajes. Vuelve a intentarlo en un minuto, \
             por favor.",
            "Estamos recebendo muitas mensagens agora. Tente novamente em um minuto, por favor.",
        ],
    );
    (rate, busy)
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

/// The WhatsApp transports' settings; `WA_READ_RECEIPTS` and `WA_TYPING` apply to both.
fn load_whatsapp(env: &mut Env, transports: &[TransportKind]) -> (WebConfig, Option<CloudConfig>) {
    let web = WebConfig::load(env, transports.contains(&TransportKind::Web));
    let cloud =
        CloudConfig::load(env, transports.contains(&TransportKind::Cloud)).map(|c| CloudConfig {
            read_receipts: web.read_receipts,
            typing: web.typing,
            burst_window: web.burst_window,
            ..c
        });
    (web, cloud)
}
