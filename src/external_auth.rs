//! Organizations' external authentication settings: sealed in the database,
//! validated on the way in and again on the way out.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use gatehouse_core::OrgId;
use gatehouse_passthrough::{RestAuth, RestAuthConfig};

use crate::error::ApiError;
use crate::state::AppState;

fn seal_context(org: OrgId) -> String {
    seal_context_for(&org.to_string())
}

/// The sealing context of an organization's configuration, by its id.
pub(crate) fn seal_context_for(org: &str) -> String {
    format!("rest-auth:{org}")
}

/// Validates and stores `config`, turning REST authentication on; returns the
/// validated form and how many local password hashes were erased.
///
/// Header values are write-only: one left out keeps the saved value of the
/// header of that name. Plain `http://` URLs send credentials in clear text
/// and are refused, unless the service may call private addresses (tests,
/// internal deployments) or the organization accepts it explicitly.
pub(crate) async fn save(
    state: &AppState,
    org: OrgId,
    mut config: RestAuthConfig,
) -> Result<(RestAuth, u64), ApiError> {
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
    let auth =
        config.validate().map_err(|e| ApiError::Invalid { field: Some(e.field), message: e.message })?;
    let json = serde_json::to_vec(&auth.config).map_err(ApiError::internal)?;
    let sealed = state.master_keys().seal(&seal_context(org), &json);
    let erased = state.store().enable_rest_auth(org, &sealed, state.clock().now()).await?;
    Ok((auth, erased))
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
