//! SCIM 2.0 for Okta and Entra ID: `/scim/v2/…` (also `/scim/…`), one base
//! URL for every organization; the bearer token says which organization.
//!
//! Resource names match in any case, trailing and doubled slashes and
//! unknown query parameters (Entra's `aadOptscim062020`) are tolerated, bodies
//! may be `application/scim+json` or `application/json`, and every answer is
//! `application/scim+json`, errors included (RFC 7644 §3.12).

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use gatehouse_core::{OrgId, Origin, Role, User, UserId};
use gatehouse_scim::ScimError;
use gatehouse_scim::filter::get_ci;
use gatehouse_scim::filter::{self, Filter};
use gatehouse_store::{NewAuditEvent, NewUser, ScimTokenRecord, StoreError, UserUpdate, UserWindow};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::configure;
use crate::directory::require_org;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ClientIp, PlatformAdmin, bearer};
use crate::scim::{self, UserFields};
use crate::state::AppState;
use crate::throttle::{Action, Concerning, Tally, Throttle};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/orgs/{org_id}/scim-tokens", get(list_tokens).post(create_token))
        .route("/admin/v1/orgs/{org_id}/scim-tokens/{token_id}", delete(revoke_token))
        // Bulk requests may be larger than any other (maxPayloadSize), under
        // whatever spelling of their path; `handle` holds every other SCIM
        // request to the service's usual limit.
        .route("/scim", any(dispatch).layer(DefaultBodyLimit::max(scim::BULK_MAX_PAYLOAD)))
        .route("/scim/", any(dispatch).layer(DefaultBodyLimit::max(scim::BULK_MAX_PAYLOAD)))
        .route("/scim/{*rest}", any(dispatch).layer(DefaultBodyLimit::max(scim::BULK_MAX_PAYLOAD)))
}

// ---- tokens (admin API) ----------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Idp {
    Okta,
    AzureAd,
    /// PingFederate's SCIM Provisioner, or PingOne's.
    Ping,
    Generic,
}

