//! Changing an organization's set-up: its identity-provider connections,
//! single sign-on policy and SCIM tokens. The admin API and the portal's
//! pages are two adapters over these operations; each checks the
//! entitlement and the input, applies the change and records who made it.

use chrono::{DateTime, Utc};
use gatehouse_core::OrgId;
use gatehouse_oidc::{ConnectionConfig as OidcConfig, OidcConnection};
use gatehouse_saml::{SamlConnection, SpKeys};
use gatehouse_session::OpaqueToken;
use gatehouse_store::{ConnectionRecord, ScimTokenRecord, SsoPolicy, StoreError};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::audit::{Actor, Change};
use crate::connections::{Config, Connection, Kind, Protocol};
use crate::directory::require_org;
use crate::error::ApiError;
use crate::sso::{check_redirect_entry, secret_context};
use crate::state::AppState;

/// The refusal for Okta, Azure AD and Ping without the entitlement.
pub(crate) fn toolkit_required() -> ApiError {
    ApiError::Forbidden {
        code: "enterprise_toolkit_required",
        message: "Okta, Azure AD and Ping sign-in and SCIM provisioning need the organization's Enterprise ToolKit entitlement"
            .into(),
    }
}

/// The organization's connection `id`, or 404.
pub(crate) async fn require_connection(
    state: &AppState,
    org: OrgId,
    id: &str,
) -> Result<ConnectionRecord, ApiError> {
    match state.store().get_connection(org, id).await {
        Err(StoreError::NotFound) => Err(ApiError::NotFound("connection")),
        other => Ok(other?),
    }
}

/// Checks the entitlement and the configuration; returns the configuration
/// to store (without the secret) as JSON.
async fn checked(state: &AppState, org_id: OrgId, config: &Config) -> Result<String, ApiError> {
    let org = require_org(state, org_id).await?;
    if !org.enterprise_toolkit {
        return Err(toolkit_required());
    }
    let protocol = config
        .validate(state.settings().allow_private_targets)
        .map_err(|e| ApiError::Invalid { field: Some(e.field.to_owned()), message: e.message })?;
    // SAML metadata by URL must be there, and usable, now.
    if let Protocol::Saml(saml) = &protocol
        && let Some(url) = &saml.metadata_url
    {
        gatehouse_saml::fetch_metadata(state.outbound(), url)
            .await
            .map_err(|m| ApiError::invalid("idp_metadata_url", m))?;
    }
    serde_json::to_string(config).map_err(ApiError::internal)
}

/// The secret a new connection is stored with: the OIDC client secret, or a
/// fresh SP key pair for SAML.
async fn new_secret(state: &AppState, id: &str, config: &Config) -> Result<String, ApiError> {
    let plain = match config {
        Config::Oidc(c) => c
            .client_secret
            .as_deref()
            .ok_or_else(|| ApiError::invalid("client_secret", "is required"))?
            .as_bytes()
            .to_vec(),
        Config::Saml(_) => {
            let entity_id = crate::saml::endpoints(state, id).entity_id;
            tokio::task::spawn_blocking(move || SpKeys::generate(&entity_id).and_then(|k| k.to_pem()))
                .await
                .map_err(ApiError::internal)?
                .map_err(ApiError::internal)?
        }
    };
    Ok(state.master_keys().seal(&secret_context(id), &plain))
}

async fn audit(
    state: &AppState,
    actor: &Actor,
    org: OrgId,
    kind: &'static str,
    id: &str,
) -> Result<(), ApiError> {
    crate::audit::change(state, actor, org, Change::new(kind, json!({ "connection": id }))).await
}

/// Creates a connection; returns it as stored.
pub(crate) async fn create_connection(
    state: &AppState,
    actor: &Actor,
    org_id: OrgId,
    config: &Config,
) -> Result<ConnectionRecord, ApiError> {
    let stored = checked(state, org_id, config).await?;
    let id = uuid::Uuid::now_v7().to_string();
    let sealed = new_secret(state, &id, config).await?;
    let now = state.clock().now();
    let record = ConnectionRecord {
        client_secret_sealed: sealed,
        id,
        org_id,
        kind: config.kind().as_str().to_owned(),
        config: stored,
        created_at: now,
        updated_at: now,
    };
    state.store().create_connection(&record).await?;
    audit(state, actor, org_id, "connection_created", &record.id).await?;
    Ok(state.store().get_connection(org_id, &record.id).await?)
}

/// Replaces a connection's configuration. A client secret left out is kept,
/// and so is a SAML connection's key pair (the IdP has our certificate).
pub(crate) async fn replace_connection(
    state: &AppState,
    actor: &Actor,
    org_id: OrgId,
    id: &str,
    config: &Config,
) -> Result<ConnectionRecord, ApiError> {
    let current = require_connection(state, org_id, id).await?;
    let current_kind = Kind::parse(&current.kind)
        .ok_or_else(|| ApiError::internal("a stored connection of no known kind"))?;
    if current_kind.method() != config.kind().method() {
        return Err(ApiError::invalid(
            "kind",
            "cannot change between OpenID Connect and SAML; create a new connection",
        ));
    }
    let stored = checked(state, org_id, config).await?;
    let sealed = match config {
        Config::Oidc(OidcConfig { client_secret: Some(secret), .. }) => {
            state.master_keys().seal(&secret_context(id), secret.as_bytes())
        }
        _ => current.client_secret_sealed,
    };
    match state.store().update_connection(org_id, id, &stored, &sealed, state.clock().now()).await {
        Err(StoreError::NotFound) => return Err(ApiError::NotFound("connection")),
        other => other?,
    }
    audit(state, actor, org_id, "connection_updated", id).await?;
    require_connection(state, org_id, id).await
}

