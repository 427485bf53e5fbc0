//! Who may use the console, and what reaches the brain: an admin who lost the role loses
//! every console route at once, the pass-through forwards the brain's console routes and
//! nothing else (odd paths refused before anything is forwarded), and an action the audit log
//! cannot record is not done. Real gateway and brain binaries on one Redis prefix and one
//! database (`SB_TEST_DB=postgres` for PostgreSQL).

use std::time::{Duration, Instant};

use reqwest::Method;

use crate::console::{Session, Stack, T, sample, until};

/// The audit log's length, as the console shows it.
async fn audit_len(s: &Stack, me: &Session) -> usize {
    let (status, audit) = s.get(me, "/console/api/audit").await;
    assert_eq!(status, 200, "{audit}");
    audit.as_array().unwrap().len()
}

/// A request sent as is — no client library normalizing its path on the way: its status and
/// body.
async fn raw(s: &Stack, me: &Session, method: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = s.gw.public.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&host).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {}\r\nX-CSRF-Token: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        me.cookie,
        me.csrf,
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    tokio::time::timeout(T, conn.read_to_string(&mut resp))
        .await
        .expect("an answer")
        .unwrap();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {resp:?}"));
    let body = resp
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

#[tokio::test]
async fn a_demoted_admin_loses_every_console_route_at_once() {
    let s = Stack::start(&[], false).await;
    let me = s.session().await;
    let other = "+15550005555";
    assert_eq!(s.whitelist(&me, other, "admin").await, 200);
    // Three sessions of the other admin, each to try one kind of route after the demotion
    // (the first refusal ends the session it was asked with).
    let mut theirs = Vec::new();
    for _ in 0..3 {
        let cookie = s.sign_in_with(&s.link_for(other).await).await;
        let (status, who) = s
            .get(
                &Session {
                    cookie: cookie.clone(),
                    csrf: String::new(),
                },
                "/console/api/session",
            )
            .await;
        assert_eq!((status, who["admin"].as_str()), (200, Some(other)));
        theirs.push(Session {
            cookie,
            csrf: who["csrf"].as_str().unwrap().to_owned(),
        });
        let (status, _) = s.get(theirs.last().unwrap(), "/console/api/whatsapp").await;
        assert_eq!(status, 200, "an admin reads the WhatsApp state");
    }
    let before = audit_len(&s, &me).await;
    assert_eq!(s.whitelist(&me, other, "user").await, 200);
    let demoted = Instant::now();
    // Answered by the gateway: the state, and an action.
    let (status, _) = s.get(&theirs[0], "/console/api/whatsapp").await;
    assert_eq!(status, 401, "a demoted admin read the WhatsApp state");
    let (status, _) = s
        .post(
            &theirs[1],
            "/console/api/whatsapp/webchat/relink",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 401, "a demoted admin acted on WhatsApp");
    // Passed through to the brain.
    let (status, _) = s.get(&theirs[2], "/console/api/conversations").await;
    assert_eq!(status, 401, "a demoted admin read the conversations");
    assert!(
        demoted.elapsed() < Duration::from_secs(1),
        "a demotion applies within a second: {:?}",
        demoted.elapsed()
    );
    // Each session is over, on every route; nothing they tried was recorded or done.
    for session in &theirs {
        for path in ["/console/api/session", "/console/", "/console/api/costs"] {
            let (status, _) = s.get(session, path).await;
            assert_eq!(status, 401, "{path} after the demotion");
        }
    }
    assert_eq!(
        audit_len(&s, &me).await,
        before + 1,
        "only the demotion is in the audit log"
    );
    for path in ["/console/api/whatsapp", "/console/api/conversations"] {
        let (status, _) = s.get(&me, path).await;
        assert_eq!(status, 200, "the remaining admin keeps {path}");
    }
}

