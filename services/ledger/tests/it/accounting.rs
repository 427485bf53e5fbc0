//! Pricing, storage, daily totals, alerts and the budget mark, against real Redis and the
//! database under test, through the real consumer.

use std::sync::Arc;

use ledger::{Config, Ledger};
use prost::Message;
use redis::AsyncCommands;
use shared::bus::{Bus, Publish, Stream};
use shared::clock::ManualClock;
use shared::config::{CommonConfig, Env, ServiceName};
use shared::proto::usage_record::Operation;
use shared::proto::{Envelope, Outbound, Payload, UsageRecord, identity, outbound};
use shared::testing::{KeyPrefix, TestDb, redis_url, unique_prefix};
use shared::usage::{self, Usd, is_over_budget};

/// 2026-11-25 12:00 UTC.
const NOON: i64 = 1_795_608_000_000;
const DAY_MS: i64 = 86_400_000;

struct T {
    db: TestDb,
    bus: Bus,
    prefix: String,
    clock: ManualClock,
    ledger: Arc<Ledger>,
    hooks: shared::testing::WebhookSink,
    _keys: KeyPrefix,
}

impl T {
    async fn new(vars: &[(&str, &str)]) -> Self {
        let db = TestDb::new().await;
        db.db.migrate().await.unwrap();
        let prefix = unique_prefix();
        let hooks = shared::testing::WebhookSink::start();
        let hook = hooks.url.clone();
        let mut pairs: Vec<(String, String)> = vec![
            ("STREAM_PREFIX".into(), prefix.clone()),
            ("REDIS_URL".into(), redis_url()),
            ("ALERT_WEBHOOK_URL".into(), hook),
            ("BUS_RETRY_BASE_MS".into(), "10".into()),
        ];
        pairs.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let mut env = Env::from_pairs(pairs);
        let common = CommonConfig::from_env(&mut env, ServiceName::Ledger);
        let cfg = Config::load(&mut env, &common);
        env.finish().unwrap();
        let bus = Bus::new(&common).unwrap();
        let clock = ManualClock::at(NOON);
        let events = shared::events::Events::new(common.events.clone(), "ledger");
        let ledger = Ledger::with_events(
            db.db.clone(),
            bus.clone(),
            cfg,
            Arc::new(clock.clone()),
            events,
        );
        Self {
            _keys: KeyPrefix::of(&redis_url(), &prefix),
            db,
            bus,
            prefix,
            clock,
            ledger,
            hooks,
        }
    }

    async fn send(&self, records: &[UsageRecord]) {
        let events: Vec<Publish> = records
            .iter()
            .map(|u| {
                Publish::new(
                    Stream::Usage,
                    Envelope::new("test", Payload::Usage(u.clone())),
                )
            })
            .collect();
        self.bus.publisher().publish_batch(&events).await.unwrap();
        self.bus
            .consumer(Stream::Usage, self.ledger.clone())
            .process_available()
            .await
            .unwrap();
    }

    async fn alerts(&self) -> Vec<Outbound> {
        let mut conn = self.bus.connection();
        let r: redis::streams::StreamRangeReply = conn
            .xrange_all(self.bus.keys().stream(Stream::Outbound))
            .await
            .unwrap();
        r.ids
            .iter()
            .filter_map(|e| {
                let env = Envelope::decode(e.get::<Vec<u8>>("e").unwrap().as_slice()).unwrap();
                match env.payload {
                    Some(Payload::Outbound(o)) => Some(o),
                    _ => None,
                }
            })
            .collect()
    }
}

fn chat(id: &str, model: &str, prompt: u64, completion: u64, at_ms: i64) -> UsageRecord {
    UsageRecord {
        usage_id: id.to_owned(),
        contact_id: "contact-a".into(),
        requested_model: model.to_owned(),
        response_model: model.to_owned(),
        operation: Operation::Chat as i32,
        prompt_tokens: prompt,
        completion_tokens: completion,
        at_ms,
        latency_ms: 800,
        ..Default::default()
    }
}

/// $0.50 of gpt-4o input.
fn half_dollar(id: &str, contact: &str, at_ms: i64) -> UsageRecord {
    UsageRecord {
        contact_id: contact.to_owned(),
        ..chat(id, "gpt-4o", 200_000, 0, at_ms)
    }
}

