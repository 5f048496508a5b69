-- no-transaction
-- SCIM requires only a userName (RFC 7643 §4.1), so a user may have no
-- email. SQLite cannot drop a NOT NULL, so the users table is rebuilt, the
-- way SQLite's own documentation of ALTER TABLE describes: with foreign keys
-- off (dropping the old table must not cascade to sessions, links and group
-- members, whose references to "users" hold again once the new table takes
-- the name), in one transaction.
-- A user still has a name to be known by: an email, a userName, or both.
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE users_rebuilt (
    id                     TEXT PRIMARY KEY,
    org_id                 TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email                  TEXT,
    email_normalized       TEXT UNIQUE,
    display_name           TEXT NOT NULL,
    external_id            TEXT,
    active                 INTEGER NOT NULL CHECK (active IN (0, 1)),
    password_hash          TEXT,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL,
    user_name              TEXT,
    user_name_normalized   TEXT,
    scim_resource          TEXT,
    version                BIGINT NOT NULL DEFAULT 1,
    external_id_normalized TEXT,
    email_domain           TEXT NOT NULL DEFAULT '',
    role                   TEXT NOT NULL DEFAULT 'member',
    created_via            TEXT NOT NULL DEFAULT 'unknown',
    CHECK (email IS NOT NULL OR user_name IS NOT NULL),
    CHECK ((email IS NULL) = (email_normalized IS NULL))
);
INSERT INTO users_rebuilt (id, org_id, email, email_normalized, display_name, external_id, active,
    password_hash, created_at, updated_at, user_name, user_name_normalized, scim_resource, version,
    external_id_normalized, email_domain, role, created_via)
SELECT id, org_id, email, email_normalized, display_name, external_id, active,
    password_hash, created_at, updated_at, user_name, user_name_normalized, scim_resource, version,
    external_id_normalized, email_domain, role, created_via
FROM users;
DROP TABLE users;
ALTER TABLE users_rebuilt RENAME TO users;
CREATE INDEX users_by_org ON users (org_id, id);
CREATE UNIQUE INDEX users_by_user_name ON users (org_id, user_name_normalized);
CREATE INDEX users_by_external_id ON users (org_id, external_id_normalized);
CREATE INDEX users_by_email_domain ON users (email_domain);

-- A tombstone of a user without an email holds none.
CREATE TABLE scim_tombstones_rebuilt (
    id                     TEXT PRIMARY KEY,
    org_id                 TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id                TEXT NOT NULL,
    connection_id          TEXT,
    subject                TEXT,
    email_normalized       TEXT,
    external_id_normalized TEXT,
    deleted_at             BIGINT NOT NULL
);
INSERT INTO scim_tombstones_rebuilt
SELECT id, org_id, user_id, connection_id, subject, NULLIF(email_normalized, ''), external_id_normalized, deleted_at
FROM scim_tombstones;
DROP TABLE scim_tombstones;
ALTER TABLE scim_tombstones_rebuilt RENAME TO scim_tombstones;
CREATE INDEX scim_tombstones_by_subject ON scim_tombstones (connection_id, subject);
CREATE INDEX scim_tombstones_by_email ON scim_tombstones (org_id, email_normalized);
CREATE INDEX scim_tombstones_by_external_id ON scim_tombstones (org_id, external_id_normalized);
COMMIT;
PRAGMA foreign_keys = ON;
