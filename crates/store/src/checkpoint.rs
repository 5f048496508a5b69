//! SQLite's WAL checkpoints, moved off the request path.
//!
//! By default SQLite checkpoints inside whichever commit takes the WAL past
//! 1000 pages: that commit copies the log into the database and syncs it to
//! disk before it returns. Under a steady stream of sign-ins this landed on
//! about one request in a hundred and made it several milliseconds slower
//! than the rest (the pass-through benchmark's p99). So the store's
//! connections turn automatic checkpoints off, and this task checkpoints
//! every [`INTERVAL`] instead, in two passes:
//!
//! 1. PASSIVE, alongside the writers: it copies the bulk of the log without
//!    waiting for, or holding up, readers and writers.
//! 2. PASSIVE again, holding this process's write turn: only the frames
//!    committed during the first pass are left, so it is short, and with no
//!    commit racing it the log ends fully copied. That lets the next commit
//!    start the log over. Without this pass the log never caught up under
//!    a steady stream of writes: it grew by about 70 MB a second in the
//!    pass-through benchmark.
//!
//! `journal_size_limit` then truncates a log that was started over, so a
//! burst does not leave a large file behind.
//!
//! The task ends when the last `Store` handle that owns it is dropped.

use std::time::Duration;

use tokio::sync::oneshot;

use crate::Store;

pub(crate) const INTERVAL: Duration = Duration::from_millis(500);

/// Kept by the `Store` handles; dropping the last one stops the task.
pub(crate) type Stop = std::sync::Arc<oneshot::Sender<()>>;

/// Starts checkpointing `store`'s database (a handle that does not own a
/// checkpointer itself).
pub(crate) fn spawn(store: Store) -> Stop {
    let (stop, mut stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = ticks.tick() => {}
            }
            match store.checkpoint().await {
                Ok(_) => {}
                // Closed (by `Store::close`) before or during this pass.
                Err(_) if store.pool.is_closed() => break,
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; retrying at the next interval"),
            }
        }
    });
    std::sync::Arc::new(stop)
}

impl Store {
    /// Copies SQLite's WAL into the database (the two passes above); returns
    /// the frames left in the log that could not be copied yet, because a
    /// reader still needed them. Always 0 on PostgreSQL.
    pub async fn checkpoint(&self) -> crate::Result<i64> {
        if self.backend != crate::Backend::Sqlite {
            return Ok(0);
        }
        self.passive_checkpoint().await?;
        let _turn = self.write_turn().await;
        self.passive_checkpoint().await
    }

    async fn passive_checkpoint(&self) -> crate::Result<i64> {
        let (_busy, log, copied): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&self.pool).await?;
        Ok(log.max(0) - copied.max(0))
    }
}
