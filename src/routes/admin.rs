//! `/admin/v1`: organizations, users and the audit trail, for platform admins.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use gatehouse_core::{OrgId, Organization, UserId};
use gatehouse_store::{AuditEvent, OrgScope, OrgUpdate, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::audit::{self, AuditQuery, Change};
use crate::directory::{self, CreateUser, UpdateUser, UserView, require_org, require_user, text};
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

fn cursor<T: std::str::FromStr>(after: Option<&str>) -> Result<Option<T>, ApiError> {
    after
        .map(|a| a.parse().map_err(|_| ApiError::invalid("after", "is not a cursor from a previous page")))
        .transpose()
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
    let user = directory::create_user(&state, &actor, org_id, body).await?;
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
    let user = directory::update_user(&state, &actor, org_id, user_id, body).await?;
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
    directory::delete_user(&state, &actor, org_id, user_id).await?;
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
