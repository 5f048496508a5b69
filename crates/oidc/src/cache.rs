//! Each connection's provider information, fetched once and kept: sign-ins
//! should not wait on the provider's discovery document every time. The
//! rules (an hour fresh, the last good copy through an outage, a refetch on
//! an unknown `kid` at most every ten seconds) are the one cache every kind
//! of provider shares, `gatehouse_outbound::Published`.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use gatehouse_outbound::{OutboundClient, Published};

use crate::OidcConnection;
use crate::discovery::{DiscoveryError, ProviderInfo, discover, refetch_keys};

/// Provider information per connection, keyed by connection id.
#[derive(Default, Debug)]
pub struct ProviderCache {
    published: Published<ProviderInfo>,
}

impl ProviderCache {
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
        self.published.get(id, version, now, true, |_| discover(client, connection)).await
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
        self.published.refetch(id, seen, now, |seen| async move { refetch_keys(client, &seen).await }).await
    }

    /// Forgets a connection (it was changed or deleted).
    pub fn forget(&self, id: &str) {
        self.published.forget(id);
    }
}
