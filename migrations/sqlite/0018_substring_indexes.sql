-- Substring filters (`co`, `ew`) on the lower-cased text that filters
-- compare use trigram indexes (FTS5's trigram tokenizer); without them such
-- a filter reads every row of the organization. The indexes only propose
-- candidates (they fold case their own way): the exact comparison is still
-- made on the column.
--
-- An FTS5 index refers to its rows by an integer key, which must not change
-- under it; a table's implicit rowid may change on VACUUM, so each indexed
-- table has its own INTEGER PRIMARY KEY (`seq`), and triggers keep each
-- index in step with its table.

-- The users' text columns, mirrored by triggers on users.
CREATE TABLE user_texts (
    seq          INTEGER PRIMARY KEY,
    user_id      TEXT NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    user_name    TEXT,
    external_id  TEXT,
    display_name TEXT
);
CREATE VIRTUAL TABLE user_text_trigrams USING fts5 (
    user_name, external_id, display_name,
    content = 'user_texts', content_rowid = 'seq', tokenize = 'trigram'
);
CREATE TRIGGER user_texts_indexed AFTER INSERT ON user_texts BEGIN
    INSERT INTO user_text_trigrams (rowid, user_name, external_id, display_name)
    VALUES (new.seq, new.user_name, new.external_id, new.display_name);
END;
CREATE TRIGGER user_texts_unindexed AFTER DELETE ON user_texts BEGIN
    INSERT INTO user_text_trigrams (user_text_trigrams, rowid, user_name, external_id, display_name)
    VALUES ('delete', old.seq, old.user_name, old.external_id, old.display_name);
END;
CREATE TRIGGER user_texts_reindexed AFTER UPDATE ON user_texts BEGIN
    INSERT INTO user_text_trigrams (user_text_trigrams, rowid, user_name, external_id, display_name)
    VALUES ('delete', old.seq, old.user_name, old.external_id, old.display_name);
    INSERT INTO user_text_trigrams (rowid, user_name, external_id, display_name)
    VALUES (new.seq, new.user_name, new.external_id, new.display_name);
END;
CREATE TRIGGER users_texts_inserted AFTER INSERT ON users BEGIN
    INSERT INTO user_texts (user_id, user_name, external_id, display_name)
    VALUES (new.id, new.user_name_normalized, new.external_id_normalized, new.display_name_normalized);
END;
CREATE TRIGGER users_texts_updated
AFTER UPDATE OF user_name_normalized, external_id_normalized, display_name_normalized ON users BEGIN
    UPDATE user_texts
    SET user_name = new.user_name_normalized,
        external_id = new.external_id_normalized,
        display_name = new.display_name_normalized
    WHERE user_id = new.id;
END;
-- A deleted user's row goes by the foreign key's cascade, which fires
-- user_texts_unindexed.
INSERT INTO user_texts (user_id, user_name, external_id, display_name)
SELECT id, user_name_normalized, external_id_normalized, display_name_normalized FROM users;

-- The email index, rebuilt with its own key (it is derived data: the rows
-- are copied as they are).
CREATE TABLE user_emails_keyed (
    seq              INTEGER PRIMARY KEY,
    user_id          TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    position         BIGINT NOT NULL,
    org_id           TEXT NOT NULL,
    value_normalized TEXT,
    type_normalized  TEXT,
    is_primary       BIGINT,
    UNIQUE (user_id, position)
);
INSERT INTO user_emails_keyed (user_id, position, org_id, value_normalized, type_normalized, is_primary)
SELECT user_id, position, org_id, value_normalized, type_normalized, is_primary FROM user_emails;
DROP TABLE user_emails;
ALTER TABLE user_emails_keyed RENAME TO user_emails;
CREATE INDEX user_emails_by_value ON user_emails (org_id, value_normalized);
CREATE VIRTUAL TABLE user_email_trigrams USING fts5 (
    value_normalized, content = 'user_emails', content_rowid = 'seq', tokenize = 'trigram'
);
CREATE TRIGGER user_emails_indexed AFTER INSERT ON user_emails BEGIN
    INSERT INTO user_email_trigrams (rowid, value_normalized) VALUES (new.seq, new.value_normalized);
END;
CREATE TRIGGER user_emails_unindexed AFTER DELETE ON user_emails BEGIN
    INSERT INTO user_email_trigrams (user_email_trigrams, rowid, value_normalized)
    VALUES ('delete', old.seq, old.value_normalized);
END;
CREATE TRIGGER user_emails_reindexed AFTER UPDATE ON user_emails BEGIN
    INSERT INTO user_email_trigrams (user_email_trigrams, rowid, value_normalized)
    VALUES ('delete', old.seq, old.value_normalized);
    INSERT INTO user_email_trigrams (rowid, value_normalized) VALUES (new.seq, new.value_normalized);
END;
INSERT INTO user_email_trigrams (user_email_trigrams) VALUES ('rebuild');
