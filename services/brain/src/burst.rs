//! Bursts: with `BURST_WINDOW_MS`, a customer who sends several messages in a row gets one
//! answer. Each text or photo waits the window; when the customer wrote again meanwhile it is
//! absorbed (remembered, no answer of its own, a photo kept), and the burst's last message is
//! answered with the earlier ones joined to it ([`gather`]). A voice note's transcript joins
//! the burst of messages still waiting ([`voice_joins`]), and the burst's last message waits
//! for the voice notes still being transcribed ([`more_follows`]).

use std::time::Duration;

use shared::bus::{Bus, Delivery, HandleError, Stream};
use shared::db::Db;
use shared::proto::{Inbound, MediaRef, inbound};

use crate::config::Config;
use crate::domain::{Decision, Effect, Message, Outcome, Source, Speaker, Turn};
use crate::store::{self, OrRetry};

/// How often the burst's last message looks whether the voice notes it waits for are back.
const VOICE_POLL: Duration = Duration::from_millis(100);

/// Whether `ib` waits the burst window before it is answered: a customer's text (not a
/// command) or photo, with bursts on.
pub fn waits(cfg: &Config, ib: &Inbound) -> bool {
    !cfg.burst_window.is_zero()
        && !ib.from_business
        && matches!(ib.kind(), inbound::Kind::Text | inbound::Kind::Image)
        && !ib.text.trim_start().starts_with('!')
}

/// Waits the burst window: `true` when the customer wrote again meanwhile (this message is
/// absorbed). The burst's last message then waits, up to `VOICE_DEADLINE_SECS`, for the
/// customer's voice notes still being transcribed, so their transcripts join the burst first.
pub async fn more_follows(
    bus: &Bus,
    db: &Db,
    cfg: &Config,
    ib: &Inbound,
    d: &Delivery,
) -> Result<bool, HandleError> {
    if !waits(cfg, ib) {
        return Ok(false);
    }
    tokio::time::sleep(cfg.burst_window).await;
    let later = bus
        .later_in_order(d.stream, d.order_token.as_deref())
        .await
        .map_err(|e| HandleError::retry("the contact's order", e))?;
    if !later {
        wait_for_voice(db, cfg, ib).await?;
    }
    Ok(later)
}

/// Waits while the sender's voice notes are being transcribed (at most the voice deadline).
async fn wait_for_voice(db: &Db, cfg: &Config, ib: &Inbound) -> Result<(), HandleError> {
    let Some(first) = ib.identities.iter().find(|i| !i.value.is_empty()) else {
        return Ok(());
    };
    let kind = first.kind().label();
    let until = tokio::time::Instant::now() + cfg.voice_deadline;
    while tokio::time::Instant::now() < until
        && store::voice_waiting(db, kind, &first.value)
            .await
            .or_retry()?
            > 0
    {
        tokio::time::sleep(VOICE_POLL).await;
    }
    Ok(())
}

/// With bursts on, whether a voice note's sender has messages waiting to be answered: its
/// transcript then joins their burst.
pub async fn voice_joins(bus: &Bus, cfg: &Config, ib: &Inbound) -> Result<bool, HandleError> {
    if cfg.burst_window.is_zero() {
        return Ok(false);
    }
    let key = shared::proto::sender_order_key(&ib.identities, &ib.chat_id);
    let waiting = bus
        .waiting_in_order(Stream::Inbound, &key)
        .await
        .map_err(|e| HandleError::retry("the contact's order", e))?;
    Ok(waiting > 0)
}

/// A message followed by more within the window: remembered, no answer of its own (a
/// photo's media kept for the burst's answer, a transcript marked as a voice note's).
pub fn absorbed(msg: &Message<'_>) -> Decision {
    let ib = msg.ib;
    let text = msg.text;
    let photo = msg.source.is_typed() && ib.kind() == inbound::Kind::Image;
    let content = match msg.source {
        Source::Transcript(_) => format!("[voice] {text}"),
        Source::Typed if photo => format!("[photo] {text}").trim().to_owned(),
        Source::Typed => text.to_owned(),
    };
    let mut d = Decision::silent(Outcome::Burst).with(Effect::Remember(Turn::customer(content)));
    if photo && let Some(media) = &ib.media {
        d.effects
            .push(Effect::KeepBurstMedia(prost::Message::encode_to_vec(media)));
    }
    d
}

/// A burst's question: its messages joined, the earlier ones' ids, and its photo.
pub struct Gathered {
    /// The burst's messages, one per line, the last message's text last.
    pub question: String,
    /// The inbound message ids of the burst's earlier messages.
    pub earlier: Vec<String>,
    /// A photo the burst kept (none when the last message has its own).
    pub photo: Option<MediaRef>,
}

impl Gathered {
    /// The message as the burst's answer sees it: with the burst's photo, when it kept one.
    pub fn with_photo(&self, ib: &Inbound) -> Option<Inbound> {
        self.photo.as_ref().map(|media| Inbound {
            kind: inbound::Kind::Image as i32,
            media: Some(media.clone()),
            ..ib.clone()
        })
    }

    /// The burst's answer `d`: only the last message's own `text` is remembered again (the
    /// others are already), its replies answer the earlier messages too, and the kept photos
    /// are dropped with its commit.
    pub fn settle(self, mut d: Decision, text: &str) -> Decision {
        let own = d.effects.iter_mut().find_map(|e| match e {
            Effect::Remember(t) if t.speaker == Speaker::Customer => Some(t),
            _ => None,
        });
        if let Some(turn) = own {
            turn.content = text.to_owned();
        }
        d.with(Effect::AlsoAnswers(self.earlier))
            .with(Effect::BurstMediaUsed)
    }
}

/// The customer's unanswered messages just before `text` (the burst, remembered as they came,
/// taken out of `memory`): `None` when there are none or bursts are off.
pub async fn gather(
    db: &Db,
    cfg: &Config,
    ib: &Inbound,
    contact_id: &str,
    memory: &mut Vec<Turn>,
    text: &str,
) -> Result<Option<Gathered>, HandleError> {
    if cfg.burst_window.is_zero() {
        return Ok(None);
    }
    let from = memory
        .iter()
        .rposition(|t| t.speaker != Speaker::Customer)
        .map_or(0, |i| i + 1);
    if from == memory.len() {
        return Ok(None);
    }
    let mut lines: Vec<String> = memory.drain(from..).map(|t| t.content).collect();
    let earlier = store::last_turn_ids(db, contact_id, lines.len())
        .await
        .or_retry()?;
    lines.push(text.to_owned());
    // The last message's own photo wins over one the burst kept.
    let photo = store::burst_media(db, contact_id)
        .await
        .or_retry()?
        .and_then(|b| <MediaRef as prost::Message>::decode(b.as_slice()).ok())
        .filter(|_| ib.kind() != inbound::Kind::Image);
    Ok(Some(Gathered {
        question: lines.join("\n"),
        earlier,
        photo,
    }))
}
