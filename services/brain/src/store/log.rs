//! The conversation log the console shows: every message in and out and who wrote it. Kept
//! `MEMORY_TTL_DAYS` (the memory cleanup), erased by `!forget`, kept by `!reset`.

use shared::db::Db;
use sqlx::Row;

pub use crate::domain::{Author, Direction, LogKind};

/// One logged message.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// From the customer or to them.
    pub direction: Direction,
    /// A text, a voice note (its transcript), a photo (its caption), something else.
    pub kind: LogKind,
    /// The text.
    pub content: String,
    /// Who wrote it.
    pub author: Author,
    /// An image's encoded media reference.
    pub media: Option<Vec<u8>>,
    /// The message's id.
    pub message_id: String,
    /// A customer's message: the transport (proto number) and chat it came from.
    pub chat: Option<(i32, String)>,
}

/// Adds log rows — (contact, entry, when) — in as few statements as a group allows.
pub(super) async fn insert_log(
    conn: &mut sqlx::AnyConnection,
    rows: &[(&str, &LogEntry, i64)],
) -> Result<(), sqlx::Error> {
    const COLUMNS: usize = 10;
    for chunk in shared::db::rows::chunks(rows) {
        let sql = format!(
            "INSERT INTO conversation_log (contact_id, direction, kind, content, author, media, message_id, \
             transport, chat_id, created_at_ms) VALUES {}",
            shared::db::rows::values(conn, chunk.len(), COLUMNS)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (contact_id, e, now_ms) in chunk {
            q = q
                .bind(*contact_id)
                .bind(e.direction.as_str())
                .bind(e.kind.as_str())
                .bind(&e.content)
                .bind(e.author.as_str())
                .bind(e.media.as_deref())
                .bind(&e.message_id)
                .bind(e.chat.as_ref().map(|c| i64::from(c.0)))
                .bind(e.chat.as_ref().map(|c| c.1.as_str()))
                .bind(*now_ms);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Counts `n` customers' messages on `day`.
pub(super) async fn count_received(
    conn: &mut sqlx::AnyConnection,
    day: &str,
    n: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO daily_messages (day, received) VALUES ($1, $2) \
         ON CONFLICT (day) DO UPDATE SET received = daily_messages.received + $2",
    )
    .bind(day)
    .bind(n)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Customers' messages per day over `from..=to`, by day.
pub async fn received_by_day(
    db: &Db,
    from: &str,
    to: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT day, received FROM daily_messages WHERE day >= $1 AND day <= $2 ORDER BY day",
    )
    .bind(from)
    .bind(to)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("day")?, r.try_get("received")?)))
        .collect()
}

/// Fills in a logged voice note's transcript.
pub(super) async fn log_transcript(
    conn: &mut sqlx::AnyConnection,
    contact_id: &str,
    message_id: &str,
    text: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE conversation_log SET content = $1 \
         WHERE contact_id = $2 AND message_id = $3 AND direction = 'in'",
    )
    .bind(text)
    .bind(contact_id)
    .bind(message_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The transport (proto number) and chat the contact last wrote from.
pub async fn last_chat(db: &Db, contact_id: &str) -> Result<Option<(i32, String)>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT transport, chat_id FROM conversation_log \
         WHERE contact_id = $1 AND direction = 'in' AND chat_id IS NOT NULL ORDER BY id DESC LIMIT 1",
    )
    .bind(contact_id)
    .fetch_optional(db.pool())
    .await?;
    row.map(|r| {
        Ok((
            r.try_get::<Option<i64>, _>("transport")?
                .unwrap_or_default() as i32,
            r.try_get("chat_id")?,
        ))
    })
    .transpose()
}

/// Adds one entry to the contact's log (a person's reply).
pub async fn log_message(
    db: &Db,
    contact_id: &str,
    entry: &LogEntry,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let mut conn = db.pool().acquire().await?;
    insert_log(&mut conn, &[(contact_id, entry, now_ms)]).await
}

/// A logged message, as the console reads it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Logged {
    /// Its row id (ascending with time): the console pages and polls with it.
    pub id: i64,
    /// `in` or `out`.
    pub direction: String,
    /// `text`, `voice`, `image`, `other`.
    pub kind: String,
    /// The text.
    pub content: String,
    /// Who wrote it ([`Author::as_str`]).
    pub author: String,
    /// An image was sent with it.
    pub has_media: bool,
    /// When (unix ms).
    pub at_ms: i64,
}