impl Idp {
    fn as_str(self) -> &'static str {
        match self {
            Self::Okta => "okta",
            Self::AzureAd => "azure_ad",
            Self::Ping => "ping",
            Self::Generic => "generic",
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateToken {
    pub(crate) label: String,
    pub(crate) idp: Idp,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct TokenView {
    pub(crate) id: String,
    pub(crate) label: String,
    pub(crate) idp: String,
    pub(crate) created_at: DateTime<Utc>,
    /// Only in the answer to its creation; stored as a hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) token: Option<String>,
}

impl From<ScimTokenRecord> for TokenView {
    fn from(t: ScimTokenRecord) -> Self {
        Self { id: t.id, label: t.label, idp: t.idp, created_at: t.created_at, token: None }
    }
}

#[utoipa::path(post, path = "/admin/v1/orgs/{org_id}/scim-tokens", tag = "scim", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path)), request_body = CreateToken,
    responses((status = 201, body = TokenView), (status = 400, body = ErrorBody),
        (status = 403, description = "SCIM provisioning needs the Enterprise ToolKit", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn create_token(
    PlatformAdmin(actor): PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<TokenView>), ApiError> {
    let (record, token) =
        configure::mint_scim_token(&state, &actor, org_id, &body.label, body.idp.as_str()).await?;
    let mut view = TokenView::from(record);
    view.token = Some(token);
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org_id}/scim-tokens", tag = "scim", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path)), responses((status = 200, body = Vec<TokenView>), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_tokens(
    _: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    require_org(&state, org_id).await?;
    let tokens = state.store().list_scim_tokens(org_id, 200).await?;
    Ok(Json(tokens.into_iter().map(Into::into).collect()))
}

#[utoipa::path(delete, path = "/admin/v1/orgs/{org_id}/scim-tokens/{token_id}", tag = "scim", security(("admin_token" = [])),
    params(("org_id" = uuid::Uuid, Path), ("token_id" = String, Path)),
    responses((status = 204, description = "Revoked"), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_token(
    PlatformAdmin(actor): PlatformAdmin,
    State(state): State<AppState>,
    ApiPath((org_id, token_id)): ApiPath<(OrgId, String)>,
) -> Result<StatusCode, ApiError> {
    configure::revoke_scim_token(&state, &actor, org_id, &token_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- the SCIM endpoint --------------------------------------------------------------

struct ScimReply {
    status: StatusCode,
    body: Option<Value>,
    etag: Option<String>,
    location: Option<String>,
}

impl ScimReply {
    fn ok(body: Value) -> Self {
        Self { status: StatusCode::OK, body: Some(body), etag: None, location: None }
    }
}

fn scim_response(result: Result<ScimReply, ScimError>) -> Response {
    let mut retry_after = None;
    let reply = match result {
        Ok(r) => r,
        Err(e) => {
            retry_after = e.retry_after;
            ScimReply {
                status: StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                body: Some(e.body()),
                etag: None,
                location: None,
            }
        }
    };
    let mut response = match reply.body {
        Some(body) => (reply.status, body.to_string()).into_response(),
        None => reply.status.into_response(),
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/scim+json"));
    let retry_after = retry_after.map(|s| s.to_string());
    for (name, value) in
        [(header::ETAG, reply.etag), (header::LOCATION, reply.location), (header::RETRY_AFTER, retry_after)]
    {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(name, v);
        }
    }
    response
}

/// Storage errors as SCIM errors.
trait OrScim<T> {
    fn scim(self) -> Result<T, ScimError>;
}

impl<T> OrScim<T> for Result<T, StoreError> {
    fn scim(self) -> Result<T, ScimError> {
        self.map_err(|e| match e {
            StoreError::NotFound => ScimError::not_found("resource not found"),
            StoreError::Conflict(what) => ScimError::uniqueness(format!("{what} already exists")),
            // Not a duplicate: no scimType, so that an IdP does not go
            // looking for a user to link to; the detail says why.
            StoreError::DomainOwned(domain) => ScimError::new(
                409,
                None,
                format!("the address is in {domain}, a domain another organization has verified"),
            ),
            StoreError::UnknownReference(what) => {
                ScimError::invalid_value(format!("{what} is not a user of this organization"))
            }
            StoreError::VersionMismatch => {
                ScimError::precondition_failed("the resource was changed; read it again")
            }
            e if e.is_unavailable() => {
                tracing::warn!(cause = %e, "the database is unavailable");
                ScimError::unavailable(
                    "the service cannot reach its database",
                    crate::error::DATABASE_RETRY_AFTER,
                )
            }
            other => {
                tracing::error!(cause = %other, "SCIM request failed");
                ScimError::new(500, None, "something went wrong")
            }
        })
    }
}

/// The organization (and token) a SCIM call acts for.
#[derive(Clone)]
struct Caller {
    org: OrgId,
    token: ScimTokenRecord,
}

async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, ScimError> {
    let token = bearer(headers).ok_or_else(|| ScimError::unauthorized("a SCIM bearer token is required"))?;
    let (record, enterprise_toolkit) = state
        .store()
        .find_scim_token(&gatehouse_session::hash_opaque_token(token))
        .await
        .scim()?
        .ok_or_else(|| ScimError::unauthorized("the SCIM bearer token is not valid"))?;
    if !enterprise_toolkit {
        return Err(ScimError::new(403, None, "the organization's Enterprise ToolKit entitlement has ended"));
    }
    Ok(Caller { org: record.org_id, token: record })
}

fn query_params(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
        })
        .unwrap_or_default()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ScimError> {
    let content_type =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime != "application/json" && mime != "application/scim+json" {
        return Err(ScimError::new(415, None, "send application/scim+json or application/json"));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ScimError::invalid_syntax(format!("the body is not valid JSON: {e}")))?;
    if holds_nul(&value) {
        return Err(ScimError::invalid_value(
            "a value holds a NUL character (\\u0000), which cannot be stored",
        ));
    }
    // SCIM 1.x named its schemas urn:scim:schemas:…; 2.0 has urn:ietf:params:scim:….
    let schemas = gatehouse_scim::filter::get_ci(&value, "schemas").and_then(Value::as_array);
    if let Some(old) = schemas.into_iter().flatten().filter_map(Value::as_str).find(|s| is_scim1_urn(s)) {
        return Err(ScimError::invalid_vers(format!(
            "{old:?} is a SCIM 1.x schema; this service speaks SCIM 2.0 (RFC 7643, RFC 7644)"
        )));
    }
    Ok(value)
}

/// Whether any string in `value`, or any name, holds a NUL: PostgreSQL's
/// text cannot, so storing one would fail on one backend and not the other.
/// (serde_json nests at most 128 levels deep, which bounds the recursion.)
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

fn is_scim1_urn(urn: &str) -> bool {
    urn.get(..17).is_some_and(|p| p.eq_ignore_ascii_case("urn:scim:schemas:"))
}

/// The version a path asks for, when it names one (`v1`, `v2`, `V2`…).
fn path_version(segment: &str) -> Option<&str> {
    let digits = segment.strip_prefix(['v', 'V'])?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')).then_some(digits)
}

async fn dispatch(
    State(state): State<AppState>,
    ip: ClientIp,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return scim_response(Err(ScimError::new(413, None, "the request is too large")));
        }
        Err(_) => return scim_response(Err(ScimError::invalid_syntax("the request body could not be read"))),
    };
    scim_response(handle(&state, ip, &method, &uri, &headers, &body).await)
}

/// The caller, or why not. Calls with a missing or unknown token count
/// against their address, and once it is blocked they are 429 instead of
/// 401; a valid token is never held up, so that an attacker sharing an
/// IdP's outbound address cannot stop its provisioning.
async fn caller(state: &AppState, ip: ClientIp, headers: &HeaderMap) -> Result<Caller, ScimError> {
    let refused = match authenticate(state, headers).await {
        Err(e) if e.status == 401 => e,
        other => return other,
    };
    let throttle = Throttle::new(state, Action::ScimAuth, None, ip.0);
    let device = gatehouse_core::Device { os: None, name: None, ip: ip.0 };
    let counted = match throttle.check(state).await {
        Ok(_) => throttle.count(state, Concerning::default(), &device).await,
        Err(blocked) => Err(blocked),
    };
    match counted {
        Ok(Tally::Tripped { retry_after }) => Err(ScimError::too_many_requests(retry_after)),
        Ok(_) => Err(refused),
        Err(ApiError::TooManyRequests { retry_after }) => Err(ScimError::too_many_requests(retry_after)),
        Err(ApiError::Unavailable { retry_after, .. }) => {
            Err(ScimError::unavailable("the service cannot reach its database", retry_after))
        }
        Err(other) => {
            tracing::error!(error = ?other, "SCIM authentication failed");
            Err(ScimError::new(500, None, "something went wrong"))
        }
    }
}

async fn handle(
    state: &AppState,
    ip: ClientIp,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<ScimReply, ScimError> {
    let mut segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).skip(1).collect();
    let version = segments.first().copied().and_then(path_version);
    if version.is_some() {
        segments.remove(0);
    }
    let is_bulk = segments.len() == 1 && segments[0].eq_ignore_ascii_case("bulk");
    // Refused before any other work, as the service's body limit refuses
    // every other route's.
    let limit = if is_bulk { scim::BULK_MAX_PAYLOAD } else { crate::BODY_LIMIT };
    if body.len() > limit {
        return Err(ScimError::new(413, None, format!("the request is too large: at most {limit} bytes")));
    }
    let caller = caller(state, ip, headers).await?;
    if let Some(other) = version.filter(|v| !matches!(*v, "2" | "2.0")) {
        return Err(ScimError::invalid_vers(format!(
            "SCIM {other} is not spoken here, only 2.0: use {}/scim/v2",
            state.issuer()
        )));
    }
    if is_bulk {
        return match *method {
            Method::POST => bulk(state, &caller, headers, body).await,
            _ => Err(ScimError::new(405, None, format!("{method} is not supported here"))),
        };
    }
    route(state, &caller, method, &segments, &query_params(uri), headers, body).await
}

/// One SCIM request for `caller`, by its path's segments after the base.
async fn route(
    state: &AppState,
    caller: &Caller,
    method: &Method,
    segments: &[&str],
    params: &[(String, String)],
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<ScimReply, ScimError> {
    let base = format!("{}/scim/v2", state.issuer());
    let (caller, params) = (caller.clone(), params.to_vec());
    let resource = segments.first().map(|s| s.to_ascii_lowercase()).unwrap_or_default();
    let id = segments.get(1).copied();
    if segments.len() > 2 {
        return Err(ScimError::not_found("no such SCIM endpoint"));
    }
    match (method.clone(), resource.as_str(), id) {
        (Method::POST, "users", Some(".search")) => {
            list_users(state, &caller, &search_params(&parse_body(headers, body)?)?, &base).await
        }
        (Method::POST, "groups", Some(".search")) => {
            list_groups(state, &caller, &search_params(&parse_body(headers, body)?)?, &base).await
        }
        (Method::POST, ".search", None) => {
            search_everything(state, &caller, &search_params(&parse_body(headers, body)?)?, &base).await
        }
        (Method::GET, "users", None) => list_users(state, &caller, &params, &base).await,
        (Method::POST, "users", None) => {
            create_user(state, &caller, &parse_body(headers, body)?, &base).await
        }
        (Method::GET, "users", Some(id)) => {
            let user = find_user(state, &caller, id).await?;
            let etag = scim::etag(user.version);
            if unchanged(headers, &etag) {
                return Ok(not_modified(etag));
            }
            let resource = scim::project(
                scim::user_resource(&user, &base),
                param(&params, "attributes"),
                param(&params, "excludedAttributes"),
            );
            Ok(ScimReply { etag: Some(etag), ..ScimReply::ok(resource) })
        }
        (Method::PUT, "users", Some(id)) => {
            let user = find_user(state, &caller, id).await?;
            check_version(headers, user.version)?;
            let fields = scim::user_fields(&parse_body(headers, body)?)?;
            save_user(state, &caller, &user, fields, "scim_user_replaced", &base).await
        }
        (Method::PATCH, "users", Some(id)) => {
            patch_user(state, &caller, headers, &parse_body(headers, body)?, id, &base).await
        }
        (Method::DELETE, "users", Some(id)) => {
            let user = find_user(state, &caller, id).await?;
            check_version(headers, user.version)?;
            // Deleted for good: a sign-in does not bring the user back
            // (see the store's tombstones).
            state.store().delete_user_tombstoned(user.id, state.clock().now()).await.scim()?;
            audit(state, provisioning_event(&caller, "scim_user_deleted", Some(&user), json!({}))).await?;
            Ok(ScimReply { status: StatusCode::NO_CONTENT, body: None, etag: None, location: None })
        }
        (Method::GET, "groups", None) => list_groups(state, &caller, &params, &base).await,
        (Method::POST, "groups", None) => {
            let fields = scim::group_fields(&parse_body(headers, body)?)?;
            let group = state.store().create_group(caller.org, &fields, state.clock().now()).await.scim()?;
            audit(
                state,
                provisioning_event(&caller, "scim_group_created", None, json!({ "group": group.id })),
            )
            .await?;
            let resource = scim::group_resource(&group, &base);
            Ok(ScimReply {
                status: StatusCode::CREATED,
                location: resource["meta"]["location"].as_str().map(str::to_owned),
                etag: Some(scim::etag(group.version)),
                body: Some(resource),
            })
        }
        (Method::GET, "groups", Some(id)) => {
            let (attributes, excluded) = (param(&params, "attributes"), param(&params, "excludedAttributes"));
            let group = if scim::shows_members(attributes, excluded) {
                state.store().get_group(caller.org, id).await.scim()?
            } else {
                state.store().get_group_head(caller.org, id).await.scim()?
            };
            if unchanged(headers, &scim::etag(group.version)) {
                return Ok(not_modified(scim::etag(group.version)));
            }
            let resource = scim::project(
                scim::group_resource(&group, &base),
                param(&params, "attributes"),
                param(&params, "excludedAttributes"),
            );
            Ok(ScimReply { etag: Some(scim::etag(group.version)), ..ScimReply::ok(resource) })
        }
        (Method::PUT, "groups", Some(id)) => {
            let replacement = parse_body(headers, body)?;
            let group =
                modify_group(state, &caller, headers, id, |_| scim::group_fields(&replacement)).await?;
            let resource = scim::project(
                scim::group_resource(&group, &base),
                None,
                param(&params, "excludedAttributes"),
            );
            Ok(ScimReply { etag: Some(scim::etag(group.version)), ..ScimReply::ok(resource) })
        }
        (Method::PATCH, "groups", Some(id)) => {
            let patch = parse_body(headers, body)?;
            if let Some((add, remove)) = scim::member_changes(&patch) {
                let group = change_members(state, &caller, headers, id, &add, &remove).await?;
                return Ok(ScimReply {
                    status: StatusCode::NO_CONTENT,
                    body: None,
                    etag: Some(scim::etag(group.version)),
                    location: None,
                });
            }
            let group = modify_group(state, &caller, headers, id, |current| {
                let patched =
                    gatehouse_scim::patch::apply(&scim::group_resource(current, &base), &patch, false)?;
                scim::group_fields(&patched)
            })
            .await?;
            // Entra prefers no body (and no member list) here; Okta takes either.
            Ok(ScimReply {
                status: StatusCode::NO_CONTENT,
                body: None,
                etag: Some(scim::etag(group.version)),
                location: None,
            })
        }
        (Method::DELETE, "groups", Some(id)) => {
            let group = state.store().get_group(caller.org, id).await.scim()?;
            check_version(headers, group.version)?;
            state.store().delete_group(caller.org, id).await.scim()?;
            audit(state, provisioning_event(&caller, "scim_group_deleted", None, json!({ "group": id })))
                .await?;
            Ok(ScimReply { status: StatusCode::NO_CONTENT, body: None, etag: None, location: None })
        }
        (Method::GET, "serviceproviderconfig", None) => {
            Ok(ScimReply::ok(scim::service_provider_config(&base)))
        }
        (Method::GET, "resourcetypes", id) => discovery(scim::resource_types(&base), id),
        (Method::GET, "schemas", id) => discovery(scim::schemas(&base), id),
        (_, "users" | "groups" | "serviceproviderconfig" | "resourcetypes" | "schemas" | ".search", _) => {
            Err(ScimError::new(405, None, format!("{method} is not supported here")))
        }
        _ => Err(ScimError::not_found("no such SCIM endpoint")),
    }
}

const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
const BULK_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";

/// `POST /Bulk` (RFC 7644 §3.7): each operation is the request it
/// describes, made in turn; `bulkId:` references (in a path or anywhere in
/// the data) name what an earlier POST of this request created, and an
/// operation whose reference is created later in the list waits for it.
/// `failOnErrors` stops the run after that many errors. Not atomic: what
/// succeeded stays, as the RFC has it.
async fn bulk(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<ScimReply, ScimError> {
    let request = parse_body(headers, body)?;
    if !get_ci(&request, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|v| v == BULK_REQUEST))
    {
        return Err(ScimError::invalid_syntax(format!(
            "a bulk request's schemas must be [\"{BULK_REQUEST}\"]"
        )));
    }
    let operations = get_ci(&request, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("a bulk request needs an Operations array"))?;
    if operations.len() > scim::BULK_MAX_OPERATIONS {
        return Err(ScimError::new(
            413,
            None,
            format!("a bulk request has at most {} operations", scim::BULK_MAX_OPERATIONS),
        ));
    }
    let fail_on_errors = match get_ci(&request, "failOnErrors") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| *n > 0)
                .ok_or_else(|| ScimError::invalid_value("failOnErrors must be a positive integer"))?,
        ),
    };
    // Each operation's result, in the request's order; `None` until done.
    let mut results: Vec<Option<Value>> = vec![None; operations.len()];
    let mut created: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut errors = 0u64;
    // Each operation's data as text and the bulkIds it names, read once: a
    // pass over the waiting operations only looks them up, so a request
    // whose operations wait on each other in a chain costs lookups, not
    // re-reading every operation on every pass.
    let texts: Vec<Option<String>> =
        operations.iter().map(|op| get_ci(op, "data").map(Value::to_string)).collect();
    let needs: Vec<Vec<String>> = operations
        .iter()
        .zip(&texts)
        .map(|(op, text)| {
            let path = get_ci(op, "path").and_then(Value::as_str).unwrap_or("");
            references(path).chain(text.as_deref().into_iter().flat_map(references)).collect()
        })
        .collect();
    'passes: loop {
        let mut progress = false;
        for (i, op) in operations.iter().enumerate() {
            if results[i].is_some() || !needs[i].iter().all(|n| created.contains_key(n)) {
                continue;
            }
            let outcome = bulk_operation(state, caller, op, texts[i].as_deref(), &created).await;
            let (result, failed) = match outcome {
                BulkStep::Waiting => continue,
                BulkStep::Done { result, bulk_id, id } => {
                    if let (Some(bulk_id), Some(id)) = (bulk_id, id) {
                        created.insert(bulk_id, id);
                    }
                    (result, false)
                }
                BulkStep::Failed(result) => (result, true),
            };
            results[i] = Some(result);
            progress = true;
            if failed {
                errors += 1;
                if fail_on_errors.is_some_and(|limit| errors >= limit) {
                    break 'passes;
                }
            }
        }
        if !progress {
            break;
        }
    }
    // What still waits names a bulkId nothing in the request created.
    let stopped = fail_on_errors.is_some_and(|limit| errors >= limit);
    let mut out = Vec::new();
    for (i, op) in operations.iter().enumerate() {
        match results[i].take() {
            Some(result) => out.push(result),
            None if stopped => {}
            None => out.push(bulk_error(
                op,
                ScimError::new(
                    409,
                    Some("invalidValue"),
                    "it names a bulkId that no operation of this request created",
                ),
            )),
        }
    }
    Ok(ScimReply::ok(json!({ "schemas": [BULK_RESPONSE], "Operations": out })))
}

enum BulkStep {
    /// Names a bulkId not created yet.
    Waiting,
    Done {
        result: Value,
        bulk_id: Option<String>,
        id: Option<String>,
    },
    Failed(Value),
}

/// The result entry of a failed operation.
fn bulk_error(op: &Value, e: ScimError) -> Value {
    let mut result = json!({ "status": e.status.to_string(), "response": e.body() });
    for key in ["method", "bulkId"] {
        if let Some(v) = get_ci(op, key) {
            result[key] = v.clone();
        }
    }
    result
}

/// The `bulkId:name` references in `text`: (where each starts, where it
/// ends, the name).
fn bulk_references(text: &str) -> impl Iterator<Item = (usize, usize, &str)> {
    const MARK: &str = "bulkId:";
    let mut from = 0;
    std::iter::from_fn(move || {
        let at = from + text[from..].find(MARK)?;
        let name_at = at + MARK.len();
        let len = text[name_at..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
            .unwrap_or(text.len() - name_at);
        from = name_at + len;
        Some((at, from, &text[name_at..from]))
    })
}

/// The bulkIds `text` names.
fn references(text: &str) -> impl Iterator<Item = String> + '_ {
    bulk_references(text).map(|(_, _, name)| name.to_owned())
}

/// Replaces `bulkId:x` references in text with the ids they name; `Err`
/// with the first one not known yet.
fn resolve(text: &str, created: &std::collections::HashMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (start, end, name) in bulk_references(text) {
        out.push_str(&text[copied..start]);
        out.push_str(created.get(name).ok_or_else(|| name.to_owned())?);
        copied = end;
    }
    out.push_str(&text[copied..]);
    Ok(out)
}

async fn bulk_operation(
    state: &AppState,
    caller: &Caller,
    op: &Value,
    data: Option<&str>,
    created: &std::collections::HashMap<String, String>,
) -> BulkStep {
    let fail = |e: ScimError| BulkStep::Failed(bulk_error(op, e));
    let method = match get_ci(op, "method").and_then(Value::as_str).map(str::to_ascii_uppercase).as_deref() {
        Some("POST") => Method::POST,
        Some("PUT") => Method::PUT,
        Some("PATCH") => Method::PATCH,
        Some("DELETE") => Method::DELETE,
        _ => return fail(ScimError::invalid_syntax("method must be POST, PUT, PATCH or DELETE")),
    };
    let bulk_id = get_ci(op, "bulkId").and_then(Value::as_str).map(str::to_owned);
    if method == Method::POST && bulk_id.is_none() {
        return fail(ScimError::invalid_syntax("a POST needs a bulkId"));
    }
    let Some(path) = get_ci(op, "path").and_then(Value::as_str) else {
        return fail(ScimError::invalid_syntax("an operation needs a path"));
    };
    let (path, data) = match (resolve(path, created), data.map(|d| resolve(d, created)).transpose()) {
        (Ok(p), Ok(d)) => (p, d),
        (Err(_), _) | (_, Err(_)) => return BulkStep::Waiting,
    };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let is_resource = |r: &str| r.eq_ignore_ascii_case("users") || r.eq_ignore_ascii_case("groups");
    let valid = match (method == Method::POST, segments.as_slice()) {
        (true, [r]) => is_resource(r),
        (false, [r, id]) => is_resource(r) && !id.starts_with('.'),
        _ => false,
    };
    if !valid {
        return fail(ScimError::invalid_path(format!(
            "{method} {path} is not a bulk operation: POST /Users or /Groups, or PUT, PATCH or DELETE one of them"
        )));
    }
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/scim+json"));
    if let Some(version) =
        get_ci(op, "version").and_then(Value::as_str).and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers.insert(header::IF_MATCH, version);
    }
    if method != Method::DELETE && data.is_none() {
        return fail(ScimError::invalid_syntax(format!("{method} needs data")));
    }
    let body = Bytes::from(data.unwrap_or_default());
    match route(state, caller, &method, &segments, &[], &headers, &body).await {
        Ok(reply) => {
            let mut result =
                json!({ "method": method.as_str(), "status": reply.status.as_u16().to_string() });
            if let Some(b) = &bulk_id {
                result["bulkId"] = b.clone().into();
            }
            if let Some(l) = &reply.location {
                result["location"] = l.clone().into();
            } else if method != Method::DELETE {
                result["location"] = format!("{}/scim/v2/{}", state.issuer(), segments.join("/")).into();
            }
            if let Some(v) = &reply.etag {
                result["version"] = v.clone().into();
            }
            let id = reply.body.as_ref().and_then(|b| b["id"].as_str()).map(str::to_owned);
            BulkStep::Done { result, bulk_id, id }
        }
        Err(e) => fail(e),
    }
}

