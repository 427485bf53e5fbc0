//! Erasing what Redis holds about one person (`!forget`): their web chat conversation, the
//! media they sent and the dead letters about them. Everything else in Redis about a contact
//! is transient (rate-limit state, in-flight entries) and expires within minutes.

use std::collections::HashSet;

use prost::Message;
use redis::Value;

use super::keys::Stream;
use super::{Bus, Result};
use crate::proto::{Envelope, Payload};

/// Removes media items from the gateway's media store, keeping its accounting right.
/// KEYS[1] the sender's media set, KEYS[2] index, KEYS[3] sizes, KEYS[4] total;
/// ARGV[1] the item key prefix. Returns how many items were removed.
const ERASE_MEDIA: &str = r"
local n = 0
for _, sha in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local size = redis.call('HGET', KEYS[3], sha)
  if size then
    redis.call('DECRBY', KEYS[4], size)
    redis.call('HDEL', KEYS[3], sha)
  end
  redis.call('ZREM', KEYS[2], sha)
  n = n + redis.call('DEL', ARGV[1] .. sha)
end
redis.call('DEL', KEYS[1])
return n
";

/// Who to erase: the values of their identities (`+15550001111`, a visitor id, a WhatsApp
/// id) and the brain's contact id.
#[derive(Debug, Clone, Default)]
pub struct Person {
    /// Identity values: `+15550001111`, a visitor id, a WhatsApp id.
    pub identities: Vec<String>,
    /// The brain's contact id (usage and transcription jobs carry it).
    pub contact_id: String,
}

/// What was erased.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erased {
    /// Web chat histories deleted.
    pub histories: u64,
    /// Media items deleted.
    pub media: u64,
    /// Dead letters deleted.
    pub dead_letters: u64,
}

impl Person {
    /// Every name the person goes by in Redis: identity values, and the web chat's
    /// conversation id of a phone number (its digits).
    fn names(&self) -> HashSet<String> {
        let mut names = HashSet::new();
        for v in self.identities.iter().filter(|v| !v.is_empty()) {
            names.insert(v.clone());
            if let Some(digits) = v.strip_prefix('+') {
                names.insert(digits.to_owned());
            }
        }
        names
    }

    /// Whether a dead letter's event is about this person.
    fn mentioned_in(&self, names: &HashSet<String>, env: &Envelope) -> bool {
        let about = |chat: &str, ids: &[crate::proto::Identity]| {
            names.contains(chat) || ids.iter().any(|i| names.contains(&i.value))
        };
        let contact = |id: &str| !self.contact_id.is_empty() && id == self.contact_id;
        match &env.payload {
            Some(Payload::Inbound(i)) => about(&i.chat_id, &i.identities),
            Some(Payload::Outbound(o)) => about(&o.chat_id, &o.identities),
            Some(Payload::TranscriptionJob(j)) => contact(&j.contact_id),
            Some(Payload::Usage(u)) => contact(&u.contact_id),
            Some(Payload::Webhook(w)) => about("", &w.identities),
            Some(Payload::OwnerEvent(e)) => contact(&e.contact_id),
            Some(Payload::Transcript(_)) | None => false,
        }
    }
}

impl Bus {
    /// Erases what Redis holds about `person` (see the module docs).
    pub async fn forget(&self, person: &Person) -> Result<Erased> {
        let mut conn = self.connection();
        let keys = self.keys();
        keys.ready(&mut conn).await?;
        let names = person.names();
        let mut erased = Erased::default();
        let script = redis::Script::new(ERASE_MEDIA);
        let store = keys.media();
        for name in &names {
            let deleted: u64 = redis::cmd("DEL")
                .arg(keys.webchat_history(name))
                .query_async(&mut conn)
                .await?;
            erased.histories += deleted;
            let _: u64 = redis::cmd("DEL")
                .arg(keys.webchat_history_index(name))
                .query_async(&mut conn)
                .await?;
            let media: u64 = script
                .key(keys.media_of(name))
                .key(&store.index)
                .key(&store.sizes)
                .key(&store.total)
                .arg(&store.items)
                .invoke_async(&mut conn)
                .await?;
            erased.media += media;
        }
        let dlq = self.dlq();
        for stream in Stream::ALL {
            let mut last: Option<String> = None;
            loop {
                let page = dlq.page(stream, last.as_deref(), 500).await?;
                let Some(end) = page.last().map(|e| e.id.clone()) else {
                    break;
                };
                let doomed: Vec<&str> = page
                    .iter()
                    .filter(|e| match e.map.get("e") {
                        Some(Value::BulkString(b)) => Envelope::decode(b.as_slice())
                            .is_ok_and(|env| person.mentioned_in(&names, &env)),
                        _ => false,
                    })
                    .map(|e| e.id.as_str())
                    .collect();
                if !doomed.is_empty() {
                    let n: u64 = redis::cmd("XDEL")
                        .arg(keys.dlq(stream))
                        .arg(&doomed)
                        .query_async(&mut conn)
                        .await?;
                    erased.dead_letters += n;
                }
                last = Some(end);
            }
        }
        Ok(erased)
    }
}
