use std::sync::Arc;

use gatehouse_core::Clock;
use gatehouse_oidc::ProviderCache;
use gatehouse_passthrough::OutboundClient;
use gatehouse_store::Store;

use crate::config::Settings;
use crate::external_auth::RestAuthCache;
use crate::keys::KeyCache;
use crate::master_keys::MasterKeyStore;
use crate::passwords::PasswordHasher;
use crate::saml::SpCache;

/// Everything a request handler can reach. Cheap to clone.
///
/// Nothing in here is the only copy of any state: sessions, keys and
/// configuration live in the database, so any number of processes on one
/// database behave as one service.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    issuer: String,
    store: Store,
    clock: Arc<dyn Clock>,
    keys: KeyCache,
    passwords: PasswordHasher,
    admin_token_hash: Option<String>,
    master_keys: Arc<MasterKeyStore>,
    outbound: OutboundClient,
    rest_auth_cache: RestAuthCache,
    oidc_providers: ProviderCache,
    saml_providers: SpCache,
    mailer: Option<crate::mail::Mailer>,
    /// Work that outlives the request that started it (a forwarded password
    /// reset); shutdown waits for it.
    background: tokio_util::task::TaskTracker,
}

/// A handle that does not keep the state alive (for background tasks).
pub(crate) struct WeakState(std::sync::Weak<Inner>);

impl WeakState {
    pub(crate) fn upgrade(&self) -> Option<AppState> {
        self.0.upgrade().map(|inner| AppState { inner })
    }
}

impl AppState {
    pub(crate) fn downgrade(&self) -> WeakState {
        WeakState(Arc::downgrade(&self.inner))
    }

    pub(crate) fn new(
        settings: Settings,
        store: Store,
        master_keys: MasterKeyStore,
        clock: Arc<dyn Clock>,
        outbound: OutboundClient,
        mailer: Option<crate::mail::Mailer>,
    ) -> Self {
        let master_keys = Arc::new(master_keys);
        let keys =
            KeyCache::new(store.clone(), master_keys.clone(), clock.clone(), settings.access_token_ttl);
        let passwords = PasswordHasher::new(settings.password_hash_concurrency, settings.password_hash_queue);
        let admin_token_hash = settings.admin_token.as_deref().map(gatehouse_session::hash_opaque_token);
        Self {
            inner: Arc::new(Inner {
                issuer: settings.issuer(),
                settings,
                store,
                clock,
                keys,
                passwords,
                admin_token_hash,
                master_keys,
                outbound,
                rest_auth_cache: RestAuthCache::default(),
                oidc_providers: ProviderCache::default(),
                saml_providers: SpCache::default(),
                mailer,
                background: tokio_util::task::TaskTracker::new(),
            }),
        }
    }

    /// Does once what every node's background sweep does each minute
    /// (`crate::housekeeping`): for tests, and for tools that want it done
    /// now rather than within the minute.
    pub async fn sweep(&self) {
        crate::housekeeping::sweep(self).await;
    }

    /// Where mail goes, when the service has a relay.
    pub(crate) fn mailer(&self) -> Option<&crate::mail::Mailer> {
        self.inner.mailer.as_ref()
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The `iss` of every token this service signs.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn clock(&self) -> &dyn Clock {
        self.inner.clock.as_ref()
    }

    pub fn keys(&self) -> &KeyCache {
        &self.inner.keys
    }

    pub fn passwords(&self) -> &PasswordHasher {
        &self.inner.passwords
    }

    /// Seals secrets kept in the database.
    pub(crate) fn master_keys(&self) -> &MasterKeyStore {
        &self.inner.master_keys
    }

    /// Each SAML connection's ready service provider.
    pub(crate) fn saml_providers(&self) -> &SpCache {
        &self.inner.saml_providers
    }

    /// Each OIDC connection's discovery document and keys.
    pub(crate) fn oidc_providers(&self) -> &ProviderCache {
        &self.inner.oidc_providers
    }

    /// The one pooled client for calls to organizations' services.
    pub(crate) fn outbound(&self) -> &OutboundClient {
        &self.inner.outbound
    }

    pub(crate) fn rest_auth_cache(&self) -> &RestAuthCache {
        &self.inner.rest_auth_cache
    }

    /// Tasks that finish after their request was answered.
    pub(crate) fn background(&self) -> &tokio_util::task::TaskTracker {
        &self.inner.background
    }

    /// The hash of the bootstrap admin token, if one is configured.
    pub(crate) fn admin_token_hash(&self) -> Option<&str> {
        self.inner.admin_token_hash.as_deref()
    }
}
