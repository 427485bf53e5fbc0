-- A photo that is part of a burst (answered with the burst's last message): its media
-- reference, until that answer takes it.
CREATE TABLE IF NOT EXISTS burst_media (
    inbound_message_id TEXT PRIMARY KEY NOT NULL,
    contact_id TEXT NOT NULL,
    media BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS burst_media_contact ON burst_media (contact_id, created_at_ms);
