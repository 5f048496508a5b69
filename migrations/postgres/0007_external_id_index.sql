-- SCIM filters on externalId (Entra's matching attribute for some tenants)
-- are answered from an index; values are compared case-insensitively, folded
-- by the application so that both backends agree.
ALTER TABLE users ADD COLUMN external_id_normalized TEXT;
UPDATE users SET external_id_normalized = LOWER(external_id) WHERE external_id IS NOT NULL;
CREATE INDEX users_by_external_id ON users (org_id, external_id_normalized);
