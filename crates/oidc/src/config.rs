use gatehouse_core::{AccountPolicy, AccountSettings, InvalidField};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::issuer::{IssuerRule, is_guid};

const PUBLIC_CLOUD: &str = "https://login.microsoftonline.com";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Okta,
    AzureAd,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Okta => "okta",
            Self::AzureAd => "azure_ad",
        }
    }
}

/// A connection as the admin writes it. The client secret is accepted but
/// never serialised: it cannot reach a stored configuration or a response by
/// accident; the caller seals it separately.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    pub kind: Provider,
    /// Okta: the authorization server's issuer, `https://{domain}` or
    /// `https://{domain}/oauth2/{id}`, exactly as its discovery document says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Azure AD: the tenant id (a GUID), or `organizations` / `common` for a
    /// multi-tenant app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Azure AD multi-tenant: the tenants whose users may sign in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_tenant_ids: Vec<String>,
    /// Azure AD: the cloud's sign-in authority [default: https://login.microsoftonline.com].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    pub client_id: String,
    /// Write-only: required when a connection is created, kept when an update
    /// leaves it out, never returned.
    #[serde(default, skip_serializing)]
    pub client_secret: Option<String>,
    /// [default: openid, email, profile]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// The claim holding the user's email [default: email].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_claim: Option<String>,
    /// The claim holding the user's groups [default: groups].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
    // The account fields, from here to `groups_source`, are the same in
    // every kind's configuration and become one `AccountPolicy`. They are
    // repeated rather than flattened from a shared struct because serde
    // cannot flatten into a struct that denies unknown fields.
    /// Create unknown users on their first sign-in.
    #[serde(default)]
    pub jit_provisioning: bool,
    /// Link a first sign-in to an existing user of the organization with the
    /// same, verified, email.
    #[serde(default)]
    pub link_by_email: bool,
    /// When not empty, only emails in these domains may sign in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_email_domains: Vec<String>,
    /// Believe the provider's email for linking and creating users outside
    /// the organization's verified domains too.
    #[serde(default)]
    pub trust_unverified_email_domains: bool,
    /// Create users just in time even though the organization provisions by
    /// SCIM.
    #[serde(default)]
    pub jit_alongside_scim: bool,
    /// The groups access tokens carry: `idp` (the groups claim), `scim`, or
    /// `both` [default: both].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_source: Option<String>,
    /// The IdP group whose members are the organization's admins (the
    /// group's name, or its object id for Azure AD); everyone else who
    /// signs in through the connection is a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_group: Option<String>,
    /// The claim that holds what SCIM sends as `externalId`, so that users
    /// provisioned by SCIM are matched by it before their email [default:
    /// `sub` for Okta, whose SCIM externalId is the Okta user id; none for
    /// Azure AD, where `oid` is the usual choice when objectId is mapped to
    /// externalId]. `none` turns it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id_claim: Option<String>,
}

/// A configuration problem, naming the field at fault.
pub type InvalidConnection = InvalidField;

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidConnection {
    InvalidField::new(field, message)
}

/// A validated connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConnection {
    pub provider: Provider,
    pub discovery_url: Url,
    pub issuer: IssuerRule,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub email_claim: String,
    pub groups_claim: String,
    /// The claim matched against SCIM `externalId`, if any.
    pub external_id_claim: Option<String>,
    pub account: AccountPolicy,
}

/// An absolute https URL (http only on loopback, for development and tests,
/// when `allow_loopback_http`), without credentials, query or fragment.
fn base_url(field: &'static str, text: &str, allow_loopback_http: bool) -> Result<Url, InvalidConnection> {
    let url = Url::parse(text.trim()).map_err(|e| invalid(field, format!("not a valid URL: {e}")))?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match url.scheme() {
        "https" => {}
        "http" if allow_loopback_http && loopback => {}
        _ => return Err(invalid(field, "must be an https URL")),
    }
    if url.host().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(field, "must have a host and no user:password@ part"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(field, "must not have a query or fragment"));
    }
    Ok(url)
}

