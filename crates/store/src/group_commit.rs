//! Group commit: rows that many requests write at once share transactions.
//!
//! Every sign-in writes a session, its first refresh token and its audit
//! event in one transaction, and every SCIM create a user and its audit
//! event. Under load those transactions queue for the database's single
//! writer (SQLite) or for commits (PostgreSQL): the pass-through benchmark
//! showed the session write to be the ceiling on sign-ins. So a writer task
//! per kind of row takes whatever rows are waiting and writes them all in one
//! transaction with multi-row inserts. Each caller still learns its own
//! outcome: if a batch fails, its rows are retried one by one, so one bad row
//! (a duplicate userName, a user deleted meanwhile) fails alone, with its own
//! error. Refresh-token rotations are batched the same way; each of them has
//! an outcome of its own (rotated, reused, invalid), which the batch returns
//! row by row. On a SQLite file each batch is then one job of the embedded
//! writer (`embedded_writer`), on its thread; elsewhere a transaction
//! through the pool.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::{mpsc, oneshot};

use crate::{Result, Store};

/// A batch being written: each row's outcome, in the order of the rows.
pub(crate) type BatchFuture<'a, T> = Pin<Box<dyn Future<Output = Result<Vec<T>>> + Send + 'a>>;

/// A row that can be written in batches.
pub(crate) trait BatchRow: Send + Sync + Sized + 'static {
    /// What writing one row tells its caller.
    type Outcome: Send + 'static;

    /// Writes `rows` in one transaction, all or none, and returns each row's
    /// outcome in the order of `rows`.
    fn write<'a>(store: &'a Store, rows: &'a [&'a Self]) -> BatchFuture<'a, Self::Outcome>;
}

pub(crate) struct Job<R: BatchRow> {
    row: R,
    done: oneshot::Sender<Result<R::Outcome>>,
}

pub(crate) type Writer<R> = mpsc::Sender<Job<R>>;

/// Rows written in one batch at most; far below either backend's limit on
/// bind parameters for the rows written here.
const MAX_BATCH: usize = 64;

/// Starts the writer for `store` (a handle without writers of its own, so
/// the task ends when the last `Store` holding the sender is dropped).
pub(crate) fn spawn<R: BatchRow>(store: Store) -> Writer<R> {
    let (sender, mut receiver) = mpsc::channel::<Job<R>>(4 * MAX_BATCH);
    // On a SQLite file a batch is a commit of the embedded writer's, whose
    // cost (a frame of the log for every page it changed, and a sync) is
    // this process's CPU, shared by the rows of the batch.
    let gather = store.writer.is_some();
    tokio::spawn(async move {
        while let Some(first) = receiver.recv().await {
            if gather {
                // The first row's caller woke this task, and tokio runs a
                // task woken by the running one next, ahead of others
                // already ready, some of them callers about to hand in
                // their rows: they run first, and share the batch. (On
                // PostgreSQL the turn lengthened every batch's round trip
                // more than it saved: docs/benchmarks.md, "One turn before
                // each batch on SQLite".)
                tokio::task::yield_now().await;
            }
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let rows: Vec<&R> = batch.iter().map(|j| &j.row).collect();
            match R::write(&store, &rows).await {
                Ok(outcomes) => {
                    debug_assert_eq!(outcomes.len(), batch.len(), "a batch returns one outcome per row");
                    for (job, outcome) in batch.into_iter().zip(outcomes) {
                        let _ = job.done.send(Ok(outcome));
                    }
                }
                Err(e) if batch.len() == 1 => {
                    let _ = batch.pop().map(|job| job.done.send(Err(e)));
                }
                // No row is at fault when the database is down, and trying
                // each alone would make every caller wait out the outage.
                Err(e) if e.is_unavailable() => {
                    let cause = e.to_string();
                    for job in batch {
                        let _ = job.done.send(Err(crate::StoreError::Unavailable(cause.clone())));
                    }
                }
                Err(_) => {
                    for job in batch {
                        let result = write_one(&store, &job.row).await;
                        let _ = job.done.send(result);
                    }
                }
            }
        }
    });
    sender
}

/// Hands `row` to `writer` and waits for its outcome; writes it directly
/// when there is no writer (a writer's own handle) or it has stopped.
pub(crate) async fn submit<R: BatchRow>(
    store: &Store,
    writer: Option<&Writer<R>>,
    row: R,
) -> Result<R::Outcome> {
    let Some(writer) = writer else { return write_one(store, &row).await };
    let (done, outcome) = oneshot::channel();
    match writer.send(Job { row, done }).await {
        Ok(()) => outcome
            .await
            .unwrap_or_else(|_| Err(crate::StoreError::Config("the batch writer stopped mid-write".into()))),
        Err(mpsc::error::SendError(job)) => write_one(store, &job.row).await,
    }
}

/// Writes `row` as a batch of its own.
async fn write_one<R: BatchRow>(store: &Store, row: &R) -> Result<R::Outcome> {
    let mut outcomes = R::write(store, &[row]).await?;
    outcomes.pop().ok_or_else(|| crate::StoreError::Config("a batch of one row returned no outcome".into()))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A row that records the batches it is written in.
    struct Probe {
        id: usize,
        batches: Arc<Mutex<Vec<Vec<usize>>>>,
    }

    impl BatchRow for Probe {
        type Outcome = ();

        fn write<'a>(_: &'a Store, rows: &'a [&'a Self]) -> BatchFuture<'a, ()> {
            Box::pin(async move {
                let ids = rows.iter().map(|row| row.id).collect();
                rows[0].batches.lock().unwrap().push(ids);
                Ok(vec![(); rows.len()])
            })
        }
    }

    /// Callers that become ready together share one batch, although the
    /// first of them to run wakes the writer, which tokio would run next,
    /// before the others (on one worker, so that the order is tokio's).
    #[test]
    fn callers_ready_together_share_a_batch() {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&format!("sqlite://{}?mode=rwc", dir.path().join("g.db").display()))
                .await
                .unwrap();
            let writer = spawn::<Probe>(store.clone());
            let batches = Arc::new(Mutex::new(Vec::new()));
            let (go, ready) = tokio::sync::watch::channel(false);
            let callers: Vec<_> = (0..4)
                .map(|id| {
                    let (store, writer, mut ready) = (store.clone(), writer.clone(), ready.clone());
                    let row = Probe { id, batches: batches.clone() };
                    tokio::spawn(async move {
                        ready.wait_for(|go| *go).await.unwrap();
                        submit(&store, Some(&writer), row).await.unwrap();
                    })
                })
                .collect();
            // Sent from a task on the worker, so that all four callers are
            // ready there before any of them runs.
            tokio::spawn(async move { go.send(true).unwrap() }).await.unwrap();
            for caller in callers {
                caller.await.unwrap();
            }
            let batches = batches.lock().unwrap().clone();
            assert_eq!(batches.len(), 1, "one batch: {batches:?}");
            assert_eq!(batches[0].len(), 4, "{batches:?}");
            store.close().await;
        });
    }
}
