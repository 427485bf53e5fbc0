//! What handling a message decided: the replies, the outcome, and the effects the store
//! applies in the message's commit — one transaction with its outbox row, so a crash loses all
//! of it or none.

use shared::bus::Publish;
use shared::proto::outbound;

use super::{AnsweredBy, Outcome, Reason, Turn};

/// What handling a message decided. Deciding writes nothing: every change is an [`Effect`],
/// applied with the outbox row ([`crate::store::Commit`]).
#[derive(Debug, Default)]
pub struct Decision {
    /// What the customer is sent, in order.
    pub replies: Vec<(outbound::Kind, String)>,
    /// What became of the message.
    pub outcome: Outcome,
    /// What the commit changes besides the outbox row.
    pub effects: Vec<Effect>,
}

/// One change a decision makes, applied in the message's commit.
#[derive(Debug, Clone)]
pub enum Effect {
    /// A turn of memory to add.
    Remember(Turn),
    /// The AI disclosure was shown now: the contact is marked as told.
    Disclose,
    /// STOP (`true`) or START (`false`).
    OptOut(bool),
    /// The contact was told today that it is not on the whitelist.
    RefusedToday,
    /// The conversation is handed to a person.
    HandOff(NewHandoff),
    /// How many answers in a row did not know, after this one.
    Streak(i64),
    /// The bot is quiet for the contact until then (unix ms): the owner answered.
    PauseUntil(i64),
    /// The voice note waits for its transcript until then (unix ms); the encoded inbound event.
    AwaitTranscript {
        /// The inbound event, encoded, to answer with its transcript.
        inbound: Vec<u8>,
        /// When it stops waiting (unix ms).
        deadline_ms: i64,
    },
    /// The transcript of this voice note (its inbound message id) came back: no longer
    /// waiting, and its logged message gets the text.
    TranscriptDone {
        /// The voice note's inbound message id.
        message_id: String,
        /// What was understood.
        text: String,
    },
    /// A photo joining a burst: its encoded media reference, kept for the burst's answer.
    KeepBurstMedia(Vec<u8>),
    /// The burst's kept photos went with its answer: they are dropped.
    BurstMediaUsed,
    /// How the message counts toward its conversation.
    Conversation(Mark),
    /// An event published with the replies (a usage record, a transcription job, an alert).
    Publish(Box<Publish>),
    /// The customer's other messages the replies answer (a burst's earlier ones).
    AlsoAnswers(Vec<String>),
}

impl Effect {
    /// `p` published with the replies.
    pub fn publish(p: Publish) -> Self {
        Self::Publish(Box::new(p))
    }

    /// Whether the store applies it (the others travel in the outbox's events).
    pub fn is_stored(&self) -> bool {
        !matches!(self, Self::Publish(_) | Self::AlsoAnswers(_))
    }

    /// Where it goes in its commit: a handoff after a streak it resets, a burst's photo kept
    /// after the burst's used ones are dropped.
    pub fn rank(&self) -> u8 {
        match self {
            Self::HandOff(_) | Self::KeepBurstMedia(_) => 1,
            _ => 0,
        }
    }
}

/// A handoff started by the message being committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHandoff {
    /// The short reference (`H-3F9A2C`).
    pub reference: String,
    /// Why.
    pub reason: Reason,
    /// Back to the bot at this time unless a person replies (unix ms).
    pub deadline_ms: i64,
    /// The transport the customer wrote from (its proto number) and the chat there.
    pub chat: (i32, String),
}

/// How one message counts toward its conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// What answered it, when something did.
    pub answered_by: Option<AnsweredBy>,
    /// Why it went to a person, when it did.
    pub handoff: Option<Reason>,
    /// The message got no answer.
    pub unanswered: bool,
    /// The silence that starts a new conversation (ms).
    pub idle_ms: i64,
}

impl Decision {
    /// One notice, nothing else.
    pub fn notice(text: &str, outcome: Outcome) -> Self {
        Self {
            replies: vec![(outbound::Kind::Notice, text.to_owned())],
            outcome,
            effects: Vec::new(),
        }
    }

    /// No reply.
    pub fn silent(outcome: Outcome) -> Self {
        Self {
            outcome,
            ..Default::default()
        }
    }

    /// With `effect` too.
    pub fn with(mut self, effect: Effect) -> Self {
        self.effects.push(effect);
        self
    }

    /// The memory turns it adds.
    pub fn turns(&self) -> impl Iterator<Item = &Turn> {
        self.effects.iter().filter_map(|e| match e {
            Effect::Remember(t) => Some(t),
            _ => None,
        })
    }

    /// The handoff it starts, if any.
    pub fn handoff(&self) -> Option<&NewHandoff> {
        self.effects.iter().find_map(|e| match e {
            Effect::HandOff(h) => Some(h),
            _ => None,
        })
    }

    /// The events it publishes besides the replies.
    pub fn publishes(&self) -> impl Iterator<Item = &Publish> {
        self.effects.iter().filter_map(|e| match e {
            Effect::Publish(p) => Some(p.as_ref()),
            _ => None,
        })
    }

    /// The earlier messages its replies answer too.
    pub fn also_answers(&self) -> &[String] {
        self.effects
            .iter()
            .find_map(|e| match e {
                Effect::AlsoAnswers(ids) => Some(ids.as_slice()),
                _ => None,
            })
            .unwrap_or(&[])
    }
}