fn text(field: &'static str, value: &str, max: usize) -> Result<String, InvalidConnection> {
    let value = value.trim();
    if value.is_empty() || value.len() > max || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(field, format!("must be 1 to {max} characters without spaces")));
    }
    Ok(value.to_owned())
}

impl ConnectionConfig {
    /// Checks everything that can be checked without the network.
    /// `allow_loopback_http` admits `http://127.0.0.1…` issuers, for
    /// development against a local provider.
    pub fn validate(&self, allow_loopback_http: bool) -> Result<OidcConnection, InvalidConnection> {
        let client_id = text("client_id", &self.client_id, 255)?;
        if let Some(secret) = &self.client_secret
            && (secret.is_empty() || secret.len() > 1024 || secret.chars().any(char::is_control))
        {
            return Err(invalid("client_secret", "must be 1 to 1024 characters"));
        }
        let (discovery_url, issuer) = match self.kind {
            Provider::Okta => {
                for (set, field) in [
                    (self.tenant.is_some(), "tenant"),
                    (!self.allowed_tenant_ids.is_empty(), "allowed_tenant_ids"),
                    (self.authority.is_some(), "authority"),
                ] {
                    if set {
                        return Err(invalid(field, "is for azure_ad connections"));
                    }
                }
                let raw = self.issuer.as_deref().ok_or_else(|| invalid("issuer", "is required for okta"))?;
                let url = base_url("issuer", raw, allow_loopback_http)?;
                let path = url.path().trim_end_matches('/');
                let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
                let valid_path = match segments.as_slice() {
                    [] => true,
                    ["oauth2", id] => id.chars().all(|c| c.is_ascii_alphanumeric()),
                    _ => false,
                };
                if !valid_path {
                    return Err(invalid(
                        "issuer",
                        "must be https://{domain} or https://{domain}/oauth2/{authorization server id}",
                    ));
                }
                let issuer = format!("{}{}", url.origin().ascii_serialization(), path);
                let discovery = Url::parse(&format!("{issuer}/.well-known/openid-configuration"))
                    .map_err(|e| invalid("issuer", e.to_string()))?;
                (discovery, IssuerRule::Exact(issuer))
            }
            Provider::AzureAd => {
                if self.issuer.is_some() {
                    return Err(invalid("issuer", "is for okta connections; azure_ad takes a tenant"));
                }
                let authority = match &self.authority {
                    Some(a) => {
                        let url = base_url("authority", a, allow_loopback_http)?;
                        if url.path() != "/" {
                            return Err(invalid("authority", "must be the cloud's origin, without a path"));
                        }
                        url.origin().ascii_serialization()
                    }
                    None => PUBLIC_CLOUD.to_owned(),
                };
                let tenant = self
                    .tenant
                    .as_deref()
                    .map(|t| t.trim().to_ascii_lowercase())
                    .ok_or_else(|| invalid("tenant", "is required for azure_ad"))?;
                let issuer = match tenant.as_str() {
                    t if is_guid(t) => {
                        if !self.allowed_tenant_ids.is_empty() {
                            return Err(invalid(
                                "allowed_tenant_ids",
                                "is only for organizations or common tenants",
                            ));
                        }
                        IssuerRule::Exact(format!("{authority}/{t}/v2.0"))
                    }
                    "organizations" | "common" => {
                        if self.allowed_tenant_ids.is_empty() {
                            return Err(invalid(
                                "allowed_tenant_ids",
                                "a multi-tenant connection must list the tenants whose users may sign in",
                            ));
                        }
                        let mut allowed = Vec::new();
                        for t in &self.allowed_tenant_ids {
                            let t = t.trim().to_ascii_lowercase();
                            if !is_guid(&t) {
                                return Err(invalid(
                                    "allowed_tenant_ids",
                                    format!("{t:?} is not a tenant id (GUID)"),
                                ));
                            }
                            allowed.push(t);
                        }
                        IssuerRule::AzureMultiTenant {
                            authority: authority.clone(),
                            allowed_tenants: allowed,
                        }
                    }
                    other => {
                        return Err(invalid(
                            "tenant",
                            format!("{other:?} must be a tenant id (GUID), organizations or common"),
                        ));
                    }
                };
                let discovery =
                    Url::parse(&format!("{authority}/{tenant}/v2.0/.well-known/openid-configuration"))
                        .map_err(|e| invalid("tenant", e.to_string()))?;
                (discovery, issuer)
            }
        };
        let scopes = match &self.scopes {
            None => vec!["openid".to_owned(), "email".to_owned(), "profile".to_owned()],
            Some(s) => {
                let scopes = s.iter().map(|s| text("scopes", s, 200)).collect::<Result<Vec<_>, _>>()?;
                if !scopes.iter().any(|s| s == "openid") {
                    return Err(invalid("scopes", "must include openid"));
                }
                scopes
            }
        };
        let claim = |field: &'static str, v: &Option<String>, default: &str| match v {
            Some(c) => text(field, c, 100),
            None => Ok(default.to_owned()),
        };
        let account = AccountPolicy::new(AccountSettings {
            jit_provisioning: self.jit_provisioning,
            link_by_email: self.link_by_email,
            allowed_email_domains: &self.allowed_email_domains,
            trust_unverified_email_domains: self.trust_unverified_email_domains,
            jit_alongside_scim: self.jit_alongside_scim,
            groups_source: self.groups_source.as_deref(),
            admin_group: self.admin_group.as_deref(),
        })?;
        let external_id_claim = match (self.external_id_claim.as_deref(), self.kind) {
            (Some("none"), _) | (None, Provider::AzureAd) => None,
            (None, Provider::Okta) => Some("sub".to_owned()),
            (Some(c), _) => Some(text("external_id_claim", c, 100)?),
        };
        Ok(OidcConnection {
            external_id_claim,
            provider: self.kind,
            discovery_url,
            issuer,
            client_id,
            scopes,
            email_claim: claim("email_claim", &self.email_claim, "email")?,
            groups_claim: claim("groups_claim", &self.groups_claim, "groups")?,
            account,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(v: serde_json::Value) -> ConnectionConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn okta_issuers_and_discovery() {
        for (issuer, expected) in [
            ("https://acme.okta.com", "https://acme.okta.com"),
            ("https://acme.okta.com/", "https://acme.okta.com"),
            ("https://acme.okta.com/oauth2/default", "https://acme.okta.com/oauth2/default"),
            ("https://id.acme.com/oauth2/aus1abc", "https://id.acme.com/oauth2/aus1abc"),
        ] {
            let c = config(json!({ "kind": "okta", "issuer": issuer, "client_id": "0oa1" }))
                .validate(false)
                .unwrap();
            assert_eq!(c.issuer, IssuerRule::Exact(expected.into()));
            assert_eq!(c.discovery_url.as_str(), format!("{expected}/.well-known/openid-configuration"));
            assert_eq!(c.scopes, ["openid", "email", "profile"]);
        }
    }

    #[test]
    fn azure_tenants() {
        let tid = "72F988BF-86F1-41AF-91AB-2D7CD011DB47";
        let single =
            config(json!({ "kind": "azure_ad", "tenant": tid, "client_id": "app" })).validate(false).unwrap();
        assert_eq!(
            single.issuer,
            IssuerRule::Exact(format!("https://login.microsoftonline.com/{}/v2.0", tid.to_lowercase()))
        );
        let multi = config(json!({ "kind": "azure_ad", "tenant": "organizations", "allowed_tenant_ids": [tid], "client_id": "app" }))
            .validate(false)
            .unwrap();
        assert_eq!(
            multi.discovery_url.as_str(),
            "https://login.microsoftonline.com/organizations/v2.0/.well-known/openid-configuration"
        );
        assert!(
            matches!(multi.issuer, IssuerRule::AzureMultiTenant { ref allowed_tenants, .. } if allowed_tenants == &[tid.to_lowercase()])
        );
        let gov = config(json!({ "kind": "azure_ad", "tenant": tid, "authority": "https://login.microsoftonline.us", "client_id": "app" }))
            .validate(false)
            .unwrap();
        assert!(gov.discovery_url.as_str().starts_with("https://login.microsoftonline.us/"));
    }

    #[test]
    fn problems_name_their_field() {
        let tid = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        for (v, field) in [
            (json!({ "kind": "okta", "client_id": "x" }), "issuer"),
            (json!({ "kind": "okta", "issuer": "http://acme.okta.com", "client_id": "x" }), "issuer"),
            (
                json!({ "kind": "okta", "issuer": "https://acme.okta.com/other/path", "client_id": "x" }),
                "issuer",
            ),
            (json!({ "kind": "okta", "issuer": "https://acme.okta.com?x=1", "client_id": "x" }), "issuer"),
            (json!({ "kind": "okta", "issuer": "https://acme.okta.com", "client_id": " " }), "client_id"),
            (
                json!({ "kind": "okta", "issuer": "https://acme.okta.com", "tenant": tid, "client_id": "x" }),
                "tenant",
            ),
            (json!({ "kind": "azure_ad", "client_id": "x" }), "tenant"),
            (json!({ "kind": "azure_ad", "tenant": "consumers", "client_id": "x" }), "tenant"),
            (json!({ "kind": "azure_ad", "tenant": "common", "client_id": "x" }), "allowed_tenant_ids"),
            (
                json!({ "kind": "azure_ad", "tenant": "common", "allowed_tenant_ids": ["contoso"], "client_id": "x" }),
                "allowed_tenant_ids",
            ),
            (
                json!({ "kind": "azure_ad", "tenant": tid, "allowed_tenant_ids": [tid], "client_id": "x" }),
                "allowed_tenant_ids",
            ),
            (
                json!({ "kind": "azure_ad", "tenant": tid, "issuer": "https://x.example", "client_id": "x" }),
                "issuer",
            ),
            (
                json!({ "kind": "azure_ad", "tenant": tid, "authority": "https://login.example/path", "client_id": "x" }),
                "authority",
            ),
            (
                json!({ "kind": "okta", "issuer": "https://acme.okta.com", "client_id": "x", "scopes": ["email"] }),
                "scopes",
            ),
            (
                json!({ "kind": "okta", "issuer": "https://acme.okta.com", "client_id": "x", "allowed_email_domains": ["not a domain"] }),
                "allowed_email_domains",
            ),
            (
                json!({ "kind": "okta", "issuer": "https://acme.okta.com", "client_id": "x", "client_secret": "" }),
                "client_secret",
            ),
        ] {
            let shown = v.to_string();
            assert_eq!(config(v).validate(false).unwrap_err().field, field, "{shown}");
        }
    }

    #[test]
    fn loopback_http_only_when_allowed() {
        let c = config(json!({ "kind": "okta", "issuer": "http://127.0.0.1:9400", "client_id": "x" }));
        assert_eq!(c.validate(false).unwrap_err().field, "issuer");
        assert!(c.validate(true).is_ok());
        let c = config(json!({ "kind": "okta", "issuer": "http://evil.example", "client_id": "x" }));
        assert!(c.validate(true).is_err(), "only loopback");
    }

    #[test]
    fn the_secret_is_never_serialised() {
        let c = config(
            json!({ "kind": "okta", "issuer": "https://acme.okta.com", "client_id": "x", "client_secret": "s3cret" }),
        );
        assert_eq!(c.client_secret.as_deref(), Some("s3cret"));
        assert!(!serde_json::to_string(&c).unwrap().contains("s3cret"));
    }

    #[test]
    fn email_domains() {
        let c = config(json!({ "kind": "okta", "issuer": "https://acme.okta.com", "client_id": "x", "allowed_email_domains": ["Acme.com"] }))
            .validate(false)
            .unwrap();
        assert!(c.account.allowed_email_domains.admits("bob@ACME.com"));
        assert!(!c.account.allowed_email_domains.admits("bob@acme.com.evil.example"));
        assert!(!c.account.allowed_email_domains.admits("no-at-sign"));
    }
}
