//! Integration tests of the brain binary (SQLite, or PostgreSQL with SB_TEST_DB=postgres).

mod admin;
mod conversation;
mod costs;
mod events;
mod handoff;
mod knowledge;
mod meaning;
mod rig;
mod store;
mod voice;

use shared::config::ServiceName;
use shared::testing::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_brain");

#[tokio::test]
async fn starts_from_env_serves_health_and_metrics_and_stops_on_sigterm() {
    let db = TestDb::new().await;
    shared::testing::assert_service_lifecycle(
        BIN,
        ServiceName::Brain,
        Some(&db.url),
        &[
            "bus_consumed_total{stream=\"inbound\"} 0",
            "bus_consumed_total{stream=\"transcripts\"} 0",
            "bus_published_total{stream=\"outbound\"} 0",
        ],
    )
    .await;
}

#[tokio::test]
async fn migrate_subcommand_applies_migrations_twice() {
    let db = TestDb::new().await;
    for _ in 0..2 {
        let out = std::process::Command::new(BIN)
            .arg("migrate")
            .env("DATABASE_URL", &db.url)
            .env("DATA_DIR", std::env::temp_dir().join("sb-migrate-test"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
    }
}

#[tokio::test]
async fn bad_configuration_stops_startup_listing_every_problem() {
    let out = std::process::Command::new(BIN)
        .env_clear()
        .env("REDIS_URL", "http://wrong")
        .env("MAX_DELIVERIES", "zero")
        .env("BRAIN_HTTP_ADDR", "nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for var in [
        "REDIS_URL",
        "MAX_DELIVERIES",
        "BRAIN_HTTP_ADDR",
        "3 problems",
    ] {
        assert!(err.contains(var), "{var} not reported: {err}");
    }
}
