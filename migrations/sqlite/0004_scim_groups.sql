-- SCIM groups and their members. A display name is unique per organization
-- (compared case-insensitively), which is how Okta and Entra find groups.
CREATE TABLE scim_groups (
    id                      TEXT PRIMARY KEY,
    org_id                  TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    display_name            TEXT NOT NULL,
    display_name_normalized TEXT NOT NULL,
    external_id             TEXT,
    scim_resource           TEXT,
    version                 BIGINT NOT NULL,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL
);
CREATE UNIQUE INDEX scim_groups_by_name ON scim_groups (org_id, display_name_normalized);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES scim_groups (id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_by_user ON group_members (user_id);