/// A discovery collection (`/ResourceTypes`, `/Schemas`) as a ListResponse,
/// or one of its documents by id.
fn discovery(documents: Vec<Value>, id: Option<&str>) -> Result<ScimReply, ScimError> {
    match id {
        None => Ok(ScimReply::ok(scim::list_response(documents.len(), scim::Position::Index(1), documents))),
        Some(id) => documents
            .into_iter()
            .find(|d| d["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(id)))
            .map(ScimReply::ok)
            .ok_or_else(|| ScimError::not_found(format!("no {id:?} here"))),
    }
}

/// Whether `If-None-Match` names the current version (or `*`): the
/// client's copy is current.
fn unchanged(headers: &HeaderMap, current: &str) -> bool {
    let Some(tags) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) else { return false };
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    tags.split(',').any(|t| t.trim() == "*" || strip(t) == strip(current))
}

fn not_modified(etag: String) -> ScimReply {
    ScimReply { status: StatusCode::NOT_MODIFIED, body: None, etag: Some(etag), location: None }
}

/// Honours `If-Match`: the request applies only to the version it names.
fn check_version(headers: &HeaderMap, version: i64) -> Result<(), ScimError> {
    let Some(wanted) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) else { return Ok(()) };
    let current = scim::etag(version);
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    if wanted.split(',').any(|t| t.trim() == "*" || strip(t) == strip(&current)) {
        Ok(())
    } else {
        Err(ScimError::precondition_failed(format!(
            "If-Match {wanted} does not match the current version {current}"
        )))
    }
}

