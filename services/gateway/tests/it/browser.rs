//! The chat page in a real browser: Debian's headless Chromium, driven by playwright-core
//! (`tests/browser/chat.mjs`), opens the page on a 360-px phone screen in each mode — as a
//! website visitor (a text and a photo, reloads, a token renewal, an expired token) and in demo
//! mode as a phone number — sends messages and sees the replies appear, under the page's
//! Content-Security-Policy (any violation fails); the page must fit the screen. The
//! screenshots (phone and desktop width) are kept in the test's temp dir (their paths are
//! printed) for a person to look at; `SB_KEEP_SCREENSHOT=1` copies them to
//! /tmp/switchboard-chat-<mode>-<width>.png.
//!
//! The whole path runs: gateway → brain (its model played by the fake OpenAI server) →
//! gateway → the page.

use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;
use shared::fake_chat::{FakeChat, Reply};

use crate::helpers::{Gw, PNG};

/// A browser run: what the page printed, and the brain and its fake model (kept alive: the
/// brain's environment owns the Redis key prefix, whose keys go with it).
struct Run {
    stdout: String,
    fake: FakeChat,
    _brain: (
        shared::testing::ServiceProcess,
        shared::testing::ServiceEnv,
        shared::testing::TestDb,
    ),
}

/// Runs `chat.mjs` against `gw` (with `mode_args`), the brain answering with `replies`
/// (`brain_env` added to its environment); checks the screenshots.
async fn run_page(
    gw: &Gw,
    replies: Vec<Reply>,
    brain_env: &[(&str, &str)],
    mode_args: &[&str],
) -> Run {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists()
            && Path::new("/usr/bin/chromium").exists(),
        "the browser test needs Debian's chromium and `npm ci` in {} (scripts/test does both)",
        dir.display()
    );
    let work = shared::testing::TempDir::new("browser");
    let photo = work.path().join("photo.png");
    std::fs::write(&photo, PNG).unwrap();
    let phone_shot = work.path().join("chat-phone.png");
    let desktop_shot = work.path().join("chat-desktop.png");

    // The real brain answers, its model played by the fake OpenAI server (in Markdown).
    let fake = FakeChat::start();
    fake.script(replies);
    let db = shared::testing::TestDb::new().await;
    let mut benv = shared::testing::ServiceEnv::new(
        shared::config::ServiceName::Brain,
        &gw.redis,
        Some(&db.url),
    );
    benv.use_prefix(gw.prefix());
    for (k, v) in [
        ("OPENAI_BASE_URL", fake.base_url.as_str()),
        ("OPENAI_API_KEY", "sk-test"),
        ("AI_DISCLOSURE", ""),
    ]
    .iter()
    .chain(brain_env)
    {
        benv.env.insert((*k).into(), (*v).into());
    }
    let brain_bin = shared::testing::workspace_bin("brain");
    let brain = benv.spawn_ready(brain_bin.to_str().unwrap()).await;

    let out = tokio::process::Command::new("node")
        .arg(dir.join("chat.mjs"))
        .arg(&gw.public)
        .arg(&photo)
        .arg(&phone_shot)
        .arg(&desktop_shot)
        .args(mode_args)
        .current_dir(&dir)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out)
        .await
        .expect("browser test timed out")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    let mode = if mode_args[0] == "visitor" {
        "visitor"
    } else {
        "demo"
    };
    for (shot, width) in [(&phone_shot, "phone"), (&desktop_shot, "desktop")] {
        let png = std::fs::read(shot).expect("screenshot written");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 5_000,
            "screenshot too small"
        );
        eprintln!("screenshot: {} ({} bytes)", shot.display(), png.len());
        if std::env::var("SB_KEEP_SCREENSHOT").is_ok() {
            std::fs::copy(shot, format!("/tmp/switchboard-chat-{mode}-{width}.png")).unwrap();
        }
    }
    eprintln!("{stdout}");
    Run {
        stdout,
        fake,
        _brain: (brain, benv, db),
    }
}

fn skipped() -> bool {
    let skip = std::env::var("SB_SKIP_BROWSER").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("SB_SKIP_BROWSER=1: browser test skipped");
    }
    skip
}

/// A listing's `(direction, kind)` pairs.
fn kinds(list: &[serde_json::Value]) -> Vec<(&str, &str)> {
    list.iter()
        .map(|m| {
            (
                m["direction"].as_str().unwrap(),
                m["kind"].as_str().unwrap(),
            )
        })
        .collect()
}

fn ship_replies() -> Vec<Reply> {
    vec![
        Reply::Text("**Yes!** We ship to Canada in 3–5 days.".into()),
        Reply::Text("That photo shows item *#42*: in stock.".into()),
    ]
}

#[tokio::test]
async fn chat_page_in_headless_chromium_sends_text_and_photo_and_shows_replies() {
    if skipped() {
        return;
    }
    // Visitor mode, as a shop's website serves the page.
    let server = "server-key-for-the-browser-test";
    let secret = "browser-test-webchat-secret-0123456789";
    let gw = Gw::start(&[
        ("WEBCHAT_DEMO", "false"),
        ("WEBCHAT_TOKEN", server),
        ("WEBCHAT_SECRET", secret),
    ])
    .await;
    // A token this server issued 31 days ago (WEBCHAT_VISITOR_TOKEN_DAYS is 30): expired.
    let month_ago = jiff::Timestamp::now().as_second() - 31 * 86_400;
    let expired = gateway::webchat::visitor::Keys::new(SecretString::from(secret), None, None)
        .new_visitor(month_ago)
        .token;
    // The default whitelist: visitors are served all the same.
    let run = run_page(&gw, ship_replies(), &[], &["visitor", &expired]).await;
    let visitor = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("visitor="))
        .expect("the page reports its visitor");
    // What the page showed is what the API lists.
    let list: Vec<serde_json::Value> = gw
        .http
        .get(gw.api(visitor, "messages"))
        .bearer_auth(server)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds = kinds(&list);
    assert_eq!(
        kinds,
        [
            ("in", "text"),
            ("out", "reply"),
            ("in", "image"),
            ("out", "reply")
        ]
    );
    // The model saw the photo as an image part and the caption as text.
    let reqs = run.fake.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].to_string().contains("data:image/png;base64,"));
}

#[tokio::test]
async fn chat_page_in_demo_mode_chats_as_a_phone_number_under_the_same_policy() {
    if skipped() {
        return;
    }
    // Demo mode (scripts/run --demo): the page talks as the phone number in its URL, here an
    // admin's, as scripts/run prints it.
    let gw = Gw::start(&[("WEBCHAT_DEMO", "true")]).await;
    let run = run_page(
        &gw,
        ship_replies(),
        &[("ADMIN_NUMBERS", "+15550002222")],
        &["demo=15550002222"],
    )
    .await;
    assert_eq!(run.fake.requests().len(), 1);
    let list = gw.listing("15550002222").await;
    let kinds = kinds(&list);
    assert_eq!(kinds, [("in", "text"), ("out", "reply")]);
}
