//! Alertmanager as compose runs it: `prometheus/alertmanager/configure.sh` writes its
//! configuration from the environment and starts it (here Debian's Alertmanager binary instead of
//! the image's). An alert posted to it reaches the same Slack-compatible webhook the services post
//! to, and an SMTP server by e-mail; amtool accepts what the script writes; bad settings stop it
//! with every problem named. Prometheus's side (the `alerting` target) is checked statically.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opscheck::{program, read_yaml, root};
use shared::testing::{TempDir, WebhookSink, free_port};
use yaml_rust2::YamlLoader;

fn script() -> PathBuf {
    root().join("prometheus/alertmanager/configure.sh")
}

/// A local SMTP server that accepts every message and keeps its envelope and text.
struct SmtpSink {
    addr: String,
    mail: Arc<Mutex<Vec<String>>>,
}

impl SmtpSink {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mail: Arc<Mutex<Vec<String>>> = Arc::default();
        let kept = mail.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let _ = smtp_session(conn, &kept);
                });
            }
        });
        Self { addr, mail }
    }

    fn mail(&self) -> Vec<String> {
        self.mail.lock().unwrap().clone()
    }
}

/// One SMTP conversation (RFC 5321's commands Alertmanager uses, no TLS offered).
fn smtp_session(conn: std::net::TcpStream, kept: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut lines = BufReader::new(conn);
    out.write_all(b"220 sink ESMTP\r\n")?;
    let mut message = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.trim_end().to_ascii_uppercase();
        if verb.starts_with("EHLO") {
            out.write_all(b"250-sink\r\n250 8BITMIME\r\n")?;
        } else if verb.starts_with("DATA") {
            out.write_all(b"354 go on\r\n")?;
            loop {
                line.clear();
                lines.read_line(&mut line)?;
                if line == ".\r\n" || line.is_empty() {
                    break;
                }
                message.push_str(&line);
            }
            kept.lock().unwrap().push(std::mem::take(&mut message));
            out.write_all(b"250 kept\r\n")?;
        } else if verb.starts_with("QUIT") {
            out.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            // MAIL FROM / RCPT TO: part of the message as far as the test is concerned.
            message.push_str(&line);
            out.write_all(b"250 ok\r\n")?;
        }
    }
}

