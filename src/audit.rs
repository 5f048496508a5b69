//! The audit trail of changes made by someone: who (the [`Actor`]), to
//! which organization, what. Sign-ins and SCIM record their own events
//! where they happen; every change an admin makes goes through [`change`].

use gatehouse_core::{OrgId, UserId};
use gatehouse_store::NewAuditEvent;

use crate::error::ApiError;
use crate::state::AppState;

/// Who made a change, as the audit trail records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Actor {
    /// The bootstrap `GATEHOUSE_ADMIN_TOKEN`.
    BootstrapAdmin,
    /// A stored admin token, by its id.
    AdminToken(String),
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BootstrapAdmin => f.write_str("admin:bootstrap"),
            Self::AdminToken(id) => write!(f, "admin:{id}"),
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
