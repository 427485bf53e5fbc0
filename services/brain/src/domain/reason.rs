//! Why a conversation went to a person.

/// Why a conversation goes to a person (stored as [`Reason::as_str`], counted by it, and
/// ending a conversation as `handoff_<reason>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The customer asked for a person.
    Asked,
    /// The model marked that a person is needed.
    CannotAnswer,
    /// The model did not know twice in a row.
    RepeatedFailure,
    /// The day's budget is spent.
    Budget,
    /// No model is configured and the knowledge base has no answer.
    NoLlm,
    /// The owner answered from the business's phone (a conversation's outcome only).
    Owner,
}

impl Reason {
    /// Every reason a handoff can start with (the owner's answer starts none).
    pub const HANDOFFS: [Self; 5] = [
        Self::Asked,
        Self::CannotAnswer,
        Self::RepeatedFailure,
        Self::Budget,
        Self::NoLlm,
    ];

    /// The name stored and counted (stable: rows and dashboards use it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asked => "asked",
            Self::CannotAnswer => "cannot_answer",
            Self::RepeatedFailure => "repeated_failure",
            Self::Budget => "budget",
            Self::NoLlm => "no_llm",
            Self::Owner => "owner",
        }
    }

    /// The reason stored as `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::HANDOFFS
            .into_iter()
            .chain([Self::Owner])
            .find(|r| r.as_str() == s)
    }

    /// What the owner is told.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Asked => "asked for a person",
            Self::CannotAnswer => "the assistant could not help",
            Self::RepeatedFailure => "the assistant did not know, twice in a row",
            Self::Budget => "today's AI budget is spent",
            Self::NoLlm => "the knowledge base has no answer (no AI configured)",
            Self::Owner => "the owner answered from the business's phone",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_from_its_name() {
        for r in Reason::HANDOFFS.into_iter().chain([Reason::Owner]) {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
        }
        assert_eq!(Reason::parse("bored"), None);
    }
}
