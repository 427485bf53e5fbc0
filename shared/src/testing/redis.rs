//! Redis for tests: key prefixes that clean up after themselves, and private servers.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, free_port, run_on_own_thread, unique_prefix};

/// Deletes every key under `{prefix}` (SCAN + DEL; never FLUSH).
pub async fn cleanup_prefix(url: &str, prefix: &str) {
    let _ = crate::redis_conn::delete_prefix(url, prefix).await;
}

/// A test's key prefix on a Redis server: every key under it is deleted when this is dropped.
pub struct KeyPrefix {
    /// The Redis server's URL.
    pub url: String,
    /// The prefix (`STREAM_PREFIX`).
    pub prefix: String,
}

impl KeyPrefix {
    /// A fresh prefix on `url`.
    pub fn new(url: &str) -> Self {
        Self::of(url, &unique_prefix())
    }

    /// Takes charge of an existing prefix on `url`.
    pub fn of(url: &str, prefix: &str) -> Self {
        Self {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
        }
    }
}

impl Drop for KeyPrefix {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        run_on_own_thread(move || async move { cleanup_prefix(&url, &prefix).await });
    }
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

    /// Its data directory (`--dir`: the AOF, snapshots).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
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
