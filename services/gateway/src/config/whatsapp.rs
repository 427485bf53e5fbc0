//! Settings of the WhatsApp transports: `web` (the WhatsApp Web sidecar) and `cloud` (the
//! Cloud API).

use std::time::Duration;

use secrecy::SecretString;
use shared::config::Env;

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
    /// `WA_READ_RECEIPTS` (default true): a message the bot takes is marked read.
    pub read_receipts: bool,
    /// `WA_TYPING` (default true): "typing…" while the answer is prepared.
    pub typing: bool,
    /// `CALL_REJECT_MESSAGE`: the text a caller gets after the call is declined (empty: none).
    pub call_reject_message: Option<String>,
    /// `BURST_WINDOW_MS` (the brain's): typing starts when a burst's window ends.
    pub burst_window: Duration,
}

/// What a caller reads after the call is declined, unless `CALL_REJECT_MESSAGE` says otherwise.
pub const DEFAULT_CALL_REJECT_MESSAGE: &str = "Sorry, we can't take calls on this number — please write to us here and we'll answer right away.";

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
    /// `WA_READ_RECEIPTS` (as [`WebConfig::read_receipts`]).
    pub read_receipts: bool,
    /// `WA_TYPING`: on the Cloud API the indicator comes only with a read mark.
    pub typing: bool,
    /// `BURST_WINDOW_MS`: typing waits for the end of a burst's window.
    pub burst_window: Duration,
}

/// The Graph API the `cloud` transport calls by default (its current version).
pub const GRAPH_URL: &str = "https://graph.facebook.com/v26.0";

impl CloudConfig {
    /// Read whether or not `cloud` runs (so `vars` lists them); problems and a configuration
    /// only when it does.
    pub(super) fn load(env: &mut Env, enabled: bool) -> Option<Self> {
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
            read_receipts: true,
            typing: true,
            burst_window: Duration::ZERO,
            graph_url,
            check_every,
        })
    }
}

impl WebConfig {
    pub(super) fn load(env: &mut Env, enabled: bool) -> Self {
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
            read_receipts: env.flag("WA_READ_RECEIPTS", true),
            burst_window: env.millis("BURST_WINDOW_MS", 0, 0, 60_000),
            call_reject_message: Some(
                env.string_allow_empty("CALL_REJECT_MESSAGE", DEFAULT_CALL_REJECT_MESSAGE),
            )
            .filter(|t| !t.trim().is_empty()),
            typing: env.flag("WA_TYPING", true),
        }
    }
}

/// The sidecar next to the executable (images), or in the source tree (`target/<profile>/`).
pub(super) fn find_sidecar() -> Option<std::path::PathBuf> {
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
