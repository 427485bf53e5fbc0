//! The web chat's own history: one Redis stream per contact (`{prefix}:wc:h:<hash>`), both
//! directions, held to [`MAX_ENTRIES`] and [`MAX_BYTES`] (trimmed on every write), with an index
//! (`{prefix}:wc:hi:<hash>`) that finds a page's start without reading the messages after it.
//! Every write publishes a notification on `{prefix}:wc:notify` so the server-sent event streams
//! of every gateway replica wake up.
//!
//! How long a history lives is earned: a conversation the bot never answered (the visitor's
//! own posts, the gateway's and the brain's notices) expires `WEBCHAT_UNANSWERED_TTL_SECS`
//! (default 10 minutes) after its last message; the
//! bot's answer (an outgoing `reply`) keeps it `MEMORY_TTL_DAYS`, and nothing after shortens
//! that. Anyone can open a visitor and post, so what an attacker's fresh visitors leave costs
//! Redis minutes, not a week (each history is a Redis stream: about 1.7 KB even for one short
//! notice); only what the brain answered — held by the rate limits and the visitors' daily
//! token budget — is kept for days.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use shared::bus::Keys;
use shared::proto::{inbound, outbound};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// One message of the listing (the fixed web chat contract).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChatMessage {
    /// Our id of the message.
    pub id: String,
    /// `in` or `out`.
    pub direction: Direction,
    /// `text`|`voice`|`image`|`other` (in), `reply`|`notice`|`alert` (out).
    pub kind: MessageKind,
    /// The text (a caption for media).
    pub text: String,
    /// The message an answer answers.
    pub in_reply_to: Option<String>,
    /// The customer's other messages it answers too (the earlier ones of a burst); absent when
    /// none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<String>,
    /// RFC 3339.
    pub at: String,
}

/// Whose a message is, as the listing and the stored history name it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// `in`: the customer's.
    In,
    /// `out`: the business's (the bot's answers, notices, alerts).
    Out,
}

/// What a message is, as the listing and the stored history name it (the labels of
/// [`inbound::Kind`] and [`outbound::Kind`]).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// `text` (in).
    Text,
    /// `voice` (in).
    Voice,
    /// `image` (in).
    Image,
    /// `other` (in).
    Other,
    /// `reply` (out): the bot's answer.
    Reply,
    /// `notice` (out).
    Notice,
    /// `alert` (out).
    Alert,
}

impl From<inbound::Kind> for MessageKind {
    fn from(k: inbound::Kind) -> Self {
        match k {
            inbound::Kind::Text => Self::Text,
            inbound::Kind::Voice => Self::Voice,
            inbound::Kind::Image => Self::Image,
            inbound::Kind::Other | inbound::Kind::Unspecified => Self::Other,
        }
    }
}

impl From<outbound::Kind> for MessageKind {
    fn from(k: outbound::Kind) -> Self {
        match k {
            outbound::Kind::Notice => Self::Notice,
            outbound::Kind::Alert => Self::Alert,
            outbound::Kind::Reply | outbound::Kind::Unspecified => Self::Reply,
        }
    }
}

/// At most this many messages are kept per conversation (the oldest go first).
pub const MAX_ENTRIES: usize = 200;

/// At most this many bytes of messages (their JSON) are kept per conversation: with texts held
/// to `MAX_INPUT_CHARS`, a conversation's history stays this small however much is posted.
pub const MAX_BYTES: usize = 64 * 1024;

/// The most one listing returns (and what it returns without `limit`).
pub const MAX_PAGE: usize = 1000;

/// How long an outgoing message's id is remembered by [`History::append_once`]: longer than
/// any redelivery of its outbound entry takes.
const APPEND_ONCE_WINDOW: Duration = Duration::from_secs(3600);

