//! A database of its own for each test, on SQLite or PostgreSQL.

use super::{TempDir, run_on_own_thread};
use crate::config::Dsn;
use crate::db::Db;

/// Which database backend the suite runs on: `SB_TEST_DB=postgres` or SQLite (default).
pub fn test_backend_is_postgres() -> bool {
    std::env::var("SB_TEST_DB").is_ok_and(|v| v == "postgres")
}

/// The PostgreSQL server for tests (`SB_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432`).
pub fn pg_server_url() -> String {
    std::env::var("SB_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A database of its own for one test: a SQLite file in a temp dir, or a fresh PostgreSQL
/// database (dropped with this).
pub struct TestDb {
    /// Its URL, for `DATABASE_URL`.
    pub url: String,
    /// A pool on it (migrated).
    pub db: Db,
    pg_name: Option<String>,
    _dir: Option<TempDir>,
}

impl TestDb {
    /// The backend `SB_TEST_DB` names (SQLite by default).
    pub async fn new() -> Self {
        if test_backend_is_postgres() {
            Self::postgres().await
        } else {
            Self::sqlite()
        }
    }

    /// A SQLite file.
    pub fn sqlite() -> Self {
        let dir = TempDir::new("db");
        let url = format!("sqlite://{}/test.db", dir.path().display());
        let db = Db::connect_lazy(&Dsn::new(url.clone())).expect("sqlite url");
        Self {
            url,
            db,
            pg_name: None,
            _dir: Some(dir),
        }
    }

    /// A fresh PostgreSQL database on `SB_TEST_PG_URL`.
    pub async fn postgres() -> Self {
        use sqlx::Connection;
        let server = pg_server_url();
        let name = format!("sbtest_{}", crate::ids::new_id().to_lowercase());
        let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
            .await
            .expect("PostgreSQL reachable (scripts/test starts it)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let url = format!("{server}/{name}");
        let db = Db::connect_lazy(&Dsn::new(url.clone())).expect("postgres url");
        Self {
            url,
            db,
            pg_name: Some(name),
            _dir: None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        use sqlx::Connection;
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // FORCE ends the pool's connections (and any a service left).
        run_on_own_thread(move || async move {
            if let Ok(mut admin) =
                sqlx::PgConnection::connect(&format!("{}/postgres", pg_server_url())).await
            {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await;
            }
        });
    }
}