#[tokio::test]
async fn every_default_model_is_priced_from_the_table_and_stored_once() {
    let t = T::new(&[]).await;
    let whisper = UsageRecord {
        usage_id: "u3".into(),
        requested_model: "whisper-1".into(),
        operation: Operation::Transcription as i32,
        audio_seconds: 30.4,
        at_ms: NOON,
        ..Default::default()
    };
    t.send(&[
        chat("u1", "gpt-4o", 1_000, 500, NOON),
        UsageRecord {
            response_model: "gpt-4o-mini-2024-07-18".into(),
            ..chat("u2", "gpt-4o-mini", 10_000, 2_000, NOON)
        },
        whisper.clone(),
    ])
    .await;
    // Redelivered (a new envelope with the same usage id): not counted twice.
    t.send(&[chat("u1", "gpt-4o", 1_000, 500, NOON), whisper])
        .await;

    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT usage_id, priced_model, cost_pico_usd, audio_ms FROM usage_records ORDER BY usage_id",
    )
    .fetch_all(t.db.db.pool())
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            // 1000 × $2.50/1M + 500 × $10/1M = $0.0025 + $0.005
            (
                "u1".into(),
                "gpt-4o".into(),
                Usd::from_dollars(0.0075).pico(),
                0
            ),
            // 10000 × $0.15/1M + 2000 × $0.60/1M = $0.0015 + $0.0012
            (
                "u2".into(),
                "gpt-4o-mini".into(),
                Usd::from_dollars(0.0027).pico(),
                0
            ),
            // 30 s × $0.006/60 s
            (
                "u3".into(),
                "whisper-1".into(),
                Usd::from_dollars(0.003).pico(),
                30_400
            ),
        ]
    );
    let day = usage::totals(&t.db.db, "2026-11-25", "2026-11-25")
        .await
        .unwrap();
    assert_eq!(day.cost, Usd::from_dollars(0.0132));
    assert_eq!(day.records, 3);
    assert_eq!(day.prompt_tokens, 11_000);
}

