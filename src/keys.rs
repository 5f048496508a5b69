//! The process's view of the signing keys, which live in the database.
//!
//! Each process caches the opened [`KeyRing`] briefly and reloads it when the
//! cache is stale or a token names a key it has not seen (another process
//! rotated). The JWKS is always read fresh, so every process publishes the
//! same set.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use gatehouse_core::Clock;
use gatehouse_session::{JwkSet, KeyRing, SessionError, SigningAlgorithm, generate_signing_key};
use gatehouse_store::{Store, StoreError};

use crate::master_keys::MasterKeyStore;

/// How long a process signs with a cached key ring before looking again.
const CACHE_TTL: chrono::Duration = chrono::Duration::seconds(30);
/// At most one reload per this interval is triggered by unknown `kid`s, so a
/// flood of forged tokens cannot turn into a flood of queries.
const UNKNOWN_KID_RELOAD_INTERVAL: chrono::Duration = chrono::Duration::seconds(1);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Session(#[from] SessionError),
}

struct Cached {
    ring: Arc<KeyRing>,
    loaded_at: DateTime<Utc>,
}

pub struct KeyCache {
    store: Store,
    master: Arc<MasterKeyStore>,
    clock: Arc<dyn Clock>,
    /// How long a retired key stays published: every token it can have signed
    /// has expired by then (access token lifetime, plus the time another
    /// process may keep signing with a cached ring, plus clock skew).
    retention: chrono::Duration,
    cached: RwLock<Option<Cached>>,
}

impl KeyCache {
    pub(crate) fn new(
        store: Store,
        master: Arc<MasterKeyStore>,
        clock: Arc<dyn Clock>,
        access_ttl: Duration,
    ) -> Self {
        let access_ttl = chrono::Duration::from_std(access_ttl).unwrap_or(chrono::Duration::hours(24));
        Self {
            store,
            master,
            clock,
            retention: access_ttl + CACHE_TTL + chrono::Duration::minutes(1),
            cached: RwLock::new(None),
        }
    }

    /// Makes sure a signing key exists, creating the first one if not.
    pub async fn ensure_signing_key(&self, alg: SigningAlgorithm) -> Result<(), KeyError> {
        let ring = self.reload().await?;
        if ring.signing_kid().is_none() {
            self.rotate(alg).await?;
        }
        Ok(())
    }

    /// Adds a new signing key; the previous one keeps verifying (and stays in
    /// the JWKS) until its tokens have expired. Returns the new key's id.
    pub async fn rotate(&self, alg: SigningAlgorithm) -> Result<String, KeyError> {
        let key = generate_signing_key(alg, &self.master.current())?;
        self.store.add_signing_key(&key, self.clock.now()).await?;
        self.reload().await?;
        Ok(key.kid)
    }

    /// The key ring to sign with.
    pub async fn current(&self) -> Result<Arc<KeyRing>, KeyError> {
        let now = self.clock.now();
        if let Some(ring) = self.cached_if(|c| now - c.loaded_at < CACHE_TTL) {
            return Ok(ring);
        }
        self.reload().await
    }

    /// The key ring to verify a token signed with `kid`: reloads once if the
    /// key is unknown, in case another process has just rotated.
    pub async fn for_kid(&self, kid: &str) -> Result<Arc<KeyRing>, KeyError> {
        let ring = self.current().await?;
        if ring.knows(kid) {
            return Ok(ring);
        }
        let now = self.clock.now();
        if let Some(ring) = self.cached_if(|c| now - c.loaded_at < UNKNOWN_KID_RELOAD_INTERVAL) {
            return Ok(ring);
        }
        self.reload().await
    }

    /// The published key set, read from the database.
    pub async fn jwks(&self) -> Result<JwkSet, KeyError> {
        let stored = self.store.published_signing_keys(self.clock.now() - self.retention).await?;
        Ok(gatehouse_session::published_jwks(&stored)?)
    }

    fn cached_if(&self, fresh: impl Fn(&Cached) -> bool) -> Option<Arc<KeyRing>> {
        let guard = self.cached.read().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().filter(|c| fresh(c)).map(|c| c.ring.clone())
    }

    async fn reload(&self) -> Result<Arc<KeyRing>, KeyError> {
        let now = self.clock.now();
        let stored = self.store.published_signing_keys(now - self.retention).await?;
        let ring = match KeyRing::open(&stored, &self.master.current()) {
            // Re-sealed under a key this process has not read yet: read the
            // key file again.
            Err(SessionError::UnknownMasterKey(_)) if self.master.refresh() => {
                KeyRing::open(&stored, &self.master.current())?
            }
            other => other?,
        };
        let ring = Arc::new(ring);
        *self.cached.write().unwrap_or_else(|p| p.into_inner()) =
            Some(Cached { ring: ring.clone(), loaded_at: now });
        Ok(ring)
    }
}
