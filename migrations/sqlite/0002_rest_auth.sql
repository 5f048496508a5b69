-- External REST authentication, one configuration per organization. The
-- configuration is sealed with the master key: header templates can carry
-- API keys for the organization's service.
CREATE TABLE rest_auth_configs (
    org_id        TEXT PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    config_sealed TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
