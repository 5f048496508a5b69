-- SQLite's trigram indexes are now written after the commit
-- (migrations/sqlite/0019); PostgreSQL's GIN indexes of 0018 stay as they
-- are: PostgreSQL already defers their work to a pending list (fastupdate).
SELECT 1;
