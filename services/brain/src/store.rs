//! The brain's tables: contacts and their identities, conversation memory, the outbox.
//! Booleans are stored as 0/1 integers (the same SQL runs on SQLite and PostgreSQL).

use std::sync::Arc;

use prost::Message;
use shared::bus::{Publish, Stream};
use shared::db::{Db, GroupCommit};
use shared::proto::Envelope;
use sqlx::Row;

/// A contact's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

/// A contact as the brain sees it.
#[derive(Debug, Clone)]
pub struct Contact {
    pub id: String,
    pub role: Role,
    pub allowed: bool,
    pub opted_out: bool,
    pub last_refusal_day: Option<String>,
    pub disclosed: bool,
}

/// One turn of memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// `user` or `assistant`.
    pub role: &'static str,
    pub content: String,
}

/// The events an inbound message produced, as kept in the outbox.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredEvents {
    #[prost(message, repeated, tag = "1")]
    events: Vec<StoredEvent>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StoredEvent {
    #[prost(string, tag = "1")]
    stream: String,
    #[prost(string, tag = "2")]
    order_key: String,
    #[prost(bytes = "vec", tag = "3")]
    envelope: Vec<u8>,
}

pub fn encode_events(events: &[Publish]) -> Vec<u8> {
    StoredEvents {
        events: events
            .iter()
            .map(|p| StoredEvent {
                stream: p.stream.name().to_owned(),
                order_key: p.order_key.clone().unwrap_or_default(),
                envelope: p.envelope.encode_to_vec(),
            })
            .collect(),
    }
    .encode_to_vec()
}

pub fn decode_events(bytes: &[u8]) -> anyhow::Result<Vec<Publish>> {
    let stored = StoredEvents::decode(bytes)?;
    stored
        .events
        .into_iter()
        .map(|e| {
            let stream: Stream = e.stream.parse()?;
            let envelope = Envelope::decode(e.envelope.as_slice())?;
            Ok(if e.order_key.is_empty() {
                Publish::new(stream, envelope)
            } else {
                Publish::ordered(stream, envelope, e.order_key)
            })
        })
        .collect()
}

fn contact_from(row: &sqlx::any::AnyRow) -> Result<Contact, sqlx::Error> {
    let role: String = row.try_get("role")?;
    Ok(Contact {
        id: row.try_get("id")?,
        role: Role::parse(&role).unwrap_or(Role::User),
        allowed: row.try_get::<i64, _>("allowed")? != 0,
        opted_out: row.try_get::<i64, _>("opted_out")? != 0,
        last_refusal_day: row.try_get("last_refusal_day")?,
        disclosed: row.try_get::<Option<i64>, _>("disclosed_at_ms")?.is_some(),
    })
}

const CONTACT_COLUMNS: &str = "id, role, allowed, opted_out, last_refusal_day, disclosed_at_ms";

pub async fn contact(db: &Db, id: &str) -> Result<Option<Contact>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CONTACT_COLUMNS} FROM contacts WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(contact_from).transpose()
}

