-- Single sign-on: each organization's policy, flows in progress, one-time
-- codes for native apps, and the links from a provider's subject to a user.

-- Whether members must sign in through single sign-on, and where a sign-in
-- may send the browser (return_to) or the native app (redirect_uri).
CREATE TABLE sso_policies (
    org_id        TEXT PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    sso_required  INTEGER NOT NULL CHECK (sso_required IN (0, 1)),
    redirect_urls TEXT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- A sign-in sent to the provider and not yet back. Keyed by the hash of its
-- state; what the callback needs (nonce, PKCE verifier, where to return) is
-- sealed with the master key. Single use: the callback deletes the row.
CREATE TABLE sso_flows (
    state_hash    TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    connection_id TEXT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    sealed        TEXT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX sso_flows_by_expiry ON sso_flows (expires_at);

-- A native app's one-time code, exchanged (with the app's PKCE verifier)
-- for a session. Keyed by the code's hash.
CREATE TABLE sso_codes (
    code_hash      TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_challenge TEXT NOT NULL,
    expires_at     BIGINT NOT NULL
);
CREATE INDEX sso_codes_by_expiry ON sso_codes (expires_at);

-- Which platform user a provider's subject is, per connection.
CREATE TABLE identity_links (
    connection_id TEXT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    subject       TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (connection_id, subject)
);
CREATE INDEX identity_links_by_user ON identity_links (user_id);
