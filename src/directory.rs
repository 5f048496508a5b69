//! Organizations and their users, as every surface sees them: the admin API,
//! SCIM, single sign-on and the sign-in endpoints share these rules rather
//! than reach into each other's route modules.

use chrono::{DateTime, Utc};
use gatehouse_core::{Email, OrgId, Organization, Origin, Role, User, UserId};
use gatehouse_store::{NewAuditEvent, NewUser, StoreError, UserUpdate};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::audit::{self, Actor, Change};
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
    /// `null` for a user an IdP provisioned with only a userName.
    pub email: Option<String>,
    /// The SCIM userName an IdP gave, if it gave one.
    pub user_name: Option<String>,
    pub display_name: String,
    pub external_id: Option<String>,
    pub active: bool,
    pub has_password: bool,
    /// `member`, or `admin` of the organization's portal.
    pub role: &'static str,
    /// How the user came to be: `admin`, `scim`, `jit`, or `unknown` for
    /// users from before it was recorded.
    pub created_via: &'static str,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            org_id: u.org_id,
            email: u.email.map(|e| e.as_str().to_owned()),
            user_name: u.user_name,
            display_name: u.display_name,
            external_id: u.external_id,
            active: u.active,
            has_password: u.password_hash.is_some(),
            role: u.role.as_str(),
            created_via: u.created_via.as_str(),
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// Trimmed text of `min` to `max` characters, without control characters.
pub(crate) fn text(field: &str, value: &str, min: usize, max: usize) -> Result<String, ApiError> {
    let value = value.trim();
    let len = value.chars().count();
    if len < min {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    if len > max {
        return Err(ApiError::invalid(field, format!("must be at most {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

pub(crate) fn email(value: &str) -> Result<Email, ApiError> {
    Email::parse(value).map_err(|e| ApiError::invalid("email", e.to_string()))
}

/// Local passwords: 8 to 1024 bytes. The upper bound keeps hashing cost flat.
pub(crate) fn password(value: &str) -> Result<&str, ApiError> {
    match value.len() {
        0..8 => Err(ApiError::invalid("password", "must be at least 8 characters")),
        1025.. => Err(ApiError::invalid("password", "must be at most 1024 bytes")),
        _ => Ok(value),
    }
}

fn role(value: &str) -> Result<Role, ApiError> {
    Role::parse(value).ok_or_else(|| ApiError::invalid("role", "must be member or admin"))
}

/// Distinguishes an absent field (`None`) from an explicit `null`
/// (`Some(None)`) in PATCH bodies.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// With external authentication on, the organization's users have no stored
/// password, and none can be set.
pub(crate) async fn refuse_local_password_if_external(state: &AppState, org: OrgId) -> Result<(), ApiError> {
    if state.store().rest_auth(org).await?.is_some() {
        return Err(ApiError::Conflict(
            "the organization signs in through its external authentication service; its users have no local password"
                .into(),
        ));
    }
    Ok(())
}

/// The user, if it belongs to the organization.
pub(crate) async fn require_user(state: &AppState, org: OrgId, id: UserId) -> Result<User, ApiError> {
    match state.store().get_user(id).await {
        Ok(u) if u.org_id == org => Ok(u),
        Ok(_) | Err(StoreError::NotFound) => Err(ApiError::NotFound("user")),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateUser {
    pub email: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    /// Optional local password (8 to 1024 bytes); stored only as an argon2id hash.
    #[serde(default)]
    pub password: Option<String>,
    /// `member` (the default) or `admin`, who manages the organization in the portal.
    #[serde(default)]
    pub role: Option<String>,
}

/// Creates a user, as an admin does.
pub(crate) async fn create_user(
    state: &AppState,
    actor: &Actor,
    org_id: OrgId,
    body: CreateUser,
) -> Result<User, ApiError> {
    let new = NewUser {
        active: true,
        org_id,
        email: Some(email(&body.email)?),
        display_name: text("display_name", body.display_name.as_deref().unwrap_or(""), 0, 200)?,
        external_id: body.external_id.as_deref().map(|e| text("external_id", e, 1, 256)).transpose()?,
        password_hash: None,
        user_name: None,
        scim_resource: None,
        role: body.role.as_deref().map(role).transpose()?.unwrap_or_default(),
        created_via: Origin::Admin,
    };
    let password = body.password.as_deref().map(password).transpose()?;
    require_org(state, org_id).await?;
    if password.is_some() {
        refuse_local_password_if_external(state, org_id).await?;
    }
    let new = NewUser {
        password_hash: match password {
            Some(p) => Some(state.passwords().hash(p).await?),
            None => None,
        },
        ..new
    };
    let detail = json!({ "has_password": password.is_some(), "role": new.role.as_str() });
    let event = NewAuditEvent::change(org_id, "user_created", None, detail).by(actor.to_string());
    let user = match state.store().create_user_audited(&new, Some(&event), state.clock().now()).await {
        Err(StoreError::NotFound) => return Err(ApiError::NotFound("organization")),
        other => other?,
    };
    tracing::info!(%org_id, user_id = %user.id, "user created");
    Ok(user)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateUser {
    pub email: Option<String>,
    pub display_name: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub external_id: Option<Option<String>>,
    /// `false` revokes every session of the user at once.
    pub active: Option<bool>,
    /// A new local password; `null` removes it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub password: Option<Option<String>>,
    /// `member` or `admin`.
    pub role: Option<String>,
}

/// Changes a user, as an admin does.
pub(crate) async fn update_user(
    state: &AppState,
    actor: &Actor,
    org_id: OrgId,
    user_id: UserId,
    body: UpdateUser,
) -> Result<User, ApiError> {
    let mut update = UserUpdate {
        email: body.email.as_deref().map(email).transpose()?.map(Some),
        display_name: body.display_name.as_deref().map(|d| text("display_name", d, 0, 200)).transpose()?,
        external_id: body
            .external_id
            .map(|e| e.as_deref().map(|e| text("external_id", e, 1, 256)).transpose())
            .transpose()?,
        active: body.active,
        password_hash: None,
        role: body.role.as_deref().map(role).transpose()?,
        ..Default::default()
    };
    let new_password = match &body.password {
        Some(Some(p)) => Some(password(p)?),
        _ => None,
    };
    let current = require_user(state, org_id, user_id).await?;
    if new_password.is_some() {
        refuse_local_password_if_external(state, org_id).await?;
        // A password is typed beside an email; without one it could never
        // be used.
        if current.email.is_none() && update.email.is_none() {
            return Err(ApiError::Conflict(
                "the user has no email address, so cannot sign in with a password; \
                 they sign in through their organization's identity provider"
                    .into(),
            ));
        }
    }
    update.password_hash = match (&body.password, new_password) {
        (Some(_), Some(p)) => Some(Some(state.passwords().hash(p).await?)),
        (Some(None), _) => Some(None),
        _ => None,
    };
    let user = state.store().update_user(user_id, &update, state.clock().now()).await?;
    // Which fields changed, never their values (one is a password).
    let fields: Vec<&str> = [
        ("email", update.email.is_some()),
        ("display_name", update.display_name.is_some()),
        ("external_id", update.external_id.is_some()),
        ("active", update.active.is_some()),
        ("password", update.password_hash.is_some()),
        ("role", update.role.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect();
    let mut detail = json!({ "fields": fields });
    if let Some(active) = update.active {
        detail["active"] = active.into();
    }
    if let Some(role) = update.role {
        detail["role"] = role.as_str().into();
    }
    audit::change(state, actor, org_id, Change::new("user_updated", detail).user(user_id)).await?;
    if update.active == Some(false) {
        tracing::info!(%org_id, %user_id, "user deactivated; sessions revoked");
    }
    Ok(user)
}

/// Deletes a user, as an admin does; their sessions go with them.
pub(crate) async fn delete_user(
    state: &AppState,
    actor: &Actor,
    org_id: OrgId,
    user_id: UserId,
) -> Result<(), ApiError> {
    require_user(state, org_id, user_id).await?;
    state.store().delete_user(user_id).await?;
    audit::change(state, actor, org_id, Change::new("user_deleted", json!({})).user(user_id)).await?;
    tracing::info!(%org_id, %user_id, "user deleted; sessions revoked");
    Ok(())
}
