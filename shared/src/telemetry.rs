//! Logs and traces.
//!
//! `RUST_LOG` wins; otherwise `info`. Logs are JSON by default (`LOG_FORMAT=pretty` for
//! development). When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are exported over OTLP/HTTP
//! (protobuf) to `<endpoint>/v1/traces`, and the W3C trace context travels inside every
//! envelope so one customer message is one trace across services.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{CommonConfig, LogFormat};

/// Flushes and shuts down the trace exporter when dropped. Drop it outside the async runtime
/// (shutdown blocks).
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("trace exporter shutdown failed: {e}");
        }
    }
}

/// Sets up logging, redaction key and (optionally) trace export. Call before the async runtime
/// starts (the OTLP exporter uses a blocking HTTP client on its own thread).
pub fn init(cfg: &CommonConfig) -> anyhow::Result<TelemetryGuard> {
    use anyhow::Context as _;
    use secrecy::ExposeSecret;
    // Before the OTLP exporter builds its HTTP client.
    crate::http_client::install_crypto_provider();

    let key = crate::redact::load_or_create_key(
        cfg.log_hash_key.as_ref().map(|k| k.expose_secret()),
        &cfg.data_dir,
    )
    .with_context(|| {
        format!(
            "failed to read or create the log hash key in {}",
            cfg.data_dir.display()
        )
    })?;
    crate::redact::set_key(&key);

    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
    ]));

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt_layer = match cfg.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_target(true)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_target(false).boxed(),
    };

    let service = cfg.service.as_str();
    let (otel_layer, provider) = match &cfg.otlp_endpoint {
        Some(base) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("{base}/v1/traces"))
                .build()
                .context("failed to build the OTLP span exporter")?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(service)
                        .build(),
                )
                .build();
            opentelemetry::global::set_tracer_provider(provider.clone());
            let tracer = provider.tracer(service);
            (
                Some(tracing_opentelemetry::layer().with_tracer(tracer)),
                Some(provider),
            )
        }
        None => (None, None),
    };

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .context("failed to install the tracing subscriber")?;
    Ok(TelemetryGuard { provider })
}

/// The W3C trace context of the current span, for an envelope.
pub fn current_trace_context() -> HashMap<String, String> {
    let cx = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.retain(|_, v| !v.is_empty());
    carrier
}

/// Makes `span` a child of the trace context carried in an envelope.
pub fn set_parent_from(span: &tracing::Span, carrier: &HashMap<String, String>) {
    if carrier.is_empty() {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(carrier));
    let _ = span.set_parent(parent);
}
