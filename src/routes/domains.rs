//! `/admin/v1/orgs/{org_id}/domains`: the email domains an organization
//! owns, and `/admin/v1/domain-conflicts`, the users verification found in
//! another organization's domain. The rules are `crate::domains`'.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use gatehouse_core::{OrgId, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::directory::require_org;
use crate::domains::{self, DomainView, Proof};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, OptionalJson, PlatformAdmin};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/orgs/{org_id}/domains", get(list_domains).post(add_domain))
        .route("/admin/v1/orgs/{org_id}/domains/{domain}", get(get_domain).delete(delete_domain))
        .route("/admin/v1/orgs/{org_id}/domains/{domain}/verify", post(verify_domain))
        .route("/admin/v1/domain-conflicts", get(list_conflicts))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddDomain {
    /// Such as `example.com`; internationalized names are accepted and kept
    /// in their ASCII (`xn--`) form.
    pub domain: String,
}

#[utoipa::path(post, path = "/admin/v1/orgs/{org_id}/domains", tag = "domains", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path)), request_body = AddDomain,
    responses((status = 201, description = "Claimed; publish `challenge` in DNS, then verify", body = DomainView),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The organization has already claimed it", body = ErrorBody)))]
pub(crate) async fn add_domain(
    PlatformAdmin(actor): PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
    ApiJson(body): ApiJson<AddDomain>,
) -> Result<(StatusCode, Json<DomainView>), ApiError> {
    let claimed = domains::claim(&state, &actor, org_id, &body.domain).await?;
    Ok((StatusCode::CREATED, Json(claimed.into())))
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org_id}/domains", tag = "domains", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path)),
    responses((status = 200, body = Vec<DomainView>), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_domains(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<Json<Vec<DomainView>>, ApiError> {
    require_org(&state, org_id).await?;
    let claimed = state.store().list_domains(org_id).await?;
    Ok(Json(claimed.into_iter().map(Into::into).collect()))
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org_id}/domains/{domain}", tag = "domains", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path), ("domain" = String, Path)),
    responses((status = 200, body = DomainView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_domain(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath((org_id, domain)): ApiPath<(OrgId, String)>,
) -> Result<Json<DomainView>, ApiError> {
    let domain = domains::normalize(&domain)?;
    Ok(Json(domains::require(&state, org_id, &domain).await?.into()))
}

#[utoipa::path(delete, path = "/admin/v1/orgs/{org_id}/domains/{domain}", tag = "domains", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path), ("domain" = String, Path)),
    responses((status = 204, description = "The claim is gone; users already in the domain stay"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_domain(
    PlatformAdmin(actor): PlatformAdmin,
    State(state): State<AppState>,
    ApiPath((org_id, domain)): ApiPath<(OrgId, String)>,
) -> Result<StatusCode, ApiError> {
    let domain = domains::normalize(&domain)?;
    domains::remove(&state, &actor, org_id, &domain).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyDomain {
    /// `dns` (the default) looks the challenge up; `admin` marks the domain
    /// verified on the platform admin's word.
    #[serde(default)]
    pub method: Option<String>,
}

#[utoipa::path(post, path = "/admin/v1/orgs/{org_id}/domains/{domain}/verify", tag = "domains", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path), ("domain" = String, Path)), request_body(content = Option<VerifyDomain>),
    responses((status = 200, description = "Verified", body = DomainView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The challenge is not published, or another organization verified the domain", body = ErrorBody),
        (status = 503, description = "DNS could not be asked; try again", body = ErrorBody)))]
pub(crate) async fn verify_domain(
    PlatformAdmin(actor): PlatformAdmin,
    State(state): State<AppState>,
    ApiPath((org_id, domain)): ApiPath<(OrgId, String)>,
    OptionalJson(body): OptionalJson<VerifyDomain>,
) -> Result<Json<DomainView>, ApiError> {
    let domain = domains::normalize(&domain)?;
    let proof = match body.and_then(|b| b.method).as_deref() {
        None | Some("dns") => Proof::Dns,
        Some("admin") => Proof::Admin,
        Some(_) => return Err(ApiError::invalid("method", "must be dns or admin")),
    };
    Ok(Json(domains::verify(&state, &actor, org_id, &domain, proof).await?.into()))
}

/// A user whose address is in a domain another organization has verified.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConflictView {
    #[schema(value_type = uuid::Uuid)]
    pub user_id: UserId,
    /// The organization the user is in.
    #[schema(value_type = uuid::Uuid)]
    pub org_id: OrgId,
    pub email: String,
    pub domain: String,
    /// The organization that verified the domain.
    #[schema(value_type = uuid::Uuid)]
    pub owner_org_id: OrgId,
}

#[utoipa::path(get, path = "/admin/v1/domain-conflicts", tag = "domains", security(("admin_token" = [])),
    responses((status = 200, description = "At most 200, by domain", body = Vec<ConflictView>)))]
pub(crate) async fn list_conflicts(
    _: PlatformAdmin,
    State(state): State<AppState>,
) -> Result<Json<Vec<ConflictView>>, ApiError> {
    let conflicts = state.store().domain_conflicts(200).await?;
    Ok(Json(
        conflicts
            .into_iter()
            .map(|c| ConflictView {
                user_id: c.user_id,
                org_id: c.user_org_id,
                email: c.email,
                domain: c.domain,
                owner_org_id: c.owner_org_id,
            })
            .collect(),
    ))
}
