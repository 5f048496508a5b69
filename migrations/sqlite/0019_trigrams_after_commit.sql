-- The trigram indexes of 0018 are written after the commit, not in it.
-- SQLite writes an FTS5 table's changes as a new segment at the end of
-- every transaction that touched it, and with two such tables every user
-- write paid for two: SCIM creates were 15-30% slower. Now a write only
-- notes the user in user_trigrams_pending (one row of a plain table), and
-- the store's background task indexes what is noted, many users per
-- transaction (Store::index_pending_trigrams in
-- crates/store/src/trigrams.rs). Until then a noted user is a candidate for
-- every substring, so what the index answers is still a superset of the
-- matches.
--
-- One table now, keyed by the user's seq, holds the userName and the
-- user's email values (one per line). It is contentless with
-- contentless_delete, so that a user's entry can be replaced by rowid
-- without the text it was made from.
DROP TRIGGER users_trigrams_insert;
DROP TRIGGER users_trigrams_delete;
DROP TRIGGER users_trigrams_update;
DROP TRIGGER user_emails_trigrams_insert;
DROP TRIGGER user_emails_trigrams_delete;
DROP TRIGGER user_emails_trigrams_update;
DROP TABLE user_name_trigrams;
DROP TABLE user_email_trigrams;

CREATE VIRTUAL TABLE user_trigrams USING fts5(
    user_name, emails, content = '', contentless_delete = 1, tokenize = 'trigram case_sensitive 1'
);
CREATE TABLE user_trigrams_pending (seq INTEGER PRIMARY KEY);

CREATE TRIGGER users_trigrams_insert AFTER INSERT ON users BEGIN
    INSERT OR IGNORE INTO user_trigrams_pending (seq) VALUES (new.seq);
END;
CREATE TRIGGER users_trigrams_update AFTER UPDATE OF user_name_normalized ON users
    WHEN old.user_name_normalized IS NOT new.user_name_normalized BEGIN
    INSERT OR IGNORE INTO user_trigrams_pending (seq) VALUES (new.seq);
END;
CREATE TRIGGER users_trigrams_delete AFTER DELETE ON users BEGIN
    INSERT OR IGNORE INTO user_trigrams_pending (seq) VALUES (old.seq);
END;
CREATE TRIGGER user_emails_trigrams_insert AFTER INSERT ON user_emails BEGIN
    INSERT OR IGNORE INTO user_trigrams_pending (seq) SELECT seq FROM users WHERE id = new.user_id;
END;
CREATE TRIGGER user_emails_trigrams_update AFTER UPDATE OF value_normalized ON user_emails
    WHEN old.value_normalized IS NOT new.value_normalized BEGIN
    INSERT OR IGNORE INTO user_trigrams_pending (seq) SELECT seq FROM users WHERE id = new.user_id;
END;
CREATE TRIGGER user_emails_trigrams_delete AFTER DELETE ON user_emails BEGIN
    INSERT OR IGNORE INTO user_trigrams_pending (seq) SELECT seq FROM users WHERE id = old.user_id;
END;

-- Everyone is indexed again, by the store, once it is open.
INSERT INTO user_trigrams_pending (seq) SELECT seq FROM users;
