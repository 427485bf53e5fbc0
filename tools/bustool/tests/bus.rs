//! The bus against real Redis, with consumers in separate processes where the behaviour
//! crosses process boundaries (crash, kill -9, SIGTERM).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bustool::{Behaviour, TestHandler};
use redis::AsyncCommands;
use shared::bus::{Bus, Delivery, HandleError, Handler, Publish, Stream};
use shared::config::{BusConfig, Dsn};
use shared::proto::{Envelope, Inbound, Payload};
use shared::testing::{
    KeyPrefix, RedisServer, ServiceProcess, TempDir, free_port, redis_url, unique_prefix,
};

const WORKER: &str = env!("CARGO_BIN_EXE_bus-worker");

struct Harness {
    url: String,
    prefix: String,
    bus: Bus,
    dir: TempDir,
    _keys: KeyPrefix,
}

impl Harness {
    fn new() -> Self {
        Self::on(redis_url())
    }

    fn on(url: String) -> Self {
        let prefix = unique_prefix();
        let bus = Bus::with_parts(&Dsn::new(url.clone()), &prefix, fast_config(), "test").unwrap();
        Self {
            _keys: KeyPrefix::of(&url, &prefix),
            url,
            prefix,
            bus,
            dir: TempDir::new("bus"),
        }
    }

    fn worker(&self, extra: &[(&str, &str)]) -> ServiceProcess {
        self.worker_at("127.0.0.1:1", extra)
    }

    /// A worker whose internal listener is `http` (with `WORKER_HTTP_ADDR` among `extra`).
    fn worker_at(&self, http: &str, extra: &[(&str, &str)]) -> ServiceProcess {
        let mut env: HashMap<String, String> = HashMap::from([
            ("REDIS_URL".into(), self.url.clone()),
            ("STREAM_PREFIX".into(), self.prefix.clone()),
            ("RECLAIM_IDLE_SECS".into(), "2".into()),
            ("BUS_RETRY_BASE_MS".into(), "20".into()),
            ("SHUTDOWN_GRACE_SECS".into(), "10".into()),
            (
                "DATA_DIR".into(),
                self.dir.path().join("data").display().to_string(),
            ),
            ("RUST_LOG".into(), "info".into()),
        ]);
        for (k, v) in extra {
            env.insert((*k).into(), (*v).into());
        }
        ServiceProcess::spawn(WORKER, &env, http, self.dir.path())
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    async fn publish_inbound(&self, chats: usize, per_chat: usize) -> Vec<String> {
        let mut events = Vec::new();
        for i in 0..per_chat {
            for c in 0..chats {
                events.push(Publish::ordered(
                    Stream::Inbound,
                    inbound(&format!("chat-{c}"), i),
                    format!("chat-{c}"),
                ));
            }
        }
        let ids: Vec<String> = events.iter().map(|p| p.envelope.event_id.clone()).collect();
        for chunk in events.chunks(500) {
            self.bus.publisher().publish_batch(chunk).await.unwrap();
        }
        ids
    }

    async fn publish_unordered(&self, n: usize) -> Vec<String> {
        let events: Vec<Publish> = (0..n)
            .map(|i| Publish::new(Stream::Inbound, inbound("any", i)))
            .collect();
        let ids = events.iter().map(|p| p.envelope.event_id.clone()).collect();
        for chunk in events.chunks(500) {
            self.bus.publisher().publish_batch(chunk).await.unwrap();
        }
        ids
    }

    async fn handled(&self) -> HashMap<String, u64> {
        self.conn()
            .await
            .hgetall(self.bus.keys().key("test:handled"))
            .await
            .unwrap()
    }

    async fn len(&self, key: &str) -> u64 {
        redis::cmd("XLEN")
            .arg(key)
            .query_async(&mut self.conn().await)
            .await
            .unwrap()
    }

    async fn outbound_len(&self) -> u64 {
        self.len(&self.bus.keys().stream(Stream::Outbound)).await
    }

    async fn dlq_len(&self, s: Stream) -> u64 {
        self.len(&self.bus.keys().dlq(s)).await
    }

    async fn wait_started(&self, workers: &[&ServiceProcess]) {
        for w in workers {
            let ok = wait_until(Duration::from_secs(20), || async {
                w.log_text().contains("consumer started")
            })
            .await;
            assert!(ok, "worker did not start:\n{}", w.log_text());
        }
    }
}

fn fast_config() -> BusConfig {
    BusConfig {
        reclaim_idle: Duration::from_secs(2),
        retry_base: Duration::from_millis(10),
        retry_max: Duration::from_millis(100),
        block: Duration::from_millis(200),
        ..Default::default()
    }
}

fn inbound(chat: &str, seq: usize) -> Envelope {
    Envelope::new(
        "test",
        Payload::Inbound(Inbound {
            message_id: shared::ids::new_id(),
            chat_id: chat.to_owned(),
            text: format!("message {seq}"),
            ..Default::default()
        }),
    )
}

/// Whether `f` came true within `timeout`.
async fn wait_until<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    shared::testing::wait_for(timeout, async || f().await.then_some(()))
        .await
        .is_some()
}

