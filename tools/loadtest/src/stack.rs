//! The stack under load: a private Redis (AOF, `appendfsync everysec` as in compose), the
//! database, and the four release binaries as separate processes, each with its own internal
//! listener; CPU time and peak memory of each read from `/proc`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use shared::testing::{RedisServer, ServiceProcess, TempDir, TestDb, free_port};

/// The services, in start order.
pub const SERVICES: [&str; 4] = ["ledger", "brain", "transcriber", "gateway"];

/// Which database the stack uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The value of a `--backend` option.
    pub fn from_arg(arg: Option<&str>) -> anyhow::Result<Self> {
        match arg {
            Some("sqlite") => Ok(Backend::Sqlite),
            Some("postgres") => Ok(Backend::Postgres),
            other => anyhow::bail!("--backend sqlite|postgres, not {other:?}"),
        }
    }
}

/// A running stack; everything stops when it is dropped.
pub struct Stack {
    pub redis: RedisServer,
    pub db: TestDb,
    pub public_url: String,
    pub procs: Vec<(&'static str, ServiceProcess)>,
    pub env: HashMap<String, String>,
    pub dir: TempDir,
}

/// A binary beside this one (`target/release/<name>` when this one runs from there).
pub fn sibling_bin(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("own path");
    me.parent().expect("bin dir").join(name)
}

impl Stack {
    /// Starts Redis, the database and the four services with `extra` on top of the defaults
    /// a load test must lift (open access, rate limits and the contact token budget raised).
    /// Waits until every service is ready.
    pub async fn start(
        backend: Backend,
        model_url: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::start_with_fsync(backend, model_url, extra, "everysec").await
    }

    /// [`Stack::start`] with Redis's `appendfsync` policy (`always`, `everysec`).
    pub async fn start_with_fsync(
        backend: Backend,
        model_url: &str,
        extra: &[(&str, &str)],
        fsync: &str,
    ) -> anyhow::Result<Self> {
        let dir = TempDir::new("bench");
        let redis = RedisServer::start_with(&["--appendfsync", fsync]);
        let db = match backend {
            Backend::Sqlite => TestDb::sqlite(),
            Backend::Postgres => TestDb::postgres().await,
        };
        let public = format!("127.0.0.1:{}", free_port());
        let mut env: HashMap<String, String> = HashMap::from([
            ("REDIS_URL".into(), redis.url()),
            ("DATABASE_URL".into(), db.url.clone()),
            ("STREAM_PREFIX".into(), "sb".into()),
            (
                "DATA_DIR".into(),
                dir.path().join("data").display().to_string(),
            ),
            ("TRANSPORTS".into(), "webchat".into()),
            ("PUBLIC_ADDR".into(), public.clone()),
            // Conversations are phone numbers (loopback only), as a load test needs.
            ("WEBCHAT_DEMO".into(), "true".into()),
            ("OPENAI_API_KEY".into(), "sk-bench".into()),
            ("OPENAI_BASE_URL".into(), model_url.to_owned()),
            ("ACCESS_MODE".into(), "open".into()),
            ("RATE_LIMIT_PER_CONTACT".into(), "100000".into()),
            ("RATE_LIMIT_GLOBAL".into(), "10000000".into()),
            // Every simulated customer comes from 127.0.0.1.
            ("HTTP_RATE_LIMIT_PER_ADDRESS".into(), "0".into()),
            (
                "PUBLIC_MAX_CONNECTIONS_PER_ADDRESS".into(),
                "1000000".into(),
            ),
            // Every customer follows its conversation's event stream from that one address.
            ("WEBCHAT_MAX_STREAMS_PER_ADDRESS".into(), "100000".into()),
            ("CONTACT_DAILY_TOKENS".into(), "1000000000".into()),
            // No daily cost cap and no visitors' allowance: a load test spends freely.
            ("DAILY_BUDGET_USD".into(), "0".into()),
            ("VISITOR_DAILY_TOKENS".into(), "0".into()),
            ("VISITOR_DAILY_AUDIO_SECONDS".into(), "0".into()),
        ]);
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let procs: Vec<_> = SERVICES
            .into_iter()
            .map(|name| (name, spawn(&env, &dir, name, &free_addr())))
            .collect();
        for (name, p) in &procs {
            ready(p, name).await?;
        }
        Ok(Self {
            redis,
            db,
            public_url: format!("http://{public}"),
            procs,
            env,
            dir,
        })
    }

