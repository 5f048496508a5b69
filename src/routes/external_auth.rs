//! `/admin/v1/orgs/{org_id}/external-auth/rest`: the organization's REST
//! authentication service, and a way to try it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{post, put};
use axum::{Json, Router};
use gatehouse_core::{OrgId, Password};
use gatehouse_passthrough::RestAuthConfig;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::directory::require_org;
use crate::error::{ApiError, ErrorBody};
use crate::external_auth::{self, NOT_CONFIGURED, TestResult};
use crate::extract::{ApiJson, ApiPath, ClientIp, DeviceInfo, PlatformAdmin};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/orgs/{org_id}/external-auth/rest", put(put_rest).get(get_rest).delete(delete_rest))
        .route("/admin/v1/orgs/{org_id}/external-auth/rest/test", post(test_rest))
}

#[utoipa::path(put, path = "/admin/v1/orgs/{org_id}/external-auth/rest", tag = "external-auth",
    security(("admin_token" = [])), params(("org_id" = uuid::Uuid, Path)), request_body = RestAuthConfig,
    description = "Header values are write-only: never returned, and a header sent without a value keeps the saved value of the header of that name.",
    responses((status = 200, description = "Saved (header values left out); local passwords of the organization's users are erased and the sessions they signed in ended", body = RestAuthConfig),
        (status = 400, description = "The configuration is invalid; `field` names the problem", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn put_rest(
    PlatformAdmin(actor): PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
    ApiJson(config): ApiJson<RestAuthConfig>,
) -> Result<Json<RestAuthConfig>, ApiError> {
    let (auth, _) = external_auth::save(&state, &actor, org_id, config).await?;
    Ok(Json(auth.config.without_secrets()))
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org_id}/external-auth/rest", tag = "external-auth",
    security(("admin_token" = [])), params(("org_id" = uuid::Uuid, Path)),
    responses((status = 200, description = "The configuration as it was written, header values left out", body = RestAuthConfig),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn get_rest(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<Json<RestAuthConfig>, ApiError> {
    require_org(&state, org_id).await?;
    let auth = external_auth::load(&state, org_id).await?.ok_or(NOT_CONFIGURED)?;
    Ok(Json(auth.config.without_secrets()))
}

#[utoipa::path(delete, path = "/admin/v1/orgs/{org_id}/external-auth/rest", tag = "external-auth",
    security(("admin_token" = [])), params(("org_id" = uuid::Uuid, Path)),
    responses((status = 204, description = "External authentication is off"), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_rest(
    PlatformAdmin(actor): PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<StatusCode, ApiError> {
    external_auth::disable(&state, &actor, org_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct TestRequest {
    /// A registered user of the organization.
    pub(crate) email: String,
    pub(crate) password: String,
    #[serde(default)]
    pub(crate) device: Option<DeviceInfo>,
}

#[utoipa::path(post, path = "/admin/v1/orgs/{org_id}/external-auth/rest/test", tag = "external-auth",
    security(("admin_token" = [])), params(("org_id" = uuid::Uuid, Path)), request_body = TestRequest,
    responses((status = 200, description = "The real call was made; nothing was stored", body = TestResult),
        (status = 400, body = ErrorBody), (status = 404, description = "Unknown user, or not configured", body = ErrorBody)))]
pub(crate) async fn test_rest(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ip: ClientIp,
    ApiPath(org_id): ApiPath<OrgId>,
    ApiJson(body): ApiJson<TestRequest>,
) -> Result<Json<TestResult>, ApiError> {
    require_org(&state, org_id).await?;
    let device = body.device.unwrap_or_default().into_device(ip)?;
    let auth = external_auth::load(&state, org_id).await?.ok_or(NOT_CONFIGURED)?;
    let password = Password::new(body.password);
    Ok(Json(external_auth::test(&state, org_id, &auth, &body.email, password, &device).await?))
}
