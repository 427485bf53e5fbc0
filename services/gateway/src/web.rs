//! The `web` transport: WhatsApp Web in Debian's Chromium, driven by whatsapp-web.js in a small
//! Node sidecar (`wa-sidecar/`, protocol in its PROTOCOL.md) that this module starts, talks to
//! over stdin/stdout and supervises: restarted with capped backoff when it exits, stops
//! answering heartbeats (3 periods) or stays not-connected for `WA_STUCK_SECS` while "ready".
//! The session lives on disk (`WA_SESSION_DIR`), so a restart never asks for the QR again.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;
use shared::bus::{Publish, Publisher};
use shared::proto::{Identity, identity, inbound, outbound};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{TransportKind, WebConfig};
use crate::ingest::{Incoming, Ingest, MediaBytes};
use crate::transport::{
    OutgoingText, Pairing, ReceiptStatus, SendError, Sent, SessionState, Transport,
};

pub const RESTARTS: &str = "gateway_web_restarts_total";
pub const IGNORED: &str = "gateway_web_ignored_total";
pub const PROTOCOL_ERRORS: &str = "gateway_web_protocol_errors_total";
pub const SIDECAR_RSS: &str = "gateway_web_sidecar_memory_bytes";
pub const BROWSER_RSS: &str = "gateway_web_browser_memory_bytes";

const SEND_TIMEOUT: Duration = Duration::from_secs(30);

pub fn register_metrics() {
    metrics::describe_counter!(RESTARTS, "Sidecar restarts by reason (exit, zombie, stuck)");
    metrics::describe_counter!(
        IGNORED,
        "WhatsApp messages not served (group, broadcast, status, from_me)"
    );
    metrics::describe_counter!(
        PROTOCOL_ERRORS,
        "Sidecar lines that were not valid protocol messages"
    );
    metrics::describe_gauge!(SIDECAR_RSS, "Memory (PSS) of the Node sidecar");
    metrics::describe_gauge!(
        BROWSER_RSS,
        "Memory (PSS, shared pages split) of the sidecar's Chromium processes"
    );
    for r in ["exit", "zombie", "stuck"] {
        metrics::counter!(RESTARTS, "reason" => r).absolute(0);
    }
    for r in ["group", "broadcast", "status", "from_me"] {
        metrics::counter!(IGNORED, "reason" => r).absolute(0);
    }
    metrics::counter!(PROTOCOL_ERRORS).absolute(0);
    metrics::gauge!(SIDECAR_RSS).set(0.0);
    metrics::gauge!(BROWSER_RSS).set(0.0);
}

/// What the sidecar inherits besides its own `WA_*` settings: the system's basics, and a
/// proxy and its certificates where WhatsApp is reached through one.
const SIDECAR_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "NODE_EXTRA_CA_CERTS",
];

/// One line from the sidecar.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    Qr {
        qr: String,
    },
    PairingCode {
        code: String,
    },
    Authenticated,
    AuthFailure {
        error: String,
    },
    Ready,
    State {
        state: String,
    },
    Message(WaMessage),
    Ignored {
        reason: String,
    },
    MessageAck {
        id: String,
        ack: i32,
    },
    Disconnected {
        reason: String,
    },
    Result {
        r#ref: Option<String>,
        id: Option<String>,
        media: Option<WaMedia>,
    },
    Error {
        r#ref: Option<String>,
        error: String,
        #[serde(default)]
        retryable: bool,
    },
    Heartbeat {
        state: Option<String>,
        page_alive: Option<bool>,
    },
}

#[derive(Debug, Deserialize)]
struct WaMessage {
    id: String,
    from: String,
    phone: Option<String>,
    lid: Option<String>,
    kind: String,
    #[serde(default)]
    body: String,
    timestamp: Option<i64>,
    name: Option<String>,
    media: Option<WaMedia>,
}

#[derive(Debug, Deserialize)]
struct WaMedia {
    mime: String,
    data: String,
}

#[derive(Debug)]
struct Session {
    state: SessionState,
    qr: Option<String>,
    pairing_code: Option<String>,
    /// The library said `ready` (since the last start).
    ready: bool,
    /// Since when the library reports a state other than CONNECTED while ready.
    unhealthy_since: Option<Instant>,
    last_heartbeat: Instant,
    /// The session was logged out: a new QR is needed.
    logged_out: bool,
}