/// Appends a message to a history and holds the history to its size, in one step.
///
/// KEYS[1] history stream, KEYS[2] its index ([`Keys::webchat_history_index`]), KEYS[3]
/// (optional) the message's once-marker. ARGV[1] message id, ARGV[2] the message (JSON),
/// ARGV[3] most entries, ARGV[4] most bytes, ARGV[5] oldest time kept (ms), ARGV[6] history
/// lifetime (ms), ARGV[7] notification channel, ARGV[8] notification, ARGV[9] a second
/// notification after it ('' = none: the typing indicator's end), ARGV[10] marker lifetime
/// (ms), ARGV[11] '1' when ARGV[6] only lengthens the history's life (a message that is no
/// answer: the history keeps a longer life it has), '0' when it sets it (the bot's answer).
/// Returns 1 when appended, 0 when the marked message was appended before.
///
/// The oldest entries go while the history is over its entries, its bytes or its age (the
/// newest is always kept); each leaves the index with its bytes. They are read in one
/// `XRANGE` (as many as the history is over its entries, and the one after them, whose age
/// decides) and removed with one `XDEL`, one `HDEL` and one `HINCRBY`; a message's id is read
/// off the front of its JSON (serde writes `id` first), with `cjson` only when that fails. A
/// history that is down to its newest entry gets a fresh index (one left behind by an erased
/// history, or none yet).
const APPEND: &str = r#"
if KEYS[3] and not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[10]) then return 0 end
local entry = redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], entry)
local bytes = redis.call('HINCRBY', KEYS[2], '#bytes', string.len(ARGV[2]))
local n = redis.call('XLEN', KEYS[1])
local max_n, max_b, min_ms = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local gone, ids, freed, from = {}, {}, 0, '-'
while n > 1 do
  local batch = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', math.max(n - max_n, 0) + 1)
  local done = #batch == 0
  for _, e in ipairs(batch) do
    local ms = tonumber(string.match(e[1], '^(%d+)'))
    if n <= 1 or (n <= max_n and bytes - freed <= max_b and ms >= min_ms) then
      done = true
      break
    end
    local json = e[2][2] or ''
    gone[#gone + 1] = e[1]
    freed = freed + string.len(json)
    local id = string.match(json, '^{"id":"([^"\\]*)"')
    if not id then
      local ok, msg = pcall(cjson.decode, json)
      if ok and type(msg) == 'table' and type(msg.id) == 'string' then id = msg.id end
    end
    if id then ids[#ids + 1] = id end
    n = n - 1
    from = '(' .. e[1]
  end
  if done then break end
end
if #gone > 0 then
  redis.call('XDEL', KEYS[1], unpack(gone))
  if #ids > 0 then redis.call('HDEL', KEYS[2], unpack(ids)) end
  redis.call('HINCRBY', KEYS[2], '#bytes', -freed)
end
if n <= 1 then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], ARGV[1], entry, '#bytes', string.len(ARGV[2]))
end
local life = tonumber(ARGV[6])
if ARGV[11] == '1' then life = math.max(life, redis.call('PTTL', KEYS[1])) end
redis.call('PEXPIRE', KEYS[1], life)
redis.call('PEXPIRE', KEYS[2], life)
redis.call('PUBLISH', ARGV[7], ARGV[8])
if ARGV[9] ~= '' then redis.call('PUBLISH', ARGV[7], ARGV[9]) end
return 1
"#;

/// The messages of history entries, with their entry ids (entries that do not parse skipped).
fn messages(
    entries: Vec<(String, HashMap<String, String>)>,
) -> impl Iterator<Item = (String, ChatMessage)> {
    entries.into_iter().filter_map(|(id, fields)| {
        let m = fields.get("m")?;
        serde_json::from_str(m).ok().map(|msg| (id, msg))
    })
}

/// The web chat's histories on Redis (see the module docs).
#[derive(Clone)]
pub struct History {
    conn: ConnectionManager,
    keys: Keys,
    ttl: Duration,
    unanswered_ttl: Duration,
    listeners: Listeners,
}

/// This process's listeners by contact hash: a notification wakes only the event streams of
/// the contact it is about (one broadcast channel per contact being listened to), never all of
/// them.
#[derive(Clone, Default)]
struct Listeners(Arc<Mutex<HashMap<String, broadcast::Sender<Note>>>>);

