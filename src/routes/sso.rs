//! `/v1/sso`: single sign-on through an organization's OpenID Connect
//! connection, for browsers and native apps.
//!
//! ```text
//! browser ─ GET /v1/sso/start?connection=…&return_to=…  → 302 provider (state, nonce, PKCE)
//!         ─ GET /v1/sso/oidc/callback?code&state         → 302 return_to, session cookie
//! app     ─ GET /v1/sso/start?…&redirect_uri&code_challenge → … → 302 redirect_uri?code
//!         ─ POST /v1/sso/token {code, code_verifier}     → the /v1/login token response
//! ```

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use gatehouse_core::{AuthMethod, Device, Email, UserId};
use gatehouse_oidc::Expectations;
use gatehouse_store::SsoFlow;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::connections::{Connection, Protocol};
use crate::cookies;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, ClientIp};
use crate::sessions::{self, Holder, TokenResponse};
use crate::signin;
use crate::signin::{
    Attempt, Failure, FederatedIdentity, Finished, conclude, event, record, refuse, sign_in,
};
use crate::sso::{self, FlowClient, FlowProtocol, FlowSecrets};
use crate::state::AppState;
use crate::throttle::{Action, Concerning, Throttle};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sso/start", get(start))
        .route("/v1/sso/oidc/callback", get(callback))
        .route("/v1/sso/token", post(token))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StartParams {
    /// The connection to sign in through.
    connection: Option<String>,
    /// Or the user's email: the connection is found from it (home-realm
    /// discovery) and it is passed to the provider as a login hint.
    email: Option<String>,
    /// Browsers: where to go after signing in; must be on the organization's
    /// allow list [default: its first web address].
    return_to: Option<String>,
    /// Native apps: the app's registered redirect URI.
    redirect_uri: Option<String>,
    /// Native apps: the app's PKCE challenge (S256).
    code_challenge: Option<String>,
    /// Must be `S256`.
    code_challenge_method: Option<String>,
    /// Native apps: returned as is with the code.
    state: Option<String>,
}

#[utoipa::path(get, path = "/v1/sso/start", tag = "sso", params(StartParams),
    responses((status = 302, description = "To the identity provider"),
        (status = 400, body = ErrorBody), (status = 403, description = "The organization lacks the Enterprise ToolKit", body = ErrorBody),
        (status = 404, description = "No such connection, or no single sign-on for this email", body = ErrorBody),
        (status = 429, description = "Too many starts from this address; see Retry-After", body = ErrorBody),
        (status = 503, description = "The identity provider could not be reached", body = ErrorBody)))]
