//! Integration tests of the transcriber binary.

mod jobs;

use std::time::Duration;

use shared::config::ServiceName;
use shared::testing::{RedisServer, ServiceEnv};

const BIN: &str = env!("CARGO_BIN_EXE_transcriber");

#[tokio::test]
async fn starts_from_env_serves_health_and_metrics_and_stops_on_sigterm() {
    shared::testing::assert_service_lifecycle(
        BIN,
        ServiceName::Transcriber,
        None,
        &[
            "bus_consumed_total{stream=\"transcribe\"} 0",
            "bus_published_total{stream=\"usage\"} 0",
            "transcriber_jobs_total{outcome=\"failed\"} 0",
            "llm_circuit_state{upstream=\"whisper\"} 0",
            "llm_retries_total{upstream=\"whisper\"} 0",
        ],
    )
    .await;
}

#[tokio::test]
async fn losing_redis_makes_it_unready_without_crashing_and_it_recovers() {
    let mut redis = RedisServer::start();
    let senv = ServiceEnv::new(ServiceName::Transcriber, &redis.url(), None);
    let mut p = senv.spawn(BIN);
    assert!(
        p.wait_status("/readyz", 200, Duration::from_secs(60)).await,
        "{}",
        p.log_text()
    );
    redis.kill9();
    assert!(
        p.wait_status("/readyz", 503, Duration::from_secs(10)).await,
        "{}",
        p.log_text()
    );
    let body = shared::testing::get_json(&format!("{}/readyz", p.http)).await;
    assert_eq!(body["checks"]["redis"]["ok"], false);
    assert!(
        p.wait_status("/healthz", 200, Duration::from_secs(2)).await,
        "liveness must not depend on Redis"
    );
    assert!(p.child.try_wait().unwrap().is_none(), "process exited");
    redis.restart();
    assert!(
        p.wait_status("/readyz", 200, Duration::from_secs(15)).await,
        "{}",
        p.log_text()
    );
}

#[tokio::test]
async fn stopping_while_redis_was_never_reachable_is_a_clean_exit() {
    let mut redis = RedisServer::start();
    let senv = ServiceEnv::new(ServiceName::Transcriber, &redis.url(), None);
    redis.kill9();
    let p = senv.spawn(BIN);
    assert!(
        p.wait_status("/healthz", 200, Duration::from_secs(60))
            .await,
        "{}",
        p.log_text()
    );
    assert!(p.wait_status("/readyz", 503, Duration::from_secs(5)).await);
}
