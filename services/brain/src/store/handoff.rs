//! Handoffs to a person: started with the message that asked (in its commit, [`NewHandoff`]),
//! ended by `!resume` or the timeout, found by reference or number, listed for `!handoffs`.

use shared::db::Db;
use sqlx::Row;

use super::{CONTACT_COLUMNS, Contact, contact_from};
use crate::domain::{NewHandoff, Turn};

/// Writes `h` for `contact_id` (unless one is running) inside the commit's transaction.
pub(super) async fn start_handoff(
    conn: &mut sqlx::AnyConnection,
    contact_id: &str,
    h: &NewHandoff,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE contacts SET handoff_ref = $1, handoff_reason = $2, handoff_at_ms = $3, \
         handoff_deadline_ms = $4, unanswered_streak = 0, updated_at_ms = $3, \
         handoff_transport = $6, handoff_chat = $7 \
         WHERE id = $5 AND handoff_at_ms IS NULL",
    )
    .bind(&h.reference)
    .bind(h.reason.as_str())
    .bind(now_ms)
    .bind(h.deadline_ms)
    .bind(contact_id)
    .bind(i64::from(h.chat.0))
    .bind(&h.chat.1)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Pauses the bot for the contact until `until_ms`, inside the commit's transaction.
pub(super) async fn pause(
    conn: &mut sqlx::AnyConnection,
    contact_id: &str,
    until_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE contacts SET paused_until_ms = $1 WHERE id = $2")
        .bind(until_ms)
        .bind(contact_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Pauses the bot for the contact until `until_ms` (the console).
pub async fn pause_contact(db: &Db, contact_id: &str, until_ms: i64) -> Result<(), sqlx::Error> {
    let mut conn = db.pool().acquire().await?;
    pause(&mut conn, contact_id, until_ms).await
}

/// Sets how many answers in a row did not know, inside the commit's transaction.
pub(super) async fn set_streak(
    conn: &mut sqlx::AnyConnection,
    contact_id: &str,
    streak: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE contacts SET unanswered_streak = $1 WHERE id = $2")
        .bind(streak)
        .bind(contact_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Ends the contact's handoff and the owner's pause; whether either was running.
pub async fn end_handoff(db: &Db, contact_id: &str, now_ms: i64) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE contacts SET handoff_ref = NULL, handoff_reason = NULL, handoff_at_ms = NULL, \
         handoff_deadline_ms = NULL, unanswered_streak = 0, paused_until_ms = NULL, updated_at_ms = $1 \
         WHERE id = $2 AND (handoff_at_ms IS NOT NULL OR paused_until_ms > $1)",
    )
    .bind(now_ms)
    .bind(contact_id)
    .execute(db.pool())
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// A person replied: the handoff no longer times out.
pub async fn handoff_answered(db: &Db, contact_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE contacts SET handoff_deadline_ms = NULL WHERE id = $1")
        .bind(contact_id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// The contact whose running handoff has `reference` (any case).
pub async fn contact_by_handoff(db: &Db, reference: &str) -> Result<Option<Contact>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CONTACT_COLUMNS} FROM contacts WHERE handoff_ref = $1 AND handoff_at_ms IS NOT NULL"
    )))
    .bind(reference.to_ascii_uppercase())
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(contact_from).transpose()
}

/// Running handoffs, oldest first.
pub async fn handoffs(db: &Db) -> Result<Vec<Contact>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CONTACT_COLUMNS} FROM contacts WHERE handoff_at_ms IS NOT NULL ORDER BY handoff_at_ms"
    )))
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(contact_from).collect()
}

/// Running handoffs nobody answered by `now_ms`.
pub async fn handoffs_due(db: &Db, now_ms: i64) -> Result<Vec<Contact>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CONTACT_COLUMNS} FROM contacts WHERE handoff_deadline_ms <= $1"
    )))
    .bind(now_ms)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(contact_from).collect()
}

/// A contact's identities as (kind, value), to reach it.
pub async fn identities_of(
    db: &Db,
    contact_id: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query("SELECT kind, value FROM contact_identities WHERE contact_id = $1")
        .bind(contact_id)
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("kind")?, r.try_get("value")?)))
        .collect()
}

/// The contact's phone number, when it has one (web chat visitors have none).
pub async fn phone_of(db: &Db, contact_id: &str) -> Result<Option<String>, sqlx::Error> {
    Ok(identities_of(db, contact_id)
        .await?
        .into_iter()
        .find(|(k, _)| k == "phone")
        .map(|(_, v)| v))
}

/// Adds one turn to a contact's memory (what a person said for the business).
pub async fn add_turn(
    db: &Db,
    contact_id: &str,
    turn: &Turn,
    inbound_message_id: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO conversation_messages (contact_id, role, content, inbound_message_id, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(contact_id)
    .bind(turn.speaker.as_str())
    .bind(&turn.content)
    .bind(inbound_message_id)
    .bind(now_ms)
    .execute(db.pool())
    .await?;
    Ok(())
}
