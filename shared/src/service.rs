//! The skeleton every service binary shares, in a fixed order: `.env`, CLI, config (every
//! problem listed), telemetry, subcommands, dependencies, migrations, then the service itself
//! beside its internal HTTP listener, until SIGTERM/SIGINT.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Stream};
use crate::cli::{Cli, Command, DlqAction};
use crate::config::{CommonConfig, ConfigError, Env, ServiceName};
use crate::db::Db;
use crate::http::{ExtraCheck, Readiness};
pub use crate::tasks::Tasks;

/// What a service is, for the shared skeleton.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Which service.
    pub name: ServiceName,
    /// Uses the database (runs migrations at startup, has `migrate`).
    pub uses_db: bool,
    /// Streams it consumes (metrics registered for them).
    pub consumes: &'static [Stream],
    /// Streams it publishes to (their groups are created at startup).
    pub publishes: &'static [Stream],
}

/// Everything a running service gets.
pub struct Context<C> {
    /// The common variables.
    pub common: CommonConfig,
    /// The service's own variables.
    pub config: C,
    /// The bus.
    pub bus: Bus,
    /// The database (migrated), for services that use one.
    pub db: Option<Db>,
    /// The metrics recorder.
    pub metrics: PrometheusHandle,
    /// Cancelled on SIGTERM or Ctrl-C.
    pub shutdown: CancellationToken,
}

/// What the service hands back to the skeleton: extra internal routes and readiness checks,
/// and its main future (which must return when `shutdown` is cancelled).
pub struct Running {
    /// Routes added to the internal listener.
    pub routes: Option<axum::Router>,
    /// Readiness checks beside Redis and the database.
    pub checks: Vec<ExtraCheck>,
    /// The service's work; the service stops when they end ([`Tasks::join`]).
    pub tasks: Tasks,
}

/// Loads the common and service configuration, reporting every problem at once.
pub fn load_config<C>(
    name: ServiceName,
    env: Env,
    load: impl FnOnce(&mut Env, &CommonConfig) -> C,
) -> Result<(CommonConfig, C), ConfigError> {
    let mut env = env;
    let common = CommonConfig::from_env(&mut env, name);
    let config = load(&mut env, &common);
    env.finish()?;
    Ok((common, config))
}

