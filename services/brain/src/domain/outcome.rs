//! What became of an inbound message: stored with its answer (`outbox.outcome`), counted
//! (`brain_messages_total{outcome}`) and logged.

use super::{AnsweredBy, Author};

/// The outcome of handling one inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    /// The model answered.
    #[default]
    Answered,
    /// The model answered a transcribed voice note.
    AnsweredVoice,
    /// The message could not be handled at all; the customer got the apology.
    Apology,
    /// The daily budget is spent.
    Budget,
    /// The model is failing: its circuit breaker is open.
    CircuitOpen,
    /// Part of a burst: remembered, answered with the burst's last message.
    Burst,
    /// A `!command` was answered.
    Command,
    /// The model did not answer in time.
    Deadline,
    /// The model answered with nothing.
    EmptyAnswer,
    /// The conversation was handed to a person with this message.
    HandedOff,
    /// Handed off already: the bot stays silent (a person answers).
    WhileHandedOff,
    /// A photo whose bytes are gone from the media store.
    ImageMissing,
    /// A photo over the model's size limit.
    ImageTooLarge,
    /// An FAQ entry of the knowledge base answered it, with no model call.
    Knowledge,
    /// The model call failed.
    LlmFailed,
    /// No model is configured.
    NotConfigured,
    /// START: the contact opted back in.
    OptedIn,
    /// STOP, or a message from a contact who opted out.
    OptedOut,
    /// The owner wrote to the customer from the business's phone: remembered, the bot paused.
    OwnerAnswered,
    /// Not on the whitelist: told once a day.
    Refused,
    /// Not on the whitelist, told already today.
    RefusedSilently,
    /// A greeting, thanks or goodbye answered without a model (`MSG_GREETING`, …).
    SmallTalk,
    /// The contact's daily tokens are spent.
    TokenBudget,
    /// A text over `MAX_INPUT_CHARS`.
    TooLong,
    /// A voice note went to the transcriber.
    Transcribing,
    /// A voice note could not be transcribed.
    TranscriptionFailed,
    /// A kind of message the bot does not handle.
    Unsupported,
    /// A voice note whose bytes are gone from the media store.
    VoiceMissing,
    /// A voice note over `MAX_AUDIO_SECONDS`.
    VoiceTooLong,
    /// The web chat visitors' shared daily allowance (tokens or audio) is used up.
    VisitorBudget,
}

impl Outcome {
    /// Every outcome (for metrics registered at zero, and for tests).
    pub const ALL: [Self; 30] = [
        Self::Answered,
        Self::AnsweredVoice,
        Self::Apology,
        Self::Budget,
        Self::Burst,
        Self::CircuitOpen,
        Self::Command,
        Self::Deadline,
        Self::EmptyAnswer,
        Self::HandedOff,
        Self::WhileHandedOff,
        Self::ImageMissing,
        Self::ImageTooLarge,
        Self::Knowledge,
        Self::LlmFailed,
        Self::NotConfigured,
        Self::OptedIn,
        Self::OptedOut,
        Self::OwnerAnswered,
        Self::Refused,
        Self::RefusedSilently,
        Self::SmallTalk,
        Self::TokenBudget,
        Self::TooLong,
        Self::Transcribing,
        Self::TranscriptionFailed,
        Self::Unsupported,
        Self::VoiceMissing,
        Self::VoiceTooLong,
        Self::VisitorBudget,
    ];

