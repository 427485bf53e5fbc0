-- The owner's console. The conversation log: every message in and out of a conversation and
-- who wrote it (the customer, the knowledge base, the model, a person, the bot's own notices),
-- shown to admins on the console; kept MEMORY_TTL_DAYS like memory, erased by !forget (kept by
-- !reset, which only makes the bot forget).
CREATE TABLE IF NOT EXISTS conversation_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id TEXT NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    kind TEXT NOT NULL,
    content TEXT NOT NULL,
    author TEXT NOT NULL,
    -- An image's media reference (encoded MediaRef), shown while the media store keeps it.
    media BLOB,
    message_id TEXT NOT NULL,
    -- Where a customer's message came from (its transport's proto number and chat): a person's
    -- reply from the console goes back there.
    transport INTEGER,
    chat_id TEXT,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS conversation_log_contact ON conversation_log (contact_id, id);
CREATE INDEX IF NOT EXISTS conversation_log_created ON conversation_log (created_at_ms);

-- Every console action: who, what, when.
CREATE TABLE IF NOT EXISTS console_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    admin TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS console_audit_at ON console_audit (at_ms);

-- Customers' messages per day (the business's day, LEDGER_TIMEZONE), for the console's chart;
-- kept like the usage totals.
CREATE TABLE IF NOT EXISTS daily_messages (
    day TEXT PRIMARY KEY,
    received BIGINT NOT NULL DEFAULT 0
);

-- Knowledge files written on the console: beside KNOWLEDGE_DIR's (a file of the same name here
-- wins), so every brain replica indexes the same knowledge.
CREATE TABLE IF NOT EXISTS knowledge_files (
    name TEXT PRIMARY KEY,
    content TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