pub(crate) async fn delete_connection(
    state: &AppState,
    actor: &Actor,
    org_id: OrgId,
    id: &str,
) -> Result<(), ApiError> {
    require_connection(state, org_id, id).await?;
    // Deleting the last connection while single sign-on is required would
    // leave every member without a way in.
    if state.store().sso_policy(org_id).await?.sso_required
        && state.store().list_connections(org_id).await?.len() == 1
    {
        return Err(ApiError::Conflict(
            "this is the organization's only connection and single sign-on is required: turn that off first, or every member is locked out".into(),
        ));
    }
    match state.store().delete_connection(org_id, id).await {
        Err(StoreError::NotFound) => return Err(ApiError::NotFound("connection")),
        other => other?,
    }
    state.oidc_providers().forget(id);
    state.saml_providers().forget(id);
    audit(state, actor, org_id, "connection_deleted", id).await
}

/// A public signing key the provider publishes.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KeyView {
    pub(crate) kid: Option<String>,
    pub(crate) kty: String,
    pub(crate) alg: Option<String>,
}

/// What checking a connection found.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConnectionCheck {
    /// `ok`, or `failed` with the reason in `error`.
    pub(crate) outcome: &'static str,
    pub(crate) error: Option<String>,
    pub(crate) discovery_url: String,
    pub(crate) issuer: Option<String>,
    pub(crate) authorization_endpoint: Option<String>,
    pub(crate) token_endpoint: Option<String>,
    pub(crate) jwks_uri: Option<String>,
    pub(crate) keys: Vec<KeyView>,
}

impl ConnectionCheck {
    fn failed(discovery_url: String, error: String) -> Self {
        Self {
            outcome: "failed",
            error: Some(error),
            discovery_url,
            issuer: None,
            authorization_endpoint: None,
            token_endpoint: None,
            jwks_uri: None,
            keys: vec![],
        }
    }

    pub(crate) fn ok(&self) -> bool {
        self.outcome == "ok"
    }
}

/// Fetches what the connection's provider publishes, afresh, and checks it:
/// OIDC discovery and keys with the issuer held to the connection's rule;
/// SAML metadata.
pub(crate) async fn check(state: &AppState, connection: &Connection) -> ConnectionCheck {
    match &connection.protocol {
        Protocol::Oidc(oidc) => check_oidc(state, oidc).await,
        Protocol::Saml(saml) => check_saml(state, saml).await,
    }
}

/// Checks a configuration not saved yet, as `check` checks a saved one.
pub(crate) async fn check_config(state: &AppState, config: &Config) -> Result<ConnectionCheck, ApiError> {
    let protocol = config
        .validate(state.settings().allow_private_targets)
        .map_err(|e| ApiError::Invalid { field: Some(e.field.to_owned()), message: e.message })?;
    Ok(match &protocol {
        Protocol::Oidc(oidc) => check_oidc(state, oidc).await,
        Protocol::Saml(saml) => check_saml(state, saml).await,
    })
}

async fn check_oidc(state: &AppState, oidc: &OidcConnection) -> ConnectionCheck {
    let discovery_url = oidc.discovery_url.to_string();
    match gatehouse_oidc::discover(state.outbound(), oidc).await {
        Ok(info) => ConnectionCheck {
            outcome: "ok",
            error: None,
            discovery_url,
            keys: info.keys().into_iter().map(|k| KeyView { kid: k.kid, kty: k.kty, alg: k.alg }).collect(),
            issuer: Some(info.metadata.issuer),
            authorization_endpoint: Some(info.metadata.authorization_endpoint.to_string()),
            token_endpoint: Some(info.metadata.token_endpoint.to_string()),
            jwks_uri: Some(info.metadata.jwks_uri.to_string()),
        },
        Err(e) => ConnectionCheck::failed(discovery_url, e.to_string()),
    }
}

async fn check_saml(state: &AppState, connection: &SamlConnection) -> ConnectionCheck {
    let discovery_url = connection.metadata_url.as_ref().map(ToString::to_string).unwrap_or_default();
    let idp = match (&connection.idp, &connection.metadata_url) {
        (Some(idp), _) => Ok(idp.clone()),
        (None, Some(url)) => gatehouse_saml::fetch_metadata(state.outbound(), url).await,
        (None, None) => Err("the connection names no IdP".to_owned()),
    };
    match idp {
        Ok(idp) => ConnectionCheck {
            outcome: "ok",
            error: None,
            discovery_url,
            issuer: Some(idp.entity_id),
            authorization_endpoint: Some(idp.sso_url),
            token_endpoint: None,
            jwks_uri: None,
            keys: idp
                .signing_certs
                .iter()
                .map(|_| KeyView { kid: None, kty: "X509".into(), alg: None })
                .collect(),
        },
        Err(e) => ConnectionCheck::failed(discovery_url, e),
    }
}

