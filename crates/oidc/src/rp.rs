//! The relying party's half of the authorization-code flow: the request that
//! sends the user to the provider, the code exchange, and the ID token's
//! validation (OpenID Connect Core §3.1.3.7, with the provider rules of
//! `docs/identity-providers.md` §1).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use gatehouse_outbound::OutboundClient;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreIdTokenVerifier, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    LoginHint, Nonce, OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, Scope, SignatureVerificationError, TokenResponse as _,
};
use serde_json::{Map, Value};
use url::Url;

use crate::discovery::ProviderInfo;
use crate::issuer::{IssuerError, IssuerRule, is_guid};
use crate::{OidcConnection, Provider};

/// How far the provider's clock may be from ours.
pub const CLOCK_SKEW: TimeDelta = TimeDelta::seconds(60);
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TOKEN_RESPONSE: usize = 256 * 1024;

/// Signature algorithms accepted on ID tokens: asymmetric only. `none` and
/// the HMAC family never are, whatever the token's header says.
const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 8] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
];

/// Where to send the user, and the secrets the callback will need. The
/// caller keeps the secrets server-side (the `state` travels, hashed, as the
/// key), single use.
#[derive(Debug)]
pub struct Authorization {
    pub url: Url,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// Builds the authorization request: code flow, PKCE S256, a fresh `state`
/// and `nonce`.
pub fn authorization(
    connection: &OidcConnection,
    provider: &ProviderInfo,
    redirect_uri: &Url,
    login_hint: Option<&str>,
) -> Authorization {
    let client = CoreClient::from_provider_metadata(
        provider.core.clone(),
        ClientId::new(connection.client_id.clone()),
        None,
    )
    .set_redirect_uri(RedirectUrl::from_url(redirect_uri.clone()));
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .add_scopes(connection.scopes.iter().filter(|s| *s != "openid").map(|s| Scope::new(s.clone())))
        .set_pkce_challenge(challenge);
    if let Some(hint) = login_hint {
        request = request.set_login_hint(LoginHint::new(hint.to_owned()));
    }
    let (url, state, nonce) = request.url();
    Authorization {
        url,
        state: state.secret().clone(),
        nonce: nonce.secret().clone(),
        pkce_verifier: verifier.secret().clone(),
    }
}

/// Why a sign-in through the provider failed. [`SignInError::reason`] is the
/// stable code for the audit trail and the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    #[error("the token endpoint refused the code: {0}")]
    CodeRefused(String),
    #[error("the token endpoint could not be used: {0}")]
    TokenEndpoint(String),
    #[error("the token response has no ID token")]
    NoIdToken,
    #[error("the ID token is signed with a key the provider does not publish")]
    UnknownKey,
    #[error("the ID token's signature is not acceptable: {0}")]
    BadSignature(String),
    #[error("the ID token's issuer is not the connection's")]
    WrongIssuer,
    #[error("the ID token's tenant is missing or not a GUID")]
    BadTenant,
    #[error("the ID token's tenant is not allowed for this connection")]
    TenantNotAllowed,
    #[error("the ID token is not for this client: {0}")]
    WrongAudience(String),
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token is not valid yet, or was issued before this sign-in began")]
    NotYetValid,
    #[error("the ID token's nonce does not match this sign-in")]
    WrongNonce,
    #[error("the ID token lacks the {0} claim")]
    MissingClaim(&'static str),
    #[error("the ID token is version {0:?}; only 2.0 is accepted")]
    UnexpectedVersion(String),
    #[error("the ID token is malformed: {0}")]
    Malformed(String),
}

impl SignInError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::CodeRefused(_) => "code_refused",
            Self::TokenEndpoint(_) => "token_endpoint_failed",
            Self::NoIdToken => "no_id_token",
            Self::UnknownKey => "unknown_signing_key",
            Self::BadSignature(_) => "invalid_signature",
            Self::WrongIssuer => "wrong_issuer",
            Self::BadTenant => "bad_tenant",
            Self::TenantNotAllowed => "tenant_not_allowed",
            Self::WrongAudience(_) => "wrong_audience",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::WrongNonce => "wrong_nonce",
            Self::MissingClaim(_) => "missing_claim",
            Self::UnexpectedVersion(_) => "unexpected_token_version",
            Self::Malformed(_) => "malformed_token",
        }
    }
}

impl From<IssuerError> for SignInError {
    fn from(e: IssuerError) -> Self {
        match e {
            IssuerError::WrongIssuer => Self::WrongIssuer,
            IssuerError::BadTenant => Self::BadTenant,
            IssuerError::TenantNotAllowed => Self::TenantNotAllowed,
        }
    }
}