/// What a command's `result` carries.
#[derive(Debug, Default)]
struct Answer {
    id: Option<String>,
    media: Option<WaMedia>,
}

type Reply = Result<Answer, (String, bool)>;

struct Inner {
    cfg: WebConfig,
    ingest: Ingest,
    publisher: Publisher,
    session: Mutex<Session>,
    commands: Mutex<Option<mpsc::UnboundedSender<String>>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    next_ref: AtomicU64,
    http: reqwest::Client,
    messages: mpsc::UnboundedSender<WaMessage>,
    queue: Mutex<Option<mpsc::UnboundedReceiver<WaMessage>>>,
}

#[derive(Clone)]
pub struct Web {
    inner: Arc<Inner>,
}

/// `+15550001111` from `15550001111@c.us`.
fn phone_of_wa_id(id: &str) -> Option<String> {
    let digits = id.strip_suffix("@c.us")?;
    shared::phone::Phone::parse(digits)
        .ok()
        .map(|p| p.as_str().to_owned())
}

impl Web {
    pub fn new(cfg: WebConfig, ingest: Ingest, bus: &shared::bus::Bus) -> Self {
        let (messages, queue) = mpsc::unbounded_channel();
        Self {
            inner: Arc::new(Inner {
                cfg,
                ingest,
                publisher: bus.publisher(),
                session: Mutex::new(Session {
                    state: SessionState::Disconnected,
                    qr: None,
                    pairing_code: None,
                    ready: false,
                    unhealthy_since: None,
                    last_heartbeat: Instant::now(),
                    logged_out: false,
                }),
                commands: Mutex::new(None),
                pending: Mutex::new(HashMap::new()),
                next_ref: AtomicU64::new(1),
                http: reqwest::Client::new(),
                messages,
                queue: Mutex::new(Some(queue)),
            }),
        }
    }

    fn command(&self, mut cmd: serde_json::Value) -> bool {
        cmd["v"] = serde_json::json!(1);
        let line = cmd.to_string();
        match self.inner.commands.lock().expect("commands lock").as_ref() {
            Some(tx) => tx.send(line).is_ok(),
            None => false,
        }
    }

    /// Sends a command that answers `result`/`error`, waiting up to `timeout`.
    async fn request(&self, mut cmd: serde_json::Value, timeout: Duration) -> Reply {
        let r = format!("r{}", self.inner.next_ref.fetch_add(1, Ordering::Relaxed));
        cmd["ref"] = serde_json::json!(r);
        let (tx, rx) = oneshot::channel();
        self.inner
            .pending
            .lock()
            .expect("pending lock")
            .insert(r.clone(), tx);
        if !self.command(cmd) {
            self.inner.pending.lock().expect("pending lock").remove(&r);
            return Err(("the WhatsApp Web session is restarting".into(), true));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(("the WhatsApp Web session restarted".into(), true)),
            Err(_) => {
                self.inner.pending.lock().expect("pending lock").remove(&r);
                Err(("no answer from the WhatsApp Web session".into(), true))
            }
        }
    }

    fn set_state(&self, state: SessionState) {
        let mut s = self.inner.session.lock().expect("session lock");
        if s.state != state {
            tracing::info!(state = state.as_str(), "WhatsApp Web session");
        }
        s.state = state;
        crate::metrics::session_state(TransportKind::Web, state);
    }

