//! Visitor mode, the web chat's default: conversations belong to visitors with their own
//! tokens; phone numbers are never reachable through it.

use std::time::Duration;

use shared::proto::{Identity, Outbound, Transport, identity, outbound};

use crate::helpers::{Gw, SseReader};

const SERVER_TOKEN: &str = "server-to-server-key-0123456789";

/// A gateway serving visitors, on an address that is not loopback.
async fn visitor_gw(extra: &[(&str, &str)]) -> Gw {
    let public = format!("0.0.0.0:{}", shared::testing::free_port());
    let mut env = vec![("PUBLIC_ADDR", public.as_str()), ("WEBCHAT_DEMO", "false")];
    env.extend_from_slice(extra);
    Gw::start(&env).await
}

/// `POST /chat/api/visitors` with `body` (JSON) and extra headers: status and JSON.
async fn create(
    gw: &Gw,
    body: Option<serde_json::Value>,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut r = gw.http.post(format!("{}/chat/api/visitors", gw.public));
    if let Some(b) = body {
        r = r.json(&b);
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn visitor(gw: &Gw) -> (String, String) {
    let (status, v) = create(gw, None, &[]).await;
    assert_eq!(status, 201, "{v}");
    (
        v["visitor"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

/// A call on `/chat/api/{who}/{rest}` with a bearer token (or none): status and body.
async fn call(
    gw: &Gw,
    method: reqwest::Method,
    who: &str,
    rest: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut r = gw.http.request(method.clone(), gw.api(who, rest));
    if method == reqwest::Method::POST {
        r = r.json(&serde_json::json!({"text": "hello"}));
    }
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let body = if rest == "events" && status == 200 {
        serde_json::Value::Null
    } else {
        r.json().await.unwrap()
    };
    (status, body)
}

#[test]
fn demo_mode_is_refused_off_loopback() {
    let mut senv = shared::testing::ServiceEnv::new(
        shared::config::ServiceName::Gateway,
        &shared::testing::redis_url(),
        None,
    );
    let public = format!("0.0.0.0:{}", shared::testing::free_port());
    senv.env.insert("PUBLIC_ADDR".into(), public);
    senv.env.insert("WEBCHAT_DEMO".into(), "true".into());
    senv.env.insert("WEBCHAT_SECRET".into(), "short".into());
    let check = |senv: &shared::testing::ServiceEnv| {
        std::process::Command::new(crate::helpers::BIN)
            .arg("check-config")
            .env_clear()
            .envs(&senv.env)
            .current_dir(senv.dir.path())
            .output()
            .unwrap()
    };
    let out = check(&senv);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    // Every problem is listed.
    assert!(
        err.contains("WEBCHAT_DEMO") && err.contains("loopback"),
        "{err}"
    );
    assert!(err.contains("WEBCHAT_SECRET"), "{err}");
    // The page's own settings are checked the same way.
    senv.env
        .insert("WEBCHAT_VISITOR_TOKEN_DAYS".into(), "0".into());
    senv.env.insert(
        "WEBCHAT_FRAME_ANCESTORS".into(),
        "'self'; script-src *".into(),
    );
    let out = check(&senv);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WEBCHAT_VISITOR_TOKEN_DAYS"), "{err}");
    assert!(err.contains("WEBCHAT_FRAME_ANCESTORS"), "{err}");
    senv.env.remove("WEBCHAT_VISITOR_TOKEN_DAYS");
    senv.env.remove("WEBCHAT_FRAME_ANCESTORS");
    // Without demo mode the exposed web chat starts: no token needs configuring.
    senv.env.remove("WEBCHAT_DEMO");
    senv.env.remove("WEBCHAT_SECRET");
    let out = check(&senv);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_visitor_reads_and_writes_only_its_own_conversation() {
    let gw = visitor_gw(&[("WEBCHAT_TOKEN", SERVER_TOKEN)]).await;
    let (a, ta) = visitor(&gw).await;
    let (b, tb) = visitor(&gw).await;
    assert_ne!(a, b);
    assert_ne!(ta, tb);
    use reqwest::Method;

    // A writes to its own conversation; what the brain receives is a visitor, not a phone.
    let (status, body) = call(&gw, Method::POST, &a, "messages", Some(&ta)).await;
    assert_eq!(status, 202, "{body}");
    let ib = gw.inbound().await;
    assert_eq!(ib.len(), 1);
    assert_eq!(ib[0].chat_id, a);
    assert_eq!(
        ib[0].identities,
        vec![Identity {
            kind: identity::Kind::Webchat as i32,
            value: a.clone()
        }]
    );

    // B's token on A's conversation: not found, for every route; nothing written.
    for (m, rest) in [
        (Method::GET, "messages"),
        (Method::POST, "messages"),
        (Method::GET, "events"),
    ] {
        let (status, body) = call(&gw, m.clone(), &a, rest, Some(&tb)).await;
        assert_eq!(status, 404, "{m} {rest}: {body}");
        assert!(body["error"].is_string());
        // The code the page acts on (a new visitor), unlike any other 404.
        assert_eq!(body["code"], "token_unknown", "{body}");
        // No token, or one this server never issued: 401.
        for bad in [None, Some("garbage"), Some(&format!("{a}.AAAA"))] {
            let (status, body) = call(&gw, m.clone(), &a, rest, bad).await;
            assert_eq!(status, 401, "{m} {rest} {bad:?}: {body}");
            assert_eq!(body["code"], "token_unknown", "{body}");
        }
    }
    assert_eq!(gw.inbound().await.len(), 1, "B wrote nothing into A's chat");

    // Unknown visitors and phone numbers: 404, even for the server key.
    let forged = format!("v{}", &"0123456789abcdef".repeat(2)[..32]);
    for who in [forged.as_str(), "15550001111"] {
        let (status, _) = call(&gw, Method::GET, who, "messages", Some(&ta)).await;
        assert_eq!(status, 404, "{who}");
        let (status, _) = call(&gw, Method::GET, who, "messages", Some(SERVER_TOKEN)).await;
        assert_eq!(status, 404, "{who}");
        let (status, _) = call(&gw, Method::POST, who, "messages", Some(SERVER_TOKEN)).await;
        assert_eq!(status, 404, "{who}");
    }

    // A reply reaches A, streamed and listed; B's listing stays empty.
    let events = gw
        .http
        .get(gw.api(&a, "events?after=0"))
        .bearer_auth(&ta)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let mut sse = SseReader::new(events);
    gw.publish_outbound(Outbound {
        message_id: "R1".into(),
        transport: Transport::Webchat as i32,
        chat_id: a.clone(),
        kind: outbound::Kind::Reply as i32,
        text: "Hello, visitor".into(),
        in_reply_to: ib[0].message_id.clone(),
        identities: ib[0].identities.clone(),
        also_answers: Vec::new(),
    })
    .await;
    let mut seen = Vec::new();
    while let Some((_, m)) = sse.next_message(Duration::from_secs(10)).await {
        seen.push(m["text"].as_str().unwrap().to_owned());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen, ["hello", "Hello, visitor"]);
    let (status, list) = call(&gw, Method::GET, &a, "messages", Some(SERVER_TOKEN)).await;
    assert_eq!(status, 200, "the server key acts on any issued visitor");
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let (_, list) = call(&gw, Method::GET, &b, "messages", Some(&tb)).await;
    assert_eq!(list, serde_json::json!([]));

    // An admin alert addressed by phone number never reaches a visitor's conversation.
    gw.publish_outbound(Outbound {
        message_id: "A1".into(),
        kind: outbound::Kind::Alert as i32,
        text: "spend alert".into(),
        identities: vec![Identity {
            kind: identity::Kind::Phone as i32,
            value: "+15550001111".into(),
        }],
        ..Default::default()
    })
    .await;
    let dead = gw.dead_letters(1).await;
    assert!(
        dead[0].reason.contains("can reach the recipient"),
        "{dead:?}"
    );

    // A second replica without WEBCHAT_SECRET shares the key kept in Redis: A's token works.
    let public = format!("127.0.0.1:{}", shared::testing::free_port());
    let replica = Gw::start_on(
        &gw.redis,
        Some(gw.prefix()),
        &[("PUBLIC_ADDR", &public), ("WEBCHAT_DEMO", "false")],
    )
    .await;
    let (status, list) = call(&replica, Method::GET, &a, "messages", Some(&ta)).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_user_the_business_vouches_for_is_one_visitor_on_every_device() {
    let secret = "identity-secret-0123456789";
    let gw = visitor_gw(&[("WEBCHAT_IDENTITY_SECRET", secret)]).await;
    let hash = gateway::webchat::visitor::user_hash(secret, "customer-42");
    let user = |id: &str, h: &str| serde_json::json!({"user_id": id, "user_hash": h});
    let (s1, v1) = create(&gw, Some(user("customer-42", &hash)), &[]).await;
    let (s2, v2) = create(&gw, Some(user("customer-42", &hash)), &[]).await;
    assert_eq!((s1, s2), (201, 201), "{v1} {v2}");
    assert_eq!(v1["visitor"], v2["visitor"]);
    let (status, _) = call(
        &gw,
        reqwest::Method::POST,
        v1["visitor"].as_str().unwrap(),
        "messages",
        v2["token"].as_str(),
    )
    .await;
    assert_eq!(status, 202);
    // A wrong hash, another user's hash, half the pair, a bad body.
    let (status, body) = create(&gw, Some(user("customer-43", &hash)), &[]).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = create(&gw, Some(user("customer-42", "00ff")), &[]).await;
    assert_eq!(status, 401);
    let (status, _) = create(&gw, Some(serde_json::json!({"user_id": "x"})), &[]).await;
    assert_eq!(status, 400);
    let (status, _) = create(&gw, Some(serde_json::json!({"nope": 1})), &[]).await;
    assert_eq!(status, 400);
    // Anonymous visitors are still served, and are not the user.
    let (status, anon) = create(&gw, None, &[]).await;
    assert_eq!(status, 201);
    assert_ne!(anon["visitor"], v1["visitor"]);
    drop(gw);

    // Without WEBCHAT_IDENTITY_SECRET a user id is refused with the reason.
    let gw = visitor_gw(&[]).await;
    let (status, body) = create(&gw, Some(user("customer-42", &hash)), &[]).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("WEBCHAT_IDENTITY_SECRET")
    );
}

#[tokio::test]
async fn with_web_chat_visitors_off_no_visitor_is_created() {
    let secret = "identity-secret-0123456789";
    let gw = visitor_gw(&[
        ("WEBCHAT_VISITORS", "off"),
        ("WEBCHAT_IDENTITY_SECRET", secret),
    ])
    .await;
    let hash = gateway::webchat::visitor::user_hash(secret, "customer-42");
    let vouched = serde_json::json!({"user_id": "customer-42", "user_hash": hash});
    for body in [None, Some(vouched)] {
        let (status, reply) = create(&gw, body, &[]).await;
        assert_eq!(status, 403, "{reply}");
        assert!(
            reply["error"]
                .as_str()
                .unwrap()
                .contains("WEBCHAT_VISITORS=off"),
            "{reply}"
        );
    }
}

#[tokio::test]
async fn visitor_creation_is_limited_per_client_address() {
    // Behind a proxy: its header names the client.
    let gw = visitor_gw(&[
        ("WEBCHAT_VISITORS_PER_HOUR", "3"),
        ("TRUSTED_PROXY_HEADER", "X-Forwarded-For"),
    ])
    .await;
    let from = |addr: &'static str| [("x-forwarded-for", addr)];
    for _ in 0..3 {
        let (status, body) = create(&gw, None, &from("10.0.0.1, 203.0.113.5")).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = create(&gw, None, &from("10.0.0.9, 203.0.113.5")).await;
    assert_eq!(
        status, 429,
        "the proxy's own (last) entry is the client: {body}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("WEBCHAT_VISITORS_PER_HOUR")
    );
    let (status, _) = create(&gw, None, &from("203.0.113.6")).await;
    assert_eq!(status, 201, "another address has its own allowance");
    drop(gw);

    // Without a trusted header, a client cannot dodge the limit by sending one.
    let gw = visitor_gw(&[("WEBCHAT_VISITORS_PER_HOUR", "2")]).await;
    let mut statuses = Vec::new();
    for addr in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        statuses.push(create(&gw, None, &from(addr)).await.0);
    }
    assert_eq!(statuses, [201, 201, 429]);
}

#[tokio::test]
async fn visitors_spend_their_own_global_budget_not_whatsapp_customers() {
    // Visitor mode and demo mode (phone numbers) on one Redis and prefix: the phone numbers
    // stand for WhatsApp's customers, who share the global budget.
    let limits = [
        ("RATE_LIMIT_PER_CONTACT", "100"),
        ("RATE_LIMIT_GLOBAL", "3"),
        ("RATE_LIMIT_VISITORS", "2"),
    ];
    let mut env = limits.to_vec();
    env.push(("WEBCHAT_DEMO", "false"));
    let visitors = Gw::start(&env).await;
    let phones = Gw::start_on(&visitors.redis, Some(visitors.prefix()), &limits).await;
    let mut status = Vec::new();
    for _ in 0..3 {
        let (v, t) = visitor(&visitors).await;
        let (_, body) = call(&visitors, reqwest::Method::POST, &v, "messages", Some(&t)).await;
        status.push(body["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(status, ["accepted", "accepted", "rate_limited"]);
    // The visitors' budget is spent; WhatsApp's customers still have all of theirs.
    let mut status = Vec::new();
    for n in 0..4 {
        let (_, body) = phones.send_text(&format!("1555000100{n}"), "hi").await;
        status.push(body["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(status, ["accepted", "accepted", "accepted", "rate_limited"]);
}

/// `POST /chat/api/visitors/{visitor}/token` with `token` (or none): status and JSON.
async fn renew(gw: &Gw, visitor: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut r = gw
        .http
        .post(format!("{}/chat/api/visitors/{visitor}/token", gw.public));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

const SECRET: &str = "visitor-tokens-test-secret-0123456789abcdef";
const DAY: i64 = 86_400;

/// The gateway's visitor keys, for tokens it would have issued at another time.
fn keys(days: i64, legacy_until: Option<i64>) -> gateway::webchat::visitor::Keys {
    gateway::webchat::visitor::Keys::new(secrecy::SecretString::from(SECRET), None, None)
        .with_expiry(days * DAY, legacy_until)
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[tokio::test]
async fn visitor_tokens_expire_and_the_visitor_renews_them() {
    let gw = visitor_gw(&[
        ("WEBCHAT_SECRET", SECRET),
        ("WEBCHAT_TOKEN", SERVER_TOKEN),
        ("WEBCHAT_VISITOR_TOKEN_DAYS", "2"),
    ])
    .await;
    use reqwest::Method;
    // The page is in visitor mode (on its body tag).
    let html = gw
        .http
        .get(format!("{}/chat", gw.public))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("<body data-mode=\"visitor\">"));

    // A new visitor learns when its token expires.
    let (status, v) = create(&gw, None, &[]).await;
    assert_eq!(status, 201, "{v}");
    let (a, ta) = (v["visitor"].as_str().unwrap(), v["token"].as_str().unwrap());
    let expires_in = v["expires_in"].as_i64().unwrap();
    assert!((2 * DAY - 5..=2 * DAY).contains(&expires_in), "{v}");
    let at: jiff::Timestamp = v["expires_at"].as_str().unwrap().parse().unwrap();
    assert!((at.as_second() - now() - expires_in).abs() <= 5, "{v}");
    assert_eq!(call(&gw, Method::GET, a, "messages", Some(ta)).await.0, 200);

    // Renewed: the same visitor, a fresh token that works; the old one works until it expires.
    let (status, r) = renew(&gw, a, Some(ta)).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["visitor"], a);
    let fresh = r["token"].as_str().unwrap();
    assert!(r["expires_in"].as_i64().unwrap() > 2 * DAY - 5, "{r}");
    assert_eq!(
        call(&gw, Method::GET, a, "messages", Some(fresh)).await.0,
        200
    );
    assert_eq!(call(&gw, Method::GET, a, "messages", Some(ta)).await.0, 200);
    // The server-to-server key may renew; nobody else may.
    assert_eq!(renew(&gw, a, Some(SERVER_TOKEN)).await.0, 200);
    let (b, tb) = visitor(&gw).await;
    assert_eq!(renew(&gw, a, Some(&tb)).await.0, 404);
    assert_eq!(renew(&gw, a, None).await.0, 401);
    assert_eq!(renew(&gw, &b, Some("nope")).await.0, 401);

    // A token issued three days ago (for two days) is expired: 401 saying so, everywhere.
    let old = keys(2, None).issue(a.to_owned(), now() - 3 * DAY);
    for (method, rest) in [
        (Method::GET, "messages"),
        (Method::POST, "messages"),
        (Method::GET, "events"),
    ] {
        let (status, body) = call(&gw, method, a, rest, Some(&old.token)).await;
        assert_eq!(status, 401, "{rest}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("expired"),
            "{body}"
        );
        assert_eq!(body["code"], "token_expired", "{body}");
    }
    let (status, body) = renew(&gw, a, Some(&old.token)).await;
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    // Its expiry cannot be pushed back: it is under the MAC.
    let stretched = old.token.replace(
        &format!(".{}.", old.expires),
        &format!(".{}.", old.expires + 10 * DAY),
    );
    let (status, body) = call(&gw, Method::GET, a, "messages", Some(&stretched)).await;
    assert_eq!(status, 401);
    assert!(
        !body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    // A token from before tokens expired keeps working after the upgrade.
    let legacy = keys(2, None).legacy_token(&b);
    assert_eq!(
        call(&gw, Method::GET, &b, "messages", Some(&legacy))
            .await
            .0,
        200
    );
    let (status, r) = renew(&gw, &b, Some(&legacy)).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["token"].as_str().unwrap().matches('.').count(), 2);
}

#[tokio::test]
async fn tokens_from_before_the_upgrade_expire_token_days_after_it() {
    let gw = visitor_gw(&[("WEBCHAT_SECRET", SECRET)]).await;
    // The first start of a version with expiring tokens was 31 days ago (the default is 30
    // days): what the gateway finds in Redis.
    let key = shared::bus::Keys::new(gw.prefix()).key("wc:tokens-expire-since");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(now() - 31 * DAY)
        .query_async(&mut gw.redis().await)
        .await
        .unwrap();
    let (v, token) = visitor(&gw).await;
    use reqwest::Method;
    assert_eq!(
        call(&gw, Method::GET, &v, "messages", Some(&token)).await.0,
        200
    );
    let legacy = keys(30, None).legacy_token(&v);
    let (status, body) = call(&gw, Method::GET, &v, "messages", Some(&legacy)).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    // The gateway kept the recorded start (SET NX), as another replica would.
    let since: i64 = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut gw.redis().await)
        .await
        .unwrap();
    assert!(since <= now() - 31 * DAY + 5);
}

#[tokio::test]
async fn demo_mode_has_no_visitor_tokens_to_renew() {
    let gw = Gw::start(&[]).await;
    let (status, body) = renew(&gw, "15550001111", Some("anything")).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("demo mode"));
}
