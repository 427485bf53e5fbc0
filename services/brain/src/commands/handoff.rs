//! The handoff commands: `!reply <contact> <text>` (sent as the business), `!resume
//! <contact>` (back to the bot), `!handoffs` (who waits for a person). `<contact>` is a phone
//! number or the reference shown in the alert (`H-3F9A2C`; web chat visitors have no number).

use shared::proto::{Envelope, Identity, Outbound, Payload, Transport, chat_order_key, outbound};

use shared::bus::{Bus, HandleError, Publish, Stream};
use shared::db::Db;
use shared::phone::Phone;

use super::{Office, reply};
use crate::domain::{Author, Decision, Direction, LogKind, Turn};
use crate::store::{self, Contact, OrRetry};

/// Whom an admin means: a handoff's reference or a phone number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `H-3F9A2C`.
    Reference(String),
    /// A phone number.
    Number(Phone),
}

impl Target {
    /// The target at the start of `args` and the words after it (a number may be written
    /// with spaces: `+1 555 000 1111`).
    pub fn parse(args: &[&str]) -> Option<(Self, usize)> {
        let first = args.first()?;
        if first.len() > 2 && first[..2].eq_ignore_ascii_case("h-") {
            return Some((Self::Reference(first.to_ascii_uppercase()), 1));
        }
        let n = args
            .iter()
            .take_while(|w| w.chars().all(|c| c.is_ascii_digit() || "+-().".contains(c)))
            .count();
        let phone = Phone::parse(&args[..n].join(" ")).ok().filter(|_| n > 0)?;
        Some((Self::Number(phone), n))
    }

