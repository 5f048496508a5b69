//! Each connection's provider information, fetched once and kept: sign-ins
//! should not wait on the provider's discovery document every time.
//!
//! Time is the caller's (`now` arguments), so the service's injected clock
//! governs it as it does everything else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};

use gatehouse_outbound::{FetchLocks, OutboundClient};

use crate::OidcConnection;
use crate::discovery::{DiscoveryError, ProviderInfo, discover, refetch_keys};

/// How long a fetched discovery document and key set are used before they are
/// fetched again.
const FRESH_FOR: TimeDelta = TimeDelta::hours(1);
/// When that refetch fails, the last good copy is used, and the provider is
/// asked again after this long, not on every sign-in meanwhile.
const RETRY_AFTER: TimeDelta = TimeDelta::minutes(1);
/// A token with an unknown `kid` refetches the key set at most this often per
/// connection, so a stream of such tokens cannot turn into a stream of fetches.
const KEY_REFETCH_INTERVAL: TimeDelta = TimeDelta::seconds(10);

struct Entry {
    /// Which configuration this was fetched for (the caller's fingerprint of
    /// it): a changed connection is fetched afresh.
    version: String,
    info: Arc<ProviderInfo>,
    /// When to fetch again.
    refresh_at: DateTime<Utc>,
    keys_refetched_at: Option<DateTime<Utc>>,
}

/// Provider information per connection, keyed by connection id.
#[derive(Default)]
pub struct ProviderCache {
    entries: Mutex<HashMap<String, Entry>>,
    /// One fetch per connection at a time; the others wait for its result.
    /// A slow provider holds up sign-ins through it alone.
    fetching: FetchLocks,
}

impl std::fmt::Debug for ProviderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderCache").finish_non_exhaustive()
    }
}

impl ProviderCache {
    /// The cached information for this version of the connection, and
    /// whether it is still fresh at `now`.
    fn cached(&self, id: &str, version: &str, now: DateTime<Utc>) -> Option<(Arc<ProviderInfo>, bool)> {
        let entries = self.entries.lock().expect("cache lock");
        entries.get(id).filter(|e| e.version == version).map(|e| (e.info.clone(), now < e.refresh_at))
    }

    /// The provider information for connection `id` at configuration
    /// `version`, fetched if it is not cached or no longer fresh at `now`.
    /// When a refetch fails, the last good copy is returned (and the failure
    /// logged); only a connection never fetched fails.
    pub async fn get(
        &self,
        client: &OutboundClient,
        id: &str,
        version: &str,
        connection: &OidcConnection,
        now: DateTime<Utc>,
    ) -> Result<Arc<ProviderInfo>, DiscoveryError> {
        if let Some((info, true)) = self.cached(id, version, now) {
            return Ok(info);
        }
        let _fetching = self.fetching.lock(id).await;
        let stale = match self.cached(id, version, now) {
            Some((info, true)) => return Ok(info),
            Some((info, false)) => Some(info),
            None => None,
        };
        match (discover(client, connection).await, stale) {
            (Ok(info), _) => {
                let info = Arc::new(info);
                let entry = Entry {
                    version: version.to_owned(),
                    info: info.clone(),
                    refresh_at: now + FRESH_FOR,
                    keys_refetched_at: None,
                };
                self.entries.lock().expect("cache lock").insert(id.to_owned(), entry);
                Ok(info)
            }
            (Err(error), Some(stale)) => {
                tracing::warn!(connection = %id, %error, "provider refresh failed; keeping the last good copy");
                if let Some(entry) = self.entries.lock().expect("cache lock").get_mut(id) {
                    entry.refresh_at = now + RETRY_AFTER;
                }
                Ok(stale)
            }
            (Err(error), None) => Err(error),
        }
    }

    /// Called when a token names a key that `seen` does not have: fetches the
    /// key set again, unless that was done moments ago. Returns the new
    /// information, or `None` when nothing new could be had.
    pub async fn refresh_keys(
        &self,
        client: &OutboundClient,
        id: &str,
        seen: &Arc<ProviderInfo>,
        now: DateTime<Utc>,
    ) -> Result<Option<Arc<ProviderInfo>>, DiscoveryError> {
        let _fetching = self.fetching.lock(id).await;
        {
            let entries = self.entries.lock().expect("cache lock");
            let Some(entry) = entries.get(id) else { return Ok(None) };
            if !Arc::ptr_eq(&entry.info, seen) {
                // Someone else refetched while this caller waited.
                return Ok(Some(entry.info.clone()));
            }
            if entry.keys_refetched_at.is_some_and(|t| now - t < KEY_REFETCH_INTERVAL) {
                return Ok(None);
            }
        }
        let info = Arc::new(refetch_keys(client, seen).await?);
        let mut entries = self.entries.lock().expect("cache lock");
        if let Some(entry) = entries.get_mut(id) {
            entry.info = info.clone();
            entry.keys_refetched_at = Some(now);
        }
        Ok(Some(info))
    }

    /// Forgets a connection (it was changed or deleted).
    pub fn forget(&self, id: &str) {
        self.entries.lock().expect("cache lock").remove(id);
        self.fetching.forget(id);
    }
}