/// `healthcheck`: probes the service's own `/healthz`.
fn healthcheck(spec: Spec, url: Option<String>) -> ExitCode {
    let ok = crate::cli::healthcheck(
        spec.name.http_addr_var(),
        spec.name.default_http_addr(),
        url,
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `qr`: the QR code (or pairing code) the running gateway waits to be scanned with.
fn qr(spec: Spec) -> ExitCode {
    if spec.name != ServiceName::Gateway {
        eprintln!("qr is the gateway's: run `gateway qr`");
        return ExitCode::from(2);
    }
    if crate::cli::qr(spec.name.http_addr_var(), spec.name.default_http_addr()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `console-link`: a one-time sign-in link to the console, printed on stdout.
async fn run_console_link(spec: Spec, common: &CommonConfig, name: String) -> anyhow::Result<()> {
    anyhow::ensure!(
        spec.name == ServiceName::Gateway,
        "console-link is the gateway's: run `gateway console-link`"
    );
    let mut env = Env::from_process();
    let public_url = crate::console::public_url(&mut env);
    let bus = Bus::new(common)?;
    let console = crate::console::Console::new(&bus, crate::console::LINK_TTL);
    let admin = crate::console::Admin {
        name,
        contact_id: None,
    };
    let token = console
        .issue_link(&admin)
        .await
        .context("cannot reach Redis to keep the link")?;
    println!("{}", crate::console::link(&public_url, &token));
    eprintln!("valid once, for 10 minutes");
    Ok(())
}

/// Runs a service binary. `load` reads the service's own variables; `start` builds the
/// service and returns its routes, checks and main future.
pub fn main<C, S>(spec: Spec, load: impl FnOnce(&mut Env, &CommonConfig) -> C, start: S) -> ExitCode
where
    C: Send + 'static,
    S: FnOnce(Context<C>) -> anyhow::Result<Running> + Send + 'static,
{
    if let Err(e) = crate::config::load_dotenv() {
        eprintln!("{}: {e}", spec.name.as_str());
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    if let Some(Command::Healthcheck { url }) = &cli.command {
        return healthcheck(spec, url.clone());
    }
    if let Some(Command::Qr) = &cli.command {
        return qr(spec);
    }
    if let Some(Command::Vars) = &cli.command {
        // Read with nothing set: every variable is asked for (defaults apply).
        let mut env = Env::from_pairs::<_, String, String>([]);
        let common = CommonConfig::from_env(&mut env, spec.name);
        let _ = load(&mut env, &common);
        for name in env.asked() {
            println!("{name}");
        }
        return ExitCode::SUCCESS;
    }
    let (common, config) = match load_config(spec.name, Env::from_process(), load) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", spec.name.as_str());
            return ExitCode::from(2);
        }
    };
    if let Some(Command::CheckConfig) = &cli.command {
        println!("{}: configuration is valid", spec.name.as_str());
        return ExitCode::SUCCESS;
    }
    let telemetry = match crate::telemetry::init(&common) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e:#}", spec.name.as_str());
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Dlq { action }) => run_dlq(&common, action).await,
            Some(Command::Migrate) => run_migrate(spec, &common).await,
            Some(Command::BackupDb { to }) => run_backup_db(spec, &common, &to).await,
            Some(Command::ConsoleLink { name }) => run_console_link(spec, &common, name).await,
            Some(
                Command::Healthcheck { .. } | Command::Qr | Command::Vars | Command::CheckConfig,
            ) => {
                unreachable!("handled before config")
            }
            None => run_service(spec, common, config, start).await,
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error.cause_chain = ?e, error.message = %e, "{} exited with an error", spec.name.as_str());
            ExitCode::FAILURE
        }
    };
    drop(telemetry);
    code
}

/// The database a subcommand works on; refused, saying what it would have done, for a service
/// without one.
fn subcommand_db(spec: Spec, common: &CommonConfig, to: &str) -> anyhow::Result<Db> {
    if !spec.uses_db {
        anyhow::bail!("{} has no database {to}", spec.name.as_str());
    }
    Db::connect_lazy(&common.database_url).context("invalid DATABASE_URL")
}

async fn run_migrate(spec: Spec, common: &CommonConfig) -> anyhow::Result<()> {
    let db = subcommand_db(spec, common, "to migrate")?;
    db.wait_ready(common.startup_timeout)
        .await
        .with_context(|| format!("database {} not reachable", common.database_url))?;
    db.migrate().await.context("failed to apply migrations")?;
    println!("migrations applied to {}", common.database_url);
    Ok(())
}

async fn run_backup_db(spec: Spec, common: &CommonConfig, to: &Path) -> anyhow::Result<()> {
    let db = subcommand_db(spec, common, "to back up")?;
    if db.backend() != crate::db::Backend::Sqlite {
        anyhow::bail!("DATABASE_URL is PostgreSQL: back it up with pg_dump");
    }
    if to.exists() {
        anyhow::bail!("{} exists already", to.display());
    }
    let target = to.to_str().context("the backup path is not UTF-8")?;
    sqlx::query("VACUUM INTO $1")
        .bind(target)
        .execute(db.pool())
        .await
        .context("VACUUM INTO failed")?;
    db.close().await;
    println!("{}", to.display());
    Ok(())
}

async fn run_dlq(common: &CommonConfig, action: DlqAction) -> anyhow::Result<()> {
    let bus = Bus::new(common)?;
    let dlq = bus.dlq();
    match action {
        DlqAction::List { stream, limit } => {
            let stream: Stream = stream.parse()?;
            let total = dlq.len(stream).await?;
            eprintln!("{total} dead letter(s) in {}", bus.keys().dlq(stream));
            for d in dlq.list(stream, limit).await? {
                println!("{}", serde_json::to_string(&d)?);
            }
        }
        DlqAction::Replay { stream, ids } => {
            let stream: Stream = stream.parse()?;
            let n = dlq.replay(stream, &ids).await?;
            println!(
                "replayed {n} dead letter(s) to {}",
                bus.keys().stream(stream)
            );
        }
    }
    Ok(())
}

