//! Outbound: the consumer of the outbound stream. Messages of one chat are delivered in order
//! (they are published with the chat as order key); each is converted to WhatsApp formatting,
//! split to the transport's length limit and sent part by part. A part is recorded as sent
//! (`{prefix}:gw:sent:<id>`, [`DEDUP_WINDOW`]) the moment the transport accepts it, so a
//! redelivery after a crash or a failure on a later part never sends a part twice. The bus
//! redelivers within minutes; a dead letter replayed more than a day after it failed may repeat
//! a part sent before the failure (the Cloud API refuses a reply that late anyway: its 24-hour
//! window). Transient failures are
//! retried in place by the bus; permanent ones are dead-lettered with their reason.

use std::sync::Arc;
use std::time::Instant;

use redis::aio::ConnectionManager;
use shared::bus::{Delivery, HandleError, Handler, Keys, Publish};
use shared::proto::{Outbound, Payload, outbound};

use crate::config::TransportKind;
use crate::format::{markdown_to_whatsapp, split_message};
use crate::metrics as m;
use crate::receipts::Receipts;
use crate::storage::DEDUP_WINDOW;
use crate::transport::{OutgoingText, SendError, Transport, Transports};
use crate::typing::Typing;

/// The outbound consumer's handler (see the module docs).
pub struct Deliverer {
    transports: Transports,
    receipts: Receipts,
    typing: Typing,
    conn: ConnectionManager,
    keys: Keys,
}

impl Deliverer {
    /// A deliverer through `transports`.
    pub fn new(
        transports: Transports,
        receipts: Receipts,
        typing: Typing,
        bus: &shared::bus::Bus,
    ) -> Self {
        Self {
            transports,
            receipts,
            typing,
            conn: bus.connection(),
            keys: bus.keys().clone(),
        }
    }

    fn sent_key(&self, part_id: &str) -> String {
        self.keys.key(&format!("gw:sent:{part_id}"))
    }
}

impl Deliverer {
    /// The sent record of part `id` (and its receipt mapping) in one transaction.
    fn record(&self, key: &str, kind: TransportKind, tmid: &str, id: &str) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("SET")
            .arg(key)
            .arg(tmid)
            .arg("PX")
            .arg(DEDUP_WINDOW.as_millis() as u64)
            .ignore();
        self.receipts.sent_commands(&mut pipe, kind, tmid, id);
        pipe
    }

    /// Sends one part unless it was sent before, and records it as sent.
    async fn send_part(
        &self,
        transport: &Arc<dyn Transport>,
        o: &Outbound,
        chat_id: &str,
        id: String,
        part: String,
        deliveries: u32,
    ) -> Result<(), HandleError> {
        let kind = transport.kind();
        let mut conn = self.conn.clone();
        let key = self.sent_key(&id);
        let sent: bool = !transport.sends_once()
            && redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(|e| HandleError::retry("cannot check the sent record", e))?;
        if sent {
            metrics::counter!(m::OUTBOUND_SKIPPED, "transport" => kind.as_str()).increment(1);
            tracing::info!(part = %id, "part already sent; not sending it again");
            return Ok(());
        }
        // The sent record (and the receipt mapping), written after the transport took
        // the part — also when it had sent it already: a crash may have come between its
        // send and this record. A transport that sends once writes it with its send.
        let record = |tmid: &str| self.record(&key, kind, tmid, &id);
        let msg = OutgoingText {
            id: id.clone(),
            chat_id: chat_id.to_owned(),
            text: part,
            kind: o.kind(),
            in_reply_to: o.in_reply_to.clone(),
            also_answers: o.also_answers.clone(),
            record: if transport.sends_once() {
                record(&id).cmd_iter().cloned().collect()
            } else {
                Vec::new()
            },
        };
        let started = Instant::now();
        let result = transport.send_text(&msg).await;
        metrics::histogram!(m::SEND_LATENCY, "transport" => kind.as_str())
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(s) => {
                if !s.recorded {
                    record_sent(&mut conn, &record(&s.transport_message_id)).await?;
                }
                if s.already {
                    metrics::counter!(m::OUTBOUND_SKIPPED, "transport" => kind.as_str())
                        .increment(1);
                    tracing::info!(part = %id, "part already sent; not sending it again");
                } else {
                    metrics::counter!(m::OUTBOUND_SENT, "transport" => kind.as_str()).increment(1);
                }
            }
            Err(SendError::Transient(e)) => {
                metrics::counter!(m::OUTBOUND_FAILED, "transport" => kind.as_str(), "failure" => "transient")
                    .increment(1);
                tracing::warn!(error = %e, deliveries = deliveries, "send failed; will retry");
                return Err(HandleError::Retry(e));
            }
            Err(SendError::Permanent(e)) => {
                metrics::counter!(m::OUTBOUND_FAILED, "transport" => kind.as_str(), "failure" => "permanent")
                    .increment(1);
                tracing::warn!(error = %e, "send failed for good; dead-lettering");
                return Err(HandleError::Permanent(e));
            }
        }
        Ok(())
    }
}