/// Sets the organization's single sign-on policy.
pub(crate) async fn set_sso_policy(
    state: &AppState,
    actor: &Actor,
    org_id: OrgId,
    policy: SsoPolicy,
) -> Result<SsoPolicy, ApiError> {
    require_org(state, org_id).await?;
    const MAX_URLS: usize = 50;
    if policy.redirect_urls.len() > MAX_URLS {
        return Err(ApiError::invalid("redirect_urls", format!("at most {MAX_URLS} addresses")));
    }
    for url in &policy.redirect_urls {
        check_redirect_entry(url).map_err(|m| ApiError::invalid("redirect_urls", m))?;
    }
    if policy.sso_required && state.store().list_connections(org_id).await?.is_empty() {
        return Err(ApiError::Conflict(
            "the organization has no connection: requiring single sign-on would lock every member out".into(),
        ));
    }
    state.store().set_sso_policy(org_id, &policy, state.clock().now()).await?;
    let detail = json!({ "sso_required": policy.sso_required, "redirect_urls": policy.redirect_urls });
    crate::audit::change(state, actor, org_id, Change::new("sso_policy_changed", detail)).await?;
    Ok(policy)
}

/// Which SCIM client a token is for.
pub(crate) const SCIM_CLIENTS: [&str; 4] = ["okta", "azure_ad", "ping", "generic"];

/// Mints a SCIM token; its plain value is returned once, here.
pub(crate) async fn mint_scim_token(
    state: &AppState,
    actor: &Actor,
    org_id: OrgId,
    label: &str,
    idp: &str,
) -> Result<(ScimTokenRecord, String), ApiError> {
    let label = label.trim();
    if label.is_empty() || label.chars().count() > 200 || label.chars().any(char::is_control) {
        return Err(ApiError::invalid("label", "must be 1 to 200 characters"));
    }
    if !SCIM_CLIENTS.contains(&idp) {
        return Err(ApiError::invalid("idp", format!("must be one of {}", SCIM_CLIENTS.join(", "))));
    }
    let org = require_org(state, org_id).await?;
    // Provisioning is part of the Enterprise ToolKit, whichever client the
    // token is for.
    if !org.enterprise_toolkit {
        return Err(toolkit_required());
    }
    let token = OpaqueToken::generate("ghs");
    let record =
        state.store().create_scim_token(org_id, label, idp, token.hash(), state.clock().now()).await?;
    let detail = json!({ "scim_token": record.id, "idp": record.idp, "label": record.label });
    crate::audit::change(state, actor, org_id, Change::new("scim_token_created", detail)).await?;
    Ok((record, token.plain().to_owned()))
}

pub(crate) async fn revoke_scim_token(
    state: &AppState,
    actor: &Actor,
    org_id: OrgId,
    token_id: &str,
) -> Result<(), ApiError> {
    match state.store().revoke_scim_token(org_id, token_id, state.clock().now()).await {
        Err(StoreError::NotFound) => return Err(ApiError::NotFound("SCIM token")),
        other => other?,
    }
    let detail = json!({ "scim_token": token_id });
    crate::audit::change(state, actor, org_id, Change::new("scim_token_revoked", detail)).await
}

/// A connection's health at a glance.
pub(crate) struct Health {
    pub(crate) last_success_at: Option<DateTime<Utc>>,
    pub(crate) last_failure_at: Option<DateTime<Utc>>,
    pub(crate) last_failure_reason: Option<String>,
    /// SAML: when the IdP's signing certificate that expires first does,
    /// or why that could not be read.
    pub(crate) certificate_expires: Option<Result<DateTime<Utc>, String>>,
}

pub(crate) async fn health(state: &AppState, connection: &Connection) -> Result<Health, ApiError> {
    let seen = state.store().connection_health(&connection.record.id).await?;
    let certificate_expires = match &connection.protocol {
        Protocol::Oidc(_) => None,
        Protocol::Saml(saml) => {
            Some(match state.saml_providers().get(state, &connection.record, saml).await {
                Ok(loaded) => earliest_expiry(&loaded.idp.signing_certs),
                Err(_) => Err("the IdP's metadata could not be read".into()),
            })
        }
    };
    Ok(Health {
        last_success_at: seen.last_success_at,
        last_failure_at: seen.last_failure_at,
        last_failure_reason: seen.last_failure_reason,
        certificate_expires,
    })
}

/// When the first of these DER certificates expires.
fn earliest_expiry(certs: &[Vec<u8>]) -> Result<DateTime<Utc>, String> {
    certs
        .iter()
        .map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der)
                .map_err(|e| format!("unreadable certificate: {e}"))?;
            DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
                .ok_or_else(|| "no expiry date".to_owned())
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .min()
        .ok_or_else(|| "the IdP publishes no signing certificate".into())
}
