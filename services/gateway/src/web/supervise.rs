//! Supervision of the sidecar: started with a cleared environment, restarted with capped
//! backoff when it exits, stops answering heartbeats or stays stuck; its memory measured.

use std::path::Path;

use super::*;

/// All the sidecar inherits from the gateway's environment: the system's basics, and a proxy
/// and its certificates where WhatsApp is reached through one. Its own settings
/// (`WA_SESSION_DIR`, `WA_PAIRING_NUMBER`, `CHROMIUM_PATH`) are passed one by one: never a
/// prefix, which would hand it the `cloud` transport's `WA_CLOUD_*` secrets.
pub(super) const SIDECAR_ENV: &[&str] = &[
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

impl Web {
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
    pub(super) async fn run_once(
        &self,
        shutdown: &CancellationToken,
    ) -> std::io::Result<&'static str> {
        let cfg = &self.inner.cfg;
        // The linked session is a key to the business's WhatsApp account: owner-only (0700).
        shared::files::create_private_dir_all(&cfg.session_dir)?;
        clear_profile_locks(&cfg.session_dir);
        let mut child = self.sidecar_command()?.spawn()?;
        let pid = child.id();
        // Whatever happens below, this life ends with its whole process group.
        let _group = pid.map(ProcessGroup);
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
                    if let Some(reason) = self.check_health(pid) {
                        break reason;
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

    /// The sidecar's command: Node, a browser and their packages run with a cleared
    /// environment — none of the gateway's secrets (Redis password, Cloud API tokens), only
    /// what they need and their own settings.
    fn sidecar_command(&self) -> std::io::Result<tokio::process::Command> {
        let cfg = &self.inner.cfg;
        let session_dir = std::fs::canonicalize(&cfg.session_dir)?;
        let mut cmd = tokio::process::Command::new(&cfg.node);
        cmd.env_clear()
            .envs(std::env::vars().filter(|(k, _)| SIDECAR_ENV.contains(&k.as_str())));
        cmd.arg("index.mjs")
            .current_dir(&cfg.sidecar_dir)
            .env("WA_SESSION_DIR", &session_dir)
            .env("CHROMIUM_PATH", &cfg.chromium)
            .env("PUPPETEER_SKIP_DOWNLOAD", "true")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A group of its own: Chromium and its helpers are ended with it (ProcessGroup).
            .process_group(0)
            .kill_on_drop(true);
        if let Some(n) = &cfg.pairing_number {
            cmd.env("WA_PAIRING_NUMBER", n);
        }
        Ok(cmd)
    }

    /// Every heartbeat period: ask for a heartbeat, measure memory, and say why to restart
    /// when the sidecar went silent or the session stayed unhealthy too long.
    fn check_health(&self, pid: Option<u32>) -> Option<&'static str> {
        let cfg = &self.inner.cfg;
        let hb = cfg.heartbeat;
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
            tracing::warn!(
                silent,
                stuck,
                "the WhatsApp Web session looks stuck; restarting it"
            );
            return Some(if silent { "zombie" } else { "stuck" });
        }
        None
    }

    /// The session is gone: tell the operator by webhook and the admins by message (delivered
    /// through any transport that can reach them).
    pub(super) async fn alert_logged_out(&self) {
        tracing::error!("WhatsApp Web session logged out: a new QR scan is needed");
        let minute = (shared::ids::now_ms() / 60_000).to_string();
        self.inner
            .alerts
            .raise(crate::alert::Alert {
                kind: "session_logged_out",
                transport: TransportKind::Web,
                text: "WhatsApp Web was logged out: customers get no answers until someone scans the new QR code on the gateway's internal /qr.",
                once_key: &minute,
                to_admins: true,
            })
            .await;
    }
}

/// The sidecar's process group (its pid is the group's id): dropped, every process left in it
/// is killed — Chromium and its helpers when the sidecar crashed or was killed without closing
/// them, which would otherwise live on, holding memory and the profile's lock.
struct ProcessGroup(u32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let Some(pid) = i32::try_from(self.0)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            return;
        };
        match rustix::process::kill_process_group(pid, rustix::process::Signal::KILL) {
            Ok(()) => tracing::info!(
                pgid = self.0,
                "ended what was left of the sidecar's process group"
            ),
            // ESRCH: nothing was left.
            Err(e) if e == rustix::io::Errno::SRCH => {}
            Err(e) => {
                tracing::warn!(pgid = self.0, error = %e, "cannot end the sidecar's process group")
            }
        }
    }
}

/// Chromium's profile locks (`SingletonLock`, `SingletonSocket`, `SingletonCookie`) in the
/// session folder and the profiles inside it. Left by a browser that was killed — a container
/// restart changes the host name they name — they make the next Chromium refuse the profile as
/// "in use by another computer". Only called when no sidecar of ours runs.
fn clear_profile_locks(session_dir: &Path) {
    let mut dirs = vec![session_dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(session_dir) {
        dirs.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    for dir in dirs {
        for name in ["SingletonLock", "SingletonSocket", "SingletonCookie"] {
            let path = dir.join(name);
            // symlink_metadata: the lock is a symlink to a target that does not exist.
            if path.symlink_metadata().is_ok() && std::fs::remove_file(&path).is_ok() {
                tracing::info!(lock = name, "cleared a stale Chromium profile lock");
            }
        }
    }
}

/// Memory of the sidecar and of its descendants (Chromium), from `/proc`: PSS, so pages the
/// browser's processes share are counted once overall, not once per process.
pub(super) fn record_memory(pid: u32) {
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