#[tokio::test]
async fn sums_stay_exact_over_100000_small_records() {
    let t = T::new(&[]).await;
    // 100,000 one-token gpt-4o-mini calls: $0.00000015 each, $0.015 in all — exactly.
    let records: Vec<UsageRecord> = (0..100_000)
        .map(|i| UsageRecord {
            contact_id: format!("c{}", i % 7),
            ..chat(&format!("tiny-{i}"), "gpt-4o-mini", 1, 0, NOON)
        })
        .collect();
    let mut set = tokio::task::JoinSet::new();
    let ledger_cfg = Arc::new(records);
    for w in 0..4 {
        let db = t.db.db.clone();
        let recs = ledger_cfg.clone();
        set.spawn(async move {
            let prices = ledger::pricing::PriceTable::default();
            for u in recs.iter().skip(w).step_by(4) {
                let p = prices.price(
                    &u.requested_model,
                    &u.response_model,
                    u.prompt_tokens,
                    0,
                    0.0,
                );
                let r = ledger::store::Record {
                    usage_id: u.usage_id.clone(),
                    contact_id: Some(u.contact_id.clone()),
                    message_id: String::new(),
                    operation: "chat",
                    requested_model: u.requested_model.clone(),
                    response_model: u.response_model.clone(),
                    priced_model: p.model.unwrap(),
                    prompt_tokens: 1,
                    completion_tokens: 0,
                    audio_ms: 0,
                    cost: p.cost,
                    latency_ms: 1,
                    day: "2026-11-25".into(),
                    at_ms: NOON,
                };
                let th = ledger::store::Thresholds {
                    cost_alert: Usd::from_dollars(50.0),
                    contact_alert: None,
                    daily_budget: None,
                };
                ledger::store::store(&db, &r, th).await.unwrap();
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let total = usage::totals(&t.db.db, "2026-11-25", "2026-11-25")
        .await
        .unwrap();
    assert_eq!(total.records, 100_000);
    assert_eq!(total.cost, Usd::from_dollars(0.015));
    assert_eq!(total.cost.to_string(), "$0.015000");
    let top = usage::top_contacts(&t.db.db, "2026-11-25", "2026-11-25", 10)
        .await
        .unwrap();
    assert_eq!(top.len(), 7);
    let sum: i64 = top.iter().map(|(_, t)| t.cost.pico()).sum();
    assert_eq!(sum, Usd::from_dollars(0.015).pico());
}

#[tokio::test]
async fn unknown_models_are_stored_at_zero_cost_never_dropped() {
    // Without a budget: with one (the default), they are priced as the dearest known model.
    let t = T::new(&[("DAILY_BUDGET_USD", "0")]).await;
    t.send(&[chat("u1", "llama3:70b", 5_000, 5_000, NOON)])
        .await;
    let (model, cost): (String, i64) = sqlx::query_as(
        "SELECT priced_model, cost_pico_usd FROM usage_records WHERE usage_id = 'u1'",
    )
    .fetch_one(t.db.db.pool())
    .await
    .unwrap();
    assert_eq!((model.as_str(), cost), ("llama3:70b", 0));
}

#[tokio::test]
async fn days_roll_over_at_midnight_in_the_ledger_time_zone() {
    let t = T::new(&[
        ("LEDGER_TIMEZONE", "Asia/Tokyo"),
        ("COST_ALERT_USD", "0.75"),
    ])
    .await;
    // 2026-11-25 14:59 UTC is 23:59 in Tokyo; 15:01 UTC is already the 26th there.
    let before = NOON + 2 * 3_600_000 + 59 * 60_000;
    let after = NOON + 3 * 3_600_000 + 60_000;
    t.send(&[
        half_dollar("a", "c1", before),
        half_dollar("b", "c1", after),
    ])
    .await;
    let days: Vec<(String,)> = sqlx::query_as("SELECT day FROM usage_records ORDER BY usage_id")
        .fetch_all(t.db.db.pool())
        .await
        .unwrap();
    assert_eq!(days, vec![("2026-11-25".into(),), ("2026-11-26".into(),)]);
    // $0.50 on each day: the $0.75 alert is not reached on either.
    assert!(t.alerts().await.is_empty());
    assert!(t.hooks.got().is_empty());
}

#[tokio::test]
async fn a_crossing_alerts_once_a_day_by_log_webhook_and_whatsapp_to_every_admin() {
    let t = T::new(&[
        ("COST_ALERT_USD", "1"),
        ("ADMIN_NUMBERS", "+1 555 000 1111, 4915112345678"),
    ])
    .await;
    t.send(&[half_dollar("a", "c1", NOON)]).await;
    assert!(t.alerts().await.is_empty(), "no alert below the threshold");
    t.send(&[half_dollar("b", "c2", NOON + 1)]).await; // $1.00: crosses
    t.send(&[half_dollar("c", "c3", NOON + 2)]).await; // still over: no second alert
    let alerts = t.alerts().await;
    assert_eq!(alerts.len(), 2, "one WhatsApp alert per admin");
    let phones: Vec<String> = alerts
        .iter()
        .map(|o| o.identities[0].value.clone())
        .collect();
    assert_eq!(phones, ["+15550001111", "+4915112345678"]);
    for o in &alerts {
        assert_eq!(o.kind, outbound::Kind::Alert as i32);
        assert_eq!(o.identities[0].kind, identity::Kind::Phone as i32);
        assert!(
            o.text.contains("$1.000000") && o.text.contains("2026-11-25"),
            "{}",
            o.text
        );
    }
    {
        let hooks = t.hooks.got();
        assert_eq!(hooks.len(), 1);
        let h = &hooks[0];
        assert!(h["text"].as_str().unwrap().contains("Cost alert"), "{h}");
        assert_eq!(h["switchboard"]["kind"], "daily_cost");
        assert_eq!(h["switchboard"]["day"], "2026-11-25");
        assert_eq!(h["switchboard"]["threshold_usd"], "1.000000");
        assert_eq!(h["switchboard"]["spend_usd"], "1.000000");
        assert_eq!(h["switchboard"]["timezone"], "UTC");
    }
    // The next day starts over: crossing again alerts again.
    t.send(&[
        half_dollar("d", "c1", NOON + DAY_MS),
        half_dollar("e", "c2", NOON + DAY_MS + 1),
    ])
    .await;
    assert_eq!(t.alerts().await.len(), 4);
    assert_eq!(t.hooks.got().len(), 2);
}

#[tokio::test]
async fn a_redelivered_record_resends_its_alert_with_the_same_message_ids() {
    let t = T::new(&[("COST_ALERT_USD", "0.5"), ("ADMIN_NUMBERS", "+15550001111")]).await;
    t.send(&[half_dollar("a", "c1", NOON)]).await;
    t.send(&[half_dollar("a", "c1", NOON)]).await;
    let alerts = t.alerts().await;
    assert_eq!(alerts.len(), 2);
    assert_eq!(
        alerts[0].message_id, alerts[1].message_id,
        "the gateway dedupes on it"
    );
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM alerts_sent")
        .fetch_one(t.db.db.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn the_budget_mark_is_set_at_the_budget_warned_at_80_percent_and_clears_the_next_day() {
    let t = T::new(&[("DAILY_BUDGET_USD", "1.25"), ("COST_ALERT_USD", "100")]).await;
    t.send(&[
        half_dollar("a", "c1", NOON),
        half_dollar("b", "c2", NOON + 1),
    ])
    .await; // $1.00 = 80%
    assert!(!is_over_budget(&t.bus, "2026-11-25").await.unwrap());
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM alerts_sent ORDER BY kind")
        .fetch_all(t.db.db.pool())
        .await
        .unwrap();
    assert_eq!(kinds, ["budget_warning"]);
    t.send(&[half_dollar("c", "c3", NOON + 2)]).await; // $1.50 >= $1.25
    assert!(is_over_budget(&t.bus, "2026-11-25").await.unwrap());
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM alerts_sent ORDER BY kind")
        .fetch_all(t.db.db.pool())
        .await
        .unwrap();
    assert_eq!(kinds, ["budget_reached", "budget_warning"]);
    let hooks = t.hooks.got();
    assert!(
        hooks
            .iter()
            .any(|h| h["switchboard"]["kind"] == "budget_reached")
    );
    // The mark expires an hour after the day ends.
    let ttl: i64 = t
        .bus
        .connection()
        .pttl(usage::over_budget_key(t.bus.keys(), "2026-11-25"))
        .await
        .unwrap();
    let expected = 12 * 3_600_000 + 3_600_000; // from the ledger's clock at NOON
    assert!((ttl - expected).abs() < 60_000, "ttl {ttl} vs {expected}");
    // Next day: clear.
    t.clock.set(NOON + DAY_MS);
    assert!(!t.ledger.reconcile_budget().await.unwrap());
    assert!(!is_over_budget(&t.bus, "2026-11-26").await.unwrap());
}

#[tokio::test]
async fn with_no_budget_set_the_default_stops_paid_calls_at_5_dollars_and_0_means_no_cap() {
    let t = T::new(&[("COST_ALERT_USD", "100")]).await;
    let halves: Vec<UsageRecord> = (0..9)
        .map(|i| half_dollar(&format!("d{i}"), "c1", NOON + i))
        .collect();
    t.send(&halves).await; // $4.50
    assert!(!is_over_budget(&t.bus, "2026-11-25").await.unwrap());
    t.send(&[half_dollar("d9", "c2", NOON + 9)]).await; // $5.00
    assert!(is_over_budget(&t.bus, "2026-11-25").await.unwrap());
    // An unknown model spends the default budget too, at the dearest known price.
    let unknown = T::new(&[("COST_ALERT_USD", "100")]).await;
    unknown
        .send(&[chat("u1", "llama3:70b", 2_000_000, 0, NOON)])
        .await;
    assert!(is_over_budget(&unknown.bus, "2026-11-25").await.unwrap());

    let uncapped = T::new(&[("COST_ALERT_USD", "100"), ("DAILY_BUDGET_USD", "0")]).await;
    let many: Vec<UsageRecord> = (0..40)
        .map(|i| half_dollar(&format!("n{i}"), "c1", NOON + i))
        .collect();
    uncapped.send(&many).await; // $20
    assert!(!is_over_budget(&uncapped.bus, "2026-11-25").await.unwrap());
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM alerts_sent")
        .fetch_all(uncapped.db.db.pool())
        .await
        .unwrap();
    assert!(!kinds.iter().any(|k| k.starts_with("budget")), "{kinds:?}");
}

#[tokio::test]
async fn raising_the_budget_clears_todays_mark() {
    let low = T::new(&[("DAILY_BUDGET_USD", "0.5")]).await;
    low.send(&[half_dollar("a", "c1", NOON)]).await;
    assert!(is_over_budget(&low.bus, "2026-11-25").await.unwrap());
    // The operator raises the budget and restarts: the ledger reconciles at startup.
    let mut env = Env::from_pairs([
        ("STREAM_PREFIX", low.prefix.as_str()),
        ("DAILY_BUDGET_USD", "5"),
    ]);
    let common = CommonConfig::from_env(&mut env, ServiceName::Ledger);
    let cfg = Config::load(&mut env, &common);
    let raised = Ledger::new(
        low.db.db.clone(),
        low.bus.clone(),
        cfg,
        Arc::new(low.clock.clone()),
    );
    assert!(!raised.reconcile_budget().await.unwrap());
    assert!(!is_over_budget(&low.bus, "2026-11-25").await.unwrap());
}

#[tokio::test]
async fn one_contact_spending_too_much_raises_a_per_contact_alert() {
    let t = T::new(&[("CONTACT_ALERT_USD", "0.9"), ("COST_ALERT_USD", "100")]).await;
    t.send(&[
        half_dollar("a", "heavy", NOON),
        half_dollar("b", "light", NOON + 1),
    ])
    .await;
    assert!(t.hooks.got().is_empty());
    t.send(&[half_dollar("c", "heavy", NOON + 2)]).await;
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT kind, subject FROM alerts_sent")
        .fetch_all(t.db.db.pool())
        .await
        .unwrap();
    assert_eq!(rows, vec![("contact_cost".to_owned(), "heavy".to_owned())]);
    let hooks = t.hooks.got();
    assert_eq!(hooks.len(), 1);
    let contact = hooks[0]["switchboard"]["contact"].as_str().unwrap();
    assert_ne!(contact, "heavy", "contacts appear only as hashes");
    assert_eq!(contact, shared::redact::hash_id("heavy"));
}

#[tokio::test]
async fn records_that_are_not_usage_are_dead_lettered() {
    let t = T::new(&[]).await;
    let env = Envelope::new("test", Payload::Outbound(Outbound::default()));
    t.bus
        .publisher()
        .publish(Publish::new(Stream::Usage, env))
        .await
        .unwrap();
    t.send(&[]).await;
    let dead = t.bus.dlq().list(Stream::Usage, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].kind, shared::bus::DeadLetterKind::Permanent);
}

#[tokio::test]
async fn upgrading_to_day_totals_keeps_the_spend_already_recorded() {
    let t = TestDb::new().await;
    let dir = match t.db.backend() {
        shared::db::Backend::Sqlite => "../../migrations/sqlite",
        shared::db::Backend::Postgres => "../../migrations/postgres",
    };
    // A database as the release before day totals left it: only the first migration.
    let mut before = sqlx::migrate::Migrator::new(std::path::Path::new(dir))
        .await
        .unwrap();
    assert!(before.migrations.len() > 1);
    before.migrations = std::borrow::Cow::Owned(before.migrations[..1].to_vec());
    before.run(t.db.pool()).await.unwrap();
    for (day, contact, model, cost) in [
        ("2026-11-25", "a", "gpt-4o", 3_000_000i64),
        ("2026-11-25", "b", "gpt-4o", 4_000_000),
        ("2026-11-25", "b", "whisper-1", 500_000),
        ("2026-11-24", "a", "gpt-4o", 9_000_000),
    ] {
        sqlx::query(
            "INSERT INTO usage_daily (day, contact_id, priced_model, operation, cost_pico_usd, records) \
             VALUES ($1, $2, $3, 'chat', $4, 1)",
        )
        .bind(day)
        .bind(contact)
        .bind(model)
        .bind(cost)
        .execute(t.db.pool())
        .await
        .unwrap();
    }
    t.db.migrate().await.unwrap();
    assert_eq!(
        ledger::store::day_total(&t.db, "2026-11-25").await.unwrap(),
        Usd(7_500_000)
    );
    assert_eq!(
        ledger::store::day_total(&t.db, "2026-11-24").await.unwrap(),
        Usd(9_000_000)
    );
    assert_eq!(
        ledger::store::day_total(&t.db, "2026-11-23").await.unwrap(),
        Usd(0)
    );
}

#[tokio::test]
async fn records_stored_as_one_group_each_see_the_totals_before_them() {
    let t = T::new(&[]).await;
    let db = &t.db.db;
    let record = |id: &str, contact: &str, cents: f64| ledger::store::Record {
        usage_id: id.into(),
        contact_id: Some(contact.into()),
        message_id: String::new(),
        operation: "chat",
        requested_model: "gpt-4o-mini".into(),
        response_model: "gpt-4o-mini".into(),
        priced_model: "gpt-4o-mini".into(),
        prompt_tokens: 10,
        completion_tokens: 5,
        audio_ms: 0,
        cost: Usd::from_dollars(cents / 100.0),
        latency_ms: 1,
        day: "2026-11-25".into(),
        at_ms: NOON,
    };
    let thresholds = ledger::store::Thresholds {
        cost_alert: Usd::from_dollars(0.05),
        contact_alert: Some(Usd::from_dollars(0.04)),
        daily_budget: None,
    };
    let job = |r: ledger::store::Record| ledger::store::Job {
        record: r,
        thresholds,
        backend: db.backend(),
    };
    // Stored before the group: 1 cent by `a`.
    ledger::store::store(db, &record("u0", "a", 1.0), thresholds)
        .await
        .unwrap();
    let group = [
        job(record("u1", "a", 1.0)),
        job(record("u2", "b", 2.0)),
        job(record("u0", "a", 1.0)), // stored before: a redelivery
        job(record("u3", "a", 2.0)), // `a` reaches 4 cents, the day 6: both alerts
        job(record("u2", "b", 2.0)), // twice in the group
        job(record("u4", "b", 1.0)), // past the day's alert: raised once only
    ];
    let stored = ledger::store::store_all(db, &group).await.unwrap();
    let inserted: Vec<bool> = stored.iter().map(|s| s.inserted).collect();
    assert_eq!(inserted, [true, true, false, true, false, true]);
    let cents = |i: usize| (stored[i].day_total.as_f64() * 100.0).round();
    assert_eq!(
        [cents(0), cents(1), cents(3), cents(5)],
        [2.0, 4.0, 6.0, 7.0],
        "each record's total is the day's after it and the records before it"
    );
    let kinds = |i: usize| -> Vec<(&'static str, String)> {
        stored[i]
            .alerts
            .iter()
            .map(|a| (a.kind.as_str(), a.subject.clone()))
            .collect()
    };
    assert!(kinds(0).is_empty() && kinds(1).is_empty());
    assert_eq!(
        kinds(3),
        [
            ("contact_cost", "a".to_owned()),
            ("daily_cost", String::new())
        ]
    );
    assert!(kinds(5).is_empty(), "each alert is raised once a day");
    let total = usage::totals(db, "2026-11-25", "2026-11-25").await.unwrap();
    assert_eq!((total.records, total.cost), (5, Usd::from_dollars(0.07)));
    // Stored again later: nothing new, and the first delivery's alerts reported again.
    let again = ledger::store::store_all(db, &group[3..4]).await.unwrap();
    assert!(!again[0].inserted);
    assert_eq!(again[0].alerts.len(), 2);
}

#[tokio::test]
async fn reaching_the_budget_tells_the_owners_tools_once() {
    let t = T::new(&[
        ("DAILY_BUDGET_USD", "1.25"),
        ("COST_ALERT_USD", "100"),
        ("EVENTS_WEBHOOK_URL", "http://127.0.0.1:9/events"),
        (
            "EVENTS_WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
    ])
    .await;
    let told = async || -> Vec<serde_json::Value> {
        shared::testing::read_envelopes(&t.bus, Stream::Events)
            .await
            .into_iter()
            .filter_map(|e| match e.payload {
                Some(Payload::OwnerEvent(o)) if o.r#type == "budget.exceeded" => {
                    Some(serde_json::from_str(&o.data_json).unwrap())
                }
                _ => None,
            })
            .collect()
    };
    t.send(&[
        half_dollar("a", "c1", NOON),
        half_dollar("b", "c2", NOON + 1),
    ])
    .await; // $1.00: a warning, not the budget
    assert!(told().await.is_empty());
    t.send(&[half_dollar("c", "c3", NOON + 2)]).await; // $1.50
    t.send(&[half_dollar("d", "c3", NOON + 3)]).await; // $2.00: still the same day
    let got = told().await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["day"], "2026-11-25");
    assert_eq!(got[0]["budget_usd"], "1.250000");
    assert_eq!(got[0]["spend_usd"], "1.500000");
    assert!(
        got[0]["contact"].is_null(),
        "about the business, not a customer"
    );
}
