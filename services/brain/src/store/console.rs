//! What the owner's console reads and writes beyond conversations: its audit log, the
//! whitelist as a list, and the knowledge files written on it.

use shared::db::Db;
use sqlx::Row;

/// One console action.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Audited {
    /// When (unix ms).
    pub at_ms: i64,
    /// Who (the admin's number, or `operator`).
    pub admin: String,
    /// What (`reply`, `settings.set`, `dlq.replay`, …).
    pub action: String,
    /// On what (a contact's number, a setting, a stream).
    pub target: String,
    /// More about it (never message text).
    pub detail: String,
}

/// Records a console action.
pub async fn audit(
    db: &Db,
    admin: &str,
    action: &str,
    target: &str,
    detail: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO console_audit (at_ms, admin, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(now_ms)
    .bind(admin)
    .bind(action)
    .bind(target)
    .bind(detail)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The newest `limit` console actions, newest first.
pub async fn audit_log(db: &Db, limit: i64) -> Result<Vec<Audited>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT at_ms, admin, action, target, detail FROM console_audit ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Audited {
                at_ms: r.try_get("at_ms")?,
                admin: r.try_get("admin")?,
                action: r.try_get("action")?,
                target: r.try_get("target")?,
                detail: r.try_get("detail")?,
            })
        })
        .collect()
}

/// A contact on the whitelist page: allowed, an admin, or opted out.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Whitelisted {
    /// The contact.
    pub contact_id: String,
    /// Its phone number.
    pub phone: String,
    /// `admin` or `user`.
    pub role: String,
    /// May use the assistant.
    pub allowed: bool,
    /// Wrote STOP.
    pub opted_out: bool,
}

/// Contacts with a phone number that are allowed, admins or opted out, by number.
pub async fn whitelist(db: &Db) -> Result<Vec<Whitelisted>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT c.id, i.value, c.role, c.allowed, c.opted_out FROM contacts c \
         JOIN contact_identities i ON i.contact_id = c.id AND i.kind = 'phone' \
         WHERE c.allowed = 1 OR c.role = 'admin' OR c.opted_out = 1 ORDER BY i.value",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Whitelisted {
                contact_id: r.try_get("id")?,
                phone: r.try_get("value")?,
                role: r.try_get("role")?,
                allowed: r.try_get::<i64, _>("allowed")? == 1,
                opted_out: r.try_get::<i64, _>("opted_out")? == 1,
            })
        })
        .collect()
}

/// The console's knowledge files, (name, text), by name.
pub async fn knowledge_files(db: &Db) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query("SELECT name, content FROM knowledge_files ORDER BY name")
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("name")?, r.try_get("content")?)))
        .collect()
}

/// The console's knowledge files as (name, when changed): a replica re-indexes when they
/// change.
pub async fn knowledge_versions(db: &Db) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query("SELECT name, updated_at_ms FROM knowledge_files ORDER BY name")
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("name")?, r.try_get("updated_at_ms")?)))
        .collect()
}

/// Writes (or replaces) a knowledge file from the console.
pub async fn put_knowledge(
    db: &Db,
    name: &str,
    content: &str,
    by: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO knowledge_files (name, content, updated_by, updated_at_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET content = excluded.content, updated_by = excluded.updated_by, \
         updated_at_ms = excluded.updated_at_ms",
    )
    .bind(name)
    .bind(content)
    .bind(by)
    .bind(now_ms)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Deletes the console's copy of a knowledge file; whether there was one.
pub async fn delete_knowledge(db: &Db, name: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM knowledge_files WHERE name = $1")
        .bind(name)
        .execute(db.pool())
        .await?
        .rows_affected()
        > 0)
}

/// A customer's question and who answered it (the next message to them: `knowledge`,
/// `model`, `person`, `bot` — a notice such as the handoff's —, or `""`: nothing yet).
#[derive(Debug, Clone)]
pub struct Asked {
    /// The question as written (a voice note's transcript).
    pub text: String,
    /// The author of the first message to the customer after it.
    pub answered_by: String,
}

/// The newest `limit` texts and voice notes customers sent since `since_ms`, each with who
/// answered it.
pub async fn questions_since(
    db: &Db,
    since_ms: i64,
    limit: i64,
) -> Result<Vec<Asked>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT l.content AS text, COALESCE((SELECT o.author FROM conversation_log o \
           WHERE o.contact_id = l.contact_id AND o.direction = 'out' AND o.id > l.id \
           ORDER BY o.id LIMIT 1), '') AS answered_by \
         FROM conversation_log l \
         WHERE l.direction = 'in' AND l.kind IN ('text', 'voice') AND l.created_at_ms >= $1 \
         ORDER BY l.id DESC LIMIT $2",
    )
    .bind(since_ms)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Asked {
                text: r.try_get("text")?,
                answered_by: r.try_get("answered_by")?,
            })
        })
        .collect()
}