/// The id of part `i` (0-based) of a message split into `n` parts.
pub fn part_id(message_id: &str, i: usize, n: usize) -> String {
    if n <= 1 || i == 0 {
        message_id.to_owned()
    } else {
        format!("{message_id}.{}", i + 1)
    }
}

impl Handler for Deliverer {
    #[tracing::instrument(name = "gateway.deliver", skip_all, fields(message_id, transport))]
    async fn handle(&self, d: Delivery) -> Result<Vec<Publish>, HandleError> {
        let Some(Payload::Outbound(o)) = &d.envelope.payload else {
            return Err(HandleError::Permanent("not an outbound event".into()));
        };
        let span = tracing::Span::current();
        span.record("message_id", o.message_id.as_str());
        if o.message_id.is_empty() {
            return Err(HandleError::Permanent(
                "outbound message without an id".into(),
            ));
        }
        let (transport, chat_id) = self
            .transports
            .route(o.transport(), &o.chat_id, &o.identities)
            .map_err(|e| HandleError::Permanent(e.into()))?;
        let kind = transport.kind();
        span.record("transport", kind.as_str());
        let text = markdown_to_whatsapp(&o.text);
        if text.trim().is_empty() {
            return Err(HandleError::Permanent("empty message".into()));
        }
        let parts = split_message(&text, transport.max_text_chars());
        let n = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            let id = part_id(&o.message_id, i, n);
            self.send_part(&transport, o, &chat_id, id, part, d.deliveries)
                .await?;
        }
        if o.kind() != outbound::Kind::Alert {
            self.typing.stop(kind, &chat_id);
        }
        let age_ms = shared::ids::now_ms() - d.envelope.created_at_ms;
        metrics::histogram!(m::DELIVERY_LATENCY, "transport" => kind.as_str())
            .record(age_ms.max(0) as f64 / 1000.0);
        tracing::info!(
            parts = n,
            kind = o.kind().as_str_name(),
            "outbound message delivered to the transport"
        );
        Ok(Vec::new())
    }

    /// A delivery may wait for the transport's pacing (anti-ban delays, reconnects).
    fn deadline(&self) -> std::time::Duration {
        std::time::Duration::from_secs(60)
    }
}

/// Writes the sent record, retrying briefly: the part is out, so losing the record would send
/// it again on the next delivery.
async fn record_sent(
    conn: &mut ConnectionManager,
    pipe: &redis::Pipeline,
) -> Result<(), HandleError> {
    use backon::{ExponentialBuilder, Retryable};
    let attempt = || {
        let mut c = conn.clone();
        async move { pipe.query_async::<()>(&mut c).await }
    };
    attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(std::time::Duration::from_millis(50))
                .with_max_times(6),
        )
        .await
        .map_err(|e| HandleError::retry("cannot record the sent message", e))
}
