//! Organizations' email domains: claiming one, proving it through DNS, and
//! what a verified domain means elsewhere (see `gatehouse_store`'s
//! `domains` for the rule every user write obeys).
//!
//! To verify `example.com`, the organization publishes a TXT record at
//! `_gatehouse-challenge.example.com` whose value is
//! `gatehouse-domain-verification=<challenge>`. The underscore label keeps
//! the record out of the way of the domain's own TXT records (SPF and the
//! like), as other services' challenges do.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use gatehouse_core::OrgId;
use gatehouse_store::{OrgDomain, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::audit::{Actor, Change};
use crate::error::ApiError;
use crate::state::AppState;

/// The label under which the challenge is published.
pub(crate) const CHALLENGE_LABEL: &str = "_gatehouse-challenge";
/// What the TXT record's value starts with.
pub(crate) const CHALLENGE_PREFIX: &str = "gatehouse-domain-verification=";

/// A domain as an admin writes it, in the one form it is stored and
/// compared in: lower-case ASCII, internationalized names as `xn--` labels,
/// no trailing dot, at least two labels, each a DNS hostname label.
pub(crate) fn normalize(raw: &str) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::invalid("domain", why.to_owned());
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(bad("must not be empty"));
    }
    if raw.len() > 253 {
        return Err(bad("must be at most 253 characters"));
    }
    let raw = raw.strip_suffix('.').unwrap_or(raw);
    // The URL standard's host parser does the IDNA mapping (and refuses
    // what cannot be a host); everything else is checked here.
    let ascii = match url::Host::parse(raw) {
        Ok(url::Host::Domain(d)) => d,
        Ok(_) => return Err(bad("must be a domain name, not an IP address")),
        Err(_) => return Err(bad("is not a domain name")),
    };
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err(bad("must have at least two labels, such as example.com"));
    }
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !labels.iter().all(label_ok) || ascii.len() > 253 {
        return Err(bad("must be a hostname: letters, digits and hyphens in dot-separated labels"));
    }
    if labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad("must be a domain name, not an IP address"));
    }
    Ok(ascii)
}

/// A domain as admins see it, with what to publish to verify it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DomainView {
    pub domain: String,
    pub verified: bool,
    pub verified_at: Option<DateTime<Utc>>,
    /// `dns`, or the platform admin who vouched for it.
    pub verified_by: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The DNS record that proves the organization holds the domain.
    pub challenge: ChallengeView,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChallengeView {
    /// Always `TXT`.
    #[serde(rename = "type")]
    pub record_type: &'static str,
    /// The name to publish it at.
    pub name: String,
    pub value: String,
}

impl From<OrgDomain> for DomainView {
    fn from(d: OrgDomain) -> Self {
        Self {
            challenge: ChallengeView {
                record_type: "TXT",
                name: format!("{CHALLENGE_LABEL}.{}", d.domain),
                value: format!("{CHALLENGE_PREFIX}{}", d.challenge),
            },
            verified: d.verified_at.is_some(),
            domain: d.domain,
            verified_at: d.verified_at,
            verified_by: d.verified_by,
            created_at: d.created_at,
        }
    }
}

/// How a claim is to be verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proof {
    /// The challenge is published in DNS.
    Dns,
    /// A platform admin vouches for it.
    Admin,
}

/// The domain of `org`, or 404.
pub(crate) async fn require(state: &AppState, org: OrgId, domain: &str) -> Result<OrgDomain, ApiError> {
    match state.store().get_domain(org, domain).await {
        Err(StoreError::NotFound) => Err(ApiError::NotFound("domain")),
        other => Ok(other?),
    }
}

/// Records the organization's claim on `raw`, with a fresh challenge.
pub(crate) async fn claim(
    state: &AppState,
    actor: &Actor,
    org: OrgId,
    raw: &str,
) -> Result<OrgDomain, ApiError> {
    let domain = normalize(raw)?;
    let challenge = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>());
    let claimed = match state.store().add_domain(org, &domain, &challenge, state.clock().now()).await {
        Err(StoreError::NotFound) => return Err(ApiError::NotFound("organization")),
        other => other?,
    };
    audit(state, actor, org, "domain_added", &domain, None).await?;
    Ok(claimed)
}

