//! `/admin/v1`: organizations, users and the audit trail, for platform admins.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use gatehouse_core::{Email, OrgId, Organization, User, UserId};
use gatehouse_store::{AuditEvent, NewUser, OrgUpdate, StoreError, UserUpdate};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::directory::{UserView, require_org};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, PlatformAdmin};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/orgs", get(list_orgs).post(create_org))
        .route("/admin/v1/orgs/{org_id}", get(get_org).patch(update_org).delete(delete_org))
        .route("/admin/v1/orgs/{org_id}/users", get(list_users).post(create_user))
        .route(
            "/admin/v1/orgs/{org_id}/users/{user_id}",
            get(get_user).patch(update_user).delete(delete_user),
        )
        .route("/admin/v1/orgs/{org_id}/audit-events", get(list_audit_events))
}

// ---- views -----------------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OrgView {
    #[schema(value_type = uuid::Uuid)]
    pub id: OrgId,
    pub name: String,
    /// The Enterprise ToolKit entitlement (Okta, Azure AD, Ping).
    pub enterprise_toolkit: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Organization> for OrgView {
    fn from(o: Organization) -> Self {
        Self {
            id: o.id,
            name: o.name,
            enterprise_toolkit: o.enterprise_toolkit,
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` (or `before` for audit events) to get the next page;
    /// null on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Page size, 1 to 200 [default: 50].
    pub limit: Option<u32>,
    /// The `next` value of the previous page.
    pub after: Option<String>,
}

// ---- validation -------------------------------------------------------------

fn text(field: &str, value: &str, min: usize, max: usize) -> Result<String, ApiError> {
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

fn email(value: &str) -> Result<Email, ApiError> {
    Email::parse(value).map_err(|e| ApiError::invalid("email", e.to_string()))
}

/// Local passwords: 8 to 1024 bytes. The upper bound keeps hashing cost flat.
fn password(value: &str) -> Result<&str, ApiError> {
    match value.len() {
        0..8 => Err(ApiError::invalid("password", "must be at least 8 characters")),
        1025.. => Err(ApiError::invalid("password", "must be at most 1024 bytes")),
        _ => Ok(value),
    }
}

fn cursor<T: std::str::FromStr>(after: Option<&str>) -> Result<Option<T>, ApiError> {
    after
        .map(|a| a.parse().map_err(|_| ApiError::invalid("after", "is not a cursor from a previous page")))
        .transpose()
}

/// Distinguishes an absent field (`None`) from an explicit `null`
/// (`Some(None)`) in PATCH bodies.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// With external authentication on, the organization's users have no stored
/// password, and none can be set.
async fn refuse_local_password_if_external(state: &AppState, org: OrgId) -> Result<(), ApiError> {
    if state.store().rest_auth(org).await?.is_some() {
        return Err(ApiError::Conflict(
            "the organization signs in through its external authentication service; its users have no local password"
                .into(),
        ));
    }
    Ok(())
}

/// The user, if it belongs to the organization in the path.
async fn require_user(state: &AppState, org: OrgId, id: UserId) -> Result<User, ApiError> {
    match state.store().get_user(id).await {
        Ok(u) if u.org_id == org => Ok(u),
        Ok(_) | Err(StoreError::NotFound) => Err(ApiError::NotFound("user")),
        Err(e) => Err(e.into()),
    }
}

// ---- organizations ------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateOrg {
    pub name: String,
    #[serde(default)]
    pub enterprise_toolkit: bool,
}

#[utoipa::path(post, path = "/admin/v1/orgs", tag = "admin", security(("admin_token" = [])),
    request_body = CreateOrg,
    responses((status = 201, body = OrgView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn create_org(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateOrg>,
) -> Result<(StatusCode, Json<OrgView>), ApiError> {
    let name = text("name", &body.name, 1, 200)?;
    let org = state.store().create_org(&name, body.enterprise_toolkit, state.clock().now()).await?;
    tracing::info!(org_id = %org.id, "organization created");
    Ok((StatusCode::CREATED, Json(org.into())))
}

#[utoipa::path(get, path = "/admin/v1/orgs", tag = "admin", security(("admin_token" = [])), params(PageQuery),
    responses((status = 200, body = Page<OrgView>), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_orgs(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<OrgView>>, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    let orgs = state.store().list_orgs(cursor(q.after.as_deref())?, limit).await?;
    let next = (orgs.len() == limit as usize).then(|| orgs.last().map(|o| o.id.to_string())).flatten();
    Ok(Json(Page { items: orgs.into_iter().map(Into::into).collect(), next }))
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org_id}", tag = "admin", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path)),
    responses((status = 200, body = OrgView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_org(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<Json<OrgView>, ApiError> {
    Ok(Json(require_org(&state, org_id).await?.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateOrg {
    pub name: Option<String>,
    pub enterprise_toolkit: Option<bool>,
}

#[utoipa::path(patch, path = "/admin/v1/orgs/{org_id}", tag = "admin", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path)), request_body = UpdateOrg,
    responses((status = 200, body = OrgView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn update_org(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
    ApiJson(body): ApiJson<UpdateOrg>,
) -> Result<Json<OrgView>, ApiError> {
    let update = OrgUpdate {
        name: body.name.as_deref().map(|n| text("name", n, 1, 200)).transpose()?,
        enterprise_toolkit: body.enterprise_toolkit,
    };
    match state.store().update_org(org_id, &update, state.clock().now()).await {
        Err(StoreError::NotFound) => Err(ApiError::NotFound("organization")),
        other => Ok(Json(other?.into())),
    }
}

#[utoipa::path(delete, path = "/admin/v1/orgs/{org_id}", tag = "admin", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path)),
    responses((status = 204, description = "Deleted, with its users and their sessions"), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_org(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<StatusCode, ApiError> {
    match state.store().delete_org(org_id).await {
        Err(StoreError::NotFound) => Err(ApiError::NotFound("organization")),
        other => {
            other?;
            tracing::info!(%org_id, "organization deleted");
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

// ---- users -------------------------------------------------------------------

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
}

#[utoipa::path(post, path = "/admin/v1/orgs/{org_id}/users", tag = "admin", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path)), request_body = CreateUser,
    responses((status = 201, body = UserView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn create_user(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let new = NewUser {
        active: true,
        org_id,
        email: email(&body.email)?,
        display_name: text("display_name", body.display_name.as_deref().unwrap_or(""), 0, 200)?,
        external_id: body.external_id.as_deref().map(|e| text("external_id", e, 1, 256)).transpose()?,
        password_hash: None,
        user_name: None,
        scim_resource: None,
    };
    let password = body.password.as_deref().map(password).transpose()?;
    require_org(&state, org_id).await?;
    if password.is_some() {
        refuse_local_password_if_external(&state, org_id).await?;
    }
    let new = NewUser {
        password_hash: match password {
            Some(p) => Some(state.passwords().hash(p).await?),
            None => None,
        },
        ..new
    };
    let user = match state.store().create_user(&new, state.clock().now()).await {
        Err(StoreError::NotFound) => return Err(ApiError::NotFound("organization")),
        other => other?,
    };
    tracing::info!(%org_id, user_id = %user.id, "user created");
    Ok((StatusCode::CREATED, Json(user.into())))
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org_id}/users", tag = "admin", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path), PageQuery),
    responses((status = 200, body = Page<UserView>), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_users(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<UserView>>, ApiError> {
    require_org(&state, org_id).await?;
    let page = state.store().list_users(org_id, cursor(q.after.as_deref())?, q.limit.unwrap_or(50)).await?;
    Ok(Json(Page {
        items: page.users.into_iter().map(Into::into).collect(),
        next: page.next.map(|n| n.to_string()),
    }))
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org_id}/users/{user_id}", tag = "admin", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path), ("user_id" = uuid::Uuid, Path)),
    responses((status = 200, body = UserView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_user(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath((org_id, user_id)): ApiPath<(OrgId, UserId)>,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(require_user(&state, org_id, user_id).await?.into()))
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
}

#[utoipa::path(patch, path = "/admin/v1/orgs/{org_id}/users/{user_id}", tag = "admin", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path), ("user_id" = uuid::Uuid, Path)), request_body = UpdateUser,
    responses((status = 200, body = UserView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn update_user(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath((org_id, user_id)): ApiPath<(OrgId, UserId)>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<Json<UserView>, ApiError> {
    let mut update = UserUpdate {
        email: body.email.as_deref().map(email).transpose()?,
        display_name: body.display_name.as_deref().map(|d| text("display_name", d, 0, 200)).transpose()?,
        external_id: body
            .external_id
            .map(|e| e.as_deref().map(|e| text("external_id", e, 1, 256)).transpose())
            .transpose()?,
        active: body.active,
        password_hash: None,
        ..Default::default()
    };
    let new_password = match &body.password {
        Some(Some(p)) => Some(password(p)?),
        _ => None,
    };
    require_user(&state, org_id, user_id).await?;
    if new_password.is_some() {
        refuse_local_password_if_external(&state, org_id).await?;
    }
    update.password_hash = match (&body.password, new_password) {
        (Some(_), Some(p)) => Some(Some(state.passwords().hash(p).await?)),
        (Some(None), _) => Some(None),
        _ => None,
    };
    let user = state.store().update_user(user_id, &update, state.clock().now()).await?;
    if update.active == Some(false) {
        tracing::info!(%org_id, %user_id, "user deactivated; sessions revoked");
    }
    Ok(Json(user.into()))
}

#[utoipa::path(delete, path = "/admin/v1/orgs/{org_id}/users/{user_id}", tag = "admin", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path), ("user_id" = uuid::Uuid, Path)),
    responses((status = 204, description = "Deleted; every session of the user is gone"), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_user(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath((org_id, user_id)): ApiPath<(OrgId, UserId)>,
) -> Result<StatusCode, ApiError> {
    require_user(&state, org_id, user_id).await?;
    state.store().delete_user(user_id).await?;
    tracing::info!(%org_id, %user_id, "user deleted; sessions revoked");
    Ok(StatusCode::NO_CONTENT)
}

// ---- audit ---------------------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditEventView {
    pub id: String,
    pub kind: String,
    #[schema(value_type = Option<uuid::Uuid>)]
    pub user_id: Option<UserId>,
    pub method: Option<String>,
    pub outcome: String,
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
    pub device_os: Option<String>,
    pub device_name: Option<String>,
    pub device_ip: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<AuditEvent> for AuditEventView {
    fn from(e: AuditEvent) -> Self {
        Self {
            id: e.id,
            kind: e.kind,
            user_id: e.user_id,
            method: e.method,
            outcome: e.outcome,
            detail: e.detail,
            device_os: e.device_os,
            device_name: e.device_name,
            device_ip: e.device_ip,
            created_at: e.created_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Page size, 1 to 200 [default: 50].
    pub limit: Option<u32>,
    /// The `next` value of the previous page: events older than it.
    pub before: Option<String>,
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org_id}/audit-events", tag = "admin", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path), AuditQuery),
    responses((status = 200, description = "Newest first", body = Page<AuditEventView>), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_audit_events(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Page<AuditEventView>>, ApiError> {
    require_org(&state, org_id).await?;
    let before: Option<uuid::Uuid> = cursor(q.before.as_deref())
        .map_err(|_| ApiError::invalid("before", "is not a cursor from a previous page"))?;
    let before = before.map(|b| b.to_string());
    let page = state.store().list_audit_events(org_id, before.as_deref(), q.limit.unwrap_or(50)).await?;
    Ok(Json(Page { items: page.events.into_iter().map(Into::into).collect(), next: page.next }))
}
