//! `/v1`: sign-in and session endpoints for apps.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use gatehouse_core::{
    AuthMethod, Device, Email, LoginOutcome, Password, PasswordAttempt, PasswordConnector, RejectReason, User,
};
use gatehouse_store::NewAuditEvent;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ClientIp, bearer};
use crate::passwords::LocalPasswords;
use crate::routes::admin::UserView;
use crate::sessions::{self, TokenResponse};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/login", post(login))
        .route("/v1/token/refresh", post(refresh))
        .route("/v1/logout", post(logout))
        .route("/v1/me", get(me))
}

/// The device a user signs in from, as the app describes it.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct DeviceInfo {
    /// At most 128 characters.
    pub os: Option<String>,
    /// At most 128 characters.
    pub name: Option<String>,
}

const DEVICE_FIELD_MAX: usize = 128;

impl DeviceInfo {
    pub(crate) fn into_device(self, ip: ClientIp) -> Result<Device, ApiError> {
        let check = |field: &str, v: Option<String>| match v {
            Some(v) if v.chars().count() > DEVICE_FIELD_MAX => {
                Err(ApiError::invalid(field, format!("must be at most {DEVICE_FIELD_MAX} characters")))
            }
            Some(v) if v.chars().any(char::is_control) => {
                Err(ApiError::invalid(field, "must not contain control characters"))
            }
            other => Ok(other.filter(|v| !v.is_empty())),
        };
        Ok(Device { os: check("device.os", self.os)?, name: check("device.name", self.name)?, ip: ip.0 })
    }
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct LoginRequest {
    pub email: String,
    pub password: String,
    #[serde(default)]
    pub device: Option<DeviceInfo>,
}

/// Why a sign-in failed, for the audit trail only; the client always sees the
/// same `invalid_credentials`.
fn reject_reason(reason: &RejectReason) -> String {
    match reason {
        RejectReason::NoCredential => "no_password".into(),
        RejectReason::WrongPassword => "wrong_password".into(),
        RejectReason::UpstreamStatus(s) => format!("upstream_status_{s}"),
    }
}

#[utoipa::path(post, path = "/v1/login", tag = "sessions", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse),
        (status = 400, body = ErrorBody),
        (status = 401, description = "Unknown email, wrong password, inactive user or no password: all alike", body = ErrorBody)))]
pub(crate) async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let email = Email::parse(&body.email).map_err(|e| ApiError::invalid("email", e.to_string()))?;
    let device = body.device.unwrap_or_default().into_device(ip)?;
    let password = Password::new(body.password);
    let user = state.store().find_user_by_email(&email).await?;

    let (user, method, verdict) = match user {
        Some(user) if user.active => {
            let method = AuthMethod::LocalPassword;
            let attempt = PasswordAttempt { user: &user, password: &password, device: &device };
            let outcome =
                LocalPasswords(state.passwords()).login(attempt).await.map_err(ApiError::internal)?;
            let verdict = match outcome {
                LoginOutcome::Authenticated => Ok(()),
                LoginOutcome::Rejected(reason) => Err(reject_reason(&reason)),
            };
            (Some(user), method, verdict)
        }
        other => {
            // Cost the caller the same time as a real check, so response times
            // do not reveal which emails are registered.
            state.passwords().burn(password.expose()).await.map_err(ApiError::internal)?;
            let reason = if other.is_some() { "inactive_user" } else { "unknown_user" };
            (other, AuthMethod::LocalPassword, Err(reason.to_owned()))
        }
    };

    let outcome = if verdict.is_ok() { "success" } else { "failure" };
    metrics::counter!("gatehouse_logins_total", "method" => method.as_str(), "outcome" => outcome)
        .increment(1);
    record_login(&state, user.as_ref(), method, &device, verdict.as_ref().err()).await?;
    match (user, verdict) {
        (Some(user), Ok(())) => Ok(Json(sessions::issue(&state, &user, method, &device).await?)),
        _ => Err(ApiError::InvalidCredentials),
    }
}

async fn record_login(
    state: &AppState,
    user: Option<&User>,
    method: AuthMethod,
    device: &Device,
    failure: Option<&String>,
) -> Result<(), ApiError> {
    let event = NewAuditEvent {
        org_id: user.map(|u| u.org_id),
        user_id: user.map(|u| u.id),
        kind: "login",
        method: Some(method.as_str()),
        outcome: if failure.is_none() { "success" } else { "failure" },
        detail: failure.map(|reason| serde_json::json!({ "reason": reason })),
        device: device.clone(),
    };
    state.store().record_audit_event(&event, state.clock().now()).await?;
    Ok(())
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct RefreshRequest {
    pub refresh_token: String,
}

#[utoipa::path(post, path = "/v1/token/refresh", tag = "sessions", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse),
        (status = 401, description = "Unknown, expired or already used; reuse revokes the session", body = ErrorBody)))]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    Ok(Json(sessions::refresh(&state, &body.refresh_token).await?))
}

#[utoipa::path(post, path = "/v1/logout", tag = "sessions", request_body = RefreshRequest,
    responses((status = 204, description = "The session of this refresh token is over")))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    sessions::logout(&state, &body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/me", tag = "sessions", security(("access_token" = [])),
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody)))]
pub(crate) async fn me(State(state): State<AppState>, parts: Parts) -> Result<Json<UserView>, ApiError> {
    let token = bearer(&parts).ok_or(ApiError::Unauthorized {
        code: "invalid_token",
        message: "a bearer access token is required",
    })?;
    let (_, user) = sessions::authenticate(&state, token).await?;
    Ok(Json(user.into()))
}
