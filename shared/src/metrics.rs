//! Prometheus metrics through the `metrics` facade, rendered by metrics-exporter-prometheus on
//! the internal listener. Histograms ending in `_seconds` get explicit buckets so percentiles
//! can be computed across replicas.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Buckets of `*_size` histograms (counts of things handled together).
pub const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Buckets for latency histograms (seconds).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Installs the global recorder once and returns its handle; registers `build_info`.
pub fn install(service: &'static str) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("buckets are not empty")
                .set_buckets_for_metric(Matcher::Suffix("_size".into()), SIZE_BUCKETS)
                .expect("buckets are not empty")
                .install_recorder()
                .expect("the metrics recorder is installed once per process");
            metrics::describe_gauge!(
                "build_info",
                "Always 1; labels tell the service and version"
            );
            metrics::gauge!("build_info", "service" => service, "version" => crate::VERSION)
                .set(1.0);
            handle
        })
        .clone()
}

/// Keeps histograms' memory bounded; the exporter needs this without its own HTTP listener.
pub async fn upkeep(handle: PrometheusHandle, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}