/// The caller's user with this id; another organization's users do not exist
/// for it.
async fn find_user(state: &AppState, caller: &Caller, id: &str) -> Result<User, ScimError> {
    let not_found = || ScimError::not_found(format!("no user {id}"));
    let user_id: UserId = id.parse().map_err(|_| not_found())?;
    match state.store().get_user(user_id).await {
        Ok(u) if u.org_id == caller.org => Ok(u),
        Ok(_) | Err(StoreError::NotFound) => Err(not_found()),
        Err(e) => Err(e).scim(),
    }
}

/// The audit event of a provisioning change made by `caller`.
fn provisioning_event(
    caller: &Caller,
    kind: &'static str,
    user: Option<&User>,
    subject: Value,
) -> NewAuditEvent {
    let mut detail = json!({ "idp": caller.token.idp, "scim_token": caller.token.id });
    if let (Some(d), Value::Object(extra)) = (detail.as_object_mut(), subject) {
        d.extend(extra);
    }
    NewAuditEvent::change(caller.org, kind, Some("scim"), detail).for_user(user.map(|u| u.id))
}

async fn audit(state: &AppState, event: NewAuditEvent) -> Result<(), ScimError> {
    state.store().record_audit_event(&event, state.clock().now()).await.scim()
}

async fn create_user(
    state: &AppState,
    caller: &Caller,
    body: &Value,
    base: &str,
) -> Result<ScimReply, ScimError> {
    // userName (and email) uniqueness is the unique indexes' to enforce: a
    // duplicate is a Conflict, answered 409 uniqueness.
    let fields = scim::user_fields(body)?;
    let new = NewUser {
        org_id: caller.org,
        active: fields.active,
        email: fields.email,
        display_name: fields.display_name,
        external_id: fields.external_id,
        password_hash: None,
        user_name: Some(fields.user_name),
        scim_resource: Some(fields.stored),
        role: Role::Member,
        created_via: Origin::Scim,
    };
    // The creation and its audit event are one transaction.
    let event = provisioning_event(caller, "scim_user_created", None, json!({ "active": fields.active }));
    // The directory brought this person back: earlier deletions no longer
    // stand in the way of their sign-in. Lifted in the creation's own
    // transaction, so neither happens without the other.
    let (user, lifted) =
        state.store().provision_user(&new, Some(&event), state.clock().now()).await.scim()?;
    if lifted > 0 {
        tracing::info!(org = %caller.org, user = %user.id, lifted, "a deleted user was provisioned again");
    }
    let resource = scim::user_resource(&user, base);
    Ok(ScimReply {
        status: StatusCode::CREATED,
        location: resource["meta"]["location"].as_str().map(str::to_owned),
        etag: Some(scim::etag(user.version)),
        body: Some(resource),
    })
}

