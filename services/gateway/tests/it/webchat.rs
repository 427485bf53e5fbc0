//! The web chat contract end to end through a running gateway.

use std::time::Duration;

use shared::proto::{Identity, Outbound, Transport, identity, inbound, outbound};

use crate::helpers::{Gw, PNG, SseReader, file_form, metric};

const T: Duration = Duration::from_secs(10);

fn reply(chat: &str, id: &str, text: &str, in_reply_to: &str) -> Outbound {
    Outbound {
        message_id: id.to_owned(),
        transport: Transport::Webchat as i32,
        chat_id: chat.to_owned(),
        kind: outbound::Kind::Reply as i32,
        text: text.to_owned(),
        in_reply_to: in_reply_to.to_owned(),
        identities: Vec::new(),
        also_answers: Vec::new(),
    }
}

/// An admin alert as the ledger sends it: no transport, no chat, a phone identity.
fn alert_to(contact: &str, id: &str, text: &str) -> Outbound {
    Outbound {
        message_id: id.into(),
        kind: outbound::Kind::Alert as i32,
        text: text.into(),
        identities: vec![Identity {
            kind: identity::Kind::Phone as i32,
            value: format!("+{contact}"),
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn text_round_trip_listing_sse_resume_typing_and_receipts() {
    let gw = Gw::start(&[]).await;
    let contact = "15550001111";
    let sse = gw
        .http
        .get(format!("{}?after=0", gw.api(contact, "events")))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    assert!(
        sse.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut events = SseReader::new(sse);

    let (status, body) = gw
        .send_text(contact, "  Hello, are you open today?  ")
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();

    // Published once, normalised, with the phone identity (loopback: contact = phone number).
    let inbound = gw.inbound().await;
    assert_eq!(inbound.len(), 1);
    let ib = &inbound[0];
    assert_eq!(ib.message_id, id);
    assert_eq!(ib.kind(), inbound::Kind::Text);
    assert_eq!(ib.text, "Hello, are you open today?");
    assert_eq!(ib.transport(), Transport::Webchat);
    assert_eq!(ib.chat_id, contact);
    assert_eq!(
        ib.identities,
        vec![Identity {
            kind: identity::Kind::Phone as i32,
            value: "+15550001111".into()
        }]
    );
    assert!(ib.sent_at_ms > 0);

    // The SSE stream shows the message and the typing indicator.
    let (first_event_id, m) = events.next_message(T).await.expect("in message event");
    assert_eq!(m["id"], id.as_str());
    assert_eq!(m["direction"], "in");
    assert_eq!(m["kind"], "text");
    let mut saw_typing = false;
    // The brain answers in Markdown.
    gw.publish_outbound(reply(contact, "R1", "**Yes!** We're open _9–18_.", &id))
        .await;
    let mut reply_event = None;
    while let Some(ev) = events.next(T).await {
        if ev.event == "typing" && ev.data.contains("true") {
            saw_typing = true;
        }
        if ev.event == "message" {
            reply_event = Some(ev);
            break;
        }
    }
    assert!(saw_typing, "no typing event before the reply");
    let reply_event = reply_event.expect("reply event");
    // The reply clears the indicator.
    let cleared = events.next(T).await.expect("an event after the reply");
    assert_eq!(
        (cleared.event.as_str(), cleared.data.as_str()),
        ("typing", "{\"on\":false}")
    );
    let r: serde_json::Value = serde_json::from_str(&reply_event.data).unwrap();
    assert_eq!(r["id"], "R1");
    assert_eq!(r["direction"], "out");
    assert_eq!(r["kind"], "reply");
    assert_eq!(r["text"], "*Yes!* We're open _9–18_.");
    assert_eq!(r["in_reply_to"], id.as_str());

    // The listing: oldest first, both directions, RFC 3339 times.
    let list = gw.listing(contact).await;
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["in_reply_to"], serde_json::Value::Null);
    assert_eq!(list[1]["id"], "R1");
    for m in &list {
        let at = m["at"].as_str().unwrap();
        assert!(at.parse::<jiff::Timestamp>().is_ok(), "not RFC 3339: {at}");
    }
    // `+1…` is the same contact; an unknown one is empty.
    assert_eq!(gw.listing("+15550001111").await.len(), 2);
    assert!(gw.listing("15550009999").await.is_empty());

    // Resuming with Last-Event-ID gives only what came after it.
    let resumed = gw
        .http
        .get(gw.api(contact, "events"))
        .header("Last-Event-ID", &first_event_id)
        .send()
        .await
        .unwrap();
    let mut resumed = SseReader::new(resumed);
    let (_, m) = resumed.next_message(T).await.expect("resumed event");
    assert_eq!(m["id"], "R1");
    // Without Last-Event-ID or ?after, only new messages come.
    let fresh = gw.http.get(gw.api(contact, "events")).send().await.unwrap();
    let mut fresh = SseReader::new(fresh);
    assert!(
        fresh
            .next_message(Duration::from_millis(700))
            .await
            .is_none()
    );

    // A long Markdown reply arrives in parts of at most 4,096 characters.
    let long = (0..30)
        .map(|i| {
            format!(
                "Paragraph {i}: {}",
                "lorem ipsum dolor sit amet. ".repeat(9)
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n");
    gw.publish_outbound(reply(contact, "R2", &long, &id)).await;
    let list = gw
        .wait_listing(contact, T, |l| l.iter().any(|m| m["id"] == "R2.2"))
        .await;
    let parts: Vec<&serde_json::Value> = list
        .iter()
        .filter(|m| m["id"].as_str().unwrap().starts_with("R2"))
        .collect();
    assert_eq!(parts.len(), 2, "{}", parts.len());
    assert!(
        parts
            .iter()
            .all(|p| p["text"].as_str().unwrap().chars().count() <= 4096)
    );
    assert!(parts[0]["text"].as_str().unwrap().ends_with("amet."));
    assert_eq!(parts[1]["id"], "R2.2");
    let (_, m) = fresh.next_message(T).await.expect("live event");
    assert_eq!(m["id"], "R2");

    // Streamed to a client = delivered (a receipt, counted once per message; the receipt is
    // written in the background once the event is streamed).
    let delivered = "gateway_outbound_receipts_total{transport=\"webchat\",status=\"delivered\"}";
    let text = shared::testing::eventually("three delivered receipts", T, async || {
        let text = gw.metrics().await;
        (metric(&text, delivered) >= 3.0).then_some(text)
    })
    .await;
    assert_eq!(
        metric(
            &text,
            "gateway_outbound_receipts_total{transport=\"webchat\",status=\"delivered\"}"
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "gateway_inbound_total{transport=\"webchat\",kind=\"text\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "gateway_outbound_sent_total{transport=\"webchat\"}"),
        3.0
    );
}

#[tokio::test]
async fn the_listing_pages_back_from_the_newest_with_limit_and_before() {
    let gw = Gw::start(&[("RATE_LIMIT_PER_CONTACT", "1000")]).await;
    let contact = "15550002222";
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, body) = gw.send_text(contact, &format!("message {i}")).await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let page = |query: &'static str| {
        let url = format!("{}?{query}", gw.api(contact, "messages"));
        let http = gw.http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let ids_of = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Without parameters: everything (up to 1,000), oldest first.
    let all = gw.listing(contact).await;
    assert_eq!(
        all.iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ids
    );
    // The newest two, oldest first.
    let (status, newest) = page("limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(ids_of(&newest), ids[3..5]);
    // Paging back from the oldest of them.
    let url = format!("{}?limit=2&before={}", gw.api(contact, "messages"), ids[3]);
    let older: serde_json::Value = gw.http.get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(ids_of(&older), ids[1..3]);
    let url = format!("{}?before={}", gw.api(contact, "messages"), ids[1]);
    let first: serde_json::Value = gw.http.get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(ids_of(&first), ids[0..1]);
    // Bad parameters: a JSON 4xx with the reason.
    for (query, want) in [
        ("limit=0", 400),
        ("limit=1001", 400),
        ("limit=ten", 400),
        ("before=no-such-message", 404),
    ] {
        let (status, body) = page(query).await;
        assert_eq!(status, want, "{query}: {body}");
        assert!(body["error"].is_string(), "{query}: {body}");
    }
}

#[tokio::test]
async fn voice_and_image_uploads_are_stored_by_content_hash() {
    let gw = Gw::start(&[]).await;
    let contact = "4915112345678";
    let voice = shared::testing::voice_note(1);
    let r = gw
        .send_form(contact, file_form(voice.clone(), "audio/ogg"))
        .await;
    assert_eq!(r.status(), 202);
    let voice_id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for caption in ["What is this?", "And this?"] {
        let form = file_form(PNG.to_vec(), "image/png").text("caption", caption.to_owned());
        let r = gw.send_form(contact, form).await;
        assert_eq!(r.status(), 202);
    }
    let inbound = gw.inbound().await;
    assert_eq!(inbound.len(), 3);
    let v = &inbound[0];
    assert_eq!(v.message_id, voice_id);
    assert_eq!(v.kind(), inbound::Kind::Voice);
    assert_eq!(v.text, "");
    let media = v.media.as_ref().expect("voice media ref");
    assert_eq!(media.mime_type, "audio/ogg");
    assert_eq!(media.size_bytes, voice.len() as u64);
    let mut c = gw.redis().await;
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(&media.key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(stored, voice, "stored bytes differ");
    {
        use sha2::Digest;
        let want = sha2::Sha256::digest(&voice)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        assert_eq!(media.sha256, want);
        assert!(media.key.ends_with(&want));
    }
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&media.key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        ttl > 23 * 3600 * 1000 && ttl <= 24 * 3600 * 1000,
        "ttl {ttl}"
    );
    // The same photo twice: one stored copy, both captions kept.
    let (p1, p2) = (&inbound[1], &inbound[2]);
    assert_eq!(p1.kind(), inbound::Kind::Image);
    assert_eq!(p1.text, "What is this?");
    assert_eq!(p2.text, "And this?");
    assert_eq!(
        p1.media.as_ref().unwrap().key,
        p2.media.as_ref().unwrap().key
    );
    assert_eq!(p1.media.as_ref().unwrap().mime_type, "image/png");
    let total: u64 = redis::cmd("GET")
        .arg(format!("{{{}}}:media:total", gw.prefix()))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(total, voice.len() as u64 + PNG.len() as u64);
    // Whose items they are is kept under a keyed hash of the sender, for `!forget`.
    let keys = gw.bus.keys();
    keys.ready(&mut c).await.unwrap();
    let mut of: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys.media_of(&format!("+{contact}")))
        .query_async(&mut c)
        .await
        .unwrap();
    of.sort();
    let mut want = vec![
        media.sha256.clone(),
        p1.media.as_ref().unwrap().sha256.clone(),
    ];
    want.sort();
    assert_eq!(of, want);
    let names: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{}}}:*", gw.prefix()))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        names.iter().all(|k| !k.contains(contact)),
        "a phone number in a key name: {names:?}"
    );
    let list = gw.listing(contact).await;
    let kinds: Vec<&str> = list.iter().map(|m| m["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["voice", "image", "image"]);
    assert_eq!(list[0]["text"], "");
    assert_eq!(list[1]["text"], "What is this?");
}

#[tokio::test]
async fn media_store_evicts_the_oldest_items_to_stay_under_its_cap() {
    let gw = Gw::start(&[("MAX_MEDIA_MB", "1"), ("MEDIA_CAP_MB", "1")]).await;
    let contact = "15550002222";
    // Three different ~400 KB "photos" (a PNG header is enough for sniffing only if it parses,
    // so use real PNGs padded after IEND: decoders ignore trailing bytes).
    let mut keys = Vec::new();
    for i in 0..3u8 {
        let mut bytes = PNG.to_vec();
        bytes.extend(std::iter::repeat_n(i, 400 * 1024));
        let r = gw.send_form(contact, file_form(bytes, "image/png")).await;
        assert_eq!(r.status(), 202);
    }
    for ib in gw.inbound().await {
        keys.push(ib.media.unwrap().key);
    }
    let mut c = gw.redis().await;
    let mut exists = Vec::new();
    for k in &keys {
        let e: bool = redis::cmd("EXISTS")
            .arg(k)
            .query_async(&mut c)
            .await
            .unwrap();
        exists.push(e);
    }
    assert_eq!(exists, [false, true, true], "the oldest item goes first");
    let text = gw.metrics().await;
    assert_eq!(metric(&text, "gateway_media_evicted_total"), 1.0);
    assert!(metric(&text, "gateway_media_store_bytes") < 1024.0 * 1024.0);
}

#[tokio::test]
async fn bad_input_gets_a_json_4xx_and_publishes_nothing() {
    let gw = Gw::start(&[("MAX_MEDIA_MB", "1")]).await;
    let ok = "15550003333";
    let post_json = |contact: &str, body: &str| {
        gw.http
            .post(gw.api(contact, "messages"))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
    };
    let mut cases: Vec<(&str, u16, reqwest::Response)> = Vec::new();
    for (what, contact, body, want) in [
        ("letters as contact", "abc", r#"{"text":"hi"}"#, 400),
        ("too short a number", "123", r#"{"text":"hi"}"#, 400),
        ("leading zero", "0155500033", r#"{"text":"hi"}"#, 400),
        ("empty text", ok, r#"{"text":""}"#, 400),
        ("blank text", ok, r#"{"text":"   "}"#, 400),
        ("no text", ok, r#"{}"#, 400),
        ("text not a string", ok, r#"{"text":42}"#, 400),
        ("broken JSON", ok, r#"{"text":"#, 400),
    ] {
        cases.push((what, want, post_json(contact, body).await.unwrap()));
    }
    cases.push((
        "plain-text body",
        415,
        gw.http
            .post(gw.api(ok, "messages"))
            .header("content-type", "text/plain")
            .body("hi")
            .send()
            .await
            .unwrap(),
    ));
    let no_file = reqwest::multipart::Form::new().text("caption", "where is the file?");
    cases.push((
        "multipart without a file",
        400,
        gw.send_form(ok, no_file).await,
    ));
    for (what, bytes, mime, want) in [
        (
            "a PDF",
            b"%PDF-1.7\n1 0 obj\n".to_vec(),
            "application/pdf",
            415,
        ),
        ("garbage audio", vec![0x55; 2000], "audio/ogg", 422),
        ("garbage image", vec![0x11; 2000], "image/jpeg", 422),
        ("empty file", Vec::new(), "image/png", 422),
        (
            "over MAX_MEDIA_MB",
            {
                let mut b = PNG.to_vec();
                b.resize(1024 * 1024 + 10, 0);
                b
            },
            "image/png",
            413,
        ),
    ] {
        cases.push((what, want, gw.send_form(ok, file_form(bytes, mime)).await));
    }
    cases.push((
        "bad Last-Event-ID",
        400,
        gw.http
            .get(gw.api(ok, "events"))
            .header("Last-Event-ID", "yesterday")
            .send()
            .await
            .unwrap(),
    ));
    cases.push((
        "listing of a bad contact",
        400,
        gw.http
            .get(gw.api("12ab", "messages"))
            .send()
            .await
            .unwrap(),
    ));
    for (what, want, resp) in cases {
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        assert_eq!(status, want, "{what}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: no JSON reason: {body}"
        );
        if what == "over MAX_MEDIA_MB" {
            // The same answer as a body declared over the limit: the limit, not a bare word.
            assert_eq!(
                body["error"], "the file is larger than the 1 MB limit",
                "{what}"
            );
        }
    }
    // A declared length far over the limit is refused before any body is read.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = gw.public.trim_start_matches("http://").to_owned();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST /chat/api/{ok}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut resp = String::new();
        let _ = tokio::time::timeout(T, s.read_to_string(&mut resp)).await;
        assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
        assert!(resp.contains("\"error\""), "{resp}");
    }
    assert!(gw.inbound().await.is_empty(), "bad input was published");
    assert!(
        gw.listing(ok).await.is_empty(),
        "bad input reached the history"
    );
}

#[tokio::test]
async fn redis_unreachable_is_503_and_service_resumes_when_it_returns() {
    let mut redis = shared::testing::RedisServer::start();
    let gw = Gw::start_on(&redis.url(), None, &[]).await;
    let contact = "15550004444";
    assert_eq!(gw.send_text(contact, "first").await.0, 202);
    redis.kill9();
    let (status, body) = gw.send_text(contact, "while down").await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].is_string());
    let r = gw
        .http
        .get(gw.api(contact, "messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        gw.proc
            .wait_status("/readyz", 503, Duration::from_secs(10))
            .await
    );
    redis.restart();
    // Refused posts are not published: retried until Redis takes one.
    shared::testing::eventually("a post taken again", Duration::from_secs(20), async || {
        (gw.send_text(contact, "back").await.0 == 202).then_some(())
    })
    .await;
    let texts: Vec<String> = gw.inbound().await.into_iter().map(|i| i.text).collect();
    assert_eq!(texts, ["first", "back"]);
}

#[tokio::test]
async fn on_loopback_an_alert_to_a_phone_number_reaches_its_web_chat() {
    let gw = Gw::start(&[]).await;
    let contact = "15550006666";
    gw.publish_outbound(alert_to(contact, "A2", "Daily spend passed $50"))
        .await;
    let list = gw.wait_listing(contact, T, |l| !l.is_empty()).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["kind"], "alert");
    assert_eq!(list[0]["direction"], "out");
    assert_eq!(list[0]["in_reply_to"], serde_json::Value::Null);
}

#[tokio::test]
async fn duplicates_are_dropped_on_the_transport_message_id() {
    let gw = Gw::start(&[]).await;
    let contact = "15550007777";
    let send = || {
        gw.http
            .post(gw.api(contact, "messages"))
            .header("Idempotency-Key", "retry-1")
            .json(&serde_json::json!({"text": "once"}))
            .send()
    };
    let a: serde_json::Value = send().await.unwrap().json().await.unwrap();
    let r = send().await.unwrap();
    assert_eq!(r.status(), 202);
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(a["id"], b["id"], "a duplicate answers with the first id");
    assert_eq!(b["status"], "duplicate");
    assert_eq!(gw.inbound().await.len(), 1);
    assert_eq!(gw.listing(contact).await.len(), 1);
    let text = gw.metrics().await;
    assert_eq!(
        metric(
            &text,
            "gateway_duplicates_dropped_total{transport=\"webchat\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn chat_page_is_served_and_unknown_routes_are_json_404() {
    let embedder = "https://shop.example https://*.shop.example";
    let gw = Gw::start(&[("WEBCHAT_FRAME_ANCESTORS", embedder)]).await;
    let r = gw
        .http
        .get(format!("{}/chat", gw.public))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert!(header(&r, "content-type").starts_with("text/html"));
    // A policy without inline script or style, framed only where the owner allows.
    let csp = header(&r, "content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self';",
        "style-src 'self';",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        &format!("frame-ancestors {embedder}"),
    ] {
        assert!(csp.contains(directive), "{directive} missing: {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    assert_eq!(header(&r, "referrer-policy"), "no-referrer");
    let html = r.text().await.unwrap();
    // The mode is on the body tag (demo mode here: Gw's default); nothing is inline.
    assert!(html.contains("<body data-mode=\"demo\">"), "{html}");
    assert!(!html.contains("<style") && !html.contains("style="));
    // The page's script and style are served files, cached by their content's version.
    for (tag, kind, inside) in [
        ("<script src=\"", "text/javascript", "MediaRecorder"),
        ("<link rel=\"stylesheet\" href=\"", "text/css", "#typing"),
    ] {
        let url = html
            .split_once(tag)
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(url, _)| url)
            .unwrap_or_else(|| panic!("no {tag} in the page"));
        assert!(
            url.starts_with("/chat/page.") && url.contains("?v="),
            "{url}"
        );
        let r = gw
            .http
            .get(format!("{}{url}", gw.public))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{url}");
        assert!(header(&r, "content-type").starts_with(kind), "{url}");
        assert_eq!(header(&r, "x-content-type-options"), "nosniff");
        assert!(header(&r, "cache-control").contains("max-age"), "{url}");
        assert!(r.text().await.unwrap().contains(inside), "{url}");
    }
    let r = gw
        .http
        .get(format!("{}/nope", gw.public))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<serde_json::Value>().await.unwrap()["error"].is_string());
    // The QR page is internal only, and answers 404 JSON while nothing waits for a scan.
    let r = gw
        .http
        .get(format!("{}/qr", gw.public))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = gw
        .http
        .get(format!("{}/qr", gw.proc.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let ready = shared::testing::get_json(&format!("{}/readyz", gw.proc.http)).await;
    assert_eq!(
        ready["checks"]["transport:webchat"]["state"], "connected",
        "{ready}"
    );
}

#[tokio::test]
async fn a_widget_on_an_allowed_origin_may_call_the_api_and_others_may_not() {
    let gw = Gw::start(&[("WEBCHAT_ALLOWED_ORIGINS", "https://shop.example")]).await;
    let preflight = |origin: &'static str| {
        gw.http
            .request(reqwest::Method::OPTIONS, gw.api("15550008888", "messages"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let ok = preflight("https://shop.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let r = gw
        .http
        .post(gw.api("15550008888", "messages"))
        .header("origin", "https://shop.example")
        .json(&serde_json::json!({"text": "from the widget"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    drop(gw);
    // Without the setting: same origin only.
    let gw = Gw::start(&[]).await;
    let r = gw
        .http
        .get(gw.api("15550008888", "messages"))
        .header("origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_reply_to_a_burst_lists_the_earlier_messages_it_answers() {
    let gw = Gw::start(&[]).await;
    let contact = "15551280001";
    let mut ids = Vec::new();
    for t in ["hi", "I ordered shoes", "they haven't come"] {
        let (status, body) = gw.send_text(contact, t).await;
        assert_eq!(status, 202);
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    gw.publish_outbound(shared::proto::Outbound {
        message_id: "burst-reply".into(),
        transport: shared::proto::Transport::Webchat as i32,
        chat_id: contact.into(),
        kind: shared::proto::outbound::Kind::Reply as i32,
        text: "Sorry about that! Let me check.".into(),
        in_reply_to: ids[2].clone(),
        identities: Vec::new(),
        also_answers: ids[..2].to_vec(),
    })
    .await;
    let listing = gw
        .wait_listing(contact, std::time::Duration::from_secs(10), |l| {
            l.len() == 4
        })
        .await;
    let reply = listing.last().unwrap();
    assert_eq!(reply["in_reply_to"], ids[2].as_str());
    assert_eq!(reply["answers"], serde_json::json!([ids[0], ids[1]]));
    assert!(
        listing[0].get("answers").is_none(),
        "absent when empty: {}",
        listing[0]
    );
}
