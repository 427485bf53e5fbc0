//! Integration tests of the gateway binary.

use shared::config::ServiceName;

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

#[tokio::test]
async fn starts_from_env_serves_health_and_metrics_and_stops_on_sigterm() {
    shared::testing::assert_service_lifecycle(
        BIN,
        ServiceName::Gateway,
        None,
        &[
            "bus_published_total{stream=\"inbound\"} 0",
            "bus_consumed_total{stream=\"outbound\"} 0",
        ],
    )
    .await;
}
