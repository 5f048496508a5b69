//! Single sign-on through an organization's OpenID Connect connection (Okta,
//! Azure AD): the flow's server-side state, the checks around the protocol
//! (`gatehouse_oidc` does the protocol itself), and matching the provider's
//! identity to a platform user. The HTTP surface is `routes/sso.rs`.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use gatehouse_core::{AccountPolicy, Email, OrgId, User};
use gatehouse_oidc::{ConnectionConfig, Identity, OidcConnection, ProviderInfo, SignInError};
use gatehouse_session::hash_opaque_token;
use gatehouse_store::{ConnectionRecord, NewAuditEvent, NewUser, SsoPolicy, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::Url;

use crate::error::ApiError;
use crate::state::AppState;

/// How long a user has to come back from the provider.
pub(crate) const FLOW_TTL: chrono::Duration = chrono::Duration::minutes(10);
/// How long a native app has to exchange its one-time code.
pub(crate) const CODE_TTL: chrono::Duration = chrono::Duration::minutes(2);

/// A connection ready to sign in through: its record and checked
/// configuration.
pub(crate) struct Connection {
    pub(crate) record: ConnectionRecord,
    pub(crate) oidc: OidcConnection,
}

impl Connection {
    pub(crate) fn load(state: &AppState, record: ConnectionRecord) -> Result<Self, ApiError> {
        let config: ConnectionConfig = serde_json::from_str(&record.config).map_err(ApiError::internal)?;
        let oidc = config.validate(state.settings().allow_private_targets).map_err(ApiError::internal)?;
        Ok(Self { record, oidc })
    }

    pub(crate) fn client_secret(&self, state: &AppState) -> Result<String, ApiError> {
        String::from_utf8(open_secret(state, &self.record)?).map_err(ApiError::internal)
    }

    /// The provider's discovery document and keys, cached per connection
    /// version.
    pub(crate) async fn provider(&self, state: &AppState) -> Result<Arc<ProviderInfo>, ApiError> {
        // Keyed by the configuration itself: any change fetches afresh.
        let version = &self.record.config;
        let now = state.clock().now();
        state.oidc_providers().get(state.outbound(), &self.record.id, version, &self.oidc, now).await.map_err(
            |e| {
                tracing::warn!(connection = %self.record.id, error = %e, "identity provider unavailable");
                ApiError::Unavailable { code: "idp_unavailable", retry_after: 60 }
            },
        )
    }
}

/// The master-key context a connection's secret is sealed under.
pub(crate) fn secret_context(connection_id: &str) -> String {
    format!("connection-secret:{connection_id}")
}

/// A connection's secret, unsealed: the OIDC client secret, or the SAML
/// service provider's key (PEM).
pub(crate) fn open_secret(state: &AppState, record: &ConnectionRecord) -> Result<Vec<u8>, ApiError> {
    state
        .master_keys()
        .open(&secret_context(&record.id), &record.client_secret_sealed)
        .map_err(ApiError::internal)
}

/// Who started the flow, and where it returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum FlowClient {
    /// A browser, bound to the flow by a cookie (whose hash is kept), so a
    /// sign-in started in one browser cannot be finished in another.
    /// (SAML flows end in a cross-site POST, which carries no SameSite=Lax
    /// cookie: they are bound by the AuthnRequest id and single-use
    /// RelayState instead.)
    Web { return_to: String, browser_hash: Option<String> },
    /// A native app, which proves it started the flow with its own PKCE
    /// verifier when it exchanges the one-time code.
    Native { redirect_uri: String, code_challenge: String, app_state: Option<String> },
}

/// What the callback needs, sealed with the master key while the user is at
/// the provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FlowSecrets {
    pub(crate) protocol: FlowProtocol,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) client: FlowClient,
}

/// What the protocol's answer is checked against.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "snake_case")]
pub(crate) enum FlowProtocol {
    Oidc {
        nonce: String,
        pkce_verifier: String,
    },
    /// The AuthnRequest's id, which the response's InResponseTo must be.
    Saml {
        request_id: String,
    },
}

pub(crate) fn flow_context(state_hash: &str) -> String {
    format!("sso-flow:{state_hash}")
}

