-- The effective SCIM userName is always in user_name_normalized: the one an
-- IdP gave, else the email. The unique index on (org_id,
-- user_name_normalized) then enforces userName uniqueness by itself, and a
-- userName lookup is one index probe.
UPDATE users SET user_name_normalized = email_normalized WHERE user_name_normalized IS NULL;
