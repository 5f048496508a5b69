//! Signing in with an email and a password, whoever decides it: the
//! organization's local passwords (argon2id) or its REST service. The
//! `/v1/login` endpoint and the sign-in page are two adapters over
//! [`sign_in`].

use gatehouse_core::{
    AuthMethod, ConnectorError, Device, Email, LoginOutcome, Password, PasswordAttempt, PasswordConnector,
    RejectReason, User,
};
use gatehouse_passthrough::RestConnector;
use gatehouse_store::{LoginAccount, NewAuditEvent};

use crate::error::ApiError;
use crate::external_auth;
use crate::passwords::LocalPasswords;
use crate::sessions::{self, Holder, TokenResponse};
use crate::state::AppState;
use crate::throttle::{Action, Concerning, Tally, Throttle};

/// A successful sign-in.
pub(crate) struct SignedIn {
    pub(crate) user: User,
    pub(crate) tokens: TokenResponse,
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
        Ok(LoginOutcome::Rejected(RejectReason::NoEmail)) => refused("no_email", None),
        Ok(LoginOutcome::Rejected(RejectReason::UpstreamStatus(s))) => refused("upstream_refused", Some(s)),
        Err(ConnectorError::Unavailable(error)) => Verdict::Unavailable { error },
        // A value that could not be placed safely (a line break bound for a
        // header): nothing was sent, and the attempt fails closed.
        Err(ConnectorError::UnsafeRequest(_)) => refused("unsafe_request", None),
        Err(e @ (ConnectorError::Busy | ConnectorError::Internal(_))) => return Err(e.into()),
    };
    Ok((method, verdict))
}

/// Signs `email` in with `password` from `device`. Every refusal is
/// `InvalidCredentials`, whatever the reason (the audit trail keeps the
/// reason); an organization that signs in through single sign-on answers
/// `SsoRequired`; its REST service being down, `Unavailable`; a limit,
/// `TooManyRequests`.
pub(crate) async fn sign_in(
    state: &AppState,
    email: &Email,
    password: Password,
    device: Device,
    holder: Holder,
) -> Result<SignedIn, ApiError> {
    // A locked account or a blocked address is refused before anything is
    // checked or forwarded; their counters come with the account, in one
    // read.
    let throttle = Throttle::new(state, Action::Login, Some(email), device.ip);
    let lookup = state.store().find_user_for_login(email, &throttle.keys()).await?;
    let standing = throttle.judge(state, &lookup.throttles)?;

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
            let mut sso_url = crate::sso::start_url(state);
            sso_url.query_pairs_mut().append_pair("email", email.as_str());
            return Err(ApiError::SsoRequired { sso_url: sso_url.into() });
        }
        Some(LoginAccount { user, rest_auth, groups, .. }) if user.active => {
            let (method, verdict) = decide(state, &user, rest_auth, &password, &device).await?;
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
            throttle.succeeded(state, &standing).await?;
            let tokens = sessions::issue(state, &user, groups, None, method, holder, &device, &event).await?;
            Ok(SignedIn { user, tokens })
        }
        (_, Verdict::Unavailable { .. }) => {
            // The organization's service is down: no fault of the caller's,
            // and nothing counted against the account.
            state.store().record_audit_event(&event, state.clock().now()).await?;
            Err(ApiError::Unavailable { code: "external_auth_unavailable", retry_after: 5 })
        }
        (user, Verdict::Refused { .. }) => {
            let who = Concerning { org: event.org_id, user: event.user_id };
            let counted = throttle.count(state, who, &device).await?;
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
