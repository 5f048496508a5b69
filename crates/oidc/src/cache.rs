//! Each connection's provider information, fetched once and kept: sign-ins
//! should not wait on the provider's discovery document every time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse_outbound::OutboundClient;

use crate::OidcConnection;
use crate::discovery::{DiscoveryError, ProviderInfo, discover, refetch_keys};

/// How long a fetched discovery document and key set are used before they are
/// fetched again.
const FRESH_FOR: Duration = Duration::from_secs(60 * 60);
/// A token with an unknown `kid` refetches the key set at most this often per
/// connection, so a stream of such tokens cannot turn into a stream of fetches.
const KEY_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

struct Entry {
    /// Which configuration this was fetched for (the caller's fingerprint of
    /// it): a changed connection is fetched afresh.
    version: String,
    info: Arc<ProviderInfo>,
    fetched_at: Instant,
    keys_refetched_at: Option<Instant>,
}

/// Provider information per connection, keyed by connection id.
#[derive(Default)]
pub struct ProviderCache {
    entries: Mutex<HashMap<String, Entry>>,
    /// One fetch per connection at a time; the others wait for its result.
    /// A slow provider holds up sign-ins through it alone.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for ProviderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderCache").finish_non_exhaustive()
    }
}

impl ProviderCache {
    fn cached(&self, id: &str, version: &str) -> Option<Arc<ProviderInfo>> {
        let entries = self.entries.lock().expect("cache lock");
        entries
            .get(id)
            .filter(|e| e.version == version && e.fetched_at.elapsed() < FRESH_FOR)
            .map(|e| e.info.clone())
    }

    fn fetch_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.fetching.lock().expect("cache lock").entry(id.to_owned()).or_default().clone()
    }

    /// The provider information for connection `id` at configuration
    /// `version`, fetched if it is not cached or no longer fresh.
    pub async fn get(
        &self,
        client: &OutboundClient,
        id: &str,
        version: &str,
        connection: &OidcConnection,
    ) -> Result<Arc<ProviderInfo>, DiscoveryError> {
        if let Some(info) = self.cached(id, version) {
            return Ok(info);
        }
        let lock = self.fetch_lock(id);
        let _fetching = lock.lock().await;
        if let Some(info) = self.cached(id, version) {
            return Ok(info);
        }
        let info = Arc::new(discover(client, connection).await?);
        let entry = Entry {
            version: version.to_owned(),
            info: info.clone(),
            fetched_at: Instant::now(),
            keys_refetched_at: None,
        };
        self.entries.lock().expect("cache lock").insert(id.to_owned(), entry);
        Ok(info)
    }

    /// Called when a token names a key that `seen` does not have: fetches the
    /// key set again, unless that was done moments ago. Returns the new
    /// information, or `None` when nothing new could be had.
    pub async fn refresh_keys(
        &self,
        client: &OutboundClient,
        id: &str,
        seen: &Arc<ProviderInfo>,
    ) -> Result<Option<Arc<ProviderInfo>>, DiscoveryError> {
        let lock = self.fetch_lock(id);
        let _fetching = lock.lock().await;
        {
            let entries = self.entries.lock().expect("cache lock");
            let Some(entry) = entries.get(id) else { return Ok(None) };
            if !Arc::ptr_eq(&entry.info, seen) {
                // Someone else refetched while this caller waited.
                return Ok(Some(entry.info.clone()));
            }
            if entry.keys_refetched_at.is_some_and(|t| t.elapsed() < KEY_REFETCH_INTERVAL) {
                return Ok(None);
            }
        }
        let info = Arc::new(refetch_keys(client, seen).await?);
        let mut entries = self.entries.lock().expect("cache lock");
        if let Some(entry) = entries.get_mut(id) {
            entry.info = info.clone();
            entry.keys_refetched_at = Some(Instant::now());
        }
        Ok(Some(info))
    }

    /// Forgets a connection (it was changed or deleted).
    pub fn forget(&self, id: &str) {
        self.entries.lock().expect("cache lock").remove(id);
        self.fetching.lock().expect("cache lock").remove(id);
    }
}
