//! Edge rate limits, shared by every gateway replica through Redis.

use std::time::Duration;

use crate::helpers::{Gw, metric};

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn eleventh_message_in_a_minute_is_limited_with_one_notice() {
    let gw = Gw::start(&[]).await;
    let contact = "15551110000";
    let mut statuses = Vec::new();
    let mut ids = Vec::new();
    for i in 0..12 {
        let (status, body) = gw.send_text(contact, &format!("message {i}")).await;
        assert_eq!(status, 202, "a limited message is still accepted: {body}");
        statuses.push(body["status"].as_str().unwrap().to_owned());
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(&statuses[..10], vec!["accepted"; 10].as_slice());
    assert_eq!(&statuses[10..], ["rate_limited", "rate_limited"]);
    assert_eq!(
        gw.inbound().await.len(),
        10,
        "limited messages never reach the brain"
    );

    // Exactly one notice, answering the first limited message. A notice is published before
    // its POST is answered: with both answered, the outbound stream holds all there will be.
    let published = crate::helpers::read_stream(&gw.bus, shared::bus::Stream::Outbound).await;
    assert_eq!(published.len(), 1, "{published:?}");
    let list = gw
        .wait_listing(contact, T, |l| l.iter().any(|m| m["direction"] == "out"))
        .await;
    let notices: Vec<_> = list.iter().filter(|m| m["direction"] == "out").collect();
    assert_eq!(notices.len(), 1, "{list:?}");
    assert_eq!(notices[0]["kind"], "notice");
    assert_eq!(notices[0]["in_reply_to"], ids[10].as_str());
    assert!(
        notices[0]["text"]
            .as_str()
            .unwrap()
            .contains("wait a minute")
    );
    // The ten taken are in the channel's history, the notice after them; the two refused are
    // not kept (a flood within the limits must not fill Redis).
    let ins: Vec<_> = list.iter().filter(|m| m["direction"] == "in").collect();
    let in_ids: Vec<&str> = ins.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(in_ids, ids[..10]);
    assert_eq!(list.last().unwrap()["id"], notices[0]["id"]);

    // Another sender is not affected.
    let (_, body) = gw.send_text("15551110001", "hello").await;
    assert_eq!(body["status"], "accepted");
    let text = gw.metrics().await;
    assert_eq!(
        metric(&text, "gateway_rate_limited_total{scope=\"contact\"}"),
        2.0
    );
}

#[tokio::test]
async fn the_notice_is_in_the_language_the_sender_writes() {
    let gw = Gw::start(&[("RATE_LIMIT_NOTICE_PT", "Calma! Espere um minuto.")]).await;
    for (contact, text) in [
        ("15551110010", "¿tienen estas botas en la talla 40?"),
        ("15551110011", "vocês têm essas botas no tamanho 40?"),
    ] {
        for _ in 0..11 {
            gw.send_text(contact, text).await;
        }
    }
    let gw = &gw;
    let notice = |contact: &'static str| async move {
        let list = gw
            .wait_listing(contact, T, |l| l.iter().any(|m| m["direction"] == "out"))
            .await;
        list.iter()
            .find(|m| m["direction"] == "out")
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert!(
        notice("15551110010").await.contains("Espera un minuto"),
        "the built-in Spanish notice"
    );
    assert_eq!(
        notice("15551110011").await,
        "Calma! Espere um minuto.",
        "the operator's Portuguese one"
    );
}

#[tokio::test]
async fn a_refused_message_is_not_kept_and_an_oversized_caption_is_refused() {
    let gw = Gw::start(&[("RATE_LIMIT_PER_CONTACT", "1")]).await;
    let contact = "15551110002";
    let (_, first) = gw.send_text(contact, "hello").await;
    assert_eq!(first["status"], "accepted");
    let long = "x".repeat(4000);
    let (_, second) = gw.send_text(contact, &long).await;
    assert_eq!(second["status"], "rate_limited");
    // Its notice arrives; the refused message itself is nowhere in the history.
    let list = gw
        .wait_listing(contact, T, |l| l.iter().any(|m| m["kind"] == "notice"))
        .await;
    let ins: Vec<_> = list.iter().filter(|m| m["direction"] == "in").collect();
    assert_eq!(ins.len(), 1, "{list:?}");
    assert_eq!(ins[0]["id"], first["id"]);
    assert!(
        list.iter()
            .all(|m| !m["text"].as_str().unwrap().contains("xxx")),
        "{list:?}"
    );
    // A caption over 4 KB: 413 with the reason, nothing published.
    let form = crate::helpers::file_form(crate::helpers::PNG.to_vec(), "image/png")
        .text("caption", "y".repeat(5000));
    let r = gw
        .http
        .post(gw.api("15551110003", "messages"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("caption"),
        "{body}"
    );
    assert_eq!(gw.inbound().await.len(), 1);
}

#[tokio::test]
async fn a_text_over_max_input_chars_is_refused_with_413_before_anything_is_stored() {
    let gw = Gw::start(&[("MAX_INPUT_CHARS", "50")]).await;
    let contact = "15551110004";
    // Characters, not bytes: 50 two-byte characters fit.
    let (status, at_limit) = gw.send_text(contact, &"é".repeat(50)).await;
    assert_eq!(
        (status, at_limit["status"].as_str()),
        (202, Some("accepted"))
    );
    let (status, over) = gw.send_text(contact, &"é".repeat(51)).await;
    assert_eq!(status, 413, "{over}");
    assert!(
        over["error"].as_str().unwrap().contains("50 characters"),
        "{over}"
    );
    // A caption is held to the same limit.
    let form = crate::helpers::file_form(crate::helpers::PNG.to_vec(), "image/png")
        .text("caption", "y".repeat(51));
    let r = gw
        .http
        .post(gw.api(contact, "messages"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Nothing of the refused posts was stored or published.
    let list = gw.listing(contact).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], at_limit["id"]);
    assert_eq!(gw.inbound().await.len(), 1);
}

#[tokio::test]
async fn a_limited_sender_may_write_again_once_the_window_allows() {
    // 60 per minute = one per second after the burst.
    let gw = Gw::start(&[("RATE_LIMIT_PER_CONTACT", "60")]).await;
    let contact = "15551112222";
    for i in 0..60 {
        assert_eq!(
            gw.send_text(contact, &format!("m{i}")).await.1["status"],
            "accepted"
        );
    }
    assert_eq!(
        gw.send_text(contact, "over").await.1["status"],
        "rate_limited"
    );
    // The point: the window lets one more through a second later (the limit's own clock).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(gw.send_text(contact, "again").await.1["status"], "accepted");
}

#[tokio::test]
async fn the_global_limit_is_shared_by_two_gateway_processes() {
    let prefix = shared::testing::unique_prefix();
    let redis = shared::testing::redis_url();
    let extra = [
        ("RATE_LIMIT_GLOBAL", "6"),
        ("RATE_LIMIT_PER_CONTACT", "100"),
    ];
    let a = Gw::start_on(&redis, Some(&prefix), &extra).await;
    let b = Gw::start_on(&redis, Some(&prefix), &extra).await;
    let mut limited = Vec::new();
    for i in 0..10 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let contact = format!("1555222{i:04}");
        let (status, body) = gw.send_text(&contact, "hi").await;
        assert_eq!(status, 202);
        if body["status"] == "rate_limited" {
            limited.push(contact);
        }
    }
    assert_eq!(
        a.inbound().await.len(),
        6,
        "six accepted across both gateways"
    );
    assert_eq!(limited.len(), 4);
    // Each limited sender is told the bot is busy (once).
    for contact in &limited {
        let list = a
            .wait_listing(contact, T, |l| l.iter().any(|m| m["kind"] == "notice"))
            .await;
        let notice = list
            .iter()
            .find(|m| m["kind"] == "notice")
            .expect("busy notice");
        assert!(
            notice["text"]
                .as_str()
                .unwrap()
                .contains("a lot of messages")
        );
    }
    let total = metric(
        &a.metrics().await,
        "gateway_rate_limited_total{scope=\"global\"}",
    ) + metric(
        &b.metrics().await,
        "gateway_rate_limited_total{scope=\"global\"}",
    );
    assert_eq!(total, 4.0);
    b.proc.terminate_async(Duration::from_secs(20)).await;
}

#[tokio::test]
async fn event_streams_and_uploads_are_capped_and_a_closed_stream_frees_its_place() {
    let gw = Gw::start(&[
        ("WEBCHAT_MAX_STREAMS_PER_CONTACT", "2"),
        ("WEBCHAT_MAX_STREAMS", "3"),
        ("WEBCHAT_MAX_UPLOADS", "1"),
    ])
    .await;
    let open = |contact: &'static str| {
        let http = gw.http.clone();
        let url = gw.api(contact, "events");
        async move { http.get(url).send().await.unwrap() }
    };
    // A response that is not the expected status fails with its body (for the log).
    let expect = |r: reqwest::Response, status: u16, what: &'static str| async move {
        if r.status() == status {
            return r;
        }
        let got = r.status();
        panic!("{what}: expected {status}, got {got}: {:?}", r.text().await);
    };
    let a1 = expect(open("15551110010").await, 200, "first stream").await;
    let _a2 = expect(open("15551110010").await, 200, "second stream").await;
    expect(
        open("15551110010").await,
        429,
        "a third stream of one conversation",
    )
    .await;
    let _b1 = expect(open("15551110011").await, 200, "another conversation's").await;
    let b2 = expect(open("15551110011").await, 503, "over the total").await;
    let body: serde_json::Value = b2.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("WEBCHAT_MAX_STREAMS")
    );
    // A client that goes away gives its place back.
    drop(a1);
    shared::testing::eventually("the place to come back", T, async || {
        (open("15551110011").await.status() == 200).then_some(())
    })
    .await;

    // An upload that never finishes holds the only upload place; the next is told to retry.
    // The slow upload and the first quick one race for the place: when the quick one wins
    // (the slow one is refused), the slow one starts again.
    let boundary = "sbtestboundary";
    let start_slow = || {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        // A connection of its own: a pooled one the server has just closed would fail the
        // streamed body before it reached the handler.
        let http = shared::http_client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let url = gw.api("15551110012", "messages");
        let slow = tokio::spawn(async move {
            http.post(url)
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(reqwest::Body::wrap_stream(body))
                .send()
                .await
        });
        (tx, slow)
    };
    let upload = || {
        let form = crate::helpers::file_form(crate::helpers::PNG.to_vec(), "image/png");
        gw.http
            .post(gw.api("15551110013", "messages"))
            .multipart(form)
            .send()
    };
    let deadline = std::time::Instant::now() + T;
    let (tx, slow) = 'held: loop {
        let (tx, slow) = start_slow();
        tx.send(Ok(bytes::Bytes::from(format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n"
        ))))
        .await
        .unwrap();
        loop {
            let r = upload().await.unwrap();
            if r.status() == 503 {
                let body: serde_json::Value = r.json().await.unwrap();
                assert!(
                    body["error"]
                        .as_str()
                        .unwrap()
                        .contains("WEBCHAT_MAX_UPLOADS")
                );
                break 'held (tx, slow);
            }
            if slow.is_finished() {
                let ended = slow.await.unwrap().unwrap();
                assert_eq!(ended.status(), 503, "the unfinished upload ended");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{}", r.status());
            // Each try is an upload that may take the place itself: paced, not hurried.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slow upload never held the place"
        );
    };
    // The slow client gives up: its place is free again.
    drop(tx);
    let _ = slow.await;
    assert_eq!(upload().await.unwrap().status(), 202);
}

#[tokio::test]
async fn a_slow_client_is_cut_off_and_connections_are_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gw::start(&[
        ("PUBLIC_HEADER_TIMEOUT_SECS", "1"),
        ("PUBLIC_MAX_CONNECTIONS", "2"),
    ])
    .await;
    let addr = gw.public.trim_start_matches("http://").to_owned();
    // Headers that never end: the connection is closed after the timeout.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /chat HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf)).await;
    assert!(read.is_ok(), "the slow client was not cut off");
    assert!(started.elapsed() >= Duration::from_millis(800));
    drop(slow);
    // Two connections that say nothing hold both places: a third client waits...
    let idle1 = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let idle2 = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Connected is not yet accepted, and nothing tells when the listener has taken them:
    // a moment for it to count both before the third comes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let http = shared::http_client::client();
    let third = tokio::spawn({
        let url = format!("{}/chat", gw.public);
        async move { http.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    // The point: the third is not served for a while (waiting shows nothing happening).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "served beyond the cap");
    // ...until one of them goes.
    drop(idle1);
    let status = tokio::time::timeout(T, third)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    drop(idle2);
}
