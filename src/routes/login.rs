//! `/v1`: sign-in and session endpoints for apps.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use gatehouse_core::{
    AuthMethod, ConnectorError, Device, Email, LoginOutcome, Password, PasswordAttempt, PasswordConnector,
    RejectReason, User,
};
use gatehouse_passthrough::RestConnector;
use gatehouse_store::{LoginAccount, NewAuditEvent};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::cookies;
use crate::directory::UserView;
use crate::error::{ApiError, ErrorBody};
use crate::external_auth;
use crate::extract::{ApiJson, ClientIp, DeviceInfo, bearer};
use crate::passwords::LocalPasswords;
use crate::sessions::{self, TokenResponse};
use crate::state::AppState;
use crate::throttle::{Action, Concerning, Tally, Throttle};

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

/// What came of a sign-in attempt, for the response, the audit trail and the
/// metrics.
enum Verdict {
    Authenticated,
    /// Refused; the reason is for the audit trail only, the client always
    /// sees the same `invalid_credentials`.
    Refused {
        reason: &'static str,
        upstream_status: Option<u16>,
    },
    /// The organization's service could not be reached.
    Unavailable {
        error: String,
    },
}

impl Verdict {
    fn outcome(&self) -> &'static str {
        match self {
            Self::Authenticated => "success",
            Self::Refused { .. } => "failure",
            Self::Unavailable { .. } => "unavailable",
        }
    }

    fn detail(&self) -> Option<serde_json::Value> {
        match self {
            Self::Authenticated => None,
            Self::Refused { reason, upstream_status: None } => Some(serde_json::json!({ "reason": reason })),
            Self::Refused { reason, upstream_status: Some(s) } => {
                Some(serde_json::json!({ "reason": reason, "upstream_status": s }))
            }
            Self::Unavailable { error } => {
                Some(serde_json::json!({ "reason": "upstream_unavailable", "error": error }))
            }
        }
    }
}

/// Asks the organization's connector about the password: its REST service
/// when `rest_auth` (its sealed settings) is on, the local passwords if not.
async fn decide(
    state: &AppState,
    user: &User,
    rest_auth: Option<String>,
    password: &Password,
    device: &Device,
) -> Result<(AuthMethod, Verdict), ApiError> {
    let attempt = PasswordAttempt { user, password, device };
    let (method, result) = match rest_auth {
        Some(sealed) => {
            let auth = external_auth::opened(state, user.org_id, sealed)?;
            (AuthMethod::ExternalRest, RestConnector::new(state.outbound(), &auth).login(attempt).await)
        }
        None => (AuthMethod::LocalPassword, LocalPasswords(state.passwords()).login(attempt).await),
    };
    let refused = |reason, upstream_status| Verdict::Refused { reason, upstream_status };
    let verdict = match result {
        Ok(LoginOutcome::Authenticated) => Verdict::Authenticated,
        Ok(LoginOutcome::Rejected(RejectReason::NoCredential)) => refused("no_password", None),
        Ok(LoginOutcome::Rejected(RejectReason::WrongPassword)) => refused("wrong_password", None),
        Ok(LoginOutcome::Rejected(RejectReason::UpstreamStatus(s))) => refused("upstream_refused", Some(s)),
        Err(ConnectorError::Unavailable(error)) => Verdict::Unavailable { error },
        // A value that could not be placed safely (a line break bound for a
        // header): nothing was sent, and the attempt fails closed.
        Err(ConnectorError::UnsafeRequest(_)) => refused("unsafe_request", None),
        Err(e @ (ConnectorError::Busy | ConnectorError::Internal(_))) => return Err(e.into()),
    };
    Ok((method, verdict))
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
    let password = Password::new(body.password);

    // A locked account or a blocked address is refused before anything is
    // checked or forwarded; their counters come with the account, in one
    // read.
    let throttle = Throttle::new(&state, Action::Login, Some(&email), device.ip);
    let lookup = state.store().find_user_for_login(&email, &throttle.keys()).await?;
    let standing = throttle.judge(&state, &lookup.throttles)?;

    // `groups` are the user's, for the access token if the sign-in succeeds.
    let (user, groups, method, verdict) = match lookup.account {
        Some(LoginAccount { user, sso_required: true, .. }) if user.active => {
            let event = NewAuditEvent {
                org_id: Some(user.org_id),
                user_id: Some(user.id),
                kind: "login",
                method: None,
                outcome: "failure",
                detail: Some(serde_json::json!({ "reason": "sso_required" })),
                device,
                actor: None,
            };
            state.store().record_audit_event(&event, state.clock().now()).await?;
            let mut sso_url = crate::sso::start_url(&state);
            sso_url.query_pairs_mut().append_pair("email", email.as_str());
            return Err(ApiError::SsoRequired { sso_url: sso_url.into() });
        }
        Some(LoginAccount { user, rest_auth, groups, .. }) if user.active => {
            let (method, verdict) = decide(&state, &user, rest_auth, &password, &device).await?;
            (Some(user), groups, method, verdict)
        }
        other => {
            // Nothing is forwarded for an unknown or inactive user; cost the
            // caller the same time as a local check, so response times do not
            // reveal which emails are registered.
            state.passwords().burn(password.expose()).await?;
            let reason = if other.is_some() { "inactive_user" } else { "unknown_user" };
            (
                other.map(|account| account.user),
                Vec::new(),
                AuthMethod::LocalPassword,
                Verdict::Refused { reason, upstream_status: None },
            )
        }
    };

    metrics::counter!("gatehouse_logins_total", "method" => method.as_str(), "outcome" => verdict.outcome())
        .increment(1);
    let event = NewAuditEvent {
        org_id: user.as_ref().map(|u| u.org_id),
        user_id: user.as_ref().map(|u| u.id),
        kind: "login",
        method: Some(method.as_str()),
        outcome: verdict.outcome(),
        detail: verdict.detail(),
        device: device.clone(),
        actor: None,
    };
    match (user, verdict) {
        // A successful sign-in's audit event is written with its session.
        (Some(user), Verdict::Authenticated) => {
            throttle.succeeded(&state, &standing).await?;
            Ok(Json(sessions::issue(&state, &user, groups, None, method, &device, &event).await?))
        }
        (_, Verdict::Unavailable { .. }) => {
            // The organization's service is down: no fault of the caller's,
            // and nothing counted against the account.
            state.store().record_audit_event(&event, state.clock().now()).await?;
            Err(ApiError::Unavailable { code: "external_auth_unavailable", retry_after: 5 })
        }
        (user, Verdict::Refused { .. }) => {
            let who = Concerning { org: event.org_id, user: event.user_id };
            let counted = throttle.count(&state, who, &device).await?;
            // Attempts at unknown emails match no organization: recorded
            // once per address and window (and when a limit trips), so that
            // they cannot flood the audit trail.
            if user.is_some() || counted != Tally::Repeat {
                state.store().record_audit_event(&event, state.clock().now()).await?;
            }
            Err(ApiError::InvalidCredentials)
        }
        (None, Verdict::Authenticated) => Err(ApiError::internal("a sign-in succeeded without a user")),
    }
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
    let throttle = Throttle::new(&state, Action::ForgotPassword, Some(&email), device.ip);
    throttle.check(&state).await?;
    throttle.count(&state, Concerning::default(), &device).await?;
    // The answer is the same, and as quick, whether or not the email is
    // registered and whatever the organization's service does: the reset
    // goes on after it, and its outcome is in the audit trail.
    let background = state.clone();
    state.background().spawn(async move {
        if let Err(e) = forward_reset(&background, &email, device).await {
            tracing::error!(error = ?e, "a password reset could not be forwarded");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "status": "accepted" }))))
}

