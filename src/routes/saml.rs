//! `/v1/sso/saml/{connection_id}`: SAML 2.0 single sign-on (Ping Identity)
//! with Gatehouse as the service provider.
//!
//! ```text
//! /v1/sso/start?connection=… ─302▶ IdP (AuthnRequest, HTTP-Redirect; RelayState = the flow's state)
//! IdP ─POST SAMLResponse, RelayState▶ /v1/sso/saml/{id}/acs ─▶ validate ─▶ sign_in ─▶ conclude
//! IdP-initiated: the same POST without a flow, when the connection allows it
//! ```

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use gatehouse_core::Device;
use gatehouse_saml::{AcsError, SamlConnection};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::connections::{Connection, Protocol};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ClientIp};
use crate::saml::Loaded;
use crate::signin::{Attempt, Failure, FederatedIdentity, conclude, event, record, sign_in};
use crate::sso::{self, FlowClient, FlowProtocol, FlowSecrets};
use crate::state::AppState;
use crate::throttle::{Action, Concerning, Throttle};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/sso/saml/{connection_id}/metadata", get(metadata)).route(
        "/v1/sso/saml/{connection_id}/acs",
        post(acs).layer(DefaultBodyLimit::max(gatehouse_saml::MAX_RESPONSE_BASE64 + 8 * 1024)),
    )
}

/// The SAML connection with this id; any other id, or a connection of
/// another protocol, is not one.
async fn saml_connection(state: &AppState, id: &str) -> Result<(Connection, SamlConnection), ApiError> {
    let record = state.store().find_connection(id).await?.ok_or(ApiError::NotFound("SAML connection"))?;
    let connection = Connection::open(state, record)?;
    match &connection.protocol {
        Protocol::Saml(saml) => {
            let saml = saml.clone();
            Ok((connection, saml))
        }
        Protocol::Oidc(_) => Err(ApiError::NotFound("SAML connection")),
    }
}

