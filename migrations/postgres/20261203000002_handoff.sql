-- Human handoff: while handoff_at_ms is set, the bot stays silent for the contact and a person
-- answers (!reply); handoff_ref is the short reference admins use (web chat visitors have no
-- number); handoff_deadline_ms is when it goes back to the bot if nobody replied (NULL once a
-- person did). unanswered_streak counts the model's answers in a row that did not know.
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS handoff_ref TEXT;
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS handoff_reason TEXT;
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS handoff_at_ms BIGINT;
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS handoff_deadline_ms BIGINT;
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS unanswered_streak BIGINT NOT NULL DEFAULT 0;
-- Where the customer wrote from (the proto transport number and its chat), so a person's
-- replies reach them there.
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS handoff_transport BIGINT;
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS handoff_chat TEXT;
CREATE INDEX IF NOT EXISTS contacts_handoff_deadline ON contacts (handoff_deadline_ms);
CREATE INDEX IF NOT EXISTS contacts_handoff_ref ON contacts (handoff_ref);
