//! Organizations' external authentication settings: sealed in the database,
//! validated on the way in and again on the way out.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use gatehouse_core::{Device, Email, OrgId, Password};
use gatehouse_passthrough::{RestAuth, RestAuthConfig, RestConnector};
use serde::Serialize;
use utoipa::ToSchema;

use crate::audit::{Actor, Change};
use crate::directory::require_org;
use crate::error::ApiError;
use crate::state::AppState;

fn seal_context(org: OrgId) -> String {
    seal_context_for(&org.to_string())
}

/// The sealing context of an organization's configuration, by its id.
pub(crate) fn seal_context_for(org: &str) -> String {
    format!("rest-auth:{org}")
}

/// Validates `config` for the organization without saving it: a header
/// sent without a value takes the saved value of the header of that name
/// (header values are write-only); plain `http://` URLs send credentials in
/// clear text and are refused, unless the service may call private
/// addresses (tests, internal deployments) or the organization accepts it
/// explicitly.
pub(crate) async fn prepare(
    state: &AppState,
    org: OrgId,
    mut config: RestAuthConfig,
) -> Result<RestAuth, ApiError> {
    if config.headers.iter().any(|h| h.value.is_none())
        && let Some(saved) = load(state, org).await?
    {
        config.keep_header_values_of(&saved.config);
    }
    if let Some(field) = config.plain_http_fields().first()
        && !config.allow_insecure_http
        && !state.settings().allow_private_targets
    {
        return Err(ApiError::invalid(
            field,
            "plain http sends credentials across the network unencrypted: use https, or set allow_insecure_http",
        ));
    }
    config.validate().map_err(|e| ApiError::Invalid { field: Some(e.field), message: e.message })
}

/// Validates and stores `config`, turning REST authentication on; returns
/// the validated form and how many local password hashes were erased.
pub(crate) async fn save(
    state: &AppState,
    actor: &Actor,
    org: OrgId,
    config: RestAuthConfig,
) -> Result<(RestAuth, u64), ApiError> {
    require_org(state, org).await?;
    let auth = prepare(state, org, config).await?;
    let json = serde_json::to_vec(&auth.config).map_err(ApiError::internal)?;
    let sealed = state.master_keys().seal(&seal_context(org), &json);
    let erased = state.store().enable_rest_auth(org, &sealed, state.clock().now()).await?;
    tracing::info!(%org, local_passwords_erased = erased, "external REST authentication configured");
    let detail = serde_json::json!({ "local_passwords_erased": erased });
    let change = Change::new("external_auth_configured", detail).method("external_rest");
    crate::audit::change(state, actor, org, change).await?;
    Ok((auth, erased))
}

/// Turns REST authentication off.
pub(crate) async fn disable(state: &AppState, actor: &Actor, org: OrgId) -> Result<(), ApiError> {
    require_org(state, org).await?;
    match state.store().disable_rest_auth(org).await {
        Err(gatehouse_store::StoreError::NotFound) => return Err(NOT_CONFIGURED),
        other => other?,
    }
    tracing::info!(%org, "external REST authentication turned off");
    let change = Change::new("external_auth_disabled", serde_json::json!({})).method("external_rest");
    crate::audit::change(state, actor, org, change).await
}

pub(crate) const NOT_CONFIGURED: ApiError = ApiError::NotFound("external REST authentication");

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Header {
    pub(crate) name: String,
    pub(crate) value: String,
}

/// The request exactly as sent, with the password and every header value
/// masked.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ShownRequest {
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) headers: Vec<Header>,
    pub(crate) body: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TestResult {
    pub(crate) request: ShownRequest,
    /// The HTTP status received; null when there was no answer.
    pub(crate) status: Option<u16>,
    pub(crate) elapsed_ms: Option<u64>,
    /// `authenticated` (exactly 200), `rejected` (any other answer) or
    /// `unavailable` (no answer).
    pub(crate) outcome: &'static str,
    /// Why there was no answer: `timeout`, `connect_failed`, `tls_failed`,
    /// `blocked_target`, `protocol_error`, or `too_many_in_flight` (as many
    /// calls to the service were in progress as it may have, and none ended
    /// within the timeout, so this one was not sent).
    pub(crate) error: Option<&'static str>,
    /// What the admin should know about the configuration, such as a plain
    /// http URL.
    pub(crate) warnings: Vec<String>,
}

