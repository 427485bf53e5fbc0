//! The public listener's edge, against the binary: slow clients and per-address connection
//! caps, whose client address a limit keys on, the request throttle, and demo mode's
//! local-only rule.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{BIN, Gw, SseReader};

const T: Duration = Duration::from_secs(10);
const CONTACT: &str = "15550001111";

/// A connection to `gw`'s public listener from the local address `from` (127.0.0.0/8 is all
/// this machine's, so each address is another client).
async fn connect_from(gw: &Gw, from: &str) -> TcpStream {
    let to: SocketAddr = gw.public.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Everything the server sends until it closes the connection (or `within` passes: `None`).
async fn read_all(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut out = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut out)).await {
        Ok(Ok(_)) => Some(String::from_utf8_lossy(&out).into_owned()),
        // Reset by the server: closed too.
        Ok(Err(_)) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

/// `GET /chat` over a fresh connection from `from`: the response, raw.
async fn get_page_from(gw: &Gw, from: &str) -> Option<String> {
    let mut s = connect_from(gw, from).await;
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    read_all(&mut s, T).await
}

/// A message post whose body never completes: headers and a first part of a 100-byte body.
async fn stalled_post(gw: &Gw, from: &str) -> TcpStream {
    let mut s = connect_from(gw, from).await;
    s.write_all(
        format!(
            "POST /chat/api/{CONTACT}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"text\": \"hel"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s
}

#[tokio::test]
async fn a_slowloris_from_one_address_neither_holds_the_listener_nor_delays_another() {
    let gw = Gw::start(&[
        ("PUBLIC_MAX_CONNECTIONS", "8"),
        ("PUBLIC_MAX_CONNECTIONS_PER_ADDRESS", "3"),
        ("PUBLIC_HEADER_TIMEOUT_SECS", "30"),
        ("PUBLIC_BODY_TIMEOUT_SECS", "2"),
    ])
    .await;
    // An event stream, open from before the attack to after the body timeout.
    let sse = gw.http.get(gw.api(CONTACT, "events")).send().await.unwrap();
    assert_eq!(sse.status(), 200);
    let mut events = SseReader::new(sse);

    // The attacker (127.0.0.2) holds its 3 places with bodies that never complete...
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(stalled_post(&gw, "127.0.0.2").await);
    }
    let stalled_at = Instant::now();
    // ...and every connection past them is closed at once, not queued.
    for i in 0..7 {
        let mut extra = connect_from(&gw, "127.0.0.2").await;
        let closed = read_all(&mut extra, Duration::from_secs(1)).await;
        assert_eq!(
            closed.as_deref(),
            Some(""),
            "connection {} past the cap was not closed at once",
            i + 4
        );
    }
    // Another address is served at once meanwhile.
    let started = Instant::now();
    let page = get_page_from(&gw, "127.0.0.1").await.expect("served");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // The stalled bodies are cut after PUBLIC_BODY_TIMEOUT_SECS: 408, connection closed.
    for mut s in held {
        let answer = read_all(&mut s, T).await.expect("cut off");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("PUBLIC_BODY_TIMEOUT_SECS"), "{answer}");
    }
    let waited = stalled_at.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    // Its places are free again: the attacker's address is served like anyone.
    let page = get_page_from(&gw, "127.0.0.2").await.expect("served");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");

    // The event stream outlived the body timeout: a reply still arrives on it.
    gw.publish_outbound(shared::proto::Outbound {
        message_id: "R-edge".into(),
        transport: shared::proto::Transport::Webchat as i32,
        chat_id: CONTACT.into(),
        kind: shared::proto::outbound::Kind::Reply as i32,
        text: "Still here.".into(),
        in_reply_to: String::new(),
        identities: Vec::new(),
        also_answers: Vec::new(),
    })
    .await;
    let (_, m) = events.next_message(T).await.expect("the stream is open");
    assert_eq!(m["id"], "R-edge");
    let metrics = gw.metrics().await;
    for (reason, n) in [("address_connections", 7.0), ("body_timeout", 3.0)] {
        assert_eq!(
            crate::helpers::metric(
                &metrics,
                &format!("http_public_refused_total{{reason=\"{reason}\"}}")
            ),
            n,
            "{reason}"
        );
    }
}

#[tokio::test]
async fn bodyless_visitor_posts_from_three_addresses_free_a_three_slot_listener_after_the_timeout()
{
    // The finding: three `POST /chat/api/visitors` that never send their body held a 3-slot
    // listener 20 s past the header timeout. From three addresses, so only the body timeout
    // can free them.
    let gw = Gw::start(&[
        ("WEBCHAT_DEMO", "false"),
        ("PUBLIC_MAX_CONNECTIONS", "3"),
        ("PUBLIC_HEADER_TIMEOUT_SECS", "30"),
        ("PUBLIC_BODY_TIMEOUT_SECS", "1"),
    ])
    .await;
    let mut held = Vec::new();
    for from in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        let mut s = connect_from(&gw, from).await;
        s.write_all(
            b"POST /chat/api/visitors HTTP/1.1\r\nHost: 127.0.0.1\r\n\
              Content-Type: application/json\r\nContent-Length: 2\r\n\r\n",
        )
        .await
        .unwrap();
        held.push(s);
    }
    let started = Instant::now();
    let page = get_page_from(&gw, "127.0.0.1").await.expect("served");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    for mut s in held {
        let answer = read_all(&mut s, T).await.expect("cut off");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
}

/// A multipart upload of `size` bytes of garbage audio (refused with 422 once read whole),
/// written in `chunks` parts `every` apart; the raw response.
async fn paced_upload(gw: &Gw, size: usize, chunks: usize, every: Duration) -> String {
    let boundary = "edge-boundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"v.ogg\"\r\n\
         Content-Type: audio/ogg\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let mut body = head.into_bytes();
    body.extend(std::iter::repeat_n(0x55u8, size));
    body.extend(tail.into_bytes());
    let mut s = connect_from(gw, "127.0.0.1").await;
    let request = format!(
        "POST /chat/api/{CONTACT}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    for (i, part) in body.chunks(body.len().div_ceil(chunks)).enumerate() {
        if i > 0 {
            // The point of the test: a slow client, one part every `every`.
            tokio::time::sleep(every).await;
        }
        if s.write_all(part).await.is_err() {
            break; // answered (and closed) already
        }
    }
    read_all(&mut s, T).await.expect("answered")
}

#[tokio::test]
async fn a_slow_but_steady_upload_completes_and_a_trickle_is_cut() {
    let gw = Gw::start(&[("PUBLIC_BODY_TIMEOUT_SECS", "1")]).await;
    // 96 KB over 2 s (48 KB/s, a phone's 3G): twice the timeout, but every 32 KB earns a
    // second, so the body is read whole and judged (garbage audio: 422).
    let started = Instant::now();
    let steady = paced_upload(&gw, 96 * 1024, 9, Duration::from_millis(250)).await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(steady.starts_with("HTTP/1.1 422"), "{steady}");
    // 2 KB in 10 parts 300 ms apart: a trickle earns nothing and is cut near the timeout.
    let started = Instant::now();
    let trickle = paced_upload(&gw, 2048, 10, Duration::from_millis(300)).await;
    assert!(trickle.starts_with("HTTP/1.1 408"), "{trickle}");
    assert!(started.elapsed() < Duration::from_millis(2500));
}

#[tokio::test]
async fn a_body_sent_fast_then_trickled_or_stalled_banks_no_time() {
    let gw = Gw::start(&[("PUBLIC_BODY_TIMEOUT_SECS", "1")]).await;
    // 96 KB at once (it would have earned 3 s), then a byte or so every 300 ms, 2 s in all:
    // cut at the timeout after its pace dropped, not 3 s later.
    let started = Instant::now();
    let mut parts = vec![96 * 1024];
    parts.extend([1; 7]);
    let trickled = uneven_upload(&gw, &parts, Duration::from_millis(300)).await;
    assert!(trickled.starts_with("HTTP/1.1 408"), "{trickled}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    // 96 KB at once, then nothing: cut after the timeout without a byte.
    let started = Instant::now();
    let stalled = uneven_upload(&gw, &[96 * 1024, 1], Duration::from_secs(5)).await;
    assert!(stalled.starts_with("HTTP/1.1 408"), "{stalled}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
}

/// An upload declared 192 KB long of which parts of `sizes` bytes are written `every` apart
/// (the rest never comes); the raw response.
async fn uneven_upload(gw: &Gw, sizes: &[usize], every: Duration) -> String {
    let mut s = connect_from(gw, "127.0.0.1").await;
    let request = format!(
        "POST /chat/api/{CONTACT}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: multipart/form-data; boundary=edge-boundary\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n--edge-boundary\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"v.ogg\"\r\n\
         Content-Type: audio/ogg\r\n\r\n",
        192 * 1024
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let (mut read, mut write) = s.split();
    let writing = async {
        for (i, size) in sizes.iter().enumerate() {
            if i > 0 {
                // The point of the test: a slow client, one part every `every`.
                tokio::time::sleep(every).await;
            }
            if write.write_all(&vec![0x55u8; *size]).await.is_err() {
                break; // answered (and closed) already
            }
        }
        std::future::pending::<()>().await;
    };
    // Read while writing: the answer comes when the server cuts the body.
    let mut out = Vec::new();
    tokio::select! {
        () = writing => unreachable!(),
        r = tokio::time::timeout(T, read.read_to_end(&mut out)) => {
            assert!(r.is_ok(), "not answered");
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn one_address_holds_only_its_share_of_event_streams_and_each_ends_in_time() {
    let gw = Gw::start(&[
        ("WEBCHAT_MAX_STREAMS_PER_ADDRESS", "2"),
        ("WEBCHAT_STREAM_MAX_SECS", "2"),
    ])
    .await;
    let open = |from: &'static str, contact: &'static str| {
        let url = gw.api(contact, "events");
        async move { client_from(from).get(url).send().await.unwrap() }
    };
    // Streams of different conversations from one address: two, then 429 naming the cap.
    let first = open("127.0.0.1", "15551110020").await;
    assert_eq!(first.status(), 200);
    let opened = Instant::now();
    let second = open("127.0.0.1", "15551110021").await;
    assert_eq!(second.status(), 200);
    let refused = open("127.0.0.1", "15551110022").await;
    assert_eq!(refused.status(), 429);
    let why = error_of(refused).await;
    assert!(why.contains("WEBCHAT_MAX_STREAMS_PER_ADDRESS"), "{why}");
    // Another address has its own share.
    let other = open("127.0.0.2", "15551110022").await;
    assert_eq!(other.status(), 200);
    // Each stream ends after its life, and its place comes back.
    let mut first = SseReader::new(first);
    let mut ended = false;
    while opened.elapsed() < T {
        if first.next(T - opened.elapsed()).await.is_none() {
            ended = true;
            break;
        }
    }
    let lived = opened.elapsed();
    assert!(ended, "the stream never ended");
    assert!(
        lived >= Duration::from_millis(1500) && lived < Duration::from_secs(5),
        "{lived:?}"
    );
    drop(second);
    shared::testing::eventually("the places to come back", T, async || {
        (open("127.0.0.1", "15551110022").await.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn only_signed_cloud_webhook_posts_pass_the_throttle() {
    use crate::cloud::{notification, sign, start_on};
    let graph = crate::fake_graph::FakeGraph::start();
    let gw = start_on(
        &shared::testing::redis_url(),
        &graph,
        &[("HTTP_RATE_LIMIT_PER_ADDRESS", "2".into())],
    )
    .await;
    let url = format!("{}/webhooks/whatsapp", gw.public);
    let status = |r: reqwest::RequestBuilder| async move { r.send().await.unwrap().status() };
    // The handshake, from one address: throttled like any request.
    let handshake = || client_from("127.0.0.2").get(format!("{url}?hub.mode=subscribe"));
    for _ in 0..2 {
        assert_eq!(status(handshake()).await, 400);
    }
    assert_eq!(status(handshake()).await, 429);
    // Unsigned posts, from another: the same.
    let unsigned = || client_from("127.0.0.3").post(&url).body("{}");
    for _ in 0..2 {
        assert_ne!(status(unsigned()).await, 429);
    }
    assert_eq!(status(unsigned()).await, 429);
    // Signed deliveries, from a third: never throttled (Meta posts from a few addresses).
    let body = serde_json::to_vec(&notification(serde_json::json!({"statuses": []}))).unwrap();
    for _ in 0..5 {
        let signed = client_from("127.0.0.4")
            .post(&url)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sign(&body))
            .body(body.clone());
        assert_eq!(status(signed).await, 200);
    }
}

/// The `{"error"}` reason of a refused request.
async fn error_of(r: reqwest::Response) -> String {
    let body: serde_json::Value = r.json().await.expect("a JSON body");
    body["error"].as_str().expect("an error reason").to_owned()
}

/// A client making its requests from the local address `from`.
fn client_from(from: &str) -> reqwest::Client {
    shared::http_client::builder()
        .local_address(Some(from.parse().unwrap()))
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_proxy_header_counts_only_from_a_trusted_proxy() {
    let gw = Gw::start(&[
        ("WEBCHAT_DEMO", "false"),
        ("WEBCHAT_VISITORS_PER_HOUR", "2"),
        ("TRUSTED_PROXY_HEADER", "X-Forwarded-For"),
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
    ])
    .await;
    let create = |from: &'static str, forwarded: &'static str| {
        let url = format!("{}/chat/api/visitors", gw.public);
        async move {
            client_from(from)
                .post(url)
                .header("x-forwarded-for", forwarded)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // From an untrusted peer, a header naming a new address each time changes nothing: its
    // own address has 2 new visitors an hour.
    assert_eq!(create("127.0.0.2", "203.0.113.1").await, 201);
    assert_eq!(create("127.0.0.2", "203.0.113.2").await, 201);
    assert_eq!(create("127.0.0.2", "203.0.113.3").await, 429);
    // From the trusted proxy the header names the client: a fresh allowance each.
    for client in ["203.0.113.1", "203.0.113.2"] {
        for _ in 0..2 {
            assert_eq!(create("127.0.0.1", client).await, 201, "{client}");
        }
    }
    assert_eq!(create("127.0.0.1", "203.0.113.1").await, 429);
    // IPv6 clients share their /64's allowance.
    assert_eq!(create("127.0.0.1", "2001:db8:1:2::1").await, 201);
    assert_eq!(create("127.0.0.1", "2001:db8:1:2::beef").await, 201);
    assert_eq!(create("127.0.0.1", "2001:db8:1:2:ffff::1").await, 429);
    assert_eq!(create("127.0.0.1", "2001:db8:1:3::1").await, 201);
    // A proxy that appends its own line (HAProxy's `option forwardfor`) after the client's:
    // the last line names the client, whatever the client wrote in its own.
    let two_lines = |chosen: String| {
        let url = format!("{}/chat/api/visitors", gw.public);
        async move {
            client_from("127.0.0.1")
                .post(url)
                .header("x-forwarded-for", chosen)
                .header("x-forwarded-for", "203.0.113.9")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(two_lines("198.51.100.1".into()).await, 201);
    assert_eq!(two_lines("198.51.100.2, 198.51.100.3".into()).await, 201);
    assert_eq!(two_lines("198.51.100.4".into()).await, 429);
}

#[tokio::test]
async fn requests_over_the_per_address_rate_get_429_with_retry_after() {
    let gw = Gw::start(&[("HTTP_RATE_LIMIT_PER_ADDRESS", "5")]).await;
    let page = |from: &'static str| {
        let url = format!("{}/chat", gw.public);
        async move { client_from(from).get(url).send().await.unwrap() }
    };
    for _ in 0..5 {
        assert_eq!(page("127.0.0.1").await.status(), 200);
    }
    let refused = page("127.0.0.1").await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=12).contains(&retry), "{retry}");
    let why = error_of(refused).await;
    assert!(why.contains("HTTP_RATE_LIMIT_PER_ADDRESS"), "{why}");
    // Before anything is stored: a refused message leaves no trace.
    let r = client_from("127.0.0.1")
        .post(gw.api(CONTACT, "messages"))
        .json(&serde_json::json!({"text": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(gw.inbound().await.is_empty());
    // Another address has its own allowance.
    assert_eq!(page("127.0.0.2").await.status(), 200);
    let metrics = gw.metrics().await;
    assert_eq!(
        crate::helpers::metric(&metrics, "http_public_refused_total{reason=\"throttled\"}"),
        2.0
    );
}

#[tokio::test]
async fn demo_mode_refuses_every_request_through_a_proxy_or_for_another_host() {
    let gw = Gw::start(&[]).await;
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut r = gw.http.get(format!("{}{path}", gw.public));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.ok())
        }
    };
    for header in [
        "Forwarded",
        "X-Forwarded-For",
        "X-Forwarded-Host",
        "X-Forwarded-Proto",
        "X-Real-IP",
        "Via",
        "CF-Connecting-IP",
        "True-Client-IP",
        "X-Client-IP",
        "X-Original-Forwarded-For",
        "X-Cluster-Client-IP",
    ] {
        let value = if header == "Forwarded" {
            "for=203.0.113.5"
        } else {
            "203.0.113.5"
        };
        for path in [
            "/chat",
            format!("/chat/api/{CONTACT}/messages").as_str(),
            "/nowhere",
        ] {
            let (status, body) = get(path, &[(header, value)]).await;
            assert_eq!(status, 403, "{header} {path}");
            let why = body.expect("JSON")["error"].as_str().unwrap().to_owned();
            assert!(why.contains("WEBCHAT_DEMO"), "{why}");
        }
    }
    let port = gw.public.rsplit(':').next().unwrap().to_owned();
    for host in [
        "bot.example.com".to_owned(),
        format!("bot.example.com:{port}"),
        "10.0.0.1".to_owned(),
        "[::2]:8080".to_owned(),
        "localhost.example.com".to_owned(),
    ] {
        assert_eq!(get("/chat", &[("Host", &host)]).await.0, 403, "{host}");
    }
    for host in [
        "localhost".to_owned(),
        format!("localhost:{port}"),
        "127.0.0.1".to_owned(),
        "127.0.0.2:8080".to_owned(),
        "[::1]".to_owned(),
        format!("[::1]:{port}"),
    ] {
        assert_eq!(get("/chat", &[("Host", &host)]).await.0, 200, "{host}");
    }
    // A post through a proxy is refused before anything is stored; a plain local one works.
    let proxied = gw
        .http
        .post(gw.api(CONTACT, "messages"))
        .header("X-Forwarded-For", "203.0.113.5")
        .json(&serde_json::json!({"text": "!console"}))
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 403);
    assert!(gw.inbound().await.is_empty());
    let (status, body) = gw.send_text(CONTACT, "!console").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(gw.inbound().await.len(), 1);
}

/// A gateway in demo mode on loopback, but for what `extra` says: whether it runs (its
/// `/healthz` answers) and its log; one that exits is refused.
async fn try_gateway(extra: &[(&str, String)]) -> (bool, String) {
    let mut senv = shared::testing::ServiceEnv::new(
        shared::config::ServiceName::Gateway,
        &shared::testing::redis_url(),
        None,
    );
    let port = shared::testing::free_port();
    senv.env
        .insert("PUBLIC_ADDR".into(), format!("127.0.0.1:{port}"));
    senv.env.insert("WEBCHAT_DEMO".into(), "true".into());
    for (k, v) in extra {
        senv.env
            .insert((*k).into(), v.replace("{port}", &port.to_string()));
    }
    let mut p = senv.spawn(BIN);
    let deadline = Instant::now() + T;
    loop {
        if p.exited(Duration::from_millis(100)).await.is_some() {
            return (false, p.log_text());
        }
        if p.wait_status("/healthz", 200, Duration::from_millis(100))
            .await
        {
            return (true, p.log_text());
        }
        assert!(
            Instant::now() < deadline,
            "neither ran nor exited:\n{}",
            p.log_text()
        );
    }
}

#[tokio::test]
async fn demo_mode_will_not_start_behind_a_proxy_or_for_another_address() {
    let proxy = ("TRUSTED_PROXY_HEADER", "X-Forwarded-For".to_owned());
    let (runs, log) = try_gateway(std::slice::from_ref(&proxy)).await;
    assert!(!runs && log.contains("TRUSTED_PROXY_HEADER"), "{log}");
    let url = ("PUBLIC_URL", "https://bot.example.com".to_owned());
    let (runs, log) = try_gateway(std::slice::from_ref(&url)).await;
    assert!(!runs && log.contains("PUBLIC_URL"), "{log}");
    // Both at once: both named.
    let (runs, log) = try_gateway(&[proxy, ("PUBLIC_URL", "http://192.0.2.10:8080".into())]).await;
    assert!(
        !runs && log.contains("TRUSTED_PROXY_HEADER") && log.contains("PUBLIC_URL"),
        "{log}"
    );
    // A PUBLIC_URL on this machine is fine.
    let (runs, log) = try_gateway(&[("PUBLIC_URL", "http://localhost:{port}".into())]).await;
    assert!(runs, "{log}");
}

#[tokio::test]
async fn off_loopback_without_a_proxy_header_the_gateway_warns() {
    let exposed = [
        ("WEBCHAT_DEMO", "false".to_owned()),
        ("PUBLIC_ADDR", "0.0.0.0:{port}".to_owned()),
    ];
    let (runs, log) = try_gateway(&exposed).await;
    assert!(
        runs && log.contains("TRUSTED_PROXY_HEADER is unset"),
        "{log}"
    );
    let mut behind = exposed.to_vec();
    behind.push(("TRUSTED_PROXY_HEADER", "X-Forwarded-For".to_owned()));
    let (runs, log) = try_gateway(&behind).await;
    assert!(
        runs && !log.contains("TRUSTED_PROXY_HEADER is unset"),
        "{log}"
    );
    // On loopback (scripts/run), no warning.
    let (runs, log) = try_gateway(&exposed[..1]).await;
    assert!(
        runs && !log.contains("TRUSTED_PROXY_HEADER is unset"),
        "{log}"
    );
}
