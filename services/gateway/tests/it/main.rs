//! Integration tests of the gateway: the binary against real Redis, and its outbound path
//! in-process.

mod browser;
mod cloud;
mod console;
mod console_authority;
mod console_import;
mod console_questions;
mod edge;
mod fake_graph;
mod helpers;
mod limits;
mod outbound;
mod storage;
mod visitors;
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

#[tokio::test]
async fn a_media_store_larger_than_redis_can_hold_stops_startup_with_the_reason() {
    let redis = shared::testing::RedisServer::start_with(&["--maxmemory", "100mb"]);
    let start = |cap: &str| {
        let mut senv = shared::testing::ServiceEnv::new(ServiceName::Gateway, &redis.url(), None);
        let public = format!("127.0.0.1:{}", shared::testing::free_port());
        senv.env.insert("PUBLIC_ADDR".into(), public);
        senv.env.insert("MEDIA_CAP_MB".into(), cap.into());
        let p = senv.spawn(helpers::BIN);
        (senv, p)
    };
    // 256 MB of media in a 100 MB Redis: refused, with what to do.
    let (_dir, mut p) = start("256");
    let status = p
        .exited(std::time::Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("{}", p.log_text()));
    assert!(!status.success());
    let log = p.log_text();
    assert!(
        log.contains("MEDIA_CAP_MB") && log.contains("maxmemory") && log.contains("at most 36"),
        "{log}"
    );
    // 32 MB fits beside the 64 MB of headroom.
    let (_dir, p) = start("32");
    assert!(
        p.wait_status("/healthz", 200, std::time::Duration::from_secs(30))
            .await,
        "{}",
        p.log_text()
    );
}
