-- `sw` (RFC 7644 §3.4.2.2) on userName and on emails' values as a range
-- of a B-tree, as on SQLite: the store writes a prefix as
-- `col COLLATE "C" >= prefix AND col COLLATE "C" < successor`, which only
-- an index in byte order (COLLATE "C") can serve; the indexes of 0015 and
-- 0016 are in the database's collation. (Before this, a prefix was a LIKE
-- through the trigram indexes of 0018: 5 ms a statement at 100k users once
-- analyzed, and a scan of the organization before.)
CREATE INDEX users_by_user_name_bytes ON users (org_id, user_name_normalized COLLATE "C");
CREATE INDEX user_emails_by_value_bytes ON user_emails (org_id, value_normalized COLLATE "C");
