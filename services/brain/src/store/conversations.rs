//! Conversations: a customer's messages until `CONVERSATION_IDLE_MIN` of silence, and how each
//! ended — answered by the knowledge base or the model, handed to a person (and why), or
//! abandoned (the customer's last message unanswered). Marked in each message's commit,
//! closed by a periodic sweep ([`idle_conversations`], [`end_conversation`]).

use shared::db::Db;
use sqlx::Row;

use crate::domain::Mark;

/// Adds each message to its contact's open conversation (a new one after the mark's `idle_ms`
/// of silence), inside the group commit's transaction: one statement for the group's open
/// conversations, one more for those it starts. A contact marked twice in the group is
/// marked in rounds, in order.
pub(super) async fn mark_all(
    conn: &mut sqlx::AnyConnection,
    marks: &[(&str, &Mark, i64)],
) -> Result<(), sqlx::Error> {
    let mut rest: Vec<(&str, &Mark, i64)> = marks.to_vec();
    while !rest.is_empty() {
        let mut round: Vec<(&str, &Mark, i64)> = Vec::with_capacity(rest.len());
        let mut later = Vec::new();
        for m in rest {
            if round.iter().any(|r| r.0 == m.0) {
                later.push(m);
            } else {
                round.push(m);
            }
        }
        for chunk in shared::db::rows::chunks(&round) {
            mark_distinct(conn, chunk).await?;
        }
        rest = later;
    }
    Ok(())
}

/// Marks of distinct contacts: the open conversations updated, the others started.
async fn mark_distinct(
    conn: &mut sqlx::AnyConnection,
    marks: &[(&str, &Mark, i64)],
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "WITH v (contact, now, answered, handoff, unanswered, cutoff) AS (VALUES {}) \
         UPDATE conversations SET last_at_ms = v.now, \
         answered_by = CASE WHEN v.answered = 'model' THEN 'model' \
          WHEN conversations.answered_by = '' THEN v.answered ELSE conversations.answered_by END, \
         handoff = COALESCE(conversations.handoff, v.handoff), last_unanswered = v.unanswered \
         FROM v WHERE conversations.contact_id = v.contact AND conversations.ended_at_ms IS NULL \
         AND conversations.last_at_ms > v.cutoff RETURNING conversations.contact_id",
        shared::db::rows::values(conn, marks.len(), 6)
    );
    let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
    for (contact, m, now_ms) in marks {
        q = q
            .bind(*contact)
            .bind(*now_ms)
            .bind(m.answered_by.map_or("", |a| a.as_str()))
            .bind(m.handoff.map(|r| r.as_str()))
            .bind(i64::from(m.unanswered))
            .bind(now_ms - m.idle_ms);
    }
    let open = q.fetch_all(&mut *conn).await?;
    let new: Vec<&(&str, &Mark, i64)> = marks
        .iter()
        .filter(|(c, _, _)| !open.iter().any(|o| o == c))
        .collect();
    for chunk in shared::db::rows::chunks(&new) {
        let sql = format!(
            "INSERT INTO conversations (contact_id, started_at_ms, last_at_ms, answered_by, handoff, last_unanswered) \
             VALUES {}",
            shared::db::rows::values(conn, chunk.len(), 6)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (contact, m, now_ms) in chunk {
            q = q
                .bind(*contact)
                .bind(*now_ms)
                .bind(*now_ms)
                .bind(m.answered_by.map_or("", |a| a.as_str()))
                .bind(m.handoff.map(|r| r.as_str()))
                .bind(i64::from(m.unanswered));
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// How a conversation ended: `handoff_<reason>`, `model`, `knowledge` or `abandoned`.
pub fn outcome_of(answered_by: &str, handoff: Option<&str>, last_unanswered: bool) -> String {
    match handoff {
        Some(h) => format!("handoff_{h}"),
        None if last_unanswered || answered_by.is_empty() => "abandoned".to_owned(),
        None => answered_by.to_owned(),
    }
}

/// A conversation silent for its idle time, about to end.
#[derive(Debug, Clone)]
pub struct Idle {
    /// The conversation's row id.
    pub id: i64,
    /// Its contact.
    pub contact_id: String,
    /// How it ended ([`outcome_of`]).
    pub outcome: String,
    /// When it started and when it ends (its last message plus the idle time), unix ms.
    pub started_at_ms: i64,
    /// When it ends.
    pub ended_at_ms: i64,
}

/// The conversations silent for `idle_ms`, to end with [`end_conversation`].
pub async fn idle_conversations(
    db: &Db,
    now_ms: i64,
    idle_ms: i64,
) -> Result<Vec<Idle>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, contact_id, started_at_ms, answered_by, handoff, last_unanswered, last_at_ms \
         FROM conversations WHERE ended_at_ms IS NULL AND last_at_ms <= $1",
    )
    .bind(now_ms - idle_ms)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let answered_by: String = r.try_get("answered_by")?;
            let handoff: Option<String> = r.try_get("handoff")?;
            let unanswered = r.try_get::<i64, _>("last_unanswered")? != 0;
            Ok(Idle {
                id: r.try_get("id")?,
                contact_id: r.try_get("contact_id")?,
                outcome: outcome_of(&answered_by, handoff.as_deref(), unanswered),
                started_at_ms: r.try_get("started_at_ms")?,
                ended_at_ms: r.try_get::<i64, _>("last_at_ms")? + idle_ms,
            })
        })
        .collect()
}

/// Ends an idle conversation with its outcome; whether this call ended it.
pub async fn end_conversation(db: &Db, c: &Idle) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE conversations SET ended_at_ms = $1, outcome = $2 WHERE id = $3 AND ended_at_ms IS NULL",
    )
    .bind(c.ended_at_ms)
    .bind(&c.outcome)
    .bind(c.id)
    .execute(db.pool())
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// Conversations ended since `since_ms`, by outcome.
pub async fn ended_since(db: &Db, since_ms: i64) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT outcome, CAST(COUNT(*) AS BIGINT) AS n FROM conversations \
         WHERE ended_at_ms >= $1 GROUP BY outcome ORDER BY outcome",
    )
    .bind(since_ms)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("outcome")?, r.try_get("n")?)))
        .collect()
}

/// Conversations started since `since_ms` (the console's cost per conversation).
pub async fn conversations_started(db: &Db, since_ms: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM conversations WHERE started_at_ms >= $1",
    )
    .bind(since_ms)
    .fetch_one(db.pool())
    .await
}