/// Stores `fields` over `user`, if `user` is still the version read.
async fn save_user(
    state: &AppState,
    caller: &Caller,
    user: &User,
    fields: UserFields,
    kind: &'static str,
    base: &str,
) -> Result<ScimReply, ScimError> {
    let update = UserUpdate {
        email: Some(fields.email),
        display_name: Some(fields.display_name),
        external_id: Some(fields.external_id),
        active: Some(fields.active),
        user_name: Some(Some(fields.user_name)),
        scim_resource: Some(Some(fields.stored)),
        expected_version: Some(user.version),
        password_hash: None,
        role: None,
    };
    let saved = state.store().update_user(user.id, &update, state.clock().now()).await.scim()?;
    let kind = if user.active && !saved.active {
        "scim_user_deactivated"
    } else if !user.active && saved.active {
        "scim_user_reactivated"
    } else {
        kind
    };
    audit(state, provisioning_event(caller, kind, Some(&saved), json!({ "active": saved.active }))).await?;
    Ok(ScimReply {
        etag: Some(scim::etag(saved.version)),
        ..ScimReply::ok(scim::user_resource(&saved, base))
    })
}

async fn patch_user(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: &Value,
    id: &str,
    base: &str,
) -> Result<ScimReply, ScimError> {
    // Optimistic concurrency: read, apply, store if unchanged; on a race,
    // read again and re-apply, so no concurrent PATCH is lost.
    for _ in 0..5 {
        let user = find_user(state, caller, id).await?;
        check_version(headers, user.version)?;
        let current = scim::user_resource(&user, base);
        let patched = gatehouse_scim::patch::apply(&current, body, true)?;
        let fields = scim::user_fields(&patched)?;
        match save_user(state, caller, &user, fields, "scim_user_patched", base).await {
            Err(e) if e.status == 412 && headers.get(header::IF_MATCH).is_none() => continue,
            other => return other,
        }
    }
    Err(ScimError::new(409, None, "the user kept changing; try again"))
}