    /// Runs and supervises the sidecar until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        if let Some(mut queue) = self.inner.queue.lock().expect("queue lock").take() {
            let this = self.clone();
            tokio::spawn(async move {
                while let Some(m) = queue.recv().await {
                    this.on_message(m).await;
                }
            });
        }
        let mut backoff = Duration::from_secs(1);
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            let reason = match self.run_once(&shutdown).await {
                Ok(reason) => reason,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the WhatsApp Web sidecar");
                    "exit"
                }
            };
            if shutdown.is_cancelled() {
                break;
            }
            metrics::counter!(RESTARTS, "reason" => reason).increment(1);
            {
                let mut s = self.inner.session.lock().expect("session lock");
                s.ready = false;
                s.unhealthy_since = None;
            }
            let logged_out = self.inner.session.lock().expect("session lock").logged_out;
            self.set_state(if logged_out {
                SessionState::WaitingForQr
            } else {
                SessionState::Disconnected
            });
            for (_, tx) in self.inner.pending.lock().expect("pending lock").drain() {
                let _ = tx.send(Err(("the WhatsApp Web session restarted".into(), true)));
            }
            if started.elapsed() > Duration::from_secs(120) {
                backoff = Duration::from_secs(1);
            }
            tracing::warn!(
                reason,
                wait_ms = backoff.as_millis() as u64,
                "restarting the WhatsApp Web sidecar"
            );
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }

    /// One life of the sidecar; returns why it ended.
    async fn run_once(&self, shutdown: &CancellationToken) -> std::io::Result<&'static str> {
        let cfg = &self.inner.cfg;
        std::fs::create_dir_all(&cfg.session_dir)?;
        let session_dir = std::fs::canonicalize(&cfg.session_dir)?;
        let mut cmd = tokio::process::Command::new(&cfg.node);
        // Node, a browser and their packages run with a cleared environment: none of the
        // gateway's secrets (Redis password, tokens), only what they need and their own `WA_*`.
        cmd.env_clear().envs(
            std::env::vars()
                .filter(|(k, _)| SIDECAR_ENV.contains(&k.as_str()) || k.starts_with("WA_")),
        );
        cmd.arg("index.mjs")
            .current_dir(&cfg.sidecar_dir)
            .env("WA_SESSION_DIR", &session_dir)
            .env("CHROMIUM_PATH", &cfg.chromium)
            .env("PUPPETEER_SKIP_DOWNLOAD", "true")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(n) = &cfg.pairing_number {
            cmd.env("WA_PAIRING_NUMBER", n);
        }
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let mut stdin = child.stdin.take().expect("stdin piped");
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        *self.inner.commands.lock().expect("commands lock") = Some(tx);
        self.inner
            .session
            .lock()
            .expect("session lock")
            .last_heartbeat = Instant::now();
        tracing::info!(pid, "WhatsApp Web sidecar started");

        let writer = tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if stdin
                    .write_all(format!("{line}\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let logger = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tracing::info!(sidecar = %l.chars().take(300).collect::<String>(), "sidecar log");
            }
        });
        let mut lines = BufReader::new(stdout).lines();
        let hb = cfg.heartbeat;
        let mut tick = tokio::time::interval(hb);
        tick.tick().await;
        let reason = loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    self.command(serde_json::json!({"type": "shutdown"}));
                    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                    break "shutdown";
                }
                line = lines.next_line() => match line {
                    Ok(Some(l)) => self.on_line(&l),
                    _ => {
                        let status = child.wait().await;
                        tracing::warn!(?status, "the WhatsApp Web sidecar exited");
                        break "exit";
                    }
                },
                _ = tick.tick() => {
                    self.command(serde_json::json!({"type": "heartbeat", "ref": "hb"}));
                    if let Some(pid) = pid {
                        record_memory(pid);
                    }
                    let (silent, stuck) = {
                        let s = self.inner.session.lock().expect("session lock");
                        (
                            s.last_heartbeat.elapsed() > hb * 3,
                            s.unhealthy_since.is_some_and(|t| t.elapsed() > cfg.stuck),
                        )
                    };
                    if silent || stuck {
                        tracing::warn!(silent, stuck, "the WhatsApp Web session looks stuck; restarting it");
                        break if silent { "zombie" } else { "stuck" };
                    }
                }
            }
        };
        *self.inner.commands.lock().expect("commands lock") = None;
        let _ = child.start_kill();
        let _ = child.wait().await;
        writer.abort();
        logger.abort();
        Ok(reason)
    }

    fn on_line(&self, line: &str) {
        let event: Event = match serde_json::from_str(line) {
            Ok(e) => e,
            Err(e) => {
                metrics::counter!(PROTOCOL_ERRORS).increment(1);
                // The line may hold message text: log only its length and the parse error.
                tracing::warn!(len = line.len(), error = %e, "skipping a sidecar line that is not a protocol message");
                return;
            }
        };
        match event {
            Event::Qr { qr } => {
                let fresh = {
                    let mut s = self.inner.session.lock().expect("session lock");
                    let fresh = s.qr.as_deref() != Some(qr.as_str());
                    s.qr = Some(qr.clone());
                    fresh
                };
                self.set_state(SessionState::WaitingForQr);
                if fresh {
                    tracing::info!(
                        "WhatsApp Web waits for a QR scan: open the gateway's internal /qr or scan the code printed below"
                    );
                    if let Ok(code) = qrcode::QrCode::new(qr.as_bytes()) {
                        let text = code
                            .render::<qrcode::render::unicode::Dense1x2>()
                            .quiet_zone(true)
                            .build();
                        eprintln!("\n{text}\n");
                    }
                }
            }
            Event::PairingCode { code } => {
                tracing::info!("WhatsApp Web pairing code ready: see the gateway's internal /qr");
                eprintln!("\nWhatsApp pairing code: {code}\n");
                self.inner
                    .session
                    .lock()
                    .expect("session lock")
                    .pairing_code = Some(code);
                self.set_state(SessionState::WaitingForQr);
            }
            Event::Authenticated => tracing::info!("WhatsApp Web linked"),
            Event::AuthFailure { error } => {
                tracing::warn!(error = %error, "WhatsApp Web refused the stored session");
            }
            Event::Ready => {
                {
                    let mut s = self.inner.session.lock().expect("session lock");
                    s.ready = true;
                    s.qr = None;
                    s.pairing_code = None;
                    s.logged_out = false;
                    s.unhealthy_since = None;
                }
                self.set_state(SessionState::Connected);
            }
            Event::State { state } => self.on_state(&state),
            Event::Heartbeat { state, page_alive } => {
                {
                    let mut s = self.inner.session.lock().expect("session lock");
                    s.last_heartbeat = Instant::now();
                }
                if let Some(state) = state {
                    // A page that no longer answers the probe is not connected, whatever the
                    // library's last state says.
                    let healthy = page_alive != Some(false);
                    self.on_state(if healthy {
                        &state
                    } else {
                        "PAGE_NOT_RESPONDING"
                    });
                }
            }
            // Taken one at a time, in arrival order: a contact's messages are published in the
            // order WhatsApp delivered them.
            Event::Message(m) => {
                let _ = self.inner.messages.send(m);
            }
            Event::Ignored { reason } => {
                let reason = match reason.as_str() {
                    "group" => "group",
                    "broadcast" => "broadcast",
                    "status" => "status",
                    _ => "from_me",
                };
                metrics::counter!(IGNORED, "reason" => reason).increment(1);
            }
            Event::MessageAck { id, ack } => {
                let status = match ack {
                    -1 => Some(ReceiptStatus::Failed),
                    2 => Some(ReceiptStatus::Delivered),
                    3 | 4 => Some(ReceiptStatus::Read),
                    _ => None,
                };
                if let Some(status) = status {
                    let ingest = self.inner.ingest.clone();
                    tokio::spawn(async move {
                        if let Err(e) = ingest.receipt(TransportKind::Web, &id, status).await {
                            tracing::warn!(error = %e, "cannot record a delivery receipt");
                        }
                    });
                }
            }
            Event::Disconnected { reason } => {
                let logged_out = reason.eq_ignore_ascii_case("LOGOUT")
                    || reason.eq_ignore_ascii_case("UNPAIRED");
                {
                    let mut s = self.inner.session.lock().expect("session lock");
                    s.ready = false;
                    s.logged_out |= logged_out;
                }
                if logged_out {
                    self.set_state(SessionState::WaitingForQr);
                    let this = self.clone();
                    tokio::spawn(async move { this.alert_logged_out().await });
                } else {
                    self.set_state(SessionState::Disconnected);
                }
            }
            Event::Result { r#ref, id, media } => self.answer(r#ref, Ok(Answer { id, media })),
            Event::Error {
                r#ref,
                error,
                retryable,
            } => {
                if r#ref.is_none() {
                    tracing::warn!(error = %error, "the sidecar reports an error");
                }
                self.answer(r#ref, Err((error, retryable)));
            }
        }
    }

    fn on_state(&self, state: &str) {
        let connected = state == "CONNECTED";
        let ready = {
            let mut s = self.inner.session.lock().expect("session lock");
            if connected {
                s.unhealthy_since = None;
            } else if s.ready {
                s.unhealthy_since.get_or_insert_with(Instant::now);
            }
            s.ready
        };
        if connected && ready {
            self.set_state(SessionState::Connected);
        } else if !connected && ready {
            self.set_state(SessionState::Disconnected);
        }
    }

    fn answer(&self, r: Option<String>, reply: Reply) {
        if let Some(r) = r
            && let Some(tx) = self.inner.pending.lock().expect("pending lock").remove(&r)
        {
            let _ = tx.send(reply);
        }
    }

    async fn on_message(&self, m: WaMessage) {
        let mut identities = Vec::new();
        let phone = m.phone.clone().or_else(|| phone_of_wa_id(&m.from));
        if let Some(p) = phone
            .as_deref()
            .and_then(|p| shared::phone::Phone::parse(p).ok())
        {
            identities.push(Identity {
                kind: identity::Kind::Phone as i32,
                value: p.as_str().to_owned(),
            });
        }
        if m.from.ends_with("@c.us") {
            identities.push(Identity {
                kind: identity::Kind::WaId as i32,
                value: m.from.clone(),
            });
        }
        if let Some(lid) = m
            .lid
            .clone()
            .or_else(|| m.from.ends_with("@lid").then(|| m.from.clone()))
        {
            identities.push(Identity {
                kind: identity::Kind::Lid as i32,
                value: lid,
            });
        }
        let mut kind = match m.kind.as_str() {
            "text" => inbound::Kind::Text,
            "voice" => inbound::Kind::Voice,
            "image" => inbound::Kind::Image,
            _ => inbound::Kind::Other,
        };
        // The sidecar could not download it with the message: ask again once.
        let mut m = m;
        if m.media.is_none() && matches!(kind, inbound::Kind::Voice | inbound::Kind::Image) {
            match self
                .request(
                    serde_json::json!({"type": "download_media", "id": m.id}),
                    Duration::from_secs(60),
                )
                .await
            {
                Ok(a) => m.media = a.media,
                Err((e, _)) => tracing::warn!(error = %e, "cannot download a media message"),
            }
        }
        let media = match (&m.media, kind) {
            (Some(media), inbound::Kind::Voice | inbound::Kind::Image) => {
                match base64::engine::general_purpose::STANDARD.decode(&media.data) {
                    Ok(bytes) => match crate::media::sniff(&bytes, &media.mime) {
                        Ok(s) => Some(MediaBytes {
                            bytes,
                            mime: s.mime,
                        }),
                        Err(e) => {
                            tracing::info!(error = %e, "unreadable media: treated as another kind");
                            kind = inbound::Kind::Other;
                            None
                        }
                    },
                    Err(_) => {
                        kind = inbound::Kind::Other;
                        None
                    }
                }
            }
            _ => None,
        };
        let incoming = Incoming {
            transport: TransportKind::Web,
            transport_message_id: m.id.clone(),
            message_id: None,
            chat_id: m.from.clone(),
            identities,
            kind,
            text: m.body.clone(),
            media,
            sent_at_ms: m.timestamp.map_or(0, |t| t * 1000),
            display_name: m.name.clone().unwrap_or_default(),
        };
        // The library will not deliver it again: keep trying while Redis is away.
        let mut wait = Duration::from_millis(200);
        for attempt in 1..=8 {
            match self.inner.ingest.accept(incoming.clone()).await {
                Ok(_) => return,
                Err(crate::ingest::IngestError::Unavailable(e)) if attempt < 8 => {
                    tracing::warn!(error = %e, attempt, "cannot take a WhatsApp message yet; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a WhatsApp message could not be taken");
                    return;
                }
            }
        }
    }

    /// The session is gone: tell the operator by webhook and the admins by message (delivered
    /// through any transport that can reach them).
    async fn alert_logged_out(&self) {
        let text = "WhatsApp Web was logged out: customers get no answers until someone scans the new QR code on the gateway's internal /qr.";
        tracing::error!("WhatsApp Web session logged out: a new QR scan is needed");
        if let Some(url) = &self.inner.cfg.alert_webhook {
            let body = serde_json::json!({"text": text, "switchboard": {"kind": "session_logged_out", "transport": "web"}});
            if let Err(e) = self
                .inner
                .http
                .post(url)
                .json(&body)
                .timeout(Duration::from_secs(10))
                .send()
                .await
            {
                tracing::warn!(error = %e, "cannot send the session alert to ALERT_WEBHOOK_URL");
            }
        }
        let stamp = shared::ids::now_ms() / 60_000;
        for admin in &self.inner.cfg.admins {
            let id = blake3::hash(format!("logout|{stamp}|{admin}").as_bytes()).to_hex()[..26]
                .to_owned();

            if let Err(e) = self
                .inner
                .publisher
                .publish(Publish::admin_alert("gateway", id, text, admin.as_str()))
                .await
            {
                tracing::warn!(error = %e, "cannot queue the session alert for an admin");
            }
        }
    }
}

