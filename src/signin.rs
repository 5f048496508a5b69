//! The finish every sign-in protocol shares, outside the route modules: the
//! platform user for a federated identity (or a refusal), a browser's
//! session or a native app's one-time code, and the answer to the browser
//! or app, with its audit event (Dex's `finalizeLogin`).
//!
//! ```text
//! OIDC callback (routes/sso.rs) ─┐
//!                                ├─▶ sign_in: match_user, session or code ─▶ conclude: cookie + 302, or code, or refusal
//! SAML ACS (routes/saml.rs) ─────┘
//! ```

use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use gatehouse_core::{
    AccountPolicy, AuthMethod, Device, Email, IdpGroups, OrgId, Origin, Role, User, UserId,
};
use gatehouse_session::OpaqueToken;
use gatehouse_store::{NewAuditEvent, NewUser, SignInKeys, SsoCode, StoreError, UserUpdate};
use url::Url;

use crate::connections::{Connection, Protocol};
use crate::cookies;
use crate::error::ApiError;
use crate::sessions::{self, Holder, TokenResponse};
use crate::sso::{self, FlowClient};
use crate::state::AppState;

const CODE_PREFIX: &str = "ghc";
const FLOW_BINDING_PREFIX: &str = "ghb";

/// Starts a sign-in through `connection` for `client`, whatever its protocol:
/// the browser or app is sent to the identity provider, and the flow waits
/// for its answer. A browser's OIDC flow is bound to the browser by a
/// cookie; a SAML flow cannot be (the IdP's POST is cross-site and carries
/// no SameSite=Lax cookie), and is bound by its single-use RelayState and
/// AuthnRequest id instead.
pub(crate) async fn start(
    state: &AppState,
    connection: &Connection,
    client: FlowClient,
    login_hint: Option<&Email>,
) -> Result<Response, ApiError> {
    let started_at = state.clock().now();
    let record = &connection.record;
    let (url, binding) = match &connection.protocol {
        Protocol::Oidc(oidc) => {
            let (client, binding) = match client {
                FlowClient::Web { return_to, from_page, .. } => {
                    let binding = OpaqueToken::generate(FLOW_BINDING_PREFIX);
                    let browser_hash = Some(binding.hash().to_owned());
                    (FlowClient::Web { return_to, browser_hash, from_page }, Some(binding))
                }
                native => (native, None),
            };
            (sso::begin(state, record, oidc, client, login_hint, started_at).await?, binding)
        }
        Protocol::Saml(saml) => (crate::saml::begin(state, record, saml, client, started_at).await?, None),
    };
    let mut response = redirect(url.as_str())?;
    if let Some(binding) = binding {
        let cookie =
            cookies::set(state, cookies::SSO_FLOW, binding.plain(), "/v1/sso", sso::FLOW_TTL.num_seconds());
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    Ok(response)
}

/// Starts a browser's sign-in at `connection`'s provider, from one of
/// Gatehouse's own pages, to come back to `return_to`: counted against the
/// address as every start is, and only for an entitled organization.
pub(crate) async fn start_web(
    state: &AppState,
    ip: Option<std::net::IpAddr>,
    connection: &Connection,
    return_to: Url,
    email: &Email,
) -> Result<Response, ApiError> {
    let throttle = crate::throttle::Throttle::new(state, crate::throttle::Action::SsoStart, None, ip);
    throttle.check(state).await?;
    let device = Device { os: None, name: None, ip };
    throttle.count(state, crate::throttle::Concerning::default(), &device).await?;
    let org = state.store().get_org(connection.record.org_id).await?;
    sso::require_toolkit(org.enterprise_toolkit)?;
    let client = FlowClient::Web { return_to: return_to.to_string(), browser_hash: None, from_page: true };
    start(state, connection, client, Some(email)).await
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
    // The connection's health at a glance; a sign-in does not fail for it.
    let failure = outcome.as_ref().err().map(|f| f.reason);
    let now = state.clock().now();
    if let Err(e) = state.store().record_connection_outcome(attempt.connection_id, failure, now).await {
        tracing::warn!(error = %e, connection = attempt.connection_id, "could not record the connection's health");
    }
    match (outcome, client) {
        (Ok((user_id, Finished::Web(tokens))), FlowClient::Web { return_to, .. }) => {
            let mut response = redirect(return_to)?;
            let h = response.headers_mut();
            for cookie in cookies::for_session(state, &tokens) {
                h.append(SET_COOKIE, cookie);
            }
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
                FlowClient::Web { from_page: true, .. } => {
                    let mut response = redirect(&format!("/login?refused={}", failure.reason))?;
                    response
                        .headers_mut()
                        .append(SET_COOKIE, cookies::remove(state, cookies::SSO_FLOW, "/v1/sso"));
                    Ok(response)
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
    let user = match match_user(state, attempt, policy, identity, device).await? {
        Ok(user) => user,
        Err(reason) => {
            return Ok(Err(Failure::new(reason, StatusCode::FORBIDDEN, refusal_message(reason))
                .with_detail(serde_json::json!({ "reason": reason, "subject": identity.subject }))));
        }
    };
    let idp_groups = IdpGroups::asserted(policy.groups_source, &identity.groups, identity.groups_overage);
    let user = apply_admin_group(state, connection_id, policy, identity, user).await?;
    let finished = match client {
        FlowClient::Web { .. } => {
            let mut subject = serde_json::json!({ "subject": identity.subject });
            if idp_groups.overage {
                // Reported, not hidden: the token's groups are incomplete.
                subject["groups_overage"] = true.into();
            }
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
            let (idp, method) = (Some(idp_groups), attempt.method);
            let session = sessions::issue(state, &user, groups, idp, method, Holder::Browser, device, &event);
            Finished::Web(session.await?)
        }
        FlowClient::Native { code_challenge, .. } => {
            let code = OpaqueToken::generate(CODE_PREFIX);
            let now = state.clock().now();
            let record = SsoCode {
                user_id: user.id,
                code_challenge: code_challenge.clone(),
                method: attempt.method,
                idp_groups: Some(idp_groups),
            };
            state.store().create_sso_code(code.hash(), &record, now + sso::CODE_TTL, now).await?;
            Finished::Native(code.plain().to_owned())
        }
    };
    Ok(Ok((user.id, finished)))
}

/// With the connection's admin group set, the IdP says who is an admin:
/// the user's role follows whether it asserts the group, at every sign-in.
/// When the IdP's group list was cut short (Entra's overage), nothing is
/// known and nothing changes.
async fn apply_admin_group(
    state: &AppState,
    connection_id: &str,
    policy: &AccountPolicy,
    identity: &FederatedIdentity,
    user: User,
) -> Result<User, ApiError> {
    let Some(group) = &policy.admin_group else { return Ok(user) };
    if identity.groups_overage {
        return Ok(user);
    }
    let role = if identity.groups.iter().any(|g| g == group) { Role::Admin } else { Role::Member };
    if role == user.role {
        return Ok(user);
    }
    let update = UserUpdate { role: Some(role), ..Default::default() };
    let user = state.store().update_user(user.id, &update, state.clock().now()).await?;
    let detail = serde_json::json!({ "fields": ["role"], "role": role.as_str(), "admin_group": group });
    let actor = crate::audit::Actor::Connection(connection_id.to_owned());
    crate::audit::change(
        state,
        &actor,
        user.org_id,
        crate::audit::Change::new("user_updated", detail).user(user.id),
    )
    .await?;
    Ok(user)
}

pub(crate) fn refuse<T>(reason: &'static str, status: StatusCode, message: &str) -> Result<T, Failure> {
    Err(Failure::new(reason, status, message))
}

/// Why a single sign-on was refused, in words for the person (from the
/// fixed reasons; anything else is the general refusal).
pub(crate) fn refusal_message(reason: &str) -> &'static str {
    match reason {
        "user_not_provisioned" => "you have no account in this organization; ask its administrator",
        "user_deactivated" => "your account is deactivated",
        "email_domain_not_allowed" => "your email's domain may not sign in here",
        "email_not_verified" => "the identity provider has not verified your email",
        "email_in_use" => "your email belongs to another account",
        "no_email" => "the identity provider sent no email",
        "email_domain_not_verified" => {
            "your email's domain is not verified by this organization; ask its administrator"
        }
        "email_domain_owned_elsewhere" => "your email's domain belongs to another organization",
        "user_deleted" => "your account was deleted by your organization's directory",
        "external_id_ambiguous" => "your identity matches several accounts; ask your administrator",
        "external_id_mismatch" => "your email belongs to another account",
        _ => "you cannot sign in here",
    }
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
        actor: None,
    }
}

pub(crate) async fn record(state: &AppState, event: NewAuditEvent) -> Result<(), ApiError> {
    Ok(state.store().record_audit_event(&event, state.clock().now()).await?)
}

/// Why a matched identity may not sign in.
pub(crate) type Refusal = &'static str;

/// Who the provider says signed in, whatever the protocol.
#[derive(Debug, Clone)]
pub(crate) struct FederatedIdentity {
    /// Stable per connection: OIDC `sub` (Azure AD `tid/oid`), SAML NameID.
    pub(crate) subject: String,
    pub(crate) email: Option<String>,
    pub(crate) email_verified: bool,
    pub(crate) name: Option<String>,
    /// What the connection's external id claim or attribute holds: the
    /// IdP's own id for the user, which SCIM sent as `externalId`.
    pub(crate) external_id: Option<String>,
    pub(crate) groups: Vec<String>,
    pub(crate) groups_overage: bool,
}

impl From<gatehouse_oidc::Identity> for FederatedIdentity {
    fn from(i: gatehouse_oidc::Identity) -> Self {
        Self {
            subject: i.subject,
            email: i.email,
            email_verified: i.email_verified,
            name: i.name,
            external_id: i.external_id,
            groups: i.groups,
            groups_overage: i.groups_overage,
        }
    }
}

impl From<gatehouse_saml::SamlIdentity> for FederatedIdentity {
    fn from(i: gatehouse_saml::SamlIdentity) -> Self {
        Self {
            subject: i.subject,
            email: i.email,
            // Asserted, and signed, by the organization's own IdP; whether
            // the organization speaks for the address is the verified
            // domain's to say (`match_user`).
            email_verified: true,
            name: i.name,
            external_id: i.external_id,
            groups: i.groups,
            groups_overage: false,
        }
    }
}

/// Finds the platform user for `identity`, in this order:
///
/// 1. the user already linked to this connection's subject;
/// 2. the one user SCIM provisioned with the IdP's id for them
///    (`externalId`), which is then linked: an email change or reuse at
///    the IdP cannot move the identity to another account;
/// 3. nobody, if SCIM deleted this person (a tombstone): a sign-in does not
///    bring back whom the directory removed;
/// 4. with `link_by_email`, the user of the organization with the same,
///    verified email, in a domain the organization has verified (or any
///    domain, if the connection trusts unverified ones), which is then
///    linked; unless SCIM gave that user another IdP id than this one's;
/// 5. a new user, if the connection provisions just in time, under the
///    same email rules, and only alongside SCIM if it says so.
pub(crate) async fn match_user(
    state: &AppState,
    attempt: Attempt<'_>,
    conn: &AccountPolicy,
    identity: &FederatedIdentity,
    device: &Device,
) -> Result<Result<User, Refusal>, ApiError> {
    let (org, connection_id) = (attempt.org, attempt.connection_id);
    let email = identity.email.as_deref().map(Email::parse).transpose().ok().flatten();
    if !conn.allowed_email_domains.is_empty()
        && !email.as_ref().is_some_and(|e| conn.allowed_email_domains.admits(e.as_str()))
    {
        return Ok(Err("email_domain_not_allowed"));
    }
    let active = |user: User| if user.active { Ok(user) } else { Err("user_deactivated") };

    if let Some(user) = state.store().linked_user(connection_id, &identity.subject).await? {
        if user.org_id != org {
            return Ok(Err("linked_elsewhere"));
        }
        return Ok(active(user));
    }
    if let Some(external_id) = &identity.external_id {
        let mut provisioned = state.store().find_users_by_external_id(org, external_id).await?;
        match provisioned.len() {
            0 => {}
            1 => return link(state, connection_id, identity, provisioned.remove(0)).await,
            _ => return Ok(Err("external_id_ambiguous")),
        }
    }
    let keys = SignInKeys {
        org,
        connection_id,
        subject: &identity.subject,
        email: email.as_ref().map(Email::normalized),
        external_id: identity.external_id.as_deref(),
    };
    if state.store().find_tombstone(keys).await?.is_some() {
        return Ok(Err("user_deleted"));
    }
    // Whether the organization speaks for the address: the IdP can assert
    // any email, and only a domain the organization verified says it is
    // one of theirs.
    let trusted = |email: Email| async move {
        if conn.trust_unverified_email_domains {
            return Ok::<_, ApiError>(Ok(email));
        }
        match state.store().domain_owner(email.domain()).await? {
            Some((owner, _)) if owner == org => Ok(Ok(email)),
            _ => Ok(Err("email_domain_not_verified")),
        }
    };
    if conn.link_by_email
        && identity.email_verified
        && let Some(email) = &email
        && let Some(user) = state.store().find_user_by_email(email).await?
        && user.org_id == org
    {
        if let Err(refusal) = trusted(email.clone()).await? {
            return Ok(Err(refusal));
        }
        // SCIM said who this address belongs to, by the IdP's id; another
        // id with the same address is someone else (a reused address).
        if let (Some(theirs), Some(ours)) = (&identity.external_id, &user.external_id)
            && !theirs.eq_ignore_ascii_case(ours)
        {
            return Ok(Err("external_id_mismatch"));
        }
        return link(state, connection_id, identity, user).await;
    }
    if !conn.jit_provisioning {
        return Ok(Err("user_not_provisioned"));
    }
    // Where SCIM provisions, it decides who exists.
    if !conn.jit_alongside_scim && !state.store().list_scim_tokens(org, 1).await?.is_empty() {
        return Ok(Err("user_not_provisioned"));
    }
    let Some(email) = email else { return Ok(Err("no_email")) };
    // Without a domain list, only a verified email may claim an address.
    if conn.allowed_email_domains.is_empty() && !identity.email_verified {
        return Ok(Err("email_not_verified"));
    }
    let email = match trusted(email).await? {
        Ok(email) => email,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let new = NewUser {
        org_id: org,
        display_name: identity.name.clone().unwrap_or_else(|| email.as_str().to_owned()),
        email: Some(email),
        external_id: identity.external_id.clone(),
        password_hash: None,
        active: true,
        user_name: None,
        scim_resource: None,
        role: Role::Member,
        created_via: Origin::JustInTime,
    };
    let audit = NewAuditEvent {
        org_id: Some(org),
        user_id: None,
        kind: "user_created",
        method: Some(attempt.method.as_str()),
        outcome: "success",
        detail: Some(serde_json::json!({ "connection": connection_id, "provisioning": "just_in_time" })),
        device: device.clone(),
        actor: None,
    };
    let now = state.clock().now();
    match state.store().create_linked_user(&new, connection_id, &identity.subject, &audit, now).await {
        Ok(user) => Ok(Ok(user)),
        Err(StoreError::Conflict(_)) => Ok(Err("email_in_use")),
        Err(StoreError::DomainOwned(_)) => Ok(Err("email_domain_owned_elsewhere")),
        Err(e) => Err(e.into()),
    }
}

/// Links the identity to `user`, an active user the matching found.
async fn link(
    state: &AppState,
    connection_id: &str,
    identity: &FederatedIdentity,
    user: User,
) -> Result<Result<User, Refusal>, ApiError> {
    if !user.active {
        return Ok(Err("user_deactivated"));
    }
    let now = state.clock().now();
    match state.store().link_identity(connection_id, &identity.subject, user.id, now).await {
        // A concurrent first sign-in linked it meanwhile: the same answer.
        Ok(()) | Err(StoreError::Conflict(_)) => Ok(Ok(user)),
        Err(e) => Err(e.into()),
    }
}