/// The contact owning any of `identities` (kind, value), created when none does; identities
/// not yet linked are linked to it.
pub async fn resolve(
    db: &Db,
    identities: &[(String, String)],
    now_ms: i64,
) -> Result<Contact, sqlx::Error> {
    // The common case reads only: every identity is known and names one contact.
    if let Some(c) = known_contact(db, identities).await? {
        return Ok(c);
    }
    let mut tx = db.begin_write().await?;
    let mut found: Option<String> = None;
    for (kind, value) in identities {
        let row =
            sqlx::query("SELECT contact_id FROM contact_identities WHERE kind = $1 AND value = $2")
                .bind(kind)
                .bind(value)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(row) = row {
            found = Some(row.try_get("contact_id")?);
            break;
        }
    }
    let id = match found {
        Some(id) => id,
        None => {
            let id = shared::ids::new_id();
            sqlx::query(
                "INSERT INTO contacts (id, role, allowed, opted_out, created_at_ms, updated_at_ms) \
                 VALUES ($1, 'user', 0, 0, $2, $2)",
            )
            .bind(&id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            id
        }
    };
    for (kind, value) in identities {
        sqlx::query(
            "INSERT INTO contact_identities (kind, value, contact_id, created_at_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (kind, value) DO NOTHING",
        )
        .bind(kind)
        .bind(value)
        .bind(&id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(contact(db, &id)
        .await?
        .expect("the contact was just written"))
}

/// The contact when all `identities` are linked to the same one (one query).
async fn known_contact(
    db: &Db,
    identities: &[(String, String)],
) -> Result<Option<Contact>, sqlx::Error> {
    if identities.is_empty() {
        return Ok(None);
    }
    let wanted: Vec<String> = (0..identities.len())
        .map(|i| format!("(i.kind = ${} AND i.value = ${})", 2 * i + 1, 2 * i + 2))
        .collect();
    let sql = format!(
        "SELECT c.id, c.role, c.allowed, c.opted_out, c.last_refusal_day, c.disclosed_at_ms \
         FROM contact_identities i JOIN contacts c ON c.id = i.contact_id WHERE {}",
        wanted.join(" OR ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (kind, value) in identities {
        q = q.bind(kind).bind(value);
    }
    let rows = q.fetch_all(db.pool()).await?;
    if rows.len() != identities.len() {
        return Ok(None);
    }
    let contacts = rows
        .iter()
        .map(contact_from)
        .collect::<Result<Vec<_>, _>>()?;
    if contacts.iter().any(|c| c.id != contacts[0].id) {
        return Ok(None);
    }
    Ok(contacts.into_iter().next())
}

/// The contact of a phone number (E.164), if known.
pub async fn contact_by_phone(db: &Db, phone: &str) -> Result<Option<Contact>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT contact_id FROM contact_identities WHERE kind = 'phone' AND value = $1",
    )
    .bind(phone)
    .fetch_optional(db.pool())
    .await?;
    match row {
        Some(r) => contact(db, &r.try_get::<String, _>("contact_id")?).await,
        None => Ok(None),
    }
}

/// Makes the phone numbers in `ADMIN_NUMBERS` admins (creating their contacts), and takes the
/// admin role back from contacts it came from whose number is no longer listed (a role an
/// admin gave with `!role` is left alone). Returns how many were revoked.
pub async fn bootstrap_admins(db: &Db, phones: &[String], now_ms: i64) -> Result<u64, sqlx::Error> {
    let mut listed = Vec::with_capacity(phones.len());
    for phone in phones {
        let c = resolve(db, &[("phone".to_owned(), phone.clone())], now_ms).await?;
        sqlx::query(
            "UPDATE contacts SET role = 'admin', allowed = 1, admin_from_env = 1, \
             updated_at_ms = $1 WHERE id = $2",
        )
        .bind(now_ms)
        .bind(&c.id)
        .execute(db.pool())
        .await?;
        listed.push(c.id);
    }
    let from_env: Vec<String> =
        sqlx::query_scalar("SELECT id FROM contacts WHERE admin_from_env = 1")
            .fetch_all(db.pool())
            .await?;
    let mut revoked = 0;
    for id in from_env.iter().filter(|id| !listed.contains(id)) {
        revoked += sqlx::query(
            "UPDATE contacts SET role = 'user', admin_from_env = 0, updated_at_ms = $1 \
             WHERE id = $2 AND admin_from_env = 1",
        )
        .bind(now_ms)
        .bind(id)
        .execute(db.pool())
        .await?
        .rows_affected();
    }
    Ok(revoked)
}

async fn update(
    db: &Db,
    sql: &'static str,
    id: &str,
    value: Option<i64>,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let mut q = sqlx::query(sql);
    if let Some(v) = value {
        q = q.bind(v);
    }
    q.bind(now_ms).bind(id).execute(db.pool()).await?;
    Ok(())
}

/// An admin's decision: from now on the role is theirs, not `ADMIN_NUMBERS`'s.
pub async fn set_role(db: &Db, id: &str, role: Role, now_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE contacts SET role = $1, admin_from_env = 0, updated_at_ms = $2 WHERE id = $3",
    )
    .bind(role.as_str())
    .bind(now_ms)
    .bind(id)
    .execute(db.pool())
    .await?;
    Ok(())
}

pub async fn set_allowed(db: &Db, id: &str, allowed: bool, now_ms: i64) -> Result<(), sqlx::Error> {
    update(
        db,
        "UPDATE contacts SET allowed = $1, updated_at_ms = $2 WHERE id = $3",
        id,
        Some(i64::from(allowed)),
        now_ms,
    )
    .await
}

pub async fn set_opted_out(db: &Db, id: &str, out: bool, now_ms: i64) -> Result<(), sqlx::Error> {
    update(
        db,
        "UPDATE contacts SET opted_out = $1, updated_at_ms = $2 WHERE id = $3",
        id,
        Some(i64::from(out)),
        now_ms,
    )
    .await
}

pub async fn set_refusal_day(db: &Db, id: &str, day: &str, now_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE contacts SET last_refusal_day = $1, updated_at_ms = $2 WHERE id = $3")
        .bind(day)
        .bind(now_ms)
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// The last `limit` turns of a contact's memory, oldest first.
async fn memory_on(
    conn: &mut sqlx::AnyConnection,
    contact_id: &str,
    limit: usize,
) -> Result<Vec<Turn>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT role, content FROM conversation_messages WHERE contact_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(contact_id)
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    let mut turns = rows
        .iter()
        .map(|r| {
            let role: String = r.try_get("role")?;
            Ok(Turn {
                role: if role == "assistant" {
                    "assistant"
                } else {
                    "user"
                },
                content: r.try_get("content")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    turns.reverse();
    Ok(turns)
}

/// What answering a contact reads before asking the model.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// The contact's tokens today (prompt and completion), for `CONTACT_DAILY_TOKENS`.
    pub tokens_today: i64,
    /// The last turns of memory, oldest first (empty when the message will not be answered).
    pub memory: Vec<Turn>,
}

/// The tokens of `day` and the memory (`memory_turns`, 0 for none) of a contact, on one
/// connection.
pub async fn known(
    db: &Db,
    contact_id: &str,
    day: &str,
    memory_turns: usize,
) -> Result<Known, sqlx::Error> {
    let mut conn = db.pool().acquire().await?;
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT) AS t \
         FROM usage_daily WHERE day = $1 AND contact_id = $2",
    )
    .bind(day)
    .bind(contact_id)
    .fetch_one(&mut *conn)
    .await?;
    let memory = if memory_turns > 0 {
        memory_on(&mut conn, contact_id, memory_turns).await?
    } else {
        Vec::new()
    };
    Ok(Known {
        tokens_today: row.try_get("t")?,
        memory,
    })
}

/// What handling an inbound message reads first, read on one connection in two queries (every
/// query through the pool costs a hop to SQLite's thread and another for the pool's check
/// when the connection comes back).
pub struct Snapshot {
    /// The events stored when this message was handled before.
    pub answered: Option<Vec<u8>>,
    /// The sender, when every identity is known and names one contact.
    pub contact: Option<Contact>,
    pub known: Known,
}

/// Reads the outbox row of `inbound_id`, the contact owning `identities` with its tokens of
/// `day`, and (when `memory_turns` > 0) its memory. An unknown sender's outbox row is looked up
/// on its own.
pub async fn snapshot(
    db: &Db,
    inbound_id: &str,
    identities: &[(String, String)],
    day: &str,
    memory_turns: usize,
) -> Result<Snapshot, sqlx::Error> {
    let mut conn = db.pool().acquire().await?;
    let wanted: Vec<String> = (0..identities.len())
        .map(|i| format!("(i.kind = ${} AND i.value = ${})", 2 * i + 3, 2 * i + 4))
        .collect();
    let rows = if identities.is_empty() {
        Vec::new()
    } else {
        let sql = format!(
            "SELECT c.id, c.role, c.allowed, c.opted_out, c.last_refusal_day, c.disclosed_at_ms, \
             (SELECT o.events FROM outbox o WHERE o.inbound_message_id = $1) AS answered, \
             (SELECT CAST(COALESCE(SUM(u.prompt_tokens + u.completion_tokens), 0) AS BIGINT) \
              FROM usage_daily u WHERE u.day = $2 AND u.contact_id = c.id) AS tokens_today \
             FROM contact_identities i JOIN contacts c ON c.id = i.contact_id WHERE {}",
            wanted.join(" OR ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(inbound_id)
            .bind(day);
        for (kind, value) in identities {
            q = q.bind(kind).bind(value);
        }
        q.fetch_all(&mut *conn).await?
    };
    let Some(first) = rows.first() else {
        let answered = outbox_on(&mut conn, inbound_id).await?;
        return Ok(Snapshot {
            answered,
            contact: None,
            known: Known::default(),
        });
    };
    let answered: Option<Vec<u8>> = first.try_get("answered")?;
    let tokens_today: i64 = first.try_get("tokens_today")?;
    let contacts = rows
        .iter()
        .map(contact_from)
        .collect::<Result<Vec<_>, _>>()?;
    let one = rows.len() == identities.len() && contacts.iter().all(|c| c.id == contacts[0].id);
    let contact = one.then(|| contacts[0].clone());
    let memory = match &contact {
        Some(c) if memory_turns > 0 && answered.is_none() => {
            memory_on(&mut conn, &c.id, memory_turns).await?
        }
        _ => Vec::new(),
    };
    Ok(Snapshot {
        answered,
        contact,
        known: Known {
            tokens_today,
            memory,
        },
    })
}

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
    for table in ["outbox", "voice_pending"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE created_at_ms < $1"
        )))
        .bind(before_ms)
        .execute(db.pool())
        .await?;
    }
    Ok(n)
}

