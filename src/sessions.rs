//! Where every successful sign-in ends, whatever the method: a session row, a
//! refresh token (stored as its issue time and hash, so that new tokens sit
//! together in the index: `gatehouse_session::ordered_token_key`) and a
//! signed access token.

use chrono::Duration;
use gatehouse_core::{AuthMethod, Device, IdpGroups, SessionId, User};
use gatehouse_session::{AccessClaims, OpaqueToken, VerifyError, ordered_token_key, token_kid};
use gatehouse_store::{NewAuditEvent, NewSession, RefreshOutcome, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

/// The answer to every successful sign-in or refresh.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TokenResponse {
    /// A JWT signed with a key from `/.well-known/jwks.json`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Single use: every refresh returns a new one and spends this one.
    pub refresh_token: String,
    /// A browser's session: the opaque token for its cookie. Never part of
    /// an answer's body.
    #[serde(skip)]
    pub browser_token: Option<String>,
}

/// Who holds a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// An app, with its refresh token.
    App,
    /// A browser, with a cookie for the web pages too.
    Browser,
}

const REFRESH_PREFIX: &str = "ghr";
const BROWSER_PREFIX: &str = "ghw";

/// Starts a session for `user`, a member of the SCIM groups `groups`, with
/// the groups the identity provider asserted (single sign-on), authenticated
/// by `method`, recording `audit` (the sign-in) in the same transaction.
// Every sign-in protocol calls this with what it learned; a struct for
// them would only rename the arguments.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn issue(
    state: &AppState,
    user: &User,
    groups: Vec<String>,
    idp_groups: Option<IdpGroups>,
    method: AuthMethod,
    holder: Holder,
    device: &Device,
    audit: &NewAuditEvent,
) -> Result<TokenResponse, ApiError> {
    let now = state.clock().now();
    let browser = (holder == Holder::Browser).then(|| OpaqueToken::generate_ordered(BROWSER_PREFIX, now));
    let session_ttl = Duration::from_std(state.settings().session_ttl).map_err(ApiError::internal)?;
    let session = NewSession {
        id: SessionId::new(),
        user_id: user.id,
        org_id: user.org_id,
        auth_method: method,
        device: device.clone(),
        expires_at: now + session_ttl,
        idp_groups,
        browser_token_hash: browser.as_ref().map(|b| b.hash().to_owned()),
    };
    let refresh = OpaqueToken::generate_ordered(REFRESH_PREFIX, now);
    state.store().create_session(&session, refresh.hash(), Some(audit), now).await?;
    let mut tokens =
        access_response(state, user, groups, session.idp_groups.as_ref(), session.id, method, refresh)
            .await?;
    tokens.browser_token = browser.map(|b| b.plain().to_owned());
    Ok(tokens)
}

/// Spends `refresh_token` and returns a new pair. A token that was already
/// spent revokes its whole session.
pub(crate) async fn refresh(state: &AppState, refresh_token: &str) -> Result<TokenResponse, ApiError> {
    const INVALID: ApiError =
        ApiError::Unauthorized { code: "invalid_grant", message: "the refresh token is invalid or expired" };
    let now = state.clock().now();
    let next = OpaqueToken::generate_ordered(REFRESH_PREFIX, now);
    match state.store().rotate_refresh_token(&ordered_token_key(refresh_token), next.hash(), now).await? {
        RefreshOutcome::Rotated { session, user, groups } => {
            let idp = session.idp_groups.as_ref();
            access_response(state, &user, groups, idp, session.id, session.auth_method, next).await
        }
        RefreshOutcome::Reused { session_id } => {
            tracing::warn!(%session_id, "refresh token reused; session revoked");
            Err(INVALID)
        }
        RefreshOutcome::Invalid => Err(INVALID),
    }
}

/// Ends the session the refresh token belongs to. Unknown tokens are not an
/// error: the caller's goal, no live session for that token, holds.
pub(crate) async fn logout(state: &AppState, refresh_token: &str) -> Result<(), ApiError> {
    state.store().revoke_by_refresh_token(&ordered_token_key(refresh_token), state.clock().now()).await?;
    Ok(())
}