#[utoipa::path(get, path = "/v1/sso/saml/{connection_id}/metadata", tag = "sso",
    params(("connection_id" = String, Path)),
    responses((status = 200, description = "Our SP metadata for this connection: entity id, ACS, NameID format, signing and encryption certificate", content_type = "application/samlmetadata+xml"),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn metadata(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (connection, saml) = saml_connection(&state, &id).await?;
    let loaded = state.saml_providers().get(&state, &connection.record, &saml).await?;
    let xml = loaded.sp.metadata_xml().map_err(ApiError::internal)?;
    Ok(([(CONTENT_TYPE, "application/samlmetadata+xml")], xml).into_response())
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct AcsForm {
    #[serde(rename = "SAMLResponse")]
    saml_response: String,
    #[serde(rename = "RelayState", default)]
    relay_state: Option<String>,
}

#[utoipa::path(post, path = "/v1/sso/saml/{connection_id}/acs", tag = "sso",
    params(("connection_id" = String, Path)),
    request_body(content = AcsForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 302, description = "Signed in: to the return address with the session cookie, or to the native app with a one-time code"),
        (status = 400, description = "Unknown, used or expired flow; a malformed post", body = ErrorBody),
        (status = 401, description = "The response did not validate (the error names why)", body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn acs(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiPath(id): ApiPath<String>,
    form: Result<Form<AcsForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let device = Device { os: None, name: None, ip: ip.0 };
    // Refused responses count against their address: forging them costs us
    // a signature check each.
    let throttle = Throttle::new(&state, Action::SamlAcs, None, device.ip);
    throttle.check(&state).await?;
    let (opened, saml) = saml_connection(&state, &id).await?;
    let stored = &opened.record;
    let org = stored.org_id;
    let attempt = Attempt { org, connection_id: &stored.id, method: opened.kind.method() };
    let form = match form {
        Ok(Form(form)) => form,
        Err(e) => {
            return refuse(
                &state,
                &throttle,
                attempt,
                &device,
                "malformed_post",
                StatusCode::BAD_REQUEST,
                e.body_text(),
            )
            .await;
        }
    };
    if !state.store().get_org(org).await?.enterprise_toolkit {
        return refuse(
            &state,
            &throttle,
            attempt,
            &device,
            "enterprise_toolkit_required",
            StatusCode::FORBIDDEN,
            "the organization lacks the Enterprise ToolKit",
        )
        .await;
    }
    let loaded = state.saml_providers().get(&state, stored, &saml).await?;
    let connection = loaded.sp.connection();
    let relay = form.relay_state.unwrap_or_default();

    // Which flow this answers, if any.
    let (client, request_id) = if relay.starts_with(&format!("{}_", crate::saml::RELAY_PREFIX)) {
        let state_hash = sso::state_hash(&relay);
        let flow = state.store().take_sso_flow(&state_hash, state.clock().now()).await?;
        let Some(flow) = flow.filter(|f| f.connection_id == stored.id) else {
            return refuse(
                &state,
                &throttle,
                attempt,
                &device,
                "invalid_state",
                StatusCode::BAD_REQUEST,
                "this sign-in is unknown, expired or already finished; start again",
            )
            .await;
        };
        let secrets = FlowSecrets::open(&state, &state_hash, &flow.sealed)?;
        let FlowProtocol::Saml { request_id } = secrets.protocol else {
            return Err(ApiError::internal("an OIDC flow reached the SAML ACS"));
        };
        (secrets.client, Some(request_id))
    } else {
        // IdP-initiated: only when allowed, and only to an allowed address.
        if !connection.allow_idp_initiated {
            return refuse(
                &state,
                &throttle,
                attempt,
                &device,
                "unsolicited",
                StatusCode::UNAUTHORIZED,
                "this connection does not accept sign-ins started at the identity provider",
            )
            .await;
        }
        let return_to = if relay.is_empty() {
            sso::default_return(&state.store().sso_policy(org).await?).map(|u| u.to_string())
        } else {
            connection.allowed_relay_states.iter().find(|r| **r == relay).cloned()
        };
        let Some(return_to) = return_to else {
            return refuse(
                &state,
                &throttle,
                attempt,
                &device,
                "relay_state_not_allowed",
                StatusCode::BAD_REQUEST,
                "the RelayState is not an allowed address",
            )
            .await;
        };
        (FlowClient::Web { return_to, browser_hash: None, from_page: false }, None)
    };

    let now = state.clock().now();
    let mut validated = validate(&loaded, &form.saml_response, request_id.as_deref(), now).await?;
    if matches!(validated, Err(AcsError::BadSignature))
        && let Some(fresh) = state.saml_providers().after_bad_signature(&state, stored, &loaded).await
    {
        // The IdP rolled its certificate over: try once more with the new one.
        validated = validate(&fresh, &form.saml_response, request_id.as_deref(), now).await?;
    }
    let outcome = match validated {
        Err(e) => Err(refusal(&e)),
        Ok(identity) => {
            if !state
                .store()
                .first_use_of_assertion(&stored.id, &identity.assertion_id, identity.valid_until, now)
                .await?
            {
                Err(Failure::new(
                    "replayed_assertion",
                    StatusCode::UNAUTHORIZED,
                    "this assertion was already used",
                ))
            } else {
                let who = FederatedIdentity::from(identity);
                sign_in(&state, attempt, &client, &connection.account, &who, &device).await?
            }
        }
    };
    if outcome.is_err() {
        throttle.count(&state, Concerning::default(), &device).await?;
    }
    conclude(&state, attempt, &client, outcome, &device).await
}

/// xmlsec is blocking C: validation runs off the runtime.
async fn validate(
    loaded: &Arc<Loaded>,
    saml_response: &str,
    request_id: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Result<gatehouse_saml::SamlIdentity, AcsError>, ApiError> {
    let (loaded, response, request_id) =
        (loaded.clone(), saml_response.to_owned(), request_id.map(str::to_owned));
    tokio::task::spawn_blocking(move || {
        gatehouse_saml::validate(&loaded.sp, &response, request_id.as_deref(), now)
    })
    .await
    .map_err(ApiError::internal)
}

fn refusal(e: &AcsError) -> Failure {
    tracing::warn!(reason = e.reason(), error = %e, "SAML response refused");
    Failure::new(e.reason(), StatusCode::UNAUTHORIZED, format!("the sign-in did not validate: {e}"))
        .with_detail(serde_json::json!({ "reason": e.reason(), "error": e.to_string() }))
}

/// Records a refused post and answers it.
async fn refuse(
    state: &AppState,
    throttle: &Throttle,
    attempt: Attempt<'_>,
    device: &Device,
    reason: &'static str,
    status: StatusCode,
    message: impl Into<String>,
) -> Result<Response, ApiError> {
    throttle.count(state, Concerning::default(), device).await?;
    let refused = event(
        attempt.method,
        Some(attempt.org),
        None,
        Some(attempt.connection_id),
        device,
        Err(reason),
        None,
    );
    record(state, refused).await?;
    Err(ApiError::SignIn { status, code: reason, message: message.into() })
}
