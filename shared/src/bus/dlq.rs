//! Listing and replaying dead letters (`<stream>:dlq`).

use std::collections::HashMap;

use prost::Message;
use redis::Value;
use redis::aio::ConnectionManager;
use redis::streams::{StreamId, StreamRangeReply};

use super::keys::{Keys, Stream};
use super::publish::add_publish_raw;
use crate::proto::Envelope;

/// Why an entry was dead-lettered: its `dlq_kind` field and the `reason` label of
/// `bus_dead_lettered_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterKind {
    /// `undecodable`: not one of our envelopes (never handled).
    Undecodable,
    /// `max_deliveries`: failed on every delivery `MAX_DELIVERIES` allows.
    MaxDeliveries,
    /// `permanent`: its handler said it will never succeed.
    Permanent,
}

impl DeadLetterKind {
    /// Every kind, for registering the metric at zero.
    pub const ALL: [Self; 3] = [Self::Undecodable, Self::MaxDeliveries, Self::Permanent];

    /// The stored field's value and the metric's label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Undecodable => "undecodable",
            Self::MaxDeliveries => "max_deliveries",
            Self::Permanent => "permanent",
        }
    }

    /// The kind a stored `dlq_kind` names. Only the consumer writes the field, with one of
    /// [`DeadLetterKind::ALL`]; anything else (an entry added by hand) lists as `permanent`.
    fn parse(stored: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|k| k.label() == stored)
            .unwrap_or(Self::Permanent)
    }
}

/// One dead letter as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    /// Id in the dead-letter stream.
    pub id: String,
    /// Id the entry had in its source stream.
    pub source_id: String,
    /// `undecodable`, `max_deliveries` or `permanent`.
    pub kind: DeadLetterKind,
    /// Why it was dead-lettered (the error chain).
    pub reason: String,
    /// Deliveries tried.
    pub deliveries: u64,
    /// When (unix ms).
    pub at_ms: i64,
    /// Payload kind, when the envelope decodes.
    pub event: Option<String>,
    /// The envelope's id, when it decodes.
    pub event_id: Option<String>,
}

/// Dead-letter operations.
#[derive(Clone)]
pub struct Dlq {
    conn: ConnectionManager,
    keys: Keys,
}

fn text(map: &HashMap<String, Value>, k: &str) -> String {
    match map.get(k) {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    }
}

impl Dlq {
    pub(crate) fn new(conn: ConnectionManager, keys: Keys) -> Self {
        Self { conn, keys }
    }

    /// Up to `count` raw dead letters of `stream`, oldest first, after the entry `after`
    /// (`None`: from the start).
    pub(crate) async fn page(
        &self,
        stream: Stream,
        after: Option<&str>,
        count: usize,
    ) -> super::Result<Vec<StreamId>> {
        let start = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.keys.dlq(stream))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(reply.ids)
    }

    /// The oldest `limit` dead letters of `stream`.
    pub async fn list(&self, stream: Stream, limit: usize) -> super::Result<Vec<DeadLetter>> {
        Ok(self
            .page(stream, None, limit)
            .await?
            .into_iter()
            .map(|e| {
                let envelope = match e.map.get("e") {
                    Some(Value::BulkString(b)) => Envelope::decode(b.as_slice()).ok(),
                    _ => None,
                };
                DeadLetter {
                    source_id: text(&e.map, "dlq_source_id"),
                    kind: DeadLetterKind::parse(&text(&e.map, "dlq_kind")),
                    reason: text(&e.map, "dlq_reason"),
                    deliveries: text(&e.map, "dlq_deliveries").parse().unwrap_or(0),
                    at_ms: text(&e.map, "dlq_at_ms").parse().unwrap_or(0),
                    event: envelope
                        .as_ref()
                        .and_then(|e| e.payload.as_ref())
                        .map(|p| p.kind().to_owned()),
                    event_id: envelope.map(|e| e.event_id),
                    id: e.id,
                }
            })
            .collect())
    }

    /// Number of dead letters of `stream`.
    pub async fn len(&self, stream: Stream) -> super::Result<u64> {
        Ok(redis::cmd("XLEN")
            .arg(self.keys.dlq(stream))
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// Deletes the dead letters `ids` of `stream` for good; returns how many were there.
    pub async fn discard(&self, stream: Stream, ids: &[String]) -> super::Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        Ok(redis::cmd("XDEL")
            .arg(self.keys.dlq(stream))
            .arg(ids)
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// Moves dead letters back to the tail of their stream (all of them, or the ids given),
    /// each atomically: republished with its original fields (and its contact's order) and
    /// deleted from the dead-letter stream. Returns how many were replayed.
    pub async fn replay(&self, stream: Stream, only: &[String]) -> super::Result<u64> {
        let mut conn = self.conn.clone();
        let mut replayed = 0;
        let mut last: Option<String> = None;
        loop {
            let page = self.page(stream, last.as_deref(), 100).await?;
            let Some(end) = page.last().map(|e| e.id.clone()) else {
                break;
            };
            for e in page {
                if !only.is_empty() && !only.contains(&e.id) {
                    continue;
                }
                let fields: Vec<(&str, Vec<u8>)> = e
                    .map
                    .iter()
                    .filter(|(k, _)| !k.starts_with("dlq_"))
                    .filter_map(|(k, v)| match v {
                        Value::BulkString(b) => Some((k.as_str(), b.clone())),
                        _ => None,
                    })
                    .collect();
                let token = text(&e.map, "k");
                let mut pipe = redis::pipe();
                pipe.atomic();
                add_publish_raw(
                    &mut pipe,
                    &self.keys,
                    stream,
                    (!token.is_empty()).then_some(token.as_str()),
                    &fields,
                );
                pipe.ignore();
                pipe.cmd("XDEL")
                    .arg(self.keys.dlq(stream))
                    .arg(&e.id)
                    .ignore();
                pipe.query_async::<()>(&mut conn).await?;
                replayed += 1;
            }
            last = Some(end);
        }
        Ok(replayed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_stored_listed_and_counted_by_the_same_names() {
        for k in DeadLetterKind::ALL {
            assert_eq!(DeadLetterKind::parse(k.label()), k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.label());
        }
        assert_eq!(
            DeadLetterKind::ALL.map(DeadLetterKind::label),
            ["undecodable", "max_deliveries", "permanent"]
        );
    }
}