/// Memory of the sidecar and of its descendants (Chromium), from `/proc`: PSS, so pages the
/// browser's processes share are counted once overall, not once per process.
fn record_memory(pid: u32) {
    fn rss(pid: u32) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Pss:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    }
    let mut parents: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat"))
                && let Some(after) = stat.rsplit_once(')').map(|(_, a)| a)
                && let Some(ppid) = after
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u32>().ok())
            {
                parents.entry(ppid).or_default().push(p);
            }
        }
    }
    let mut browser = 0;
    let mut stack = parents.get(&pid).cloned().unwrap_or_default();
    while let Some(p) = stack.pop() {
        browser += rss(p);
        stack.extend(parents.get(&p).cloned().unwrap_or_default());
    }
    metrics::gauge!(SIDECAR_RSS).set(rss(pid) as f64);
    metrics::gauge!(BROWSER_RSS).set(browser as f64);
}

#[async_trait::async_trait]
impl Transport for Web {
    fn kind(&self) -> TransportKind {
        TransportKind::Web
    }

    fn state(&self) -> SessionState {
        self.inner.session.lock().expect("session lock").state
    }

    fn chat_for(&self, identities: &[Identity]) -> Option<String> {
        identities.iter().find_map(|i| match i.kind() {
            identity::Kind::Phone => shared::phone::Phone::parse(&i.value)
                .ok()
                .map(|p| format!("{}@c.us", p.digits())),
            identity::Kind::WaId | identity::Kind::Lid => Some(i.value.clone()),
            _ => None,
        })
    }

