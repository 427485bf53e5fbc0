//! What handling a message decided, and how database errors become handler errors.

use shared::bus::{HandleError, Publish};
use shared::proto::outbound;

use crate::outcome::Outcome;
use crate::store::Turn;

/// What handling a message decided.
#[derive(Default)]
pub struct Decision {
    /// What the customer is sent, in order.
    pub replies: Vec<(outbound::Kind, String)>,
    /// The turns memory keeps of this exchange.
    pub turns: Vec<Turn>,
    /// Other events published with the answer (usage records, a transcription job).
    pub extra: Vec<Publish>,
    /// The AI disclosure was shown now (the contact is marked as told).
    pub disclosed: bool,
    /// What became of the message.
    pub outcome: Outcome,
    /// A transcription job was published: the inbound waits for its transcript until then (ms).
    pub voice_deadline_ms: Option<i64>,
    /// The conversation is handed to a person.
    pub handoff: Option<crate::store::NewHandoff>,
    /// How many answers in a row did not know, after this one (when it changed).
    pub streak: Option<i64>,
    /// The bot is quiet for the contact until then (unix ms): the owner answered.
    pub pause_until_ms: Option<i64>,
    /// The customer's other messages the replies answer (a burst's earlier ones).
    pub also_answers: Vec<String>,
    /// A photo joining a burst: its encoded media reference, for the burst's answer.
    pub burst_media: Option<Vec<u8>>,
}

impl Decision {
    pub(crate) fn notice(text: &str, outcome: Outcome) -> Self {
        Self {
            replies: vec![(outbound::Kind::Notice, text.to_owned())],
            outcome,
            ..Default::default()
        }
    }

    pub(crate) fn silent(outcome: Outcome) -> Self {
        Self {
            outcome,
            ..Default::default()
        }
    }
}

/// A database failure is worth another delivery (or, when the database is only busy, another
/// try without counting one).
pub(crate) trait OrRetry<T> {
    fn or_retry(self) -> Result<T, HandleError>;
}

impl<T> OrRetry<T> for Result<T, sqlx::Error> {
    fn or_retry(self) -> Result<T, HandleError> {
        self.map_err(HandleError::database)
    }
}
