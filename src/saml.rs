//! SAML connections (Ping Identity): from a stored connection to a ready
//! service provider, with the IdP's metadata fetched and refreshed when it
//! comes from a URL. The protocol itself is `gatehouse_saml`; the HTTP
//! surface is `routes/saml.rs`.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use gatehouse_outbound::Published;
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

/// Ready service providers per connection: building one parses metadata and
/// keys, which sign-ins should not pay for each time. Fetched metadata is
/// refreshed by the rules every provider's publications share
/// (`gatehouse_outbound::Published`); metadata given inline never goes stale.
#[derive(Default)]
pub(crate) struct SpCache {
    published: Published<Loaded>,
}

impl SpCache {
    /// The service provider for `record`, built or refreshed as needed. When
    /// the IdP's metadata URL fails, the last good copy is kept.
    pub(crate) async fn get(
        &self,
        state: &AppState,
        record: &ConnectionRecord,
        saml: &SamlConnection,
    ) -> Result<Arc<Loaded>, ApiError> {
        let now = state.clock().now();
        let expires = saml.metadata_url.is_some();
        let build = |_stale| async move {
            let idp = match (&saml.idp, &saml.metadata_url) {
                (Some(idp), _) => idp.clone(),
                (None, Some(url)) => gatehouse_saml::fetch_metadata(state.outbound(), url).await?,
                (None, None) => return Err("a SAML connection without an IdP".to_owned()),
            };
            build(state, record, saml.clone(), idp).map_err(|e| format!("{e:?}"))
        };
        self.published.get(&record.id, &record.config, now, expires, build).await.map_err(|error| {
            tracing::warn!(connection = %record.id, %error, "IdP metadata unavailable");
            ApiError::Unavailable { code: "idp_unavailable", retry_after: 60 }
        })
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
        let rebuild = |seen: Arc<Loaded>| async move {
            let idp = gatehouse_saml::fetch_metadata(state.outbound(), &url).await?;
            build(state, record, seen.sp.connection().clone(), idp).map_err(|e| format!("{e:?}"))
        };
        match self.published.refetch(&record.id, seen, now, rebuild).await {
            Ok(Some(fresh)) if fresh.idp.signing_certs != seen.idp.signing_certs => {
                tracing::info!(connection = %record.id, "the IdP's signing certificate changed; using the new one");
                Some(fresh)
            }
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(connection = %record.id, %error, "IdP metadata refetch failed");
                None
            }
        }
    }

    pub(crate) fn forget(&self, id: &str) {
        self.published.forget(id);
    }
}

/// A service provider for `connection` trusting `idp`, with the
/// connection's own keys.
fn build(
    state: &AppState,
    record: &ConnectionRecord,
    connection: SamlConnection,
    idp: IdpDescriptor,
) -> Result<Loaded, ApiError> {
    let keys = SpKeys::from_pem(&open_secret(state, record)?).map_err(ApiError::internal)?;
    let sp = Sp::new(connection, &idp, endpoints(state, &record.id), keys).map_err(ApiError::internal)?;
    Ok(Loaded { sp, idp })
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