/// Each chat's events (published round-robin over `chats` chats) were handled in order.
async fn assert_handled_in_order(h: &Harness, ids: &[String], chats: usize) {
    let mut conn = h.conn().await;
    for c in 0..chats {
        let order: Vec<String> = conn
            .lrange(h.bus.keys().key(&format!("test:order:chat-{c}")), 0, -1)
            .await
            .unwrap();
        let expected: Vec<String> = ids.iter().skip(c).step_by(chats).cloned().collect();
        assert_eq!(order, expected, "chat-{c} out of order");
    }
}

async fn pending(h: &Harness, s: Stream) -> u64 {
    h.bus.stats(s).await.unwrap().pending
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_handled_and_acked_exactly_once_across_two_processes() {
    let h = Harness::new();
    h.bus.ensure_group(Stream::Inbound).await.unwrap();
    let a = h.worker(&[("WORKER_SLEEP_MS", "1")]);
    let b = h.worker(&[("WORKER_SLEEP_MS", "1")]);
    h.wait_started(&[&a, &b]).await;
    let ids = h.publish_inbound(40, 25).await;

    let done = wait_until(Duration::from_secs(60), || async {
        h.outbound_len().await >= 1000
    })
    .await;
    assert!(done, "only {} of 1000 answered", h.outbound_len().await);
    // Every entry acknowledged: nothing can be handled again, the counts are final.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            pending(&h, Stream::Inbound).await == 0
        })
        .await
    );

    let handled = h.handled().await;
    assert_eq!(handled.len(), ids.len());
    for id in &ids {
        assert_eq!(
            handled.get(id),
            Some(&1),
            "event {id} handled {:?} times",
            handled.get(id)
        );
    }
    assert_eq!(
        h.outbound_len().await,
        1000,
        "an answer was published twice"
    );
    assert_eq!(pending(&h, Stream::Inbound).await, 0);
    // Both processes took a share of the work.
    let answers: redis::streams::StreamRangeReply = h
        .conn()
        .await
        .xrange_all(h.bus.keys().stream(Stream::Outbound))
        .await
        .unwrap();
    let mut by_worker: HashMap<String, usize> = HashMap::new();
    for a in &answers.ids {
        let env: Envelope =
            prost::Message::decode(a.get::<Vec<u8>>("e").unwrap().as_slice()).unwrap();
        if let Some(Payload::Outbound(o)) = env.payload {
            *by_worker.entry(o.text).or_default() += 1;
        }
    }
    assert_eq!(by_worker.len(), 2, "{by_worker:?}");
    // Each chat's messages were handled in the order they were published.
    assert_handled_in_order(&h, &ids, 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_mid_handle_is_taken_over_within_the_reclaim_timeout() {
    let h = Harness::new();
    h.bus.ensure_group(Stream::Inbound).await.unwrap();
    let mut slow = h.worker(&[("WORKER_SLEEP_MS", "600000")]);
    h.wait_started(&[&slow]).await;
    let ids = h.publish_inbound(1, 1).await;
    // The slow worker holds it.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            pending(&h, Stream::Inbound).await == 1
        })
        .await
    );
    let healthy = h.worker(&[]);
    h.wait_started(&[&healthy]).await;
    slow.kill9();
    let killed_at = Instant::now();
    let done = wait_until(Duration::from_secs(10), || async {
        h.outbound_len().await == 1
    })
    .await;
    let took = killed_at.elapsed();
    assert!(done, "never taken over");
    assert!(took <= Duration::from_secs(2 + 2), "took {took:?}");
    assert_eq!(h.handled().await.get(&ids[0]), Some(&1));
    assert!(
        wait_until(Duration::from_secs(5), || async {
            pending(&h, Stream::Inbound).await == 0
        })
        .await
    );
}

