//! Admission of an inbound message, in one atomic Lua script shared by every gateway replica:
//! duplicate check (transport message id, [`DEDUP_WINDOW`]), then the per-sender and global rate limits
//! (GCRA on Redis `TIME`), then "tell the sender once per window".

use std::time::Duration;

use redis::aio::ConnectionManager;
use shared::bus::Keys;

use crate::storage::DEDUP_WINDOW;

/// How long a message may sit between admission and publication before a redelivery from
/// the transport is admitted again (a gateway that crashed in between loses nothing).
pub const PENDING_TTL: Duration = Duration::from_secs(60);
/// The rate-limit period: limits are messages per minute.
pub const PERIOD: Duration = Duration::from_secs(60);
/// How long a message a rate limit refused is remembered as seen: one period. Within it a
/// redelivery is the same message (and refused again without a second notice); after it, a
/// redelivery may be answered — it never was. A flood of refused messages so leaves nothing
/// that outlives the minute it was sent in.
pub const LIMITED_SEEN_TTL: Duration = PERIOD;

/// KEYS: 1 seen marker, 2 sender's GCRA state, 3 global GCRA state, 4 sender's notice marker.
/// ARGV: 1 message id, 2 pending TTL ms, 3 sender rate, 4 global rate, 5 period ms,
/// 6 a limited message's seen-marker lifetime ms ([`LIMITED_SEEN_TTL`]).
/// Returns `{'dup', first_id}`, `{'ok', ''}`, or `{'limited', scope, notify}`.
const ADMIT: &str = r"
local seen = redis.call('GET', KEYS[1])
if seen then return {'dup', seen} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = tonumber(ARGV[5])
local function gcra(key, rate)
  if rate <= 0 then return true, nil end
  local interval = period / rate
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  if new_tat - period > now then return false, nil end
  return true, new_tat
end
local ok_c, tat_c = gcra(KEYS[2], tonumber(ARGV[3]))
local ok_g, tat_g = true, nil
if ok_c then ok_g, tat_g = gcra(KEYS[3], tonumber(ARGV[4])) end
if ok_c and ok_g then
  if tat_c then redis.call('SET', KEYS[2], tostring(tat_c), 'PX', math.ceil(tat_c - now) + 1) end
  if tat_g then redis.call('SET', KEYS[3], tostring(tat_g), 'PX', math.ceil(tat_g - now) + 1) end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {'ok', ''}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[6])
local notify = redis.call('SET', KEYS[4], '1', 'PX', period, 'NX')
local scope = 'contact'
if ok_c then scope = 'global' end
if notify then return {'limited', scope, '1'} end
return {'limited', scope, '0'}
";

/// Which limit stopped a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `RATE_LIMIT_PER_CONTACT`.
    Contact,
    /// `RATE_LIMIT_GLOBAL` (or `RATE_LIMIT_VISITORS` for web chat visitors).
    Global,
}

impl Scope {
    /// `contact` or `global`, as counted.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Contact => "contact",
            Self::Global => "global",
        }
    }
}

/// What admission decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Publish it (then [`Admitter::seen_commands`] in the same transaction).
    Accepted,
    /// Seen before under this gateway message id.
    Duplicate {
        /// The id the first copy was published under.
        first_id: String,
    },
    /// Over a limit; `notify` is true for the first limited message of the window.
    Limited {
        /// Which limit.
        scope: Scope,
        /// Tell the sender (the first limited message of the window).
        notify: bool,
    },
}

/// Limits per minute.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `RATE_LIMIT_PER_CONTACT`.
    pub per_contact: u32,
    /// `RATE_LIMIT_GLOBAL`.
    pub global: u32,
    /// All web chat visitors together, apart from `global` (WhatsApp's customers).
    pub visitors: u32,
}

/// Admission of inbound messages (duplicates, rate limits), shared by every replica through Redis.
#[derive(Clone)]
pub struct Admitter {
    conn: ConnectionManager,
    keys: Keys,
    limits: Limits,
    script: redis::Script,
}

impl Admitter {
    /// An admitter with these limits.
    pub fn new(conn: ConnectionManager, keys: Keys, limits: Limits) -> Self {
        Self {
            conn,
            keys,
            limits,
            script: redis::Script::new(ADMIT),
        }
    }

    /// Keyed: the web chat's ids carry the contact.
    fn seen_key(&self, transport: &str, transport_message_id: &str) -> String {
        let h = self.keys.hash(transport_message_id);
        self.keys.key(&format!("gw:seen:{transport}:{h}"))
    }

    /// Decides on one message. `sender` is the rate-limit subject (the phone number when known);
    /// a web chat `visitor` counts against the visitors' global budget instead of the shared one.
    pub async fn admit(
        &self,
        transport: &str,
        transport_message_id: &str,
        sender: &str,
        message_id: &str,
        visitor: bool,
    ) -> redis::RedisResult<Admission> {
        let (global_key, global) = if visitor {
            ("gw:rl:visitors", self.limits.visitors)
        } else {
            ("gw:rl:global", self.limits.global)
        };
        let mut conn = self.conn.clone();
        self.keys.ready(&mut conn).await?;
        let sender = self.keys.hash(sender);
        let reply: Vec<String> = self
            .script
            .key(self.seen_key(transport, transport_message_id))
            .key(self.keys.key(&format!("gw:rl:c:{sender}")))
            .key(self.keys.key(global_key))
            .key(self.keys.key(&format!("gw:rl:n:{sender}")))
            .arg(message_id)
            .arg(PENDING_TTL.as_millis() as u64)
            .arg(self.limits.per_contact)
            .arg(global)
            .arg(PERIOD.as_millis() as u64)
            .arg(LIMITED_SEEN_TTL.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(match reply.first().map(String::as_str) {
            Some("dup") => Admission::Duplicate {
                first_id: reply.get(1).cloned().unwrap_or_default(),
            },
            Some("limited") => Admission::Limited {
                scope: if reply.get(1).map(String::as_str) == Some("global") {
                    Scope::Global
                } else {
                    Scope::Contact
                },
                notify: reply.get(2).map(String::as_str) == Some("1"),
            },
            _ => Admission::Accepted,
        })
    }

    /// Commands that turn the pending seen marker into the lasting one ([`DEDUP_WINDOW`]: as
    /// long as the transport may deliver the message again); run them in the transaction that
    /// publishes the message.
    pub fn seen_commands(
        &self,
        pipe: &mut redis::Pipeline,
        transport: &str,
        transport_message_id: &str,
        message_id: &str,
    ) {
        pipe.cmd("SET")
            .arg(self.seen_key(transport, transport_message_id))
            .arg(message_id)
            .arg("PX")
            .arg(DEDUP_WINDOW.as_millis() as u64)
            .ignore();
    }

    /// Forgets the pending marker after a failed publication, so a retry is admitted.
    pub async fn release(&self, transport: &str, transport_message_id: &str) {
        let mut c = self.conn.clone();
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(self.seen_key(transport, transport_message_id))
            .query_async(&mut c)
            .await;
    }
}
