//! Admins' runtime settings (`!config`) and the activity `!stats` reports.

use shared::db::Db;
use sqlx::Row;

/// Runtime settings set with `!config set` (they win over the environment).
pub async fn settings(db: &Db) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query("SELECT key, value FROM settings ORDER BY key")
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("key")?, r.try_get("value")?)))
        .collect()
}

/// `!config set`: stores a validated value, with who set it and when.
pub async fn set_setting(
    db: &Db,
    key: &str,
    value: &str,
    by: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO settings (key, value, updated_by, updated_at_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_by = excluded.updated_by, \
         updated_at_ms = excluded.updated_at_ms",
    )
    .bind(key)
    .bind(value)
    .bind(by)
    .bind(now_ms)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// `!config unset`: removes a setting; whether it was set.
pub async fn unset_setting(db: &Db, key: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM settings WHERE key = $1")
        .bind(key)
        .execute(db.pool())
        .await?
        .rows_affected()
        > 0)
}

/// Today's activity for `!stats`: (messages handled, contacts, failed answers) since `since_ms`.
pub async fn activity(
    db: &Db,
    since_ms: i64,
    errors: &[&str],
) -> Result<(i64, i64, i64), sqlx::Error> {
    let row = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n, CAST(COUNT(DISTINCT contact_id) AS BIGINT) AS c \
         FROM outbox WHERE created_at_ms >= $1",
    )
    .bind(since_ms)
    .fetch_one(db.pool())
    .await?;
    let errors = count_outcomes(db, since_ms, errors).await?;
    Ok((row.try_get("n")?, row.try_get("c")?, errors))
}

/// Messages since `since_ms` that ended in one of `outcomes`.
pub async fn count_outcomes(db: &Db, since_ms: i64, outcomes: &[&str]) -> Result<i64, sqlx::Error> {
    let placeholders: Vec<String> = (0..outcomes.len()).map(|i| format!("${}", i + 2)).collect();
    let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(COUNT(*) AS BIGINT) AS e FROM outbox WHERE created_at_ms >= $1 AND outcome IN ({})",
        placeholders.join(", ")
    )))
    .bind(since_ms);
    for o in outcomes {
        q = q.bind(*o);
    }
    q.fetch_one(db.pool()).await?.try_get("e")
}
