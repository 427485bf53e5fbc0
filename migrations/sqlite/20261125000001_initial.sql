-- Switchboard initial schema (SQLite). Timestamps are unix epoch milliseconds (INTEGER);
-- money is integer pico-dollars (10^-12 USD: exact for per-token prices). Idempotent DDL so a race between services starting together
-- is harmless.

-- A contact is an internal id with one or more transport identities.
CREATE TABLE IF NOT EXISTS contacts (
    id TEXT PRIMARY KEY NOT NULL,
    role TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'user')),
    allowed INTEGER NOT NULL DEFAULT 0,
    opted_out INTEGER NOT NULL DEFAULT 0,
    last_refusal_day TEXT,
    -- When the one-line AI disclosure was sent (the first reply to a new contact).
    disclosed_at_ms INTEGER,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS contact_identities (
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    contact_id TEXT NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE INDEX IF NOT EXISTS contact_identities_contact ON contact_identities (contact_id);

-- Conversation memory: the last turns go into each LLM request; old rows are cleaned daily.
CREATE TABLE IF NOT EXISTS conversation_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id TEXT NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    inbound_message_id TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS conversation_messages_contact ON conversation_messages (contact_id, id);
CREATE INDEX IF NOT EXISTS conversation_messages_created ON conversation_messages (created_at_ms);

-- The brain's outbox: replies written with the memory rows in one transaction, keyed by the
-- inbound message they answer; a redelivered inbound event republishes these.
CREATE TABLE IF NOT EXISTS outbox (
    inbound_message_id TEXT PRIMARY KEY NOT NULL,
    contact_id TEXT,
    events BLOB NOT NULL,
    -- What handling decided (answered, refused, llm_failed…), for !stats.
    outcome TEXT NOT NULL DEFAULT '',
    created_at_ms INTEGER NOT NULL,
    published_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_created ON outbox (created_at_ms);

-- Voice notes being transcribed: the inbound event, kept until its transcript is answered.
CREATE TABLE IF NOT EXISTS voice_pending (
    message_id TEXT PRIMARY KEY NOT NULL,
    contact_id TEXT NOT NULL,
    inbound BLOB NOT NULL,
    deadline_at_ms INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS voice_pending_created ON voice_pending (created_at_ms);

-- One row per paid API call (the ledger's table; the brain reads it for !usage and !stats).
-- contact_id has no foreign key: usage outlives a forgotten contact, unlinked.
CREATE TABLE IF NOT EXISTS usage_records (
    usage_id TEXT PRIMARY KEY NOT NULL,
    contact_id TEXT,
    message_id TEXT NOT NULL DEFAULT '',
    operation TEXT NOT NULL,
    requested_model TEXT NOT NULL,
    response_model TEXT NOT NULL,
    priced_model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    audio_ms INTEGER NOT NULL DEFAULT 0,
    cost_pico_usd INTEGER NOT NULL DEFAULT 0,
    latency_ms INTEGER NOT NULL DEFAULT 0,
    day TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_records_day ON usage_records (day);
CREATE INDEX IF NOT EXISTS usage_records_day_contact ON usage_records (day, contact_id);

-- Daily aggregates kept by the ledger in the same transaction as each record: the day's
-- totals without scanning every record. contact_id '' = no contact (or forgotten).
CREATE TABLE IF NOT EXISTS usage_daily (
    day TEXT NOT NULL,
    contact_id TEXT NOT NULL DEFAULT '',
    priced_model TEXT NOT NULL,
    operation TEXT NOT NULL,
    cost_pico_usd INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    audio_ms INTEGER NOT NULL DEFAULT 0,
    latency_ms INTEGER NOT NULL DEFAULT 0,
    records INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, contact_id, priced_model, operation)
);

-- Alerts already raised (once per day per kind, subject and threshold).
CREATE TABLE IF NOT EXISTS alerts_sent (
    day TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT '',
    threshold_pico_usd INTEGER NOT NULL DEFAULT 0,
    usage_id TEXT,
    spend_pico_usd INTEGER NOT NULL DEFAULT 0,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (day, kind, subject, threshold_pico_usd)
);
CREATE INDEX IF NOT EXISTS alerts_sent_usage ON alerts_sent (usage_id);

-- Runtime settings set by admins (`!config set`); they win over the environment.
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL,
    updated_by TEXT,
    updated_at_ms INTEGER NOT NULL
);