pub(crate) async fn start(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiQuery(params): ApiQuery<StartParams>,
) -> Result<Response, ApiError> {
    // Every start stores a flow: starts count against their address.
    let throttle = Throttle::new(&state, Action::SsoStart, None, ip.0);
    throttle.check(&state).await?;
    let device = Device { os: None, name: None, ip: ip.0 };
    throttle.count(&state, Concerning::default(), &device).await?;
    let email = params
        .email
        .as_deref()
        .map(|e| Email::parse(e).map_err(|err| ApiError::invalid("email", err.to_string())))
        .transpose()?;
    let connection = match (&params.connection, &email) {
        (Some(id), _) => {
            let record = state.store().find_connection(id).await?.ok_or(ApiError::NotFound("connection"))?;
            Connection::open(&state, record)?
        }
        (None, Some(email)) => sso::connection_for_email(&state, email)
            .await?
            .ok_or(ApiError::NotFound("single sign-on for this email"))?,
        (None, None) => return Err(ApiError::invalid("connection", "give a connection or an email")),
    };
    let org_id = connection.record.org_id;
    let org = state.store().get_org(org_id).await?;
    sso::require_toolkit(org.enterprise_toolkit)?;
    let policy = state.store().sso_policy(org_id).await?;

    let client = match &params.redirect_uri {
        Some(redirect_uri) => {
            let url = sso::allowed_redirect(&policy, redirect_uri)
                .filter(|u| !matches!(u.scheme(), "https" | "http") || u.query().is_none())
                .ok_or_else(|| {
                    ApiError::invalid("redirect_uri", "is not registered for this organization")
                })?;
            if params.code_challenge_method.as_deref() != Some("S256") {
                return Err(ApiError::invalid("code_challenge_method", "must be S256"));
            }
            let challenge = params
                .code_challenge
                .filter(|c| sso::is_pkce_string(c))
                .ok_or_else(|| ApiError::invalid("code_challenge", "must be an RFC 7636 S256 challenge"))?;
            if params.state.as_ref().is_some_and(|s| s.len() > 512) {
                return Err(ApiError::invalid("state", "must be at most 512 characters"));
            }
            FlowClient::Native {
                redirect_uri: url.to_string(),
                code_challenge: challenge,
                app_state: params.state,
            }
        }
        None => {
            let return_to = match &params.return_to {
                Some(r) => sso::allowed_redirect(&policy, r)
                    .filter(|u| matches!(u.scheme(), "https" | "http"))
                    .ok_or_else(|| {
                        ApiError::invalid("return_to", "is not on the organization's allow list")
                    })?,
                None => sso::default_return(&policy).ok_or_else(|| {
                    ApiError::invalid("return_to", "is required: the organization lists no web address")
                })?,
            };
            FlowClient::Web { return_to: return_to.to_string(), browser_hash: None, from_page: false }
        }
    };
    signin::start(&state, &connection, client, email.as_ref()).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

#[utoipa::path(get, path = "/v1/sso/oidc/callback", tag = "sso", params(CallbackParams),
    responses((status = 302, description = "Signed in: to return_to with the session cookie, or to the native app with a one-time code (or an error)"),
        (status = 400, description = "Unknown, used or expired state, or another browser's flow", body = ErrorBody),
        (status = 401, description = "The provider's answer did not validate (the error names why)", body = ErrorBody),
        (status = 403, description = "user_not_provisioned, user_deactivated, …", body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub(crate) async fn callback(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<CallbackParams>,
) -> Result<Response, ApiError> {
    let device = Device { os: None, name: None, ip: ip.0 };
    let now = state.clock().now();
    let flow = match params.state.as_deref() {
        Some(s) if !s.is_empty() && s.len() <= 512 => {
            let hash = sso::state_hash(s);
            state.store().take_sso_flow(&hash, now).await?.map(|f| (hash, f))
        }
        _ => None,
    };
    let Some((state_hash, flow)) = flow else {
        record(&state, event(AuthMethod::Oidc, None, None, None, &device, Err("invalid_state"), None))
            .await?;
        return Err(ApiError::Invalid {
            field: Some("state".into()),
            message: "this sign-in is unknown, expired or already finished; start again".into(),
        });
    };
    let secrets = FlowSecrets::open(&state, &state_hash, &flow.sealed)?;
    let outcome = finish(&state, &flow, &secrets, &params, &headers, &device).await?;
    let attempt = Attempt { org: flow.org_id, connection_id: &flow.connection_id, method: AuthMethod::Oidc };
    conclude(&state, attempt, &secrets.client, outcome, &device).await
}

/// Everything between a live flow and a signed-in user. `Err` inside is a
/// refusal (recorded by the caller), outside a failure of Gatehouse itself.
async fn finish(
    state: &AppState,
    flow: &SsoFlow,
    secrets: &FlowSecrets,
    params: &CallbackParams,
    headers: &HeaderMap,
    device: &Device,
) -> Result<Result<(UserId, Finished), Failure>, ApiError> {
    use StatusCode as S;
    let FlowProtocol::Oidc { nonce, pkce_verifier } = &secrets.protocol else {
        return Ok(refuse("wrong_protocol", S::BAD_REQUEST, "this sign-in is not an OpenID Connect one"));
    };
    if let FlowClient::Web { browser_hash: Some(browser_hash), .. } = &secrets.client {
        let binding = cookies::get(headers, cookies::SSO_FLOW).map(gatehouse_session::hash_opaque_token);
        if binding.as_deref() != Some(browser_hash.as_str()) {
            return Ok(refuse(
                "browser_mismatch",
                S::BAD_REQUEST,
                "this sign-in was started in another browser; start again",
            ));
        }
    }
    if let Some(error) = &params.error {
        // The provider's error code, kept to its safe alphabet for the trail.
        let code: String =
            error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
        return Ok(Err(Failure::new(
            "idp_error",
            S::UNAUTHORIZED,
            "the identity provider did not sign you in",
        )
        .with_detail(serde_json::json!({ "reason": "idp_error", "idp_error": code }))));
    }
    let Some(code) = params.code.as_deref().filter(|c| !c.is_empty() && c.len() <= 4096) else {
        return Ok(refuse("missing_code", S::BAD_REQUEST, "the identity provider sent no code"));
    };
    let Ok(record) = state.store().get_connection(flow.org_id, &flow.connection_id).await else {
        return Ok(refuse("connection_removed", S::FORBIDDEN, "this sign-in's connection was removed"));
    };
    if !state.store().get_org(flow.org_id).await?.enterprise_toolkit {
        return Ok(refuse(
            "enterprise_toolkit_required",
            S::FORBIDDEN,
            "the organization lacks the Enterprise ToolKit",
        ));
    }
    let connection = Connection::open(state, record)?;
    let Protocol::Oidc(oidc) = &connection.protocol else {
        return Ok(refuse(
            "wrong_protocol",
            S::BAD_REQUEST,
            "this sign-in's connection is not an OpenID Connect one",
        ));
    };
    let provider = sso::provider(state, &connection.record, oidc).await?;
    let secret = sso::client_secret(state, &connection.record)?;
    let exchanged = gatehouse_oidc::exchange_code(
        state.outbound(),
        oidc,
        &provider,
        &secret,
        &sso::callback_url(state),
        code,
        pkce_verifier,
    )
    .await;
    let id_token = match exchanged {
        Ok(t) => t,
        Err(e) => {
            let status = if matches!(e, gatehouse_oidc::SignInError::TokenEndpoint(_)) {
                S::BAD_GATEWAY
            } else {
                S::UNAUTHORIZED
            };
            return Ok(Err(Failure::new(
                e.reason(),
                status,
                "the identity provider did not accept the sign-in",
            )
            .with_detail(serde_json::json!({ "reason": e.reason(), "error": e.to_string() }))));
        }
    };
    let expect = Expectations { nonce, now: state.clock().now(), started_at: secrets.started_at };
    let identity = match sso::verify(state, &connection.record, oidc, provider, &id_token, expect).await {
        Ok(identity) => identity,
        Err(e) => {
            return Ok(Err(Failure::new(
                e.reason(),
                S::UNAUTHORIZED,
                format!("the sign-in did not validate: {e}"),
            )
            .with_detail(serde_json::json!({ "reason": e.reason(), "error": e.to_string() }))));
        }
    };
    if identity.groups_overage {
        tracing::warn!(connection = %connection.record.id, subject = %identity.subject,
            "the provider left groups out of the token (overage); group claims are incomplete");
    }
    let policy = &oidc.account;
    let who = FederatedIdentity::from(identity);
    let attempt =
        Attempt { org: flow.org_id, connection_id: &flow.connection_id, method: connection.kind.method() };
    sign_in(state, attempt, &secrets.client, policy, &who, device).await
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct CodeExchange {
    /// The one-time code the app received at its redirect URI.
    code: String,
    /// The PKCE verifier behind the challenge the app started with.
    code_verifier: String,
}

#[utoipa::path(post, path = "/v1/sso/token", tag = "sso", request_body = CodeExchange,
    responses((status = 200, body = TokenResponse),
        (status = 400, description = "invalid_grant: unknown, used or expired code, or the wrong verifier", body = ErrorBody),
        (status = 403, description = "The user was deactivated meanwhile", body = ErrorBody)))]
pub(crate) async fn token(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(body): ApiJson<CodeExchange>,
) -> Result<Json<TokenResponse>, ApiError> {
    const INVALID: &str = "the code is unknown, used or expired, or the verifier does not match";
    let device = Device { os: None, name: None, ip: ip.0 };
    let now = state.clock().now();
    let taken = state.store().take_sso_code(&gatehouse_session::hash_opaque_token(&body.code), now).await?;
    // The code is spent whatever follows: a wrong verifier does not get a second try.
    let Some(code) = taken.filter(|c| sso::pkce_matches(&body.code_verifier, &c.code_challenge)) else {
        record(&state, event(AuthMethod::Oidc, None, None, None, &device, Err("invalid_code"), None)).await?;
        return Err(ApiError::SignIn {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_grant",
            message: INVALID.into(),
        });
    };
    let user = state.store().get_user(code.user_id).await?;
    if !user.active {
        let refused = event(
            code.method,
            Some(user.org_id),
            Some(user.id),
            None,
            &device,
            Err("user_deactivated"),
            None,
        );
        record(&state, refused).await?;
        return Err(ApiError::Forbidden {
            code: "user_deactivated",
            message: "your account is deactivated".into(),
        });
    }
    let exchanged = serde_json::json!({ "stage": "code_exchanged" });
    let event = event(code.method, Some(user.org_id), Some(user.id), None, &device, Ok(()), Some(exchanged));
    let groups = state.store().group_names_of(user.id).await?;
    Ok(Json(
        sessions::issue(&state, &user, groups, code.idp_groups, code.method, Holder::App, &device, &event)
            .await?,
    ))
}
