//! `/v1`: sign-in and session endpoints for apps.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use gatehouse_core::{Email, Password};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::cookies;
use crate::directory::UserView;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ClientIp, DeviceInfo, bearer};
use crate::sessions::{self, Holder, TokenResponse};
use crate::state::AppState;
use crate::{password_reset, password_signin};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/login", post(login))
        .route("/v1/password/forgot", post(forgot_password))
        .route("/v1/token/refresh", post(refresh))
        .route("/v1/logout", post(logout))
        .route("/v1/session/logout", post(end_browser_session))
        .route("/v1/me", get(me))
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct LoginRequest {
    pub email: String,
    pub password: String,
    #[serde(default)]
    pub device: Option<DeviceInfo>,
}

#[utoipa::path(post, path = "/v1/login", tag = "sessions", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse),
        (status = 400, body = ErrorBody),
        (status = 401, description = "Unknown email, wrong password, inactive user or no password: all alike", body = ErrorBody),
        (status = 403, description = "sso_required: the organization signs in through single sign-on, at sso_url", body = ErrorBody),
        (status = 503, description = "The organization's authentication service did not answer", body = ErrorBody)))]
pub(crate) async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let email = Email::parse(&body.email).map_err(|e| ApiError::invalid("email", e.to_string()))?;
    let device = body.device.unwrap_or_default().into_device(ip)?;
    let signed_in =
        password_signin::sign_in(&state, &email, Password::new(body.password), device, Holder::App).await?;
    Ok(Json(signed_in.tokens))
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct ForgotPasswordRequest {
    pub(crate) email: String,
    #[serde(default)]
    pub(crate) device: Option<DeviceInfo>,
}

#[utoipa::path(post, path = "/v1/password/forgot", tag = "sessions", request_body = ForgotPasswordRequest,
    responses((status = 202, description = "Accepted, alike for every email: the reset is forwarded to the organization's service, if the email is registered and it has one"),
        (status = 400, body = ErrorBody),
        (status = 429, description = "Too many reset requests for this email or from this address; see Retry-After", body = ErrorBody)))]
pub(crate) async fn forgot_password(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(body): ApiJson<ForgotPasswordRequest>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let email = Email::parse(&body.email).map_err(|e| ApiError::invalid("email", e.to_string()))?;
    let device = body.device.unwrap_or_default().into_device(ip)?;
    password_reset::request(&state, email, device).await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "status": "accepted" }))))
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

#[utoipa::path(post, path = "/v1/session/logout", tag = "sessions",
    description = "Signs a browser out: ends the session of its session cookie and removes the cookie. Needs no CSRF token: the cookie is SameSite=Lax, so a cross-site post never carries it.",
    responses((status = 204, description = "Signed out (also when there was nothing to end)")))]
pub(crate) async fn end_browser_session(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    let removed = sessions::end_browser_session(&state, &headers).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    for cookie in removed {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

#[utoipa::path(get, path = "/v1/me", tag = "sessions", security(("access_token" = [])),
    description = "The signed-in user, by bearer access token or by the session cookie single sign-on sets in browsers.",
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody)))]
pub(crate) async fn me(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<UserView>, ApiError> {
    // Apps send a bearer token; browsers signed in by single sign-on, the
    // session cookie.
    let token = bearer(&headers).or_else(|| cookies::get(&headers, cookies::SESSION)).ok_or(
        ApiError::Unauthorized { code: "invalid_token", message: "a bearer access token is required" },
    )?;
    let (_, user) = sessions::authenticate(&state, token).await?;
    Ok(Json(user.into()))
}
