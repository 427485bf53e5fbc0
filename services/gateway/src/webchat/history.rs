//! The web chat's own history: one Redis stream per contact (`{prefix}:wc:h:<hash>`), both
//! directions, kept `MEMORY_TTL_DAYS` (trimmed by age on every write, the key expires after the
//! last one). Every write publishes a notification on `{prefix}:wc:notify` so the server-sent
//! event streams of every gateway replica wake up.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use shared::bus::Keys;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// One message of the listing (the fixed web chat contract).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChatMessage {
    pub id: String,
    /// `in` or `out`.
    pub direction: String,
    /// `text`|`voice`|`image`|`other` (in), `reply`|`notice`|`alert` (out).
    pub kind: String,
    pub text: String,
    pub in_reply_to: Option<String>,
    /// RFC 3339.
    pub at: String,
}

/// At most this many messages are kept per contact.
const MAX_PER_CONTACT: usize = 2000;

#[derive(Clone)]
pub struct History {
    conn: ConnectionManager,
    keys: Keys,
    ttl: Duration,
    events: broadcast::Sender<String>,
}

/// A notification: a contact's history grew, or its typing indicator changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Message,
    Typing(bool),
}

impl History {
    pub fn new(conn: ConnectionManager, keys: Keys, ttl: Duration) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            conn,
            keys,
            ttl,
            events,
        }
    }

    /// The hash a contact is known by in keys and notifications.
    pub fn contact_hash(contact: &str) -> String {
        blake3::hash(contact.as_bytes()).to_hex()[..32].to_owned()
    }

    fn key(&self, contact: &str) -> String {
        self.keys
            .key(&format!("wc:h:{}", Self::contact_hash(contact)))
    }

    fn channel(&self) -> String {
        self.keys.key("wc:notify")
    }

    /// Adds the commands that append `msg` to `contact`'s history to a pipeline (so it can be
    /// written in the same transaction as the event it belongs to).
    pub fn append_commands(&self, pipe: &mut redis::Pipeline, contact: &str, msg: &ChatMessage) {
        let key = self.key(contact);
        let json = serde_json::to_string(msg).expect("a chat message serialises");
        pipe.cmd("XADD")
            .arg(&key)
            .arg("MAXLEN")
            .arg("~")
            .arg(MAX_PER_CONTACT)
            .arg("*")
            .arg("m")
            .arg(json)
            .ignore();
        let oldest = shared::ids::now_ms() - self.ttl.as_millis() as i64;
        pipe.cmd("XTRIM")
            .arg(&key)
            .arg("MINID")
            .arg(format!("{}-0", oldest.max(0)))
            .ignore();
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(self.ttl.as_millis() as u64)
            .ignore();
        pipe.cmd("PUBLISH")
            .arg(self.channel())
            .arg(format!("m:{}", Self::contact_hash(contact)))
            .ignore();
    }

    pub async fn append(&self, contact: &str, msg: &ChatMessage) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        self.append_commands(&mut pipe, contact, msg);
        pipe.query_async::<()>(&mut self.conn.clone()).await
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
        Ok(entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let m = fields.get("m")?;
                serde_json::from_str(m).ok().map(|msg| (id, msg))
            })
            .collect())
    }

    /// The whole history, oldest first.
    pub async fn list(&self, contact: &str) -> redis::RedisResult<Vec<ChatMessage>> {
        Ok(self
            .after(contact, None, MAX_PER_CONTACT * 2)
            .await?
            .into_iter()
            .map(|(_, m)| m)
            .collect())
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
            .arg(format!(
                "t{}:{}",
                if on { 1 } else { 0 },
                Self::contact_hash(contact)
            ))
            .query_async(&mut c)
            .await
    }

    /// Notifications for this process.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.events.subscribe()
    }

    /// Parses a notification for `hash`.
    pub fn parse_note(payload: &str, hash: &str) -> Option<Note> {
        let (kind, h) = payload.split_once(':')?;
        if h != hash {
            return None;
        }
        match kind {
            "m" => Some(Note::Message),
            "t1" => Some(Note::Typing(true)),
            "t0" => Some(Note::Typing(false)),
            _ => None,
        }
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
                                        let _ = self.events.send(p);
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