/// The most users a filter the database cannot evaluate is matched on, one
/// by one; beyond it such a filter is `tooMany`, so no request's cost grows
/// with the directory without bound. (About 0.1 s of CPU at this size.)
const IN_MEMORY_FILTER_MAX_USERS: i64 = 10_000;

async fn list_users(
    state: &AppState,
    caller: &Caller,
    params: &[(String, String)],
    base: &str,
) -> Result<ScimReply, ScimError> {
    let filter = parse_filter(params)?;
    let sort = scim::parse_sort(param(params, "sortBy"), param(params, "sortOrder"), true)?;
    let paging = paging(params, sort.is_some())?;
    let project =
        |resource| scim::project(resource, param(params, "attributes"), param(params, "excludedAttributes"));

    // Without a filter, the page comes from the database, in the order
    // asked for (Okta's import walks every page). `userName eq` and
    // `externalId eq`, the IdPs' lookups, are index probes; any other
    // filter `scim::user_condition` translates is evaluated by the
    // database. The rest is evaluated on each of the organization's users,
    // in organizations small enough.
    let condition = filter.as_ref().and_then(scim::user_condition);
    let matched: Vec<User> = match &filter {
        Some(f) if let Some(name) = f.as_user_name_eq() => {
            state.store().find_user_by_user_name(caller.org, name).await.scim()?.into_iter().collect()
        }
        Some(f) if let Some(value) = f.as_external_id_eq() => {
            state.store().find_users_by_external_id(caller.org, value).await.scim()?
        }
        Some(f) if condition.is_none() => {
            let users = state.store().count_users(caller.org).await.scim()?;
            if users > IN_MEMORY_FILTER_MAX_USERS {
                return Err(ScimError::too_many(format!(
                    "this filter is matched user by user, and the organization has more than \
                     {IN_MEMORY_FILTER_MAX_USERS} users; filter on {}, which the database answers",
                    scim::DATABASE_ATTRIBUTES
                )));
            }
            let mut all = Vec::new();
            let mut after = None;
            loop {
                let page = state.store().list_users(caller.org, after, 200).await.scim()?;
                all.extend(page.users);
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            all.into_iter().filter(|u| f.matches(&scim::user_resource(u, base))).collect()
        }
        _ => {
            let window = match &paging.window {
                Window::Index(start_index) => UserWindow::Offset { offset: *start_index as u64 - 1, sort },
                Window::Cursor(after) => UserWindow::After(
                    after.as_deref().map(|a| a.parse::<UserId>().map_err(|_| bad_cursor())).transpose()?,
                ),
            };
            let found = state
                .store()
                .users_matching(caller.org, condition.as_ref(), window, paging.count as u32)
                .await
                .scim()?;
            let position = match paging.window {
                Window::Index(start_index) => scim::Position::Index(start_index),
                Window::Cursor(_) => scim::Position::Cursor {
                    next: found.users.last().filter(|_| found.more).map(|u| u.id.to_string()),
                },
            };
            let page = found.users.iter().map(|u| project(scim::user_resource(u, base))).collect();
            return Ok(ScimReply::ok(scim::list_response(found.total as usize, position, page)));
        }
    };
    let mut resources: Vec<Value> = matched.iter().map(|u| scim::user_resource(u, base)).collect();
    if let Some(sort) = sort {
        scim::sort_resources(&mut resources, sort);
    }
    let total = resources.len();
    let (page, position) = page_in_memory(resources, &paging);
    let page = page.into_iter().map(project).collect();
    Ok(ScimReply::ok(scim::list_response(total, position, page)))
}

/// A search request's body (RFC 7644 §3.4.3) as the query parameters a GET
/// would carry.
fn search_params(body: &Value) -> Result<Vec<(String, String)>, ScimError> {
    const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
    let object =
        body.as_object().ok_or_else(|| ScimError::invalid_syntax("the body must be a JSON object"))?;
    if let Some(schemas) = gatehouse_scim::filter::get_ci(body, "schemas")
        && !schemas.as_array().is_some_and(|s| s.iter().any(|v| v.as_str() == Some(SEARCH)))
    {
        return Err(ScimError::invalid_syntax(format!("a search request's schemas must be [\"{SEARCH}\"]")));
    }
    let mut params = Vec::new();
    for (key, value) in object {
        let name = match key.to_ascii_lowercase().as_str() {
            "attributes" => "attributes",
            "excludedattributes" => "excludedAttributes",
            "filter" => "filter",
            "sortby" => "sortBy",
            "sortorder" => "sortOrder",
            "startindex" => "startIndex",
            "count" => "count",
            "cursor" => "cursor",
            _ => continue,
        };
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| ScimError::invalid_value(format!("{key} must list attribute names")))
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            Value::Null => continue,
            _ => return Err(ScimError::invalid_value(format!("{key} has the wrong type"))),
        };
        params.push((name.to_owned(), text));
    }
    Ok(params)
}

