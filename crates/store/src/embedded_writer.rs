//! SQLite writes on a connection, and a thread, of their own.
//!
//! A batch of sign-ins (`Store::apply`, from the session writer in
//! `group_commit`) went to sqlx as one script: `BEGIN IMMEDIATE`, three
//! multi-row inserts, `COMMIT`. Its text varies with the batch's row
//! count, so it was parsed anew for every batch; its values went through
//! sqlx's `Any` arguments into SQLite's; and the script, its answer and
//! the connection's lease each crossed to sqlx's connection thread and
//! back (docs/benchmarks.md, "Where a sign-in's CPU goes, counted").
//! Here the whole transaction is one job on this module's thread, through
//! rusqlite: each table's one-row insert is kept prepared and run once a
//! row (`Inserts::run`), its values bound as they are. A batch of
//! refresh-token rotations is one job too (`sessions::rotate_on`): its
//! read, its decisions and its writes, on one thread under one lock, where
//! its `ReadThenWrite` transaction took two hand-offs to sqlx's thread.
//! So is a batch of SCIM creates (`users::insert_users_on`): the check of
//! its addresses' domains, its users, their email index, their audit
//! events and the tombstones they lift. A batch's read runs the code
//! written for `ReadRows` on the writer's connection (`OnWriter`).
//!
//! What holds, as for the pool's writers:
//! - **One writer at a time.** The writer shares this process's write
//!   turn (`Store::write_turn`) and takes it for each job itself, on the
//!   async side, before the job is queued; the job releases it when its
//!   transaction has ended, and the thread never waits for it. No caller
//!   can forget it. Other processes on the file meet the busy
//!   timeout, as they do with the pool.
//! - **Durable when answered.** The connection has the pool's settings
//!   (`SQLITE_PRAGMAS`: `synchronous = FULL`, so the commit syncs the log
//!   before the caller hears of it; checkpoints left to `checkpoint`) and
//!   enforces foreign keys, as sqlx's connections do by default.
//! - **All or none.** The transaction commits or rolls back whole.
//!   A caller that goes away before its job begins has its job skipped;
//!   one that goes away while it runs has it interrupted at SQLite's next
//!   progress check and rolled back (unless it is already committing).
//! - **Nothing stops the thread but closing.** A job that panics is
//!   answered as failed and the thread goes on. A connection left inside
//!   a transaction (a failed rollback) is closed, and the next job opens
//!   another; a job that finds none can be opened is answered with why.
//!
//! A database that is not a file has no writer, as it has no readers
//! (`embedded`): its writes go through the pool.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::oneshot;

use crate::columns::Columns;
use crate::read_then_write::ReadRows;
use crate::{Backend, Result, StoreError};

/// SQLite's virtual-machine steps between two checks of whether a job's
/// caller has gone (a few microseconds' work).
const PROGRESS_STEPS: std::ffi::c_int = 1000;

/// A job: a transaction to run on the writer's connection, or why there
/// is none.
type Job = Box<dyn FnOnce(std::result::Result<&mut Connection, &rusqlite::Error>) + Send>;

/// The writer of one SQLite database.
#[derive(Debug)]
pub(crate) struct Writer {
    /// `None` once closed.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The process's write turn, shared with the pool's writers.
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Transactions this writer committed, for tests to tell its writes
    /// from the pool's.
    #[cfg(test)]
    committed: Arc<std::sync::atomic::AtomicUsize>,
}

impl Writer {
    /// Opens a connection to the database file at `path` and starts the
    /// writer's thread; its jobs take `turn`, the process's write turn.
    pub(crate) fn start(
        path: PathBuf,
        turn: Arc<tokio::sync::Mutex<()>>,
    ) -> std::result::Result<Self, String> {
        let conn = open(&path).map_err(|e| e.to_string())?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || serve(path, conn, &queue))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
            turn,
            #[cfg(test)]
            committed: Arc::default(),
        })
    }

    /// Runs `write` in one transaction on the writer's connection, holding
    /// the write turn until the transaction has ended, and returns what it
    /// returned.
    pub(crate) async fn transaction<T, F>(&self, write: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let turn = self.turn.clone().lock_owned().await;
        let (done, answer) = oneshot::channel();
        let gone = Gone::default();
        let abandoned = gone.0.clone();
        #[cfg(test)]
        let committed = self.committed.clone();
        let job: Job = Box::new(move |conn| {
            let outcome = match conn {
                Err(e) => Err(StoreError::Unavailable(format!("cannot open the SQLite writer: {e}"))),
                // Its caller has gone: not begun, so nothing is written.
                Ok(_) if abandoned.load(Ordering::Relaxed) => return,
                Ok(conn) => {
                    let outcome = run(conn, &abandoned, write);
                    #[cfg(test)]
                    if outcome.is_ok() {
                        committed.fetch_add(1, Ordering::Relaxed);
                    }
                    outcome
                }
            };
            drop(turn);
            let _ = done.send(outcome);
        });
        let sent = match &*self.jobs.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(jobs) => jobs.send(job).is_ok(),
            None => false,
        };
        if !sent {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        let outcome = answer.await;
        drop(gone);
        outcome.unwrap_or_else(|_| Err(StoreError::Unavailable("the SQLite writer failed mid-write".into())))
    }

    /// Transactions committed so far.
    #[cfg(test)]
    pub(crate) fn committed(&self) -> usize {
        self.committed.load(Ordering::Relaxed)
    }

    /// Stops taking jobs, lets those queued finish, and closes the
    /// connection.
    pub(crate) async fn close(&self) {
        drop(self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// The writer's connection, read inside its job's transaction: code
/// written for [`ReadRows`] (a batch's read before its writes) runs on it
/// through [`at_once`]. The write lock is held from the `BEGIN`, so what
/// it reads is what the transaction's writes follow.
pub(crate) struct OnWriter<'c>(pub(crate) &'c Connection);

impl ReadRows for OnWriter<'_> {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn rows<T>(
        &mut self,
        sql: &str,
        params: &[&str],
        decode: impl Fn(&dyn Columns) -> Result<T>,
    ) -> Result<Vec<T>> {
        Ok(crate::embedded::rows_on(self.0, sql, params, decode)?)
    }
}

