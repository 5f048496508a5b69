-- Rate limits and lockouts, shared by every node: one row per key (an
-- action, a scope and a hash of the account or client address). `hits`
-- counts within the window that ends at `window_ends`; reaching the limit
-- sets `blocked_until` and starts counting afresh. Times are milliseconds.
CREATE TABLE throttles (
    key           TEXT PRIMARY KEY,
    hits          BIGINT NOT NULL,
    window_ends   BIGINT NOT NULL,
    blocked_until BIGINT NOT NULL
);
CREATE INDEX throttles_by_expiry ON throttles (window_ends);
