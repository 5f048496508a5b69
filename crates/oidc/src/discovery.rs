//! Fetching and checking a connection's discovery document and key set.

use std::time::Duration;

use gatehouse_outbound::{FetchError, OutboundClient};
use openidconnect::core::{CoreJsonWebKeySet, CoreProviderMetadata};
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

/// What a connection's provider publishes, as fetched: the discovery document
/// (for the endpoints) and the key set (for ID-token signatures).
#[derive(Debug, Clone)]
pub struct ProviderInfo {
    pub metadata: ProviderMetadata,
    /// The same document, typed for `openidconnect`, with the key set set.
    pub(crate) core: CoreProviderMetadata,
    /// The key set as published, for what `openidconnect` does not model
    /// (Azure AD's per-key `issuer`).
    pub(crate) jwks: Value,
}

impl ProviderInfo {
    /// The public signing keys the provider publishes.
    pub fn keys(&self) -> Vec<PublicKey> {
        signing_keys(&self.jwks)
    }
}

/// Fetches the discovery document and key set of `connection` and checks the
/// document's issuer against the connection's pinned rule.
pub async fn discover(
    client: &OutboundClient,
    connection: &OidcConnection,
) -> Result<ProviderInfo, DiscoveryError> {
    let document = client
        .get_json(connection.discovery_url.clone(), TIMEOUT, MAX_DOCUMENT)
        .await
        .map_err(|error| DiscoveryError::Fetch { what: "the discovery document", error })?;
    let metadata: ProviderMetadata =
        serde_json::from_value(document.clone()).map_err(|e| DiscoveryError::Malformed(e.to_string()))?;
    let expected = expected_issuer(&connection.issuer);
    if metadata.issuer != expected {
        return Err(DiscoveryError::IssuerMismatch { found: metadata.issuer, expected });
    }
    // Deserialising does no issuer check of its own (discovering through
    // `openidconnect` would, and cannot take Azure AD's `{tenantid}`
    // template); the check above is the one that counts.
    let core: CoreProviderMetadata =
        serde_json::from_value(document).map_err(|e| DiscoveryError::Malformed(e.to_string()))?;
    let jwks = fetch_keys(client, &metadata).await?;
    Ok(ProviderInfo { core: core.set_jwks(parse_key_set(&jwks)?), metadata, jwks })
}

/// Fetches the key set again, for a token signed with a key not seen before
/// (the provider rotated its keys).
pub(crate) async fn refetch_keys(
    client: &OutboundClient,
    info: &ProviderInfo,
) -> Result<ProviderInfo, DiscoveryError> {
    let jwks = fetch_keys(client, &info.metadata).await?;
    Ok(ProviderInfo {
        core: info.core.clone().set_jwks(parse_key_set(&jwks)?),
        metadata: info.metadata.clone(),
        jwks,
    })
}

async fn fetch_keys(client: &OutboundClient, metadata: &ProviderMetadata) -> Result<Value, DiscoveryError> {
    let jwks = client
        .get_json(metadata.jwks_uri.clone(), TIMEOUT, MAX_DOCUMENT)
        .await
        .map_err(|error| DiscoveryError::Fetch { what: "the key set", error })?;
    if signing_keys(&jwks).is_empty() {
        return Err(DiscoveryError::NoKeys);
    }
    Ok(jwks)
}

fn parse_key_set(jwks: &Value) -> Result<CoreJsonWebKeySet, DiscoveryError> {
    serde_json::from_value(jwks.clone()).map_err(|e| DiscoveryError::Malformed(format!("the key set: {e}")))
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