/// The events stored for an inbound message, if it was handled before.
pub async fn outbox(db: &Db, inbound_id: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let mut conn = db.pool().acquire().await?;
    outbox_on(&mut conn, inbound_id).await
}

async fn outbox_on(
    conn: &mut sqlx::AnyConnection,
    inbound_id: &str,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let row = sqlx::query("SELECT events FROM outbox WHERE inbound_message_id = $1")
        .bind(inbound_id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| r.try_get("events")).transpose()
}

/// What handling one inbound message changes, written in one transaction.
pub struct Commit {
    pub contact_id: Option<String>,
    pub inbound_id: String,
    pub turns: Vec<Turn>,
    pub events: Vec<u8>,
    pub outcome: crate::outcome::Outcome,
    pub disclosed: bool,
    /// A voice note now waiting for its transcript: (encoded inbound event, deadline ms).
    pub voice_pending: Option<(Vec<u8>, i64)>,
    /// The transcript of this voice note (by its inbound message id) was answered.
    pub voice_done: Option<String>,
    pub now_ms: i64,
}

/// Outcomes committed together ([`GroupCommit`]): one transaction for every message answered
/// at about the same time.
pub type Committer = GroupCommit<Arc<Commit>, Option<Vec<u8>>>;

/// The brain's group-commit writer.
pub fn committer(db: Db) -> Committer {
    GroupCommit::spawn("brain", db, 128, Arc::new(apply_shared))
}

