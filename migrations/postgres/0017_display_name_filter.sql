-- The displayName as filters and sorting compare it, lower-cased by the
-- application (Rust's to_lowercase, as the SCIM filter matcher lowers it;
-- SQL's LOWER differs beyond ASCII), NULL when a user has none; indexed
-- for eq, sw and sorting within an organization.
--
-- The flag that said a user's emails were indexed now says that all the
-- data filters read beside the user's own columns is written: users that
-- have a display name are marked for the store to fill this column in
-- when it opens, in the pass that indexes emails.
ALTER TABLE users ADD COLUMN display_name_normalized TEXT;
ALTER TABLE users RENAME COLUMN emails_indexed TO filter_data_written;
DROP INDEX users_by_emails_indexed;
CREATE INDEX users_by_filter_data_written ON users (filter_data_written);
UPDATE users SET filter_data_written = 0 WHERE display_name <> '';
CREATE INDEX users_by_display_name ON users (org_id, display_name_normalized);