/// Notifications about one contact, while it is held.
pub struct Listener {
    pub notes: broadcast::Receiver<Note>,
    hash: String,
    listeners: Listeners,
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut map = self.listeners.0.lock().expect("listeners lock");
        // Only this listener's receiver is left: nobody listens to this contact any more.
        if map
            .get(&self.hash)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            map.remove(&self.hash);
        }
    }
}

impl Listeners {
    fn subscribe(&self, hash: &str) -> Listener {
        let mut map = self.0.lock().expect("listeners lock");
        let tx = map
            .entry(hash.to_owned())
            .or_insert_with(|| broadcast::channel(16).0);
        Listener {
            notes: tx.subscribe(),
            hash: hash.to_owned(),
            listeners: self.clone(),
        }
    }

    /// Passes a notification (`m:<hash>`, `t1:<hash>`, `t0:<hash>`) to its contact's listeners.
    fn notify(&self, payload: &str) {
        let Some((kind, hash)) = payload.split_once(':') else {
            return;
        };
        let note = match kind {
            "m" => Note::Message,
            "t1" => Note::Typing(true),
            "t0" => Note::Typing(false),
            _ => return,
        };
        if let Some(tx) = self.0.lock().expect("listeners lock").get(hash) {
            let _ = tx.send(note);
        }
    }
}

/// A notification: a contact's history grew, or its typing indicator changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A message was added.
    Message,
    /// The typing indicator went on or off.
    Typing(bool),
}

impl History {
    /// Histories the bot answered in kept `ttl` after their last message, the others
    /// `unanswered_ttl` (see the module docs).
    pub fn new(
        conn: ConnectionManager,
        keys: Keys,
        ttl: Duration,
        unanswered_ttl: Duration,
    ) -> Self {
        Self {
            conn,
            keys,
            ttl,
            unanswered_ttl,
            listeners: Listeners::default(),
        }
    }

    /// The hash a contact is known by in keys and notifications (keyed: see [`Keys::hash`]).
    pub fn contact_hash(&self, contact: &str) -> String {
        self.keys.hash(contact)
    }

    /// Loads the key-name secret (before the first key is named; see [`Keys::ready`]).
    pub async fn ready(&self) -> redis::RedisResult<()> {
        self.keys.ready(&mut self.conn.clone()).await
    }

    fn key(&self, contact: &str) -> String {
        self.keys.webchat_history(contact)
    }

    fn channel(&self) -> String {
        self.keys.key("wc:notify")
    }

    /// The notification that `contact` is (not) being typed to (see [`Listeners::notify`]).
    fn typing_note(&self, contact: &str, on: bool) -> String {
        format!("t{}:{}", u8::from(on), self.contact_hash(contact))
    }

    /// The [`APPEND`] script's call for `msg` (`marker`: its once-marker and lifetime).
    fn append_cmd(
        &self,
        contact: &str,
        msg: &ChatMessage,
        marker: Option<(String, Duration)>,
        second_note: String,
    ) -> redis::Cmd {
        let json = serde_json::to_string(msg).expect("a chat message serialises");
        // Only the bot's answer earns the history its days (see the module docs).
        let answer = msg.direction == Direction::Out && msg.kind == MessageKind::Reply;
        let life = if answer {
            self.ttl
        } else {
            self.unanswered_ttl.min(self.ttl)
        };
        let oldest = shared::ids::now_ms() - self.ttl.as_millis() as i64;
        let mut cmd = redis::cmd("EVAL");
        // EVAL, not EVALSHA: inside MULTI a Redis that forgot its script cache would fail
        // the whole transaction.
        cmd.arg(APPEND)
            .arg(if marker.is_some() { 3 } else { 2 })
            .arg(self.key(contact))
            .arg(self.keys.webchat_history_index(contact));
        let marker_ms = marker.as_ref().map_or(0, |(_, ttl)| ttl.as_millis() as u64);
        if let Some((key, _)) = marker {
            cmd.arg(key);
        }
        cmd.arg(&msg.id)
            .arg(json)
            .arg(MAX_ENTRIES)
            .arg(MAX_BYTES)
            .arg(oldest.max(0))
            .arg(life.as_millis() as u64)
            .arg(self.channel())
            .arg(format!("m:{}", self.contact_hash(contact)))
            .arg(second_note)
            .arg(marker_ms)
            .arg(if answer { "0" } else { "1" });
        cmd
    }

