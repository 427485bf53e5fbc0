-- The owner answered a customer from the business's phone: the bot stays quiet for that
-- customer until this time (unix ms), or until an admin writes !resume.
ALTER TABLE contacts ADD COLUMN paused_until_ms INTEGER;