#[tokio::test]
async fn the_pass_through_forwards_the_brains_console_routes_and_nothing_else() {
    let s = Stack::start(&[], false).await;
    let me = s.session().await;

    // Every route a browser may call reaches the brain (its own answer, whatever it is).
    for r in shared::console::BRAIN_API.iter().filter(|r| r.from_browser) {
        let path = sample(r.path);
        let (status, body) = s
            .send(&me, r.method.parse().unwrap(), &path, serde_json::json!({}))
            .await;
        assert!(
            !(status == 404 && body["error"] == "no such console route"),
            "{} {path} did not reach the brain: {status} {body}",
            r.method
        );
    }
    let audited = audit_len(&s, &me).await;

    // Odd paths: 400 with a reason, before anything is forwarded — `..` reaching the brain's
    // internal routes, or a forged audit entry, is what they would do.
    for (method, path) in [
        ("GET", "/console/api/../../metrics"),
        ("GET", "/console/api/%2e%2e/%2e%2e/metrics"),
        ("GET", "/console/api/%2E%2E/%2E%2E/metrics"),
        ("GET", "/console/api/.%2e/.%2E/metrics"),
        ("GET", "/console/api/./conversations"),
        ("GET", "/console/api/conversations/..%2f..%2f..%2fmetrics"),
        ("GET", "/console/api/conversations%2Fc1"),
        ("GET", "/console/api/..%5c..%5cmetrics"),
        ("GET", "/console/api//conversations"),
        ("GET", "/console//api/conversations"),
        ("GET", "/console/api/conversations/"),
        ("POST", "/console/api/x/../audit"),
        ("POST", "/console/api/x/%2e%2e/audit"),
        ("POST", "/console/api/whatsapp/../audit"),
    ] {
        let (status, body) = raw(
            &s,
            &me,
            method,
            path,
            r#"{"action":"whatsapp.logout","target":"forged"}"#,
        )
        .await;
        let reason: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        // A trailing slash is no odd path: simply no route.
        let want = if path.ends_with('/') { 404 } else { 400 };
        assert_eq!(status, want, "{method} {path}: {body}");
        assert!(reason["error"].is_string(), "{method} {path}: {body}");
    }
    // A raw backslash: refused too (by the HTTP parser or by us).
    let (status, _) = raw(&s, &me, "GET", "/console/api/..\\..\\metrics", "").await;
    assert_eq!(status, 400);
    assert_eq!(audit_len(&s, &me).await, audited, "nothing was forged");

    // The gateway's own audit route and unknown routes: 404 here, never forwarded — with the
    // brain gone, they are still answered 404 while a real route finds no brain (502).
    let mut s = s;
    s.brain.child.kill().unwrap();
    s.brain.child.wait().unwrap();
    for (method, path) in [
        (Method::GET, "/console/api/metrics"),
        (Method::GET, "/console/api/no-such-thing"),
        (Method::POST, "/console/api/audit"),
        (Method::DELETE, "/console/api/costs"),
        (Method::GET, "/console/api/conversations/c1/reply"),
    ] {
        let (status, body) = s
            .send(&me, method.clone(), path, serde_json::json!({}))
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (404, Some("no such console route")),
            "{method} {path}"
        );
    }
    let (status, _) = s.get(&me, "/console/api/conversations").await;
    assert_eq!(
        status, 502,
        "the real route was forwarded to the brain, now gone"
    );
}

#[tokio::test]
async fn an_action_the_audit_log_cannot_record_is_not_done() {
    let fake = crate::web::Fake::new(true);
    let env = fake.env();
    let mut extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    extra.push(("TRANSPORTS", "web,webchat"));
    let s = Stack::start(&extra, false).await;
    let me = s.session().await;
    until("WhatsApp Web connected", async || {
        let (_, w) = s.get(&me, "/console/api/whatsapp").await;
        let web = w["transports"]
            .as_array()?
            .iter()
            .find(|t| t["kind"] == "web")?
            .clone();
        (web["connected"] == true).then_some(())
    })
    .await;
    let starts = fake.starts();
    let (_, settings_before) = s.get(&me, "/console/api/settings").await;

    // The audit log's table is gone from the test's own database: every write to it fails.
    sqlx::query("DROP TABLE console_audit")
        .execute(s.db.db.pool())
        .await
        .unwrap();

    let newcomer = "+15550007777";
    for (method, path, body) in [
        (
            Method::POST,
            "/console/api/whatsapp/web/logout",
            serde_json::json!({}),
        ),
        (
            Method::POST,
            "/console/api/whatsapp/web/relink",
            serde_json::json!({}),
        ),
        (
            Method::POST,
            "/console/api/whitelist",
            serde_json::json!({"number": newcomer, "action": "admin"}),
        ),
        (
            Method::PUT,
            "/console/api/settings",
            serde_json::json!({"key": "model", "value": "gpt-unaudited"}),
        ),
        (
            Method::PUT,
            "/console/api/knowledge/unaudited.md",
            serde_json::json!({"content": "# Unaudited\n\nnever written"}),
        ),
    ] {
        let (status, why) = s.send(&me, method.clone(), path, body).await;
        assert_eq!(status, 503, "{method} {path}: {why}");
        assert!(
            why["error"].as_str().is_some_and(|e| e.contains("audit")),
            "{method} {path}: {why}"
        );
    }
    // Nothing happened: still linked, not restarted, no logout sent to the sidecar …
    let (_, w) = s.get(&me, "/console/api/whatsapp").await;
    assert!(w.to_string().contains("\"connected\":true"), "{w}");
    assert!(fake.path("linked").exists(), "WhatsApp was logged out");
    assert_eq!(fake.starts(), starts, "WhatsApp Web was restarted");
    assert!(
        !fake
            .commands()
            .iter()
            .any(|c| matches!(c["type"].as_str(), Some("logout" | "shutdown"))),
        "{:?}",
        fake.commands()
    );
    // … no new admin, the same settings, no new knowledge file.
    let (_, list) = s.get(&me, "/console/api/whitelist").await;
    assert!(
        !list
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["phone"] == newcomer && (c["role"] == "admin" || c["allowed"] == true)),
        "{list}"
    );
    let (_, settings_after) = s.get(&me, "/console/api/settings").await;
    assert_eq!(settings_after, settings_before);
    let (status, _) = s.get(&me, "/console/api/knowledge/unaudited.md").await;
    assert_eq!(status, 404);
}
