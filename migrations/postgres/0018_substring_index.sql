-- Trigram indexes for the filters a B-tree cannot answer: `co` and `ew` on
-- userName and on emails' values (RFC 7644 §3.4.2.2), which the store
-- writes as LIKE '%…%' and '%…'. PostgreSQL's planner chooses between them
-- and a scan from its own statistics. pg_trgm ships with PostgreSQL and is
-- a trusted extension (13 and later): the database's owner can create it.
-- (migrations/sqlite builds the same indexes with FTS5.)
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX users_by_user_name_trigrams ON users USING gin (user_name_normalized gin_trgm_ops);
CREATE INDEX user_emails_by_value_trigrams ON user_emails USING gin (value_normalized gin_trgm_ops);
