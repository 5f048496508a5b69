-- Portable schema: ids are TEXT (UUIDv7), times are BIGINT milliseconds since
-- the epoch, booleans are INTEGER 0/1 (sqlx's Any driver cannot decode a
-- SQLite BOOLEAN). Keep it in step with migrations/postgres.

CREATE TABLE organizations (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    enterprise_toolkit INTEGER NOT NULL CHECK (enterprise_toolkit IN (0, 1)),
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);

CREATE TABLE users (
    id               TEXT PRIMARY KEY,
    org_id           TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email            TEXT NOT NULL,
    email_normalized TEXT NOT NULL UNIQUE,
    display_name     TEXT NOT NULL,
    external_id      TEXT,
    active           INTEGER NOT NULL CHECK (active IN (0, 1)),
    password_hash    TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX users_by_org ON users (org_id, id);

CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id         TEXT NOT NULL,
    auth_method    TEXT NOT NULL,
    device_os      TEXT,
    device_name    TEXT,
    device_ip      TEXT,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    revoked_at     BIGINT,
    revoked_reason TEXT
);
CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    rotated_at BIGINT
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

CREATE TABLE signing_keys (
    kid                TEXT PRIMARY KEY,
    alg                TEXT NOT NULL,
    sealed_private_key TEXT NOT NULL,
    public_jwk         TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    retired_at         BIGINT
);

CREATE TABLE admin_tokens (
    id         TEXT PRIMARY KEY,
    label      TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE audit_events (
    id          TEXT PRIMARY KEY,
    org_id      TEXT,
    user_id     TEXT,
    kind        TEXT NOT NULL,
    method      TEXT,
    outcome     TEXT NOT NULL,
    detail      TEXT,
    device_os   TEXT,
    device_name TEXT,
    device_ip   TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX audit_events_by_org ON audit_events (org_id, id);