/// Ends the session an access token belongs to (a browser signing out with
/// its session cookie). A token that does not verify ends nothing.
pub(crate) async fn end_by_access_token(state: &AppState, token: &str) -> Result<(), ApiError> {
    match authenticate(state, token).await {
        Ok((claims, _)) => {
            let sid: SessionId = claims.sid.parse().map_err(ApiError::internal)?;
            state.store().revoke_session(sid, "signed out", state.clock().now()).await?;
            Ok(())
        }
        Err(ApiError::Unauthorized { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Signs a browser out: ends the session its cookies name (by the access
/// token, which lasts minutes, and by the pages' token, which lasts the
/// session), and returns the `Set-Cookie` values that remove both. Every
/// sign-out of a browser, the API's and the pages', is this one.
pub(crate) async fn end_browser_session(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<[axum::http::HeaderValue; 2], ApiError> {
    use crate::cookies;
    if let Some(token) = cookies::get(headers, cookies::SESSION) {
        end_by_access_token(state, token).await?;
    }
    if let Some(token) = cookies::get(headers, cookies::BROWSER)
        && let Some((session, _)) = browser_session(state, token).await?
    {
        state.store().revoke_session(session.id, "signed out", state.clock().now()).await?;
    }
    Ok([cookies::remove(state, cookies::SESSION, "/"), cookies::remove(state, cookies::BROWSER, "/")])
}

/// The live session of a browser's cookie token, with its active user.
pub(crate) async fn browser_session(
    state: &AppState,
    token: &str,
) -> Result<Option<(gatehouse_store::SessionRecord, User)>, ApiError> {
    let Some((session, user)) = state.store().browser_session(&ordered_token_key(token)).await? else {
        return Ok(None);
    };
    Ok((session.is_live(state.clock().now()) && user.active).then_some((session, user)))
}

/// Checks an access token and that its session and user are still live.
pub(crate) async fn authenticate(state: &AppState, token: &str) -> Result<(AccessClaims, User), ApiError> {
    const INVALID: ApiError =
        ApiError::Unauthorized { code: "invalid_token", message: "the access token is invalid or expired" };
    let kid = token_kid(token).ok_or(INVALID)?;
    let ring = state.keys().for_kid(&kid).await?;
    let now = state.clock().now();
    let claims =
        ring.verify(token, state.issuer(), &state.settings().token_audience, now).map_err(|e| match e {
            VerifyError::Malformed
            | VerifyError::UnknownKey
            | VerifyError::Invalid
            | VerifyError::Expired => INVALID,
        })?;
    let sid: SessionId = claims.sid.parse().map_err(|_| INVALID)?;
    let session = match state.store().get_session(sid).await {
        Ok(s) => s,
        Err(StoreError::NotFound) => return Err(INVALID),
        Err(e) => return Err(e.into()),
    };
    if !session.is_live(now) {
        return Err(INVALID);
    }
    let user = match state.store().get_user(session.user_id).await {
        Ok(u) if u.active => u,
        Ok(_) | Err(StoreError::NotFound) => return Err(INVALID),
        Err(e) => return Err(e.into()),
    };
    Ok((claims, user))
}

async fn access_response(
    state: &AppState,
    user: &User,
    groups: Vec<String>,
    idp_groups: Option<&IdpGroups>,
    session: SessionId,
    method: AuthMethod,
    refresh: OpaqueToken,
) -> Result<TokenResponse, ApiError> {
    let now = state.clock().now();
    let ttl = state.settings().access_token_ttl;
    let claims = AccessClaims {
        iss: state.issuer().to_owned(),
        aud: state.settings().token_audience.clone(),
        sub: user.id.to_string(),
        org: user.org_id.to_string(),
        email: user.email.as_ref().map(|e| e.as_str().to_owned()),
        sid: session.to_string(),
        iat: now.timestamp(),
        exp: now.timestamp() + ttl.as_secs() as i64,
        jti: uuid::Uuid::new_v4().to_string(),
        auth_method: method.as_str().to_owned(),
        groups: match idp_groups {
            Some(idp) => idp.token_groups(groups),
            None => groups,
        },
        groups_overage: idp_groups.is_some_and(|g| g.overage),
    };
    let token = state.keys().current().await?.sign(&claims).map_err(ApiError::internal)?;
    Ok(TokenResponse {
        access_token: token,
        token_type: "Bearer",
        expires_in: ttl.as_secs(),
        refresh_token: refresh.plain().to_owned(),
        browser_token: None,
    })
}
