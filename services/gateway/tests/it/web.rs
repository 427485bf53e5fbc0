//! The `web` transport's Rust side against a scripted fake sidecar process speaking the same
//! protocol (`tests/fake-sidecar/index.mjs`); WhatsApp itself cannot be reached from here.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shared::proto::{Identity, Outbound, Transport, identity, inbound, outbound};

use crate::helpers::{Gw, metric};

const T: Duration = Duration::from_secs(15);

pub(crate) struct Fake {
    dir: shared::testing::TempDir,
}

impl Fake {
    pub(crate) fn new(linked: bool) -> Self {
        let dir = shared::testing::TempDir::new("fake-wa");
        if linked {
            std::fs::write(dir.path().join("linked"), "").unwrap();
        }
        Self { dir }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn inject(&self, line: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("inject"))
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }

    pub(crate) fn starts(&self) -> usize {
        std::fs::read_to_string(self.path("starts")).map_or(0, |s| s.lines().count())
    }

    pub(crate) fn commands(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("commands.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub(crate) fn env(&self) -> Vec<(String, String)> {
        let sidecar = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-sidecar");
        vec![
            ("WA_SIDECAR_DIR".into(), sidecar.display().to_string()),
            (
                "WA_SESSION_DIR".into(),
                self.path("session").display().to_string(),
            ),
            ("WA_HEARTBEAT_SECS".into(), "1".into()),
            ("WA_REPLY_DELAY_MS".into(), "0".into()),
        ]
    }

    async fn gateway(&self, extra: &[(&str, &str)]) -> Gw {
        let vars = self.env();
        let mut env: Vec<(&str, &str)> = vec![("TRANSPORTS", "web")];
        env.extend(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        env.extend_from_slice(extra);
        Gw::start(&env).await
    }
}

/// `gateway qr` run beside `gw` (same environment): success, and what it printed.
async fn gateway_qr(gw: &Gw) -> (bool, String) {
    let out = tokio::process::Command::new(crate::helpers::BIN)
        .arg("qr")
        .envs(&gw.senv.env)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn gateway_qr_asks_the_running_gateway_whatever_the_configuration_says() {
    // `qr` only asks the gateway beside it: an invalid variable is none of its business
    // (exit 1, the gateway unreachable), where any other subcommand refuses it (exit 2).
    let dir = shared::testing::TempDir::new("qr");
    let run = |sub: &str| {
        std::process::Command::new(crate::helpers::BIN)
            .arg(sub)
            .env_clear()
            .env("GATEWAY_HTTP_ADDR", "127.0.0.1:1")
            .env("MAX_DELIVERIES", "many")
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let qr = run("qr");
    let said = String::from_utf8_lossy(&qr.stderr);
    assert_eq!(qr.status.code(), Some(1), "{said}");
    assert!(
        said.contains("cannot ask the gateway at http://127.0.0.1:1/qr"),
        "{said}"
    );
    let link = run("console-link");
    let said = String::from_utf8_lossy(&link.stderr);
    assert_eq!(link.status.code(), Some(2), "{said}");
    assert!(said.contains("MAX_DELIVERIES"), "{said}");
}

async fn ready(gw: &Gw) -> serde_json::Value {
    shared::testing::get_json(&format!("{}/readyz", gw.proc.http)).await
}

async fn wait_state(gw: &Gw, state: &str) {
    let reached = shared::testing::wait_for(T, async || {
        (ready(gw).await["checks"]["transport:web"]["state"] == state).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "never {state}: {}\n{}",
        ready(gw).await,
        gw.proc.log_text()
    );
}

async fn wait_for<R>(f: impl AsyncFnMut() -> Option<R>) -> R {
    shared::testing::eventually("the condition", T, f).await
}

#[tokio::test]
async fn qr_then_ready_then_messages_sends_and_receipts() {
    let fake = Fake::new(false);
    // The cloud transport's secrets set beside the web transport (as in a two-transport
    // deployment) must not reach the sidecar either.
    let gw = fake
        .gateway(&[
            ("WA_CLOUD_ACCESS_TOKEN", "EAAsecret"),
            ("WA_CLOUD_APP_SECRET", "app-secret"),
            ("WA_CLOUD_VERIFY_TOKEN", "verify-secret"),
        ])
        .await;
    wait_state(&gw, "waiting_for_qr").await;
    assert_eq!(ready(&gw).await["status"], "not_ready");
    let r = gw
        .http
        .get(format!("{}/qr", gw.proc.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    assert!(r.text().await.unwrap().contains("<svg"));
    let j = shared::testing::get_json(&format!("{}/qr?format=json", gw.proc.http)).await;
    assert_eq!(j["qr"], "2@fake-qr-code");
    assert_eq!(j["state"], "waiting_for_qr");
    // `gateway qr` draws it in the terminal; exit 1 once there is none (after linking, below).
    let (ok, drawn) = gateway_qr(&gw).await;
    assert!(ok, "{drawn}");
    assert!(
        drawn.contains('█') && drawn.contains("Linked devices"),
        "{drawn}"
    );
    // The sidecar (Node, a browser, third-party packages) gets a cleared environment: none of
    // the gateway's secrets, only what it needs.
    let env: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(fake.path("env.json")).unwrap()).unwrap();
    // The session folder (the linked device's keys) is created owner-only.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(fake.path("session"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "WA_SESSION_DIR mode {mode:o}");
    }
    for needed in ["PATH", "WA_SESSION_DIR", "CHROMIUM_PATH"] {
        assert!(env.iter().any(|k| k == needed), "{needed} missing: {env:?}");
    }
    for secret in [
        "WEBCHAT_TOKEN",
        "REDIS_URL",
        "STREAM_PREFIX",
        "OPENAI_API_KEY",
        "WA_CLOUD_ACCESS_TOKEN",
        "WA_CLOUD_APP_SECRET",
        "WA_CLOUD_VERIFY_TOKEN",
    ] {
        assert!(
            !env.iter().any(|k| k == secret),
            "{secret} passed on: {env:?}"
        );
    }

    fake.inject("LINK");
    wait_state(&gw, "connected").await;
    assert_eq!(ready(&gw).await["status"], "ready");
    let (ok, said) = gateway_qr(&gw).await;
    assert!(!ok && said.contains("no code to scan"), "{said}");

    // Inbound: a phone-number sender, a LID sender with its number, a voice note, a group.
    let text = serde_json::json!({"v":1,"type":"message","id":"false_15550001111@c.us_A1","from":"15550001111@c.us","phone":null,"lid":null,"kind":"text","body":"Hi there","timestamp":now_s(),"name":"Ana","media":null});
    let lid = serde_json::json!({"v":1,"type":"message","id":"false_99@lid_A2","from":"2000000000001@lid","phone":"+4915112345678","lid":"2000000000001@lid","kind":"text","body":"Hallo","timestamp":now_s() + 1,"name":null,"media":null});
    use base64::Engine;
    let audio = shared::testing::voice_note(1);
    let voice = serde_json::json!({"v":1,"type":"message","id":"false_15550001111@c.us_A3","from":"15550001111@c.us","phone":"+15550001111","lid":null,"kind":"voice","body":"","timestamp":now_s() + 2,"name":null,"media":{"mime":"audio/ogg; codecs=opus","data":base64::engine::general_purpose::STANDARD.encode(&audio)}});
    let image = serde_json::json!({"v":1,"type":"message","id":"false_15550001111@c.us_A4","from":"15550001111@c.us","phone":null,"lid":null,"kind":"image","body":"this one?","timestamp":now_s() + 3,"name":null,"media":{"mime":"image/png","data":base64::engine::general_purpose::STANDARD.encode(crate::helpers::PNG)}});
    for m in [&text, &lid, &voice, &image] {
        fake.inject(&m.to_string());
    }
    fake.inject(r#"{"v":1,"type":"ignored","reason":"group"}"#);
    fake.inject("this is not JSON {");
    fake.inject(&text.to_string()); // the library delivering the same message again
    let inbound = wait_for(async || {
        let i = gw.inbound().await;
        (i.len() >= 4).then_some(i)
    })
    .await;
    // The duplicate came last: once it is counted as dropped, it was not published.
    wait_for(async || {
        let m = gw.metrics().await;
        (metric(&m, "gateway_duplicates_dropped_total{transport=\"web\"}") >= 1.0).then_some(())
    })
    .await;
    assert_eq!(gw.inbound().await.len(), 4, "the duplicate was published");
    let by_tmid = |id: &str| {
        inbound
            .iter()
            .find(|i| i.transport_message_id == id)
            .unwrap()
            .clone()
    };
    let a = by_tmid("false_15550001111@c.us_A1");
    assert_eq!(a.transport(), Transport::Web);
    // Each message taken is marked read in its chat (WA_READ_RECEIPTS), once: not the
    // duplicate, not the group's.
    let seen_now = || -> Vec<String> {
        fake.commands()
            .into_iter()
            .filter(|c| c["type"] == "seen")
            .map(|c| c["chat"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    wait_for(async || (seen_now().len() >= 4).then_some(())).await;
    // The duplicate's would follow within moments.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut seen = seen_now();
    seen.sort();
    assert_eq!(
        seen,
        [
            "15550001111@c.us",
            "15550001111@c.us",
            "15550001111@c.us",
            "2000000000001@lid"
        ]
    );
    assert_eq!(a.chat_id, "15550001111@c.us");
    assert_eq!(a.sent_at_ms, text["timestamp"].as_i64().unwrap() * 1000);
    assert_eq!(a.display_name, "Ana");
    assert_eq!(
        a.identities,
        [
            Identity {
                kind: identity::Kind::Phone as i32,
                value: "+15550001111".into()
            },
            Identity {
                kind: identity::Kind::WaId as i32,
                value: "15550001111@c.us".into()
            },
        ]
    );
    let b = by_tmid("false_99@lid_A2");
    assert_eq!(
        b.identities,
        [
            Identity {
                kind: identity::Kind::Phone as i32,
                value: "+4915112345678".into()
            },
            Identity {
                kind: identity::Kind::Lid as i32,
                value: "2000000000001@lid".into()
            },
        ]
    );
    let v = by_tmid("false_15550001111@c.us_A3");
    assert_eq!(v.kind(), inbound::Kind::Voice);
    assert_eq!(v.media.as_ref().unwrap().size_bytes, audio.len() as u64);
    // Media that could not come with its message is fetched with download_media.
    std::fs::write(
        fake.path("media.json"),
        serde_json::json!({"mime": "image/png", "data": base64::engine::general_purpose::STANDARD.encode(crate::helpers::PNG)}).to_string(),
    )
    .unwrap();
    fake.inject(&serde_json::json!({"v":1,"type":"message","id":"false_15550001111@c.us_A5","from":"15550001111@c.us","phone":null,"lid":null,"kind":"image","body":"","timestamp":now_s() + 4,"name":null,"media":null}).to_string());
    let late = wait_for(async || {
        gw.inbound()
            .await
            .into_iter()
            .find(|i| i.transport_message_id == "false_15550001111@c.us_A5")
    })
    .await;
    assert_eq!(
        late.media.as_ref().unwrap().size_bytes,
        crate::helpers::PNG.len() as u64
    );
    assert!(
        fake.commands()
            .iter()
            .any(|c| c["type"] == "download_media" && c["id"] == "false_15550001111@c.us_A5")
    );
    let img = by_tmid("false_15550001111@c.us_A4");
    assert_eq!(img.kind(), inbound::Kind::Image);
    assert_eq!(img.text, "this one?");
    assert_eq!(img.media.as_ref().unwrap().mime_type, "image/png");
    let text_m = gw.metrics().await;
    assert_eq!(
        metric(&text_m, "gateway_web_ignored_total{reason=\"group\"}"),
        1.0
    );
    assert_eq!(metric(&text_m, "gateway_web_protocol_errors_total"), 1.0);
    assert_eq!(
        metric(
            &text_m,
            "gateway_duplicates_dropped_total{transport=\"web\"}"
        ),
        1.0
    );

    // Outbound: typing, then the WhatsApp-formatted text; a receipt follows.
    gw.publish_outbound(Outbound {
        message_id: "R1".into(),
        transport: Transport::Web as i32,
        chat_id: "15550001111@c.us".into(),
        kind: outbound::Kind::Reply as i32,
        text: "**Yes**, we are open.".into(),
        in_reply_to: a.message_id.clone(),
        identities: Vec::new(),
        also_answers: Vec::new(),
    })
    .await;
    let sends = wait_for(async || {
        let s: Vec<serde_json::Value> = fake
            .commands()
            .into_iter()
            .filter(|c| c["type"] == "send")
            .collect();
        (!s.is_empty()).then_some(s)
    })
    .await;
    assert_eq!(sends[0]["chat"], "15550001111@c.us");
    assert_eq!(sends[0]["text"], "*Yes*, we are open.");
    assert!(
        fake.commands()
            .iter()
            .any(|c| c["type"] == "typing" && c["on"] == true)
    );
    fake.inject(r#"{"v":1,"type":"message_ack","id":"wamid.1","ack":3}"#);
    wait_for(async || {
        let m = gw.metrics().await;
        (metric(
            &m,
            "gateway_outbound_receipts_total{transport=\"web\",status=\"read\"}",
        ) == 1.0)
            .then_some(())
    })
    .await;
    // A chat WhatsApp refuses is dead-lettered; so is a message that answers nothing (the
    // transport never writes to a customer first).
    gw.publish_outbound(Outbound {
        message_id: "R2".into(),
        transport: Transport::Web as i32,
        chat_id: "bad@c.us".into(),
        kind: outbound::Kind::Reply as i32,
        text: "x".into(),
        in_reply_to: a.message_id.clone(),
        ..Default::default()
    })
    .await;
    gw.publish_outbound(Outbound {
        message_id: "R3".into(),
        transport: Transport::Web as i32,
        chat_id: "15550002222@c.us".into(),
        kind: outbound::Kind::Notice as i32,
        text: "Special offer!".into(),
        ..Default::default()
    })
    .await;
    let dead = gw.dead_letters(2).await;
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("invalid wid")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("never writes to a customer first")),
        "{reasons:?}"
    );
    assert!(
        !fake
            .commands()
            .iter()
            .any(|c| c["chat"] == "15550002222@c.us")
    );

    // Calls: declined by the sidecar, counted, and the caller gets one text within the hour
    // however often they call (a second call, and the same call reported twice); a group
    // call, a call the sidecar could not decline, nothing.
    let call = |id: &str, from: &str, group: bool, rejected: bool| {
        serde_json::json!({"v":1,"type":"call","id":id,"from":from,"phone":null,"video":false,"group":group,"rejected":rejected}).to_string()
    };
    fake.inject(&call("CALL1", "15550001111@c.us", false, true));
    fake.inject(&call("CALL1", "15550001111@c.us", false, true));
    fake.inject(&call("CALL3", "15550001111@c.us", false, true));
    fake.inject(&call("CALL2", "120363@g.us", true, true));
    fake.inject(&call("CALL4", "15550003333@c.us", false, false));
    let call_texts = async || -> Vec<serde_json::Value> {
        fake.commands()
            .into_iter()
            .filter(|c| {
                c["type"] == "send"
                    && c["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("can't take calls"))
            })
            .collect()
    };
    wait_for(async || {
        let calls = metric(
            &gw.metrics().await,
            "gateway_calls_rejected_total{transport=\"web\"}",
        );
        (calls >= 4.0 && !call_texts().await.is_empty()).then_some(())
    })
    .await;
    // Anything wrongly sent would follow within moments.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = call_texts().await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["chat"], "15550001111@c.us");
    assert_eq!(
        metric(
            &gw.metrics().await,
            "gateway_calls_rejected_total{transport=\"web\"}"
        ),
        4.0,
        "the call that could not be declined is not counted"
    );
}

#[tokio::test]
async fn crashes_and_zombies_are_restarted_and_a_logout_alerts() {
    // A local webhook receiver for the session alert.
    let hooks = shared::testing::WebhookSink::start();
    let hook_url = hooks.url.clone();

    let fake = Fake::new(true);
    let gw = fake
        .gateway(&[
            ("ALERT_WEBHOOK_URL", &hook_url),
            ("ADMIN_NUMBERS", "+15550000001"),
        ])
        .await;
    wait_state(&gw, "connected").await;
    assert_eq!(fake.starts(), 1);

    // The sidecar dies: restarted, the session (on disk) reconnects without a QR.
    fake.inject("CRASH");
    wait_for(async || (fake.starts() == 2).then_some(())).await;
    wait_state(&gw, "connected").await;

    // It stops answering heartbeats: a zombie, restarted after 3 periods.
    std::fs::write(fake.path("hang"), "").unwrap();
    let hung_at = Instant::now();
    wait_for(async || (fake.starts() == 3).then_some(())).await;
    assert!(
        hung_at.elapsed() >= Duration::from_secs(2),
        "restarted too early"
    );
    std::fs::remove_file(fake.path("hang")).unwrap();
    wait_state(&gw, "connected").await;
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "gateway_web_restarts_total{reason=\"exit\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "gateway_web_restarts_total{reason=\"zombie\"}"),
        1.0
    );

    // Logged out from the phone: not ready ("needs QR"), the operator and admins are told.
    fake.inject(r#"{"v":1,"type":"disconnected","reason":"LOGOUT"}"#);
    wait_state(&gw, "waiting_for_qr").await;
    wait_for(async || (!hooks.got().is_empty()).then_some(())).await;
    assert_eq!(hooks.got()[0]["switchboard"]["kind"], "session_logged_out");
    let alert = wait_for(async || {
        crate::helpers::read_stream(&gw.bus, shared::bus::Stream::Outbound)
            .await
            .into_iter()
            .find_map(|e| match e.payload {
                Some(shared::proto::Payload::Outbound(o)) if o.kind() == outbound::Kind::Alert => {
                    Some(o)
                }
                _ => None,
            })
    })
    .await;
    assert_eq!(alert.identities[0].value, "+15550000001");
}

#[tokio::test]
async fn a_session_stuck_not_connected_while_ready_is_restarted() {
    let fake = Fake::new(true);
    let gw = fake.gateway(&[("WA_STUCK_SECS", "5")]).await;
    wait_state(&gw, "connected").await;
    // The library keeps saying it is opening: heartbeats answer, but the session never recovers.
    std::fs::write(fake.path("state"), "OPENING").unwrap();
    wait_state(&gw, "disconnected").await;
    let since = Instant::now();
    wait_for(async || (fake.starts() == 2).then_some(())).await;
    assert!(
        since.elapsed() >= Duration::from_secs(3),
        "restarted before WA_STUCK_SECS"
    );
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "gateway_web_restarts_total{reason=\"stuck\"}"),
        1.0
    );
    // Quiet but connected is fine: no more restarts.
    std::fs::remove_file(fake.path("state")).unwrap();
    wait_state(&gw, "connected").await;
    // The point: quiet time passes without a restart (nothing happens to wait for); 3 s of
    // 1-second heartbeats, enough for a wrongly stuck session to be seen.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fake.starts(), 2);
    // "Connected", but the page no longer responds to the probe: stuck too.
    std::fs::write(fake.path("page_dead"), "").unwrap();
    wait_for(async || (fake.starts() == 3).then_some(())).await;
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "gateway_web_restarts_total{reason=\"stuck\"}"),
        2.0
    );
}

/// Whether process `pid` still runs (a zombie waiting for its reaper does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

#[tokio::test]
async fn a_crashed_sidecar_leaves_no_browser_behind_and_a_stale_profile_lock_is_cleared() {
    let fake = Fake::new(true);
    // A lock left by a browser killed on another host (a container restart): Chromium would
    // refuse the profile while it is there.
    let profile = fake.path("session/session");
    std::fs::create_dir_all(&profile).unwrap();
    std::os::unix::fs::symlink("old-container-4242", profile.join("SingletonLock")).unwrap();
    std::os::unix::fs::symlink("/tmp/gone", profile.join("SingletonSocket")).unwrap();
    std::fs::write(fake.path("spawn_child"), "").unwrap();
    let gw = fake.gateway(&[]).await;
    wait_state(&gw, "connected").await;
    assert!(profile.join("SingletonLock").symlink_metadata().is_err());
    assert!(profile.join("SingletonSocket").symlink_metadata().is_err());
    let pids = |fake: &Fake| -> Vec<u32> {
        std::fs::read_to_string(fake.path("child_pids"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    };
    let first = wait_for(async || pids(&fake).first().copied()).await;
    assert!(running(first));

    // The sidecar crashes without closing its browser: the browser is ended with it.
    fake.inject("CRASH");
    wait_for(async || (pids(&fake).len() == 2).then_some(())).await;
    wait_for(async || (!running(first)).then_some(())).await;
    // And when it hangs and is killed as a zombie, the same.
    let second = pids(&fake)[1];
    assert!(running(second));
    std::fs::write(fake.path("hang"), "").unwrap();
    wait_for(async || (fake.starts() == 3).then_some(())).await;
    wait_for(async || (!running(second)).then_some(())).await;
    std::fs::remove_file(fake.path("hang")).unwrap();
    wait_state(&gw, "connected").await;

    // On the gateway's own shutdown, the live one goes too.
    let third = wait_for(async || pids(&fake).get(2).copied()).await;
    drop(gw);
    wait_for(async || (!running(third)).then_some(())).await;
}

/// Now, in unix seconds (how the sidecar stamps a message).
fn now_s() -> i64 {
    shared::ids::now_ms() / 1000
}

#[tokio::test]
async fn a_message_older_than_the_dedup_window_is_dropped_not_answered_twice() {
    let fake = Fake::new(true);
    let gw = fake.gateway(&[]).await;
    wait_state(&gw, "connected").await;
    // Re-sent after an outage longer than the dedup records live (25 h): it may have been
    // answered before. Then one from just within the window, and a fresh one.
    for (id, age_s) in [("old", 26 * 3600), ("day", 24 * 3600), ("new", 0)] {
        fake.inject(
            &serde_json::json!({"v":1,"type":"message","id":id,"from":"15550004444@c.us","phone":null,"lid":null,"kind":"text","body":"is it ready?","timestamp":now_s() - age_s,"name":null,"media":null})
                .to_string(),
        );
    }
    let inbound = wait_for(async || {
        let i = gw.inbound().await;
        (i.len() >= 2).then_some(i)
    })
    .await;
    let ids: Vec<&str> = inbound
        .iter()
        .map(|i| i.transport_message_id.as_str())
        .collect();
    assert_eq!(ids, ["day", "new"]);
    assert_eq!(metric(&gw.metrics().await, "gateway_web_stale_total"), 1.0);
}

#[tokio::test]
async fn a_contacts_messages_are_published_in_the_order_whatsapp_delivered_them() {
    let fake = Fake::new(true);
    let gw = fake.gateway(&[("RATE_LIMIT_PER_CONTACT", "100")]).await;
    wait_state(&gw, "connected").await;
    for i in 0..20 {
        fake.inject(
            &serde_json::json!({"v":1,"type":"message","id":format!("m{i:02}"),"from":"15550003333@c.us","phone":null,"lid":null,"kind":"text","body":format!("part {i}"),"timestamp":now_s() + i,"name":null,"media":null})
                .to_string(),
        );
    }
    let inbound = wait_for(async || {
        let i = gw.inbound().await;
        (i.len() >= 20).then_some(i)
    })
    .await;
    let ids: Vec<&str> = inbound
        .iter()
        .map(|i| i.transport_message_id.as_str())
        .collect();
    let want: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn the_owners_messages_from_the_phone_reach_the_brain_and_the_bots_own_never_do() {
    let fake = Fake::new(true);
    let gw = fake.gateway(&[]).await;
    wait_state(&gw, "connected").await;
    // The bot sends a reply: the fake answers it as `wamid.1`.
    gw.publish_outbound(shared::proto::Outbound {
        message_id: "r-1".into(),
        transport: Transport::Web as i32,
        chat_id: "15550001111@c.us".into(),
        kind: shared::proto::outbound::Kind::Reply as i32,
        text: "Our shop opens at 9".into(),
        in_reply_to: "m-1".into(),
        identities: Vec::new(),
        also_answers: Vec::new(),
    })
    .await;
    wait_for(async || {
        fake.commands()
            .iter()
            .any(|c| c["type"] == "send")
            .then_some(())
    })
    .await;
    // The library reports both that send and a message the owner typed on the phone.
    fake.inject(r#"{"v":1,"type":"owner_message","id":"wamid.1","to":"15550001111@c.us","phone":"+15550001111","lid":null,"body":"Our shop opens at 9","timestamp":1764000100}"#);
    fake.inject(r#"{"v":1,"type":"owner_message","id":"true_15550001111@c.us_OWN","to":"15550001111@c.us","phone":"+15550001111","lid":null,"body":"Marta here, I'll bring it tomorrow","timestamp":1764000200}"#);
    let inbound = wait_for(async || {
        let i = gw.inbound().await;
        (!i.is_empty()).then_some(i)
    })
    .await;
    // Each owner message is checked against our sent records after OWNER_CHECK_DELAY (2 s),
    // in parallel, and dropping ours leaves no trace to wait for: the window must pass.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let inbound_later = gw.inbound().await;
    assert_eq!(
        inbound_later.len(),
        1,
        "the bot's own send was passed on: {inbound_later:?}"
    );
    let owner = &inbound[0];
    assert!(owner.from_business);
    assert_eq!(owner.text, "Marta here, I'll bring it tomorrow");
    assert_eq!(owner.chat_id, "15550001111@c.us");
    assert!(owner.identities.iter().any(|i| i.value == "+15550001111"));
}