    /// Adds the commands that append `msg` to `contact`'s history to a pipeline (so it can be
    /// written in the same transaction as the event it belongs to).
    pub fn append_commands(&self, pipe: &mut redis::Pipeline, contact: &str, msg: &ChatMessage) {
        pipe.add_command(self.append_cmd(contact, msg, None, String::new()))
            .ignore();
    }

    /// Appends an outgoing message unless a message with its id was appended within the last
    /// hour (one script: the check and the append are atomic), and writes `with` in the same
    /// transaction. The deliverer records a part as sent only after the transport accepted
    /// it; for the web chat, whose "send" is this very write, a crash in between (or a Redis
    /// restart that lost the reply) would otherwise show the answer twice when the entry is
    /// redelivered. `typing_ends` also clears the contact's typing indicator. Returns whether
    /// it was appended.
    pub async fn append_once(
        &self,
        contact: &str,
        msg: &ChatMessage,
        typing_ends: bool,
        with: &[redis::Cmd],
    ) -> redis::RedisResult<bool> {
        let marker = self.keys.key(&format!("wc:out:{}", msg.id));
        let second = if typing_ends {
            self.typing_note(contact, false)
        } else {
            String::new()
        };
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.add_command(self.append_cmd(contact, msg, Some((marker, APPEND_ONCE_WINDOW)), second));
        for c in with {
            pipe.add_command(c.clone()).ignore();
        }
        let (appended,): (i64,) = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(appended == 1)
    }

    /// The commands that tell every replica's listeners that `contact` is being typed to, for
    /// a pipeline.
    pub fn typing_commands(&self, pipe: &mut redis::Pipeline, contact: &str) {
        pipe.cmd("PUBLISH")
            .arg(self.channel())
            .arg(self.typing_note(contact, true))
            .ignore();
    }

    /// Messages after entry `after` (exclusive; `None` = from the start), oldest first, with
    /// their entry ids.
    pub async fn after(
        &self,
        contact: &str,
        after: Option<&str>,
        count: usize,
    ) -> redis::RedisResult<Vec<(String, ChatMessage)>> {
        let start = match after {
            Some(id) => format!("({id}"),
            None => "-".to_owned(),
        };
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(self.key(contact))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(messages(entries).collect())
    }

    /// The newest `limit` messages, oldest first — of those older than the message with id
    /// `before` when given (`None` when no such message is kept: the client's page is gone).
    /// Reads what it returns and no more: `before` is found in the history's index.
    pub async fn page(
        &self,
        contact: &str,
        limit: usize,
        before: Option<&str>,
    ) -> redis::RedisResult<Option<Vec<ChatMessage>>> {
        let mut conn = self.conn.clone();
        let end = match before {
            None => "+".to_owned(),
            Some(id) => {
                let entry: Option<String> = redis::cmd("HGET")
                    .arg(self.keys.webchat_history_index(contact))
                    .arg(id)
                    .query_async(&mut conn)
                    .await?;
                match entry {
                    Some(e) if !id.starts_with('#') => format!("({e}"),
                    _ => return Ok(None),
                }
            }
        };
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XREVRANGE")
            .arg(self.key(contact))
            .arg(end)
            .arg("-")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        let mut page: Vec<ChatMessage> = messages(entries).map(|(_, m)| m).collect();
        page.reverse();
        Ok(Some(page))
    }

