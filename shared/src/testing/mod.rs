//! Test helpers (feature `test-utils`): unique key prefixes, private Redis servers, per-test
//! databases on SQLite or PostgreSQL, and service processes.
//!
//! Tests never flush or delete keys they did not create: every test uses its own
//! `STREAM_PREFIX`, and cleanup deletes only keys under that prefix's hash tag.
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

mod db;
mod process;
mod redis;
mod wait;

pub use self::redis::{KeyPrefix, RedisServer, cleanup_prefix};
pub use db::{TestDb, pg_server_url, test_backend_is_postgres};
pub use process::{
    ServiceEnv, ServiceProcess, assert_service_lifecycle, assert_service_lifecycle_with,
};
pub use wait::{eventually, wait_for};

/// A unique stream prefix for one test.
pub fn unique_prefix() -> String {
    format!("t-{}", crate::ids::new_id().to_lowercase())
}

/// The shared Redis of the machine (`REDIS_URL`, default `redis://127.0.0.1:6379`).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Where [`free_port`] picks: below the kernel's ephemeral range (32768–60999 by default),
/// which outgoing connections draw from — a port picked with `bind(0)` could be taken by another
/// test's client connection before the service it was picked for binds it.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// How long a port [`free_port`] handed out stays claimed: longer than a test keeps it.
const CLAIM: std::time::Duration = std::time::Duration::from_secs(900);

/// A free TCP port on loopback, outside the range outgoing connections use ([`PORTS`]), and
/// claimed for this process: tests run in parallel processes, and two of them picking the same
/// free port before either's service binds it was a failure ("address already in use") about one
/// run in four. A claim is a file created exclusively in a directory all test processes share;
/// claims older than [`CLAIM`] are taken back.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let claims = std::env::temp_dir().join("sb-test-ports");
    let _ = std::fs::create_dir_all(&claims);
    // Each test runs in a process of its own: start where the process id and the clock say.
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    let span = u32::from(PORTS.end - PORTS.start);
    for _ in 0..span {
        let n = seed.wrapping_add(NEXT.fetch_add(7_919, Ordering::Relaxed)) % span;
        let port = PORTS.start + u16::try_from(n).unwrap_or(0);
        if claim(&claims.join(port.to_string())) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Claims the port whose claim file is `file` (taking back a stale claim).
fn claim(file: &Path) -> bool {
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(file)
            .is_ok()
    };
    if create() {
        return true;
    }
    let stale = std::fs::metadata(file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > CLAIM);
    stale && std::fs::remove_file(file).is_ok() && create()
}

/// A fresh temporary directory (removed on drop).
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new directory, its name tagged.
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("sb-{tag}-{}", crate::ids::new_id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the future `f` makes to completion on a thread and runtime of its own, and waits for
/// it: how a `Drop` does async work without blocking (or needing) the test's runtime.
pub fn run_on_own_thread<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(f());
    })
    .join();
}

/// Serves `app` on a loopback port from a thread and runtime of its own (so a test blocked in
/// a `Drop` — stopping a service that still talks to this server — cannot starve it); the
/// server lives as long as the test process. Returns its address.
pub fn serve_on_own_thread(app: axum::Router) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app).await.expect("serve");
            });
    });
    addr
}

/// `GET url` as JSON, whatever the status (`/readyz` answers 503 with a JSON body).
pub async fn get_json(url: &str) -> serde_json::Value {
    crate::http_client::client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// A local receiver of JSON webhooks (`ALERT_WEBHOOK_URL`): every body POSTed to its URL is
/// kept, in order.
#[derive(Clone)]
pub struct WebhookSink {
    /// Its URL.
    pub url: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl WebhookSink {
    /// Starts it (on a thread of its own).
    pub fn start() -> Self {
        let got: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Default::default();
        let sink = got.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
                let sink = sink.clone();
                async move {
                    sink.lock().expect("sink lock").push(v);
                    "ok"
                }
            }),
        );
        Self {
            url: format!("http://{}/hook", serve_on_own_thread(app)),
            got,
        }
    }

    /// The bodies received so far.
    pub fn got(&self) -> Vec<serde_json::Value> {
        self.got.lock().expect("sink lock").clone()
    }
}

/// Every envelope of a stream, oldest first.
pub async fn read_envelopes(
    bus: &crate::bus::Bus,
    stream: crate::bus::Stream,
) -> Vec<crate::proto::Envelope> {
    use prost::Message;
    let mut c = bus.connection();
    let entries: Vec<(String, std::collections::HashMap<String, Vec<u8>>)> = ::redis::cmd("XRANGE")
        .arg(bus.keys().stream(stream))
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .expect("XRANGE");
    entries
        .into_iter()
        .map(|(_, f)| crate::proto::Envelope::decode(f["e"].as_slice()).expect("an envelope"))
        .collect()
}

/// The value of one metric line (exact name with labels) on a service's `/metrics`; 0 when absent.
pub async fn scrape_metric(http: &str, name: &str) -> f64 {
    let text = crate::http_client::client()
        .get(format!("{http}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    metric_in(&text, name)
}

/// The value of one metric line in a `/metrics` text; 0 when absent.
pub fn metric_in(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// all-MiniLM-L6-v2 as `scripts/test` fetches it (`fetch_minilm` in scripts/lib.sh), or
/// `SB_EMBEDDINGS_MODEL_DIR`; `None`, having said the caller's test is skipped, when absent.
pub fn minilm_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("SB_EMBEDDINGS_MODEL_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| Some(PathBuf::from(std::env::var_os("HOME")?).join(".cache")))?;
            Some(cache.join("switchboard/models/all-MiniLM-L6-v2"))
        })?;
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    eprintln!(
        "SKIPPED: no all-MiniLM-L6-v2 at {} (scripts/test fetches it; or set SB_EMBEDDINGS_MODEL_DIR)",
        dir.display()
    );
    None
}

/// A workspace binary built beside the running test binary (`target/<profile>/<name>`), as
/// `cargo nextest run --workspace` (scripts/test) builds every binary of the workspace.
pub fn workspace_bin(name: &str) -> PathBuf {
    let p = std::env::current_exe()
        .expect("the test binary's path")
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .join(name);
    assert!(
        p.exists(),
        "{} missing: build the workspace (scripts/test does)",
        p.display()
    );
    p
}

/// A real voice note as WhatsApp sends them: `seconds` of a tone, Opus in Ogg, made by ffmpeg.
pub fn voice_note(seconds: u32) -> Vec<u8> {
    let dir = TempDir::new("voice-note");
    let out = dir.path().join("note.ogg");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=300:duration={seconds}"))
        .args(["-c:a", "libopus", "-b:a", "16k", "-y"])
        .arg(&out)
        .status()
        .expect("ffmpeg is installed (scripts/test installs it)");
    assert!(status.success(), "ffmpeg could not make the voice note");
    std::fs::read(out).expect("the voice note")
}
