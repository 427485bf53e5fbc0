//! The chat page in a real browser: Debian's headless Chromium, driven by playwright-core
//! (`tests/browser/chat.mjs`), sends a text and a photo and sees the replies appear. The
//! screenshot is kept in the test's temp dir (its path is printed) for a person to look at.
//!
//! The brain answers through its own issue; until it runs here, this test answers the two
//! inbound events itself, over the real bus, as the brain would (in Markdown).

use std::path::Path;
use std::time::Duration;

use shared::proto::{Outbound, inbound, outbound};

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
    let gw = Gw::start(&[]).await;
    let contact = "15557770000";
    let work = shared::testing::TempDir::new("browser");
    let photo = work.path().join("photo.png");
    std::fs::write(&photo, PNG).unwrap();
    let shot = work.path().join("chat.png");

    // Answer each inbound message as the brain would.
    let replier = {
        let bus = gw.bus.clone();
        tokio::spawn(async move {
            let mut answered = 0;
            while answered < 2 {
                let events = crate::helpers::read_stream(&bus, shared::bus::Stream::Inbound).await;
                let inbound: Vec<_> = events
                    .into_iter()
                    .filter_map(|e| match e.payload {
                        Some(shared::proto::Payload::Inbound(i)) => Some(i),
                        _ => None,
                    })
                    .collect();
                for ib in inbound.iter().skip(answered) {
                    let text = match ib.kind() {
                        inbound::Kind::Image => "That photo shows item *#42*: in stock.",
                        _ => "**Yes!** We ship to Canada in 3–5 days.",
                    };
                    let o = Outbound {
                        message_id: format!("reply-{}", ib.message_id),
                        transport: ib.transport,
                        chat_id: ib.chat_id.clone(),
                        kind: outbound::Kind::Reply as i32,
                        text: text.to_owned(),
                        in_reply_to: ib.message_id.clone(),
                        identities: ib.identities.clone(),
                    };
                    let key = gateway::ingest::chat_order_key(o.transport(), &o.chat_id);
                    let env =
                        shared::proto::Envelope::new("test", shared::proto::Payload::Outbound(o));
                    bus.publisher()
                        .publish(shared::bus::Publish::ordered(
                            shared::bus::Stream::Outbound,
                            env,
                            key,
                        ))
                        .await
                        .unwrap();
                    answered += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let out = tokio::process::Command::new("node")
        .arg(dir.join("chat.mjs"))
        .arg(&gw.public)
        .arg(contact)
        .arg(&photo)
        .arg(&shot)
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
    tokio::time::timeout(Duration::from_secs(5), replier)
        .await
        .expect("replier finished")
        .unwrap();
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "screenshot too small"
    );
    eprintln!(
        "screenshot: {} ({} bytes)\n{stdout}",
        shot.display(),
        png.len()
    );
    // What the page showed is what the API lists.
    let list = gw.listing(contact).await;
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
        std::fs::copy(&shot, "/tmp/switchboard-chat.png").unwrap();
    }
    gw.stop().await;
}
