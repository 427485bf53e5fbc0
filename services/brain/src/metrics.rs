//! The brain's metrics, registered at zero at startup.

/// Inbound messages by kind and outcome.
pub const MESSAGES: &str = "brain_messages_total";
/// Model call latency.
pub const LLM_SECONDS: &str = "brain_llm_latency_seconds";
/// `!` commands, known or not.
pub const COMMANDS: &str = "brain_commands_total";
/// Messages refused by the whitelist.
pub const REFUSALS: &str = "brain_refusals_total";
/// STOPs.
pub const OPT_OUTS: &str = "brain_opt_outs_total";
/// Redelivered messages answered from the outbox (no second model call).
pub const REPUBLISHED: &str = "brain_replies_republished_total";
/// Memory rows removed by the cleanup.
pub const CLEANED: &str = "brain_memory_rows_deleted_total";
/// Tokens by model and direction.
pub const TOKENS: &str = "brain_tokens_total";
/// Conversations handed to a person, by reason.
pub const HANDOFFS: &str = "brain_handoffs_total";
/// Handoffs nobody answered in time (back to the bot).
pub const HANDOFF_TIMEOUTS: &str = "brain_handoff_timeouts_total";
/// Conversations ended (24 h of silence), by how they ended.
pub const CONVERSATIONS: &str = "brain_conversations_total";
/// How a conversation can end.
pub const CONVERSATION_OUTCOMES: [&str; 9] = [
    "knowledge",
    "model",
    "handoff_asked",
    "handoff_cannot_answer",
    "handoff_repeated_failure",
    "handoff_budget",
    "handoff_no_llm",
    "handoff_owner",
    "abandoned",
];
/// Customers the owner answered from the business's phone (the bot paused for them).
pub const OWNER_PAUSES: &str = "brain_owner_pauses_total";
/// Questions answered from the knowledge base's FAQ instead of the model.
pub const CALLS_SAVED: &str = "brain_llm_calls_saved_total";
/// Handoff alerts held for a digest (over `ALERT_DIGEST_AFTER` in the window).
pub const ALERTS_HELD: &str = "brain_handoff_alerts_held_total";
/// Digests of held handoff alerts sent to the admins.
pub const DIGESTS: &str = "brain_handoff_digests_total";
/// The knowledge base's vectors (`result`: `ready` — an index's vectors computed, `failed` —
/// they could not be, `question_failed` — a question's could not be in time).
pub const KNOWLEDGE_VECTORS: &str = "brain_knowledge_vectors_total";

/// Describes every metric and registers it at zero.
pub fn register() {
    metrics::describe_counter!(MESSAGES, "Inbound messages by kind and outcome");
    metrics::describe_histogram!(
        LLM_SECONDS,
        "Seconds to get a model answer, retries included"
    );
    metrics::describe_counter!(COMMANDS, "Commands received");
    metrics::describe_counter!(REFUSALS, "Messages refused by access control");
    metrics::describe_counter!(OPT_OUTS, "Contacts who wrote STOP");
    metrics::describe_counter!(REPUBLISHED, "Redelivered messages answered from the outbox");
    metrics::describe_counter!(CLEANED, "Memory rows deleted by the daily cleanup");
    metrics::describe_counter!(
        TOKENS,
        "Tokens used, by model (as the API named it) and direction"
    );
    for kind in ["text", "voice", "image", "other"] {
        metrics::counter!(MESSAGES, "kind" => kind, "outcome" => crate::domain::Outcome::Answered.as_str())
            .absolute(0);
    }
    for c in ["known", "unknown"] {
        metrics::counter!(COMMANDS, "command" => c).absolute(0);
    }
    let _ = metrics::histogram!(LLM_SECONDS);
    metrics::describe_counter!(
        CALLS_SAVED,
        "Questions answered from the knowledge base's FAQ with no model call"
    );
    metrics::describe_counter!(HANDOFFS, "Conversations handed to a person, by reason");
    metrics::describe_counter!(
        ALERTS_HELD,
        "Handoff alerts held for a digest (over ALERT_DIGEST_AFTER within ALERT_DIGEST_MINUTES)"
    );
    metrics::describe_counter!(DIGESTS, "Digests of held handoff alerts sent to the admins");
    metrics::counter!(ALERTS_HELD).absolute(0);
    metrics::describe_counter!(
        KNOWLEDGE_VECTORS,
        "Knowledge base vectors: indexes ready or failed, questions without a vector in time"
    );
    for r in ["ready", "failed", "question_failed"] {
        metrics::counter!(KNOWLEDGE_VECTORS, "result" => r).absolute(0);
    }
    metrics::counter!(DIGESTS).absolute(0);
    metrics::describe_counter!(
        HANDOFF_TIMEOUTS,
        "Handoffs nobody answered within HANDOFF_TIMEOUT_MIN (back to the bot)"
    );
    for reason in crate::domain::Reason::HANDOFFS {
        metrics::counter!(HANDOFFS, "reason" => reason.as_str()).absolute(0);
    }
    metrics::describe_counter!(
        CONVERSATIONS,
        "Conversations ended after CONVERSATION_IDLE_MIN of silence, by outcome"
    );
    for o in CONVERSATION_OUTCOMES {
        metrics::counter!(CONVERSATIONS, "outcome" => o).absolute(0);
    }
    metrics::describe_counter!(
        OWNER_PAUSES,
        "Customers the owner answered from the business's phone (the bot paused for them)"
    );
    for name in [
        OWNER_PAUSES,
        REFUSALS,
        OPT_OUTS,
        REPUBLISHED,
        CLEANED,
        CALLS_SAVED,
        HANDOFF_TIMEOUTS,
    ] {
        metrics::counter!(name).absolute(0);
    }
}
