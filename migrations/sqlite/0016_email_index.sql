-- Each user's SCIM emails as filters compare them (lower-cased value and
-- type, primary as 0/1), one row per entry, so that filters on emails
-- (`emails[type eq "work" and value co "@acme"]`, `emails.value eq …`) are
-- answered by the database. The application derives the rows
-- (gatehouse_core's User::email_index) whenever it writes a user; users
-- written before this table existed are indexed when the store opens,
-- until none has emails_indexed = 0.
CREATE TABLE user_emails (
    user_id          TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    position         BIGINT NOT NULL,
    org_id           TEXT NOT NULL,
    value_normalized TEXT,
    type_normalized  TEXT,
    is_primary       BIGINT,
    PRIMARY KEY (user_id, position)
);
CREATE INDEX user_emails_by_value ON user_emails (org_id, value_normalized);
ALTER TABLE users ADD COLUMN emails_indexed BIGINT NOT NULL DEFAULT 0;
CREATE INDEX users_by_emails_indexed ON users (emails_indexed);