fn apply_shared<'c>(
    conn: &'c mut sqlx::AnyConnection,
    o: &'c Arc<Commit>,
) -> shared::db::BoxFuture<'c, Result<Option<Vec<u8>>, sqlx::Error>> {
    Box::pin(apply(conn, o))
}

/// Writes memory, the disclosure mark and the outbox row inside a write transaction. When
/// another delivery already wrote this inbound message's outbox, nothing is written and its
/// events are returned.
pub async fn apply(
    conn: &mut sqlx::AnyConnection,
    o: &Commit,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let now_ms = o.now_ms;
    let inserted = sqlx::query(
        "INSERT INTO outbox (inbound_message_id, contact_id, events, outcome, created_at_ms) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (inbound_message_id) DO NOTHING",
    )
    .bind(&o.inbound_id)
    .bind(o.contact_id.as_deref())
    .bind(&o.events)
    .bind(o.outcome.as_str())
    .bind(now_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        let row = sqlx::query("SELECT events FROM outbox WHERE inbound_message_id = $1")
            .bind(&o.inbound_id)
            .fetch_optional(&mut *conn)
            .await?;
        return row.map(|r| r.try_get("events")).transpose();
    }
    if let Some(contact_id) = o.contact_id.as_deref() {
        if !o.turns.is_empty() {
            // All turns in one statement, in order (ids ascend with the rows).
            let rows: Vec<String> = (0..o.turns.len())
                .map(|i| {
                    let b = 5 * i;
                    format!(
                        "(${}, ${}, ${}, ${}, ${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO conversation_messages (contact_id, role, content, inbound_message_id, created_at_ms) \
                 VALUES {}",
                rows.join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for t in &o.turns {
                q = q
                    .bind(contact_id)
                    .bind(t.role)
                    .bind(&t.content)
                    .bind(&o.inbound_id)
                    .bind(now_ms);
            }
            q.execute(&mut *conn).await?;
        }
        if let Some((inbound, deadline)) = &o.voice_pending {
            sqlx::query(
                "INSERT INTO voice_pending (message_id, contact_id, inbound, deadline_at_ms, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (message_id) DO NOTHING",
            )
            .bind(&o.inbound_id)
            .bind(contact_id)
            .bind(inbound)
            .bind(*deadline)
            .bind(now_ms)
            .execute(&mut *conn)
            .await?;
        }
        if let Some(id) = &o.voice_done {
            sqlx::query("DELETE FROM voice_pending WHERE message_id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        if o.disclosed {
            sqlx::query("UPDATE contacts SET disclosed_at_ms = $1 WHERE id = $2 AND disclosed_at_ms IS NULL")
                .bind(now_ms)
                .bind(contact_id)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(None)
}

/// A voice note waiting for its transcript: the encoded inbound event and its deadline.
pub async fn voice_pending(
    db: &Db,
    message_id: &str,
) -> Result<Option<(Vec<u8>, i64)>, sqlx::Error> {
    let row =
        sqlx::query("SELECT inbound, deadline_at_ms FROM voice_pending WHERE message_id = $1")
            .bind(message_id)
            .fetch_optional(db.pool())
            .await?;
    row.map(|r| Ok((r.try_get("inbound")?, r.try_get("deadline_at_ms")?)))
        .transpose()
}

/// Runtime settings set with `!config set` (they win over the environment).
pub async fn settings(db: &Db) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query("SELECT key, value FROM settings ORDER BY key")
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("key")?, r.try_get("value")?)))
        .collect()
}

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
    let placeholders: Vec<String> = (0..errors.len()).map(|i| format!("${}", i + 2)).collect();
    let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(COUNT(*) AS BIGINT) AS e FROM outbox WHERE created_at_ms >= $1 AND outcome IN ({})",
        placeholders.join(", ")
    )))
    .bind(since_ms);
    for e in errors {
        q = q.bind(*e);
    }
    let err = q.fetch_one(db.pool()).await?;
    Ok((row.try_get("n")?, row.try_get("c")?, err.try_get("e")?))
}

