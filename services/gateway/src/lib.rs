//! The `gateway` service: holds the WhatsApp session, publishes inbound messages and delivers outbound ones.

use shared::bus::Stream;
use shared::config::{CommonConfig, Env, ServiceName};
use shared::service::{Context, Running, Spec};

/// How the shared skeleton runs this service.
pub const SPEC: Spec = Spec {
    name: ServiceName::Gateway,
    uses_db: false,
    consumes: &[Stream::Outbound],
    publishes: &[Stream::Inbound],
};

/// The service's own configuration (beyond the common variables).
#[derive(Debug, Clone, Default)]
pub struct Config {}

impl Config {
    /// Reads the service's variables; problems are recorded in `env`.
    pub fn load(_env: &mut Env, _common: &CommonConfig) -> Self {
        Self {}
    }
}

/// Builds the service; its main future returns when `ctx.shutdown` is cancelled.
pub fn start(
    ctx: Context<Config>,
) -> anyhow::Result<Running<impl std::future::Future<Output = anyhow::Result<()>> + Send>> {
    let shutdown = ctx.shutdown;
    Ok(Running {
        routes: None,
        checks: Vec::new(),
        main: async move {
            shutdown.cancelled().await;
            Ok(())
        },
    })
}
