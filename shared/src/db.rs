//! The database: one sqlx `Any` pool chosen by `DATABASE_URL` (SQLite by default, PostgreSQL
//! for multi-host), and the embedded migrations for each backend (`migrations/sqlite`,
//! `migrations/postgres`).
//!
//! Queries are written once in the common dialect (`$1` placeholders, TEXT/BIGINT/BLOB columns,
//! timestamps as unix milliseconds) and run on both backends by the same tests.

use std::path::Path;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

use crate::config::Dsn;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// Which database engine `DATABASE_URL` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Database errors callers match on.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the SQLite directory {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
}

/// A pool plus the backend it talks to.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
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
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(sqlx::raw_sql(
                            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
                             PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
                        ))
                        .await?;
                    }
                    Ok(())
                })
            });
        let pool = options.connect_lazy(&url)?;
        Ok(Self { pool, backend })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

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

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Adds `mode=rwc` (create if missing) and creates the file's directory.
fn prepare_sqlite_url(raw: &str) -> Result<String, DbError> {
    let rest = raw
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:"
        && !path.is_empty()
        && let Some(dir) = Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| DbError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let mut url = format!("sqlite://{path}");
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if !params.iter().any(|p| p.starts_with("mode=")) {
        params.push("mode=rwc");
    }
    url.push('?');
    url.push_str(&params.join("&"));
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
