-- Conversations: a customer's messages until 24 h of silence, and how each ended (answered by
-- the knowledge base, by the model, handed off — and why — or abandoned), for metrics and !stats.
CREATE TABLE IF NOT EXISTS conversations (
    id BIGSERIAL PRIMARY KEY,
    contact_id TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    last_at_ms BIGINT NOT NULL,
    -- 'knowledge' or 'model' once either answered ('model' wins), '' before.
    answered_by TEXT NOT NULL DEFAULT '',
    -- Why it went to a person (asked, cannot_answer, repeated_failure, budget, no_llm, owner).
    handoff TEXT,
    -- The customer's last message got no answer.
    last_unanswered BIGINT NOT NULL DEFAULT 0,
    ended_at_ms BIGINT,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS conversations_open ON conversations (contact_id, ended_at_ms);
CREATE INDEX IF NOT EXISTS conversations_last ON conversations (last_at_ms);
CREATE INDEX IF NOT EXISTS conversations_ended ON conversations (ended_at_ms);
