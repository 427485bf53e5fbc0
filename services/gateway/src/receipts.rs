//! Delivery receipts: which of our messages a transport sent under which id (recorded when
//! it is sent), and what became of it (`delivered`, `read`, `failed`), once per status.

use redis::aio::ConnectionManager;
use shared::bus::Keys;

use crate::config::TransportKind;
use crate::metrics as m;
use crate::storage::DEDUP_WINDOW;
use crate::transport::ReceiptStatus;

/// Records a receipt's status once. KEYS[1] the sent record (`<our id>|<sent ms>`);
/// ARGV[1] the receipts key prefix, ARGV[2] status, ARGV[3] now (ms), ARGV[4] lifetime (ms).
/// Returns the sent record when the status is new for that message, else nil.
static RECEIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local found = redis.call('GET', KEYS[1])
if not found then return false end
local id = string.match(found, '^([^|]*)')
local key = ARGV[1] .. id
if redis.call('HSETNX', key, ARGV[2], ARGV[3]) == 0 then return false end
redis.call('PEXPIRE', key, ARGV[4])
return found
",
    )
});

/// The receipts of sent messages, shared by the deliverer (which records sends) and the
/// transports (which report what became of them).
#[derive(Clone)]
pub struct Receipts {
    conn: ConnectionManager,
    keys: Keys,
}

impl Receipts {
    /// Receipts kept on `bus`'s Redis.
    pub fn new(bus: &shared::bus::Bus) -> Self {
        Self {
            conn: bus.connection(),
            keys: bus.keys().clone(),
        }
    }

    /// Records that a transport sent our message `id` as `transport_message_id`, so later
    /// receipts can be matched ([`DEDUP_WINDOW`]: the Cloud API's statuses older than its replay
    /// window are ignored, WhatsApp Web reports acks live and the owner-echo check looks
    /// seconds after a send; a receipt that arrives later is not counted).
    pub fn sent_commands(
        &self,
        pipe: &mut redis::Pipeline,
        transport: TransportKind,
        transport_message_id: &str,
        id: &str,
    ) {
        pipe.cmd("SET")
            .arg(self.receipt_key(transport, transport_message_id))
            .arg(format!("{id}|{}", shared::ids::now_ms()))
            .arg("PX")
            .arg(DEDUP_WINDOW.as_millis() as u64)
            .ignore();
    }

    fn receipt_key(&self, transport: TransportKind, transport_message_id: &str) -> String {
        let h = blake3::hash(transport_message_id.as_bytes()).to_hex();
        self.keys
            .key(&format!("gw:tmid:{}:{}", transport.as_str(), &h[..32]))
    }

    /// A transport reports what became of a message it sent. Records the status (once per
    /// status), counts it and logs failures.
    pub async fn receipt(
        &self,
        transport: TransportKind,
        transport_message_id: &str,
        status: ReceiptStatus,
    ) -> redis::RedisResult<bool> {
        let key = self.receipt_key(transport, transport_message_id);
        // One round trip: which of our messages it was, and whether this status is new.
        let found: Option<String> = RECEIPT
            .key(&key)
            .arg(self.keys.key("gw:receipt:"))
            .arg(status.as_str())
            .arg(shared::ids::now_ms())
            // The statuses seen, once each: as long as the mapping that finds them.
            .arg(DEDUP_WINDOW.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let Some(found) = found else {
            return Ok(false);
        };
        let (id, sent_ms) = found.split_once('|').unwrap_or((found.as_str(), "0"));
        metrics::counter!(m::RECEIPTS, "transport" => transport.as_str(), "status" => status.as_str())
            .increment(1);
        if status == ReceiptStatus::Delivered
            && let Ok(sent) = sent_ms.parse::<i64>()
            && sent > 0
        {
            let secs = (shared::ids::now_ms() - sent).max(0) as f64 / 1000.0;
            metrics::histogram!(m::RECEIPT_LATENCY, "transport" => transport.as_str()).record(secs);
        }
        if status == ReceiptStatus::Failed {
            tracing::warn!(
                message_id = id,
                transport = transport.as_str(),
                "the transport reports a message failed to deliver"
            );
        }
        Ok(true)
    }

    /// Whether a transport's message `transport_message_id` is one the gateway sent.
    pub async fn is_sent(
        &self,
        transport: TransportKind,
        transport_message_id: &str,
    ) -> redis::RedisResult<bool> {
        redis::cmd("EXISTS")
            .arg(self.receipt_key(transport, transport_message_id))
            .query_async(&mut self.conn.clone())
            .await
    }

    /// Statuses recorded for one of our outbound message ids (`delivered`, `read`, `failed`).
    pub async fn receipts_of(&self, id: &str) -> redis::RedisResult<Vec<String>> {
        let mut c = self.conn.clone();
        redis::cmd("HKEYS")
            .arg(self.keys.key(&format!("gw:receipt:{id}")))
            .query_async(&mut c)
            .await
    }
}
