//! The `cloud` transport against a local Graph API (Meta's request and response shapes) and
//! real Redis: the webhook handshake and signatures, messages and statuses in, replies, read
//! marks and typing out, throttling, the 24-hour window, Redis down.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use shared::bus::Stream;
use shared::proto::{Outbound, Transport, identity, inbound, outbound};

use crate::fake_graph::{FakeGraph, PHONE_NUMBER_ID, TOKEN, graph_error};
use crate::helpers::{Gw, PNG};

const SECRET: &str = "app-secret-0123456789";
const VERIFY: &str = "verify-me-please";
pub(crate) const CUSTOMER: &str = "16505551234";
const T: Duration = Duration::from_secs(15);

fn cloud_env(graph: &FakeGraph) -> Vec<(&'static str, String)> {
    vec![
        ("TRANSPORTS", "cloud,webchat".into()),
        ("WA_CLOUD_PHONE_NUMBER_ID", PHONE_NUMBER_ID.into()),
        ("WA_CLOUD_ACCESS_TOKEN", TOKEN.into()),
        ("WA_CLOUD_APP_SECRET", SECRET.into()),
        ("WA_CLOUD_VERIFY_TOKEN", VERIFY.into()),
        ("WA_CLOUD_GRAPH_URL", graph.url.clone()),
    ]
}

async fn start(graph: &FakeGraph, extra: &[(&'static str, String)]) -> Gw {
    start_on(&shared::testing::redis_url(), graph, extra).await
}

pub(crate) async fn start_on(
    redis: &str,
    graph: &FakeGraph,
    extra: &[(&'static str, String)],
) -> Gw {
    let mut env = cloud_env(graph);
    env.extend(extra.iter().cloned());
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Gw::start_on(redis, None, &pairs).await
}

pub(crate) fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Gw {
    fn webhook_url(&self) -> String {
        format!("{}/webhooks/whatsapp", self.public)
    }

    /// POSTs `body` with `signature`; the status.
    async fn post_webhook(&self, body: &[u8], signature: Option<&str>) -> u16 {
        let mut r = self
            .http
            .post(self.webhook_url())
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(s) = signature {
            r = r.header("x-hub-signature-256", s);
        }
        r.send().await.unwrap().status().as_u16()
    }

    pub(crate) async fn deliver(&self, body: &serde_json::Value) -> u16 {
        let bytes = serde_json::to_vec(body).unwrap();
        self.post_webhook(&bytes, Some(&sign(&bytes))).await
    }

    async fn wait_inbound(&self, n: usize) -> Vec<shared::proto::Inbound> {
        let got = shared::testing::wait_for(T, async || {
            let got = self.inbound().await;
            (got.len() >= n).then_some(got)
        })
        .await;
        match got {
            Some(got) => got,
            None => self.inbound().await,
        }
    }
}

/// A `messages` notification for our number, as Meta sends it.
pub(crate) fn notification(value: serde_json::Value) -> serde_json::Value {
    let mut value = value;
    value["messaging_product"] = "whatsapp".into();
    value["metadata"] = serde_json::json!({"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID});
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"value": value, "field": "messages"}]}]
    })
}

/// Now in unix seconds, as Meta stamps messages and statuses.
fn now_secs() -> i64 {
    shared::ids::now_ms() / 1000
}

/// A message sent just now.
fn message(id: &str, kind: &str, content: serde_json::Value) -> serde_json::Value {
    message_at(id, kind, content, now_secs())
}

/// A message sent at `timestamp` (unix seconds).
fn message_at(
    id: &str,
    kind: &str,
    content: serde_json::Value,
    timestamp: i64,
) -> serde_json::Value {
    let mut m = serde_json::json!({"from": CUSTOMER, "id": id, "timestamp": timestamp.to_string(), "type": kind});
    m[kind] = content;
    notification(serde_json::json!({
        "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": CUSTOMER}],
        "messages": [m],
    }))
}

/// A status of just now.
pub(crate) fn status(wamid: &str, status: &str, errors: serde_json::Value) -> serde_json::Value {
    status_at(wamid, status, errors, now_secs())
}

