//! Events out to the owner's webhook (`EVENTS_WEBHOOK_URL`): published on the events stream
//! as the services publish them, posted by the ledger's deliverer to a local receiver over
//! real HTTP — a receiver that fails, stalls, refuses one event for good, and recovers.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use shared::bus::{Bus, Stream};
use shared::config::{CommonConfig, Env, ServiceName};
use shared::events::{Events, Kind};
use shared::testing::{KeyPrefix, redis_url, unique_prefix};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request the receiver got: its headers that matter and its body.
#[derive(Debug, Clone)]
struct Got {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

/// How the receiver answers.
#[derive(Default)]
struct Behaviour {
    /// Answer 503 to this many requests first.
    fail_first: AtomicUsize,
    /// Stall (longer than the deliverer waits) on this many requests first.
    stall_first: AtomicUsize,
    /// Event types refused (500) every time.
    refuse: Mutex<HashSet<String>>,
}

struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
    how: Arc<Behaviour>,
}

impl Receiver {
    fn start() -> Self {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let how: Arc<Behaviour> = Arc::default();
        let (sink, h) = (got.clone(), how.clone());
        let app = axum::Router::new().route(
            "/events",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let (sink, h) = (sink.clone(), h.clone());
                async move {
                    let header = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    sink.lock().unwrap().push(Got {
                        id: header("webhook-id"),
                        timestamp: header("webhook-timestamp"),
                        signature: header("webhook-signature"),
                        body: body.to_vec(),
                    });
                    let take = |n: &AtomicUsize| {
                        n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
                            .is_ok()
                    };
                    if take(&h.stall_first) {
                        tokio::time::sleep(Duration::from_secs(12)).await;
                    }
                    if take(&h.fail_first) {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let kind = v["type"].as_str().unwrap_or_default().to_owned();
                    if h.refuse.lock().unwrap().contains(&kind) {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let addr = shared::testing::serve_on_own_thread(app);
        Self {
            url: format!("http://{addr}/events"),
            got,
            how,
        }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// The events taken (answered 2xx is not seen here: every request, in arrival order,
    /// each id once — its first arrival).
    fn ids_in_order(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for g in self.got() {
            if !seen.contains(&g.id) {
                seen.push(g.id);
            }
        }
        seen
    }
}

/// A receiver's check of a request, as README tells owners to write it.
fn verify(g: &Got) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", g.id, g.timestamp).as_bytes());
    mac.update(&g.body);
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    g.signature == format!("v1,{want}")
}

struct Rig {
    bus: Bus,
    events: Events,
    deliverer: Arc<ledger::events::Deliverer>,
    _keys: KeyPrefix,
}

impl Rig {
    fn new(receiver: &Receiver, extra: &[(&str, &str)]) -> Self {
        let prefix = unique_prefix();
        let mut pairs: Vec<(String, String)> = vec![
            ("STREAM_PREFIX".into(), prefix.clone()),
            ("REDIS_URL".into(), redis_url()),
            ("BUS_RETRY_BASE_MS".into(), "10".into()),
            ("BUS_RETRY_MAX_MS".into(), "50".into()),
            ("EVENTS_WEBHOOK_URL".into(), receiver.url.clone()),
            ("EVENTS_WEBHOOK_SECRET".into(), SECRET.into()),
        ];
        pairs.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let mut env = Env::from_pairs(pairs);
        let common = CommonConfig::from_env(&mut env, ServiceName::Ledger);
        env.finish().unwrap();
        let bus = Bus::new(&common).unwrap();
        let deliverer = ledger::events::Deliverer::new(
            common.events.url.clone().unwrap(),
            common.events.secret.clone().unwrap(),
        )
        .unwrap();
        Self {
            _keys: KeyPrefix::of(&redis_url(), &prefix),
            events: Events::new(common.events, "test"),
            bus,
            deliverer: Arc::new(deliverer),
        }
    }

    async fn publish(&self, kind: Kind, contact: Option<&str>, n: u32) -> String {
        let p = self
            .events
            .event(kind, contact, serde_json::json!({ "n": n }))
            .expect("wanted");
        let id = p.envelope.event_id.clone();
        self.bus.publisher().publish(p).await.unwrap();
        id
    }

    async fn deliver(&self) {
        self.bus
            .consumer(Stream::Events, self.deliverer.clone())
            .process_available()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn events_arrive_signed_in_order_per_conversation_through_failures() {
    let receiver = Receiver::start();
    let rig = Rig::new(&receiver, &[]);
    receiver.how.fail_first.store(3, Ordering::SeqCst);
    let a1 = rig.publish(Kind::MessageIn, Some("contact-a"), 1).await;
    let b1 = rig.publish(Kind::MessageIn, Some("contact-b"), 1).await;
    let a2 = rig.publish(Kind::MessageOut, Some("contact-a"), 2).await;
    let a3 = rig.publish(Kind::HandoffOpened, Some("contact-a"), 3).await;
    rig.deliver().await;

    let got = receiver.got();
    assert!(got.len() >= 4 + 3, "3 failures tried again: {}", got.len());
    assert!(
        got.iter().all(verify),
        "every request is signed with the secret"
    );
    let ids = receiver.ids_in_order();
    assert_eq!(ids.len(), 4, "each event, by its id: {ids:?}");
    assert!(ids.contains(&b1));
    // Contact a's events one after the other: each tried first only after the one before
    // it was taken (its last try).
    let first = |id: &String| got.iter().position(|g| &g.id == id).unwrap();
    let last = |id: &String| got.iter().rposition(|g| &g.id == id).unwrap();
    assert!(last(&a1) < first(&a2) && last(&a2) < first(&a3), "{got:?}");
    let body: serde_json::Value =
        serde_json::from_slice(&got.iter().find(|g| g.id == a3).unwrap().body).unwrap();
    assert_eq!(body["type"], "handoff.opened");
    assert_eq!(body["data"]["schema"], 1);
    assert_eq!(body["data"]["contact"], "contact-a");
    assert_eq!(body["data"]["n"], 3);
    let ts = body["timestamp"].as_str().unwrap();
    assert!(ts.parse::<jiff::Timestamp>().is_ok(), "RFC 3339: {ts}");
    let stats = rig.bus.stats(Stream::Events).await.unwrap();
    assert_eq!(stats.pending, 0, "every event acknowledged");
    assert_eq!(rig.bus.dlq().len(Stream::Events).await.unwrap(), 0);
}

#[tokio::test]
async fn a_refused_event_is_dead_lettered_and_the_conversation_goes_on_then_replays() {
    let receiver = Receiver::start();
    let rig = Rig::new(&receiver, &[("MAX_DELIVERIES", "3")]);
    receiver
        .how
        .refuse
        .lock()
        .unwrap()
        .insert("message.in".into());
    let refused = rig.publish(Kind::MessageIn, Some("contact-a"), 1).await;
    let later = rig.publish(Kind::MessageOut, Some("contact-a"), 2).await;
    rig.deliver().await;
    rig.deliver().await;

    let got = receiver.got();
    let tries = got.iter().filter(|g| g.id == refused).count();
    assert_eq!(tries, 3, "MAX_DELIVERIES tries, then the dead letters");
    let last_refused = got.iter().rposition(|g| g.id == refused).unwrap();
    let first_later = got.iter().position(|g| g.id == later);
    assert!(
        first_later.is_some_and(|l| l > last_refused),
        "the later event went on, after: {got:?}"
    );
    let dead = rig.bus.dlq().list(Stream::Events, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("500"),
        "the receiver's answer is the reason: {}",
        dead[0].reason
    );
    assert!(
        !dead[0].reason.contains("127.0.0.1"),
        "never the URL: {}",
        dead[0].reason
    );

    // The receiver recovers; the owner replays the dead letter from the console.
    receiver.how.refuse.lock().unwrap().clear();
    rig.bus
        .dlq()
        .replay(Stream::Events, &[dead[0].id.clone()])
        .await
        .unwrap();
    rig.deliver().await;
    let last = receiver.got().into_iter().rev().find(|g| g.id == refused);
    assert!(
        last.is_some_and(|g| verify(&g)),
        "replayed under the same id"
    );
    assert_eq!(rig.bus.dlq().len(Stream::Events).await.unwrap(), 0);
}

#[tokio::test]
async fn a_stalled_receiver_is_given_up_on_and_tried_again() {
    let receiver = Receiver::start();
    let rig = Rig::new(&receiver, &[]);
    receiver.how.stall_first.store(1, Ordering::SeqCst);
    let id = rig.publish(Kind::BudgetExceeded, None, 1).await;
    let started = std::time::Instant::now();
    rig.deliver().await;
    let tries = receiver.got().iter().filter(|g| g.id == id).count();
    assert_eq!(tries, 2, "the stalled try, then one that answered");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "not waited out"
    );
    assert_eq!(rig.bus.stats(Stream::Events).await.unwrap().pending, 0);
}

#[tokio::test]
async fn unwanted_kinds_and_a_full_stream_publish_nothing() {
    let receiver = Receiver::start();
    let rig = Rig::new(
        &receiver,
        &[("EVENTS", "message.in"), ("EVENTS_MAX_QUEUED", "100")],
    );
    let unwanted = rig
        .events
        .event(Kind::MessageOut, Some("c"), serde_json::json!({}));
    assert!(unwanted.is_none(), "EVENTS names message.in only");
    for n in 0..100 {
        rig.publish(Kind::MessageIn, Some("c"), n).await;
    }
    rig.events.look(&rig.bus).await;
    assert!(rig.events.full());
    assert!(
        rig.events
            .event(Kind::MessageIn, Some("c"), serde_json::json!({}))
            .is_none(),
        "dropped (and counted) while 100 wait"
    );
    rig.deliver().await;
    assert_eq!(receiver.ids_in_order().len(), 100);
    // Delivered and trimmed: room again.
    let mut c = rig.bus.connection();
    let _: () = redis::cmd("DEL")
        .arg(rig.bus.keys().stream(Stream::Events))
        .query_async(&mut c)
        .await
        .unwrap();
    rig.events.look(&rig.bus).await;
    assert!(!rig.events.full());
}

/// The code blocks of README's events section in `lang`, with a call that prints what `valid`
/// says of a request the deliverer signed (and of one with a bad signature).
fn readme_check(lang: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = &readme[readme.find("## Events to your other tools").unwrap()..];
    let start = section.find(&format!("```{lang}\n")).unwrap() + lang.len() + 4;
    let code = &section[start..start + section[start..].find("```").unwrap()];
    let key = shared::events::decode_secret(SECRET).unwrap();
    let body = r#"{"type":"message.in","data":{"schema":1}}"#;
    let sig = shared::events::sign(&key, "evt-1", 1_765_000_000, body.as_bytes());
    match lang {
        "python" => format!(
            "{code}\nh = {{'webhook-id': 'evt-1', 'webhook-timestamp': '1765000000', 'webhook-signature': '{sig}'}}\n\
             print(valid('{SECRET}', h, b'{body}'))\nh['webhook-signature'] = 'v1,AAAA'\nprint(valid('{SECRET}', h, b'{body}'))\n"
        ),
        _ => format!(
            "{code}\nconst h = {{'webhook-id': 'evt-1', 'webhook-timestamp': '1765000000', 'webhook-signature': '{sig}'}};\n\
             console.log(valid('{SECRET}', h, Buffer.from('{body}')) ? 'True' : 'False');\nh['webhook-signature'] = 'v1,AAAA';\n\
             console.log(valid('{SECRET}', h, Buffer.from('{body}')) ? 'True' : 'False');\n"
        ),
    }
}

#[test]
fn readmes_python_and_javascript_checks_accept_our_signature_and_refuse_a_bad_one() {
    for (lang, program, flag) in [("python", "python3", "-c"), ("js", "node", "-e")] {
        let out = std::process::Command::new(program)
            .arg(flag)
            .arg(readme_check(lang))
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{lang}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.trim(), "True\nFalse", "{lang}");
    }
}

#[tokio::test]
async fn an_unreachable_receiver_is_dead_lettered_without_its_url() {
    let receiver = Receiver::start();
    let closed = shared::testing::free_port();
    let mut rig = Rig::new(&receiver, &[("MAX_DELIVERIES", "2")]);
    rig.deliverer = Arc::new(
        ledger::events::Deliverer::new(
            format!("http://127.0.0.1:{closed}/hook/tok3n-secret?key=s3cret").into(),
            shared::events::decode_secret(SECRET).unwrap().into(),
        )
        .unwrap(),
    );
    rig.publish(Kind::MessageIn, Some("c"), 1).await;
    rig.deliver().await;
    let dead = rig.bus.dlq().list(Stream::Events, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    let reason = &dead[0].reason;
    assert!(
        !reason.contains("tok3n") && !reason.contains("s3cret") && !reason.contains("127.0.0.1"),
        "{reason}"
    );
}
