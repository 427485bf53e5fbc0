//! The outbox: the events each inbound message produced, committed with its memory in one
//! transaction (group commit), so a redelivery republishes instead of asking the model again.

use std::sync::Arc;

use prost::Message as _;
use shared::bus::{Publish, Stream};
use shared::db::{Db, GroupCommit};
use shared::proto::Envelope;
use sqlx::Row;

use super::conversations::mark_all;
use super::handoff::{pause, set_streak, start_handoff};
use super::log::{LogEntry, count_received, insert_log, log_transcript};
use crate::domain::{Decision, Direction, Effect, Mark, Outcome, Turn};

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

/// What handling one inbound message changes, written in one transaction: the outbox row and
/// the decision's effects.
pub struct Commit {
    /// The contact.
    pub contact_id: String,
    /// The outbox row's key: the inbound message id (a transcript's: [`VOICE_KEY`] and it).
    pub key: String,
    /// The events to publish ([`encode_events`]).
    pub events: Vec<u8>,
    /// What became of the message.
    pub outcome: Outcome,
    /// What the decision changes in the store, in the order applied ([`Effect::rank`]).
    pub effects: Vec<Effect>,
    /// What the console's conversation log keeps of this exchange.
    pub log: Vec<LogEntry>,
    /// The business's day it happened on (`LEDGER_TIMEZONE`), for the daily message count.
    pub day: String,
    /// When (unix ms).
    pub now_ms: i64,
}

impl Commit {
    /// The commit of `decision` for the message keyed `key` from `contact_id`, with its
    /// `events` and `log`, on `day` at `now_ms`.
    pub fn new(
        key: String,
        contact_id: String,
        decision: Decision,
        events: &[Publish],
        log: Vec<LogEntry>,
        day: String,
        now_ms: i64,
    ) -> Self {
        let mut effects: Vec<Effect> = decision
            .effects
            .into_iter()
            .filter(Effect::is_stored)
            .collect();
        effects.sort_by_key(Effect::rank);
        Self {
            contact_id,
            key,
            events: encode_events(events),
            outcome: decision.outcome,
            effects,
            log,
            day,
            now_ms,
        }
    }
}

/// Outcomes committed together ([`GroupCommit`]): one transaction for every message answered
/// at about the same time.
pub type Committer = GroupCommit<Arc<Commit>, Option<Vec<u8>>>;

/// The brain's group-commit writer.
pub fn committer(db: Db) -> Committer {
    GroupCommit::spawn_batched("brain", db, 128, Arc::new(apply_shared))
}

fn apply_shared<'c>(
    conn: &'c mut sqlx::AnyConnection,
    group: &'c [Arc<Commit>],
) -> shared::db::BoxFuture<'c, Result<Vec<Option<Vec<u8>>>, sqlx::Error>> {
    Box::pin(async move {
        let commits: Vec<&Commit> = group.iter().map(Arc::as_ref).collect();
        apply(conn, &commits).await
    })
}

