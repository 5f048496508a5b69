//! `/admin/v1/orgs/{org_id}/connections`: an organization's identity-provider
//! connections. Okta and Azure AD are both OpenID Connect; single sign-on
//! through them builds on what is configured here.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use gatehouse_core::OrgId;
use gatehouse_oidc::{ConnectionConfig as OidcConfig, OidcConnection};
use gatehouse_saml::{SamlConnection, SpKeys};
use gatehouse_store::{ConnectionRecord, SsoPolicy, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::{Actor, Change};
use crate::connections::{Config, Connection, Kind, Protocol};
use crate::directory::require_org;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, PlatformAdmin};
use crate::sso::{check_redirect_entry, secret_context};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/orgs/{org_id}/connections", get(list_connections).post(create_connection))
        .route(
            "/admin/v1/orgs/{org_id}/connections/{connection_id}",
            get(get_connection).put(replace_connection).delete(delete_connection),
        )
        .route("/admin/v1/orgs/{org_id}/connections/{connection_id}/test", post(test_connection))
        .route("/admin/v1/orgs/{org_id}/sso", get(get_sso_policy).put(put_sso_policy))
}

/// A connection as admins see it: the configuration without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConnectionView {
    pub(crate) id: String,
    /// Whether the connection's secret is stored (the OIDC client secret; for
    /// SAML, our own signing and decryption key); it is never shown.
    pub(crate) client_secret_set: bool,
    /// SAML: our entity id, which is also where our metadata is served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sp_entity_id: Option<String>,
    /// SAML: where the IdP posts its responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) acs_url: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    #[serde(flatten)]
    pub(crate) config: Config,
}

fn view(state: &AppState, record: &ConnectionRecord) -> Result<ConnectionView, ApiError> {
    // What was stored was checked: failing to read it is ours, not the caller's.
    let config = Config::parse(record.config.as_bytes())
        .map_err(|e| ApiError::internal(format!("stored connection {}: {e:?}", record.id)))?;
    let sp = matches!(config, Config::Saml(_)).then(|| crate::saml::endpoints(state, &record.id));
    Ok(ConnectionView {
        id: record.id.clone(),
        client_secret_set: true,
        sp_entity_id: sp.as_ref().map(|e| e.entity_id.clone()),
        acs_url: sp.map(|e| e.acs_url),
        created_at: record.created_at,
        updated_at: record.updated_at,
        config,
    })
}

/// Checks the entitlement and the configuration; returns the configuration
/// to store (without the secret) as JSON.
async fn checked(state: &AppState, org_id: OrgId, config: &Config) -> Result<String, ApiError> {
    let org = require_org(state, org_id).await?;
    if !org.enterprise_toolkit {
        return Err(ApiError::Forbidden {
            code: "enterprise_toolkit_required",
            message: "Okta, Azure AD and Ping sign-in need the organization's Enterprise ToolKit entitlement"
                .into(),
        });
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
    crate::audit::change(state, actor, org, Change::new(kind, serde_json::json!({ "connection": id }))).await
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::NotFound("connection"),
        other => other.into(),
    }
}

