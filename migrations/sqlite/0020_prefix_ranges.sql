-- PostgreSQL gains B-trees in byte order for `sw` (migrations/postgres/0020);
-- SQLite's indexes of 0015 and 0016 already compare bytes (BINARY).
SELECT 1;