    /// The id of the newest entry (`0-0` when there is none).
    pub async fn last_id(&self, contact: &str) -> redis::RedisResult<String> {
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XREVRANGE")
            .arg(self.key(contact))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(entries
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_owned(), |(id, _)| id))
    }

    /// Tells every replica's listeners that `contact` is (not) being typed to.
    pub async fn typing(&self, contact: &str, on: bool) -> redis::RedisResult<()> {
        let mut c = self.conn.clone();
        redis::cmd("PUBLISH")
            .arg(self.channel())
            .arg(self.typing_note(contact, on))
            .query_async(&mut c)
            .await
    }

    /// Notifications about the contact whose hash is `hash`, in this process.
    pub fn listen(&self, hash: &str) -> Listener {
        self.listeners.subscribe(hash)
    }

    /// Relays Redis notifications to this process's listeners until `shutdown`, reconnecting
    /// when Redis goes away (listeners also poll, so a gap only delays them).
    pub async fn relay(self, client: redis::Client, shutdown: CancellationToken) {
        use futures_util::StreamExt;
        let mut delay = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            let sub = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(self.channel()).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match sub.await {
                Ok(pubsub) => {
                    delay = Duration::from_millis(200);
                    let mut stream = pubsub.into_on_message();
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            msg = stream.next() => match msg {
                                Some(msg) => {
                                    if let Ok(p) = msg.get_payload::<String>() {
                                        self.listeners.notify(&p);
                                    }
                                }
                                None => break,
                            }
                        }
                    }
                    tracing::debug!("web chat notifications: subscription ended; resubscribing");
                }
                Err(e) => {
                    tracing::debug!(error = %e, "web chat notifications: cannot subscribe yet");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_reaches_only_its_contacts_listeners_and_idle_contacts_are_forgotten() {
        let l = Listeners::default();
        let mut a1 = l.subscribe("a");
        let mut a2 = l.subscribe("a");
        let mut b = l.subscribe("b");
        l.notify("m:a");
        l.notify("t1:b");
        l.notify("nonsense");
        l.notify("m:nobody");
        assert_eq!(a1.notes.try_recv().unwrap(), Note::Message);
        assert_eq!(a2.notes.try_recv().unwrap(), Note::Message);
        assert_eq!(b.notes.try_recv().unwrap(), Note::Typing(true));
        assert!(a1.notes.try_recv().is_err());
        assert!(b.notes.try_recv().is_err());
        drop(a1);
        assert!(l.0.lock().unwrap().contains_key("a"), "a2 still listens");
        drop(a2);
        drop(b);
        assert!(l.0.lock().unwrap().is_empty());
    }

    #[test]
    fn kinds_are_stored_and_listed_by_the_labels_of_the_event_kinds() {
        use shared::proto::{inbound, outbound};
        let name = |k: MessageKind| serde_json::to_value(k).unwrap();
        for k in [
            inbound::Kind::Unspecified,
            inbound::Kind::Text,
            inbound::Kind::Voice,
            inbound::Kind::Image,
            inbound::Kind::Other,
        ] {
            assert_eq!(name(k.into()), k.label(), "{k:?}");
        }
        for k in [
            outbound::Kind::Unspecified,
            outbound::Kind::Reply,
            outbound::Kind::Notice,
            outbound::Kind::Alert,
        ] {
            assert_eq!(name(k.into()), k.label(), "{k:?}");
        }
    }

    #[test]
    fn a_stored_message_reads_and_writes_back_byte_for_byte() {
        for stored in [
            r#"{"id":"01J","direction":"in","kind":"voice","text":"","in_reply_to":null,"at":"2026-01-02T03:04:05Z"}"#,
            r#"{"id":"01K","direction":"out","kind":"reply","text":"hi","in_reply_to":"01J","answers":["01H"],"at":"2026-01-02T03:04:06Z"}"#,
        ] {
            let m: ChatMessage = serde_json::from_str(stored).unwrap();
            assert_eq!(serde_json::to_string(&m).unwrap(), stored);
        }
        assert!(serde_json::from_str::<ChatMessage>(
            r#"{"id":"x","direction":"sideways","kind":"text","text":"","in_reply_to":null,"at":""}"#
        )
        .is_err());
    }
}
