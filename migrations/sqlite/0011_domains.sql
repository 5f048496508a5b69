-- Email domains organizations own. A domain may be claimed by several
-- organizations, each with its own DNS challenge, but verified by at most
-- one: the partial unique index says so for every node at once.
CREATE TABLE org_domains (
    org_id      TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    domain      TEXT NOT NULL,
    challenge   TEXT NOT NULL,
    verified_at BIGINT,
    verified_by TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (org_id, domain)
);
CREATE UNIQUE INDEX org_domains_verified_once ON org_domains (domain) WHERE verified_at IS NOT NULL;

-- Each user's email domain, kept with the email, so that who owns an
-- address (and which addresses conflict with an owner) is an index probe.
ALTER TABLE users ADD COLUMN email_domain TEXT NOT NULL DEFAULT '';
UPDATE users SET email_domain = substr(email_normalized, instr(email_normalized, '@') + 1);
CREATE INDEX users_by_email_domain ON users (email_domain);
