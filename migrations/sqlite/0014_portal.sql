-- The web portal.

-- A user's role in their organization: admins manage it in the portal.
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
-- How each user came to be: admin (the API or the portal), scim, jit;
-- unknown for users from before this was recorded.
ALTER TABLE users ADD COLUMN created_via TEXT NOT NULL DEFAULT 'unknown';
UPDATE users SET created_via = 'scim' WHERE scim_resource IS NOT NULL;

-- A browser's session: the hash of the opaque cookie the browser holds,
-- beside the refresh token an app would hold.
ALTER TABLE sessions ADD COLUMN browser_token_hash TEXT;
CREATE UNIQUE INDEX sessions_by_browser_token ON sessions (browser_token_hash);

-- Portal sessions of people who are not users of an organization: platform
-- admins (who traded an admin token for one) and customers' IT admins (who
-- followed a setup link). A null organization is every organization.
CREATE TABLE portal_sessions (
    token_hash TEXT PRIMARY KEY,
    org_id     TEXT REFERENCES organizations (id) ON DELETE CASCADE,
    actor      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX portal_sessions_by_expiry ON portal_sessions (expires_at);

-- Setup links: one organization, until they expire or are revoked.
CREATE TABLE portal_links (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX portal_links_by_org ON portal_links (org_id, id);

-- Password reset links sent by email: single use, short-lived, hashed.
CREATE TABLE password_resets (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX password_resets_by_user ON password_resets (user_id);
CREATE INDEX password_resets_by_expiry ON password_resets (expires_at);

-- Each connection's last sign-in and last refusal, for its health at a glance.
CREATE TABLE connection_health (
    connection_id       TEXT PRIMARY KEY REFERENCES connections (id) ON DELETE CASCADE,
    last_success_at     BIGINT,
    last_failure_at     BIGINT,
    last_failure_reason TEXT
);
