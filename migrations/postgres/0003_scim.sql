-- SCIM provisioning. Tokens identify the organization an IdP provisions;
-- they are stored only as hashes.
CREATE TABLE scim_tokens (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    label      TEXT NOT NULL,
    idp        TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX scim_tokens_by_org ON scim_tokens (org_id, id);

-- A user's SCIM userName when the IdP gave one (otherwise it is the email),
-- the resource as the IdP last wrote it (so extension attributes are kept),
-- and a version for ETags and optimistic concurrency.
ALTER TABLE users ADD COLUMN user_name TEXT;
ALTER TABLE users ADD COLUMN user_name_normalized TEXT;
ALTER TABLE users ADD COLUMN scim_resource TEXT;
ALTER TABLE users ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
CREATE UNIQUE INDEX users_by_user_name ON users (org_id, user_name_normalized);