/// Verifies the organization's claim on `domain`, by DNS or on an admin's
/// word. Verifying a verified domain again changes nothing.
pub(crate) async fn verify(
    state: &AppState,
    actor: &Actor,
    org: OrgId,
    domain: &str,
    proof: Proof,
) -> Result<OrgDomain, ApiError> {
    let claimed = require(state, org, domain).await?;
    if claimed.verified_at.is_some() {
        return Ok(claimed);
    }
    let verified_by = match proof {
        Proof::Admin => actor.to_string(),
        Proof::Dns => {
            check_challenge(state, &claimed).await?;
            "dns".to_owned()
        }
    };
    let verified =
        match state.store().mark_domain_verified(org, domain, &verified_by, state.clock().now()).await {
            Err(StoreError::Conflict(_)) => {
                return Err(ApiError::Conflict(format!(
                    "{domain} is already verified by another organization"
                )));
            }
            other => other?,
        };
    audit(state, actor, org, "domain_verified", domain, Some(&verified_by)).await?;
    tracing::info!(%org, domain, verified_by, "domain verified");
    Ok(verified)
}

/// Looks the challenge up in DNS; a clear refusal when it is not there.
async fn check_challenge(state: &AppState, claimed: &OrgDomain) -> Result<(), ApiError> {
    let name = format!("{CHALLENGE_LABEL}.{}", claimed.domain);
    let expected = format!("{CHALLENGE_PREFIX}{}", claimed.challenge);
    let records = crate::dns::txt(state.settings().dns_resolver, &name).await.map_err(|e| {
        tracing::warn!(cause = %e, name, "domain verification could not look up its challenge");
        ApiError::Unavailable { code: "dns_unavailable", retry_after: 30 }
    })?;
    if records.iter().any(|r| r.trim() == expected) {
        return Ok(());
    }
    Err(ApiError::Conflict(if records.is_empty() {
        format!("no TXT record found at {name}; publish {expected:?} there and try again")
    } else {
        format!("the TXT records at {name} do not include {expected:?}")
    }))
}

/// Drops the organization's claim on `domain`.
pub(crate) async fn remove(
    state: &AppState,
    actor: &Actor,
    org: OrgId,
    domain: &str,
) -> Result<(), ApiError> {
    match state.store().delete_domain(org, domain).await {
        Err(StoreError::NotFound) => return Err(ApiError::NotFound("domain")),
        other => other?,
    }
    audit(state, actor, org, "domain_removed", domain, None).await
}

async fn audit(
    state: &AppState,
    actor: &Actor,
    org: OrgId,
    kind: &'static str,
    domain: &str,
    verified_by: Option<&str>,
) -> Result<(), ApiError> {
    let mut detail = serde_json::json!({ "domain": domain });
    if let Some(by) = verified_by {
        detail["verified_by"] = by.into();
    }
    crate::audit::change(state, actor, org, Change::new(kind, detail)).await
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn domains_are_stored_in_one_form() {
        assert_eq!(normalize(" Example.COM. ").unwrap(), "example.com");
        assert_eq!(normalize("bücher.example").unwrap(), "xn--bcher-kva.example");
        assert_eq!(normalize("a-b.c1.example").unwrap(), "a-b.c1.example");
    }

    #[test]
    fn what_is_not_a_domain_is_refused() {
        for bad in [
            "",
            "com",
            "localhost",
            "127.0.0.1",
            "[::1]",
            "1.2.3.4.5",
            "example..com",
            "-a.example",
            "a_b.example",
            "user@example.com",
            "example.com/../x",
            "example.com:80",
            "exa mple.com",
            "example.com\r\nx",
            "%2e%2e.example",
            &format!("{}.example", "a".repeat(64)),
            &format!("{}example", "a.".repeat(130)),
        ] {
            assert!(normalize(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
