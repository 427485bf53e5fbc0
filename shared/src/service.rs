//! The skeleton every service binary shares, in a fixed order: `.env`, CLI, config (every
//! problem listed), telemetry, subcommands, dependencies, migrations, then the service itself
//! beside its internal HTTP listener, until SIGTERM/SIGINT.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Stream};
use crate::cli::{Cli, Command, DlqAction, NoCommands};
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

/// A service's own subcommands, added to the common ones ([`Command::Service`]), and how they
/// run. `C` is the service's configuration.
pub trait Commands<C>: clap::Subcommand {
    /// Runs the subcommand before the configuration is loaded, for one that needs only the
    /// environment (a probe of the running service, like `healthcheck`); `Err(self)` hands it
    /// on to [`Commands::run`] (the default).
    fn before_config(self, spec: Spec) -> Result<ExitCode, Self> {
        let _ = spec;
        Err(self)
    }

    /// Runs the subcommand with the configuration loaded and telemetry up, inside the async
    /// runtime; an error is logged with its causes and the binary exits 1.
    fn run(
        self,
        spec: Spec,
        common: &CommonConfig,
        config: &C,
    ) -> impl Future<Output = anyhow::Result<()>>;
}

impl<C> Commands<C> for NoCommands {
    async fn run(self, _: Spec, _: &CommonConfig, _: &C) -> anyhow::Result<()> {
        match self {}
    }
}

/// Runs a service binary with the common subcommands only. `load` reads the service's own
/// variables; `start` builds the service and returns its routes, checks and main future.
pub fn main<C, S>(spec: Spec, load: impl FnOnce(&mut Env, &CommonConfig) -> C, start: S) -> ExitCode
where
    C: Send + 'static,
    S: FnOnce(Context<C>) -> anyhow::Result<Running> + Send + 'static,
{
    main_with::<NoCommands, C, S>(spec, load, start)
}

/// The command line, named after the service (`gateway -V` says `gateway 0.1.0`, and `--help`
/// and usage errors name it too).
fn parse_cli<X: clap::Subcommand>(name: ServiceName) -> Cli<X> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::<X>::command()
        .name(name.as_str())
        .bin_name(name.as_str())
        .get_matches();
    Cli::<X>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// [`main`] for a service with subcommands of its own (`X`), beside the common ones.
pub fn main_with<X, C, S>(
    spec: Spec,
    load: impl FnOnce(&mut Env, &CommonConfig) -> C,
    start: S,
) -> ExitCode
where
    X: Commands<C>,
    C: Send + 'static,
    S: FnOnce(Context<C>) -> anyhow::Result<Running> + Send + 'static,
{
    if let Err(e) = crate::config::load_dotenv() {
        eprintln!("{}: {e}", spec.name.as_str());
        return ExitCode::from(2);
    }
    let command = match parse_cli::<X>(spec.name).command {
        Some(Command::Healthcheck { url }) => return healthcheck(spec, url),
        Some(Command::Service(own)) => match own.before_config(spec) {
            Ok(code) => return code,
            Err(own) => Some(Command::Service(own)),
        },
        command => command,
    };
    if let Some(Command::Vars) = &command {
        return print_vars(spec, load);
    }
    let (common, config) = match load_config(spec.name, Env::from_process(), load) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", spec.name.as_str());
            return ExitCode::from(2);
        }
    };
    if let Some(Command::CheckConfig) = &command {
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
    let subcommand = command.is_some();
    let result = runtime.block_on(async move {
        match command {
            Some(Command::Dlq { action }) => run_dlq(&common, action).await,
            Some(Command::Migrate) => run_migrate(spec, &common).await,
            Some(Command::BackupDb { to }) => run_backup_db(spec, &common, &to).await,
            Some(Command::Service(own)) => own.run(spec, &common, &config).await,
            Some(Command::Healthcheck { .. } | Command::Vars | Command::CheckConfig) => {
                unreachable!("handled before config")
            }
            None => run_service(spec, common, config, start).await,
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    let code = exit_code(spec.name, subcommand, result);
    drop(telemetry);
    code
}

/// How a run ends: a subcommand's failure is the operator's to read, in words; the service's
/// own is logged.
fn exit_code(name: ServiceName, subcommand: bool, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if subcommand => {
            eprintln!("{}: {e:#}", name.as_str());
            ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!(error.cause_chain = ?e, error.message = %e, "{} exited with an error", name.as_str());
            ExitCode::FAILURE
        }
    }
}

/// `vars`: the name of every variable the service reads, read with nothing set (so every
/// one is asked for; defaults apply).
fn print_vars<C>(spec: Spec, load: impl FnOnce(&mut Env, &CommonConfig) -> C) -> ExitCode {
    let mut env = Env::from_pairs::<_, String, String>([]);
    let common = CommonConfig::from_env(&mut env, spec.name);
    let _ = load(&mut env, &common);
    for name in env.asked() {
        println!("{name}");
    }
    ExitCode::SUCCESS
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
