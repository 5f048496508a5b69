-- Substring filters (`co`, `ew`, and `sw` through LIKE) on the lower-cased
-- columns use trigram indexes (pg_trgm, a trusted extension: the database's
-- owner may create it). Without them such a filter reads every row of the
-- organization.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX users_user_name_trigrams ON users USING gin (user_name_normalized gin_trgm_ops);
CREATE INDEX users_external_id_trigrams ON users USING gin (external_id_normalized gin_trgm_ops);
CREATE INDEX users_display_name_trigrams ON users USING gin (display_name_normalized gin_trgm_ops);
CREATE INDEX user_emails_value_trigrams ON user_emails USING gin (value_normalized gin_trgm_ops);
