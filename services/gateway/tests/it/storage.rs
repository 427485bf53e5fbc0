//! The storage budget: what each message leaves in Redis and for how long, the web chat's
//! histories held to their size, Redis's high-water mark, and an attack at the highest rate the
//! limits allow that leaves Redis under its `maxmemory` with WhatsApp still answered.

use std::time::{Duration, Instant};

use crate::cloud;
use crate::fake_graph::FakeGraph;
use crate::helpers::Gw;

const T: Duration = Duration::from_secs(15);
const HOUR_MS: i64 = 3_600_000;

/// Every key under `gw`'s prefix matching `pattern` (after the prefix), with its PTTL.
async fn ttls(gw: &Gw, pattern: &str) -> Vec<(String, i64)> {
    let mut conn = gw.redis().await;
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{{{}}}:{pattern}", gw.prefix()))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut out = Vec::new();
    for k in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        out.push((k, ttl));
    }
    out
}

/// The gateway's dedup and delivery records (`gw:seen`, `gw:sent`, `gw:tmid`, `gw:receipt`)
/// all expire within a day and an hour: as long as a redelivery can happen, not 7 days.
pub(crate) async fn assert_records_expire_within_a_day(gw: &Gw, kinds: &[&str]) {
    for kind in kinds {
        let found = ttls(gw, &format!("gw:{kind}:*")).await;
        assert!(!found.is_empty(), "no gw:{kind} record");
        for (k, ttl) in found {
            assert!(
                ttl > 0 && ttl <= 25 * HOUR_MS,
                "{k} lives {ttl} ms: longer than a redelivery can happen"
            );
        }
    }
}

#[tokio::test]
async fn a_messages_records_live_as_long_as_a_redelivery_can_and_a_refused_ones_a_minute() {
    let gw = Gw::start(&[("RATE_LIMIT_PER_CONTACT", "1")]).await;
    let contact = "15551110010";
    let (_, first) = gw.send_text(contact, "hello").await;
    assert_eq!(first["status"], "accepted");
    let (_, second) = gw.send_text(contact, "hello again").await;
    assert_eq!(second["status"], "rate_limited");
    let seen = ttls(&gw, "gw:seen:*").await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    let mut ttl: Vec<i64> = seen.iter().map(|(_, t)| *t).collect();
    ttl.sort_unstable();
    // The refused message: remembered for the minute its limit lasts.
    assert!(ttl[0] > 0 && ttl[0] <= 60_000, "{seen:?}");
    // The accepted one: a day and an hour (the Cloud API's replay window, and clocks).
    assert!(ttl[1] > 24 * HOUR_MS && ttl[1] <= 25 * HOUR_MS, "{seen:?}");
}