/// `!forget`: erases a contact's memory, pending work, identities and the contact itself; its
/// usage is kept, unlinked (daily aggregates move to the anonymous row).
/// The values of a contact's identities (`+15550001111`, a visitor id, …).
pub async fn identity_values(db: &Db, contact_id: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT value FROM contact_identities WHERE contact_id = $1")
        .bind(contact_id)
        .fetch_all(db.pool())
        .await
}

pub async fn forget(db: &Db, contact_id: &str) -> Result<(), sqlx::Error> {
    let mut tx = db.begin_write().await?;
    for sql in [
        "DELETE FROM conversation_messages WHERE contact_id = $1",
        "DELETE FROM outbox WHERE contact_id = $1",
        "DELETE FROM voice_pending WHERE contact_id = $1",
    ] {
        sqlx::query(sql).bind(contact_id).execute(&mut *tx).await?;
    }
    // The ledger's tables keep the spend, unlinked from the contact.
    shared::usage::unlink_contact(&mut tx, contact_id).await?;
    for sql in [
        "DELETE FROM contact_identities WHERE contact_id = $1",
        "DELETE FROM contacts WHERE id = $1",
    ] {
        sqlx::query(sql).bind(contact_id).execute(&mut *tx).await?;
    }
    tx.commit().await
}