impl FlowSecrets {
    pub(crate) fn seal(&self, state: &AppState, state_hash: &str) -> Result<String, ApiError> {
        let json = serde_json::to_vec(self).map_err(ApiError::internal)?;
        Ok(state.master_keys().seal(&flow_context(state_hash), &json))
    }

    pub(crate) fn open(state: &AppState, state_hash: &str, sealed: &str) -> Result<Self, ApiError> {
        let json = state.master_keys().open(&flow_context(state_hash), sealed).map_err(ApiError::internal)?;
        serde_json::from_slice(&json).map_err(ApiError::internal)
    }
}

/// The hash a flow is stored under: the `state` itself travels through the
/// browser and is never stored.
pub(crate) fn state_hash(state: &str) -> String {
    hash_opaque_token(state)
}

/// RFC 7636 S256: `BASE64URL(SHA256(verifier)) == challenge`, compared in
/// constant time.
pub(crate) fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    computed.as_bytes().ct_eq(challenge.as_bytes()).into()
}

/// RFC 7636 §4.1: 43 to 128 characters of `[A-Za-z0-9-._~]` (a challenge is
/// such a string too).
pub(crate) fn is_pkce_string(s: &str) -> bool {
    (43..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Where a flow may send its user back: the organization's allow list,
/// compared on scheme, host, port and path (a query may be added).
pub(crate) fn allowed_redirect(policy: &SsoPolicy, candidate: &str) -> Option<Url> {
    let url = Url::parse(candidate).ok()?;
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    let bare = |u: &Url| {
        let mut u = u.clone();
        u.set_query(None);
        u
    };
    policy
        .redirect_urls
        .iter()
        .filter_map(|a| Url::parse(a).ok())
        .any(|a| bare(&a) == bare(&url))
        .then_some(url)
}

/// A browser's default destination: the first web address on the list.
pub(crate) fn default_return(policy: &SsoPolicy) -> Option<Url> {
    policy
        .redirect_urls
        .iter()
        .filter_map(|a| Url::parse(a).ok())
        .find(|u| matches!(u.scheme(), "https" | "http"))
}

/// Checks an allow-list entry: an https address (http only on loopback), or
/// a native app's private-use scheme (RFC 8252 §7.1, reverse domain name).
pub(crate) fn check_redirect_entry(entry: &str) -> Result<(), String> {
    let url = Url::parse(entry).map_err(|e| format!("{entry:?} is not a URL: {e}"))?;
    if url.fragment().is_some() || url.query().is_some() {
        return Err(format!("{entry:?} must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{entry:?} must not carry credentials"));
    }
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if loopback => Ok(()),
        "http" | "https" => Err(format!("{entry:?} must be https (http only on loopback)")),
        "javascript" | "data" | "file" | "blob" | "about" | "vbscript" | "ftp" | "ws" | "wss" => {
            Err(format!("{entry:?} has a scheme that cannot be a redirect"))
        }
        scheme if scheme.contains('.') => Ok(()),
        _ => Err(format!(
            "{entry:?}: a native app's scheme must be a reverse domain name, like com.example.app"
        )),
    }
}

/// Why a matched identity may not sign in.
pub(crate) type Refusal = &'static str;

/// Who the provider says signed in, whatever the protocol.
#[derive(Debug, Clone)]
pub(crate) struct FederatedIdentity {
    /// Stable per connection: OIDC `sub` (Azure AD `tid/oid`), SAML NameID.
    pub(crate) subject: String,
    pub(crate) email: Option<String>,
    pub(crate) email_verified: bool,
    pub(crate) name: Option<String>,
}

impl From<&Identity> for FederatedIdentity {
    fn from(i: &Identity) -> Self {
        Self {
            subject: i.subject.clone(),
            email: i.email.clone(),
            email_verified: i.email_verified,
            name: i.name.clone(),
        }
    }
}

/// Finds the platform user for `identity`: an existing link for this
/// connection and subject; then, if the connection allows it, a user of the
/// organization with the same verified email, which is then linked; then a
/// new user, if the connection provisions just in time.
pub(crate) async fn match_user(
    state: &AppState,
    (org, connection_id): (OrgId, &str),
    conn: &AccountPolicy,
    identity: &FederatedIdentity,
    device: &gatehouse_core::Device,
) -> Result<Result<User, Refusal>, ApiError> {
    let now = state.clock().now();
    let email = identity.email.as_deref().map(Email::parse).transpose().ok().flatten();
    if !conn.allowed_email_domains.is_empty()
        && !email.as_ref().is_some_and(|e| conn.allowed_email_domains.admits(e.as_str()))
    {
        return Ok(Err("email_domain_not_allowed"));
    }
    let active = |user: User| if user.active { Ok(user) } else { Err("user_deactivated") };

    if let Some(user) = state.store().linked_user(connection_id, &identity.subject).await? {
        if user.org_id != org {
            return Ok(Err("linked_elsewhere"));
        }
        return Ok(active(user));
    }
    if conn.link_by_email
        && identity.email_verified
        && let Some(email) = &email
        && let Some(user) = state.store().find_user_by_email(email).await?
        && user.org_id == org
    {
        if !user.active {
            return Ok(Err("user_deactivated"));
        }
        return match state.store().link_identity(connection_id, &identity.subject, user.id, now).await {
            // A concurrent first sign-in linked it meanwhile: the same answer.
            Ok(()) | Err(StoreError::Conflict(_)) => Ok(Ok(user)),
            Err(e) => Err(e.into()),
        };
    }
    if !conn.jit_provisioning {
        return Ok(Err("user_not_provisioned"));
    }
    let Some(email) = email else { return Ok(Err("no_email")) };
    // Without a domain list, only a verified email may claim an address.
    if conn.allowed_email_domains.is_empty() && !identity.email_verified {
        return Ok(Err("email_not_verified"));
    }
    let new = NewUser {
        org_id: org,
        display_name: identity.name.clone().unwrap_or_else(|| email.as_str().to_owned()),
        email,
        external_id: None,
        password_hash: None,
        active: true,
        user_name: None,
        scim_resource: None,
    };
    let audit = NewAuditEvent {
        org_id: Some(org),
        user_id: None,
        kind: "user_created",
        method: Some(gatehouse_core::AuthMethod::Oidc.as_str()),
        outcome: "success",
        detail: Some(serde_json::json!({ "connection": connection_id, "provisioning": "just_in_time" })),
        device: device.clone(),
    };
    match state.store().create_linked_user(&new, connection_id, &identity.subject, &audit, now).await {
        Ok(user) => Ok(Ok(user)),
        Err(StoreError::Conflict(_)) => Ok(Err("email_in_use")),
        Err(e) => Err(e.into()),
    }
}

/// Verifies the ID token; a key the cached set lacks refetches the set once
/// (the provider rotated its keys) and tries again.
pub(crate) async fn verify(
    state: &AppState,
    connection: &Connection,
    provider: Arc<ProviderInfo>,
    id_token: &str,
    expect: gatehouse_oidc::Expectations<'_>,
) -> Result<Identity, SignInError> {
    match gatehouse_oidc::verify_id_token(&connection.oidc, &provider, id_token, expect) {
        Err(SignInError::UnknownKey) => {
            let refreshed = state
                .oidc_providers()
                .refresh_keys(state.outbound(), &connection.record.id, &provider, state.clock().now())
                .await;
            match refreshed {
                Ok(Some(fresh)) => {
                    gatehouse_oidc::verify_id_token(&connection.oidc, &fresh, id_token, expect)
                }
                Ok(None) => Err(SignInError::UnknownKey),
                Err(e) => {
                    tracing::warn!(connection = %connection.record.id, error = %e, "key set refetch failed");
                    Err(SignInError::UnknownKey)
                }
            }
        }
        other => other,
    }
}

/// The connection a sign-in for `email` goes through (home-realm
/// discovery): the connection of the user's organization that admits the
/// email's domain.
pub(crate) async fn connection_for_email(
    state: &AppState,
    email: &Email,
) -> Result<Option<(OrgId, ConnectionRecord)>, ApiError> {
    let Some(user) = state.store().find_user_by_email(email).await? else { return Ok(None) };
    for record in state.store().list_connections(user.org_id).await? {
        let connection = Connection::load(state, record)?;
        if connection.oidc.account.allowed_email_domains.admits(email.as_str()) {
            return Ok(Some((user.org_id, connection.record)));
        }
    }
    Ok(None)
}
