//! The database: one sqlx `Any` pool chosen by `DATABASE_URL` (SQLite by default, PostgreSQL
//! for multi-host), and the embedded migrations for each backend (`migrations/sqlite`,
//! `migrations/postgres`).
//!
//! Queries are written once in the common dialect (`$1` placeholders, TEXT/BIGINT/BLOB columns,
//! timestamps as unix milliseconds) and run on both backends by the same tests.

use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor, SqlStr};

use crate::config::Dsn;

/// The future an [`ApplyFn`] returns.
pub use futures_util::future::BoxFuture;

/// The migration files, embedded (listed by build.rs).
mod group;
pub mod rows;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

static SQLITE_MIGRATIONS: LazyLock<Migrator> = LazyLock::new(|| migrator(embedded::SQLITE));
static POSTGRES_MIGRATIONS: LazyLock<Migrator> = LazyLock::new(|| migrator(embedded::POSTGRES));

/// A migrator of embedded migrations, each as sqlx's `migrate!` made it: same description,
/// checksum and `-- no-transaction` opt-out, so databases it migrated carry on.
fn migrator(files: &'static [(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        files
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    SqlStr::from_static(sql),
                    sql.starts_with("-- no-transaction"),
                )
            })
            .collect(),
    )
}

/// Which database engine `DATABASE_URL` names.
/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The default: one file.
    Sqlite,
    /// For several hosts.
    Postgres,
}

/// Database errors callers match on.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database failed.
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The SQLite file's directory cannot be created.
    #[error("cannot create the SQLite directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The SQLite file cannot be created.
    #[error("cannot create the SQLite database file {path}: {source}")]
    CreateFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs `op` again while it fails with [`is_busy`] (short backoff, about 10 s in all), for
/// writes whose redo would be costly (the brain's outbox commit after a paid model call).
pub async fn retry_busy<T, F, Fut>(op: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    op.retry(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(5))
            .with_max_delay(Duration::from_millis(500))
            .with_max_times(30)
            .with_jitter(),
    )
    .when(is_busy)
    .sleep(tokio::time::sleep)
    .await
}

pub use group::{ApplyFn, BatchFn, GROUP_COMMIT_SIZE, GROUP_READ_SIZE, GroupCommit, GroupRead};

/// A pool plus the backend it talks to.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one writer per file: this process's write transactions take turns here
    /// (first come, first served) instead of spinning in SQLite's busy handler.
    write_turn: Arc<tokio::sync::Mutex<()>>,
}

/// A write transaction ([`Db::begin_write`]). Derefs to the connection, like sqlx's own
/// transaction: `query.execute(&mut *tx)`.
pub struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    /// Commits (and gives the write turn back).
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// Rolls back (and gives the write turn back).
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// Whether `e` says the database is saturated rather than broken: SQLite's write lock is
/// taken (`SQLITE_BUSY`/`SQLITE_LOCKED` and their extended codes), PostgreSQL gave up on a
/// lock or a serialisation conflict, or no pooled connection was free in time. Such an
/// operation succeeds when tried again a little later (backpressure, not failure).
pub fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            let c = c.as_ref();
            // SQLite: primary code in the low byte (5 BUSY, 6 LOCKED; 261, 517, 773: BUSY_*).
            c.parse::<i32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
                || matches!(c, "40001" | "40P01" | "55P03")
        }),
        _ => false,
    }
}

