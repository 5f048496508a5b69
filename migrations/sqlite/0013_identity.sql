-- The groups an identity provider asserted at sign-in, and which groups the
-- connection puts in access tokens, kept with the session (and with a
-- native app's code until it becomes one) so that a refresh issues the same.
ALTER TABLE sessions ADD COLUMN idp_groups TEXT;
ALTER TABLE sso_codes ADD COLUMN idp_groups TEXT;

-- Users SCIM deleted: their identity links, address and externalId, so that
-- a sign-in does not bring them back. SCIM creating the user again lifts it.
CREATE TABLE scim_tombstones (
    id                     TEXT PRIMARY KEY,
    org_id                 TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id                TEXT NOT NULL,
    connection_id          TEXT,
    subject                TEXT,
    email_normalized       TEXT NOT NULL,
    external_id_normalized TEXT,
    deleted_at             BIGINT NOT NULL
);
CREATE INDEX scim_tombstones_by_subject ON scim_tombstones (connection_id, subject);
CREATE INDEX scim_tombstones_by_email ON scim_tombstones (org_id, email_normalized);
CREATE INDEX scim_tombstones_by_external_id ON scim_tombstones (org_id, external_id_normalized);