/// Writes a group of commits inside a write transaction: their outbox rows, memory turns and
/// log rows in a few multi-row statements ([`super::batch`]), the day's message count once per
/// day, then each commit's other effects. A commit whose outbox row another delivery already
/// wrote (before, or earlier in this group) writes nothing and gets that row's events back.
pub async fn apply(
    conn: &mut sqlx::AnyConnection,
    commits: &[&Commit],
) -> Result<Vec<Option<Vec<u8>>>, sqlx::Error> {
    let new = insert_outbox(conn, commits).await?;
    let fresh: Vec<&Commit> = commits
        .iter()
        .zip(&new)
        .filter(|(_, new)| **new)
        .map(|(c, _)| *c)
        .collect();
    let turns: Vec<(&Commit, &Turn)> = fresh
        .iter()
        .flat_map(|c| {
            c.effects.iter().filter_map(move |e| match e {
                Effect::Remember(t) => Some((*c, t)),
                _ => None,
            })
        })
        .collect();
    insert_turns(conn, &turns).await?;
    let log: Vec<(&str, &LogEntry, i64)> = fresh
        .iter()
        .flat_map(|c| {
            c.log
                .iter()
                .map(move |e| (c.contact_id.as_str(), e, c.now_ms))
        })
        .collect();
    insert_log(conn, &log).await?;
    let mut received: Vec<(&str, i64)> = Vec::new();
    for c in fresh
        .iter()
        .filter(|c| c.log.iter().any(|e| e.direction == Direction::In))
    {
        match received.iter_mut().find(|(day, _)| *day == c.day) {
            Some((_, n)) => *n += 1,
            None => received.push((&c.day, 1)),
        }
    }
    for (day, n) in received {
        count_received(conn, day, n).await?;
    }
    let marks: Vec<(&str, &Mark, i64)> = fresh
        .iter()
        .flat_map(|c| {
            c.effects.iter().filter_map(move |e| match e {
                Effect::Conversation(m) => Some((c.contact_id.as_str(), m, c.now_ms)),
                _ => None,
            })
        })
        .collect();
    mark_all(conn, &marks).await?;
    for c in &fresh {
        for effect in &c.effects {
            apply_effect(conn, c, effect).await?;
        }
    }
    let mut out = Vec::with_capacity(commits.len());
    for (c, new) in commits.iter().zip(new) {
        out.push(if new {
            None
        } else {
            outbox_on(conn, &c.key).await?
        });
    }
    Ok(out)
}

/// The group's outbox rows, in multi-row statements: for each commit, whether its row is new
/// (the first of its key in the group, and no row had that key).
async fn insert_outbox(
    conn: &mut sqlx::AnyConnection,
    commits: &[&Commit],
) -> Result<Vec<bool>, sqlx::Error> {
    let mut first: Vec<&Commit> = Vec::with_capacity(commits.len());
    for c in commits {
        if !first.iter().any(|f| f.key == c.key) {
            first.push(c);
        }
    }
    let mut inserted: std::collections::HashSet<String> = std::collections::HashSet::new();
    for chunk in shared::db::rows::chunks(&first) {
        let sql = format!(
            "INSERT INTO outbox (inbound_message_id, contact_id, events, outcome, created_at_ms) \
             VALUES {} ON CONFLICT (inbound_message_id) DO NOTHING RETURNING inbound_message_id",
            shared::db::rows::values(conn, chunk.len(), 5)
        );
        let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
        for c in chunk {
            q = q
                .bind(&c.key)
                .bind(&c.contact_id)
                .bind(&c.events)
                .bind(c.outcome.as_str())
                .bind(c.now_ms);
        }
        inserted.extend(q.fetch_all(&mut *conn).await?);
    }
    Ok(commits
        .iter()
        .enumerate()
        .map(|(i, c)| {
            inserted.contains(&c.key) && !commits[..i].iter().any(|earlier| earlier.key == c.key)
        })
        .collect())
}