/// A status stamped `timestamp` (unix seconds).
fn status_at(
    wamid: &str,
    status: &str,
    errors: serde_json::Value,
    timestamp: i64,
) -> serde_json::Value {
    let mut s = serde_json::json!({"id": wamid, "status": status, "timestamp": timestamp.to_string(), "recipient_id": CUSTOMER});
    if !errors.is_null() {
        s["errors"] = errors;
    }
    notification(serde_json::json!({"statuses": [s]}))
}

async fn wait_for<R>(what: &str, mut probe: impl FnMut() -> Option<R>) -> R {
    shared::testing::eventually(what, T, async || probe()).await
}

/// Waits until the gateway's metrics contain `line`; returns them.
async fn wait_metric(gw: &Gw, line: &str) -> String {
    shared::testing::eventually(line, T, async || {
        let m = gw.metrics().await;
        m.contains(line).then_some(m)
    })
    .await
}

#[tokio::test]
async fn the_handshake_echoes_the_challenge_only_for_the_verify_token() {
    let graph = FakeGraph::start();
    let gw = start(&graph, &[]).await;
    let get = |q: &str| {
        let url = format!("{}?{q}", gw.webhook_url());
        let http = gw.http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, body) = get(&format!(
        "hub.mode=subscribe&hub.verify_token={VERIFY}&hub.challenge=1158201444"
    ))
    .await;
    assert_eq!((status, body.as_str()), (200, "1158201444"));
    let (status, body) = get("hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("error"));
    let (status, _) = get(&format!(
        "hub.mode=unsubscribe&hub.verify_token={VERIFY}&hub.challenge=1"
    ))
    .await;
    assert_eq!(status, 403);
    let (status, body) = get("hub.mode=subscribe").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn only_deliveries_signed_with_the_app_secret_are_taken_even_when_fuzzed() {
    use rand::{Rng, SeedableRng};
    let graph = FakeGraph::start();
    let gw = start(&graph, &[]).await;
    let body = serde_json::to_vec(&message(
        "wamid.SIG1",
        "text",
        serde_json::json!({"body": "hi"}),
    ))
    .unwrap();
    let good = sign(&body);
    assert_eq!(gw.post_webhook(&body, None).await, 401, "unsigned");
    let huge = vec![b'{'; 2 * 1024 * 1024];
    // Over 1 MB: refused at once (413), the connection closed under the client while it may
    // still be sending — on a connection of its own, so no later request reuses it.
    let status = shared::http_client::client()
        .post(gw.webhook_url())
        .header("x-hub-signature-256", sign(&huge))
        .body(huge.clone())
        .send()
        .await
        .map_or(0, |r| r.status().as_u16());
    assert!(matches!(status, 413 | 0), "over 1 MB: {status}");
    assert_eq!(
        gw.post_webhook(&body, Some("sha256=00")).await,
        401,
        "wrong"
    );
    assert_eq!(
        gw.post_webhook(&body, Some(&sign(b"other"))).await,
        401,
        "another body's"
    );
    let webhooks = || async { gw.bus.stats(Stream::Webhooks).await.unwrap().length };
    assert_eq!(webhooks().await, 0, "nothing kept from refused deliveries");

    // 1,000 mutations of a signed delivery: a flipped byte of the body or the signature, a
    // truncated body, a signature of another secret. None is taken.
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261203);
    let mut refused = 0;
    for i in 0..1000 {
        let (b, s) = match i % 4 {
            0 => {
                let mut b = body.clone();
                let at = rng.random_range(0..b.len());
                b[at] ^= 1 << rng.random_range(0..8);
                (b, good.clone())
            }
            1 => {
                let mut s = good.clone().into_bytes();
                let at = rng.random_range(7..s.len());
                s[at] = if s[at] == b'0' { b'1' } else { b'0' };
                (body.clone(), String::from_utf8(s).unwrap())
            }
            2 => {
                let cut = rng.random_range(0..body.len());
                (body[..cut].to_vec(), good.clone())
            }
            _ => {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(format!("guess-{i}").as_bytes()).unwrap();
                mac.update(&body);
                (
                    body.clone(),
                    format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
                )
            }
        };
        let status = gw.post_webhook(&b, Some(&s)).await;
        assert_ne!(status, 200, "mutation {i} was accepted");
        refused += u64::from(status == 401);
    }
    assert_eq!(refused, 1000);
    assert_eq!(webhooks().await, 0);
    // The real one is taken, and its message published.
    assert_eq!(gw.post_webhook(&body, Some(&good)).await, 200);
    assert_eq!(gw.wait_inbound(1).await.len(), 1);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("gateway_cloud_webhooks_total{result=\"bad_signature\"} 1003"),
        "{metrics}"
    );
}

