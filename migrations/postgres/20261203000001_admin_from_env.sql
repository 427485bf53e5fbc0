-- Whether a contact's admin role comes from ADMIN_NUMBERS: revoked at the next start once its
-- number leaves the list. An admin's `!role` command takes the role over (0): the list then
-- no longer revokes it.
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS admin_from_env BIGINT NOT NULL DEFAULT 0;
