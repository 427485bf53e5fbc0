//! Test helpers (feature `test-utils`): unique key prefixes, private Redis servers, per-test
//! databases on SQLite or PostgreSQL, and service processes.
//!
//! Tests never flush or delete keys they did not create: every test uses its own
//! `STREAM_PREFIX`, and cleanup deletes only keys under that prefix's hash tag.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Dsn;
use crate::db::Db;

/// A unique stream prefix for one test.
pub fn unique_prefix() -> String {
    format!("t-{}", crate::ids::new_id().to_lowercase())
}

/// The shared Redis of the machine (`REDIS_URL`, default `redis://127.0.0.1:6379`).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
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

/// Deletes every key under `{prefix}` (SCAN + DEL; never FLUSH).
pub async fn cleanup_prefix(url: &str, prefix: &str) {
    let _ = crate::redis_conn::delete_prefix(url, prefix).await;
}

/// A private `redis-server` on a spare port with AOF (`appendfsync always`), for tests that
/// kill or stop Redis. Never the shared one.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts it.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts it with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let mut s = Self {
            port: free_port(),
            dir: TempDir::new("redis"),
            child: None,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        s.spawn();
        s
    }

    /// Its `redis://` URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--appendonly")
            .arg("yes")
            .arg("--appendfsync")
            .arg("always")
            .arg("--save")
            .arg("")
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(c) = redis::Client::open(self.url())
                && let Ok(mut conn) = c.get_connection()
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("private redis-server did not start on port {}", self.port);
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM: Redis writes what it must and exits; waits for it.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and directory (AOF replayed).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Which database backend the suite runs on: `SB_TEST_DB=postgres` or SQLite (default).
pub fn test_backend_is_postgres() -> bool {
    std::env::var("SB_TEST_DB").is_ok_and(|v| v == "postgres")
}

