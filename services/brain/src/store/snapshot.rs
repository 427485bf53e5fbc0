//! What handling an inbound message reads first — its outbox row, its sender with the day's
//! tokens and memory — read for many messages at once ([`Reader`]). Every statement on SQLite
//! is a hop to the connection's thread and back, and every pooled connection given back one
//! more (sqlx pings it): the messages waiting together are read in one statement of one row
//! per identity, the memory as one JSON value ([`memory_json`]), on a connection the reader
//! keeps. (Keeping several reader connections outside the pool was measured and made it worse:
//! past a few, they were closed and opened again.)

use std::sync::Arc;

use shared::db::{Backend, Db, GroupRead};
use sqlx::Row;

use super::memory::{Known, memory_json, turns_from_json};
use super::{CONTACT_COLUMNS_C, Contact, contact_from};

/// What one inbound message asks to read first.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The message's id (its outbox row's key).
    pub inbound_id: String,
    /// The sender's identities (kind, value).
    pub identities: Vec<(String, String)>,
    /// The day whose tokens count (`CONTACT_DAILY_TOKENS`).
    pub day: String,
    /// Whether the message may be answered (its memory is read only then).
    pub memory: bool,
}

/// What one inbound message reads first.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The events stored when this message was handled before.
    pub answered: Option<Vec<u8>>,
    /// The sender, when every identity is known and names one contact.
    pub contact: Option<Contact>,
    /// The contact's tokens today and memory (empty for an unknown sender, an answered
    /// message, or one that will not be answered).
    pub known: Known,
}

/// Reads [`Snapshot`]s, the messages waiting together in one statement.
pub type Reader = GroupRead<Ask, Snapshot>;

/// The most asks one statement reads.
const MAX_ASKS: usize = 64;

/// Starts the brain's reader (the memory: the last `memory_turns` turns).
pub fn reader(db: Db, memory_turns: usize) -> Reader {
    let backend = db.backend();
    GroupRead::spawn(
        "brain",
        db,
        MAX_ASKS,
        Arc::new(move |conn, asks| Box::pin(read(conn, backend, memory_turns, asks))),
    )
}

/// The snapshots of `asks`, in order, in one statement: a row per identity asked (padded with
/// rows that match nothing to a power of two, so few statement texts are ever prepared).
async fn read(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    memory_turns: usize,
    asks: &[Ask],
) -> Result<Vec<Snapshot>, sqlx::Error> {
    // (ask, kind, value): an ask without identities still reads its outbox row.
    let wanted: Vec<(usize, &str, &str)> = asks
        .iter()
        .enumerate()
        .flat_map(|(n, a)| {
            let ids = a
                .identities
                .iter()
                .map(move |(k, v)| (n, k.as_str(), v.as_str()));
            let none = a.identities.is_empty().then_some((n, "", ""));
            ids.chain(none)
        })
        .collect();
    let rows = wanted.len().next_power_of_two();
    let sql = format!(
        "WITH req (n, msg, day, kind, value) AS (VALUES {}) \
         SELECT r.n AS n, {CONTACT_COLUMNS_C}, \
         (SELECT o.events FROM outbox o WHERE o.inbound_message_id = r.msg) AS answered, \
         (SELECT CAST(COALESCE(SUM(u.prompt_tokens + u.completion_tokens), 0) AS BIGINT) \
          FROM usage_daily u WHERE u.day = r.day AND u.contact_id = c.id) AS tokens_today, \
         {} AS memory \
         FROM req r LEFT JOIN contact_identities i ON i.kind = r.kind AND i.value = r.value \
         LEFT JOIN contacts c ON c.id = i.contact_id",
        shared::db::rows::values(conn, rows, 5),
        memory_json(backend, memory_turns),
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for i in 0..rows {
        // Padding: an ask number no ask has, and an identity no contact has.
        let (n, kind, value) = wanted.get(i).copied().unwrap_or((usize::MAX, "", ""));
        let (msg, day) = asks
            .get(n)
            .map_or(("", ""), |a| (a.inbound_id.as_str(), a.day.as_str()));
        q = q
            .bind(i64::try_from(n).unwrap_or(-1))
            .bind(msg)
            .bind(day)
            .bind(kind)
            .bind(value);
    }
    let mut found: Vec<Vec<sqlx::any::AnyRow>> = asks.iter().map(|_| Vec::new()).collect();
    for row in q.fetch_all(&mut *conn).await? {
        let n: i64 = row.try_get("n")?;
        if let Some(rows) = usize::try_from(n).ok().and_then(|n| found.get_mut(n)) {
            rows.push(row);
        }
    }
    asks.iter()
        .zip(found)
        .map(|(ask, rows)| snapshot_of(ask, &rows))
        .collect()
}

/// One ask's snapshot from its rows (one per identity asked).
fn snapshot_of(ask: &Ask, rows: &[sqlx::any::AnyRow]) -> Result<Snapshot, sqlx::Error> {
    let Some(first) = rows.first() else {
        return Ok(Snapshot::default());
    };
    let answered: Option<Vec<u8>> = first.try_get("answered")?;
    let mut contacts = Vec::with_capacity(rows.len());
    for row in rows {
        match row.try_get::<Option<String>, _>("id")? {
            Some(_) => contacts.push(contact_from(row)?),
            None => {
                return Ok(Snapshot {
                    answered,
                    ..Snapshot::default()
                });
            }
        }
    }
    let one =
        contacts.len() == ask.identities.len() && contacts.iter().all(|c| c.id == contacts[0].id);
    if !one {
        return Ok(Snapshot {
            answered,
            ..Snapshot::default()
        });
    }
    let memory = if ask.memory && answered.is_none() {
        turns_from_json(first.try_get::<Option<String>, _>("memory")?.as_deref())?
    } else {
        Vec::new()
    };
    Ok(Snapshot {
        answered,
        known: Known {
            tokens_today: first.try_get("tokens_today")?,
            memory,
        },
        contact: contacts.into_iter().next(),
    })
}
