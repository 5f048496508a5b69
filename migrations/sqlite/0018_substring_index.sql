-- no-transaction
-- Trigram indexes for the filters a B-tree cannot answer: `co` and `ew` on
-- userName and on emails' values (RFC 7644 §3.4.2.2). Each is an FTS5
-- table over a column the application has already lower-cased, with the
-- trigram tokenizer and no case folding of its own, so that a phrase
-- matches exactly the rows that contain it as a substring. The store asks
-- an index only for substrings of three characters or more, and only uses
-- its answer when it is short; see users_matching in
-- crates/store/src/users.rs.
--
-- An FTS5 table over another table's column keys its entries by that
-- table's rowid. SQLite's VACUUM may renumber the rowids of a table that has
-- no INTEGER PRIMARY KEY, which would leave the index pointing at other
-- rows; so users and user_emails are rebuilt with one (`seq`), and the id
-- and (user_id, position) that were their keys stay unique. Physically the
-- tables are as before: SQLite already kept them in rowid order, with the
-- keys in separate indexes. Rebuilt the way migration 0015 rebuilt users.
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE users_rebuilt (
    seq                     INTEGER PRIMARY KEY,
    id                      TEXT NOT NULL UNIQUE,
    org_id                  TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email                   TEXT,
    email_normalized        TEXT UNIQUE,
    display_name            TEXT NOT NULL,
    external_id             TEXT,
    active                  INTEGER NOT NULL CHECK (active IN (0, 1)),
    password_hash           TEXT,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL,
    user_name               TEXT,
    user_name_normalized    TEXT,
    scim_resource           TEXT,
    version                 BIGINT NOT NULL DEFAULT 1,
    external_id_normalized  TEXT,
    email_domain            TEXT NOT NULL DEFAULT '',
    role                    TEXT NOT NULL DEFAULT 'member',
    created_via             TEXT NOT NULL DEFAULT 'unknown',
    filter_data_written     BIGINT NOT NULL DEFAULT 0,
    display_name_normalized TEXT,
    CHECK (email IS NOT NULL OR user_name IS NOT NULL),
    CHECK ((email IS NULL) = (email_normalized IS NULL))
);
INSERT INTO users_rebuilt (seq, id, org_id, email, email_normalized, display_name, external_id, active,
    password_hash, created_at, updated_at, user_name, user_name_normalized, scim_resource, version,
    external_id_normalized, email_domain, role, created_via, filter_data_written, display_name_normalized)
SELECT rowid, id, org_id, email, email_normalized, display_name, external_id, active,
    password_hash, created_at, updated_at, user_name, user_name_normalized, scim_resource, version,
    external_id_normalized, email_domain, role, created_via, filter_data_written, display_name_normalized
FROM users;
DROP TABLE users;
ALTER TABLE users_rebuilt RENAME TO users;
CREATE INDEX users_by_org ON users (org_id, id);
CREATE UNIQUE INDEX users_by_user_name ON users (org_id, user_name_normalized);
CREATE INDEX users_by_external_id ON users (org_id, external_id_normalized);
CREATE INDEX users_by_email_domain ON users (email_domain);
CREATE INDEX users_by_filter_data_written ON users (filter_data_written);
CREATE INDEX users_by_display_name ON users (org_id, display_name_normalized);

CREATE TABLE user_emails_rebuilt (
    seq              INTEGER PRIMARY KEY,
    user_id          TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    position         BIGINT NOT NULL,
    org_id           TEXT NOT NULL,
    value_normalized TEXT,
    type_normalized  TEXT,
    is_primary       BIGINT,
    UNIQUE (user_id, position)
);
INSERT INTO user_emails_rebuilt (seq, user_id, position, org_id, value_normalized, type_normalized, is_primary)
SELECT rowid, user_id, position, org_id, value_normalized, type_normalized, is_primary FROM user_emails;
DROP TABLE user_emails;
ALTER TABLE user_emails_rebuilt RENAME TO user_emails;
CREATE INDEX user_emails_by_value ON user_emails (org_id, value_normalized);

-- The indexes hold no copy of the text (content= names the table they
-- index); the triggers keep them in step with every write, including the
-- deletes that cascade from an organization or a user.
CREATE VIRTUAL TABLE user_name_trigrams USING fts5(
    user_name_normalized, content = 'users', content_rowid = 'seq', tokenize = 'trigram case_sensitive 1'
);
CREATE TRIGGER users_trigrams_insert AFTER INSERT ON users BEGIN
    INSERT INTO user_name_trigrams (rowid, user_name_normalized) VALUES (new.seq, new.user_name_normalized);
END;
CREATE TRIGGER users_trigrams_delete AFTER DELETE ON users BEGIN
    INSERT INTO user_name_trigrams (user_name_trigrams, rowid, user_name_normalized)
    VALUES ('delete', old.seq, old.user_name_normalized);
END;
CREATE TRIGGER users_trigrams_update AFTER UPDATE OF user_name_normalized ON users
    WHEN old.user_name_normalized IS NOT new.user_name_normalized BEGIN
    INSERT INTO user_name_trigrams (user_name_trigrams, rowid, user_name_normalized)
    VALUES ('delete', old.seq, old.user_name_normalized);
    INSERT INTO user_name_trigrams (rowid, user_name_normalized) VALUES (new.seq, new.user_name_normalized);
END;
INSERT INTO user_name_trigrams (user_name_trigrams) VALUES ('rebuild');

CREATE VIRTUAL TABLE user_email_trigrams USING fts5(
    value_normalized, content = 'user_emails', content_rowid = 'seq', tokenize = 'trigram case_sensitive 1'
);
CREATE TRIGGER user_emails_trigrams_insert AFTER INSERT ON user_emails BEGIN
    INSERT INTO user_email_trigrams (rowid, value_normalized) VALUES (new.seq, new.value_normalized);
END;
CREATE TRIGGER user_emails_trigrams_delete AFTER DELETE ON user_emails BEGIN
    INSERT INTO user_email_trigrams (user_email_trigrams, rowid, value_normalized)
    VALUES ('delete', old.seq, old.value_normalized);
END;
CREATE TRIGGER user_emails_trigrams_update AFTER UPDATE OF value_normalized ON user_emails
    WHEN old.value_normalized IS NOT new.value_normalized BEGIN
    INSERT INTO user_email_trigrams (user_email_trigrams, rowid, value_normalized)
    VALUES ('delete', old.seq, old.value_normalized);
    INSERT INTO user_email_trigrams (rowid, value_normalized) VALUES (new.seq, new.value_normalized);
END;
INSERT INTO user_email_trigrams (user_email_trigrams) VALUES ('rebuild');
COMMIT;
PRAGMA foreign_keys = ON;