/// Exchanges the authorization code (with the PKCE verifier) at the token
/// endpoint and returns the ID token, still unverified.
pub async fn exchange_code(
    client: &OutboundClient,
    connection: &OidcConnection,
    provider: &ProviderInfo,
    client_secret: &str,
    redirect_uri: &Url,
    code: &str,
    pkce_verifier: &str,
) -> Result<String, SignInError> {
    // `client_secret_basic` unless the provider says it only takes the
    // secret in the body.
    let methods: Vec<String> = provider
        .core
        .token_endpoint_auth_methods_supported()
        .map(|m| m.iter().filter_map(|m| serde_json::to_value(m).ok()?.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let auth_type = if methods.is_empty() || methods.iter().any(|m| m == "client_secret_basic") {
        AuthType::BasicAuth
    } else {
        AuthType::RequestBody
    };
    let oidc = CoreClient::from_provider_metadata(
        provider.core.clone(),
        ClientId::new(connection.client_id.clone()),
        Some(ClientSecret::new(client_secret.to_owned())),
    )
    .set_redirect_uri(RedirectUrl::from_url(redirect_uri.clone()))
    .set_auth_type(auth_type);
    // `openidconnect` takes any async function from request to response:
    // ours goes through the guarded outbound client, redirects unfollowed.
    // The future owns its client: one borrowing it is not `Send` for every
    // lifetime, which axum handlers need.
    let http = |request| {
        let client = client.clone();
        async move { client.exchange(request, TOKEN_TIMEOUT, MAX_TOKEN_RESPONSE).await }
    };
    let response = oidc
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(|e| SignInError::TokenEndpoint(e.to_string()))?
        .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
        .request_async(&http)
        .await
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(r) => SignInError::CodeRefused(r.error().to_string()),
            RequestTokenError::Request(e) => SignInError::TokenEndpoint(e.to_string()),
            RequestTokenError::Parse(e, _) => SignInError::TokenEndpoint(format!("unreadable answer: {e}")),
            RequestTokenError::Other(e) => SignInError::TokenEndpoint(e),
        })?;
    // The access token is not used: Gatehouse issues its own session.
    let _ = response.access_token();
    response.id_token().map(|t| t.to_string()).ok_or(SignInError::NoIdToken)
}

/// Who signed in, as the verified ID token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The stable key of the user at this connection: `sub` for Okta,
    /// `{tid}/{oid}` for Azure AD (never an email or `upn`, which change and
    /// may be unverified).
    pub subject: String,
    pub email: Option<String>,
    /// Okta's `email_verified`; for Azure AD, which never sends that, the
    /// `xms_edov` optional claim (the email's domain owner is verified).
    pub email_verified: bool,
    pub name: Option<String>,
    pub groups: Vec<String>,
    /// The provider left the groups out because there were too many (Azure
    /// AD's `_claim_names`, `hasgroups`; Okta stops at 100).
    pub groups_overage: bool,
    /// The value of the connection's `external_id_claim`, to match against
    /// SCIM `externalId`.
    pub external_id: Option<String>,
    /// Azure AD's tenant.
    pub tenant: Option<String>,
}

/// What the token's validation is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Expectations<'a> {
    pub nonce: &'a str,
    pub now: DateTime<Utc>,
    /// When the sign-in began: a token issued before it is not its answer.
    pub started_at: DateTime<Utc>,
}

/// Validates `id_token`: signature (allow-listed algorithm, a key the
/// provider publishes), issuer, audience, times, nonce; then reads the
/// identity from the verified claims.
pub fn verify_id_token(
    connection: &OidcConnection,
    provider: &ProviderInfo,
    id_token: &str,
    expect: Expectations<'_>,
) -> Result<Identity, SignInError> {
    let token: CoreIdToken =
        id_token.parse().map_err(|e: serde_json::Error| SignInError::Malformed(e.to_string()))?;
    let issuer = IssuerUrl::new(provider.metadata.issuer.clone())
        .map_err(|e| SignInError::Malformed(e.to_string()))?;
    let now = expect.now;
    let earliest = expect.started_at - CLOCK_SKEW;
    let latest = now + CLOCK_SKEW;
    let verifier = CoreIdTokenVerifier::new_public_client(
        ClientId::new(connection.client_id.clone()),
        issuer,
        provider.core.jwks().clone(),
    )
    .set_allowed_algs(ALLOWED_ALGS)
    // Azure AD multi-tenant: the discovery issuer is a template, checked
    // below with the token's tenant; exact issuers are checked here too.
    .require_issuer_match(matches!(connection.issuer, IssuerRule::Exact(_)))
    // `exp` is compared with this time: the skew is the provider's grace.
    .set_time_fn(move || now - CLOCK_SKEW)
    .set_issue_time_verifier_fn(move |iat| {
        if iat > latest || iat < earliest { Err(format!("issued at {iat}")) } else { Ok(()) }
    });
    let nonce = Nonce::new(expect.nonce.to_owned());
    token.claims(&verifier, &nonce).map_err(|e| match e {
        ClaimsVerificationError::Expired(m) if m.starts_with("issued at") => SignInError::NotYetValid,
        ClaimsVerificationError::Expired(_) => SignInError::Expired,
        ClaimsVerificationError::InvalidAudience(m) => SignInError::WrongAudience(m),
        ClaimsVerificationError::InvalidIssuer(_) => SignInError::WrongIssuer,
        ClaimsVerificationError::InvalidNonce(_) => SignInError::WrongNonce,
        ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey) => {
            SignInError::UnknownKey
        }
        ClaimsVerificationError::SignatureVerification(e) => SignInError::BadSignature(e.to_string()),
        other => SignInError::Malformed(other.to_string()),
    })?;
    // The signature covers these very bytes: read what `openidconnect` does
    // not model from them.
    let claims = payload(id_token)?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64)
        && nbf > latest.timestamp()
    {
        return Err(SignInError::NotYetValid);
    }
    let iss = text("iss").ok_or(SignInError::MissingClaim("iss"))?;
    let tenant = text("tid");
    connection.issuer.check(&iss, tenant.as_deref())?;
    let subject = match connection.provider {
        Provider::Okta => text("sub").ok_or(SignInError::MissingClaim("sub"))?,
        Provider::AzureAd => {
            if let Some(version) = text("ver")
                && version != "2.0"
            {
                return Err(SignInError::UnexpectedVersion(version));
            }
            check_azure_key_issuer(provider, id_token, &iss)?;
            let tid = tenant.clone().filter(|t| is_guid(t)).ok_or(SignInError::BadTenant)?;
            let oid = text("oid").filter(|o| is_guid(o)).ok_or(SignInError::MissingClaim("oid"))?;
            format!("{}/{}", tid.to_ascii_lowercase(), oid.to_ascii_lowercase())
        }
    };
    let email_verified = match connection.provider {
        Provider::Okta => claims.get("email_verified").and_then(Value::as_bool).unwrap_or(false),
        Provider::AzureAd => claims.get("xms_edov").is_some_and(|v| v.as_bool() == Some(true) || v == "1"),
    };
    let (groups, groups_overage) = groups(&claims, &connection.groups_claim);
    Ok(Identity {
        subject,
        email: text(&connection.email_claim).filter(|e| !e.is_empty()),
        email_verified,
        name: text("name"),
        groups,
        groups_overage,
        external_id: connection.external_id_claim.as_deref().and_then(text).filter(|v| !v.is_empty()),
        tenant,
    })
}

