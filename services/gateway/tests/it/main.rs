//! Integration tests of the gateway: the binary against real Redis, and its outbound path
//! in-process.

mod browser;
mod helpers;
mod limits;
mod outbound;
mod web;
mod webchat;

use shared::config::ServiceName;

#[tokio::test]
async fn starts_from_env_serves_health_and_metrics_and_stops_on_sigterm() {
    let public = format!("127.0.0.1:{}", shared::testing::free_port());
    shared::testing::assert_service_lifecycle_with(
        helpers::BIN,
        ServiceName::Gateway,
        None,
        &[("PUBLIC_ADDR", public)],
        &[
            "bus_published_total{stream=\"inbound\"} 0",
            "bus_consumed_total{stream=\"outbound\"} 0",
            "gateway_inbound_total{transport=\"webchat\",kind=\"voice\"} 0",
            "gateway_duplicates_dropped_total{transport=\"webchat\"} 0",
            "gateway_rate_limited_total{scope=\"global\"} 0",
            "gateway_outbound_failed_total{transport=\"webchat\",failure=\"transient\"} 0",
            "gateway_outbound_receipts_total{transport=\"webchat\",status=\"delivered\"} 0",
            "gateway_session_state{transport=\"webchat\",state=\"connected\"}",
            "gateway_media_store_bytes 0",
        ],
    )
    .await;
}