#[tokio::test]
async fn text_voice_photo_and_other_messages_are_published_once_with_their_media() {
    let graph = FakeGraph::start();
    let voice = shared::testing::voice_note(2);
    graph.add_media("1013859600285441", "audio/ogg; codecs=opus", voice.clone());
    graph.add_media("1479537139650973", "image/png", PNG.to_vec());
    let gw = start(&graph, &[]).await;
    let sent_at = now_secs() - 60;
    let text = message_at(
        "wamid.TEXT1",
        "text",
        serde_json::json!({"body": "Does it come in another color?"}),
        sent_at,
    );
    assert_eq!(gw.deliver(&text).await, 200);
    let audio = message(
        "wamid.VOICE1",
        "audio",
        serde_json::json!({"mime_type": "audio/ogg; codecs=opus", "sha256": "x", "id": "1013859600285441", "voice": true}),
    );
    assert_eq!(gw.deliver(&audio).await, 200);
    let image = message(
        "wamid.IMAGE1",
        "image",
        serde_json::json!({"caption": "This one?", "mime_type": "image/png", "sha256": "x", "id": "1479537139650973"}),
    );
    assert_eq!(gw.deliver(&image).await, 200);
    let sticker = message(
        "wamid.STICKER1",
        "sticker",
        serde_json::json!({"mime_type": "image/webp", "sha256": "x", "id": "9", "animated": false}),
    );
    assert_eq!(gw.deliver(&sticker).await, 200);
    // Meta redelivers the text (it missed our 200): dropped on the message id.
    assert_eq!(gw.deliver(&text).await, 200);
    // The web chat still works beside the Cloud API.
    assert_eq!(
        gw.send_text("15550009999", "and the web chat?").await.0,
        202
    );

    let got = gw.wait_inbound(5).await;
    // The redelivery came last: once it is counted as dropped, it was not published.
    wait_metric(
        &gw,
        "gateway_duplicates_dropped_total{transport=\"cloud\"} 1",
    )
    .await;
    let got_later = gw.inbound().await;
    assert_eq!(got_later.len(), 5, "{got:?}");
    let by_id = |id: &str| {
        got_later
            .iter()
            .find(|i| i.transport_message_id == id)
            .unwrap_or_else(|| panic!("{id} not published"))
            .clone()
    };
    let t = by_id("wamid.TEXT1");
    assert_eq!(t.kind(), inbound::Kind::Text);
    assert_eq!(t.transport(), Transport::Cloud);
    assert_eq!(t.text, "Does it come in another color?");
    assert_eq!(t.chat_id, CUSTOMER);
    assert_eq!(t.display_name, "Sheena Nelson");
    assert_eq!(t.sent_at_ms, sent_at * 1000);
    assert!(
        t.identities
            .iter()
            .any(|i| i.kind() == identity::Kind::Phone && i.value == format!("+{CUSTOMER}"))
    );
    let v = by_id("wamid.VOICE1");
    assert_eq!(v.kind(), inbound::Kind::Voice);
    let media = v.media.expect("the voice note is stored");
    assert_eq!(media.size_bytes, voice.len() as u64);
    assert_eq!(media.mime_type, "audio/ogg");
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(&media.key)
        .query_async(&mut gw.redis().await)
        .await
        .unwrap();
    assert_eq!(
        stored, voice,
        "the bytes Meta served are in the media store"
    );
    let i = by_id("wamid.IMAGE1");
    assert_eq!(i.kind(), inbound::Kind::Image);
    assert_eq!(i.text, "This one?");
    assert_eq!(i.media.unwrap().mime_type, "image/png");
    assert_eq!(by_id("wamid.STICKER1").kind(), inbound::Kind::Other);

    // Each download asked with the access token; each published message marked read with
    // the typing indicator.
    let seen = graph.seen();
    assert!(
        seen.iter()
            .all(|s| s.authorization == format!("Bearer {TOKEN}"))
    );
    assert!(seen.iter().any(|s| s.path.ends_with("/1013859600285441")));
    // Marking a message read marks the earlier ones too: the latest is marked, with the
    // typing indicator, and none twice.
    let reads = wait_for("the latest message marked read", || {
        let reads: Vec<serde_json::Value> = graph
            .posted()
            .into_iter()
            .filter(|b| b["status"] == "read")
            .collect();
        reads
            .iter()
            .any(|r| r["message_id"] == "wamid.STICKER1")
            .then_some(reads)
    })
    .await;
    let mut marked: Vec<&str> = Vec::new();
    for r in &reads {
        assert_eq!(r["messaging_product"], "whatsapp");
        assert_eq!(r["typing_indicator"], serde_json::json!({"type": "text"}));
        let id = r["message_id"].as_str().unwrap();
        assert!(!marked.contains(&id), "{id} marked twice: {reads:?}");
        marked.push(id);
    }
}