    /// The name stored and counted (stable: rows and dashboards use it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::AnsweredVoice => "answered_voice",
            Self::Apology => "apology",
            Self::Budget => "budget",
            Self::Burst => "burst",
            Self::CircuitOpen => "circuit_open",
            Self::Command => "command",
            Self::Deadline => "deadline",
            Self::EmptyAnswer => "empty_answer",
            Self::HandedOff => "handed_off",
            Self::WhileHandedOff => "while_handed_off",
            Self::ImageMissing => "image_missing",
            Self::ImageTooLarge => "image_too_large",
            Self::Knowledge => "knowledge",
            Self::LlmFailed => "llm_failed",
            Self::NotConfigured => "not_configured",
            Self::OptedIn => "opted_in",
            Self::OptedOut => "opted_out",
            Self::OwnerAnswered => "owner_answered",
            Self::Refused => "refused",
            Self::RefusedSilently => "refused_silently",
            Self::SmallTalk => "small_talk",
            Self::TokenBudget => "token_budget",
            Self::TooLong => "too_long",
            Self::Transcribing => "transcribing",
            Self::TranscriptionFailed => "transcription_failed",
            Self::Unsupported => "unsupported",
            Self::VoiceMissing => "voice_missing",
            Self::VoiceTooLong => "voice_too_long",
            Self::VisitorBudget => "visitor_budget",
        }
    }

    /// The model failed to answer (what `!stats` counts as errors).
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Self::LlmFailed | Self::CircuitOpen | Self::Deadline | Self::EmptyAnswer
        )
    }

    /// The names of the error outcomes (for SQL).
    pub fn errors() -> Vec<&'static str> {
        Self::ALL
            .into_iter()
            .filter(|o| o.is_error())
            .map(Self::as_str)
            .collect()
    }
}

/// How a message counts toward its customer's conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counts {
    /// Not at all (commands, opt-outs, refusals, a voice note waiting for its transcript).
    Not,
    /// Answered, by the knowledge base or the model.
    Answered(AnsweredBy),
    /// Taken by a person (handed off, or the owner answered).
    Person,
    /// Left without an answer.
    Unanswered,
}

impl Outcome {
    /// How a message with this outcome counts toward its conversation.
    pub fn counts(self) -> Counts {
        match self {
            Self::Answered | Self::AnsweredVoice => Counts::Answered(AnsweredBy::Model),
            Self::Knowledge => Counts::Answered(AnsweredBy::Knowledge),
            Self::HandedOff | Self::OwnerAnswered => Counts::Person,
            Self::Command
            | Self::OptedIn
            | Self::OptedOut
            | Self::Refused
            | Self::RefusedSilently
            | Self::SmallTalk
            | Self::Transcribing => Counts::Not,
            Self::Apology
            | Self::Budget
            | Self::CircuitOpen
            | Self::Burst
            | Self::Deadline
            | Self::EmptyAnswer
            | Self::WhileHandedOff
            | Self::ImageMissing
            | Self::ImageTooLarge
            | Self::LlmFailed
            | Self::NotConfigured
            | Self::TokenBudget
            | Self::TooLong
            | Self::TranscriptionFailed
            | Self::Unsupported
            | Self::VoiceMissing
            | Self::VoiceTooLong
            | Self::VisitorBudget => Counts::Unanswered,
        }
    }

    /// Who wrote the replies of a message with this outcome, as the log shows them.
    pub fn author(self) -> Author {
        match self {
            Self::Answered | Self::AnsweredVoice => Author::Model,
            Self::Knowledge => Author::Knowledge,
            Self::Apology
            | Self::Budget
            | Self::CircuitOpen
            | Self::Burst
            | Self::Command
            | Self::Deadline
            | Self::EmptyAnswer
            | Self::HandedOff
            | Self::WhileHandedOff
            | Self::ImageMissing
            | Self::ImageTooLarge
            | Self::LlmFailed
            | Self::NotConfigured
            | Self::OptedIn
            | Self::OptedOut
            | Self::OwnerAnswered
            | Self::Refused
            | Self::RefusedSilently
            | Self::SmallTalk
            | Self::TokenBudget
            | Self::TooLong
            | Self::Transcribing
            | Self::TranscriptionFailed
            | Self::Unsupported
            | Self::VoiceMissing
            | Self::VoiceTooLong
            | Self::VisitorBudget => Author::Bot,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_errors_are_the_model_failures() {
        let names: std::collections::HashSet<_> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(names.len(), Outcome::ALL.len());
        assert_eq!(
            Outcome::errors(),
            ["circuit_open", "deadline", "empty_answer", "llm_failed"]
        );
    }
}
