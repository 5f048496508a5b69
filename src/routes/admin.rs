//! `/admin/v1`: organizations, users and the audit trail, for platform admins.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use gatehouse_core::{Email, OrgId, Organization, User, UserId};
use gatehouse_store::{
    AuditEvent, AuditFilter, NewAuditEvent, NewUser, OrgScope, OrgUpdate, StoreError, UserUpdate,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::audit::{self, Change};
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
        .route("/admin/v1/audit-events", get(list_platform_audit_events))
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
    PlatformAdmin(actor): PlatformAdmin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateOrg>,
) -> Result<(StatusCode, Json<OrgView>), ApiError> {
    let name = text("name", &body.name, 1, 200)?;
    let org = state.store().create_org(&name, body.enterprise_toolkit, state.clock().now()).await?;
    let detail = json!({ "name": org.name, "enterprise_toolkit": org.enterprise_toolkit });
    audit::change(&state, &actor, org.id, Change::new("org_created", detail)).await?;
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
    PlatformAdmin(actor): PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
    ApiJson(body): ApiJson<UpdateOrg>,
) -> Result<Json<OrgView>, ApiError> {
    let update = OrgUpdate {
        name: body.name.as_deref().map(|n| text("name", n, 1, 200)).transpose()?,
        enterprise_toolkit: body.enterprise_toolkit,
    };
    let org = match state.store().update_org(org_id, &update, state.clock().now()).await {
        Err(StoreError::NotFound) => return Err(ApiError::NotFound("organization")),
        other => other?,
    };
    let mut detail = json!({});
    if update.name.is_some() {
        detail["name"] = org.name.clone().into();
    }
    if let Some(toolkit) = update.enterprise_toolkit {
        detail["enterprise_toolkit"] = toolkit.into();
    }
    audit::change(&state, &actor, org_id, Change::new("org_updated", detail)).await?;
    Ok(Json(org.into()))
}

#[utoipa::path(delete, path = "/admin/v1/orgs/{org_id}", tag = "admin", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path)),
    responses((status = 204, description = "Deleted, with its users and their sessions"), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_org(
    PlatformAdmin(actor): PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<StatusCode, ApiError> {
    match state.store().delete_org(org_id).await {
        Err(StoreError::NotFound) => Err(ApiError::NotFound("organization")),
        other => {
            other?;
            // The trail outlives the organization: events keep its id.
            audit::change(&state, &actor, org_id, Change::new("org_deleted", json!({}))).await?;
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
    PlatformAdmin(actor): PlatformAdmin,
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
    let event =
        NewAuditEvent::change(org_id, "user_created", None, json!({ "has_password": password.is_some() }))
            .by(actor.to_string());
    let user = match state.store().create_user_audited(&new, Some(&event), state.clock().now()).await {
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
    PlatformAdmin(actor): PlatformAdmin,
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
    // Which fields changed, never their values (one is a password).
    let fields: Vec<&str> = [
        ("email", update.email.is_some()),
        ("display_name", update.display_name.is_some()),
        ("external_id", update.external_id.is_some()),
        ("active", update.active.is_some()),
        ("password", update.password_hash.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect();
    let mut detail = json!({ "fields": fields });
    if let Some(active) = update.active {
        detail["active"] = active.into();
    }
    audit::change(&state, &actor, org_id, Change::new("user_updated", detail).user(user_id)).await?;
    if update.active == Some(false) {
        tracing::info!(%org_id, %user_id, "user deactivated; sessions revoked");
    }
    Ok(Json(user.into()))
}

#[utoipa::path(delete, path = "/admin/v1/orgs/{org_id}/users/{user_id}", tag = "admin", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path), ("user_id" = uuid::Uuid, Path)),
    responses((status = 204, description = "Deleted; every session of the user is gone"), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_user(
    PlatformAdmin(actor): PlatformAdmin,
    State(state): State<AppState>,
    ApiPath((org_id, user_id)): ApiPath<(OrgId, UserId)>,
) -> Result<StatusCode, ApiError> {
    require_user(&state, org_id, user_id).await?;
    state.store().delete_user(user_id).await?;
    audit::change(&state, &actor, org_id, Change::new("user_deleted", json!({})).user(user_id)).await?;
    tracing::info!(%org_id, %user_id, "user deleted; sessions revoked");
    Ok(StatusCode::NO_CONTENT)
}

// ---- audit ---------------------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditEventView {
    pub id: String,
    #[schema(value_type = Option<uuid::Uuid>)]
    pub org_id: Option<OrgId>,
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
    /// Who made the change (`admin:…`), for changes made by someone.
    pub actor: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<AuditEvent> for AuditEventView {
    fn from(e: AuditEvent) -> Self {
        Self {
            id: e.id,
            org_id: e.org_id,
            kind: e.kind,
            user_id: e.user_id,
            method: e.method,
            outcome: e.outcome,
            detail: e.detail,
            device_os: e.device_os,
            device_name: e.device_name,
            device_ip: e.device_ip,
            actor: e.actor,
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
    fn filter(&self, org: OrgScope) -> Result<AuditFilter, ApiError> {
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

    fn before(&self) -> Result<Option<String>, ApiError> {
        let before: Option<uuid::Uuid> = cursor(self.before.as_deref())
            .map_err(|_| ApiError::invalid("before", "is not a cursor from a previous page"))?;
        Ok(before.map(|b| b.to_string()))
    }
}

async fn audit_page(
    state: &AppState,
    q: &AuditQuery,
    org: OrgScope,
) -> Result<Page<AuditEventView>, ApiError> {
    let filter = q.filter(org)?;
    let page =
        state.store().list_audit_events(&filter, q.before()?.as_deref(), q.limit.unwrap_or(50)).await?;
    Ok(Page { items: page.events.into_iter().map(Into::into).collect(), next: page.next })
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org_id}/audit-events", tag = "admin", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path), AuditQuery),
    responses((status = 200, description = "Newest first", body = Page<AuditEventView>), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn list_audit_events(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Page<AuditEventView>>, ApiError> {
    if q.org_id.is_some() {
        return Err(ApiError::invalid("org_id", "is given by the path here"));
    }
    require_org(&state, org_id).await?;
    Ok(Json(audit_page(&state, &q, OrgScope::Only(org_id)).await?))
}

#[utoipa::path(get, path = "/admin/v1/audit-events", tag = "admin", security(("admin_token" = [])),
    params(AuditQuery),
    responses((status = 200, description = "Every organization's events and those of none, newest first", body = Page<AuditEventView>),
        (status = 400, body = ErrorBody)))]
pub(crate) async fn list_platform_audit_events(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Page<AuditEventView>>, ApiError> {
    let org = match q.org_id.as_deref() {
        None => OrgScope::Any,
        Some("none") => OrgScope::None,
        Some(id) => OrgScope::Only(
            id.parse().map_err(|_| ApiError::invalid("org_id", "is not an organization id or none"))?,
        ),
    };
    Ok(Json(audit_page(&state, &q, org).await?))
}