#[utoipa::path(post, path = "/admin/v1/orgs/{org_id}/connections", tag = "connections", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path)), request_body = Config,
    responses((status = 201, body = ConnectionView), (status = 400, body = ErrorBody),
        (status = 403, description = "The organization lacks the Enterprise ToolKit", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn create_connection(
    PlatformAdmin(actor): PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<ConnectionView>), ApiError> {
    let config = Config::parse(&serde_json::to_vec(&body).map_err(ApiError::internal)?)?;
    let stored = checked(&state, org_id, &config).await?;
    let id = uuid::Uuid::now_v7().to_string();
    let sealed = new_secret(&state, &id, &config).await?;
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
    audit(&state, &actor, org_id, "connection_created", &record.id).await?;
    let record = state.store().get_connection(org_id, &record.id).await?;
    Ok((StatusCode::CREATED, Json(view(&state, &record)?)))
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org_id}/connections", tag = "connections", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path)), responses((status = 200, body = Vec<ConnectionView>), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_connections(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<Json<Vec<ConnectionView>>, ApiError> {
    require_org(&state, org_id).await?;
    let records = state.store().list_connections(org_id).await?;
    Ok(Json(records.iter().map(|r| view(&state, r)).collect::<Result<_, _>>()?))
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org_id}/connections/{connection_id}", tag = "connections", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path), ("connection_id" = String, Path)),
    responses((status = 200, body = ConnectionView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_connection(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath((org_id, id)): ApiPath<(OrgId, String)>,
) -> Result<Json<ConnectionView>, ApiError> {
    let record = state.store().get_connection(org_id, &id).await.map_err(not_found)?;
    Ok(Json(view(&state, &record)?))
}

#[utoipa::path(put, path = "/admin/v1/orgs/{org_id}/connections/{connection_id}", tag = "connections", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path), ("connection_id" = String, Path)), request_body = Config,
    responses((status = 200, description = "Replaced; a client_secret left out is kept", body = ConnectionView),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn replace_connection(
    PlatformAdmin(actor): PlatformAdmin,
    State(state): State<AppState>,
    ApiPath((org_id, id)): ApiPath<(OrgId, String)>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Json<ConnectionView>, ApiError> {
    let config = Config::parse(&serde_json::to_vec(&body).map_err(ApiError::internal)?)?;
    let current = state.store().get_connection(org_id, &id).await.map_err(not_found)?;
    let current_kind = Kind::parse(&current.kind)
        .ok_or_else(|| ApiError::internal("a stored connection of no known kind"))?;
    if current_kind.method() != config.kind().method() {
        return Err(ApiError::invalid(
            "kind",
            "cannot change between OpenID Connect and SAML; create a new connection",
        ));
    }
    let stored = checked(&state, org_id, &config).await?;
    let sealed = match &config {
        Config::Oidc(OidcConfig { client_secret: Some(secret), .. }) => {
            state.master_keys().seal(&secret_context(&id), secret.as_bytes())
        }
        // The SP key stays: the IdP has our certificate.
        _ => current.client_secret_sealed,
    };
    state
        .store()
        .update_connection(org_id, &id, &stored, &sealed, state.clock().now())
        .await
        .map_err(not_found)?;
    audit(&state, &actor, org_id, "connection_updated", &id).await?;
    let record = state.store().get_connection(org_id, &id).await.map_err(not_found)?;
    Ok(Json(view(&state, &record)?))
}

#[utoipa::path(delete, path = "/admin/v1/orgs/{org_id}/connections/{connection_id}", tag = "connections", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path), ("connection_id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_connection(
    PlatformAdmin(actor): PlatformAdmin,
    State(state): State<AppState>,
    ApiPath((org_id, id)): ApiPath<(OrgId, String)>,
) -> Result<StatusCode, ApiError> {
    state.store().delete_connection(org_id, &id).await.map_err(not_found)?;
    state.oidc_providers().forget(&id);
    state.saml_providers().forget(&id);
    audit(&state, &actor, org_id, "connection_deleted", &id).await?;
    Ok(StatusCode::NO_CONTENT)
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
}

#[utoipa::path(post, path = "/admin/v1/orgs/{org_id}/connections/{connection_id}/test", tag = "connections",
    security(("admin_token" = [])), params(("org_id" = uuid::Uuid, Path), ("connection_id" = String, Path)),
    responses((status = 200, description = "The provider's discovery document and keys were fetched and checked (see outcome)", body = ConnectionCheck),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn test_connection(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath((org_id, id)): ApiPath<(OrgId, String)>,
) -> Result<Json<ConnectionCheck>, ApiError> {
    let record = state.store().get_connection(org_id, &id).await.map_err(not_found)?;
    let connection = Connection::open(&state, record)?;
    Ok(Json(match &connection.protocol {
        Protocol::Oidc(oidc) => test_oidc(&state, oidc).await,
        Protocol::Saml(saml) => test_saml(&state, saml).await,
    }))
}

/// An OIDC connection's check: the provider's discovery document and keys,
/// fetched afresh, the issuer held to the connection's rule.
async fn test_oidc(state: &AppState, oidc: &OidcConnection) -> ConnectionCheck {
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

/// An organization's single sign-on policy.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SsoPolicyView {
    /// Members sign in only through single sign-on: `/v1/login` answers 403
    /// `sso_required` with where to go instead. Needs a connection.
    #[serde(default)]
    pub(crate) sso_required: bool,
    /// Where a sign-in may return: browsers' `return_to` addresses (https;
    /// http on loopback) and native apps' `redirect_uri`s (a reverse-domain
    /// scheme, `com.example.app:/callback`). Compared without the query.
    #[serde(default)]
    pub(crate) redirect_urls: Vec<String>,
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org_id}/sso", tag = "connections", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path)), responses((status = 200, body = SsoPolicyView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_sso_policy(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<Json<SsoPolicyView>, ApiError> {
    require_org(&state, org_id).await?;
    let policy = state.store().sso_policy(org_id).await?;
    Ok(Json(SsoPolicyView { sso_required: policy.sso_required, redirect_urls: policy.redirect_urls }))
}

#[utoipa::path(put, path = "/admin/v1/orgs/{org_id}/sso", tag = "connections", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path)), request_body = SsoPolicyView,
    responses((status = 200, body = SsoPolicyView), (status = 400, body = ErrorBody),
        (status = 409, description = "sso_required without a connection would lock every member out", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn put_sso_policy(
    PlatformAdmin(actor): PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
    ApiJson(body): ApiJson<SsoPolicyView>,
) -> Result<Json<SsoPolicyView>, ApiError> {
    require_org(&state, org_id).await?;
    const MAX_URLS: usize = 50;
    if body.redirect_urls.len() > MAX_URLS {
        return Err(ApiError::invalid("redirect_urls", format!("at most {MAX_URLS} addresses")));
    }
    for url in &body.redirect_urls {
        check_redirect_entry(url).map_err(|m| ApiError::invalid("redirect_urls", m))?;
    }
    if body.sso_required && state.store().list_connections(org_id).await?.is_empty() {
        return Err(ApiError::Conflict(
            "the organization has no connection: requiring single sign-on would lock every member out".into(),
        ));
    }
    let policy = SsoPolicy { sso_required: body.sso_required, redirect_urls: body.redirect_urls };
    state.store().set_sso_policy(org_id, &policy, state.clock().now()).await?;
    let detail =
        serde_json::json!({ "sso_required": policy.sso_required, "redirect_urls": policy.redirect_urls });
    crate::audit::change(&state, &actor, org_id, Change::new("sso_policy_changed", detail)).await?;
    Ok(Json(SsoPolicyView { sso_required: policy.sso_required, redirect_urls: policy.redirect_urls }))
}

/// A SAML connection's check: its IdP metadata (fetched afresh when it comes
/// from a URL) and what it says.
async fn test_saml(state: &AppState, connection: &SamlConnection) -> ConnectionCheck {
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
