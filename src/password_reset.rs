//! Forgotten passwords. An organization with a REST Forgot Password URL
//! receives the request there; a user with a local password gets an email
//! with a single-use link. `/v1/password/forgot` and the reset pages are
//! adapters over [`request`] and [`reset`].

use gatehouse_core::{AuthMethod, Device, Email, User};
use gatehouse_passthrough::RestConnector;
use gatehouse_session::OpaqueToken;
use gatehouse_store::NewAuditEvent;

use crate::error::ApiError;
use crate::external_auth;
use crate::state::AppState;
use crate::throttle::{Action, Concerning, Throttle};

/// Takes a reset request for `email` from `device`. The answer is the same,
/// and as quick, whether or not the email is registered and whatever
/// happens next: the reset goes on after it, and its outcome is in the
/// audit trail. Only a limit refuses it.
pub(crate) async fn request(state: &AppState, email: Email, device: Device) -> Result<(), ApiError> {
    let throttle = Throttle::new(state, Action::ForgotPassword, Some(&email), device.ip);
    throttle.check(state).await?;
    throttle.count(state, Concerning::default(), &device).await?;
    // The answer is the same, and as quick, whether or not the email is
    // registered and whatever the organization's service does: the reset
    // goes on after it, and its outcome is in the audit trail.
    let background = state.clone();
    state.background().spawn(async move {
        if let Err(e) = handle(&background, &email, device).await {
            tracing::error!(error = ?e, "a password reset could not be handled");
        }
    });
    Ok(())
}

/// What a reset request for `email` leads to: the organization's Forgot
/// Password URL when it signs in through its REST service, else a reset
/// link by mail to a user with a local password; nothing at all for an
/// unknown or inactive email.
async fn handle(state: &AppState, email: &Email, device: Device) -> Result<(), ApiError> {
    let user = match state.store().find_user_by_email(email).await? {
        Some(user) if user.active => user,
        _ => return Ok(()),
    };
    match external_auth::load(state, user.org_id).await? {
        Some(auth) => forward_reset(state, &user, &auth, device).await,
        None => mail_reset(state, &user, device).await,
    }
}

/// Sends the reset to the organization's Forgot Password URL, if it has
/// one, and records what came of it.
async fn forward_reset(
    state: &AppState,
    user: &User,
    auth: &gatehouse_passthrough::RestAuth,
    device: Device,
) -> Result<(), ApiError> {
    let exchange = RestConnector::new(state.outbound(), auth).forgot_password(user, &device).await;
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
    record(state, user, AuthMethod::ExternalRest, outcome, detail, device).await
}

/// How long a reset link works.
const RESET_TTL: chrono::Duration = chrono::Duration::hours(1);
const RESET_PREFIX: &str = "ghp";

/// Mails a single-use reset link to a user with a local password.
async fn mail_reset(state: &AppState, user: &User, device: Device) -> Result<(), ApiError> {
    let method = AuthMethod::LocalPassword;
    let skipped = |reason: &str| serde_json::json!({ "reason": reason });
    if user.password_hash.is_none() {
        return record(state, user, method, "skipped", skipped("no_local_password"), device).await;
    }
    let Some(address) = user.email.clone() else {
        return record(state, user, method, "skipped", skipped("no_email"), device).await;
    };
    let Some(mailer) = state.mailer() else {
        return record(state, user, method, "skipped", skipped("no_mail_relay"), device).await;
    };
    let token = OpaqueToken::generate(RESET_PREFIX);
    let now = state.clock().now();
    state.store().create_password_reset(user.id, token.hash(), now + RESET_TTL, now).await?;
    let mut link = url::Url::parse(&format!("{}/login/reset", state.issuer())).map_err(ApiError::internal)?;
    link.query_pairs_mut().append_pair("token", token.plain());
    let org = state.store().get_org(user.org_id).await?;
    let body = format!(
        "Someone asked to reset the password of your {org} account, {email}.\n\n\
         To choose a new password, open this link within an hour:\n\n{link}\n\n\
         If it was not you, ignore this message: your password stays as it is.\n",
        org = org.name,
        email = address,
    );
    let (outcome, detail) = match mailer.send(address.as_str(), "Reset your password", body).await {
        Ok(()) => ("success", serde_json::json!({ "sent": "reset_link" })),
        Err(e) => {
            tracing::warn!(error = %e, user = %user.id, "a reset link could not be mailed");
            ("failure", serde_json::json!({ "reason": "mail_failed" }))
        }
    };
    record(state, user, method, outcome, detail, device).await
}

async fn record(
    state: &AppState,
    user: &User,
    method: AuthMethod,
    outcome: &'static str,
    detail: serde_json::Value,
    device: Device,
) -> Result<(), ApiError> {
    let event = NewAuditEvent {
        org_id: Some(user.org_id),
        user_id: Some(user.id),
        kind: "password_reset",
        method: Some(method.as_str()),
        outcome,
        detail: Some(detail),
        device,
        actor: None,
    };
    state.store().record_audit_event(&event, state.clock().now()).await?;
    Ok(())
}

/// Why a reset link does not work.
pub(crate) const LINK_NOT_LIVE: &str = "this link has expired or was already used; ask for a new one";

/// The user a live reset link is for, to greet them on its page.
pub(crate) async fn link_user(state: &AppState, token: &str) -> Result<Option<User>, ApiError> {
    let hash = gatehouse_session::hash_opaque_token(token);
    match state.store().password_reset_user(&hash, state.clock().now()).await? {
        Some(id) => Ok(Some(state.store().get_user(id).await?)),
        None => Ok(None),
    }
}

/// Sets a new password through a reset link, with the same rules as the
/// admin API; the link is spent and the user's sessions end.
pub(crate) async fn reset(
    state: &AppState,
    token: &str,
    new_password: &str,
    device: Device,
) -> Result<(), ApiError> {
    let new_password = crate::directory::password(new_password)?;
    let Some(user) = link_user(state, token).await? else {
        return Err(ApiError::invalid("token", LINK_NOT_LIVE));
    };
    // An organization that moved to its REST service keeps no passwords.
    crate::directory::refuse_local_password_if_external(state, user.org_id).await?;
    let hash = state.passwords().hash(new_password).await?;
    let hashed_token = gatehouse_session::hash_opaque_token(token);
    let now = state.clock().now();
    if state.store().spend_password_reset(&hashed_token, &hash, now).await?.is_none() {
        return Err(ApiError::invalid("token", LINK_NOT_LIVE));
    }
    let detail = serde_json::json!({ "changed": "password", "sessions": "revoked" });
    record(state, &user, AuthMethod::LocalPassword, "success", detail, device).await
}
