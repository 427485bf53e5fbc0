//! Service binaries under test: their environment, their process, their shared lifecycle.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::{KeyPrefix, TempDir, free_port, get_json, redis_url, unique_prefix};

/// A service process under test. Dropped while it runs, it gets SIGTERM and must exit 0 within
/// 20 s (the drop panics with its log otherwise) — unless the test is already failing, when it
/// is killed.
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
        let client = crate::http_client::client();
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

    /// Waits for the process to end by itself (a refused configuration): its exit status, or
    /// `None` while it still runs after `timeout`.
    pub async fn exited(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
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
        if std::thread::panicking() {
            self.kill9();
            return;
        }
        if !matches!(self.child.try_wait(), Ok(None)) {
            return; // it ended already (killed, or the test watched it exit)
        }
        let status = self.terminate(Duration::from_secs(20));
        if !status.is_some_and(|s| s.success()) {
            self.kill9();
            panic!(
                "{} did not stop cleanly on SIGTERM: {status:?}\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// Environment for running one service binary in a test: its own prefix, port, data dir and
/// database URL. Its directory and the keys under its prefix go when it is dropped.
pub struct ServiceEnv {
    /// The variables it starts with (tests add to them).
    pub env: HashMap<String, String>,
    /// Its internal listener's address.
    pub http_addr: String,
    /// Its `STREAM_PREFIX`.
    pub prefix: String,
    /// Its working directory (data, logs).
    pub dir: TempDir,
    keys: KeyPrefix,
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
            keys: KeyPrefix::of(redis_url, &prefix),
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
        self.keys.prefix = prefix.to_owned();
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
    let client = crate::http_client::client();
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
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in service: a script that exits with `code` on SIGTERM.
    fn exits_on_term_with(code: u8, dir: &TempDir) -> ServiceProcess {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.path().join(format!("exits-{code}"));
        std::fs::write(
            &bin,
            format!("#!/bin/sh\ntrap 'exit {code}' TERM\nwhile :; do sleep 0.05; done\n"),
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = ServiceProcess::spawn(
            bin.to_str().unwrap(),
            &HashMap::new(),
            "127.0.0.1:1",
            dir.path(),
        );
        std::thread::sleep(Duration::from_millis(200)); // the trap is set
        p
    }

    #[test]
    fn dropping_a_running_service_stops_it_and_fails_unless_it_exits_cleanly() {
        let dir = TempDir::new("drop");
        drop(exits_on_term_with(0, &dir));
        let unclean = std::panic::catch_unwind(|| drop(exits_on_term_with(3, &dir)));
        let message = unclean.expect_err("an exit of 3 must fail the test");
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(text.contains("did not stop cleanly"), "{text}");
        // One killed on purpose is left alone.
        let mut killed = exits_on_term_with(3, &dir);
        killed.kill9();
        drop(killed);
    }
}
