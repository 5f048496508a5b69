//! `/admin/v1/orgs/{org_id}/connections`: an organization's identity-provider
//! connections. Okta and Azure AD are both OpenID Connect; single sign-on
//! through them builds on what is configured here.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use gatehouse_core::OrgId;
use gatehouse_store::{ConnectionRecord, SsoPolicy};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::configure::{self, ConnectionCheck};
use crate::connections::{Config, Connection};
use crate::directory::require_org;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, PlatformAdmin};
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
    let record = configure::create_connection(&state, &actor, org_id, &config).await?;
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
    let record = configure::require_connection(&state, org_id, &id).await?;
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
    let record = configure::replace_connection(&state, &actor, org_id, &id, &config).await?;
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
    configure::delete_connection(&state, &actor, org_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
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
    let record = configure::require_connection(&state, org_id, &id).await?;
    let connection = Connection::open(&state, record)?;
    Ok(Json(configure::check(&state, &connection).await))
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
    let policy = SsoPolicy { sso_required: body.sso_required, redirect_urls: body.redirect_urls };
    let policy = configure::set_sso_policy(&state, &actor, org_id, policy).await?;
    Ok(Json(SsoPolicyView { sso_required: policy.sso_required, redirect_urls: policy.redirect_urls }))
}