#[tokio::test]
async fn a_text_over_max_input_chars_is_published_cut_to_it_and_marked() {
    let graph = FakeGraph::start();
    let gw = start(&graph, &[("MAX_INPUT_CHARS", "50".into())]).await;
    let long = message(
        "wamid.LONG1",
        "text",
        serde_json::json!({"body": "é".repeat(40_000)}),
    );
    // WhatsApp's message cannot be refused: taken, cut, and marked for the brain.
    assert_eq!(gw.deliver(&long).await, 200);
    let fits = message(
        "wamid.FITS1",
        "text",
        serde_json::json!({"body": "é".repeat(50)}),
    );
    assert_eq!(gw.deliver(&fits).await, 200);
    let got = gw.wait_inbound(2).await;
    let by_id = |id: &str| {
        got.iter()
            .find(|i| i.transport_message_id == id)
            .unwrap_or_else(|| panic!("{id} not published: {got:?}"))
    };
    let cut = by_id("wamid.LONG1");
    assert_eq!(cut.text, "é".repeat(50));
    assert!(cut.text_cut);
    let whole = by_id("wamid.FITS1");
    assert_eq!(whole.text, "é".repeat(50));
    assert!(!whole.text_cut);
}

#[tokio::test]
async fn with_read_receipts_off_nothing_is_marked_read_and_so_no_typing_either() {
    let graph = FakeGraph::start();
    let gw = start(&graph, &[("WA_READ_RECEIPTS", "false".into())]).await;
    let text = message(
        "wamid.QUIET1",
        "text",
        serde_json::json!({"body": "Are you open today?"}),
    );
    assert_eq!(gw.deliver(&text).await, 200);
    assert_eq!(gw.wait_inbound(1).await.len(), 1, "taken all the same");
    // The read mark (and the typing indicator riding on it) would follow the publish at once.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let reads: Vec<serde_json::Value> = graph
        .posted()
        .into_iter()
        .filter(|b| b["status"] == "read")
        .collect();
    assert!(reads.is_empty(), "{reads:?}");
}

#[tokio::test]
async fn with_typing_off_the_read_mark_comes_alone() {
    let graph = FakeGraph::start();
    let gw = start(&graph, &[("WA_TYPING", "false".into())]).await;
    let text = message(
        "wamid.NOTYPE1",
        "text",
        serde_json::json!({"body": "Do you deliver?"}),
    );
    assert_eq!(gw.deliver(&text).await, 200);
    let reads = wait_for("the read mark", || {
        let reads: Vec<serde_json::Value> = graph
            .posted()
            .into_iter()
            .filter(|b| b["status"] == "read")
            .collect();
        (!reads.is_empty()).then_some(reads)
    })
    .await;
    assert_eq!(reads[0]["message_id"], "wamid.NOTYPE1");
    assert!(reads[0].get("typing_indicator").is_none(), "{reads:?}");
}

#[tokio::test]
async fn with_a_burst_window_typing_waits_for_its_end() {
    let graph = FakeGraph::start();
    let gw = start(&graph, &[("BURST_WINDOW_MS", "400".into())]).await;
    let text = message(
        "wamid.BURST1",
        "text",
        serde_json::json!({"body": "I have a question"}),
    );
    let sent = std::time::Instant::now();
    assert_eq!(gw.deliver(&text).await, 200);
    let reads = wait_for("a read mark, then typing", || {
        let reads: Vec<(std::time::Duration, serde_json::Value)> = graph
            .posted()
            .into_iter()
            .filter(|b| b["status"] == "read")
            .map(|b| (sent.elapsed(), b))
            .collect();
        (reads.len() >= 2).then_some(reads)
    })
    .await;
    // Marked read at once, without typing (the customer may still be writing); typing when the
    // window is over.
    assert!(reads[0].1.get("typing_indicator").is_none(), "{reads:?}");
    assert_eq!(
        reads[1].1["typing_indicator"],
        serde_json::json!({"type": "text"})
    );
    assert!(sent.elapsed() >= std::time::Duration::from_millis(400));
}

