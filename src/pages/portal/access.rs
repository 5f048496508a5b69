//! Who is using the portal, from their cookies: a portal session (platform
//! admin, setup link) or, failing that, an organization admin's browser
//! session. Every page that shows or changes an organization asks
//! [`Portal::org`], which answers "not found" for an organization the
//! person may not see.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use gatehouse_core::{AuthMethod, OrgId, Organization, Role, User};

use super::super::{PageError, see_other};
use crate::audit::Actor;
use crate::cookies;
use crate::directory::require_org;
use crate::error::ApiError;
use crate::portal_access::{self, PortalAccess};
use crate::sessions;
use crate::state::AppState;

/// The person using the portal.
#[derive(Debug, Clone)]
pub(crate) enum Portal {
    /// A platform admin (every organization) or a setup link (one).
    Session(PortalAccess),
    /// An organization's user with the admin role, signed in on `/login`.
    OrgAdmin { user: User, method: AuthMethod },
}

impl Portal {
    pub(crate) fn actor(&self) -> Actor {
        match self {
            Self::Session(access) => access.actor.clone(),
            Self::OrgAdmin { user, .. } => Actor::User(user.id),
        }
    }

    /// The one organization this person may manage, if they may manage
    /// only one.
    pub(crate) fn only_org(&self) -> Option<OrgId> {
        match self {
            Self::Session(access) => access.org,
            Self::OrgAdmin { user, .. } => Some(user.org_id),
        }
    }

    /// The organization `id`, if this person may see it; otherwise "not
    /// found", as for an organization that does not exist.
    pub(crate) async fn org(&self, state: &AppState, id: OrgId) -> Result<Organization, PageError> {
        match self.only_org() {
            Some(own) if own != id => Err(PageError(ApiError::NotFound("organization"))),
            _ => Ok(require_org(state, id).await?),
        }
    }

    /// The user this person is in the organization, when they are one of
    /// its users (an organization admin): their own sign-in is what a
    /// change could lock out.
    pub(crate) fn own_user(&self) -> Option<(&User, AuthMethod)> {
        match self {
            Self::OrgAdmin { user, method } => Some((user, *method)),
            Self::Session(_) => None,
        }
    }

    /// How the person is described in the page header.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Session(PortalAccess { actor: Actor::SetupLink(_), .. }) => "Setup link".into(),
            Self::Session(_) => "Platform admin".into(),
            Self::OrgAdmin { user, .. } => user.handle().to_owned(),
        }
    }
}

impl FromRequestParts<AppState> for Portal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let failed = |e: ApiError| PageError(e).into_response();
        if let Some(token) = cookies::get(&parts.headers, cookies::PORTAL)
            && let Some(access) = portal_access::session(state, token).await.map_err(failed)?
        {
            return Ok(Self::Session(access));
        }
        if let Some(token) = cookies::get(&parts.headers, cookies::BROWSER)
            && let Some((session, user)) = sessions::browser_session(state, token).await.map_err(failed)?
        {
            if user.role != Role::Admin {
                return Err(failed(ApiError::Forbidden {
                    code: "not_an_admin",
                    message: "Your account is not an administrator of your organization. Ask one of its administrators, or sign in as one.".into(),
                }));
            }
            return Ok(Self::OrgAdmin { user, method: session.auth_method });
        }
        Err(see_other("/admin/login"))
    }
}
