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
//!    waiting for, or holding up, readers and writers. While the frames
//!    that commits added during a pass are more than [`SMALL_REST`], it
//!    runs again (at most [`MAX_CONCURRENT_PASSES`] times): each pass is
//!    shorter than the one before, so fewer frames pile up behind it.
//! 2. PASSIVE once more, holding this process's write turn: only the few
//!    frames committed during the last pass are left, so it is short, and
//!    with no commit racing it the log ends fully copied. That lets the next
//!    commit start the log over. Without this pass the log never caught up
//!    under a steady stream of writes: it grew by about 70 MB a second in
//!    the pass-through benchmark.
//!
//! Commits wait while the second pass runs. With a single first pass, that
//! pass had the whole first pass's worth of commits to copy and held the
//! writers up for 4 to 6 ms every interval under the pass-through
//! benchmark's load, enough to show in its p99. Converging first, it holds
//! them for 0.1 to 4 ms, most of it the two syncs (log, then database file)
//! every checkpoint makes with `synchronous=NORMAL`.
//!
//! `journal_size_limit` then truncates a log that was started over, so a
//! burst does not leave a large file behind.
//!
//! Before each checkpoint the same task brings the trigram index up to date
//! (`trigrams.rs`).
//!
//! The task ends when the last `Store` handle that owns it is dropped.

use std::time::Duration;

use tokio::sync::oneshot;

use crate::Store;

pub(crate) const INTERVAL: Duration = Duration::from_millis(500);

/// Frames (pages) left for the pass that holds the writers up: about 256 KiB
/// with the default page size, a fraction of a millisecond to copy.
const SMALL_REST: i64 = 64;

/// First passes per checkpoint at most, should the writers outpace them.
const MAX_CONCURRENT_PASSES: usize = 4;

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
            // The trigram index catches up first (trigrams.rs), so that
            // this checkpoint copies its pages too.
            match store.index_pending_trigrams().await {
                Ok(_) => {}
                Err(_) if store.pool.is_closed() => break,
                Err(e) => {
                    tracing::warn!(error = %e, "indexing trigrams failed; retrying at the next interval")
                }
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
        let mut before = self.passive_checkpoint().await?;
        for _ in 1..MAX_CONCURRENT_PASSES {
            let after = self.passive_checkpoint().await?;
            if after.added_since(&before) <= SMALL_REST {
                break;
            }
            before = after;
        }
        let _turn = self.write_turn().await;
        Ok(self.passive_checkpoint().await?.left())
    }

    async fn passive_checkpoint(&self) -> crate::Result<Pass> {
        let (_busy, log, copied): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&self.pool).await?;
        Ok(Pass { log: log.max(0), copied: copied.max(0) })
    }
}

/// What a checkpoint pass saw: the frames in the log, and how many of them
/// are in the database file now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pass {
    log: i64,
    copied: i64,
}

impl Pass {
    /// Frames still only in the log.
    fn left(&self) -> i64 {
        self.log - self.copied
    }

    /// Frames committed between `earlier` and this pass: the work this pass
    /// had beyond what `earlier` left. A log shorter than before was started
    /// over in between, and all of it is new.
    fn added_since(&self, earlier: &Pass) -> i64 {
        if self.log < earlier.log { self.log } else { self.log - earlier.copied }
    }
}

#[cfg(test)]
mod tests {
    use super::Pass;

    #[test]
    fn frames_added_between_passes() {
        let first = Pass { log: 1000, copied: 1000 };
        assert_eq!(Pass { log: 1040, copied: 1040 }.added_since(&first), 40);
        // A reader held frames back: they count again, as work still to do.
        let held = Pass { log: 1000, copied: 900 };
        assert_eq!(Pass { log: 1010, copied: 1010 }.added_since(&held), 110);
        // The log was started over in between: everything in it is new.
        assert_eq!(Pass { log: 30, copied: 30 }.added_since(&first), 30);
        assert_eq!(Pass { log: 30, copied: 25 }.left(), 5);
    }
}
