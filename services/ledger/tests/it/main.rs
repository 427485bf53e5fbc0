//! Integration tests of the ledger (SQLite, or PostgreSQL with SB_TEST_DB=postgres).

mod accounting;
mod events;

use shared::config::ServiceName;
use shared::testing::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_ledger");

#[tokio::test]
async fn starts_from_env_serves_health_and_metrics_and_stops_on_sigterm() {
    let db = TestDb::new().await;
    shared::testing::assert_service_lifecycle(
        BIN,
        ServiceName::Ledger,
        Some(&db.url),
        &[
            "bus_consumed_total{stream=\"usage\"} 0",
            "bus_published_total{stream=\"outbound\"} 0",
            "ledger_unknown_model_total 0",
            "ledger_budget_exceeded 0",
            "ledger_cost_usd{model=\"gpt-4o\",operation=\"chat\"} 0",
            "ledger_alerts_total{kind=\"daily_cost\"} 0",
            "ledger_spend_today_usd 0",
        ],
    )
    .await;
}

#[tokio::test]
async fn dlq_subcommands_list_and_replay_dead_letters() {
    use redis::AsyncCommands;
    let url = shared::testing::redis_url();
    let keys = shared::testing::KeyPrefix::new(&url);
    let prefix = keys.prefix.clone();
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let dlq = format!("{{{prefix}}}:v1:usage:dlq");
    let _: String = conn
        .xadd(
            &dlq,
            "*",
            &[
                ("e", "not protobuf"),
                ("dlq_reason", "protobuf: invalid wire type"),
                ("dlq_kind", "undecodable"),
                ("dlq_deliveries", "1"),
                ("dlq_source_id", "1-0"),
            ],
        )
        .await
        .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .env_clear()
            .env("REDIS_URL", &url)
            .env("STREAM_PREFIX", &prefix)
            .env("DATA_DIR", std::env::temp_dir().join("sb-dlq-test"))
            .output()
            .unwrap()
    };
    let out = run(&["dlq", "list", "usage"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(line["kind"], "undecodable");
    assert_eq!(line["reason"], "protobuf: invalid wire type");
    assert_eq!(line["source_id"], "1-0");

    let out = run(&["dlq", "replay", "usage"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("replayed 1"));
    let left: u64 = conn.xlen(&dlq).await.unwrap();
    assert_eq!(left, 0);
    let back: redis::streams::StreamRangeReply = conn
        .xrange_all(format!("{{{prefix}}}:v1:usage"))
        .await
        .unwrap();
    assert_eq!(back.ids.len(), 1);
    assert_eq!(back.ids[0].get::<String>("e").unwrap(), "not protobuf");
    assert!(!back.ids[0].map.contains_key("dlq_reason"));

    let out = run(&["dlq", "list", "nonsense"]);
    assert!(!out.status.success());
}

#[tokio::test]
async fn a_fresh_data_dir_and_its_sqlite_database_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    // Nothing exists yet: DATA_DIR and the default database (`sqlite://data/switchboard.db`,
    // relative to the working directory) are both created by the service.
    let senv =
        shared::testing::ServiceEnv::new(ServiceName::Ledger, &shared::testing::redis_url(), None);
    let data = senv.dir.path().join("data");
    assert!(!data.exists());
    let p = senv.spawn_ready(BIN).await;
    let mode = |name: &str| {
        std::fs::metadata(data.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", p.log_text()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(""), 0o700, "DATA_DIR");
    // The WAL and shared-memory files exist while the database is open (readiness opened it).
    for file in [
        "switchboard.db",
        "switchboard.db-wal",
        "switchboard.db-shm",
        "log_hash_key",
    ] {
        assert_eq!(mode(file), 0o600, "{file}");
    }
}

#[tokio::test]
async fn a_password_in_the_database_urls_query_never_shows_in_startup_errors() {
    let dir = shared::testing::TempDir::new("dsn");
    // Nothing listens on port 1: the database is "not reachable", an error naming its URL.
    let out = std::process::Command::new(BIN)
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env(
            "DATABASE_URL",
            "postgres://127.0.0.1:1/sb?user=sb&password=hunter2&sslmode=disable",
        )
        .env("STARTUP_TIMEOUT_SECS", "0")
        .env("DATA_DIR", dir.path())
        .current_dir(dir.path())
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("postgres://127.0.0.1:1/sb?user=sb&password=***&sslmode=disable"),
        "{all}"
    );
    assert!(!all.contains("hunter2"), "{all}");
}

/// A ledger process with `env` added, ready, that has been sent one chat record of `model`
/// with `prompt_tokens`.
async fn running_ledger_sent(
    env: &[(&str, String)],
    usage_id: &str,
    model: &str,
    prompt_tokens: u64,
) -> (
    TestDb,
    shared::testing::ServiceEnv,
    shared::testing::ServiceProcess,
) {
    use shared::bus::{Bus, Publish, Stream};
    use shared::proto::{Envelope, Payload, UsageRecord};
    let db = TestDb::new().await;
    let mut senv = shared::testing::ServiceEnv::new(
        ServiceName::Ledger,
        &shared::testing::redis_url(),
        Some(&db.url),
    );
    for (k, v) in env {
        senv.env.insert((*k).to_owned(), v.clone());
    }
    let p = senv.spawn(BIN);
    assert!(
        p.wait_status("/readyz", 200, std::time::Duration::from_secs(60))
            .await,
        "{}",
        p.log_text()
    );
    let bus = Bus::with_parts(
        &shared::config::Dsn::new(shared::testing::redis_url()),
        &senv.prefix,
        Default::default(),
        "test",
    )
    .unwrap();
    let usage = UsageRecord {
        usage_id: usage_id.into(),
        requested_model: model.into(),
        response_model: model.into(),
        operation: shared::proto::usage_record::Operation::Chat as i32,
        prompt_tokens,
        ..Default::default()
    };
    bus.publisher()
        .publish(Publish::new(
            Stream::Usage,
            Envelope::new("test", Payload::Usage(usage)),
        ))
        .await
        .unwrap();
    (db, senv, p)
}

#[tokio::test]
async fn the_running_ledger_counts_unknown_models_in_its_metrics() {
    let (_db, _senv, p) = running_ledger_sent(
        &[("DAILY_BUDGET_USD", "0".to_owned())],
        "u-unknown",
        "mystery-model",
        10,
    )
    .await;
    let metrics = || async {
        shared::http_client::client()
            .get(format!("{}/metrics", p.http))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let shown = shared::testing::wait_for(std::time::Duration::from_secs(20), async || {
        let text = metrics().await;
        (text.contains("ledger_unknown_model_total 1")
            && text.contains("ledger_records_total{operation=\"chat\",outcome=\"stored\"} 1"))
        .then_some(())
    })
    .await;
    assert!(
        shown.is_some(),
        "metrics never showed it:\n{}\n{}",
        metrics().await,
        p.log_text()
    );
    let log = p.log_text();
    assert!(
        log.contains("unknown model") && log.contains("zero"),
        "{log}"
    );
    let (status, p) = p.terminate_async(std::time::Duration::from_secs(20)).await;
    assert!(status.is_some_and(|s| s.success()), "{}", p.log_text());
}

#[tokio::test]
async fn a_failing_alert_webhook_is_logged_without_its_url() {
    // Nothing listens there: every attempt fails.
    let port = shared::testing::free_port();
    let env = [
        (
            "ALERT_WEBHOOK_URL",
            format!("http://127.0.0.1:{port}/services/T0/B0/hooksecret123"),
        ),
        ("COST_ALERT_USD", "0.000001".to_owned()),
    ];
    let (_db, _senv, p) = running_ledger_sent(&env, "u-costly", "gpt-4o", 1000).await;
    let logged = shared::testing::wait_for(std::time::Duration::from_secs(20), async || {
        p.log_text().contains("alert webhook failed").then_some(())
    })
    .await;
    assert!(
        logged.is_some(),
        "no webhook failure logged:\n{}",
        p.log_text()
    );
    let log = p.log_text();
    assert!(!log.contains("hooksecret123"), "{log}");
    assert!(!log.contains(&format!("127.0.0.1:{port}")), "{log}");
    let (status, p) = p.terminate_async(std::time::Duration::from_secs(20)).await;
    assert!(status.is_some_and(|s| s.success()), "{}", p.log_text());
}
