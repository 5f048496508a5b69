-- Who made a change (an admin token, a portal user), for changes made by
-- someone rather than by a sign-in or an IdP.
ALTER TABLE audit_events ADD COLUMN actor TEXT;
-- Retention deletes by age; the platform-wide list and its filters read
-- newest first by id, which is time-ordered.
CREATE INDEX audit_events_by_time ON audit_events (created_at);
CREATE INDEX audit_events_by_user ON audit_events (user_id, id);
CREATE INDEX audit_events_by_kind ON audit_events (kind, id);
