//! Publishing envelopes to streams.

use prost::Message;
use redis::aio::ConnectionManager;

use super::keys::{Keys, Stream};
use super::scripts;
use crate::proto::Envelope;

/// Order lists expire if a deployment's streams are abandoned (a week; refreshed on publish).
pub(crate) const ORDER_TTL_SECS: u64 = 7 * 24 * 3600;

/// One event to publish.
#[derive(Debug, Clone)]
pub struct Publish {
    /// Where to.
    pub stream: Stream,
    /// What.
    pub envelope: Envelope,
    /// Entries with the same order key are handled one at a time, in order (the contact).
    pub order_key: Option<String>,
}

impl Publish {
    /// An event without order.
    pub fn new(stream: Stream, envelope: Envelope) -> Self {
        Self {
            stream,
            envelope,
            order_key: None,
        }
    }

    /// An event handled in order with every other of `order_key` (the contact).
    pub fn ordered(stream: Stream, envelope: Envelope, order_key: impl Into<String>) -> Self {
        Self {
            stream,
            envelope,
            order_key: Some(order_key.into()),
        }
    }

    /// An operational alert to an admin's phone number (E.164), delivered by whichever
    /// transport can reach it; `id` makes a repeated alert idempotent.
    pub fn admin_alert(producer: &str, id: String, text: &str, phone: &str) -> Self {
        use crate::proto::{Identity, Outbound, Payload, identity, outbound};
        let env = Envelope::new(
            producer,
            Payload::Outbound(Outbound {
                message_id: id,
                kind: outbound::Kind::Alert as i32,
                text: text.to_owned(),
                identities: vec![Identity {
                    kind: identity::Kind::Phone as i32,
                    value: phone.to_owned(),
                }],
                ..Default::default()
            }),
        );
        Self::ordered(Stream::Outbound, env, phone)
    }
}

/// Adds the publish script for `p` to a pipeline (inside or outside `MULTI`).
pub(crate) fn add_publish(pipe: &mut redis::Pipeline, keys: &Keys, p: &Publish) {
    // A keyed hash, so no phone number sits in Redis key names.
    let token = p.order_key.as_deref().map(|k| keys.hash(k));
    let fields: Vec<(&str, Vec<u8>)> = match &token {
        Some(t) => vec![
            ("e", p.envelope.encode_to_vec()),
            ("k", t.as_bytes().to_vec()),
        ],
        None => vec![("e", p.envelope.encode_to_vec())],
    };
    add_publish_raw(pipe, keys, p.stream, token.as_deref(), &fields);
}

/// Adds the publish script with raw fields (used by DLQ replay).
pub(crate) fn add_publish_raw(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    stream: Stream,
    token: Option<&str>,
    fields: &[(&str, Vec<u8>)],
) {
    let stream_key = keys.stream(stream);
    let cmd = match token {
        // Only an ordered entry needs the script (its id joins the order list); an unordered
        // one is a plain XADD, same reply, without a Lua call (several times XADD's cost).
        None => pipe.cmd("XADD").arg(stream_key).arg("*"),
        Some(t) => pipe
            .cmd("EVAL")
            .arg(scripts::PUBLISH)
            .arg(2)
            .arg(stream_key)
            .arg(keys.order(stream, t))
            .arg(t)
            .arg(ORDER_TTL_SECS),
    };
    for (k, v) in fields {
        cmd.arg(*k).arg(v.as_slice());
    }
}

/// Publishes envelopes (outside a consumer's ack transaction).
#[derive(Clone)]
pub struct Publisher {
    conn: ConnectionManager,
    keys: Keys,
    service: &'static str,
}

impl Publisher {
    pub(crate) fn new(conn: ConnectionManager, keys: Keys, service: &'static str) -> Self {
        Self {
            conn,
            keys,
            service,
        }
    }

    /// The connection, once the key-name secret is loaded.
    async fn conn(&self) -> super::Result<ConnectionManager> {
        let mut conn = self.conn.clone();
        self.keys.ready(&mut conn).await?;
        Ok(conn)
    }

    /// The name stamped on envelopes as their producer.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// Publishes one event; returns its stream entry id.
    pub async fn publish(&self, p: Publish) -> super::Result<String> {
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        add_publish(&mut pipe, &self.keys, &p);
        let (id,): (String,) = pipe.query_async(&mut conn).await?;
        metrics::counter!(super::metrics::PUBLISHED, "stream" => p.stream.name()).increment(1);
        Ok(id)
    }

    /// Publishes several events and runs `extra` commands (whose replies are ignored) in one
    /// `MULTI`/`EXEC`: e.g. the gateway marks a message as seen in the same transaction that
    /// publishes it. The extra keys must be under this deployment's hash tag.
    pub async fn publish_with(
        &self,
        events: &[Publish],
        extra: impl FnOnce(&mut redis::Pipeline),
    ) -> super::Result<Vec<String>> {
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for p in events {
            add_publish(&mut pipe, &self.keys, p);
        }
        extra(&mut pipe);
        let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let mut ids = Vec::with_capacity(events.len());
        for v in replies.into_iter().take(events.len()) {
            ids.push(redis::from_redis_value(v).map_err(redis::RedisError::from)?);
        }
        for p in events {
            metrics::counter!(super::metrics::PUBLISHED, "stream" => p.stream.name()).increment(1);
        }
        Ok(ids)
    }

    /// Publishes many events in one round trip, not atomically (bulk loads, benchmarks).
    pub async fn publish_batch(&self, events: &[Publish]) -> super::Result<Vec<String>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        for p in events {
            add_publish(&mut pipe, &self.keys, p);
        }
        let ids: Vec<String> = pipe.query_async(&mut conn).await?;
        for p in events {
            metrics::counter!(super::metrics::PUBLISHED, "stream" => p.stream.name()).increment(1);
        }
        Ok(ids)
    }
}
