//! Who may use the admin portal, and how people who are not an
//! organization's users get in: platform admins trade an admin token for a
//! portal session; a customer's IT admin follows a setup link, which opens
//! a portal session for that one organization. (An organization's own
//! admins sign in on `/login` like everyone else; their browser session is
//! their portal session.)
//!
//! The admin API (setup links) and the portal's pages are two adapters over
//! these operations. Every token is random, handed out once, and stored as
//! its hash.

use chrono::{DateTime, Duration, Utc};
use gatehouse_core::OrgId;
use gatehouse_session::{OpaqueToken, hash_opaque_token};
use gatehouse_store::{PortalLink, PortalSession, StoreError};
use serde_json::json;

use crate::audit::{Actor, Change};
use crate::directory::require_org;
use crate::error::ApiError;
use crate::state::AppState;

/// How long a portal session lasts: a working day.
pub(crate) const SESSION_TTL: Duration = Duration::hours(8);
/// How long a setup link lasts unless its creator says otherwise.
pub(crate) const LINK_TTL_DEFAULT: Duration = Duration::days(7);
/// The longest a setup link may last.
pub(crate) const LINK_TTL_MAX: Duration = Duration::days(30);

/// Whom a portal session lets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortalAccess {
    pub(crate) actor: Actor,
    /// `None`: every organization.
    pub(crate) org: Option<OrgId>,
    pub(crate) expires_at: DateTime<Utc>,
}

/// A platform admin's token, traded for a portal session over every
/// organization; `None` when the token is not an admin token.
pub(crate) async fn sign_in_admin(state: &AppState, token: &str) -> Result<Option<OpaqueToken>, ApiError> {
    let Some(actor) = crate::extract::platform_admin(state, token.trim()).await? else { return Ok(None) };
    let now = state.clock().now();
    open_session(state, actor, None, now + SESSION_TTL).await.map(Some)
}

async fn open_session(
    state: &AppState,
    actor: Actor,
    org: Option<OrgId>,
    expires_at: DateTime<Utc>,
) -> Result<OpaqueToken, ApiError> {
    let token = OpaqueToken::generate("ghp");
    let session = PortalSession { org_id: org, actor: actor.to_string(), expires_at };
    state.store().create_portal_session(token.hash(), &session, state.clock().now()).await?;
    Ok(token)
}

/// The live portal session a cookie holds.
pub(crate) async fn session(state: &AppState, token: &str) -> Result<Option<PortalAccess>, ApiError> {
    let Some(session) = state.store().portal_session(&hash_opaque_token(token), state.clock().now()).await?
    else {
        return Ok(None);
    };
    let actor = Actor::parse(&session.actor)
        .ok_or_else(|| ApiError::internal("a portal session names no actor Gatehouse knows"))?;
    Ok(Some(PortalAccess { actor, org: session.org_id, expires_at: session.expires_at }))
}

pub(crate) async fn sign_out(state: &AppState, token: &str) -> Result<(), ApiError> {
    Ok(state.store().end_portal_session(&hash_opaque_token(token), state.clock().now()).await?)
}

/// A new setup link for `org`, lasting `ttl`; returns it and its token,
/// which is shown this once.
pub(crate) async fn create_link(
    state: &AppState,
    actor: &Actor,
    org: OrgId,
    ttl: Option<Duration>,
) -> Result<(PortalLink, String), ApiError> {
    let ttl = ttl.unwrap_or(LINK_TTL_DEFAULT);
    if ttl < Duration::minutes(5) || ttl > LINK_TTL_MAX {
        return Err(ApiError::invalid("ttl_hours", "must be between 5 minutes and 30 days"));
    }
    require_org(state, org).await?;
    let token = OpaqueToken::generate("ghl");
    let now = state.clock().now();
    let link = PortalLink {
        id: uuid::Uuid::now_v7().to_string(),
        org_id: org,
        created_by: actor.to_string(),
        created_at: now,
        expires_at: now + ttl,
        revoked_at: None,
    };
    state.store().create_portal_link(&link, token.hash()).await?;
    let detail = json!({ "portal_link": link.id, "expires_at": link.expires_at });
    crate::audit::change(state, actor, org, Change::new("portal_link_created", detail)).await?;
    Ok((link, token.plain().to_owned()))
}

/// The address a setup link's token opens.
pub(crate) fn link_url(state: &AppState, token: &str) -> String {
    let mut url = state.settings().public_url.join("/admin/setup").expect("a fixed path joins");
    url.query_pairs_mut().append_pair("token", token);
    url.into()
}

pub(crate) async fn list_links(state: &AppState, org: OrgId) -> Result<Vec<PortalLink>, ApiError> {
    require_org(state, org).await?;
    Ok(state.store().list_portal_links(org).await?)
}

/// Revokes a setup link; the portal sessions it opened end with it.
pub(crate) async fn revoke_link(
    state: &AppState,
    actor: &Actor,
    org: OrgId,
    id: &str,
) -> Result<(), ApiError> {
    let opened_as = Actor::SetupLink(id.to_owned()).to_string();
    match state.store().revoke_portal_link(org, id, &opened_as, state.clock().now()).await {
        Err(StoreError::NotFound) => return Err(ApiError::NotFound("setup link")),
        other => other?,
    }
    crate::audit::change(state, actor, org, Change::new("portal_link_revoked", json!({ "portal_link": id })))
        .await
}

/// Follows a setup link: a portal session for its organization, ending no
/// later than the link does. `None` for a link that is not live.
pub(crate) async fn follow_link(
    state: &AppState,
    token: &str,
) -> Result<Option<(OpaqueToken, OrgId)>, ApiError> {
    let now = state.clock().now();
    let Some(link) = state.store().portal_link(&hash_opaque_token(token.trim()), now).await? else {
        return Ok(None);
    };
    let actor = Actor::SetupLink(link.id.clone());
    let expires_at = link.expires_at.min(now + SESSION_TTL);
    let session = open_session(state, actor.clone(), Some(link.org_id), expires_at).await?;
    crate::audit::change(
        state,
        &actor,
        link.org_id,
        Change::new("portal_link_followed", json!({ "portal_link": link.id })),
    )
    .await?;
    Ok(Some((session, link.org_id)))
}