#[tokio::test]
async fn media_the_graph_api_cannot_serve_yet_is_retried() {
    let graph = FakeGraph::start();
    graph.add_media("555", "image/png", PNG.to_vec());
    graph.fail_media([503, 500]);
    let gw = start(&graph, &[("BUS_RETRY_BASE_MS", "50".into())]).await;
    let image = message(
        "wamid.IMG2",
        "image",
        serde_json::json!({"mime_type": "image/png", "id": "555"}),
    );
    assert_eq!(
        gw.deliver(&image).await,
        200,
        "answered before the media is fetched"
    );
    let got = gw.wait_inbound(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].kind(),
        inbound::Kind::Image,
        "fetched on the third try"
    );
}

fn reply(id: &str, text: &str) -> Outbound {
    Outbound {
        message_id: id.into(),
        transport: Transport::Cloud as i32,
        chat_id: CUSTOMER.into(),
        kind: outbound::Kind::Reply as i32,
        text: text.into(),
        in_reply_to: "m-in-1".into(),
        identities: Vec::new(),
        also_answers: Vec::new(),
    }
}

#[tokio::test]
async fn replies_are_sent_as_meta_expects_throttling_is_retried_and_statuses_recorded() {
    let graph = FakeGraph::start();
    graph.script_sends([(400, graph_error(130_429, "(#130429) Rate limit hit"))]);
    let gw = start(&graph, &[]).await;
    gw.publish_outbound(reply("r-1", "**Yes**, in blue and green."))
        .await;
    let sends = wait_for("two send attempts", || {
        let s: Vec<serde_json::Value> = graph
            .posted()
            .into_iter()
            .filter(|b| b["type"] == "text")
            .collect();
        (s.len() >= 2).then_some(s)
    })
    .await;
    for s in &sends {
        assert_eq!(
            *s,
            serde_json::json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": CUSTOMER,
                "type": "text",
                "text": {"preview_url": false, "body": "*Yes*, in blue and green."},
            })
        );
    }
    // The fake records the second send before the gateway has read its answer: the count
    // follows a moment later.
    let metrics = wait_metric(&gw, "gateway_cloud_sends_total{outcome=\"sent\"} 1").await;
    assert!(
        metrics.contains("gateway_cloud_sends_total{outcome=\"throttled\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gateway_cloud_sends_total{outcome=\"sent\"} 1"),
        "{metrics}"
    );
    // WhatsApp reports the reply delivered, then read: recorded against our id.
    assert_eq!(
        gw.deliver(&status("wamid.FAKE1", "delivered", serde_json::Value::Null))
            .await,
        200
    );
    assert_eq!(
        gw.deliver(&status("wamid.FAKE1", "read", serde_json::Value::Null))
            .await,
        200
    );
    let key = format!("{{{}}}:gw:receipt:r-1", gw.prefix());
    let mut conn = gw.redis().await;
    shared::testing::eventually("the delivered and read receipts", T, async || {
        let mut got: Vec<String> = redis::cmd("HKEYS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        got.sort();
        (got == ["delivered", "read"]).then_some(())
    })
    .await;
    assert!(gw.dead_letters(0).await.is_empty());
    // What the reply left behind lives as long as a receipt or redelivery can come.
    crate::storage::assert_records_expire_within_a_day(&gw, &["sent", "tmid", "receipt"]).await;
}