#[tokio::test]
async fn a_conversations_history_is_held_to_its_entries_and_bytes_and_pages_back_by_its_index() {
    let gw = Gw::start(&[
        ("RATE_LIMIT_PER_CONTACT", "0"),
        ("RATE_LIMIT_GLOBAL", "0"),
        ("RATE_LIMIT_VISITORS", "0"),
    ])
    .await;
    let contact = "15551110011";
    // 230 short messages: the oldest 30 go.
    let mut ids = Vec::new();
    for i in 0..230 {
        let (status, body) = gw.send_text(contact, &format!("message {i}")).await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let list = gw.listing(contact).await;
    assert_eq!(list.len(), 200);
    assert_eq!(list[0]["id"], ids[30].as_str());
    assert_eq!(list[199]["id"], ids[229].as_str());
    // Paging back from a message finds it in the index: the ten before it.
    let page: Vec<serde_json::Value> = gw
        .http
        .get(format!(
            "{}?limit=10&before={}",
            gw.api(contact, "messages"),
            ids[100]
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let got: Vec<&str> = page.iter().map(|m| m["id"].as_str().unwrap()).collect();
    let want: Vec<&str> = ids[90..100].iter().map(String::as_str).collect();
    assert_eq!(got, want);
    // A message that is gone (trimmed) cannot be paged from.
    let gone = gw
        .http
        .get(format!("{}?before={}", gw.api(contact, "messages"), ids[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);

    // Long messages: the history holds at most 64 KB of them, the newest whole.
    let mut long_ids = Vec::new();
    for i in 0..40 {
        let text = format!("{i:02}{}", "é".repeat(4000));
        let (status, body) = gw.send_text(contact, &text).await;
        assert_eq!(status, 202, "{body}");
        long_ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let list = gw.listing(contact).await;
    let bytes: usize = list
        .iter()
        .map(|m| serde_json::to_string(m).unwrap().len())
        .sum();
    assert!(bytes <= 64 * 1024, "{bytes} bytes kept");
    assert!(list.len() >= 7, "{} kept", list.len());
    assert_eq!(list.last().unwrap()["id"], long_ids[39].as_str());
    let held: Vec<&str> = list.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(held, long_ids[40 - list.len()..], "the newest, in order");
    // The index holds what the history holds, and no more.
    let index = ttls(&gw, "wc:hi:*").await;
    assert_eq!(index.len(), 1);
    let mut conn = gw.redis().await;
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(&index[0].0)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(fields.len(), list.len() + 1, "message ids and #bytes");
}

/// The history's (and its index's) lifetimes, in ms, once both keys exist.
async fn history_ttls(gw: &Gw) -> Vec<i64> {
    let mut out: Vec<i64> = Vec::new();
    for pattern in ["wc:h:*", "wc:hi:*"] {
        let found = ttls(gw, pattern).await;
        assert_eq!(found.len(), 1, "{pattern}: {found:?}");
        out.push(found[0].1);
    }
    out
}

/// An outgoing web chat message of `kind` to `contact`.
fn outgoing(
    contact: &str,
    id: &str,
    kind: shared::proto::outbound::Kind,
) -> shared::proto::Outbound {
    shared::proto::Outbound {
        message_id: id.to_owned(),
        transport: shared::proto::Transport::Webchat as i32,
        chat_id: contact.to_owned(),
        kind: kind as i32,
        text: "an answer".to_owned(),
        in_reply_to: String::new(),
        identities: Vec::new(),
        also_answers: Vec::new(),
    }
}

#[tokio::test]
async fn a_history_the_bot_never_answered_lives_minutes_and_an_answer_keeps_it_memory_ttl_days() {
    use shared::proto::outbound::Kind;
    let gw = Gw::start(&[("MEMORY_TTL_DAYS", "3")]).await;
    const TEN_MINUTES_MS: i64 = 600_000;
    let contact = "15551110013";
    let days = |ms: i64| ms as f64 / (24.0 * HOUR_MS as f64);
    assert_eq!(gw.send_text(contact, "anyone there?").await.0, 202);
    for ttl in history_ttls(&gw).await {
        assert!(
            ttl > 0 && ttl <= TEN_MINUTES_MS,
            "unanswered, it lives {ttl} ms"
        );
    }
    // A notice (a rate limit's, a budget's) is no answer.
    gw.publish_outbound(outgoing(contact, "n-1", Kind::Notice))
        .await;
    gw.wait_listing(contact, T, |l| l.len() == 2).await;
    for ttl in history_ttls(&gw).await {
        assert!(
            ttl > 0 && ttl <= TEN_MINUTES_MS,
            "after a notice, it lives {ttl} ms"
        );
    }
    // The bot's answer: MEMORY_TTL_DAYS, and the visitor's next post does not shorten it.
    gw.publish_outbound(outgoing(contact, "r-1", Kind::Reply))
        .await;
    gw.wait_listing(contact, T, |l| l.len() == 3).await;
    assert_eq!(gw.send_text(contact, "thanks").await.0, 202);
    gw.wait_listing(contact, T, |l| l.len() == 4).await;
    for ttl in history_ttls(&gw).await {
        assert!(
            days(ttl) > 2.99 && days(ttl) <= 3.0,
            "answered, it lives {} days",
            days(ttl)
        );
    }
}

#[tokio::test]
async fn past_the_high_water_mark_the_web_chat_refuses_new_visitors_and_messages_while_whatsapp_flows()
 {
    let redis = shared::testing::RedisServer::start_with(&[
        "--maxmemory",
        "80mb",
        "--maxmemory-policy",
        "noeviction",
    ]);
    let graph = FakeGraph::start();
    let gw = cloud::start_on(
        &redis.url(),
        &graph,
        &[
            ("MAX_MEDIA_MB", "1".into()),
            ("MEDIA_CAP_MB", "1".into()),
            ("REDIS_HIGH_WATER_PERCENT", "50".into()),
        ],
    )
    .await;
    let contact = "15551110012";
    assert_eq!(gw.send_text(contact, "before").await.0, 202);
    // Something fills Redis past half of its maxmemory.
    let mut conn = gw.redis().await;
    for i in 0..45 {
        let _: () = redis::cmd("SET")
            .arg(format!("filler:{i}"))
            .arg(vec![b'f'; 1024 * 1024])
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let deadline = Instant::now() + T;
    let refused = loop {
        let r = gw
            .http
            .post(gw.api(contact, "messages"))
            .json(&serde_json::json!({"text": "while full"}))
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            break r;
        }
        assert_eq!(r.status(), 202);
        assert!(Instant::now() < deadline, "never refused");
        // Each try stores a message: paced, so the fill is the high-water mark's, not ours.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refused.headers()["retry-after"], "60");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    let visitors = gw
        .http
        .post(format!("{}/chat/api/visitors", gw.public))
        .send()
        .await
        .unwrap();
    assert_eq!(visitors.status(), 503);
    // WhatsApp's customers are still taken.
    let text = fresh_text("wamid.HIGHWATER1", "are you open?");
    assert_eq!(gw.deliver(&text).await, 200);
    until("the WhatsApp message published", T, async || {
        gw.inbound()
            .await
            .iter()
            .any(|i| i.transport_message_id == "wamid.HIGHWATER1")
    })
    .await;
    assert!(
        gw.metrics().await.contains("gateway_redis_high_water 1"),
        "the gauge shows it"
    );
    // Room again: the web chat takes messages again.
    for i in 0..45 {
        let _: () = redis::cmd("DEL")
            .arg(format!("filler:{i}"))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let deadline = Instant::now() + T;
    loop {
        let (status, _) = gw.send_text(contact, "after").await;
        if status == 202 {
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "never open again");
        // Each try is a post (stored once accepted): paced like a person retrying.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Cloud API text from `CUSTOMER`, stamped now (deliveries older than a day are replays).
fn fresh_text(id: &str, body: &str) -> serde_json::Value {
    text_from(cloud::CUSTOMER, id, body)
}

/// A Cloud API text from `from`, stamped now.
fn text_from(from: &str, id: &str, body: &str) -> serde_json::Value {
    let now = (shared::ids::now_ms() / 1000).to_string();
    cloud::notification(serde_json::json!({
        "contacts": [{"profile": {"name": "A customer"}, "wa_id": from}],
        "messages": [{"from": from, "id": id, "timestamp": now, "type": "text", "text": {"body": body}}],
    }))
}

/// Starts the brain on `redis` under `gw`'s prefix, its model the fake answering "Thanks!",
/// with `extra` variables.
async fn brain(
    gw: &Gw,
    redis: &str,
    extra: &[(&str, &str)],
) -> (
    shared::testing::ServiceProcess,
    shared::fake_chat::FakeChat,
    shared::testing::TestDb,
) {
    let fake = shared::fake_chat::FakeChat::start();
    fake.otherwise(shared::fake_chat::Reply::Text("Thanks!".into()));
    let db = shared::testing::TestDb::new().await;
    let mut benv =
        shared::testing::ServiceEnv::new(shared::config::ServiceName::Brain, redis, Some(&db.url));
    benv.use_prefix(gw.prefix());
    for (k, v) in [
        ("OPENAI_BASE_URL", fake.base_url.as_str()),
        ("OPENAI_API_KEY", "sk-test"),
        ("ACCESS_MODE", "open"),
        ("AI_DISCLOSURE", ""),
        ("BUS_TRIM_INTERVAL_SECS", "1"),
    ]
    .iter()
    .chain(extra)
    {
        benv.env.insert((*k).into(), (*v).into());
    }
    let brain_bin = shared::testing::workspace_bin("brain");
    let p = benv.spawn_ready(brain_bin.to_str().unwrap()).await;
    (p, fake, db)
}

/// Bytes (`MEMORY USAGE`) of the keys under `gw`'s prefix matching `pattern`, and how many.
async fn usage(gw: &Gw, pattern: &str) -> (u64, usize) {
    let keys = ttls(gw, pattern).await;
    let mut conn = gw.redis().await;
    let mut total = 0;
    for (k, _) in &keys {
        let n: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(k)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut conn)
            .await
            .unwrap();
        total += n.unwrap_or(0);
    }
    (total, keys.len())
}

/// What the keys of each kind hold (bytes), and everything under the prefix (`all`) but the
/// usage stream (the ledger's, not running here: it trims it when it does).
async fn snapshot(gw: &Gw) -> std::collections::BTreeMap<&'static str, u64> {
    let mut conn = gw.redis().await;
    let _: () = redis::cmd("DEL")
        .arg(format!("{{{}}}:v1:usage", gw.prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut out = std::collections::BTreeMap::new();
    for kind in [
        "gw:seen",
        "gw:tmid",
        "gw:receipt",
        "gw:sent",
        "wc:h",
        "wc:hi",
        "wc:out",
    ] {
        out.insert(kind, usage(gw, &format!("{kind}:*")).await.0);
    }
    out.insert("all", usage(gw, "*").await.0);
    out
}

/// Waits until `probe` holds, for at most `timeout`.
async fn until(what: &str, timeout: Duration, mut probe: impl AsyncFnMut() -> bool) {
    shared::testing::eventually(what, timeout, async || probe().await.then_some(())).await;
}

/// What each message leaves in Redis, measured for docs/OPERATIONS.md ("Redis memory"): `N`
/// WhatsApp messages (Cloud API) from as many customers, answered and reported delivered and
/// read, then `N` web chat messages, answered; the bytes of each kind of key (`MEMORY USAGE`)
/// per message, printed. Every record expires within 25 hours; the streams are trimmed.
#[tokio::test]
async fn what_each_message_leaves_in_redis_is_measured_and_expires_within_a_day() {
    const N: usize = 200;
    // As compose runs it.
    let redis = shared::testing::RedisServer::start_with(&[
        "--appendfsync",
        "everysec",
        "--stream-node-max-bytes",
        "1024",
    ]);
    let graph = FakeGraph::start();
    let gw = cloud::start_on(
        &redis.url(),
        &graph,
        &[
            ("RATE_LIMIT_PER_CONTACT", "0".into()),
            ("RATE_LIMIT_GLOBAL", "0".into()),
            ("RATE_LIMIT_VISITORS", "0".into()),
            ("BUS_TRIM_INTERVAL_SECS", "1".into()),
        ],
    )
    .await;
    let (_brain, _fake, _db) = brain(&gw, &redis.url(), &[]).await;
    let customer = |i: usize| format!("1650555{i:04}");
    for i in 0..N {
        let body = text_from(
            &customer(i),
            &format!("wamid.M{i}"),
            "Is my order on its way?",
        );
        assert_eq!(gw.deliver(&body).await, 200);
    }
    until(
        "every WhatsApp answer",
        Duration::from_secs(120),
        async || {
            graph
                .posted()
                .iter()
                .filter(|b| b["type"] == "text")
                .count()
                >= N
        },
    )
    .await;
    for i in 1..=N {
        for st in ["delivered", "read"] {
            assert_eq!(
                gw.deliver(&cloud::status(
                    &format!("wamid.FAKE{i}"),
                    st,
                    serde_json::Value::Null
                ))
                .await,
                200
            );
        }
    }
    until("every receipt", Duration::from_secs(60), async || {
        usage(&gw, "gw:receipt:*").await.1 >= N
    })
    .await;
    let after_whatsapp = snapshot(&gw).await;
    for i in 0..N {
        let (status, _) = gw
            .send_text(&format!("1555000{i:04}"), "Do you ship to Canada?")
            .await;
        assert_eq!(status, 202);
    }
    until("every web chat answer", Duration::from_secs(120), async || {
        let mut conn = gw.redis().await;
        let outs: u64 = redis::cmd("EVAL")
            .arg("local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('XLEN', k) end return n")
            .arg(0)
            .arg(format!("{{{}}}:wc:h:*", gw.prefix()))
            .query_async(&mut conn)
            .await
            .unwrap();
        outs >= 2 * N as u64
    })
    .await;
    // The streams' acknowledged entries are trimmed (every second here).
    until("the streams trimmed", Duration::from_secs(30), async || {
        let mut conn = gw.redis().await;
        let mut left = 0u64;
        for s in ["inbound", "outbound", "webhooks"] {
            let n: u64 = redis::cmd("XLEN")
                .arg(format!("{{{}}}:v1:{s}", gw.prefix()))
                .query_async(&mut conn)
                .await
                .unwrap();
            left += n;
        }
        left == 0
    })
    .await;
    let after_web = snapshot(&gw).await;
    let mut report = format!("per message, bytes (MEMORY USAGE), N = {N}:\n");
    for (kind, bytes) in &after_web {
        let wa = after_whatsapp.get(kind).copied().unwrap_or(0);
        report += &format!(
            "{kind:<14} WhatsApp {:>6.0}   web chat {:>6.0}\n",
            wa as f64 / N as f64,
            bytes.saturating_sub(wa) as f64 / N as f64
        );
    }
    let mut conn = gw.redis().await;
    let (used, _) = memory(&mut conn).await;
    report += &format!("Redis used_memory: {:.1} MB\n", used as f64 / 1_048_576.0);
    eprintln!("{report}");
    assert_records_expire_within_a_day(&gw, &["seen", "tmid", "receipt", "sent"]).await;
}

/// `INFO memory`'s `used_memory` and `used_memory_peak`.
async fn memory(conn: &mut redis::aio::MultiplexedConnection) -> (u64, u64) {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .unwrap();
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("used_memory"), field("used_memory_peak"))
}

/// An attacker uses the web chat at the highest rate the limits allow for the equivalent of 30
/// minutes (time compressed 15×: two minutes, every per-minute limit and
/// `WEBCHAT_UNANSWERED_TTL_SECS` 15× shorter), from 1,000 addresses: each address opens all the
/// new visitors `WEBCHAT_VISITORS_PER_HOUR` gives it (20: a fixed hour, not compressed), 20,000
/// in all, and each visitor posts `MAX_INPUT_CHARS` characters, the longest text taken.
/// Meanwhile a WhatsApp customer writes every few seconds. Redis (its own, 70 MB of `maxmemory`
/// — compose's room beside a full media store — `noeviction`, as compose runs it) never fills,
/// the customer gets every answer, and once the attack stops the web chat takes a legitimate
/// visitor again within `WEBCHAT_UNANSWERED_TTL_SECS` and answers it.
///
/// Per-address limits cannot bound what 1,000 addresses open (each unanswered history is a Redis
/// stream of 1.7 KB or more), so such an attack may take Redis past its high-water mark: the web
/// chat then refuses new visitors and posts (503) while WhatsApp keeps flowing — what the mark is
/// for — and opens again as soon as the attack's unanswered histories expire, in minutes rather
/// than the week a history used to live. The figures are printed.
#[tokio::test]
async fn an_attack_at_the_highest_rate_the_limits_allow_leaves_redis_room_and_whatsapp_answered() {
    const MAXMEMORY: u64 = 70 * 1024 * 1024;
    const HIGH_WATER_PERCENT: u64 = 80;
    const COMPRESSION: u32 = 15;
    const ADDRESSES: usize = 1000;
    const VISITORS_PER_ADDRESS: usize = 20;
    const RUN: Duration = Duration::from_secs(120);
    const IN_FLIGHT: usize = 32;
    let redis = shared::testing::RedisServer::start_with(&[
        "--maxmemory",
        "70mb",
        "--maxmemory-policy",
        "noeviction",
        // As compose runs it.
        "--appendfsync",
        "everysec",
        "--stream-node-max-bytes",
        "1024",
    ]);
    let graph = FakeGraph::start();
    let per_minute = |n: u32| (n * COMPRESSION).to_string();
    let gw = cloud::start_on(
        &redis.url(),
        &graph,
        &[
            ("WEBCHAT_DEMO", "false".into()),
            ("TRUSTED_PROXY_HEADER", "X-Forwarded-For".into()),
            ("MAX_MEDIA_MB", "1".into()),
            ("MEDIA_CAP_MB", "1".into()),
            // Today's defaults, 30× (a minute stands for 30).
            ("RATE_LIMIT_PER_CONTACT", per_minute(10)),
            ("RATE_LIMIT_GLOBAL", per_minute(100)),
            ("RATE_LIMIT_VISITORS", per_minute(100)),
            ("HTTP_RATE_LIMIT_PER_ADDRESS", per_minute(600)),
            (
                "WEBCHAT_VISITORS_PER_HOUR",
                VISITORS_PER_ADDRESS.to_string(),
            ),
            ("REDIS_HIGH_WATER_PERCENT", HIGH_WATER_PERCENT.to_string()),
            // Its default (10 minutes), 30× shorter.
            (
                "WEBCHAT_UNANSWERED_TTL_SECS",
                (600 / COMPRESSION).to_string(),
            ),
        ],
    )
    .await;
    // The real brain answers everyone (its model: the fake, in a word), within the visitors'
    // default daily allowance (300,000 tokens): the fake counts 120 tokens an answer where a
    // post of 4,096 characters costs at least 1,000 (a quarter of its characters, before the
    // system prompt), so the allowance is scaled alike — some 300 answers a day.
    let (_brain, _fake, _db) = brain(
        &gw,
        &redis.url(),
        &[("VISITOR_DAILY_TOKENS", &(300_000 * 120 / 1000).to_string())],
    )
    .await;

    let address = |i: usize| format!("10.0.{}.{}", i / 250, i % 250 + 1);
    let longest = serde_json::json!({"text": "x".repeat(4096)}).to_string();
    let statuses = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        String,
        u64,
    >::new()));
    let count = {
        let statuses = statuses.clone();
        move |what: String| *statuses.lock().unwrap().entry(what).or_default() += 1
    };
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let total = ADDRESSES * VISITORS_PER_ADDRESS;
    // Paced so the 20,000 visitors spread over the run.
    let mut tick = tokio::time::interval(RUN / total as u32);
    let started = Instant::now();
    let mut customer_ids = Vec::new();
    let mut next_customer = Instant::now();
    let mut peak = 0u64;
    // The last measurement runs a Lua scan over every key: longer than the client's default
    // half-second response timeout while the machine is busy.
    let mut conn = redis::Client::open(gw.redis.as_str())
        .unwrap()
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(Duration::from_secs(60))),
        )
        .await
        .unwrap();
    for n in 0..total {
        tick.tick().await;
        if Instant::now() >= next_customer {
            let id = format!("wamid.ATTACK{}", customer_ids.len());
            assert_eq!(
                gw.deliver(&fresh_text(&id, "is my order on its way?"))
                    .await,
                200,
                "WhatsApp's delivery refused during the attack"
            );
            customer_ids.push(id);
            next_customer += Duration::from_secs(5);
            peak = peak.max(memory(&mut conn).await.0);
        }
        // A new visitor from the next address, and its post.
        let from = address(n % ADDRESSES);
        let (http, public, body, count) = (
            gw.http.clone(),
            gw.public.clone(),
            longest.clone(),
            count.clone(),
        );
        let permit = in_flight.clone().acquire_owned().await.unwrap();
        tokio::spawn(async move {
            let r = http
                .post(format!("{public}/chat/api/visitors"))
                .header("x-forwarded-for", &from)
                .send()
                .await;
            let Ok(r) = r else {
                return count("visitor: error".into());
            };
            count(format!("visitor: {}", r.status().as_u16()));
            let Ok(v) = r.json::<serde_json::Value>().await else {
                return;
            };
            let (Some(visitor), Some(token)) = (v["visitor"].as_str(), v["token"].as_str()) else {
                return;
            };
            let r = http
                .post(format!("{public}/chat/api/{visitor}/messages"))
                .bearer_auth(token)
                .header("x-forwarded-for", &from)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            match r {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    let outcome = body["status"].as_str().unwrap_or("-").to_owned();
                    count(format!("post: {status} {outcome}"));
                }
                Err(_) => count("post: error".into()),
            }
            drop(permit);
        });
    }
    let _ = in_flight.acquire_many(IN_FLIGHT as u32).await.unwrap();
    let elapsed = started.elapsed();
    let mut streams = String::new();
    for st in ["inbound", "outbound"] {
        let key = format!("{{{}}}:v1:{st}", gw.prefix());
        let n: u64 = redis::cmd("XLEN")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let b: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        streams += &format!(
            "{st}: {n} entries, {:.1} MB; ",
            b.unwrap_or(0) as f64 / 1_048_576.0
        );
    }
    eprintln!(
        "at the end of the attack: used {:.1} MB; {streams}{:?}",
        memory(&mut conn).await.0 as f64 / 1_048_576.0,
        snapshot(&gw).await
    );
    let statuses = statuses.lock().unwrap().clone();
    eprintln!("attack: {total} visitors and posts in {elapsed:?}: {statuses:#?}");
    let refused = statuses
        .iter()
        .filter(|(k, _)| k.contains("503"))
        .map(|(_, n)| n)
        .sum::<u64>();
    assert!(
        statuses.get("visitor: 201").copied().unwrap_or(0) > total as u64 / 2,
        "most of the visitors the limit allows were opened: {statuses:?}"
    );
    assert!(
        statuses.get("post: 202 accepted").copied().unwrap_or(0) > 0,
        "the attack reached the brain: {statuses:?}"
    );

    // Every WhatsApp message is answered.
    let answered = || {
        graph
            .posted()
            .into_iter()
            .filter(|b| b["type"] == "text" && b["to"] == cloud::CUSTOMER)
            .count()
    };
    let all = shared::testing::wait_for(Duration::from_secs(120), async || {
        (answered() >= customer_ids.len()).then_some(())
    })
    .await;
    assert!(
        all.is_some(),
        "{} of {} WhatsApp messages answered\n{}",
        answered(),
        customer_ids.len(),
        gw.proc.log_text()
    );

    // A legitimate visitor, from an address of its own, is served: once what the attack left
    // unanswered has expired (WEBCHAT_UNANSWERED_TTL_SECS) Redis is back under its mark — within
    // minutes, not the week a history used to live.
    let attack_over = Instant::now();
    let deadline = attack_over + Duration::from_secs(u64::from(600 / COMPRESSION) + 60);
    let r = loop {
        let r = gw
            .http
            .post(format!("{}/chat/api/visitors", gw.public))
            .header("x-forwarded-for", "192.0.2.1")
            .send()
            .await
            .unwrap();
        if r.status() != 503 {
            break r;
        }
        assert!(Instant::now() < deadline, "the web chat never reopened");
        // Each try creates a visitor (stored, and under the address's own limit): paced.
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let reopened = attack_over.elapsed();
    assert_eq!(r.status(), 201, "a legitimate visitor refused");
    let v: serde_json::Value = r.json().await.unwrap();
    let (visitor, token) = (v["visitor"].as_str().unwrap(), v["token"].as_str().unwrap());
    let messages = gw.api(visitor, "messages");
    let deadline = Instant::now() + Duration::from_secs(90);
    let taken = loop {
        let r = gw
            .http
            .post(&messages)
            .bearer_auth(token)
            .header("x-forwarded-for", "192.0.2.1")
            .json(&serde_json::json!({"text": "do you ship to Canada?"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "the legitimate visitor's post refused");
        let body: serde_json::Value = r.json().await.unwrap();
        if body["status"] == "accepted" {
            break body["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "never taken: {body}");
        // Each try is a post the visitor's rate limit counts: one a second.
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    until("the legitimate visitor answered", T, async || {
        let list: Vec<serde_json::Value> = gw
            .http
            .get(&messages)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list.iter()
            .any(|m| m["direction"] == "out" && m["in_reply_to"] == taken.as_str())
    })
    .await;

    let (used, redis_peak) = memory(&mut conn).await;
    let (histories, n_histories) = usage(&gw, "wc:h:*").await;
    let unanswered = ttls(&gw, "wc:h:*")
        .await
        .iter()
        .filter(|(_, ttl)| *ttl <= 600_000)
        .count();
    eprintln!(
        "Redis after the attack: used {:.1} MB, peak {:.1} MB (sampled during it {:.1} MB) of {} MB, \
         high-water mark {} MB; {n_histories} histories ({unanswered} unanswered), {:.1} MB",
        used as f64 / 1_048_576.0,
        redis_peak as f64 / 1_048_576.0,
        peak as f64 / 1_048_576.0,
        MAXMEMORY / 1_048_576,
        MAXMEMORY * HIGH_WATER_PERCENT / 100 / 1_048_576,
        histories as f64 / 1_048_576.0,
    );
    // What outlives the attack's unanswered histories: records, and the histories the bot
    // answered in. Were the attack's histories kept for days (as they were), the web chat would
    // stay shut for as long.
    let unanswered_ms = i64::from(600 / COMPRESSION) * 1000;
    let lasting: u64 = redis::cmd("EVAL")
        .arg(
            "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do \
               local ttl = redis.call('PTTL', k) \
               if ttl < 0 or ttl > tonumber(ARGV[2]) then \
                 n = n + (redis.call('MEMORY', 'USAGE', k, 'SAMPLES', 0) or 0) end end return n",
        )
        .arg(0)
        .arg(format!("{{{}}}:*", gw.prefix()))
        .arg(unanswered_ms)
        .query_async(&mut conn)
        .await
        .unwrap();
    eprintln!(
        "the web chat refused {refused} requests (503) during the attack and took new visitors \
         again {reopened:?} after it; {:.1} MB outlive the attack's unanswered histories",
        lasting as f64 / 1_048_576.0
    );
    assert!(
        lasting < MAXMEMORY * HIGH_WATER_PERCENT / 100 / 2,
        "the attack leaves {lasting} bytes for longer than WEBCHAT_UNANSWERED_TTL_SECS"
    );
    assert!(
        redis_peak < MAXMEMORY,
        "Redis reached its maxmemory ({redis_peak} bytes)"
    );
    assert!(
        gw.metrics().await.contains("gateway_redis_high_water 0"),
        "the gauge shows it under"
    );
}