/// The contact's logged messages after row `after` (0: from the start), oldest first, at
/// most `limit` — the newest `limit` when `after` is 0.
pub async fn log_of(
    db: &Db,
    contact_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<Logged>, sqlx::Error> {
    let sql = if after > 0 {
        "SELECT id, direction, kind, content, author, CAST(CASE WHEN media IS NULL THEN 0 ELSE 1 END AS BIGINT) AS has_media, created_at_ms \
         FROM conversation_log WHERE contact_id = $1 AND id > $2 ORDER BY id ASC LIMIT $3"
    } else {
        "SELECT id, direction, kind, content, author, CAST(CASE WHEN media IS NULL THEN 0 ELSE 1 END AS BIGINT) AS has_media, created_at_ms \
         FROM conversation_log WHERE contact_id = $1 AND id > $2 ORDER BY id DESC LIMIT $3"
    };
    let rows = sqlx::query(sql)
        .bind(contact_id)
        .bind(after)
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            Ok(Logged {
                id: r.try_get("id")?,
                direction: r.try_get("direction")?,
                kind: r.try_get("kind")?,
                content: r.try_get("content")?,
                author: r.try_get("author")?,
                has_media: r.try_get::<i64, _>("has_media")? == 1,
                at_ms: r.try_get("created_at_ms")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    if after == 0 {
        out.reverse();
    }
    Ok(out)
}

/// The media reference logged with message row `id` of the contact.
pub async fn logged_media(
    db: &Db,
    contact_id: &str,
    id: i64,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let media: Option<Option<Vec<u8>>> =
        sqlx::query_scalar("SELECT media FROM conversation_log WHERE contact_id = $1 AND id = $2")
            .bind(contact_id)
            .bind(id)
            .fetch_optional(db.pool())
            .await?;
    Ok(media.flatten())
}

/// A conversation in the console's list.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    /// The contact.
    pub contact_id: String,
    /// Its phone number (none for a web chat visitor).
    pub phone: Option<String>,
    /// Its role.
    pub role: String,
    /// The last logged message.
    pub last: String,
    /// Who wrote it.
    pub last_author: String,
    /// When (unix ms).
    pub last_at_ms: i64,
    /// The last logged row id (the console notices new messages by it).
    pub last_id: i64,
    /// Messages logged.
    pub messages: i64,
    /// Waiting for a person: the handoff's reference.
    pub handoff: Option<String>,
    /// The bot is paused for the contact until then (unix ms).
    pub paused_until_ms: Option<i64>,
}

/// Conversations with logged messages, latest first; `phone` keeps those whose number
/// contains it (digits only).
pub async fn conversations(
    db: &Db,
    phone: Option<&str>,
    limit: i64,
) -> Result<Vec<Listed>, sqlx::Error> {
    let digits: String = phone
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let rows = sqlx::query(
        "SELECT l.contact_id, l.content, l.author, l.created_at_ms, l.id, s.n, \
                c.role, c.handoff_ref, c.paused_until_ms, \
                (SELECT value FROM contact_identities i WHERE i.contact_id = l.contact_id AND i.kind = 'phone' LIMIT 1) AS phone \
         FROM conversation_log l \
         JOIN (SELECT contact_id, MAX(id) AS last_id, CAST(COUNT(*) AS BIGINT) AS n FROM conversation_log GROUP BY contact_id) s \
           ON s.last_id = l.id \
         JOIN contacts c ON c.id = l.contact_id \
         WHERE $1 = '' OR EXISTS (SELECT 1 FROM contact_identities i WHERE i.contact_id = l.contact_id \
                                  AND i.kind = 'phone' AND i.value LIKE '%' || $1 || '%') \
         ORDER BY l.id DESC LIMIT $2",
    )
    .bind(&digits)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Listed {
                contact_id: r.try_get("contact_id")?,
                phone: r.try_get("phone")?,
                role: r.try_get("role")?,
                last: r.try_get("content")?,
                last_author: r.try_get("author")?,
                last_at_ms: r.try_get("created_at_ms")?,
                last_id: r.try_get("id")?,
                messages: r.try_get("n")?,
                handoff: r.try_get("handoff_ref")?,
                paused_until_ms: r.try_get("paused_until_ms")?,
            })
        })
        .collect()
}
