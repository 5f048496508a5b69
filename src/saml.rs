//! SAML connections (Ping Identity): from a stored connection to a ready
//! service provider, with the IdP's metadata fetched and refreshed when it
//! comes from a URL. The protocol itself is `gatehouse_saml`; the HTTP
//! surface is `routes/saml.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};

use gatehouse_outbound::FetchLocks;
use gatehouse_saml::{IdpDescriptor, SamlConnection, Sp, SpEndpoints, SpKeys};
use gatehouse_session::OpaqueToken;
use gatehouse_store::{ConnectionRecord, SsoFlow};
use url::Url;

use crate::error::ApiError;
use crate::sso::{self, FlowClient, FlowProtocol, FlowSecrets, open_secret};
use crate::state::AppState;

/// Our RelayState for flows we start: it names the flow, and says the
/// response answers one of our requests.
pub(crate) const RELAY_PREFIX: &str = "ghs";
/// How long fetched IdP metadata is used before it is fetched again, so a
/// certificate rollover at the IdP needs no admin.
const METADATA_FRESH_FOR: TimeDelta = TimeDelta::hours(1);
/// After a failed refresh the last good metadata is kept, and the URL is
/// tried again after this long, not on every sign-in meanwhile.
const METADATA_RETRY_AFTER: TimeDelta = TimeDelta::minutes(1);

/// Our entity id (also where our metadata is served) and ACS for a
/// connection.
pub(crate) fn endpoints(state: &AppState, connection_id: &str) -> SpEndpoints {
    let base = format!("{}/v1/sso/saml/{connection_id}", state.issuer());
    SpEndpoints { entity_id: format!("{base}/metadata"), acs_url: format!("{base}/acs") }
}

/// A ready service provider and the IdP it trusts.
pub(crate) struct Loaded {
    pub(crate) sp: Sp,
    pub(crate) idp: IdpDescriptor,
}

struct Entry {
    /// The configuration it was built from: any change rebuilds it.
    version: String,
    loaded: Arc<Loaded>,
    /// When fetched metadata is to be fetched again (by the service's
    /// clock, as everything time-dependent).
    refresh_at: DateTime<Utc>,
    /// When a bad signature last made it fetch the metadata early.
    refreshed_for_signature: Option<DateTime<Utc>>,
}

/// A bad signature refetches the IdP's metadata (its certificate may have
/// rolled over) at most this often per connection.
const SIGNATURE_REFETCH_INTERVAL: TimeDelta = TimeDelta::seconds(10);

/// Ready service providers per connection: building one parses metadata and
/// keys, which sign-ins should not pay for each time.
#[derive(Default)]
pub(crate) struct SpCache {
    entries: Mutex<HashMap<String, Entry>>,
    /// One build (and metadata fetch) per connection at a time: when the
    /// copy goes stale under many sign-ins, one fetches and the rest use
    /// what it stored.
    fetching: FetchLocks,
}

impl SpCache {
    /// The cached service provider for this version of `record`, and whether
    /// it is still fresh at `now`. Metadata given inline never goes stale;
    /// fetched metadata is used for an hour.
    fn cached(&self, record: &ConnectionRecord, now: DateTime<Utc>) -> Option<(Arc<Loaded>, bool)> {
        let entries = self.entries.lock().expect("cache lock");
        entries.get(&record.id).filter(|e| e.version == record.config).map(|e| {
            let fresh = e.loaded.sp.connection().metadata_url.is_none() || now < e.refresh_at;
            (e.loaded.clone(), fresh)
        })
    }

    /// The service provider for `record`, built or refreshed as needed. When
    /// the IdP's metadata URL fails, the last good metadata is kept.
    pub(crate) async fn get(
        &self,
        state: &AppState,
        record: &ConnectionRecord,
        saml: &SamlConnection,
    ) -> Result<Arc<Loaded>, ApiError> {
        // The hot path: nothing parsed, nothing waited for.
        let now = state.clock().now();
        if let Some((loaded, true)) = self.cached(record, now) {
            return Ok(loaded);
        }
        let _fetching = self.fetching.lock(&record.id).await;
        let previous = match self.cached(record, now) {
            Some((loaded, true)) => return Ok(loaded),
            stale => stale.map(|(loaded, _)| loaded),
        };
        let connection = saml.clone();
        let idp = match (&connection.idp, &connection.metadata_url) {
            (Some(idp), _) => idp.clone(),
            (None, Some(url)) => match gatehouse_saml::fetch_metadata(state.outbound(), url).await {
                Ok(idp) => idp,
                Err(error) => match previous {
                    Some(loaded) => {
                        tracing::warn!(connection = %record.id, %error, "IdP metadata refresh failed; keeping the last good copy");
                        if let Some(entry) = self.entries.lock().expect("cache lock").get_mut(&record.id) {
                            entry.refresh_at = now + METADATA_RETRY_AFTER;
                        }
                        return Ok(loaded);
                    }
                    None => {
                        tracing::warn!(connection = %record.id, %error, "IdP metadata unavailable");
                        return Err(ApiError::Unavailable { code: "idp_unavailable", retry_after: 60 });
                    }
                },
            },
            (None, None) => return Err(ApiError::internal("a SAML connection without an IdP")),
        };
        self.build(state, record, connection, idp, None)
    }

