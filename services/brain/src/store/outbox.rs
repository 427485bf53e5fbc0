//! The outbox: the events each inbound message produced, committed with its memory in one
//! transaction (group commit), so a redelivery republishes instead of asking the model again.

use super::*;

/// The events an inbound message produced, as kept in the outbox.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct StoredEvents {
    #[prost(message, repeated, tag = "1")]
    events: Vec<StoredEvent>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct StoredEvent {
    #[prost(string, tag = "1")]
    stream: String,
    #[prost(string, tag = "2")]
    order_key: String,
    #[prost(bytes = "vec", tag = "3")]
    envelope: Vec<u8>,
}

/// Events as the outbox keeps them.
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

/// Events as the outbox kept them, to publish again.
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

/// The events stored for an inbound message, if it was handled before.
pub async fn outbox(db: &Db, inbound_id: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let mut conn = db.pool().acquire().await?;
    outbox_on(&mut conn, inbound_id).await
}

pub(super) async fn outbox_on(
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
    /// The contact (none when the sender could not be resolved).
    pub contact_id: Option<String>,
    /// The inbound message (the outbox row's key).
    pub inbound_id: String,
    /// Memory turns to add.
    pub turns: Vec<Turn>,
    /// The events to publish ([`encode_events`]).
    pub events: Vec<u8>,
    /// What became of the message.
    pub outcome: crate::outcome::Outcome,
    /// The contact was told it talks to an AI.
    pub disclosed: bool,
    /// A voice note now waiting for its transcript: (encoded inbound event, deadline ms).
    pub voice_pending: Option<(Vec<u8>, i64)>,
    /// The transcript of this voice note (by its inbound message id) was answered.
    pub voice_done: Option<String>,
    /// The conversation is handed to a person with this message.
    pub handoff: Option<super::NewHandoff>,
    /// How many answers in a row did not know, after this one (when it changed).
    pub streak: Option<i64>,
    /// The bot is quiet for the contact until then (unix ms): the owner answered.
    pub pause_until_ms: Option<i64>,
    /// A photo joining a burst: its encoded media reference, kept for the burst's answer.
    pub burst_media: Option<Vec<u8>>,
    /// How the message counts toward its conversation, and the silence that starts a new one
    /// (ms).
    pub conversation: Option<(super::Mark, i64)>,
    /// What the console's conversation log keeps of this exchange.
    pub log: Vec<super::LogEntry>,
    /// A voice note's transcript for its logged message: (its message id, the text).
    pub log_transcript: Option<(String, String)>,
    /// The business's day it happened on (`LEDGER_TIMEZONE`), for the daily message count.
    pub day: String,
    /// When (unix ms).
    pub now_ms: i64,
}

/// Outcomes committed together ([`GroupCommit`]): one transaction for every message answered
/// at about the same time.
pub type Committer = GroupCommit<Arc<Commit>, Option<Vec<u8>>>;

/// The brain's group-commit writer.
pub fn committer(db: Db) -> Committer {
    GroupCommit::spawn("brain", db, 128, Arc::new(apply_shared))
}

pub(super) fn apply_shared<'c>(
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
            insert_turns(conn, contact_id, o).await?;
        }
        super::write_log(conn, contact_id, o).await?;
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
        if let Some(h) = &o.handoff {
            super::start_handoff(conn, contact_id, h, now_ms).await?;
        }
        if let Some(media) = &o.burst_media {
            keep_burst_media(conn, contact_id, &o.inbound_id, media, now_ms).await?;
        }
        if let Some((m, idle)) = &o.conversation {
            super::mark(conn, contact_id, m, now_ms, *idle).await?;
        }
        if let Some(until) = o.pause_until_ms {
            super::pause(conn, contact_id, until).await?;
        }
        if let Some(n) = o.streak {
            super::set_streak(conn, contact_id, n).await?;
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

/// Keeps a burst's photo (its encoded media reference) for the burst's answer.
async fn keep_burst_media(
    conn: &mut sqlx::AnyConnection,
    contact_id: &str,
    inbound_id: &str,
    media: &[u8],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO burst_media (inbound_message_id, contact_id, media, created_at_ms) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (inbound_message_id) DO NOTHING",
    )
    .bind(inbound_id)
    .bind(contact_id)
    .bind(media)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The commit's memory turns, in one statement.
async fn insert_turns(
    conn: &mut sqlx::AnyConnection,
    contact_id: &str,
    o: &Commit,
) -> Result<(), sqlx::Error> {
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
            .bind(o.now_ms);
    }
    q.execute(&mut *conn).await?;
    Ok(())
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