/// Alertmanager started by the script, killed on drop.
struct Alertmanager {
    child: Child,
    url: String,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `configure.sh <dir>` with nothing of this process's environment but PATH.
fn configure(dir: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg(script())
        .arg(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap());
    cmd
}

/// `amtool check-config` accepts the configuration.
fn assert_amtool_accepts(config: &Path) {
    let check = Command::new(program(&["amtool"]))
        .args(["check-config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(check.status.success(), "amtool check-config: {check:?}");
}

fn start_alertmanager(dir: &Path, env: &[(&str, &str)]) -> Alertmanager {
    let port = free_port();
    let child = configure(&dir.join("config"))
        .arg(program(&["prometheus-alertmanager", "alertmanager"]))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Alertmanager {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn an_alert_reaches_the_owners_webhook_and_mailbox() {
    let hook = WebhookSink::start();
    let smtp = SmtpSink::start();
    let dir = TempDir::new("alertmanager");
    let am = start_alertmanager(
        dir.path(),
        &[
            ("ALERT_WEBHOOK_URL", &hook.url),
            ("ALERT_EMAIL_TO", "owner@shop.example"),
            ("ALERT_EMAIL_FROM", "switchboard@shop.example"),
            ("ALERT_SMTP_HOST", &smtp.addr),
            ("ALERT_SMTP_REQUIRE_TLS", "false"),
            ("ALERT_GROUP_WAIT", "1s"),
        ],
    );
    let config = dir.path().join("config/alertmanager.yml");
    let http = shared::http_client::client();
    wait_until("Alertmanager listening", || {
        std::net::TcpStream::connect(am.url.trim_start_matches("http://"))
            .ok()
            .map(drop)
    })
    .await;
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        !text.contains(&hook.url),
        "the webhook URL is a secret: kept in its own file, not in the configuration"
    );
    assert_amtool_accepts(&config);

    // What Prometheus sends when a rule of prometheus/alerts.yml fires.
    let alert = serde_json::json!([{
        "labels": {"alertname": "DeadLettersAppearing", "severity": "warning", "stream": "inbound"},
        "annotations": {"summary": "Entries of inbound were dead-lettered (malformed)"},
    }]);
    let mut posted = false;
    for _ in 0..50 {
        let sent = http
            .post(format!("{}/api/v2/alerts", am.url))
            .json(&alert)
            .send()
            .await;
        if sent.is_ok_and(|r| r.status().is_success()) {
            posted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(posted, "Alertmanager took no alert");

    let body = wait_until("the webhook POST", || hook.got().into_iter().next()).await;
    let attachment = &body["attachments"][0];
    let title = attachment["title"].as_str().unwrap_or_default();
    assert!(
        title.contains("FIRING") && title.contains("DeadLettersAppearing"),
        "{body}"
    );
    assert!(
        attachment["text"]
            .as_str()
            .unwrap_or_default()
            .contains("Entries of inbound were dead-lettered"),
        "{body}"
    );
    let mail = wait_until("the e-mail", || smtp.mail().into_iter().next()).await;
    assert!(mail.contains("owner@shop.example"), "{mail}");
    assert!(mail.contains("DeadLettersAppearing"), "{mail}");
}

#[test]
fn bad_alert_settings_stop_alertmanager_naming_every_problem() {
    let dir = TempDir::new("alertmanager-bad");
    let out = configure(dir.path())
        .arg("false")
        .env("ALERT_WEBHOOK_URL", "hooks.slack.com/services/x")
        .env("ALERT_EMAIL_TO", "owner@shop.example")
        .env("ALERT_SMTP_HOST", "smtp.example")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for problem in [
        "ALERT_WEBHOOK_URL must start with http",
        "ALERT_SMTP_HOST must be host:port",
        "ALERT_EMAIL_FROM is not",
    ] {
        assert!(err.contains(problem), "{problem:?} not in: {err}");
    }
}

#[test]
fn without_a_destination_alerts_stay_on_alertmanagers_page_and_it_says_so() {
    let dir = TempDir::new("alertmanager-none");
    let out = configure(dir.path()).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("only shown on its page"));
    let config = dir.path().join("alertmanager.yml");
    assert_amtool_accepts(&config);
    let y = YamlLoader::load_from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    assert!(y[0]["receivers"][0]["slack_configs"].is_badvalue());
}

#[test]
fn compose_runs_alertmanager_and_prometheus_sends_it_the_rules_alerts() {
    let compose = read_yaml("compose.yaml");
    let am = &compose["services"]["alertmanager"];
    let entrypoint: Vec<&str> = am["entrypoint"]
        .as_vec()
        .expect("alertmanager's entrypoint runs configure.sh")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        entrypoint.iter().any(|a| a.ends_with("configure.sh")),
        "{entrypoint:?}"
    );
    let volumes = format!("{:?}", am["volumes"]);
    assert!(
        volumes.contains("./prometheus/alertmanager/configure.sh"),
        "{volumes}"
    );
    let environment = format!("{:?}", am["environment"]);
    for var in [
        "ALERT_WEBHOOK_URL",
        "ALERT_EMAIL_TO",
        "ALERT_SMTP_HOST",
        "ALERT_SMTP_PASSWORD",
    ] {
        assert!(environment.contains(var), "alertmanager does not get {var}");
    }
    let p = read_yaml("prometheus/prometheus.yml");
    let targets = format!("{:?}", p["alerting"]["alertmanagers"]);
    assert!(targets.contains("alertmanager:9093"), "{targets}");
}