    async fn send_text(&self, msg: &OutgoingText) -> Result<Sent, SendError> {
        // Anti-ban: answer customers, never write to one first (alerts go to the business's own
        // admins).
        if msg.kind != outbound::Kind::Alert && msg.in_reply_to.is_empty() {
            return Err(SendError::Permanent(
                "WhatsApp Web only answers messages; it never writes to a customer first".into(),
            ));
        }
        if self.state() != SessionState::Connected {
            return Err(SendError::Transient(
                "the WhatsApp Web session is not connected".into(),
            ));
        }
        // Like a person: typing for a moment, then the message.
        let (lo, hi) = self.inner.cfg.reply_delay_ms;
        if hi > 0 {
            self.command(serde_json::json!({"type": "typing", "chat": msg.chat_id, "on": true}));
            let ms = if hi > lo {
                rand::random_range(lo..=hi)
            } else {
                lo
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        match self
            .request(
                serde_json::json!({"type": "send", "chat": msg.chat_id, "text": msg.text}),
                SEND_TIMEOUT,
            )
            .await
        {
            Ok(Answer { id, .. }) => Ok(Sent {
                transport_message_id: id.unwrap_or_else(|| msg.id.clone()),
                already: false,
                recorded: false,
            }),
            Err((e, true)) => Err(SendError::Transient(e.into())),
            Err((e, false)) => Err(SendError::Permanent(e.into())),
        }
    }

    async fn typing(&self, chat_id: &str, on: bool) -> Result<(), SendError> {
        if self.command(serde_json::json!({"type": "typing", "chat": chat_id, "on": on})) {
            Ok(())
        } else {
            Err(SendError::Transient(
                "the WhatsApp Web session is restarting".into(),
            ))
        }
    }

    fn pairing(&self) -> Option<Pairing> {
        let s = self.inner.session.lock().expect("session lock");
        Some(Pairing {
            qr: s.qr.clone(),
            code: s.pairing_code.clone(),
        })
    }
}