#[tokio::test]
async fn a_signed_delivery_replayed_after_the_24_hour_window_is_ignored_and_counted() {
    let graph = FakeGraph::start();
    let gw = start(&graph, &[]).await;
    gw.publish_outbound(reply("r-9", "Here you are.")).await;
    // Sent once the gateway has read the send's answer (and so knows the reply's wamid).
    wait_metric(&gw, "gateway_cloud_sends_total{outcome=\"sent\"} 1").await;
    // Bodies Meta really signed, captured and posted again more than a day later: a message
    // and a status of our reply. Then fresh ones of the same customer, handled after them (one
    // customer's deliveries are handled in order).
    let day_ago = now_secs() - 24 * 3600 - 60;
    for body in [
        message_at(
            "wamid.OLD1",
            "text",
            serde_json::json!({"body": "Refund me again"}),
            day_ago,
        ),
        status_at("wamid.FAKE1", "read", serde_json::Value::Null, day_ago),
        message("wamid.NEW1", "text", serde_json::json!({"body": "Hello"})),
        status("wamid.FAKE1", "delivered", serde_json::Value::Null),
    ] {
        assert_eq!(gw.deliver(&body).await, 200);
    }
    let got = gw.wait_inbound(1).await;
    let mut conn = gw.redis().await;
    let receipts = shared::testing::eventually("the fresh receipt", T, async || {
        let got: Vec<String> = redis::cmd("HKEYS")
            .arg(format!("{{{}}}:gw:receipt:r-9", gw.prefix()))
            .query_async(&mut conn)
            .await
            .unwrap();
        got.contains(&"delivered".to_owned()).then_some(got)
    })
    .await;
    assert_eq!(receipts, ["delivered"], "the replayed `read` was taken");
    assert_eq!(
        got.iter()
            .map(|i| i.transport_message_id.as_str())
            .collect::<Vec<_>>(),
        ["wamid.NEW1"],
        "the replayed message was taken"
    );
    let metrics = gw.metrics().await;
    for kind in ["message", "status"] {
        assert!(
            metrics.contains(&format!("gateway_cloud_stale_total{{kind=\"{kind}\"}} 1")),
            "{metrics}"
        );
    }
    // Not even marked read.
    assert!(
        !graph
            .posted()
            .iter()
            .any(|b| b["message_id"] == "wamid.OLD1"),
        "{:?}",
        graph.posted()
    );
    assert!(gw.dead_letters(0).await.is_empty());
}

#[tokio::test]
async fn a_reply_outside_the_24_hour_window_is_dead_lettered_and_the_business_told() {
    let hooks = shared::testing::WebhookSink::start();
    let hook = hooks.url.clone();
    let graph = FakeGraph::start();
    graph.script_sends([(
        400,
        graph_error(
            131_047,
            "Re-engagement message: more than 24 hours have passed since the recipient last replied",
        ),
    )]);
    let gw = start(
        &graph,
        &[
            ("ALERT_WEBHOOK_URL", hook),
            ("ADMIN_NUMBERS", "+15550000001".into()),
        ],
    )
    .await;
    gw.publish_outbound(reply("r-late", "Your order shipped"))
        .await;
    let dead = gw.dead_letters(1).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].reason.contains("24-hour"), "{}", dead[0].reason);
    let alert = wait_for("the alert", || hooks.got().first().cloned()).await;
    assert_eq!(alert["switchboard"]["kind"], "window_closed");
    assert_eq!(alert["switchboard"]["transport"], "cloud");
    let text = alert["text"].as_str().unwrap();
    assert!(text.contains("24 hours") && text.contains("1234"), "{text}");
    assert!(
        !text.contains(CUSTOMER),
        "the number is not spelled out: {text}"
    );
    // The admin is told too, as a message.
    let a = shared::testing::eventually("an alert for the admin", T, async || {
        crate::helpers::read_stream(&gw.bus, Stream::Outbound)
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
    assert!(a.text.contains("24 hours"), "{}", a.text);
    assert_eq!(a.identities[0].value, "+15550000001");
    // A send WhatsApp accepts and later reports failed for the same reason is counted and
    // told as well.
    gw.publish_outbound(reply("r-later", "Anything else?"))
        .await;
    wait_for("the accepted send", || {
        (graph
            .posted()
            .iter()
            .filter(|b| b["type"] == "text")
            .count()
            >= 2)
            .then_some(())
    })
    .await;
    let failed = status(
        "wamid.FAKE1",
        "failed",
        serde_json::json!([{"code": 131047, "title": "Re-engagement message"}]),
    );
    assert_eq!(gw.deliver(&failed).await, 200);
    wait_for("a second alert", || (hooks.got().len() >= 2).then_some(())).await;
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("gateway_cloud_sends_total{outcome=\"window_closed\"} 2"),
        "{metrics}"
    );
    // When the refused message was for an admin (their own window is closed), only the
    // webhook is told: a message to them would be refused again, and alert again, forever.
    let admin_alerts = || async {
        crate::helpers::read_stream(&gw.bus, Stream::Outbound)
            .await
            .into_iter()
            .filter(|e| {
                matches!(&e.payload, Some(shared::proto::Payload::Outbound(o)) if o.kind() == outbound::Kind::Alert)
            })
            .count()
    };
    // The second refusal's admin message is queued after its webhook (and under the same id:
    // delivery sends it once, the stream holds both): wait for it before counting.
    let before = shared::testing::eventually("the second refusal's admin message", T, async || {
        let n = admin_alerts().await;
        (n >= 2).then_some(n)
    })
    .await;
    graph.script_sends([(400, graph_error(131_047, "Re-engagement message"))]);
    let mut to_admin = reply("r-admin", "Daily cost: $1.20");
    to_admin.chat_id = "15550000001".into();
    gw.publish_outbound(to_admin).await;
    wait_for("the third alert", || (hooks.got().len() >= 3).then_some(())).await;
    // The alert is raised before the send is dead-lettered: nothing more can come.
    assert_eq!(gw.dead_letters(2).await.len(), 2, "r-late and r-admin");
    assert_eq!(
        admin_alerts().await,
        before,
        "no message to the admin about the admin"
    );
}

