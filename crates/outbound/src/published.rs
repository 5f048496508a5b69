//! One refreshing cache for what identity providers publish (an OIDC
//! provider's discovery document and keys, a SAML IdP's metadata), with one
//! set of rules for every kind:
//!
//! - what was fetched is used for an hour, then fetched again;
//! - when that fetch fails, the last good copy is kept and the provider is
//!   asked again a minute later, not on every sign-in meanwhile; only what
//!   was never fetched fails;
//! - a forced refetch (a token signed with a key the copy lacks, a response
//!   whose signature the copy cannot verify: the provider rolled a key over)
//!   happens at most every ten seconds per entry;
//! - one fetch per entry at a time: callers that waited look at what the
//!   first one stored before fetching again;
//! - an entry is keyed by its connection and the configuration it was
//!   fetched for, so an edited connection is fetched afresh.
//!
//! Time is the caller's (`now` arguments): the service's injected clock
//! governs it as it does everything else.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};

use crate::FetchLocks;

/// How long a fetched copy is used before it is fetched again.
pub(crate) const FRESH_FOR: TimeDelta = TimeDelta::hours(1);
/// After a failed refresh, when to ask again.
pub(crate) const RETRY_AFTER: TimeDelta = TimeDelta::minutes(1);
/// Forced refetches happen at most this often per entry.
pub(crate) const REFETCH_INTERVAL: TimeDelta = TimeDelta::seconds(10);

struct Entry<V> {
    version: String,
    value: Arc<V>,
    /// `None`: never goes stale (configured inline, not fetched).
    refresh_at: Option<DateTime<Utc>>,
    refetched_at: Option<DateTime<Utc>>,
}

/// What providers publish, per connection.
pub struct Published<V> {
    entries: Mutex<HashMap<String, Entry<V>>>,
    fetching: FetchLocks,
}

impl<V> Default for Published<V> {
    fn default() -> Self {
        Self { entries: Mutex::new(HashMap::new()), fetching: FetchLocks::default() }
    }
}

impl<V> std::fmt::Debug for Published<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published").finish_non_exhaustive()
    }
}

impl<V> Published<V> {
    /// The cached copy for this version, and whether it is fresh at `now`.
    fn cached(&self, id: &str, version: &str, now: DateTime<Utc>) -> Option<(Arc<V>, bool)> {
        let entries = self.entries.lock().expect("cache lock");
        entries
            .get(id)
            .filter(|e| e.version == version)
            .map(|e| (e.value.clone(), e.refresh_at.is_none_or(|at| now < at)))
    }

    /// The copy for entry `id` at configuration `version`, fetched with
    /// `fetch` (handed the stale copy, if any) when there is none or it is
    /// no longer fresh. `expires` says whether it goes stale at all.
    pub async fn get<E, Fut>(
        &self,
        id: &str,
        version: &str,
        now: DateTime<Utc>,
        expires: bool,
        fetch: impl FnOnce(Option<Arc<V>>) -> Fut,
    ) -> Result<Arc<V>, E>
    where
        E: std::fmt::Display,
        Fut: Future<Output = Result<V, E>>,
    {
        // The hot path: nothing fetched, nothing waited for.
        if let Some((value, true)) = self.cached(id, version, now) {
            return Ok(value);
        }
        let _fetching = self.fetching.lock(id).await;
        let stale = match self.cached(id, version, now) {
            Some((value, true)) => return Ok(value),
            Some((value, false)) => Some(value),
            None => None,
        };
        match (fetch(stale.clone()).await, stale) {
            (Ok(value), _) => {
                let value = Arc::new(value);
                let entry = Entry {
                    version: version.to_owned(),
                    value: value.clone(),
                    refresh_at: expires.then(|| now + FRESH_FOR),
                    refetched_at: None,
                };
                self.entries.lock().expect("cache lock").insert(id.to_owned(), entry);
                Ok(value)
            }
            (Err(error), Some(stale)) => {
                tracing::warn!(connection = %id, %error, "provider refresh failed; keeping the last good copy");
                if let Some(entry) = self.entries.lock().expect("cache lock").get_mut(id) {
                    entry.refresh_at = Some(now + RETRY_AFTER);
                }
                Ok(stale)
            }
            (Err(error), None) => Err(error),
        }
    }

