//! Fetching and checking a connection's discovery document and key set.

use std::time::Duration;

use gatehouse_outbound::{FetchError, OutboundClient};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::{IssuerRule, OidcConnection};

/// The parts of a discovery document (OpenID Connect Discovery 1.0 §3) the
/// connector uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub jwks_uri: Url,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
}

/// A public signing key from the provider's key set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: Option<String>,
    pub kty: String,
    pub alg: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot fetch {what}: {error}")]
    Fetch { what: &'static str, error: FetchError },
    #[error("the discovery document is incomplete: {0}")]
    Malformed(String),
    #[error("the discovery document names issuer {found:?}, the connection expects {expected:?}")]
    IssuerMismatch { found: String, expected: String },
    #[error("the provider publishes no usable signing key")]
    NoKeys,
}

const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_DOCUMENT: usize = 256 * 1024;

/// What the discovery document's `issuer` must be: exactly the connection's
/// issuer, or, for Azure AD multi-tenant connections, the `{tenantid}`
/// template Microsoft publishes for `organizations` and `common`.
fn expected_issuer(rule: &IssuerRule) -> String {
    match rule {
        IssuerRule::Exact(issuer) => issuer.clone(),
        IssuerRule::AzureMultiTenant { authority, .. } => format!("{authority}/{{tenantid}}/v2.0"),
    }
}

/// Fetches the discovery document and key set of `connection` and checks the
/// document's issuer against the connection's pinned rule.
pub async fn discover(
    client: &OutboundClient,
    connection: &OidcConnection,
) -> Result<(ProviderMetadata, Vec<PublicKey>), DiscoveryError> {
    let document = client
        .get_json(connection.discovery_url.clone(), TIMEOUT, MAX_DOCUMENT)
        .await
        .map_err(|error| DiscoveryError::Fetch { what: "the discovery document", error })?;
    let metadata: ProviderMetadata =
        serde_json::from_value(document).map_err(|e| DiscoveryError::Malformed(e.to_string()))?;
    let expected = expected_issuer(&connection.issuer);
    if metadata.issuer != expected {
        return Err(DiscoveryError::IssuerMismatch { found: metadata.issuer, expected });
    }
    let jwks = client
        .get_json(metadata.jwks_uri.clone(), TIMEOUT, MAX_DOCUMENT)
        .await
        .map_err(|error| DiscoveryError::Fetch { what: "the key set", error })?;
    let keys = signing_keys(&jwks);
    if keys.is_empty() {
        return Err(DiscoveryError::NoKeys);
    }
    Ok((metadata, keys))
}

/// The public signing keys of a JWKS: private parts and encryption-only keys
/// are ignored.
fn signing_keys(jwks: &Value) -> Vec<PublicKey> {
    let text = |k: &Value, f: &str| k.get(f).and_then(Value::as_str).map(str::to_owned);
    jwks.get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|k| k.get("d").is_none() && text(k, "use").is_none_or(|u| u == "sig"))
        .filter_map(|k| Some(PublicKey { kid: text(k, "kid"), kty: text(k, "kty")?, alg: text(k, "alg") }))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_public_signing_keys_count() {
        let jwks = json!({ "keys": [
            { "kty": "RSA", "kid": "a", "use": "sig", "alg": "RS256", "n": "x", "e": "AQAB" },
            { "kty": "RSA", "kid": "b", "use": "enc", "n": "x", "e": "AQAB" },
            { "kty": "EC", "kid": "c", "crv": "P-256", "x": "x", "y": "y", "d": "secret" },
            { "kid": "d" },
            { "kty": "EC", "kid": "e", "crv": "P-256", "x": "x", "y": "y" }
        ] });
        let kids: Vec<_> = signing_keys(&jwks).into_iter().map(|k| k.kid.unwrap()).collect();
        assert_eq!(kids, ["a", "e"]);
        assert!(signing_keys(&json!({})).is_empty());
    }

    #[test]
    fn azure_multi_tenant_discovery_publishes_the_template() {
        let rule = IssuerRule::AzureMultiTenant {
            authority: "https://login.microsoftonline.com".into(),
            allowed_tenants: vec![],
        };
        assert_eq!(expected_issuer(&rule), "https://login.microsoftonline.com/{tenantid}/v2.0");
    }
}
