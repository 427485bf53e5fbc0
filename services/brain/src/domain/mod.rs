//! The brain's floor: the words every other module speaks — who said a turn ([`Speaker`]), why
//! a conversation went to a person ([`Reason`]), what became of a message ([`Outcome`]), and
//! what handling it decided ([`Decision`], its [`Effect`]s). Nothing here reads or writes
//! anything; the store takes these types, the rules produce them.

mod effect;
mod outcome;
mod reason;

pub use effect::{Decision, Effect, Mark, NewHandoff};
pub use outcome::{Counts, Outcome};
pub use reason::Reason;

use shared::proto::Inbound;

/// Where a message's text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Typed (or a photo's caption).
    Typed,
    /// A voice note's transcript, and how the transcriber fared.
    Transcript(Heard),
}

/// How a voice note's transcription went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// Understood: the transcript has text.
    Ok,
    /// Longer than `MAX_AUDIO_SECONDS` (or the upload limit).
    TooLong,
    /// Over what is left of the web chat visitors' daily audio.
    Budget,
    /// Not understood: undecodable, gone, silent, or the speech service failed.
    Failed,
}

impl Source {
    /// Typed, not transcribed.
    pub fn is_typed(self) -> bool {
        self == Self::Typed
    }
}

/// A message as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The inbound event (a voice note's own, for a transcript).
    pub ib: &'a Inbound,
    /// What it says, trimmed (a transcript's text).
    pub text: &'a str,
    /// Typed or transcribed.
    pub source: Source,
    /// More from the customer follows within the burst window: the last answers them all.
    pub absorbed: bool,
    /// A transcript's answer is due by then (unix ms): the voice note's deadline.
    pub deadline_ms: Option<i64>,
    /// The language the customer writes in: the bot's own messages are in it.
    pub lang: shared::lang::Lang,
}

/// The language a customer writes in: `text`'s, else that of their latest message in
/// `memory` that says it, else English.
pub fn lang_of(text: &str, memory: &[Turn]) -> shared::lang::Lang {
    use shared::lang::Lang;
    Lang::detect_remembered(text)
        .or_else(|| {
            memory
                .iter()
                .rev()
                .filter(|t| t.speaker == Speaker::Customer)
                .find_map(|t| Lang::detect_remembered(&t.content))
        })
        .unwrap_or_default()
}

/// Who said a turn of memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    /// The customer.
    Customer,
    /// The business: the model, the knowledge base or a person answering for it.
    Business,
}

impl Speaker {
    /// As stored (`user`, `assistant`: the chat format's roles).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "user",
            Self::Business => "assistant",
        }
    }

    /// The speaker stored as `s` (anything but `assistant` is the customer, as it always was).
    pub fn parse(s: &str) -> Self {
        if s == "assistant" {
            Self::Business
        } else {
            Self::Customer
        }
    }
}

/// One turn of memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// Who said it.
    pub speaker: Speaker,
    /// What was said.
    pub content: String,
}

impl Turn {
    /// The customer said `content`.
    pub fn customer(content: impl Into<String>) -> Self {
        Self {
            speaker: Speaker::Customer,
            content: content.into(),
        }
    }

    /// The business said `content`.
    pub fn business(content: impl Into<String>) -> Self {
        Self {
            speaker: Speaker::Business,
            content: content.into(),
        }
    }
}

/// Who wrote a logged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Author {
    /// The customer.
    Customer,
    /// An FAQ entry of the knowledge base.
    Knowledge,
    /// The model.
    Model,
    /// A person for the business (`!reply`, the console, the owner's phone).
    Person,
    /// The bot's own notices (refusals, "listening…", apologies, the handoff notice).
    Bot,
}

impl Author {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Knowledge => "knowledge",
            Self::Model => "model",
            Self::Person => "person",
            Self::Bot => "bot",
        }
    }
}

/// What kind of message a logged one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// A text.
    Text,
    /// A voice note (its transcript is filled in when it comes back).
    Voice,
    /// A photo (its caption).
    Image,
    /// Anything else.
    Other,
}

impl LogKind {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Voice => "voice",
            Self::Image => "image",
            Self::Other => "other",
        }
    }
}

/// Which way a logged message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the customer.
    In,
    /// To the customer.
    Out,
}

impl Direction {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }
}

/// What answered a conversation's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnsweredBy {
    /// An FAQ entry of the knowledge base.
    Knowledge,
    /// The model.
    Model,
}

impl AnsweredBy {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Knowledge => "knowledge",
            Self::Model => "model",
        }
    }
}
