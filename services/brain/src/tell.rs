//! What the owner's tools hear of a handled message (`EVENTS_WEBHOOK_URL`,
//! [`shared::events`]): the message in, each message out to the customer's chat, a handoff
//! opened. They travel with the commit's events: stored in the outbox row and published with the
//! acknowledgement, so a redelivery publishes the same events (same ids) again — at least once.

use shared::bus::Publish;
use shared::events::{Events, Kind};
use shared::proto::{Inbound, Payload, Transport, identity, outbound};

use crate::domain::{Decision, Outcome};

/// The transport's name in events.
pub fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Web => "web",
        Transport::Cloud => "cloud",
        Transport::Webchat => "webchat",
        Transport::Unspecified => "unknown",
    }
}

/// The message `p` sends to the chat `ib` came from, if it is one (the admins' alerts that travel
/// with a decision are theirs, not the customer's).
pub fn to_customer<'p>(ib: &Inbound, p: &'p Publish) -> Option<&'p shared::proto::Outbound> {
    match &p.envelope.payload {
        Some(Payload::Outbound(o))
            if o.kind() != outbound::Kind::Alert
                && o.transport == ib.transport
                && o.chat_id == ib.chat_id =>
        {
            Some(o)
        }
        _ => None,
    }
}

/// The customer's phone number, when the transport gave it.
fn phone(ib: &Inbound) -> Option<&str> {
    ib.identities
        .iter()
        .find(|i| i.kind() == identity::Kind::Phone)
        .map(|i| i.value.as_str())
}

/// The events of handling `ib` (`typed`: the message itself arrived now — not a transcript of
/// one logged before) for contact `contact`, given its `decision` and the `replies` published.
pub fn owner_events(
    events: &Events,
    contact: &str,
    ib: &Inbound,
    typed: bool,
    d: &Decision,
    replies: &[Publish],
) -> Vec<Publish> {
    let mut out = Vec::new();
    if events.config().url.is_none() || d.outcome == Outcome::Command {
        return out;
    }
    let text = |t: &str| events.include_text().then(|| t.to_owned());
    let transport = transport_name(ib.transport());
    if typed {
        let data = serde_json::json!({
            "message_id": ib.message_id,
            "transport": transport,
            "chat": ib.chat_id,
            "phone": phone(ib),
            "kind": ib.kind().label(),
            "from_business": ib.from_business,
            "text": text(&ib.text),
        });
        out.extend(events.event(Kind::MessageIn, Some(contact), data));
    }
    for p in replies {
        if let Some(o) = to_customer(ib, p) {
            let data = serde_json::json!({
                "message_id": o.message_id,
                "in_reply_to": o.in_reply_to,
                "transport": transport,
                "chat": o.chat_id,
                "phone": phone(ib),
                "author": d.outcome.author().as_str(),
                "outcome": d.outcome.as_str(),
                "text": text(&o.text),
            });
            out.extend(events.event(Kind::MessageOut, Some(contact), data));
        }
    }
    if let Some(h) = d.handoff() {
        let data = serde_json::json!({
            "reference": h.reference,
            "reason": h.reason.as_str(),
            "transport": transport,
            "chat": ib.chat_id,
            "phone": phone(ib),
            "back_to_bot_at_ms": h.deadline_ms,
        });
        out.extend(events.event(Kind::HandoffOpened, Some(contact), data));
    }
    out
}

/// Tells the owner's tools that `contact`'s handoff is ending (`how`: `resumed` by an admin's
/// command, `console`, or `timeout`) — nothing when only a pause was running. Before the end
/// is written, under an id fixed by the handoff: a crash in between tells again, as the same
/// event. An error when the event cannot be published (the handoff is then not ended).
pub async fn handoff_closed(
    events: &Events,
    bus: &shared::bus::Bus,
    contact: &crate::store::Contact,
    how: &str,
) -> Result<(), shared::bus::BusError> {
    let Some(h) = &contact.handoff else {
        return Ok(());
    };
    let data = serde_json::json!({ "how": how, "reference": h.reference });
    let Some(mut p) = events.event(Kind::HandoffClosed, Some(&contact.id), data) else {
        return Ok(());
    };
    p.envelope.event_id = format!("handoff-{}-{}-closed", contact.id, h.since_ms);
    bus.publisher().publish(p).await.map(|_| ())
}
