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
