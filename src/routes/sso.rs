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
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gatehouse_core::{AccountPolicy, AuthMethod, Device, Email, OrgId, UserId};
use gatehouse_oidc::Expectations;
use gatehouse_session::OpaqueToken;
use gatehouse_store::{NewAuditEvent, SsoCode, SsoFlow};
use serde::Deserialize;
use url::Url;
use utoipa::{IntoParams, ToSchema};

use crate::cookies;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, ClientIp};
use crate::sessions::{self, TokenResponse};
use crate::sso::{self, Connection, FederatedIdentity, FlowClient, FlowProtocol, FlowSecrets};
use crate::state::AppState;
use crate::throttle::{Action, Concerning, Throttle};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sso/start", get(start))
        .route("/v1/sso/oidc/callback", get(callback))
        .route("/v1/sso/token", post(token))
}

const CODE_PREFIX: &str = "ghc";
const FLOW_BINDING_PREFIX: &str = "ghb";

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
    let (org_id, record) = match (&params.connection, &email) {
        (Some(id), _) => {
            let record = state.store().find_connection(id).await?.ok_or(ApiError::NotFound("connection"))?;
            (record.org_id, record)
        }
        (None, Some(email)) => sso::connection_for_email(&state, email)
            .await?
            .ok_or(ApiError::NotFound("single sign-on for this email"))?,
        (None, None) => return Err(ApiError::invalid("connection", "give a connection or an email")),
    };
    let org = state.store().get_org(org_id).await?;
    require_toolkit(org.enterprise_toolkit)?;
    let saml = record.kind == crate::saml::KIND;
    let policy = state.store().sso_policy(org_id).await?;
    let started_at = state.clock().now();

    let mut browser_binding = None;
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
            let binding = (!saml).then(|| OpaqueToken::generate(FLOW_BINDING_PREFIX));
            let client = FlowClient::Web {
                return_to: return_to.to_string(),
                browser_hash: binding.as_ref().map(|b| b.hash().to_owned()),
            };
            browser_binding = binding;
            client
        }
    };
    if saml {
        return crate::routes::saml::begin(&state, record, client, started_at).await;
    }

    let connection = Connection::load(&state, record)?;
    let provider = connection.provider(&state).await?;
    let authorization = gatehouse_oidc::authorization(
        &connection.oidc,
        &provider,
        &callback_url(&state),
        email.as_ref().map(Email::as_str),
    );
    let state_hash = sso::state_hash(&authorization.state);
    let secrets = FlowSecrets {
        protocol: FlowProtocol::Oidc {
            nonce: authorization.nonce,
            pkce_verifier: authorization.pkce_verifier,
        },
        started_at,
        client,
    };
    let flow = SsoFlow {
        org_id,
        connection_id: connection.record.id.clone(),
        sealed: secrets.seal(&state, &state_hash)?,
    };
    state.store().create_sso_flow(&state_hash, &flow, started_at + sso::FLOW_TTL, started_at).await?;

    let mut response = redirect(authorization.url.as_str())?;
    if let Some(binding) = browser_binding {
        let cookie =
            cookies::set(&state, cookies::SSO_FLOW, binding.plain(), "/v1/sso", sso::FLOW_TTL.num_seconds());
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// How a callback failed: the audit reason, and the status and message for
/// the browser.
pub(crate) struct Failure {
    reason: &'static str,
    status: StatusCode,
    message: String,
    detail: Option<serde_json::Value>,
}

impl Failure {
    pub(crate) fn new(reason: &'static str, status: StatusCode, message: impl Into<String>) -> Self {
        Self { reason, status, message: message.into(), detail: None }
    }

    pub(crate) fn with_detail(self, detail: serde_json::Value) -> Self {
        Self { detail: Some(detail), ..self }
    }
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

/// Answers a finished sign-in, for any protocol: a browser goes to its
/// return address with the session cookie, a native app to its redirect URI
/// with a one-time code; a refusal is recorded and shown (browser) or sent
/// (app).
pub(crate) async fn conclude(
    state: &AppState,
    attempt: Attempt<'_>,
    client: &FlowClient,
    outcome: Result<(UserId, Finished), Failure>,
    device: &Device,
) -> Result<Response, ApiError> {
    let (org, connection) = (attempt.org, Some(attempt.connection_id));
    match (outcome, client) {
        (Ok((user_id, Finished::Web(tokens))), FlowClient::Web { return_to, .. }) => {
            let mut response = redirect(return_to)?;
            let ttl = state.settings().access_token_ttl.as_secs() as i64;
            let h = response.headers_mut();
            h.append(SET_COOKIE, cookies::set(state, cookies::SESSION, &tokens.access_token, "/", ttl));
            h.append(SET_COOKIE, cookies::remove(state, cookies::SSO_FLOW, "/v1/sso"));
            tracing::info!(%org, user = %user_id, "single sign-on (web)");
            Ok(response)
        }
        (Ok((user_id, Finished::Native(code))), FlowClient::Native { redirect_uri, app_state, .. }) => {
            let issued = serde_json::json!({ "stage": "code_issued" });
            record(
                state,
                event(attempt.method, Some(org), Some(user_id), connection, device, Ok(()), Some(issued)),
            )
            .await?;
            let mut url = Url::parse(redirect_uri).map_err(ApiError::internal)?;
            url.query_pairs_mut().append_pair("code", &code);
            if let Some(s) = app_state {
                url.query_pairs_mut().append_pair("state", s);
            }
            redirect(url.as_str())
        }
        (Ok(_), _) => Err(ApiError::internal("a flow finished for the wrong kind of client")),
        (Err(failure), client) => {
            let refused = event(
                attempt.method,
                Some(org),
                None,
                connection,
                device,
                Err(failure.reason),
                failure.detail.clone(),
            );
            record(state, refused).await?;
            match client {
                FlowClient::Native { redirect_uri, app_state, .. } => {
                    let mut url = Url::parse(redirect_uri).map_err(ApiError::internal)?;
                    url.query_pairs_mut().append_pair("error", failure.reason);
                    if let Some(s) = app_state {
                        url.query_pairs_mut().append_pair("state", s);
                    }
                    redirect(url.as_str())
                }
                FlowClient::Web { .. } => {
                    let mut response = ApiError::SignIn {
                        status: failure.status,
                        code: failure.reason,
                        message: failure.message,
                    }
                    .into_response();
                    response
                        .headers_mut()
                        .append(SET_COOKIE, cookies::remove(state, cookies::SSO_FLOW, "/v1/sso"));
                    Ok(response)
                }
            }
        }
    }
}

/// One sign-in attempt: where it belongs, for the audit trail and the
/// session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt<'a> {
    pub(crate) org: OrgId,
    pub(crate) connection_id: &'a str,
    pub(crate) method: AuthMethod,
}

pub(crate) enum Finished {
    /// A browser's session, already recorded with its audit event.
    Web(TokenResponse),
    /// A native app's one-time code.
    Native(String),
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
    let connection = Connection::load(state, record)?;
    let provider = connection.provider(state).await?;
    let secret = connection.client_secret(state)?;
    let exchanged = gatehouse_oidc::exchange_code(
        state.outbound(),
        &connection.oidc,
        &provider,
        &secret,
        &callback_url(state),
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
    let identity = match sso::verify(state, &connection, provider, &id_token, expect).await {
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
    let policy = &connection.oidc.account;
    let who = FederatedIdentity::from(&identity);
    let attempt = Attempt { org: flow.org_id, connection_id: &flow.connection_id, method: AuthMethod::Oidc };
    sign_in(state, attempt, &secrets.client, policy, &who, device).await
}

/// The end every protocol shares: the platform user for the identity (or a
/// refusal), then a browser session or a native app's one-time code.
pub(crate) async fn sign_in(
    state: &AppState,
    attempt: Attempt<'_>,
    client: &FlowClient,
    policy: &AccountPolicy,
    identity: &FederatedIdentity,
    device: &Device,
) -> Result<Result<(UserId, Finished), Failure>, ApiError> {
    let (org, connection_id) = (attempt.org, attempt.connection_id);
    let user = match sso::match_user(state, (org, connection_id), policy, identity, device).await? {
        Ok(user) => user,
        Err(reason) => {
            return Ok(Err(Failure::new(reason, StatusCode::FORBIDDEN, refusal_message(reason))
                .with_detail(serde_json::json!({ "reason": reason, "subject": identity.subject }))));
        }
    };
    let finished = match client {
        FlowClient::Web { .. } => {
            let subject = serde_json::json!({ "subject": identity.subject });
            let event = event(
                attempt.method,
                Some(org),
                Some(user.id),
                Some(connection_id),
                device,
                Ok(()),
                Some(subject),
            );
            let groups = state.store().group_names_of(user.id).await?;
            Finished::Web(sessions::issue(state, &user, groups, attempt.method, device, &event).await?)
        }
        FlowClient::Native { code_challenge, .. } => {
            let code = OpaqueToken::generate(CODE_PREFIX);
            let now = state.clock().now();
            let record =
                SsoCode { user_id: user.id, code_challenge: code_challenge.clone(), method: attempt.method };
            state.store().create_sso_code(code.hash(), &record, now + sso::CODE_TTL, now).await?;
            Finished::Native(code.plain().to_owned())
        }
    };
    Ok(Ok((user.id, finished)))
}

pub(crate) fn refuse<T>(reason: &'static str, status: StatusCode, message: &str) -> Result<T, Failure> {
    Err(Failure::new(reason, status, message))
}

fn refusal_message(reason: &str) -> &'static str {
    match reason {
        "user_not_provisioned" => "you have no account in this organization; ask its administrator",
        "user_deactivated" => "your account is deactivated",
        "email_domain_not_allowed" => "your email's domain may not sign in here",
        "email_not_verified" => "the identity provider has not verified your email",
        "email_in_use" => "your email belongs to another account",
        "no_email" => "the identity provider sent no email",
        _ => "you cannot sign in here",
    }
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
    Ok(Json(sessions::issue(&state, &user, groups, code.method, &device, &event).await?))
}

fn require_toolkit(entitled: bool) -> Result<(), ApiError> {
    if entitled {
        Ok(())
    } else {
        Err(ApiError::Forbidden {
            code: "enterprise_toolkit_required",
            message: "single sign-on needs the organization's Enterprise ToolKit entitlement".into(),
        })
    }
}

/// Where single sign-on starts.
pub(crate) fn start_url(state: &AppState) -> Url {
    Url::parse(&format!("{}/v1/sso/start", state.issuer())).expect("the public URL is a URL")
}

/// Where the provider sends the user back: registered with the provider.
pub(crate) fn callback_url(state: &AppState) -> Url {
    Url::parse(&format!("{}/v1/sso/oidc/callback", state.issuer())).expect("the public URL is a URL")
}

pub(crate) fn redirect(to: &str) -> Result<Response, ApiError> {
    let location = HeaderValue::from_str(to).map_err(ApiError::internal)?;
    Ok((StatusCode::FOUND, [(LOCATION, location)]).into_response())
}

pub(crate) fn event(
    method: AuthMethod,
    org: Option<OrgId>,
    user: Option<UserId>,
    connection: Option<&str>,
    device: &Device,
    verdict: Result<(), &'static str>,
    extra: Option<serde_json::Value>,
) -> NewAuditEvent {
    let mut detail = extra.unwrap_or_else(|| serde_json::json!({}));
    if let Some(object) = detail.as_object_mut() {
        if let Err(reason) = verdict {
            object.entry("reason").or_insert(reason.into());
        }
        if let Some(connection) = connection {
            object.insert("connection".into(), connection.into());
        }
    }
    NewAuditEvent {
        org_id: org,
        user_id: user,
        kind: "sso_sign_in",
        method: Some(method.as_str()),
        outcome: if verdict.is_ok() { "success" } else { "failure" },
        detail: Some(detail),
        device: device.clone(),
    }
}

pub(crate) async fn record(state: &AppState, event: NewAuditEvent) -> Result<(), ApiError> {
    Ok(state.store().record_audit_event(&event, state.clock().now()).await?)
}