/// The stall a SIGKILL used to cause: the survivor read a contact's later messages, then took
/// over its earlier ones from the dead consumer — and queued them behind the later ones,
/// which waited for them forever, holding every read slot so nothing else was read either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_whose_first_messages_died_with_their_consumer_is_answered_in_order() {
    let h = Harness::new();
    h.bus.ensure_group(Stream::Inbound).await.unwrap();
    let mut dying = h.worker(&[
        ("WORKER_SLEEP_MS", "600000"),
        ("BUS_CONCURRENCY", "5"),
        ("BUS_BATCH", "5"),
    ]);
    h.wait_started(&[&dying]).await;
    // Ten messages from each of ten contacts; the dying consumer takes the first message of
    // contacts 0 to 4 and sits on them.
    let ids = h.publish_inbound(10, 10).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            pending(&h, Stream::Inbound).await == 5
        })
        .await
    );
    // The survivor reads the rest until the later messages of contacts 0 to 4 fill its few
    // slots, waiting for their turn (bounded read-ahead: it reads no more for now).
    let survivor = h.worker(&[("BUS_CONCURRENCY", "8"), ("WORKER_SLEEP_MS", "1")]);
    h.wait_started(&[&survivor]).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            pending(&h, Stream::Inbound).await == 5 + 8
        })
        .await,
        "the survivor did not fill its slots"
    );
    // The point: with its slots full it handles no more for a while (nothing happens to
    // wait for).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.handled().await.len() < ids.len());
    dying.kill9();
    let killed_at = Instant::now();
    let done = wait_until(Duration::from_secs(30), || async {
        h.handled().await.len() == ids.len()
    })
    .await;
    let took = killed_at.elapsed();
    let handled = h.handled().await;
    assert!(
        done,
        "{} of {} messages never handled\n{}",
        ids.len() - handled.len(),
        ids.len(),
        survivor.log_text()
    );
    // RECLAIM_IDLE_SECS is 2: recovered within it plus 2 s.
    assert!(took <= Duration::from_secs(4), "recovery took {took:?}");
    for id in &ids {
        assert_eq!(handled.get(id), Some(&1), "event {id}");
    }
    assert_handled_in_order(&h, &ids, 10).await;
    assert!(
        wait_until(Duration::from_secs(5), || async {
            pending(&h, Stream::Inbound).await == 0
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_retried_and_its_contact_keeps_its_order() {
    let h = Harness::new();
    h.bus.ensure_group(Stream::Inbound).await.unwrap();
    let w = h.worker(&[("WORKER_PANIC_FIRST", "true")]);
    h.wait_started(&[&w]).await;
    let ids = h.publish_inbound(3, 4).await;
    let done = wait_until(Duration::from_secs(20), || async {
        h.handled().await.len() == ids.len()
    })
    .await;
    assert!(done, "not all handled:\n{}", w.log_text());
    let handled = h.handled().await;
    for id in &ids {
        assert_eq!(handled.get(id), Some(&1), "event {id}");
    }
    assert_handled_in_order(&h, &ids, 3).await;
    assert!(w.log_text().contains("handler panicked"));
    assert_eq!(h.dlq_len(Stream::Inbound).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_finishes_nothing_is_reported_stuck_and_exits_non_zero() {
    let h = Harness::new();
    h.bus.ensure_group(Stream::Inbound).await.unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut w = h.worker_at(
        &addr,
        &[
            ("WORKER_HTTP_ADDR", addr.as_str()),
            ("WORKER_SLEEP_MS", "600000"),
            ("WORKER_DEADLINE_MS", "500"),
            ("RECLAIM_IDLE_SECS", "1"),
            ("SHUTDOWN_GRACE_SECS", "1"),
        ],
    );
    assert!(
        w.wait_status("/healthz", 200, Duration::from_secs(20))
            .await
    );
    // Idle with nothing held is not stuck: the point is that the stuck window (500 ms of
    // deadline plus 1 s of reclaim time) passes without it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(w.wait_status("/healthz", 200, Duration::from_secs(1)).await);
    h.publish_inbound(1, 1).await;
    assert!(
        w.wait_status("/healthz", 503, Duration::from_secs(10))
            .await,
        "/healthz never 503:\n{}",
        w.log_text()
    );
    let status = shared::testing::eventually(
        "a stuck worker to exit",
        Duration::from_secs(20),
        async || w.child.try_wait().unwrap(),
    )
    .await;
    assert!(!status.success(), "exit {status:?}");
    let log = w.log_text();
    assert!(log.contains("consumer stuck"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_work_longer_than_the_reclaim_timeout_is_not_stolen() {
    let h = Harness::new();
    h.bus.ensure_group(Stream::Inbound).await.unwrap();
    let slow = h.worker(&[("WORKER_SLEEP_MS", "5000"), ("RECLAIM_IDLE_SECS", "1")]);
    h.wait_started(&[&slow]).await;
    let ids = h.publish_inbound(1, 1).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            pending(&h, Stream::Inbound).await == 1
        })
        .await
    );
    let other = h.worker(&[("RECLAIM_IDLE_SECS", "1")]);
    h.wait_started(&[&other]).await;
    assert!(
        wait_until(Duration::from_secs(15), || async {
            h.outbound_len().await >= 1
        })
        .await
    );
    // The point: past the reclaim time (1 s) nobody stole the slow entry (nothing happens
    // to wait for).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        h.handled().await.get(&ids[0]),
        Some(&1),
        "slow entry was stolen and handled twice"
    );
    assert_eq!(h.outbound_len().await, 1);
}

struct AlwaysFails(AtomicUsize);

impl Handler for AlwaysFails {
    async fn handle(&self, d: Delivery) -> Result<Vec<Publish>, HandleError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(HandleError::Retry(
            format!("upstream said no (attempt {})", d.deliveries).into(),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_always_fails_is_dead_lettered_after_max_deliveries_with_its_reason() {
    let h = Harness::new();
    let bus = Bus::with_parts(
        &Dsn::new(h.url.clone()),
        &h.prefix,
        BusConfig {
            max_deliveries: 3,
            ..fast_config()
        },
        "test",
    )
    .unwrap();
    let ids = h.publish_inbound(1, 1).await;
    let handler = Arc::new(AlwaysFails(AtomicUsize::new(0)));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(
        bus.consumer(Stream::Inbound, handler.clone())
            .run(shutdown.clone()),
    );
    assert!(
        wait_until(Duration::from_secs(10), || async {
            h.dlq_len(Stream::Inbound).await == 1
        })
        .await
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(handler.0.load(Ordering::SeqCst), 3);
    let dead = bus.dlq().list(Stream::Inbound, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].kind, shared::bus::DeadLetterKind::MaxDeliveries);
    assert_eq!(dead[0].deliveries, 3);
    assert!(
        dead[0].reason.contains("upstream said no (attempt 3)"),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[0].event_id.as_deref(), Some(ids[0].as_str()));
    assert_eq!(pending(&h, Stream::Inbound).await, 0);

    // Replay puts it back on the stream for another try.
    assert_eq!(bus.dlq().replay(Stream::Inbound, &[]).await.unwrap(), 1);
    assert_eq!(h.dlq_len(Stream::Inbound).await, 0);
    let ok = Arc::new(TestHandler {
        bus: bus.clone(),
        name: "ok".into(),
        behaviour: Behaviour {
            answer: true,
            record: true,
            ..Default::default()
        },
    });
    bus.consumer(Stream::Inbound, ok)
        .process_available()
        .await
        .unwrap();
    assert_eq!(h.handled().await.get(&ids[0]), Some(&1));
}

/// Fails on every delivery and, on the last, tells the customer (a notice on the outbound
/// stream) the way the brain and the transcriber do.
struct FailsThenTells {
    bus: Bus,
    calls: AtomicUsize,
    told: AtomicUsize,
}

impl Handler for FailsThenTells {
    async fn handle(&self, d: Delivery) -> Result<Vec<Publish>, HandleError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let failed = Err(HandleError::retry(
            "upstream",
            std::io::Error::other(format!("said no (attempt {})", d.deliveries)),
        ));
        d.tell_on_last(failed, |_| async {
            self.told.fetch_add(1, Ordering::SeqCst);
            self.bus
                .publisher()
                .publish(Publish::new(Stream::Outbound, inbound("told", 0)))
                .await
                .map(drop)
                .map_err(|e| HandleError::retry("cannot tell the customer", e))
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_customer_is_told_once_on_the_last_delivery_then_the_entry_is_dead_lettered() {
    let h = Harness::new();
    let bus = Bus::with_parts(
        &Dsn::new(h.url.clone()),
        &h.prefix,
        BusConfig {
            max_deliveries: 3,
            ..fast_config()
        },
        "test",
    )
    .unwrap();
    let ids = h.publish_inbound(1, 1).await;
    let handler = Arc::new(FailsThenTells {
        bus: bus.clone(),
        calls: AtomicUsize::new(0),
        told: AtomicUsize::new(0),
    });
    bus.consumer(Stream::Inbound, handler.clone())
        .process_available()
        .await
        .unwrap();
    assert_eq!(handler.calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        handler.told.load(Ordering::SeqCst),
        1,
        "told once, at the end"
    );
    assert_eq!(h.outbound_len().await, 1);
    let dead = bus.dlq().list(Stream::Inbound, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event_id.as_deref(), Some(ids[0].as_str()));
    assert_eq!(dead[0].kind, shared::bus::DeadLetterKind::Permanent);
    assert_eq!(dead[0].deliveries, 3);
    assert_eq!(
        dead[0].reason,
        "after 3 deliveries; the customer was told: upstream: said no (attempt 3)"
    );
    assert_eq!(pending(&h, Stream::Inbound).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_entries_are_dead_lettered_at_once_and_the_consumer_keeps_going() {
    let h = Harness::new();
    h.bus.ensure_group(Stream::Inbound).await.unwrap();
    let mut conn = h.conn().await;
    let key = h.bus.keys().stream(Stream::Inbound);
    let _: String = conn
        .xadd(&key, "*", &[("e", &b"\xff\x00garbage"[..])])
        .await
        .unwrap();
    let _: String = conn.xadd(&key, "*", &[("x", "no envelope")]).await.unwrap();
    let ids = h.publish_inbound(1, 1).await;
    let handler = Arc::new(TestHandler {
        bus: h.bus.clone(),
        name: "w".into(),
        behaviour: Behaviour {
            answer: true,
            record: true,
            ..Default::default()
        },
    });
    h.bus
        .consumer(Stream::Inbound, handler)
        .process_available()
        .await
        .unwrap();
    assert_eq!(h.handled().await.get(&ids[0]), Some(&1));
    let dead = h.bus.dlq().list(Stream::Inbound, 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    for d in &dead {
        assert_eq!(d.kind, shared::bus::DeadLetterKind::Undecodable);
        assert_eq!(d.deliveries, 1);
    }
    // Both are dead-lettered, in whichever order the consumer's concurrent handlers got to them.
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("protobuf")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("no envelope field")),
        "{reasons:?}"
    );
    // The original fields are kept.
    let raw: redis::streams::StreamRangeReply = conn
        .xrange_all(h.bus.keys().dlq(Stream::Inbound))
        .await
        .unwrap();
    assert!(
        raw.ids
            .iter()
            .any(|e| e.get::<Vec<u8>>("e").as_deref() == Some(&b"\xff\x00garbage"[..]))
    );
    assert!(
        raw.ids
            .iter()
            .any(|e| e.get::<String>("x").as_deref() == Some("no envelope"))
    );
    assert_eq!(pending(&h, Stream::Inbound).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_work_and_exits_zero() {
    let h = Harness::new();
    h.bus.ensure_group(Stream::Inbound).await.unwrap();
    let w = h.worker(&[("WORKER_SLEEP_MS", "1500")]);
    h.wait_started(&[&w]).await;
    let ids = h.publish_inbound(5, 1).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            pending(&h, Stream::Inbound).await == 5
        })
        .await
    );
    // Read is not started: give the five handlers (1.5 s each) time to begin, so all are in
    // flight when SIGTERM comes (entries still queued are released, not drained — CI caught
    // the test sending it before the last had started). Nothing tells when a handler began.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = w.terminate_async(Duration::from_secs(20)).await;
    assert!(
        status.0.is_some_and(|s| s.success()),
        "exit: {:?}\n{}",
        status.0,
        status.1.log_text()
    );
    let handled = h.handled().await;
    for id in &ids {
        assert_eq!(handled.get(id), Some(&1));
    }
    assert_eq!(pending(&h, Stream::Inbound).await, 0);
    assert_eq!(h.outbound_len().await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_with_aof_while_consuming_loses_nothing() {
    let mut server = RedisServer::start();
    let h = Harness::on(server.url());
    h.bus.ensure_group(Stream::Inbound).await.unwrap();
    let w = h.worker(&[("WORKER_SLEEP_MS", "20")]);
    h.wait_started(&[&w]).await;
    let first = h.publish_inbound(10, 30).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            !h.handled().await.is_empty()
        })
        .await
    );
    let before = h.handled().await.len();
    server.kill9();
    assert!(
        before > 0 && before < first.len(),
        "kill was not mid-consumption: {before} handled"
    );
    // The point: Redis stays down a while (the outage), then comes back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();
    // Publishing resumes once Redis is back (the publisher's connection reconnects).
    let mut second = Vec::new();
    let ok = wait_until(Duration::from_secs(10), || async {
        h.bus.ping().await.is_ok()
    })
    .await;
    assert!(ok);
    second.extend(h.publish_inbound(10, 10).await);
    let all: Vec<String> = first.into_iter().chain(second).collect();
    let done = wait_until(Duration::from_secs(60), || async {
        let handled = h.handled().await;
        all.iter().all(|id| handled.contains_key(id))
    })
    .await;
    let handled = h.handled().await;
    let missing = all.iter().filter(|id| !handled.contains_key(*id)).count();
    assert!(done, "{missing} of {} events never handled", all.len());
    assert!(
        wait_until(Duration::from_secs(20), || async {
            pending(&h, Stream::Inbound).await == 0
        })
        .await
    );
    assert_eq!(h.dlq_len(Stream::Inbound).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_ack_are_atomic_when_redis_refuses_writes() {
    // A private Redis with a memory cap and noeviction: when full, EXEC is refused as a whole,
    // so the answer is neither published nor the input acknowledged; once memory is available
    // both happen, exactly once.
    let server = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    let h = Harness::on(server.url());
    let ids = h.publish_inbound(1, 1).await;
    let handler = Arc::new(TestHandler {
        bus: h.bus.clone(),
        name: "w".into(),
        behaviour: Behaviour {
            answer: true,
            record: false,
            sleep: Duration::from_millis(1500),
            ..Default::default()
        },
    });
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(
        h.bus
            .consumer(Stream::Inbound, handler)
            .run(shutdown.clone()),
    );
    // The handler has the entry; while it works, memory fills up.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            pending(&h, Stream::Inbound).await == 1
        })
        .await
    );
    let mut conn = h.conn().await;
    let used: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .unwrap();
    let used: u64 = used
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used + 1024)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Fill memory up to the cap.
    for i in 0..10_000 {
        let r: redis::RedisResult<()> = conn
            .set(format!("{{{}}}:filler:{i}", h.prefix), "x".repeat(256))
            .await;
        if r.is_err() {
            break;
        }
    }
    // The point: with memory full, nothing gets through for a while (nothing happens to
    // wait for).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        h.outbound_len().await,
        0,
        "published although the ack was refused"
    );
    assert_eq!(
        pending(&h, Stream::Inbound).await,
        1,
        "acked although publishing was refused"
    );
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            pending(&h, Stream::Inbound).await == 0
        })
        .await
    );
    assert_eq!(h.outbound_len().await, 1);
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let _ = ids;
}

#[tokio::test]
async fn dead_letters_older_than_the_retention_are_trimmed() {
    let h = Harness::new();
    let key = h.bus.keys().dlq(Stream::Inbound);
    let mut conn = h.bus.connection();
    let day_ms = 86_400_000i64;
    let now = shared::ids::now_ms();
    for age_days in [30, 15, 13, 1] {
        let _: String = redis::cmd("XADD")
            .arg(&key)
            .arg(format!("{}-0", now - age_days * day_ms))
            .arg("dlq_reason")
            .arg(format!("{age_days} days old"))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let trimmed = shared::bus::trim_dead_letters(
        &mut conn,
        h.bus.keys(),
        Stream::Inbound,
        Duration::from_secs(14 * 86_400),
    )
    .await
    .unwrap();
    assert_eq!(trimmed, 2);
    let left: Vec<String> = h
        .bus
        .dlq()
        .list(Stream::Inbound, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.reason)
        .collect();
    assert_eq!(left, ["13 days old", "1 days old"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_with_a_backlog_keeps_every_unacknowledged_entry() {
    let h = Harness::new();
    h.bus.ensure_group(Stream::Inbound).await.unwrap();
    let ids = h.publish_unordered(3000).await; // nobody consuming yet
    let mut mgr = h.bus.connection();
    let trimmed = shared::bus::trim_acknowledged(&mut mgr, h.bus.keys(), Stream::Inbound)
        .await
        .unwrap();
    assert_eq!(trimmed, 0, "trimmed unconsumed entries");
    // A consumer handles some, then trimming removes exactly those.
    let handler = Arc::new(TestHandler {
        bus: h.bus.clone(),
        name: "w".into(),
        behaviour: Behaviour {
            record: true,
            ..Default::default()
        },
    });
    let bus_small = Bus::with_parts(
        &Dsn::new(h.url.clone()),
        &h.prefix,
        BusConfig {
            batch: 100,
            concurrency: 100,
            ..fast_config()
        },
        "test",
    )
    .unwrap();
    let mut conn = h.conn().await;
    // Read 100 and leave them pending (delivered, not acked) by another consumer.
    let _: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("brain")
        .arg("stuck")
        .arg("COUNT")
        .arg(100)
        .arg("STREAMS")
        .arg(h.bus.keys().stream(Stream::Inbound))
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    bus_small
        .consumer(Stream::Inbound, handler.clone())
        .process_available()
        .await
        .unwrap();
    let trimmed = shared::bus::trim_acknowledged(&mut mgr, h.bus.keys(), Stream::Inbound)
        .await
        .unwrap();
    assert_eq!(trimmed, 0, "entries after a pending one must stay");
    assert_eq!(h.handled().await.len(), 2900);
    // Once the stuck ones are handled (reclaimed), everything acked is trimmed.
    let _: () = redis::cmd("XCLAIM")
        .arg(h.bus.keys().stream(Stream::Inbound))
        .arg("brain")
        .arg("stuck")
        .arg(0)
        .arg("0-0")
        .arg("JUSTID")
        .query_async(&mut conn)
        .await
        .unwrap_or(());
    let ids_pending: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(h.bus.keys().stream(Stream::Inbound))
        .arg("brain")
        .arg("-")
        .arg("+")
        .arg(1000)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ids_pending.ids.len(), 100);
    let mut ack = redis::cmd("XCLAIM");
    ack.arg(h.bus.keys().stream(Stream::Inbound))
        .arg("brain")
        .arg("stuck")
        .arg(0);
    for p in &ids_pending.ids {
        ack.arg(&p.id);
    }
    ack.arg("IDLE").arg(60_000).arg("JUSTID");
    let _: Vec<String> = ack.query_async(&mut conn).await.unwrap();
    let reclaimer = Bus::with_parts(
        &Dsn::new(h.url.clone()),
        &h.prefix,
        BusConfig {
            reclaim_idle: Duration::from_secs(1),
            ..fast_config()
        },
        "test",
    )
    .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(
        reclaimer
            .consumer(Stream::Inbound, handler)
            .run(shutdown.clone()),
    );
    assert!(
        wait_until(Duration::from_secs(15), || async {
            h.handled().await.len() == ids.len()
        })
        .await
    );
    assert!(
        wait_until(Duration::from_secs(5), || async {
            pending(&h, Stream::Inbound).await == 0
        })
        .await
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let trimmed = shared::bus::trim_acknowledged(&mut mgr, h.bus.keys(), Stream::Inbound)
        .await
        .unwrap();
    assert_eq!(trimmed, 3000);
    let handled = h.handled().await;
    assert!(ids.iter().all(|id| handled.get(id) == Some(&1)));
}

#[tokio::test]
async fn media_is_read_only_from_this_deployments_media_store() {
    let h = Harness::new();
    let keys = h.bus.keys();
    let mut c = h.bus.connection();
    let item = keys.key("media:ab12");
    let other = keys.key("hashkey-lookalike");
    let _: () = redis::pipe()
        .set(&item, b"bytes".as_slice())
        .ignore()
        .set(&other, "a secret")
        .ignore()
        .query_async(&mut c)
        .await
        .unwrap();
    let at = |key: &str| shared::proto::MediaRef {
        key: key.to_owned(),
        ..Default::default()
    };
    assert_eq!(
        h.bus.read_media(&at(&item)).await.unwrap(),
        Some(b"bytes".to_vec())
    );
    assert_eq!(
        h.bus
            .read_media(&at(&keys.key("media:cd34")))
            .await
            .unwrap(),
        None
    );
    // An event naming any other key reads nothing.
    for key in [
        other.as_str(),
        "{other}:media:ab12",
        &keys.key("media:../x"),
    ] {
        assert_eq!(h.bus.read_media(&at(key)).await.unwrap(), None, "{key}");
    }
}