    fn build(
        &self,
        state: &AppState,
        record: &ConnectionRecord,
        connection: SamlConnection,
        idp: IdpDescriptor,
        refreshed_for_signature: Option<DateTime<Utc>>,
    ) -> Result<Arc<Loaded>, ApiError> {
        let keys = SpKeys::from_pem(&open_secret(state, record)?).map_err(ApiError::internal)?;
        let sp = Sp::new(connection, &idp, endpoints(state, &record.id), keys).map_err(ApiError::internal)?;
        let loaded = Arc::new(Loaded { sp, idp });
        let entry = Entry {
            version: record.config.clone(),
            loaded: loaded.clone(),
            refresh_at: state.clock().now() + METADATA_FRESH_FOR,
            refreshed_for_signature,
        };
        self.entries.lock().expect("cache lock").insert(record.id.clone(), entry);
        Ok(loaded)
    }

    /// Called when a response's signature did not verify with `seen`: if the
    /// IdP's metadata comes from a URL, it is fetched again (at most every
    /// 10 s), and when its signing certificates changed (a rollover), the
    /// new service provider is returned to try once more.
    pub(crate) async fn after_bad_signature(
        &self,
        state: &AppState,
        record: &ConnectionRecord,
        seen: &Arc<Loaded>,
    ) -> Option<Arc<Loaded>> {
        let url = seen.sp.connection().metadata_url.clone()?;
        let now = state.clock().now();
        let _fetching = self.fetching.lock(&record.id).await;
        {
            let entries = self.entries.lock().expect("cache lock");
            let entry = entries.get(&record.id)?;
            if !Arc::ptr_eq(&entry.loaded, seen) {
                return Some(entry.loaded.clone());
            }
            if entry.refreshed_for_signature.is_some_and(|t| now - t < SIGNATURE_REFETCH_INTERVAL) {
                return None;
            }
        }
        let now = Some(now);
        match gatehouse_saml::fetch_metadata(state.outbound(), &url).await {
            Ok(idp) if idp.signing_certs != seen.idp.signing_certs => {
                tracing::info!(connection = %record.id, "the IdP's signing certificate changed; using the new one");
                let connection = seen.sp.connection().clone();
                self.build(state, record, connection, idp, now).ok()
            }
            other => {
                if let Err(error) = other {
                    tracing::warn!(connection = %record.id, %error, "IdP metadata refetch failed");
                }
                if let Some(entry) = self.entries.lock().expect("cache lock").get_mut(&record.id) {
                    entry.refreshed_for_signature = now;
                }
                None
            }
        }
    }

    pub(crate) fn forget(&self, id: &str) {
        self.entries.lock().expect("cache lock").remove(id);
        self.fetching.forget(id);
    }
}

/// Sends the user to the IdP with an AuthnRequest (signed when the
/// connection says so); the flow is kept like an OIDC one.
pub(crate) async fn begin(
    state: &AppState,
    record: &ConnectionRecord,
    saml: &SamlConnection,
    client: FlowClient,
    started_at: DateTime<Utc>,
) -> Result<Url, ApiError> {
    let loaded = state.saml_providers().get(state, record, saml).await?;
    let relay = OpaqueToken::generate(RELAY_PREFIX);
    let (url, request_id) =
        loaded.sp.authn_request(&loaded.idp.sso_url, relay.plain()).map_err(ApiError::internal)?;
    let state_hash = sso::state_hash(relay.plain());
    let secrets = FlowSecrets { protocol: FlowProtocol::Saml { request_id }, started_at, client };
    let flow = SsoFlow {
        org_id: record.org_id,
        connection_id: record.id.clone(),
        sealed: secrets.seal(state, &state_hash)?,
    };
    state.store().create_sso_flow(&state_hash, &flow, started_at + sso::FLOW_TTL, started_at).await?;
    Ok(url)
}