/// What `future` gives, polled once: for code written for [`ReadRows`]
/// run on [`OnWriter`], whose reads answer without waiting. Anything else
/// awaited inside it is a bug, and panics (the job fails alone).
pub(crate) fn at_once<T>(future: impl Future<Output = T>) -> T {
    use futures::FutureExt as _;
    std::pin::pin!(future)
        .now_or_never()
        .expect("a job on the SQLite writer waited on something other than its connection")
}

/// Marks its job abandoned when dropped: if the caller's future is
/// dropped while the job is queued or running, the job sees the mark.
/// Dropped once the answer has come, it marks a job that has ended, and
/// nothing reads it.
#[derive(Default)]
struct Gone(Arc<AtomicBool>);

impl Drop for Gone {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The thread: runs each job in turn until the writer is closed.
fn serve(path: PathBuf, conn: Connection, queue: &mpsc::Receiver<Job>) {
    let mut conn = Some(conn);
    while let Ok(job) = queue.recv() {
        if conn.is_none() {
            match open(&path) {
                Ok(opened) => conn = Some(opened),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the SQLite writer's connection");
                    job(Err(&e));
                    continue;
                }
            }
        }
        let Some(current) = conn.as_mut() else { continue };
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(Ok(current)))).is_err() {
            tracing::error!("a write on the SQLite writer panicked; its caller was told it failed");
        }
        // Every job ends its transaction; one that could not (its rollback
        // failed, or it panicked mid-way) leaves a connection that must not
        // be handed the next.
        if !current.is_autocommit()
            && (current.execute_batch("ROLLBACK").is_err() || !current.is_autocommit())
        {
            tracing::warn!("the SQLite writer's connection was left inside a transaction; reopening it");
            conn = None;
        }
    }
}

