//! What handling a message decided, and how database errors become handler errors.

use shared::bus::{HandleError, Publish};
use shared::proto::outbound;

use crate::outcome::Outcome;
use crate::store::Turn;

/// What handling a message decided.
#[derive(Default)]
pub struct Decision {
    pub replies: Vec<(outbound::Kind, String)>,
    pub turns: Vec<Turn>,
    pub extra: Vec<Publish>,
    pub disclosed: bool,
    pub outcome: Outcome,
    /// A transcription job was published: the inbound waits for its transcript until then (ms).
    pub voice_deadline_ms: Option<i64>,
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