impl TestResult {
    pub(crate) fn authenticated(&self) -> bool {
        self.outcome == "authenticated"
    }
}

/// Makes the real call `auth` describes for a registered user of the
/// organization, and shows it; nothing is stored or counted.
pub(crate) async fn test(
    state: &AppState,
    org: OrgId,
    auth: &RestAuth,
    email: &str,
    password: Password,
    device: &Device,
) -> Result<TestResult, ApiError> {
    let email = Email::parse(email).map_err(|e| ApiError::invalid("email", e.to_string()))?;
    let user = match state.store().find_user_by_email(&email).await? {
        Some(u) if u.org_id == org => u,
        _ => return Err(ApiError::NotFound("user")),
    };
    let exchange = RestConnector::new(state.outbound(), auth)
        .authenticate(&user, &password, device)
        .await
        .map_err(|e| ApiError::invalid("password", e.to_string()))?;
    let (outcome, error) = match &exchange.result {
        Ok(r) if r.status == 200 => ("authenticated", None),
        Ok(_) => ("rejected", None),
        Err(e) => ("unavailable", Some(e.kind())),
    };
    let warnings = auth
        .config
        .plain_http_fields()
        .into_iter()
        .map(|field| format!("{field} is plain http: credentials cross the network unencrypted"))
        .collect();
    Ok(TestResult {
        warnings,
        status: exchange.status(),
        elapsed_ms: exchange.elapsed().map(|d| d.as_millis() as u64),
        outcome,
        error,
        request: ShownRequest {
            method: exchange.request.method,
            url: exchange.request.url,
            headers: exchange
                .request
                .headers
                .into_iter()
                .map(|(name, value)| Header { name, value })
                .collect(),
            body: exchange.request.body,
        },
    })
}

/// The organization's REST authentication, if it has it on.
///
/// The sealed text is read on every call, so a change made through any node
/// takes effect at once.
pub(crate) async fn load(state: &AppState, org: OrgId) -> Result<Option<Arc<RestAuth>>, ApiError> {
    match state.store().rest_auth(org).await? {
        Some(sealed) => Ok(Some(opened(state, org, sealed)?)),
        None => Ok(None),
    }
}

/// The REST authentication sealed as `sealed` (as just read from the store),
/// opened; opening and validating it is skipped while `sealed` is the text
/// already opened for `org`.
pub(crate) fn opened(state: &AppState, org: OrgId, sealed: String) -> Result<Arc<RestAuth>, ApiError> {
    let cache = state.rest_auth_cache();
    if let Some((cached_sealed, auth)) = cache.read().unwrap_or_else(|p| p.into_inner()).get(&org)
        && *cached_sealed == sealed
    {
        return Ok(auth.clone());
    }
    let auth = Arc::new(open(state, org, &sealed)?);
    let mut cache = cache.write().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= CACHE_CAPACITY {
        cache.clear();
    }
    cache.insert(org, (sealed, auth.clone()));
    Ok(auth)
}

/// Organizations whose opened configuration is kept; beyond this the cache
/// starts over rather than grow without bound.
const CACHE_CAPACITY: usize = 10_000;

/// Opened REST configurations by organization, with the sealed text each was
/// opened from.
pub(crate) type RestAuthCache = RwLock<HashMap<OrgId, (String, Arc<RestAuth>)>>;

fn open(state: &AppState, org: OrgId, sealed: &str) -> Result<RestAuth, ApiError> {
    let json = state.master_keys().open(&seal_context(org), sealed).map_err(ApiError::internal)?;
    let config: RestAuthConfig = serde_json::from_slice(&json).map_err(ApiError::internal)?;
    // A stored configuration that no longer validates (stricter rules since it
    // was saved) fails closed; the admin sees why when saving it again.
    config
        .validate()
        .map_err(|e| ApiError::internal(format!("stored REST configuration of {org} is invalid: {e}")))
}
