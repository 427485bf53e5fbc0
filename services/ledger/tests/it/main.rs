//! Integration tests of the ledger binary (SQLite, or PostgreSQL with SB_TEST_DB=postgres).

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
        ],
    )
    .await;
    db.cleanup().await;
}

#[tokio::test]
async fn dlq_subcommands_list_and_replay_dead_letters() {
    use redis::AsyncCommands;
    let prefix = shared::testing::unique_prefix();
    let url = shared::testing::redis_url();
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
    shared::testing::cleanup_prefix(&url, &prefix).await;
}
