//! `/admin/v1/orgs/{org_id}/external-auth/rest`: the organization's REST
//! authentication service, and a way to try it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{post, put};
use axum::{Json, Router};
use gatehouse_core::{Email, OrgId, Password};
use gatehouse_passthrough::{RestAuthConfig, RestConnector};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::{Actor, Change};
use crate::directory::require_org;
use crate::error::{ApiError, ErrorBody};
use crate::external_auth;
use crate::extract::{ApiJson, ApiPath, ClientIp, DeviceInfo, PlatformAdmin};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/orgs/{org_id}/external-auth/rest", put(put_rest).get(get_rest).delete(delete_rest))
        .route("/admin/v1/orgs/{org_id}/external-auth/rest/test", post(test_rest))
}

const NOT_CONFIGURED: ApiError = ApiError::NotFound("external REST authentication");

async fn audit(
    state: &AppState,
    actor: &Actor,
    org: OrgId,
    kind: &'static str,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    crate::audit::change(state, actor, org, Change::new(kind, detail).method("external_rest")).await
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
    require_org(&state, org_id).await?;
    let (auth, erased) = external_auth::save(&state, org_id, config).await?;
    tracing::info!(%org_id, local_passwords_erased = erased, "external REST authentication configured");
    audit(
        &state,
        &actor,
        org_id,
        "external_auth_configured",
        serde_json::json!({ "local_passwords_erased": erased }),
    )
    .await?;
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
    require_org(&state, org_id).await?;
    match state.store().disable_rest_auth(org_id).await {
        Err(gatehouse_store::StoreError::NotFound) => return Err(NOT_CONFIGURED),
        other => other?,
    }
    tracing::info!(%org_id, "external REST authentication turned off");
    audit(&state, &actor, org_id, "external_auth_disabled", serde_json::json!({})).await?;
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

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Header {
    pub(crate) name: String,
    pub(crate) value: String,
}

/// The request exactly as sent, with the password and every header value
/// masked.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ShownRequest {
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) headers: Vec<Header>,
    pub(crate) body: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TestResult {
    pub(crate) request: ShownRequest,
    /// The HTTP status received; null when there was no answer.
    pub(crate) status: Option<u16>,
    pub(crate) elapsed_ms: Option<u64>,
    /// `authenticated` (exactly 200), `rejected` (any other answer) or
    /// `unavailable` (no answer).
    pub(crate) outcome: &'static str,
    /// Why there was no answer: `timeout`, `connect_failed`, `tls_failed`,
    /// `blocked_target` or `protocol_error`.
    pub(crate) error: Option<&'static str>,
    /// What the admin should know about the configuration, such as a plain
    /// http URL.
    pub(crate) warnings: Vec<String>,
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
    let email = Email::parse(&body.email).map_err(|e| ApiError::invalid("email", e.to_string()))?;
    let device = body.device.unwrap_or_default().into_device(ip)?;
    let auth = external_auth::load(&state, org_id).await?.ok_or(NOT_CONFIGURED)?;
    let user = match state.store().find_user_by_email(&email).await? {
        Some(u) if u.org_id == org_id => u,
        _ => return Err(ApiError::NotFound("user")),
    };
    let password = Password::new(body.password);
    let exchange = RestConnector::new(state.outbound(), &auth)
        .authenticate(&user, &password, &device)
        .await
        .map_err(|e| ApiError::invalid("password", e.to_string()))?;
    let (outcome, error) = match &exchange.result {
        Ok(r) if r.status == 200 => ("authenticated", None),
        Ok(_) => ("rejected", None),
        Err(e) => ("unavailable", Some(e.kind())),
    };
    let warnings = auth
        .config
        .plain_http_fields()
        .into_iter()
        .map(|field| format!("{field} is plain http: credentials cross the network unencrypted"))
        .collect();
    Ok(Json(TestResult {
        warnings,
        status: exchange.status(),
        elapsed_ms: exchange.elapsed().map(|d| d.as_millis() as u64),
        outcome,
        error,
        request: ShownRequest {
            method: exchange.request.method,
            url: exchange.request.url,
            headers: exchange
                .request
                .headers
                .into_iter()
                .map(|(name, value)| Header { name, value })
                .collect(),
            body: exchange.request.body,
        },
    }))
}