#[tokio::test]
async fn with_redis_down_a_delivery_is_refused_with_503_so_meta_retries() {
    let mut redis = shared::testing::RedisServer::start();
    let graph = FakeGraph::start();
    let gw = start_on(&redis.url(), &graph, &[]).await;
    let body = message(
        "wamid.DOWN1",
        "text",
        serde_json::json!({"body": "anyone?"}),
    );
    redis.kill9();
    assert_eq!(gw.deliver(&body).await, 503);
    redis.restart();
    shared::testing::eventually("the delivery taken after Redis came back", T, async || {
        (gw.deliver(&body).await == 200).then_some(())
    })
    .await;
    let got = gw.wait_inbound(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text, "anyone?");
}

#[tokio::test]
async fn readyz_shows_whether_the_access_token_works() {
    let graph = FakeGraph::start();
    let gw = start(&graph, &[]).await;
    let ready = |gw: &Gw| {
        let url = format!("{}/readyz", gw.proc.http);
        async move { shared::testing::get_json(&url).await }
    };
    let r = shared::testing::eventually("the cloud transport ready", T, async || {
        let r = ready(&gw).await;
        (r["checks"]["transport:cloud"]["ok"] == true).then_some(r)
    })
    .await;
    assert_eq!(r["checks"]["transport:cloud"]["state"], "connected");
    let bad = start(&graph, &[("WA_CLOUD_ACCESS_TOKEN", "EAAexpired".into())]).await;
    // Its first check of the token is done once it says so (the state is set before).
    shared::testing::eventually("the refused token logged", T, async || {
        bad.proc
            .log_text()
            .contains("refuses the access token")
            .then_some(())
    })
    .await;
    let r = ready(&bad).await;
    assert_eq!(r["checks"]["transport:cloud"]["ok"], false, "{r}");
    assert_eq!(r["status"], "not_ready", "{r}");
    assert!(bad.proc.log_text().contains("refuses the access token"));
}

#[test]
fn check_config_lists_every_missing_cloud_variable() {
    let mut senv = shared::testing::ServiceEnv::new(
        shared::config::ServiceName::Gateway,
        &shared::testing::redis_url(),
        None,
    );
    senv.env.insert("TRANSPORTS".into(), "cloud".into());
    senv.env
        .insert("WA_CLOUD_PHONE_NUMBER_ID".into(), "+1 555".into());
    let out = std::process::Command::new(crate::helpers::BIN)
        .arg("check-config")
        .env_clear()
        .envs(&senv.env)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for v in [
        "WA_CLOUD_PHONE_NUMBER_ID",
        "WA_CLOUD_ACCESS_TOKEN",
        "WA_CLOUD_APP_SECRET",
        "WA_CLOUD_VERIFY_TOKEN",
    ] {
        assert!(err.contains(v), "{v} not listed: {err}");
    }
}
