//! `/admin/v1/orgs/{id}/portal-links`: setup links, with which a customer's
//! IT admin who has no account yet (or whose organization a bad
//! configuration has locked out) reaches that one organization's portal.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use gatehouse_core::OrgId;
use gatehouse_store::PortalLink;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, PlatformAdmin, parse_json};
use crate::portal_access;
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/orgs/{org_id}/portal-links", get(list_links).post(create_link))
        .route("/admin/v1/orgs/{org_id}/portal-links/{link_id}", delete(revoke_link))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateLink {
    /// How long the link works, in hours [default: 168, at most 720].
    pub ttl_hours: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LinkView {
    pub id: String,
    #[schema(value_type = uuid::Uuid)]
    pub org_id: OrgId,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Only when the link is created: the address to hand to the
    /// customer's IT admin. It is not stored and cannot be shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl From<PortalLink> for LinkView {
    fn from(l: PortalLink) -> Self {
        Self {
            id: l.id,
            org_id: l.org_id,
            created_by: l.created_by,
            created_at: l.created_at,
            expires_at: l.expires_at,
            revoked_at: l.revoked_at,
            url: None,
        }
    }
}

#[utoipa::path(post, path = "/admin/v1/orgs/{org_id}/portal-links", tag = "admin", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path)), request_body = CreateLink,
    responses((status = 201, body = LinkView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn create_link(
    PlatformAdmin(actor): PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<LinkView>), ApiError> {
    // The body is optional: no body, or `{}`, takes the defaults.
    let body: CreateLink =
        if body.iter().all(u8::is_ascii_whitespace) { CreateLink::default() } else { parse_json(&body)? };
    let ttl = body.ttl_hours.map(|h| Duration::hours(h.into()));
    let (link, token) = portal_access::create_link(&state, &actor, org_id, ttl).await?;
    let url = portal_access::link_url(&state, &token);
    Ok((StatusCode::CREATED, Json(LinkView { url: Some(url), ..link.into() })))
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org_id}/portal-links", tag = "admin", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path)),
    responses((status = 200, body = Vec<LinkView>), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_links(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<Json<Vec<LinkView>>, ApiError> {
    let links = portal_access::list_links(&state, org_id).await?;
    Ok(Json(links.into_iter().map(Into::into).collect()))
}

#[utoipa::path(delete, path = "/admin/v1/orgs/{org_id}/portal-links/{link_id}", tag = "admin",
    security(("admin_token" = [])), params(("org_id" = uuid::Uuid, Path), ("link_id" = String, Path)),
    responses((status = 204, description = "Revoked; the portal sessions it opened have ended"),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_link(
    PlatformAdmin(actor): PlatformAdmin,
    State(state): State<AppState>,
    ApiPath((org_id, link_id)): ApiPath<(OrgId, String)>,
) -> Result<StatusCode, ApiError> {
    portal_access::revoke_link(&state, &actor, org_id, &link_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
