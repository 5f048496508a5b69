//! Email domains organizations claim and verify.
//!
//! A verified domain belongs to one organization, and so do the addresses
//! in it and in its subdomains: no other organization's user may have one.
//! That rule is kept here, in the transaction that writes the user
//! ([`refuse_owned_elsewhere`]), so that no path that creates or renames a
//! user (admin API, SCIM, just-in-time sign-in) can miss it. Users who had
//! such an address before the domain was verified are left as they are, and
//! listed by [`Store::domain_conflicts`].

use chrono::{DateTime, Utc};
use gatehouse_core::{OrgId, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::read_then_write::ReadRows;
use crate::{Result, Store, StoreError, clamp_limit, from_millis, millis, parse_id};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgDomain {
    pub org_id: OrgId,
    /// Lower-case ASCII (internationalized names in their `xn--` form).
    pub domain: String,
    /// The value the organization publishes in DNS to prove it holds the
    /// domain.
    pub challenge: String,
    pub verified_at: Option<DateTime<Utc>>,
    /// How it was verified: `dns`, or the platform admin who vouched for it.
    pub verified_by: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A user whose address is in a domain another organization has verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConflict {
    pub user_id: UserId,
    pub user_org_id: OrgId,
    pub email: String,
    pub domain: String,
    pub owner_org_id: OrgId,
}

const COLUMNS: &str = "org_id, domain, challenge, verified_at, verified_by, created_at";

fn domain_from_row(row: &AnyRow) -> Result<OrgDomain> {
    Ok(OrgDomain {
        org_id: parse_id(&row.try_get::<String, _>("org_id")?)?,
        domain: row.try_get("domain")?,
        challenge: row.try_get("challenge")?,
        verified_at: row.try_get::<Option<i64>, _>("verified_at")?.map(from_millis),
        verified_by: row.try_get("verified_by")?,
        created_at: from_millis(row.try_get("created_at")?),
    })
}

/// `domain` and every domain it is under, most specific first:
/// `a.b.example` gives `a.b.example`, `b.example`, `example`.
pub fn domain_and_parents(domain: &str) -> Vec<&str> {
    let mut out = vec![domain];
    let mut rest = domain;
    while let Some((_, parent)) = rest.split_once('.') {
        out.push(parent);
        rest = parent;
    }
    out
}

impl Store {
    /// Records the organization's claim on `domain`, unverified, with the
    /// challenge it must publish. Claiming it twice is a conflict.
    pub async fn add_domain(
        &self,
        org: OrgId,
        domain: &str,
        challenge: &str,
        now: DateTime<Utc>,
    ) -> Result<OrgDomain> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO org_domains (org_id, domain, challenge, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(org.to_string())
        .bind(domain)
        .bind(challenge)
        .bind(millis(now))
        .execute(&self.pool)
        .await
        .map_err(StoreError::on_insert("this organization's claim on the domain"))?;
        Ok(OrgDomain {
            org_id: org,
            domain: domain.to_owned(),
            challenge: challenge.to_owned(),
            verified_at: None,
            verified_by: None,
            created_at: from_millis(millis(now)),
        })
    }

    pub async fn get_domain(&self, org: OrgId, domain: &str) -> Result<OrgDomain> {
        let sql = format!("SELECT {COLUMNS} FROM org_domains WHERE org_id = $1 AND domain = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org.to_string())
            .bind(domain)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        domain_from_row(&row)
    }

    /// The organization's domains, alphabetically.
    pub async fn list_domains(&self, org: OrgId) -> Result<Vec<OrgDomain>> {
        let sql = format!("SELECT {COLUMNS} FROM org_domains WHERE org_id = $1 ORDER BY domain LIMIT 1000");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org.to_string()).fetch_all(&self.pool).await?;
        rows.iter().map(domain_from_row).collect()
    }

    /// Marks the claim verified. Another organization having verified the
    /// same domain already is a conflict; verifying again changes nothing.
    pub async fn mark_domain_verified(
        &self,
        org: OrgId,
        domain: &str,
        verified_by: &str,
        now: DateTime<Utc>,
    ) -> Result<OrgDomain> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE org_domains SET verified_at = $3, verified_by = $4 \
             WHERE org_id = $1 AND domain = $2 AND verified_at IS NULL",
        )
        .bind(org.to_string())
        .bind(domain)
        .bind(millis(now))
        .bind(verified_by)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::unique("a verification of this domain by another organization"))?;
        let sql = format!("SELECT {COLUMNS} FROM org_domains WHERE org_id = $1 AND domain = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org.to_string())
            .bind(domain)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        domain_from_row(&row)
    }

    /// Drops the organization's claim (verified or not).
    pub async fn delete_domain(&self, org: OrgId, domain: &str) -> Result<()> {
        let _turn = self.write_turn().await;
        let done = sqlx::query("DELETE FROM org_domains WHERE org_id = $1 AND domain = $2")
            .bind(org.to_string())
            .bind(domain)
            .execute(&self.pool)
            .await?;
        crate::found(done)
    }

    /// The organization that has verified `domain` or a domain it is under,
    /// the most specific first.
    pub async fn domain_owner(&self, domain: &str) -> Result<Option<(OrgId, String)>> {
        let mut conn = self.pool.acquire().await?;
        let candidates = domain_and_parents(domain);
        let owners = verified_owners(&mut *conn, &candidates).await?;
        Ok(nearest_owner(&owners, domain).cloned())
    }

    /// Users whose address is in a domain (or under a domain) that another
    /// organization has verified: what verification found already there.
    pub async fn domain_conflicts(&self, limit: u32) -> Result<Vec<DomainConflict>> {
        let rows = sqlx::query(
            "SELECT u.id, u.org_id, u.email, d.domain, d.org_id AS owner FROM users u \
             JOIN org_domains d ON d.verified_at IS NOT NULL AND d.org_id <> u.org_id \
               AND (u.email_domain = d.domain OR u.email_domain LIKE '%.' || d.domain) \
             WHERE NOT EXISTS (SELECT 1 FROM org_domains m WHERE m.verified_at IS NOT NULL \
               AND m.org_id = u.org_id AND length(m.domain) > length(d.domain) \
               AND (u.email_domain = m.domain OR u.email_domain LIKE '%.' || m.domain)) \
             ORDER BY d.domain, u.id LIMIT $1",
        )
        .bind(clamp_limit(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DomainConflict {
                    user_id: parse_id(&row.try_get::<String, _>("id")?)?,
                    user_org_id: parse_id(&row.try_get::<String, _>("org_id")?)?,
                    email: row.try_get("email")?,
                    domain: row.try_get("domain")?,
                    owner_org_id: parse_id(&row.try_get::<String, _>("owner")?)?,
                })
            })
            .collect()
    }
}

