-- SCIM requires only a userName (RFC 7643 §4.1), so a user may have no
-- email. A user still has a name to be known by: an email, a userName, or
-- both. (migrations/sqlite rebuilds the table to say the same.)
ALTER TABLE users
    ALTER COLUMN email DROP NOT NULL,
    ALTER COLUMN email_normalized DROP NOT NULL,
    ADD CONSTRAINT users_have_a_name CHECK (email IS NOT NULL OR user_name IS NOT NULL),
    ADD CONSTRAINT users_email_normalized_with_email CHECK ((email IS NULL) = (email_normalized IS NULL));

-- A tombstone of a user without an email holds none.
ALTER TABLE scim_tombstones ALTER COLUMN email_normalized DROP NOT NULL;
UPDATE scim_tombstones SET email_normalized = NULL WHERE email_normalized = '';
