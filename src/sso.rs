//! Single sign-on through an organization's OpenID Connect connection (Okta,
//! Azure AD): the flow's server-side state, the checks around the protocol
//! (`gatehouse_oidc` does the protocol itself), and matching the provider's
//! identity to a platform user. The HTTP surface is `routes/sso.rs`.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use gatehouse_core::Email;
use gatehouse_oidc::{Identity, OidcConnection, ProviderInfo, SignInError};
use gatehouse_session::hash_opaque_token;
use gatehouse_store::{ConnectionRecord, SsoFlow, SsoPolicy};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::Url;

use crate::connections::Connection;
use crate::error::ApiError;
use crate::state::AppState;

/// How long a user has to come back from the provider.
pub(crate) const FLOW_TTL: chrono::Duration = chrono::Duration::minutes(10);
/// How long a native app has to exchange its one-time code.
pub(crate) const CODE_TTL: chrono::Duration = chrono::Duration::minutes(2);

/// An OIDC connection's client secret, unsealed.
pub(crate) fn client_secret(state: &AppState, record: &ConnectionRecord) -> Result<String, ApiError> {
    String::from_utf8(open_secret(state, record)?).map_err(ApiError::internal)
}

/// The provider's discovery document and keys, cached per connection
/// version.
pub(crate) async fn provider(
    state: &AppState,
    record: &ConnectionRecord,
    oidc: &OidcConnection,
) -> Result<Arc<ProviderInfo>, ApiError> {
    // Keyed by the configuration itself: any change fetches afresh.
    let now = state.clock().now();
    state.oidc_providers().get(state.outbound(), &record.id, &record.config, oidc, now).await.map_err(|e| {
        tracing::warn!(connection = %record.id, error = %e, "identity provider unavailable");
        ApiError::Unavailable { code: "idp_unavailable", retry_after: 60 }
    })
}

/// Sends the user to the provider with an authorization request (PKCE,
/// state and nonce); the flow's secrets wait, sealed, for the callback.
pub(crate) async fn begin(
    state: &AppState,
    record: &ConnectionRecord,
    oidc: &OidcConnection,
    client: FlowClient,
    login_hint: Option<&Email>,
    started_at: DateTime<Utc>,
) -> Result<Url, ApiError> {
    let provider = provider(state, record, oidc).await?;
    let authorization =
        gatehouse_oidc::authorization(oidc, &provider, &callback_url(state), login_hint.map(Email::as_str));
    let state_hash = state_hash(&authorization.state);
    let secrets = FlowSecrets {
        protocol: FlowProtocol::Oidc {
            nonce: authorization.nonce,
            pkce_verifier: authorization.pkce_verifier,
        },
        started_at,
        client,
    };
    let flow = SsoFlow {
        org_id: record.org_id,
        connection_id: record.id.clone(),
        sealed: secrets.seal(state, &state_hash)?,
    };
    state.store().create_sso_flow(&state_hash, &flow, started_at + FLOW_TTL, started_at).await?;
    Ok(authorization.url)
}

