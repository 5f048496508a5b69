-- SAML: assertions already used, per connection, kept until they expire,
-- so that a response is accepted once by any node.
CREATE TABLE saml_assertions_seen (
    connection_id TEXT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    assertion_id  TEXT NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (connection_id, assertion_id)
);
CREATE INDEX saml_assertions_seen_by_expiry ON saml_assertions_seen (expires_at);

-- How the user behind a native app's code signed in (oidc, saml).
ALTER TABLE sso_codes ADD COLUMN auth_method TEXT NOT NULL DEFAULT 'oidc';