    /// CPU seconds (user + system) and peak RSS (bytes) of each service and of Redis.
    pub fn usage(&self) -> Vec<(String, ProcUsage)> {
        let mut out: Vec<(String, ProcUsage)> = self
            .procs
            .iter()
            .filter_map(|(n, p)| ProcUsage::read(p.child.id()).map(|u| ((*n).to_owned(), u)))
            .collect();
        if let Some(pid) = self.redis.pid()
            && let Some(u) = ProcUsage::read(pid)
        {
            out.push(("redis".to_owned(), u));
        }
        out
    }

    /// Starts `n` more replicas of `service` (each with its own internal listener).
    pub async fn add_replicas(&mut self, service: &'static str, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            let p = spawn(&self.env, &self.dir, service, &free_addr());
            ready(&p, service).await?;
            self.procs.push((service, p));
        }
        Ok(())
    }

    /// `kill -9` of a service (its first replica).
    pub fn kill9(&mut self, name: &str) {
        if let Some((_, p)) = self.procs.iter_mut().find(|(n, _)| *n == name) {
            p.kill9();
        }
    }

    /// Starts a service again with its environment (after [`Stack::kill9`]); waits for ready.
    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let Some(i) = self.procs.iter().position(|(n, _)| *n == name) else {
            anyhow::bail!("no service {name}");
        };
        let (svc, old) = self.procs.remove(i);
        let p = spawn(
            &self.env,
            &self.dir,
            svc,
            old.http.trim_start_matches("http://"),
        );
        ready(&p, svc).await?;
        self.procs.insert(i, (svc, p));
        Ok(())
    }

    /// Stops Redis with SIGTERM (it writes its AOF) and starts it again on the same port.
    pub fn restart_redis_gracefully(&mut self) {
        self.redis.terminate();
        self.redis.restart();
    }

    /// `kill -9` of Redis, then a start on the same port and files (AOF replayed).
    pub fn kill_redis(&mut self) {
        self.redis.restart();
    }

    /// Every service's log so far.
    pub fn logs(&self) -> Vec<(&'static str, String)> {
        self.procs.iter().map(|(n, p)| (*n, p.log_text())).collect()
    }

    pub async fn stop(self) {
        for (_, p) in self.procs {
            let _ = p.terminate_async(Duration::from_secs(20)).await;
        }
    }
}

fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Starts the release binary of `service` with `env` and its internal listener on `addr`.
fn spawn(
    env: &HashMap<String, String>,
    dir: &TempDir,
    service: &str,
    addr: &str,
) -> ServiceProcess {
    let mut e = env.clone();
    e.insert(
        format!("{}_HTTP_ADDR", service.to_uppercase()),
        addr.to_owned(),
    );
    ServiceProcess::spawn(
        sibling_bin(service).to_str().expect("utf-8 path"),
        &e,
        addr,
        dir.path(),
    )
}

/// Waits until `p` answers `/readyz` 200 (its log in the error when it never does).
async fn ready(p: &ServiceProcess, service: &str) -> anyhow::Result<()> {
    if p.wait_status("/readyz", 200, Duration::from_secs(60)).await {
        Ok(())
    } else {
        anyhow::bail!("{service} never became ready:\n{}", p.log_text())
    }
}

/// What `/proc` says of one process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcUsage {
    pub cpu_secs: f64,
    pub peak_rss_bytes: u64,
    pub rss_bytes: u64,
}

impl ProcUsage {
    pub fn read(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces) start at ") ".
        let rest = &stat[stat.rfind(") ")? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Some(Self {
            cpu_secs: ticks / clock_ticks(),
            peak_rss_bytes: kb("VmHWM:") * 1024,
            rss_bytes: kb("VmRSS:") * 1024,
        })
    }
}

/// `getconf CLK_TCK` (100 on Linux unless configured otherwise).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