    async fn contact(&self, db: &Db) -> Result<Option<Contact>, HandleError> {
        match self {
            Self::Reference(r) => store::contact_by_handoff(db, r).await.or_retry(),
            Self::Number(p) => store::contact_by_phone(db, p.as_str()).await.or_retry(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Reference(r) => f.write_str(r),
            Self::Number(p) => write!(f, "{p}"),
        }
    }
}

/// Publishes `text` to `contact` where it last wrote from (its handoff's chat, or the chat of
/// its last logged message), or wherever its identities reach when neither is known.
pub(crate) async fn send_to(
    db: &Db,
    bus: &Bus,
    contact: &Contact,
    id: String,
    kind: outbound::Kind,
    text: &str,
) -> anyhow::Result<()> {
    let identities = store::identities_of(db, &contact.id)
        .await?
        .into_iter()
        .filter_map(|(kind, value)| {
            let k = shared::proto::identity::Kind::from_str_name(&format!(
                "KIND_{}",
                kind.to_ascii_uppercase()
            ))?;
            Some(Identity {
                kind: k as i32,
                value,
            })
        })
        .collect();
    // Where it wrote from: its handoff's chat, else the chat of its last message.
    let last = match &contact.handoff {
        Some(h) => Some(h.chat.clone()),
        None => store::last_chat(db, &contact.id).await?,
    };
    let (transport, chat) = last.map_or_else(
        || (Transport::Unspecified, String::new()),
        |(t, c)| (Transport::try_from(t).unwrap_or(Transport::Unspecified), c),
    );
    let key = if chat.is_empty() {
        format!("contact:{}", contact.id)
    } else {
        chat_order_key(transport, &chat)
    };
    let o = Outbound {
        message_id: id,
        transport: transport as i32,
        chat_id: chat,
        kind: kind as i32,
        text: text.to_owned(),
        in_reply_to: String::new(),
        identities,
        also_answers: Vec::new(),
    };
    bus.publisher()
        .publish(Publish::ordered(
            Stream::Outbound,
            Envelope::new("brain", Payload::Outbound(o)),
            key,
        ))
        .await?;
    Ok(())
}

/// `!reply`: `text` to the contact, as the business; remembered as the business's turn, and
/// the handoff no longer times out.
pub(super) async fn reply_as_business(
    office: &Office,
    target: &Target,
    text: &str,
    now: i64,
    command_id: &str,
) -> Result<Decision, HandleError> {
    let db = office.db();
    let Some(c) = target.contact(db).await? else {
        return Ok(reply(format!("No conversation found for {target}.")));
    };
    // Keyed by the admin's message: a redelivered `!reply` sends the same message, which the
    // gateway delivers once.
    let id = reply_id(&format!("command|{command_id}"));
    send_as_business(db, office.bus(), &office.events, &c, text, now, id).await?;
    Ok(reply(format!("Sent to {target}.")))
}

/// The outbound id of a person's reply, from what makes it unique.
pub(crate) fn reply_id(seed: &str) -> String {
    blake3::hash(format!("reply|{seed}").as_bytes()).to_hex()[..26].to_owned()
}

/// Sends `text` to the contact as the business (`!reply`, the console) under outbound `id`:
/// remembered as the business's turn, logged as a person's, its handoff no longer times out,
/// and the owner's tools hear of it (`message.out`, under an id of its own: a repeat is the
/// same event).
pub(crate) async fn send_as_business(
    db: &Db,
    bus: &Bus,
    events: &shared::events::Events,
    c: &Contact,
    text: &str,
    now: i64,
    id: String,
) -> Result<(), HandleError> {
    send_to(db, bus, c, id.clone(), outbound::Kind::Reply, text)
        .await
        .map_err(|e| HandleError::retry("publishing the reply", e))?;
    let data = serde_json::json!({
        "message_id": id,
        "author": "person",
        "outcome": "person_reply",
        "text": events.include_text().then_some(text),
    });
    if let Some(mut p) = events.event(shared::events::Kind::MessageOut, Some(&c.id), data) {
        p.envelope.event_id = format!("out-{id}");
        // The reply is on its way: failing now would send it again under a new id (the
        // console's retry), so a lost event is only logged.
        if let Err(e) = bus.publisher().publish(p).await {
            tracing::warn!(error = %e, "cannot publish a person's reply for the owner's webhook");
        }
    }
    let turn = Turn::business(text);
    store::add_turn(db, &c.id, &turn, &id, now)
        .await
        .or_retry()?;
    let entry = store::LogEntry {
        direction: Direction::Out,
        kind: LogKind::Text,
        content: text.to_owned(),
        author: Author::Person,
        media: None,
        message_id: id,
        chat: None,
    };
    store::log_message(db, &c.id, &entry, now)
        .await
        .or_retry()?;
    store::handoff_answered(db, &c.id).await.or_retry()?;
    Ok(())
}

/// `!resume`: the bot answers the contact again.
pub(super) async fn resume(
    office: &Office,
    target: &Target,
    now: i64,
) -> Result<Decision, HandleError> {
    let db = office.db();
    let Some(c) = target.contact(db).await? else {
        return Ok(reply(format!("No conversation found for {target}.")));
    };
    crate::tell::handoff_closed(&office.events, office.bus(), &c, "resumed")
        .await
        .map_err(|e| HandleError::retry("publishing the handoff's end", e))?;
    if store::end_handoff(db, &c.id, now).await.or_retry()? {
        Ok(reply(format!("The assistant answers {target} again.")))
    } else {
        Ok(reply(format!("{target} was not waiting for a person.")))
    }
}

/// `!handoffs`: every conversation waiting for a person, oldest first.
pub(super) async fn list(office: &Office, now: i64) -> Result<Decision, HandleError> {
    let db = office.db();
    let waiting = store::handoffs(db).await.or_retry()?;
    if waiting.is_empty() {
        return Ok(reply("No conversation is waiting for a person."));
    }
    let mut text = format!("Waiting for a person ({}):", waiting.len());
    for c in &waiting {
        let Some(h) = &c.handoff else { continue };
        let who = store::phone_of(db, &c.id)
            .await
            .or_retry()?
            .unwrap_or_else(|| "web chat visitor".to_owned());
        let minutes = (now - h.since_ms).max(0) / 60_000;
        let answered = if h.deadline_ms.is_none() {
            ", answered"
        } else {
            ""
        };
        text.push_str(&format!(
            "\n{} — {who}, {} min ago ({}{answered})",
            h.reference, minutes, h.reason
        ));
    }
    Ok(reply(text))
}