/// The payload of a compact JWS, as a JSON object.
fn payload(jwt: &str) -> Result<Map<String, Value>, SignInError> {
    let part = jwt.split('.').nth(1).ok_or_else(|| SignInError::Malformed("not a JWS".into()))?;
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|e| SignInError::Malformed(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| SignInError::Malformed(e.to_string()))
}

/// Azure AD tags each key with the issuer it may sign for: a concrete
/// tenant's key signs only that tenant's tokens; `{tenantid}` keys any.
fn check_azure_key_issuer(provider: &ProviderInfo, jwt: &str, iss: &str) -> Result<(), SignInError> {
    let header = jwt.split('.').next().and_then(|h| URL_SAFE_NO_PAD.decode(h).ok());
    let kid = header
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .and_then(|h| h.get("kid").and_then(Value::as_str).map(str::to_owned));
    let key = provider.jwks.get("keys").and_then(Value::as_array).and_then(|keys| {
        keys.iter().find(|k| kid.is_some() && k.get("kid").and_then(Value::as_str) == kid.as_deref())
    });
    match key.and_then(|k| k.get("issuer")).and_then(Value::as_str) {
        None => Ok(()),
        Some(tagged) if tagged == iss || tagged.contains("{tenantid}") => Ok(()),
        Some(_) => Err(SignInError::WrongIssuer),
    }
}

/// The groups claim, and whether the provider left groups out.
fn groups(claims: &Map<String, Value>, name: &str) -> (Vec<String>, bool) {
    let listed: Vec<String> = match claims.get(name) {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    };
    let distributed = claims.get("_claim_names").and_then(|n| n.get(name)).is_some();
    let has_groups = claims.get("hasgroups").is_some_and(|v| v.as_bool() == Some(true));
    // Okta truncates the claim at 100 without saying so.
    let truncated = listed.len() >= 100;
    let overage = distributed || has_groups || truncated;
    (listed, overage)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn groups_and_their_overage() {
        assert_eq!(
            groups(&map(json!({ "groups": ["a", "b"] })), "groups"),
            (vec!["a".into(), "b".into()], false)
        );
        assert_eq!(groups(&map(json!({ "roles": "x" })), "roles"), (vec!["x".into()], false));
        let azure = json!({
            "_claim_names": { "groups": "src1" },
            "_claim_sources": { "src1": { "endpoint": "https://graph.windows.net/t/users/o/getMemberObjects" } }
        });
        assert_eq!(groups(&map(azure), "groups"), (vec![], true));
        assert_eq!(groups(&map(json!({ "hasgroups": true })), "groups"), (vec![], true));
        let hundred: Vec<String> = (0..100).map(|i| format!("g{i}")).collect();
        assert!(groups(&map(json!({ "groups": hundred })), "groups").1, "Okta's silent truncation");
    }

    #[test]
    fn payloads_are_read_from_the_middle_part() {
        let body = URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#);
        assert_eq!(payload(&format!("h.{body}.s")).unwrap()["sub"], "x");
        assert!(payload("nodots").is_err());
        assert!(payload("h.!!.s").is_err());
    }
}