/// Which of `domains` are verified, and by whom: one query, however many
/// (a batch of 64 addresses, each with 127 labels, the most a SCIM client
/// can send, is 8,128). Bound as one list: bound one by one, SQLite found
/// each named value by a linear search, and 8,128 of them took 134–184 ms
/// under the write lock.
async fn verified_owners(reads: &mut impl ReadRows, domains: &[&str]) -> Result<Vec<(OrgId, String)>> {
    if domains.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT org_id, domain FROM org_domains WHERE verified_at IS NOT NULL AND domain IN {}",
        crate::in_json_strings(reads.backend(), 1)
    );
    reads
        .rows(&sql, &[&crate::json_strings(domains)], |row| {
            Ok((parse_id(&row.text("org_id")?)?, row.text("domain")?))
        })
        .await
}

/// Fails with [`StoreError::DomainOwned`] when any of these would-be
/// addresses (organization, email domain) is in a domain another
/// organization has verified. Runs inside the transaction that writes them.
pub(crate) async fn refuse_owned_elsewhere(
    reads: &mut impl ReadRows,
    addresses: &[(OrgId, &str)],
) -> Result<()> {
    let mut all: Vec<&str> = addresses.iter().flat_map(|(_, d)| domain_and_parents(d)).collect();
    all.sort_unstable();
    all.dedup();
    // Bounded: an address is at most 254 characters, so at most 127 labels,
    // and a batch at most 64 users; they are looked up a hundred at a time.
    let owners = verified_owners(reads, &all).await?;
    for (org, domain) in addresses {
        if let Some((owner, owned)) = nearest_owner(&owners, domain)
            && owner != org
        {
            return Err(StoreError::DomainOwned(owned.clone()));
        }
    }
    Ok(())
}

/// Of `owners`, the one whose verified domain is `domain` or the closest
/// domain above it: a subdomain verified by one organization is that
/// organization's even when another verified the domain above it.
fn nearest_owner<'a>(owners: &'a [(OrgId, String)], domain: &str) -> Option<&'a (OrgId, String)> {
    domain_and_parents(domain).into_iter().find_map(|d| owners.iter().find(|(_, owned)| owned == d))
}