/// The PostgreSQL server for tests (`SB_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432`).
pub fn pg_server_url() -> String {
    std::env::var("SB_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A database of its own for one test: a SQLite file in a temp dir, or a fresh PostgreSQL
/// database (dropped on `cleanup`).
pub struct TestDb {
    /// Its URL, for `DATABASE_URL`.
    pub url: String,
    /// A pool on it (migrated).
    pub db: Db,
    pg_name: Option<String>,
    _dir: Option<TempDir>,
}

impl TestDb {
    /// The backend `SB_TEST_DB` names (SQLite by default).
    pub async fn new() -> Self {
        if test_backend_is_postgres() {
            Self::postgres().await
        } else {
            Self::sqlite()
        }
    }

    /// A SQLite file.
    pub fn sqlite() -> Self {
        let dir = TempDir::new("db");
        let url = format!("sqlite://{}/test.db", dir.path().display());
        let db = Db::connect_lazy(&Dsn::new(url.clone())).expect("sqlite url");
        Self {
            url,
            db,
            pg_name: None,
            _dir: Some(dir),
        }
    }

    /// A fresh PostgreSQL database on `SB_TEST_PG_URL`.
    pub async fn postgres() -> Self {
        use sqlx::Connection;
        let server = pg_server_url();
        let name = format!("sbtest_{}", crate::ids::new_id().to_lowercase());
        let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
            .await
            .expect("PostgreSQL reachable (scripts/test starts it)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let url = format!("{server}/{name}");
        let db = Db::connect_lazy(&Dsn::new(url.clone())).expect("postgres url");
        Self {
            url,
            db,
            pg_name: Some(name),
            _dir: None,
        }
    }

    /// Closes the pool and drops the PostgreSQL database.
    pub async fn cleanup(self) {
        use sqlx::Connection;
        self.db.close().await;
        if let Some(name) = &self.pg_name
            && let Ok(mut admin) =
                sqlx::PgConnection::connect(&format!("{}/postgres", pg_server_url())).await
        {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await;
        }
    }
}

/// A service process under test; killed on drop.
pub struct ServiceProcess {
    /// The process.
    pub child: Child,
    /// Its internal listener (`http://…`).
    pub http: String,
    /// Its log file.
    pub log: PathBuf,
}

impl ServiceProcess {
    /// Starts `bin` with exactly `env` (plus PATH/HOME), logging to a file.
    pub fn spawn(bin: &str, env: &HashMap<String, String>, http_addr: &str, cwd: &Path) -> Self {
        let log = cwd.join(format!(
            "{}-{}.log",
            Path::new(bin).file_name().unwrap().to_string_lossy(),
            crate::ids::new_id()
        ));
        let out = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .envs(
                ["PATH", "HOME", "RUST_BACKTRACE", "LLVM_PROFILE_FILE"]
                    .iter()
                    .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v))),
            )
            .envs(env)
            .current_dir(cwd)
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd.spawn().expect("spawn service");
        Self {
            child,
            http: format!("http://{http_addr}"),
            log,
        }
    }

    /// Waits until `path` answers `status`.
    pub async fn wait_status(&self, path: &str, status: u16, timeout: Duration) -> bool {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}{path}", self.http)).send().await
                && r.status().as_u16() == status
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// [`ServiceProcess::terminate`] off the async runtime; hands the process back (for its log).
    pub async fn terminate_async(
        mut self,
        timeout: Duration,
    ) -> (Option<std::process::ExitStatus>, Self) {
        tokio::task::spawn_blocking(move || {
            let s = self.terminate(timeout);
            (s, self)
        })
        .await
        .expect("terminate task")
    }

    /// SIGKILL, at once.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Environment for running one service binary in a test: its own prefix, port, data dir and
/// database URL.
pub struct ServiceEnv {
    /// The variables it starts with (tests add to them).
    pub env: HashMap<String, String>,
    /// Its internal listener's address.
    pub http_addr: String,
    /// Its `STREAM_PREFIX`.
    pub prefix: String,
    /// Its working directory (data, logs).
    pub dir: TempDir,
}

impl ServiceEnv {
    /// An environment for `service` on `redis` (and `database`).
    pub fn new(
        service: crate::config::ServiceName,
        redis_url: &str,
        database_url: Option<&str>,
    ) -> Self {
        let dir = TempDir::new(service.as_str());
        let http_addr = format!("127.0.0.1:{}", free_port());
        let prefix = unique_prefix();
        let mut env = HashMap::from([
            ("REDIS_URL".to_owned(), redis_url.to_owned()),
            ("STREAM_PREFIX".to_owned(), prefix.clone()),
            (service.http_addr_var().to_owned(), http_addr.clone()),
            (
                "DATA_DIR".to_owned(),
                dir.path().join("data").display().to_string(),
            ),
            ("RUST_LOG".to_owned(), "info".to_owned()),
        ]);
        if let Some(db) = database_url {
            env.insert("DATABASE_URL".to_owned(), db.to_owned());
        }
        Self {
            env,
            http_addr,
            prefix,
            dir,
        }
    }

    /// Starts `bin` in it (not waiting for readiness).
    pub fn spawn(&self, bin: &str) -> ServiceProcess {
        ServiceProcess::spawn(bin, &self.env, &self.http_addr, self.dir.path())
    }

    /// Joins the deployment under `prefix` (several processes of one test share it).
    pub fn use_prefix(&mut self, prefix: &str) {
        self.prefix = prefix.to_owned();
        self.env
            .insert("STREAM_PREFIX".to_owned(), prefix.to_owned());
    }

    /// [`ServiceEnv::spawn`], then waits until `/readyz` answers 200 (its log if it never does).
    pub async fn spawn_ready(&self, bin: &str) -> ServiceProcess {
        let p = self.spawn(bin);
        assert!(
            p.wait_status("/readyz", 200, Duration::from_secs(60)).await,
            "{bin} never became ready:\n{}",
            p.log_text()
        );
        p
    }
}

/// Starts `bin` from its environment alone and checks the lifecycle every service shares:
/// `/healthz` 200, `/readyz` 200 (JSON per dependency), `/metrics` lists `metrics` (registered
/// at zero) and `build_info`, and SIGTERM → exit 0. Returns the scraped metrics text.
pub async fn assert_service_lifecycle(
    bin: &str,
    service: crate::config::ServiceName,
    database_url: Option<&str>,
    metrics: &[&str],
) -> String {
    assert_service_lifecycle_with(bin, service, database_url, &[], metrics).await
}

/// [`assert_service_lifecycle`] with extra environment variables.
pub async fn assert_service_lifecycle_with(
    bin: &str,
    service: crate::config::ServiceName,
    database_url: Option<&str>,
    extra_env: &[(&str, String)],
    metrics: &[&str],
) -> String {
    let mut senv = ServiceEnv::new(service, &redis_url(), database_url);
    for (k, v) in extra_env {
        senv.env.insert((*k).to_owned(), v.clone());
    }
    let p = senv.spawn(bin);
    assert!(
        p.wait_status("/healthz", 200, Duration::from_secs(60))
            .await,
        "/healthz never 200:\n{}",
        p.log_text()
    );
    assert!(
        p.wait_status("/readyz", 200, Duration::from_secs(30)).await,
        "/readyz never 200:\n{}",
        p.log_text()
    );
    let healthcheck = |env: &HashMap<String, String>| {
        Command::new(bin)
            .arg("healthcheck")
            .env_clear()
            .envs(env)
            .status()
            .expect("run healthcheck")
            .success()
    };
    assert!(
        healthcheck(&senv.env),
        "`healthcheck` failed against a healthy service"
    );
    let ready = get_json(&format!("{}/readyz", p.http)).await;
    let client = reqwest::Client::new();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["redis"]["ok"], true);
    if database_url.is_some() {
        assert_eq!(ready["checks"]["database"]["ok"], true, "{ready}");
    }
    let text = client
        .get(format!("{}/metrics", p.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let wanted = format!("build_info{{service=\"{}\"", service.as_str());
    assert!(text.contains(&wanted), "no {wanted} in:\n{text}");
    for m in metrics {
        assert!(
            text.contains(m),
            "metric {m} missing from /metrics:\n{text}"
        );
    }
    let status = p.terminate_async(Duration::from_secs(20)).await;
    assert!(
        status.0.is_some_and(|s| s.success()),
        "SIGTERM did not end in exit 0: {:?}\n{}",
        status.0,
        status.1.log_text()
    );
    assert!(
        !healthcheck(&senv.env),
        "`healthcheck` succeeded with the service stopped"
    );
    cleanup_prefix(&redis_url(), &senv.prefix).await;
    text
}

/// `GET url` as JSON, whatever the status (`/readyz` answers 503 with a JSON body).
pub async fn get_json(url: &str) -> serde_json::Value {
    reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// Every envelope of a stream, oldest first.
pub async fn read_envelopes(
    bus: &crate::bus::Bus,
    stream: crate::bus::Stream,
) -> Vec<crate::proto::Envelope> {
    use prost::Message;
    let mut c = bus.connection();
    let entries: Vec<(String, HashMap<String, Vec<u8>>)> = redis::cmd("XRANGE")
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
    let text = reqwest::get(format!("{http}/metrics"))
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

/// SIGTERM, then asserts a clean exit (the log is shown otherwise).
pub async fn stop_cleanly(p: ServiceProcess) {
    let (status, p) = p.terminate_async(Duration::from_secs(20)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "did not stop cleanly: {status:?}\n{}",
        p.log_text()
    );
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
