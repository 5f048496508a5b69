//! The audit trail of changes made by someone: who (the [`Actor`]), to
//! which organization, what. Sign-ins and SCIM record their own events
//! where they happen; every change an admin makes goes through [`change`].

use chrono::{DateTime, Utc};
use gatehouse_core::{OrgId, UserId};
use gatehouse_store::{AuditFilter, NewAuditEvent, OrgScope};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ApiError;
use crate::state::AppState;

/// Who made a change, as the audit trail records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Actor {
    /// The bootstrap `GATEHOUSE_ADMIN_TOKEN`.
    BootstrapAdmin,
    /// A stored admin token, by its id.
    AdminToken(String),
    /// A user of the organization with the admin role, in the portal.
    User(UserId),
    /// Someone who followed a setup link, by the link's id.
    SetupLink(String),
    /// A connection's IdP, through what it asserted at a sign-in (its admin
    /// group).
    Connection(String),
}

impl Actor {
    /// Reads back what `Display` wrote (portal sessions keep their actor so).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (kind, id) = text.split_once(':')?;
        match (kind, id) {
            ("admin", "bootstrap") => Some(Self::BootstrapAdmin),
            ("admin", id) if !id.is_empty() => Some(Self::AdminToken(id.to_owned())),
            ("user", id) => id.parse().ok().map(Self::User),
            ("setup", id) if !id.is_empty() => Some(Self::SetupLink(id.to_owned())),
            ("connection", id) if !id.is_empty() => Some(Self::Connection(id.to_owned())),
            _ => None,
        }
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BootstrapAdmin => f.write_str("admin:bootstrap"),
            Self::AdminToken(id) => write!(f, "admin:{id}"),
            Self::User(id) => write!(f, "user:{id}"),
            Self::SetupLink(id) => write!(f, "setup:{id}"),
            Self::Connection(id) => write!(f, "connection:{id}"),
        }
    }
}

/// A change to the organization's set-up or directory.
pub(crate) struct Change {
    pub kind: &'static str,
    pub method: Option<&'static str>,
    pub user: Option<UserId>,
    /// Never a secret: names and ids of what changed, not values.
    pub detail: serde_json::Value,
}

impl Change {
    pub(crate) fn new(kind: &'static str, detail: serde_json::Value) -> Self {
        Self { kind, method: None, user: None, detail }
    }

    pub(crate) fn method(self, method: &'static str) -> Self {
        Self { method: Some(method), ..self }
    }

    pub(crate) fn user(self, user: UserId) -> Self {
        Self { user: Some(user), ..self }
    }
}

/// Records `change`, made by `actor` to `org`.
pub(crate) async fn change(
    state: &AppState,
    actor: &Actor,
    org: OrgId,
    change: Change,
) -> Result<(), ApiError> {
    let event = NewAuditEvent::change(org, change.kind, change.method, change.detail)
        .for_user(change.user)
        .by(actor.to_string());
    Ok(state.store().record_audit_event(&event, state.clock().now()).await?)
}

/// Which audit events to list, as the admin API and the portal ask.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Page size, 1 to 200 [default: 50].
    pub limit: Option<u32>,
    /// The `next` value of the previous page: events older than it.
    pub before: Option<String>,
    /// Only events of this kind (`login`, `sso_sign_in`, `user_created`, …).
    pub kind: Option<String>,
    /// Only events about this user.
    #[param(value_type = Option<uuid::Uuid>)]
    pub user_id: Option<String>,
    /// Only events recorded at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only events recorded before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Platform-wide list only: this organization's events, or `none` for
    /// attempts that matched no organization.
    pub org_id: Option<String>,
}

impl AuditQuery {
    pub(crate) fn filter(&self, org: OrgScope) -> Result<AuditFilter, ApiError> {
        let kind = match self.kind.as_deref() {
            Some(k)
                if k.is_empty()
                    || k.len() > 64
                    || !k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
            {
                return Err(ApiError::invalid("kind", "is not an event kind"));
            }
            other => other.map(str::to_owned),
        };
        let user = self
            .user_id
            .as_deref()
            .map(|u| u.parse::<UserId>().map_err(|_| ApiError::invalid("user_id", "is not a user id")))
            .transpose()?;
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since >= until
        {
            return Err(ApiError::invalid("until", "must be later than since"));
        }
        Ok(AuditFilter { org, kind, user, since: self.since, until: self.until })
    }

    pub(crate) fn before(&self) -> Result<Option<String>, ApiError> {
        self.before
            .as_deref()
            .map(|b| {
                b.parse::<uuid::Uuid>()
                    .map(|b| b.to_string())
                    .map_err(|_| ApiError::invalid("before", "is not a cursor from a previous page"))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::Actor;
    use gatehouse_core::UserId;

    #[test]
    fn actors_read_back_as_written() {
        for actor in [
            Actor::BootstrapAdmin,
            Actor::AdminToken("tok-1".into()),
            Actor::User(UserId::new()),
            Actor::SetupLink("link-1".into()),
            Actor::Connection("conn-1".into()),
        ] {
            assert_eq!(Actor::parse(&actor.to_string()), Some(actor));
        }
        for bad in ["", "admin", "admin:", "user:not-an-id", "setup:", "root:x"] {
            assert_eq!(Actor::parse(bad), None, "{bad}");
        }
    }
}
