//! Organizations and their users, as every surface sees them: the admin API,
//! SCIM, single sign-on and the sign-in endpoints share these rules rather
//! than reach into each other's route modules.

use chrono::{DateTime, Utc};
use gatehouse_core::{OrgId, Organization, User, UserId};
use gatehouse_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

/// The organization, or 404.
pub(crate) async fn require_org(state: &AppState, id: OrgId) -> Result<Organization, ApiError> {
    match state.store().get_org(id).await {
        Err(StoreError::NotFound) => Err(ApiError::NotFound("organization")),
        other => Ok(other?),
    }
}

/// A user as admins see it. The password hash never leaves the service; only
/// whether there is one.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserView {
    #[schema(value_type = uuid::Uuid)]
    pub id: UserId,
    #[schema(value_type = uuid::Uuid)]
    pub org_id: OrgId,
    pub email: String,
    pub display_name: String,
    pub external_id: Option<String>,
    pub active: bool,
    pub has_password: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            org_id: u.org_id,
            email: u.email.as_str().to_owned(),
            display_name: u.display_name,
            external_id: u.external_id,
            active: u.active,
            has_password: u.password_hash.is_some(),
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}