/// Where the provider sends the user back: registered with the provider.
pub(crate) fn callback_url(state: &AppState) -> Url {
    Url::parse(&format!("{}/v1/sso/oidc/callback", state.issuer())).expect("the public URL is a URL")
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
    Web {
        return_to: String,
        browser_hash: Option<String>,
        /// Started on Gatehouse's own sign-in page: a refusal goes back
        /// there, in words, rather than as a JSON error.
        #[serde(default)]
        from_page: bool,
    },
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

/// Where a browser signing in on Gatehouse's own pages goes afterwards: a
/// path of Gatehouse's own (`/account`, `/admin/…`), or an address on the
/// organization's allow list once the organization is known; else
/// `/account`.
pub(crate) fn page_return(state: &AppState, policy: Option<&SsoPolicy>, candidate: Option<&str>) -> Url {
    let own = Url::parse(state.issuer()).expect("the public URL is a URL");
    let fallback = || own.join("/account").expect("a path joins");
    let Some(candidate) = candidate.filter(|c| !c.is_empty()) else { return fallback() };
    // A path of ours: one slash, then not another or a backslash (which
    // browsers read as a slash), so that it cannot name another host.
    if candidate.starts_with('/') && !candidate.starts_with("//") && !candidate.starts_with("/\\") {
        return match own.join(candidate) {
            Ok(url) if url.origin() == own.origin() && url.fragment().is_none() => url,
            _ => fallback(),
        };
    }
    policy
        .and_then(|p| allowed_redirect(p, candidate))
        .filter(|u| matches!(u.scheme(), "https" | "http"))
        .unwrap_or_else(fallback)
}

/// Single sign-on needs the Enterprise ToolKit.
pub(crate) fn require_toolkit(entitled: bool) -> Result<(), ApiError> {
    if entitled {
        Ok(())
    } else {
        Err(ApiError::Forbidden {
            code: "enterprise_toolkit_required",
            message: "single sign-on needs the organization's Enterprise ToolKit entitlement".into(),
        })
    }
}

/// How someone with this email signs in.
pub(crate) enum HomeRealm {
    /// With a password, checked by the organization's local passwords or
    /// its REST service. Also the answer for an email nobody knows, so
    /// that the answer does not tell which emails are registered.
    Password,
    /// At the organization's identity provider, through this connection.
    Sso(Box<Connection>),
}

/// Home-realm discovery for a person who typed their email: single
/// sign-on when their organization requires it, or when they have no
/// password of their own (an IdP's user, or someone not provisioned yet in
/// a domain an organization verified); a password otherwise.
pub(crate) async fn home_realm(state: &AppState, email: &Email) -> Result<HomeRealm, ApiError> {
    if let Some(user) = state.store().find_user_by_email(email).await? {
        if state.store().rest_auth(user.org_id).await?.is_some() {
            return Ok(HomeRealm::Password);
        }
        let policy = state.store().sso_policy(user.org_id).await?;
        if !(policy.sso_required || user.password_hash.is_none()) {
            return Ok(HomeRealm::Password);
        }
    }
    Ok(match connection_for_email(state, email).await? {
        Some(connection) => HomeRealm::Sso(Box::new(connection)),
        None => HomeRealm::Password,
    })
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

/// Verifies the ID token; a key the cached set lacks refetches the set once
/// (the provider rotated its keys) and tries again.
pub(crate) async fn verify(
    state: &AppState,
    record: &ConnectionRecord,
    oidc: &OidcConnection,
    provider: Arc<ProviderInfo>,
    id_token: &str,
    expect: gatehouse_oidc::Expectations<'_>,
) -> Result<Identity, SignInError> {
    match gatehouse_oidc::verify_id_token(oidc, &provider, id_token, expect) {
        Err(SignInError::UnknownKey) => {
            let refreshed = state
                .oidc_providers()
                .refresh_keys(state.outbound(), &record.id, &provider, state.clock().now())
                .await;
            match refreshed {
                Ok(Some(fresh)) => gatehouse_oidc::verify_id_token(oidc, &fresh, id_token, expect),
                Ok(None) => Err(SignInError::UnknownKey),
                Err(e) => {
                    tracing::warn!(connection = %record.id, error = %e, "key set refetch failed");
                    Err(SignInError::UnknownKey)
                }
            }
        }
        other => other,
    }
}

/// The connection a sign-in for `email` goes through (home-realm
/// discovery). The organization is the existing user's, or else the one
/// that verified the email's domain (so that someone not yet provisioned
/// can start their first, just-in-time, sign-in from their email). Of its
/// connections, one that names the email's domain among its allowed
/// domains comes first, then one that admits every domain; of each, the
/// oldest.
pub(crate) async fn connection_for_email(
    state: &AppState,
    email: &Email,
) -> Result<Option<Connection>, ApiError> {
    let org = match state.store().find_user_by_email(email).await? {
        Some(user) => user.org_id,
        None => match state.store().domain_owner(email.domain()).await? {
            Some((org, _)) => org,
            None => return Ok(None),
        },
    };
    let mut any_domain = None;
    for record in state.store().list_connections(org).await? {
        let connection = Connection::open(state, record)?;
        if connection.account().allowed_email_domains.is_empty() {
            any_domain.get_or_insert(connection);
        } else if connection.admits(email) {
            return Ok(Some(connection));
        }
    }
    Ok(any_domain)
}

/// Where single sign-on starts.
pub(crate) fn start_url(state: &AppState) -> Url {
    Url::parse(&format!("{}/v1/sso/start", state.issuer())).expect("the public URL is a URL")
}