/// One effect of a decision, inside its commit's transaction.
async fn apply_effect(
    conn: &mut sqlx::AnyConnection,
    o: &Commit,
    effect: &Effect,
) -> Result<(), sqlx::Error> {
    let (contact, now_ms) = (o.contact_id.as_str(), o.now_ms);
    match effect {
        // Written together above (a statement or two for the group), or not the store's.
        Effect::Remember(_)
        | Effect::Conversation(_)
        | Effect::Publish(_)
        | Effect::AlsoAnswers(_) => Ok(()),
        Effect::Disclose => set_contact(
            conn,
            "UPDATE contacts SET disclosed_at_ms = $1 WHERE id = $2 AND disclosed_at_ms IS NULL",
            contact,
            now_ms,
        )
        .await,
        Effect::OptOut(out) => {
            let sql = if *out {
                "UPDATE contacts SET opted_out = 1, updated_at_ms = $1 WHERE id = $2"
            } else {
                "UPDATE contacts SET opted_out = 0, updated_at_ms = $1 WHERE id = $2"
            };
            set_contact(conn, sql, contact, now_ms).await
        }
        Effect::RefusedToday => {
            sqlx::query(
                "UPDATE contacts SET last_refusal_day = $1, updated_at_ms = $2 WHERE id = $3",
            )
            .bind(&o.day)
            .bind(now_ms)
            .bind(contact)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }
        Effect::HandOff(h) => start_handoff(conn, contact, h, now_ms).await,
        Effect::Streak(n) => set_streak(conn, contact, *n).await,
        Effect::PauseUntil(until) => pause(conn, contact, *until).await,
        Effect::AwaitTranscript {
            inbound,
            deadline_ms,
        } => {
            sqlx::query(
                "INSERT INTO voice_pending (message_id, contact_id, inbound, deadline_at_ms, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (message_id) DO NOTHING",
            )
            .bind(&o.key)
            .bind(contact)
            .bind(inbound)
            .bind(*deadline_ms)
            .bind(now_ms)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }
        Effect::TranscriptDone { message_id, text } => {
            sqlx::query("DELETE FROM voice_pending WHERE message_id = $1")
                .bind(message_id)
                .execute(&mut *conn)
                .await?;
            log_transcript(conn, contact, message_id, text).await
        }
        Effect::KeepBurstMedia(media) => {
            keep_burst_media(conn, contact, &o.key, media, now_ms).await
        }
        Effect::BurstMediaUsed => {
            sqlx::query("DELETE FROM burst_media WHERE contact_id = $1")
                .bind(contact)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
    }
}

/// Runs `sql` (binding the time, then the contact's id) on the contact's row.
async fn set_contact(
    conn: &mut sqlx::AnyConnection,
    sql: &'static str,
    contact_id: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql)
        .bind(now_ms)
        .bind(contact_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
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

/// The group's memory turns, in multi-row statements, in order (ids ascend with the rows).
async fn insert_turns(
    conn: &mut sqlx::AnyConnection,
    turns: &[(&Commit, &Turn)],
) -> Result<(), sqlx::Error> {
    for chunk in shared::db::rows::chunks(turns) {
        let sql = format!(
            "INSERT INTO conversation_messages (contact_id, role, content, inbound_message_id, created_at_ms) \
             VALUES {}",
            shared::db::rows::values(conn, chunk.len(), 5)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (c, t) in chunk {
            q = q
                .bind(&c.contact_id)
                .bind(t.speaker.as_str())
                .bind(&t.content)
                .bind(&c.key)
                .bind(c.now_ms);
        }
        q.execute(&mut *conn).await?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NewHandoff, Reason};

    #[test]
    fn a_commit_keeps_what_the_store_applies_in_the_order_it_must() {
        let d = Decision::silent(Outcome::HandedOff)
            .with(Effect::HandOff(NewHandoff {
                reference: "H-1".into(),
                reason: Reason::Asked,
                deadline_ms: 2,
                chat: (0, "chat".into()),
            }))
            .with(Effect::Streak(3))
            .with(Effect::KeepBurstMedia(vec![1]))
            .with(Effect::BurstMediaUsed)
            .with(Effect::AlsoAnswers(vec!["m0".into()]))
            .with(Effect::publish(Publish::new(
                Stream::Usage,
                Envelope::default(),
            )));
        let c = Commit::new("m1".into(), "c1".into(), d, &[], Vec::new(), "d".into(), 1);
        let kinds: Vec<&str> = c
            .effects
            .iter()
            .map(|e| match e {
                Effect::Streak(_) => "streak",
                Effect::BurstMediaUsed => "media used",
                Effect::HandOff(_) => "handoff",
                Effect::KeepBurstMedia(_) => "media kept",
                other => panic!("not the store's: {other:?}"),
            })
            .collect();
        assert_eq!(kinds, ["streak", "media used", "handoff", "media kept"]);
    }
}
