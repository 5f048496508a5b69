//! Periodic work on every node: cleaning up rows that have served their
//! purpose (lapsed rate limit counters, audit events past their retention;
//! the deletes are idempotent), and
//! re-reading the master key file so that a rotation reaches this node.

use std::time::Duration;

use crate::state::{AppState, WeakState};

const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Starts the sweep; it ends by itself once the service's state is gone.
pub(crate) fn spawn(state: &AppState) {
    let weak = state.downgrade();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(state) = WeakState::upgrade(&weak) else { return };
            sweep(&state).await;
        }
    });
}

pub(crate) async fn sweep(state: &AppState) {
    if let Err(e) = state.master_keys().reload() {
        tracing::error!(error = %format!("{e:#}"), "cannot re-read the master key file");
    }
    match state.store().prune_throttles(state.clock().now()).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(pruned = n, "lapsed rate limit counters removed"),
        Err(e) => tracing::warn!(error = %e, "pruning rate limit counters failed"),
    }
    prune_audit(state).await;
}

/// Deletes the audit events older than the retention.
async fn prune_audit(state: &AppState) {
    let retention =
        chrono::Duration::from_std(state.settings().audit_retention).unwrap_or(chrono::Duration::MAX);
    let Some(cutoff) = state.clock().now().checked_sub_signed(retention) else { return };
    match state.store().prune_audit_events(cutoff).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(pruned = n, "audit events past their retention removed"),
        Err(e) => tracing::warn!(error = %e, "pruning audit events failed"),
    }
}