impl Db {
    /// A lazily connecting pool: nothing is contacted until first use, so readiness can report
    /// a database that is down. SQLite's directory and file are created if missing; every
    /// SQLite connection runs in WAL mode with a busy timeout and foreign keys on.
    pub fn connect_lazy(url: &Dsn) -> Result<Self, DbError> {
        install_default_drivers();
        let raw = url.expose();
        let backend = if raw.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let url = match backend {
            Backend::Sqlite => prepare_sqlite_url(raw)?,
            Backend::Postgres => raw.to_owned(),
        };
        let options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 10,
            })
            .acquire_timeout(Duration::from_secs(5))
            // No ping before every query: on SQLite it is one more hop to the connection's
            // thread, on PostgreSQL one more round trip. A connection that broke fails its
            // query, is dropped by the pool, and the work is retried like any database error.
            .test_before_acquire(false)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // No memory-mapped I/O: mapped pages of a growing database count in
                        // the process's RSS (the closed-loop benchmark took the ledger to
                        // 44–47 MB with a 256 MB map, 26–28 MB without, at the same
                        // throughput); reads go through SQLite's own small page cache.
                        // The WAL is checkpointed every 4,000 pages (16 MB) instead of 1,000: a
                        // page written by many commits is copied back once per checkpoint, and
                        // the closed-loop benchmark's brain and ledger used 8% and 15% less
                        // CPU per message.
                        conn.execute(sqlx::raw_sql(
                            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 2000; \
                             PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; \
                             PRAGMA mmap_size = 0; PRAGMA wal_autocheckpoint = 4000;",
                        ))
                        .await?;
                    }
                    Ok(())
                })
            });
        let pool = options.connect_lazy(&url)?;
        Ok(Self {
            pool,
            backend,
            write_turn: Arc::default(),
        })
    }

    /// Begins a transaction that will write. On SQLite it waits for this process's write turn,
    /// then takes the database's write lock up front (`BEGIN IMMEDIATE`): a deferred
    /// transaction that reads first and writes later fails at once with `SQLITE_BUSY_SNAPSHOT`
    /// when another process wrote in between, whatever the busy timeout. Waits for the lock
    /// held by another process are bounded by the busy timeout (2 s); past it the error is
    /// [`is_busy`].
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        let turn = self.write_turn().await;
        let tx = self.pool.begin_with(self.begin_statement()).await?;
        Ok(WriteTx { tx, _turn: turn })
    }

    /// This process's turn to write (SQLite: one writer per file; none needed on PostgreSQL).
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match self.backend {
            Backend::Sqlite => Some(self.write_turn.clone().lock_owned().await),
            Backend::Postgres => None,
        }
    }

    /// How a write transaction begins: on SQLite with the write lock taken up front.
    pub(crate) fn begin_statement(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// `SELECT 1`.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Applies the embedded migrations of this backend. Safe when several services start at
    /// once: PostgreSQL serialises on an advisory lock; on SQLite a loser of the race fails on
    /// the migrations table and simply tries again, then finds the work done.
    pub async fn migrate(&self) -> Result<(), DbError> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        (|| async { migrator.run(&self.pool).await })
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_delay(Duration::from_secs(1))
                    .with_max_times(8)
                    .with_jitter(),
            )
            .sleep(tokio::time::sleep)
            .notify(|e, d| tracing::debug!(error = %e, retry_in = ?d, "migration attempt failed"))
            .await?;
        Ok(())
    }

    /// Waits until the database answers, up to `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), DbError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.ping().await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "database not reachable yet");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Closes the pool's connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Adds `mode=rwc` (create if missing) and creates the file's directory (0700) and, when it
/// may create it, the file itself (0600, empty — SQLite's empty database) before SQLite does:
/// SQLite would create it 0644, and its `-wal` and `-shm` files take the database file's mode.
fn prepare_sqlite_url(raw: &str) -> Result<String, DbError> {
    let rest = raw
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if !params.iter().any(|p| p.starts_with("mode=")) {
        params.push("mode=rwc");
    }
    let on_disk = path != ":memory:" && !path.is_empty();
    if on_disk
        && let Some(dir) = Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        crate::files::create_private_dir_all(dir).map_err(|source| DbError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    if on_disk && params.contains(&"mode=rwc") {
        let file = Path::new(path);
        crate::files::warn_if_open(file, "the database file");
        crate::files::create_private_file(file).map_err(|source| DbError::CreateFile {
            path: file.display().to_string(),
            source,
        })?;
    }
    let mut url = format!("sqlite://{path}");
    url.push('?');
    url.push_str(&params.join("&"));
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "code {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            "coded"
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    #[test]
    fn busy_and_lock_errors_are_told_from_real_failures() {
        let db = |c: &'static str| sqlx::Error::Database(Box::new(Coded(c)));
        for busy in ["5", "6", "261", "517", "773", "40001", "40P01", "55P03"] {
            assert!(is_busy(&db(busy)), "{busy}");
        }
        for other in ["1", "11", "19", "2067", "23505", "42P01"] {
            assert!(!is_busy(&db(other)), "{other}");
        }
        assert!(is_busy(&sqlx::Error::PoolTimedOut));
        assert!(!is_busy(&sqlx::Error::RowNotFound));
    }

    #[test]
    fn sqlite_urls_get_create_mode() {
        let dir = std::env::temp_dir().join(format!("sb-db-{}", crate::ids::new_id()));
        let url = format!("sqlite://{}/x.db", dir.display());
        assert_eq!(
            prepare_sqlite_url(&url).unwrap(),
            format!("sqlite://{}/x.db?mode=rwc", dir.display())
        );
        assert!(dir.is_dir());
        assert_eq!(
            prepare_sqlite_url("sqlite://:memory:?mode=memory").unwrap(),
            "sqlite://:memory:?mode=memory"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn embedded_migrations_are_what_sqlx_reads_from_the_folders() {
        // Same versions, descriptions, checksums and transaction opt-outs as sqlx's own reading
        // of the files (what `migrate!` embedded before): databases it migrated carry on.
        for (dir, embedded) in [
            ("sqlite", &*SQLITE_MIGRATIONS),
            ("postgres", &*POSTGRES_MIGRATIONS),
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../migrations")
                .join(dir);
            let read = Migrator::new(path).await.expect("sqlx reads the folder");
            let shape = |m: &Migrator| -> Vec<_> {
                m.iter()
                    .map(|x| {
                        (
                            x.version,
                            x.description.to_string(),
                            x.checksum.to_vec(),
                            x.no_tx,
                            x.migration_type,
                        )
                    })
                    .collect()
            };
            assert!(read.iter().count() >= 5, "{dir}: too few migrations read");
            assert_eq!(shape(embedded), shape(&read), "{dir}");
        }
    }
}
