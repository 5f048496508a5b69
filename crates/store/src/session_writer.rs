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

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::{NewAuditEvent, NewSession, Result, Store};

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

/// Starts the writer for `store` (a handle without a writer of its own, so
/// the task ends when the last `Store` holding the sender is dropped).
pub(crate) fn spawn(store: Store) -> mpsc::Sender<Job> {
    let (sender, mut receiver) = mpsc::channel::<Job>(4 * MAX_BATCH);
    tokio::spawn(async move {
        while let Some(first) = receiver.recv().await {
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