/// The service's database: reachable within `STARTUP_TIMEOUT_SECS`, then migrated.
async fn open_db(common: &CommonConfig) -> anyhow::Result<Db> {
    let db = Db::connect_lazy(&common.database_url).context("invalid DATABASE_URL")?;
    db.wait_ready(common.startup_timeout)
        .await
        .with_context(|| format!("database {} not reachable", common.database_url))?;
    db.migrate().await.context("failed to apply migrations")?;
    tracing::debug!(database = %common.database_url, "database: migrated");
    Ok(db)
}

/// Publishers create the consuming groups from id 0, so nothing published before a consumer
/// first starts is skipped. Done in the background: Redis may be down right now.
fn ensure_groups_in_background(
    bus: &Bus,
    publishes: &'static [Stream],
    shutdown: &CancellationToken,
) {
    let bus = bus.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        if bus
            .ensure_groups_retrying(publishes, &shutdown)
            .await
            .is_ok()
        {
            metrics::gauge!(crate::bus::metrics::REDIS_UP).set(1.0);
        }
    });
}

async fn run_service<C, S>(
    spec: Spec,
    common: CommonConfig,
    config: C,
    start: S,
) -> anyhow::Result<()>
where
    S: FnOnce(Context<C>) -> anyhow::Result<Running>,
{
    let name = spec.name.as_str();
    let shutdown = crate::shutdown::on_signals();
    let metrics = crate::metrics::install(name);
    crate::bus::metrics::register(spec.consumes, spec.publishes);
    tokio::spawn(crate::metrics::upkeep(metrics.clone(), shutdown.clone()));

    let bus = Bus::new(&common).context("invalid REDIS_URL")?;
    tracing::debug!(redis = %common.redis_url, "redis: client ready");

    let db = if spec.uses_db {
        Some(open_db(&common).await?)
    } else {
        None
    };

    let listener = tokio::net::TcpListener::bind(common.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", common.http_addr))?;
    let http_addr = listener.local_addr()?;

    ensure_groups_in_background(&bus, spec.publishes, &shutdown);

    let ctx = Context {
        common,
        config,
        bus: bus.clone(),
        db: db.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    };
    let running = start(ctx).context("failed to start")?;
    let readiness = Readiness {
        bus,
        db: db.clone(),
        extra: running.checks,
    };
    let mut router = crate::http::internal_router(readiness, metrics);
    if let Some(routes) = running.routes {
        router = router.merge(routes);
    }
    // The listener outlives the drain: `/healthz` and `/metrics` answer until the service has
    // stopped (a stuck consumer's 503 is seen before the process exits).
    let http_stop = CancellationToken::new();
    let http = tokio::spawn(crate::http::serve(listener, router, http_stop.clone()));
    tracing::info!(service = name, version = crate::VERSION, %http_addr, "service started");

    let mut main = tokio::spawn(running.tasks.join());
    let outcome = tokio::select! {
        r = &mut main => {
            // The service stopped by itself: bring the rest down too.
            shutdown.cancel();
            flatten(r, "service")
        }
        () = shutdown.cancelled() => flatten(main.await, "service"),
    };
    http_stop.cancel();
    let http_outcome = match http.await {
        Ok(r) => r.context("internal listener failed"),
        Err(e) => Err(anyhow::anyhow!("internal listener panicked: {e}")),
    };
    if let Some(db) = db {
        db.close().await;
    }
    tracing::info!(service = name, "service stopped");
    outcome.and(http_outcome)
}

fn flatten(
    r: Result<anyhow::Result<()>, tokio::task::JoinError>,
    what: &str,
) -> anyhow::Result<()> {
    match r {
        Ok(inner) => inner,
        Err(e) => Err(anyhow::anyhow!("{what} task panicked: {e}")),
    }
}
