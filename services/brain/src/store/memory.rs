//! Conversation memory, and what answering a message reads first (one connection).

use shared::db::{Backend, Db};
use sqlx::Row;

use crate::domain::{Speaker, Turn};

/// Voice notes of the sender with identity (`kind`, `value`) still waiting for their
/// transcript.
pub async fn voice_waiting(db: &Db, kind: &str, value: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM voice_pending v \
         JOIN contact_identities i ON i.contact_id = v.contact_id WHERE i.kind = $1 AND i.value = $2",
    )
    .bind(kind)
    .bind(value)
    .fetch_one(db.pool())
    .await
}

/// The photo of the contact's burst, if one was kept (the newest). The burst's answer drops
/// them in its commit ([`crate::domain::Effect::BurstMediaUsed`]).
pub async fn burst_media(db: &Db, contact_id: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT media FROM burst_media WHERE contact_id = $1 ORDER BY created_at_ms DESC LIMIT 1",
    )
    .bind(contact_id)
    .fetch_optional(db.pool())
    .await
}

/// What a voice note's answer is committed under: this, then its message id (its memory
/// turns and outbox row are keyed so).
pub const VOICE_KEY: &str = "voice:";

/// The inbound message ids of the contact's last `n` memory turns, oldest first.
pub async fn last_turn_ids(
    db: &Db,
    contact_id: &str,
    n: usize,
) -> Result<Vec<String>, sqlx::Error> {
    let mut ids: Vec<String> = sqlx::query_scalar(
        "SELECT inbound_message_id FROM conversation_messages WHERE contact_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(contact_id)
    .bind(n as i64)
    .fetch_all(db.pool())
    .await?;
    ids.reverse();
    // A voice note's turns are written under its transcript's key.
    Ok(ids
        .into_iter()
        .map(|id| id.strip_prefix(VOICE_KEY).map(str::to_owned).unwrap_or(id))
        .collect())
}

/// What answering a contact reads before asking the model.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// The contact's tokens today (prompt and completion), for `CONTACT_DAILY_TOKENS`.
    pub tokens_today: i64,
    /// The last turns of memory, oldest first (empty when the message will not be answered).
    pub memory: Vec<Turn>,
}

/// The tokens of `day` and the memory (`memory_turns`, 0 for none) of a contact, in one query
/// of one row (the memory as [`memory_json`] reads it for [`super::Reader`]).
pub async fn known(
    db: &Db,
    contact_id: &str,
    day: &str,
    memory_turns: usize,
) -> Result<Known, sqlx::Error> {
    let sql = format!(
        "SELECT (SELECT CAST(COALESCE(SUM(u.prompt_tokens + u.completion_tokens), 0) AS BIGINT) \
          FROM usage_daily u WHERE u.day = $1 AND u.contact_id = c.id) AS tokens_today, \
         {} AS memory FROM contacts c WHERE c.id = $2",
        memory_json(db.backend(), memory_turns)
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(day)
        .bind(contact_id)
        .fetch_optional(db.pool())
        .await?;
    let Some(row) = row else {
        return Ok(Known::default());
    };
    Ok(Known {
        tokens_today: row.try_get("tokens_today")?,
        memory: turns_from_json(row.try_get::<Option<String>, _>("memory")?.as_deref())?,
    })
}

/// The contact's last `turns` turns of memory (of the contact row `c`), as one JSON value:
/// `[[role, content], …]`, newest first (`NULL` when it has none, or `turns` is 0).
pub(super) fn memory_json(backend: Backend, turns: usize) -> String {
    if turns == 0 {
        return "NULL".to_owned();
    }
    let last = format!(
        "(SELECT m.id, m.role, m.content FROM conversation_messages m WHERE m.contact_id = c.id \
         ORDER BY m.id DESC LIMIT {turns}) t"
    );
    match backend {
        Backend::Sqlite => {
            format!(
                "(SELECT json_group_array(json_array(t.role, t.content) ORDER BY t.id DESC) FROM {last})"
            )
        }
        Backend::Postgres => {
            format!(
                "(SELECT json_agg(json_build_array(t.role, t.content) ORDER BY t.id DESC)::text FROM {last})"
            )
        }
    }
}

/// Memory turns from [`memory_json`]'s value, oldest first.
pub(super) fn turns_from_json(json: Option<&str>) -> Result<Vec<Turn>, sqlx::Error> {
    let Some(json) = json else {
        return Ok(Vec::new());
    };
    let pairs: Vec<(String, String)> =
        serde_json::from_str(json).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(pairs
        .into_iter()
        .rev()
        .map(|(role, content)| Turn {
            speaker: Speaker::parse(&role),
            content,
        })
        .collect())
}

/// `!reset`: forgets the contact's conversation; returns the turns deleted.
pub async fn reset_memory(db: &Db, contact_id: &str) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM conversation_messages WHERE contact_id = $1")
            .bind(contact_id)
            .execute(db.pool())
            .await?
            .rows_affected(),
    )
}

/// Deletes memory and outbox rows older than `before_ms`; returns the memory rows deleted.
pub async fn cleanup(db: &Db, before_ms: i64) -> Result<u64, sqlx::Error> {
    let n = sqlx::query("DELETE FROM conversation_messages WHERE created_at_ms < $1")
        .bind(before_ms)
        .execute(db.pool())
        .await?
        .rows_affected();
    for table in ["conversation_log", "outbox", "voice_pending", "burst_media"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE created_at_ms < $1"
        )))
        .bind(before_ms)
        .execute(db.pool())
        .await?;
    }
    Ok(n)
}
