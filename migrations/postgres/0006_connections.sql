-- Identity-provider connections (OIDC today). The configuration is JSON
-- without the client secret; the secret is sealed with the master key.
CREATE TABLE connections (
    id                   TEXT PRIMARY KEY,
    org_id               TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    kind                 TEXT NOT NULL,
    config               TEXT NOT NULL,
    client_secret_sealed TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
CREATE INDEX connections_by_org ON connections (org_id, id);