/// `POST /.search` at the root: users, then groups, as one list.
async fn search_everything(
    state: &AppState,
    caller: &Caller,
    params: &[(String, String)],
    base: &str,
) -> Result<ScimReply, ScimError> {
    if param(params, "cursor").is_some() {
        return Err(ScimError::invalid_value(
            "a search of every resource type pages by startIndex; page by cursor at /Users/.search or /Groups/.search",
        ));
    }
    let Paging { count, window: Window::Index(start_index) } = paging(params, false)? else {
        unreachable!("no cursor, so paged by index")
    };
    let with = |start: usize, count: usize| {
        let mut p: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("startIndex") && !k.eq_ignore_ascii_case("count"))
            .cloned()
            .collect();
        p.push(("startIndex".into(), start.to_string()));
        p.push(("count".into(), count.to_string()));
        p
    };
    let users = list_users(state, caller, &with(start_index, count), base).await?.body.unwrap_or_default();
    let user_total = users["totalResults"].as_u64().unwrap_or(0) as usize;
    let mut resources = users["Resources"].as_array().cloned().unwrap_or_default();
    let group_start = start_index.saturating_sub(user_total).max(1);
    let left = count - resources.len().min(count);
    let groups = list_groups(state, caller, &with(group_start, left), base).await?.body.unwrap_or_default();
    let group_total = groups["totalResults"].as_u64().unwrap_or(0) as usize;
    resources.extend(groups["Resources"].as_array().cloned().unwrap_or_default());
    Ok(ScimReply::ok(scim::list_response(
        user_total + group_total,
        scim::Position::Index(start_index),
        resources,
    )))
}

/// Why a group change failed: the change itself, or storage.
enum GroupFail {
    Scim(ScimError),
    Store(StoreError),
}

impl From<ScimError> for GroupFail {
    fn from(e: ScimError) -> Self {
        Self::Scim(e)
    }
}

