//! The chat page in a real browser: Debian's headless Chromium, driven by playwright-core
//! (`tests/browser/chat.mjs`), opens the page as a website visitor on a 360-px phone screen,
//! sends a text and a photo and sees the replies appear; the page must fit the screen. The
//! screenshots (phone and desktop width) are kept in the test's temp dir (their paths are
//! printed) for a person to look at; `SB_KEEP_SCREENSHOT=1` copies them to /tmp.
//!
//! The whole path runs: gateway → brain (its model played by the fake OpenAI server) →
//! gateway → the page.

use std::path::Path;
use std::time::Duration;

use shared::fake_chat::Reply;

use crate::helpers::{Gw, PNG};

#[tokio::test]
async fn chat_page_in_headless_chromium_sends_text_and_photo_and_shows_replies() {
    if std::env::var("SB_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("SB_SKIP_BROWSER=1: browser test skipped");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists()
            && Path::new("/usr/bin/chromium").exists(),
        "the browser test needs Debian's chromium and `npm ci` in {} (scripts/test does both)",
        dir.display()
    );
    // Visitor mode, as a shop's website serves the page.
    let server = "server-key-for-the-browser-test";
    let gw = Gw::start(&[("WEBCHAT_DEMO", "false"), ("WEBCHAT_TOKEN", server)]).await;
    let work = shared::testing::TempDir::new("browser");
    let photo = work.path().join("photo.png");
    std::fs::write(&photo, PNG).unwrap();
    let phone_shot = work.path().join("chat-phone.png");
    let desktop_shot = work.path().join("chat-desktop.png");

    // The real brain answers, its model played by the fake OpenAI server (in Markdown).
    let fake = shared::fake_chat::FakeChat::start();
    fake.script([
        Reply::Text("**Yes!** We ship to Canada in 3–5 days.".into()),
        Reply::Text("That photo shows item *#42*: in stock.".into()),
    ]);
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
        // The default whitelist: visitors are served all the same.
        ("AI_DISCLOSURE", ""),
    ] {
        benv.env.insert(k.into(), v.into());
    }
    let brain_bin = shared::testing::workspace_bin("brain");
    let _brain = benv.spawn_ready(brain_bin.to_str().unwrap()).await;

    let out = tokio::process::Command::new("node")
        .arg(dir.join("chat.mjs"))
        .arg(&gw.public)
        .arg(&photo)
        .arg(&phone_shot)
        .arg(&desktop_shot)
        .current_dir(&dir)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out)
        .await
        .expect("browser test timed out")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    for shot in [&phone_shot, &desktop_shot] {
        let png = std::fs::read(shot).expect("screenshot written");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 5_000,
            "screenshot too small"
        );
        eprintln!("screenshot: {} ({} bytes)", shot.display(), png.len());
    }
    eprintln!("{stdout}");
    let visitor = stdout
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
    let kinds: Vec<(&str, &str)> = list
        .iter()
        .map(|m| {
            (
                m["direction"].as_str().unwrap(),
                m["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("in", "text"),
            ("out", "reply"),
            ("in", "image"),
            ("out", "reply")
        ]
    );
    if std::env::var("SB_KEEP_SCREENSHOT").is_ok() {
        std::fs::copy(&phone_shot, "/tmp/switchboard-chat-phone.png").unwrap();
        std::fs::copy(&desktop_shot, "/tmp/switchboard-chat-desktop.png").unwrap();
    }
    // The model saw the photo as an image part and the caption as text.
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].to_string().contains("data:image/png;base64,"));
}