/// `write` in one `BEGIN IMMEDIATE` transaction, interrupted if `abandoned`
/// is set meanwhile.
fn run<T>(
    conn: &mut Connection,
    abandoned: &Arc<AtomicBool>,
    write: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    let watched = abandoned.clone();
    conn.progress_handler(PROGRESS_STEPS, Some(move || watched.load(Ordering::Relaxed)))?;
    let outcome = (|| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = write(&tx)?;
        tx.commit()?;
        Ok(value)
    })();
    conn.progress_handler(0, None::<fn() -> bool>)?;
    outcome
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    // No CREATE: the file is the pool's, which created and migrated it.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute_batch(crate::SQLITE_PRAGMAS)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn database(dir: &tempfile::TempDir) -> PathBuf {
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE p (id INTEGER PRIMARY KEY); \
             CREATE TABLE c (p INTEGER NOT NULL REFERENCES p (id)); INSERT INTO p VALUES (1);",
        )
        .unwrap();
        path
    }

    fn start(path: &Path) -> Writer {
        Writer::start(path.to_owned(), Arc::default()).unwrap()
    }

    /// Runs `sql` alone in a transaction on `writer`.
    async fn exec(writer: &Writer, sql: &'static str) -> Result<usize> {
        writer.transaction(move |c| Ok(c.execute(sql, [])?)).await
    }

    fn count(path: &Path, table: &str) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn commits_whole_or_not_at_all_and_enforces_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(&dir);
        let writer = start(&path);
        exec(&writer, "INSERT INTO c VALUES (1)").await.unwrap();
        let e = writer
            .transaction(|c| {
                c.execute("INSERT INTO c VALUES (1)", [])?;
                Ok(c.execute("INSERT INTO c VALUES (2)", [])?)
            })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("FOREIGN KEY"), "{e}");
        assert_eq!(count(&path, "c"), 1, "the failed transaction's first row was rolled back");
        assert_eq!(writer.committed(), 1);
        // The connection is clean for the next.
        exec(&writer, "INSERT INTO c VALUES (1)").await.unwrap();
        assert_eq!(count(&path, "c"), 2);
    }

    /// The pool's settings, above all `synchronous = FULL`: a commit is
    /// on disk before its caller hears of it.
    #[tokio::test]
    async fn has_the_pools_durability_settings() {
        let dir = tempfile::tempdir().unwrap();
        let writer = start(&database(&dir));
        let settings = writer
            .transaction(|c| {
                let value = |name: &str| c.pragma_query_value(None, name, |r| r.get::<_, i64>(0));
                Ok([
                    value("synchronous")?,
                    value("foreign_keys")?,
                    value("wal_autocheckpoint")?,
                    value("temp_store")?,
                    value("busy_timeout")?,
                ])
            })
            .await
            .unwrap();
        // FULL is 2, and MEMORY is 2.
        assert_eq!(settings, [2, 1, 0, 2, 10_000]);
    }

    #[tokio::test]
    async fn a_write_that_panics_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(&dir);
        let writer = start(&path);
        let e = writer
            .transaction(|c| {
                c.execute("INSERT INTO c VALUES (1)", [])?;
                panic!("a bug in a write");
                #[allow(unreachable_code)]
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        exec(&writer, "INSERT INTO c VALUES (1)").await.unwrap();
        assert_eq!(count(&path, "c"), 1, "the panicking write's row is not there; the next one's is");
    }

    #[tokio::test]
    async fn a_write_whose_caller_goes_away_writes_nothing_and_frees_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(&dir);
        let writer = Arc::new(start(&path));
        let running = tokio::spawn({
            let writer = writer.clone();
            async move {
                writer
                    .transaction(|c| {
                        Ok(c.execute(
                            "INSERT INTO p WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n \
                             WHERE i < 100000000) SELECT i FROM n",
                            [],
                        )?)
                    })
                    .await
            }
        });
        // Abandoned once it holds the write lock.
        let other = Connection::open(&path).unwrap();
        let started = std::time::Instant::now();
        while other.execute_batch("BEGIN IMMEDIATE; ROLLBACK").is_ok() {
            assert!(started.elapsed() < Duration::from_secs(10), "the write never took the lock");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        running.abort();
        assert!(running.await.unwrap_err().is_cancelled());
        let rows = tokio::task::spawn_blocking(move || {
            other.busy_timeout(Duration::from_secs(20)).unwrap();
            other.execute_batch("BEGIN IMMEDIATE; INSERT INTO c VALUES (1); COMMIT").unwrap();
            other.query_row("SELECT count(*) FROM p", [], |r| r.get::<_, i64>(0)).unwrap()
        })
        .await
        .unwrap();
        assert_eq!(rows, 1, "the abandoned insert wrote nothing");
        assert_eq!(writer.committed(), 0);
        // And the writer goes on.
        exec(&writer, "INSERT INTO p VALUES (7)").await.unwrap();
        assert_eq!(count(&path, "p"), 2);
    }

    /// A job takes the process's write turn itself: it waits while another
    /// writer holds it, and holds it until its transaction has ended.
    #[tokio::test]
    async fn takes_the_turn_and_holds_it_until_its_transaction_has_ended() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(&dir);
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        let writer = Arc::new(Writer::start(path.clone(), turn.clone()).unwrap());
        let held = turn.clone().lock_owned().await;
        let waiting = tokio::spawn({
            let writer = writer.clone();
            async move { exec(&writer, "INSERT INTO c VALUES (1)").await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "it waits while another writer holds the turn");
        assert_eq!(count(&path, "c"), 0);
        drop(held);
        waiting.await.unwrap().unwrap();
        assert_eq!(count(&path, "c"), 1);

        let watched = turn.clone();
        writer
            .transaction(move |c| {
                assert!(watched.try_lock().is_err(), "the turn is held while the transaction runs");
                Ok(c.execute("INSERT INTO c VALUES (1)", [])?)
            })
            .await
            .unwrap();
        assert!(turn.try_lock().is_ok(), "and released when it has ended");
    }

    #[tokio::test]
    async fn once_closed_it_refuses_and_lets_go_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(&dir);
        let writer = start(&path);
        exec(&writer, "INSERT INTO c VALUES (1)").await.unwrap();
        writer.close().await;
        let e = exec(&writer, "INSERT INTO c VALUES (1)").await.unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        assert_eq!(count(&path, "c"), 1);
    }

    #[test]
    fn a_missing_file_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.db");
        assert!(Writer::start(path.clone(), Arc::default()).is_err());
        assert!(!path.exists());
    }
}