impl From<StoreError> for GroupFail {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Applies `change` to the group with the group locked (see
/// `Store::modify_group`), after checking `If-Match`.
async fn modify_group(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    id: &str,
    change: impl FnOnce(&gatehouse_store::Group) -> Result<gatehouse_store::GroupState, ScimError>,
) -> Result<gatehouse_store::Group, ScimError> {
    let result = state
        .store()
        .modify_group(caller.org, id, state.clock().now(), |current| {
            check_version(headers, current.version)?;
            Ok::<_, GroupFail>(change(current)?)
        })
        .await;
    let group = match result {
        Ok(g) => g,
        Err(GroupFail::Scim(e)) => return Err(e),
        Err(GroupFail::Store(e)) => return Err(e).scim(),
    };
    audit(state, provisioning_event(caller, "scim_group_updated", None, json!({ "group": id }))).await?;
    Ok(group)
}

/// Adds and removes members named by a PATCH without reading the group's
/// other members (see `Store::change_group_members`).
async fn change_members(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    id: &str,
    add: &[UserId],
    remove: &[UserId],
) -> Result<gatehouse_store::Group, ScimError> {
    let expected = match headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(any) if any.trim() == "*" => None,
        Some(_) => {
            let head = state.store().get_group_head(caller.org, id).await.scim()?;
            check_version(headers, head.version)?;
            Some(head.version)
        }
    };
    let now = state.clock().now();
    let group =
        state.store().change_group_members(caller.org, id, add, remove, expected, now).await.scim()?;
    let detail = json!({ "group": id, "members_added": add.len(), "members_removed": remove.len() });
    audit(state, provisioning_event(caller, "scim_group_updated", None, detail)).await?;
    Ok(group)
}

async fn list_groups(
    state: &AppState,
    caller: &Caller,
    params: &[(String, String)],
    base: &str,
) -> Result<ScimReply, ScimError> {
    let filter = parse_filter(params)?;
    let sort = scim::parse_sort(param(params, "sortBy"), param(params, "sortOrder"), false)?;
    let paging = paging(params, sort.is_some())?;
    // `displayName eq`, the IdPs' lookup before a push, is one index probe.
    let groups = match filter.as_ref().and_then(Filter::as_display_name_eq) {
        Some(name) => {
            state.store().find_group_by_display_name(caller.org, name).await.scim()?.into_iter().collect()
        }
        // Members are read only when shown or filtered on.
        None if filter.is_none()
            && !scim::shows_members(param(params, "attributes"), param(params, "excludedAttributes")) =>
        {
            state.store().list_group_heads(caller.org).await.scim()?
        }
        None => state.store().list_groups(caller.org).await.scim()?,
    };
    let mut matched: Vec<Value> = groups
        .iter()
        .map(|g| scim::group_resource(g, base))
        .filter(|r| filter.as_ref().is_none_or(|f| f.matches(r)))
        .collect();
    if let Some(sort) = sort {
        scim::sort_resources(&mut matched, sort);
    }
    let total = matched.len();
    let (page, position) = page_in_memory(matched, &paging);
    let page = page
        .into_iter()
        .map(|r| scim::project(r, param(params, "attributes"), param(params, "excludedAttributes")))
        .collect();
    Ok(ScimReply::ok(scim::list_response(total, position, page)))
}

/// The `filter` parameter; one that does not parse is `invalidFilter`, never
/// an unfiltered page.
fn parse_filter(params: &[(String, String)]) -> Result<Option<Filter>, ScimError> {
    param(params, "filter")
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| filter::parse(f).map_err(|e| ScimError::invalid_filter(e.0)))
        .transpose()
}

/// How a list is paged: how many resources a page holds, and which page.
struct Paging {
    count: usize,
    window: Window,
}

enum Window {
    /// From this 1-based position in the list (RFC 7644 §3.4.2.4).
    Index(usize),
    /// After the resource with this id, in id order: RFC 9865's cursor,
    /// which is the last id of the page before (none for the first page).
    Cursor(Option<String>),
}

fn bad_cursor() -> ScimError {
    ScimError::invalid_cursor("the cursor is not one this service gave; start again with an empty cursor")
}

/// `count`, and `startIndex` (1-based) or `cursor`. A cursor pages in id
/// order, so it cannot be combined with `sortBy` (`sorted`), nor with
/// `startIndex`; it must be an id as a page gave it.
fn paging(params: &[(String, String)], sorted: bool) -> Result<Paging, ScimError> {
    let number = |name: &str| -> Result<Option<i64>, ScimError> {
        param(params, name)
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| ScimError::invalid_value(format!("{name} must be an integer")))
            })
            .transpose()
    };
    let start_index = number("startIndex")?;
    let count = number("count")?
        .unwrap_or(scim::DEFAULT_PAGE_SIZE as i64)
        .clamp(0, scim::MAX_PAGE_SIZE as i64) as usize;
    let window = match param(params, "cursor").map(str::trim) {
        None => Window::Index(start_index.unwrap_or(1).max(1) as usize),
        Some(_) if start_index.is_some() => {
            return Err(ScimError::invalid_value("page by startIndex or by cursor, not both"));
        }
        Some(_) if sorted => {
            return Err(ScimError::invalid_value(
                "cursor pages follow the order of ids; to sort with sortBy, page by startIndex",
            ));
        }
        Some("") => Window::Cursor(None),
        Some(cursor) => {
            let id = uuid::Uuid::parse_str(cursor).map_err(|_| bad_cursor())?;
            Window::Cursor(Some(id.hyphenated().to_string()))
        }
    };
    Ok(Paging { count, window })
}

/// The page `paging` names of resources matched in memory, and where it
/// stands. A cursor's page is the resources whose ids follow it, in id
/// order (byte order, as ids are compared).
fn page_in_memory(mut resources: Vec<Value>, paging: &Paging) -> (Vec<Value>, scim::Position) {
    match &paging.window {
        Window::Index(start_index) => {
            let page = resources.into_iter().skip(start_index - 1).take(paging.count).collect();
            (page, scim::Position::Index(*start_index))
        }
        Window::Cursor(after) => {
            let id = |r: &Value| r["id"].as_str().unwrap_or_default().to_owned();
            resources.sort_by_key(id);
            let mut rest: Vec<Value> = resources
                .into_iter()
                .filter(|r| after.as_deref().is_none_or(|a| id(r).as_str() > a))
                .collect();
            let more = rest.len() > paging.count;
            rest.truncate(paging.count);
            let next = rest.last().filter(|_| more).map(id);
            (rest, scim::Position::Cursor { next })
        }
    }
}

#[cfg(test)]
mod bulk_tests {
    use std::collections::HashMap;

    use super::{references, resolve};

    #[test]
    fn bulk_ids_are_found_and_replaced_where_they_stand() {
        let text = r#"{"members":[{"value":"bulkId:u-1"},{"value":"bulkId:g.2"}],"x":"bulkId:"}"#;
        assert_eq!(references(text).collect::<Vec<_>>(), ["u-1", "g.2", ""]);
        let mut created =
            HashMap::from([("u-1".to_owned(), "id1".to_owned()), ("g.2".to_owned(), "id2".to_owned())]);
        assert_eq!(resolve(text, &created), Err(String::new()), "a bare bulkId: names nothing");
        created.insert(String::new(), "id3".into());
        assert_eq!(
            resolve(text, &created).unwrap(),
            r#"{"members":[{"value":"id1"},{"value":"id2"}],"x":"id3"}"#
        );
        assert_eq!(resolve("/Users/bulkId:u-1", &created).unwrap(), "/Users/id1");
        assert_eq!(resolve("no references", &created).unwrap(), "no references");
    }
}
