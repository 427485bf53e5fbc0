-- Whether a contact's admin role comes from ADMIN_NUMBERS: revoked at the next start once its
-- number leaves the list. An admin's `!role` command takes the role over (0): the list then
-- no longer revokes it.
ALTER TABLE contacts ADD COLUMN admin_from_env INTEGER NOT NULL DEFAULT 0;
