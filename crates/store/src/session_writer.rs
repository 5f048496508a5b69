//! Group commit for new sessions.
//!
//! Every sign-in writes a session, its first refresh token and its audit
//! event in one transaction. Under load those transactions queue for the
//! database's single writer (SQLite) or for commits (PostgreSQL), and the
//! pass-through benchmark showed them to be the ceiling on sign-ins. So one
//! writer task takes whatever sessions are waiting and writes them all in one
//! transaction with multi-row inserts: five statements per batch instead of
//! five per sign-in. Each caller still learns its own outcome: if a batch
//! fails, its sessions are retried one by one, so one bad row cannot fail
//! the others.
//!
//! The same task keeps SQLite's write-ahead log in check: a passive
//! checkpoint every second, instead of one inside whichever commit crosses
//! the log's size threshold.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::{Backend, NewAuditEvent, NewSession, Result, Store};

/// What one new session writes.
#[derive(Debug, Clone)]
pub(crate) struct SessionRow {
    pub(crate) session: NewSession,
    pub(crate) refresh_hash: String,
    pub(crate) audit: Option<NewAuditEvent>,
    pub(crate) now: DateTime<Utc>,
}

pub(crate) struct Job {
    row: SessionRow,
    done: oneshot::Sender<Result<()>>,
}

/// Sessions written in one batch at most. Each needs at most 23 bind
/// parameters, far below either backend's limit.
const MAX_BATCH: usize = 64;

/// How often the SQLite write-ahead log is folded back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Starts the writer for `store` (a handle without a writer of its own, so
/// the task ends when the last `Store` holding the sender is dropped).
pub(crate) fn spawn(store: Store) -> mpsc::Sender<Job> {
    let (sender, mut receiver) = mpsc::channel::<Job>(4 * MAX_BATCH);
    tokio::spawn(async move {
        let mut checkpoints = tokio::time::interval(CHECKPOINT_EVERY);
        checkpoints.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let checkpointing = Arc::new(AtomicBool::new(false));
        loop {
            let first = tokio::select! {
                job = receiver.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
                _ = checkpoints.tick() => {
                    store.checkpoint_in_background(&checkpointing);
                    continue;
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let rows: Vec<&SessionRow> = batch.iter().map(|j| &j.row).collect();
            match store.write_sessions(&rows).await {
                Ok(()) => {
                    for job in batch {
                        let _ = job.done.send(Ok(()));
                    }
                }
                Err(e) if batch.len() == 1 => {
                    let _ = batch.pop().map(|job| job.done.send(Err(e)));
                }
                Err(_) => {
                    for job in batch {
                        let result = store.write_sessions(&[&job.row]).await;
                        let _ = job.done.send(result);
                    }
                }
            }
        }
    });
    sender
}

impl Store {
    /// Folds SQLite's write-ahead log back into the database without blocking
    /// anyone (a PASSIVE checkpoint), on a task of its own, one at a time.
    /// Commits never pay for a checkpoint: automatic ones are turned off.
    fn checkpoint_in_background(&self, running: &Arc<AtomicBool>) {
        if self.backend != Backend::Sqlite || running.swap(true, Ordering::AcqRel) {
            return;
        }
        let (pool, running) = (self.pool.clone(), running.clone());
        tokio::spawn(async move {
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
            running.store(false, Ordering::Release);
        });
    }

    /// Hands the row to the writer and waits for its outcome; writes it
    /// directly when there is no writer (the writer's own handle) or it has
    /// stopped.
    pub(crate) async fn write_session_row(&self, row: SessionRow) -> Result<()> {
        if let Some(writer) = &self.session_writer {
            let (done, outcome) = oneshot::channel();
            match writer.send(Job { row, done }).await {
                Ok(()) => {
                    if let Ok(result) = outcome.await {
                        return result;
                    }
                    // The writer went away mid-job; nothing is known to be
                    // written, and the ids are fresh, so write it here.
                    return Err(crate::StoreError::Config("the session writer stopped".into()));
                }
                Err(mpsc::error::SendError(job)) => return self.write_sessions(&[&job.row]).await,
            }
        }
        self.write_sessions(&[&row]).await
    }
}