    /// Fetches entry `id` again now, because `seen` failed to verify
    /// something; unless that was done moments ago. Returns the copy to try
    /// again with: one another caller stored meanwhile, or the new one; or
    /// `None` when nothing new could be had.
    pub async fn refetch<E, Fut>(
        &self,
        id: &str,
        seen: &Arc<V>,
        now: DateTime<Utc>,
        fetch: impl FnOnce(Arc<V>) -> Fut,
    ) -> Result<Option<Arc<V>>, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        let _fetching = self.fetching.lock(id).await;
        {
            let entries = self.entries.lock().expect("cache lock");
            let Some(entry) = entries.get(id) else { return Ok(None) };
            if !Arc::ptr_eq(&entry.value, seen) {
                return Ok(Some(entry.value.clone()));
            }
            if entry.refetched_at.is_some_and(|t| now - t < REFETCH_INTERVAL) {
                return Ok(None);
            }
        }
        let fetched = fetch(seen.clone()).await;
        let mut entries = self.entries.lock().expect("cache lock");
        let Some(entry) = entries.get_mut(id) else { return fetched.map(|v| Some(Arc::new(v))) };
        entry.refetched_at = Some(now);
        let value = Arc::new(fetched?);
        entry.value = value.clone();
        Ok(Some(value))
    }

    /// Forgets an entry (its connection was changed or deleted).
    pub fn forget(&self, id: &str) {
        self.entries.lock().expect("cache lock").remove(id);
        self.fetching.forget(id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::minutes(minutes)
    }

    #[tokio::test]
    async fn fresh_stale_outage_and_retry() {
        let cache = Published::<u32>::default();
        let fetches = AtomicUsize::new(0);
        let fetch = |result: Result<u32, String>| {
            let fetches = &fetches;
            move |_stale| {
                fetches.fetch_add(1, Ordering::SeqCst);
                async move { result }
            }
        };
        assert_eq!(*cache.get("c", "v1", t(0), true, fetch(Ok(1))).await.unwrap(), 1);
        assert_eq!(*cache.get("c", "v1", t(59), true, fetch(Ok(2))).await.unwrap(), 1, "fresh for an hour");
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // An outage at the hourly refresh keeps the last good copy, and asks
        // again a minute later, not before.
        assert_eq!(*cache.get("c", "v1", t(61), true, fetch(Err("down".into()))).await.unwrap(), 1);
        assert_eq!(*cache.get("c", "v1", t(61), true, fetch(Ok(3))).await.unwrap(), 1);
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        assert_eq!(*cache.get("c", "v1", t(62), true, fetch(Ok(3))).await.unwrap(), 3);
        // Never fetched: the failure is the caller's.
        assert!(cache.get("new", "v1", t(0), true, fetch(Err("down".into()))).await.is_err());
        // A changed configuration is fetched afresh; inline copies never expire.
        assert_eq!(*cache.get("c", "v2", t(62), false, fetch(Ok(4))).await.unwrap(), 4);
        assert_eq!(*cache.get("c", "v2", t(10_000), false, fetch(Ok(5))).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn forced_refetches_are_spaced() {
        let cache = Published::<u32>::default();
        let first = cache.get("c", "v", t(0), true, |_| async { Ok::<_, String>(1) }).await.unwrap();
        let second =
            cache.refetch("c", &first, t(1), |_| async { Ok::<_, String>(2) }).await.unwrap().unwrap();
        assert_eq!(*second, 2);
        // Another caller still holding the first copy gets the new one.
        assert_eq!(
            *cache.refetch("c", &first, t(1), |_| async { Ok::<_, String>(9) }).await.unwrap().unwrap(),
            2
        );
        // Within ten seconds, no second fetch.
        let again = cache.refetch("c", &second, t(1), |_| async { Ok::<_, String>(3) }).await.unwrap();
        assert!(again.is_none());
        assert!(cache.refetch("c", &second, t(2), |_| async { Ok::<_, String>(3) }).await.unwrap().is_some());
    }
}