/// Sends the reset to the organization's Forgot Password URL, if the email
/// is an active user's and the organization has one, and records what came
/// of it.
async fn forward_reset(state: &AppState, email: &Email, device: Device) -> Result<(), ApiError> {
    // Unknown and inactive users: nothing is sent.
    let user = match state.store().find_user_by_email(email).await? {
        Some(user) if user.active => user,
        _ => return Ok(()),
    };
    let exchange = match external_auth::load(state, user.org_id).await? {
        Some(auth) => RestConnector::new(state.outbound(), &auth).forgot_password(&user, &device).await,
        None => Ok(None),
    };
    let (outcome, detail) = match &exchange {
        Ok(None) => ("skipped", serde_json::json!({ "reason": "no_forgot_password_url" })),
        Ok(Some(x)) => match &x.result {
            Ok(r) if r.status == 200 => ("success", serde_json::json!({ "upstream_status": 200 })),
            Ok(r) => {
                ("failure", serde_json::json!({ "reason": "upstream_refused", "upstream_status": r.status }))
            }
            Err(e) => ("failure", serde_json::json!({ "reason": "upstream_unavailable", "error": e.kind() })),
        },
        Err(_) => ("failure", serde_json::json!({ "reason": "unsafe_request" })),
    };
    let event = NewAuditEvent {
        org_id: Some(user.org_id),
        user_id: Some(user.id),
        kind: "password_reset",
        method: Some(AuthMethod::ExternalRest.as_str()),
        outcome,
        detail: Some(detail),
        device,
        actor: None,
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

#[utoipa::path(post, path = "/v1/session/logout", tag = "sessions",
    description = "Signs a browser out: ends the session of its session cookie and removes the cookie. Needs no CSRF token: the cookie is SameSite=Lax, so a cross-site post never carries it.",
    responses((status = 204, description = "Signed out (also when there was nothing to end)")))]
pub(crate) async fn end_browser_session(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    if let Some(token) = cookies::get(&headers, cookies::SESSION) {
        sessions::end_by_access_token(&state, token).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().append(header::SET_COOKIE, cookies::remove(&state, cookies::SESSION, "/"));
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
