//! A write transaction that reads first and then writes, in as few round
//! trips as the backend allows.
//!
//! The group-commit writers of SCIM creates and (on a SQLite database
//! that is not a file) of refresh-token rotations read before they write
//! (the verified domains the new addresses fall in; the presented tokens
//! with their sessions and users), decide, and then write everything at
//! once. As a sqlx transaction that is begin, read,
//! write, commit: on SQLite four hand-offs to the connection's thread and
//! back, all made while holding the database's only write lock, so every
//! other writer waits them out (docs/benchmarks.md, "Reads inside the write
//! lock"). Here, on SQLite:
//!
//! - `BEGIN IMMEDIATE` takes the write lock: one hand-off;
//! - the reads run on an embedded reader, on the caller's thread
//!   (`embedded`). They read exactly what the transaction would: the lock
//!   keeps every other writer, in this process or another, from committing
//!   until the transaction ends, and the transaction has written nothing
//!   yet, so the newest commit is what both see;
//! - the writes and the `COMMIT` go as one script: one hand-off.
//!
//! Once anything is written through [`ReadThenWrite::conn`], later reads go
//! through the transaction's own connection, the only one that sees those
//! writes. On PostgreSQL, and on SQLite without readers, it is the usual
//! transaction.
//!
//! The transaction is begun and ended with plain SQL, not with sqlx's
//! `Transaction`, which cannot learn that a script committed. So a
//! transaction dropped while open (a cancelled future) closes its
//! connection, which ends it, rather than hand it on mid-transaction
//! ([`Lease::mid_transaction`]).

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AssertSqlSafe};

use crate::columns::Columns;
use crate::inserts::Inserts;
use crate::lease::Lease;
use crate::{Backend, Result, Store};

pub(crate) struct ReadThenWrite<'s> {
    store: &'s Store,
    /// The transaction's connection; `None` once it has ended.
    lease: Option<Lease>,
    /// Whether anything was written through [`ReadThenWrite::conn`].
    wrote: bool,
}

impl<'s> ReadThenWrite<'s> {
    /// Begins a transaction on `lease`, which on SQLite must hold the write
    /// turn (`Store::lease_to_write`).
    pub(crate) async fn begin(store: &'s Store, mut lease: Lease) -> Result<Self> {
        debug_assert!(
            store.backend == Backend::Postgres || lease.holds_write_turn(),
            "a write on SQLite waits for the write turn first"
        );
        let begin = match store.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        // Marked before the BEGIN is sent: if this future is dropped while
        // it is in flight, the transaction may have begun.
        lease.mid_transaction();
        if let Err(e) = sqlx::raw_sql(AssertSqlSafe(begin)).execute(&mut *lease).await {
            // A BEGIN that failed began nothing; its connection goes back
            // through the pool and its test, as a lease's does on an error.
            lease.transaction_ended();
            return Err(e.into());
        }
        Ok(Self { store, lease: Some(lease), wrote: false })
    }

    pub(crate) fn backend(&self) -> Backend {
        self.store.backend
    }

    /// The transaction's connection, to write through; reads after it go
    /// through it too.
    pub(crate) fn conn(&mut self) -> &mut AnyConnection {
        self.wrote = true;
        self.connection()
    }

    /// The transaction has ended: its connection goes to the next lease.
    fn hand_on(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.finish();
        }
    }

    fn connection(&mut self) -> &mut AnyConnection {
        self.lease.as_mut().expect("a transaction holds its connection until it ends")
    }

    /// Sends `inserts` and commits: on SQLite as one script. Returns the
    /// rows of the last statement, as [`Inserts::fetch_in`] does. The
    /// database's error is returned as it is, for the caller to name;
    /// nothing was written then.
    pub(crate) async fn commit_with(
        mut self,
        inserts: Inserts,
    ) -> std::result::Result<Vec<AnyRow>, sqlx::Error> {
        let outcome = match self.store.backend {
            Backend::Sqlite => inserts.fetch_then(self.connection(), "COMMIT").await,
            Backend::Postgres => match inserts.fetch_in(self.connection()).await {
                Ok(rows) => {
                    sqlx::raw_sql(AssertSqlSafe("COMMIT")).execute(self.connection()).await.map(|_| rows)
                }
                Err(e) => Err(e),
            },
        };
        if outcome.is_ok() {
            self.hand_on();
        }
        self.or_roll_back(outcome).await
    }

    /// `outcome`, with the transaction rolled back if it is an error: for
    /// each step between the begin and the commit, so that a failing step
    /// ends it at once (rather than by closing its connection as it is
    /// dropped).
    pub(crate) async fn or_roll_back<T, E>(
        &mut self,
        outcome: std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        if outcome.is_err() {
            self.roll_back().await;
        }
        outcome
    }

    /// Ends the transaction without writing anything it wrote. A
    /// connection that cannot roll back is closed.
    async fn roll_back(&mut self) {
        let Some(mut lease) = self.lease.take() else { return };
        if sqlx::raw_sql(AssertSqlSafe("ROLLBACK")).execute(&mut *lease).await.is_ok() {
            lease.finish();
        } else {
            lease.close().await;
        }
    }
}

/// The rows `sql` selects on `conn`, with `params` bound to `$1`, `$2`, …
/// in order, each decoded by `decode`. Kept prepared, as sqlx does by
/// default: on PostgreSQL a statement prepared afresh is a round trip more.
pub(crate) async fn fetch_rows<T>(
    conn: &mut AnyConnection,
    sql: &str,
    params: &[&str],
    decode: impl Fn(&dyn Columns) -> Result<T>,
) -> Result<Vec<T>> {
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for param in params {
        query = query.bind(*param);
    }
    let rows = query.fetch_all(conn).await?;
    rows.iter().map(|row| decode(row)).collect()
}

/// Where the reads of a write transaction run: its connection, or a
/// [`ReadThenWrite`], which may read elsewhere.
pub(crate) trait ReadRows {
    /// The backend the rows are read from, for its spelling of a statement.
    fn backend(&self) -> Backend;

    /// As [`fetch_rows`]. `sql` is kept prepared, so its text should not
    /// vary with the request: a list is bound as one value
    /// (`crate::in_json_strings`).
    async fn rows<T>(
        &mut self,
        sql: &str,
        params: &[&str],
        decode: impl Fn(&dyn Columns) -> Result<T>,
    ) -> Result<Vec<T>>;
}

impl ReadRows for AnyConnection {
    fn backend(&self) -> Backend {
        crate::backend_of(self)
    }

    async fn rows<T>(
        &mut self,
        sql: &str,
        params: &[&str],
        decode: impl Fn(&dyn Columns) -> Result<T>,
    ) -> Result<Vec<T>> {
        fetch_rows(self, sql, params, decode).await
    }
}

/// On a reader while nothing has been written (the module's
/// documentation), else on the transaction's connection.
impl ReadRows for ReadThenWrite<'_> {
    fn backend(&self) -> Backend {
        ReadThenWrite::backend(self)
    }

    async fn rows<T>(
        &mut self,
        sql: &str,
        params: &[&str],
        decode: impl Fn(&dyn Columns) -> Result<T>,
    ) -> Result<Vec<T>> {
        if let Some(readers) = self.store.readers.as_ref().filter(|_| !self.wrote)
            && let Some(rows) = readers.rows(sql, params, &decode)?
        {
            return Ok(rows);
        }
        fetch_rows(self.connection(), sql, params, decode).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("rw.db").display());
        let store = Store::open(&url).await.unwrap();
        sqlx::query("CREATE TABLE t (v INTEGER UNIQUE)").execute(&store.pool).await.unwrap();
        sqlx::query("INSERT INTO t (v) VALUES (1)").execute(&store.pool).await.unwrap();
        (dir, store)
    }

    async fn values(store: &Store) -> Vec<i64> {
        sqlx::query_scalar("SELECT v FROM t ORDER BY v").fetch_all(&store.pool).await.unwrap()
    }

    fn insert(values: &[i64]) -> Inserts {
        let mut inserts = Inserts::default();
        for v in values {
            inserts.insert("t (v)", 1, 1);
            inserts.bind(*v);
        }
        inserts
    }

    async fn read(tx: &mut ReadThenWrite<'_>) -> Vec<i64> {
        tx.rows("SELECT v FROM t WHERE v >= $1 ORDER BY v", &["0"], |row| row.int("v")).await.unwrap()
    }

    /// Another process's writer inserting `v`, waiting at most `wait` for
    /// the lock: not at all to show that the lock is held, a moment to show
    /// that it is free (the store's own background work, the trigram queue
    /// and the checkpoints, may hold it for an instant). It asks for the
    /// lock first, with `BEGIN IMMEDIATE`, as the store's writers do, so a
    /// refusal is about the lock alone. It waits off the runtime's thread:
    /// these tests run on one thread, and a background task of the store
    /// caught between its `BEGIN` and its `COMMIT` would otherwise hold the
    /// lock for the whole wait (how these tests failed now and then).
    async fn other_writer_inserts(
        dir: &tempfile::TempDir,
        wait: std::time::Duration,
        v: i64,
    ) -> rusqlite::Result<()> {
        let path = dir.path().join("rw.db");
        tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open(path)?;
            conn.busy_timeout(wait)?;
            conn.execute_batch(&format!("BEGIN IMMEDIATE; INSERT INTO t (v) VALUES ({v}); COMMIT"))
        })
        .await
        .expect("the other writer ran")
    }

    #[tokio::test]
    async fn reads_run_on_a_reader_under_the_write_lock_and_writes_go_with_the_commit() {
        let (dir, store) = store().await;
        let readers = store.readers.clone().unwrap();
        let mut tx = ReadThenWrite::begin(&store, store.lease_to_write().await.unwrap()).await.unwrap();
        let answered = readers.answered();
        assert_eq!(read(&mut tx).await, [1]);
        assert_eq!(readers.answered(), answered + 1, "read on the caller's thread");
        // The write lock is held from the BEGIN: no one else can commit
        // between what the transaction read and its commit.
        let refused = other_writer_inserts(&dir, std::time::Duration::ZERO, 9).await.unwrap_err();
        assert_eq!(refused.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy));
        tx.commit_with(insert(&[2, 3])).await.unwrap();
        assert_eq!(values(&store).await, [1, 2, 3]);
        // The lock and the connection are free again.
        other_writer_inserts(&dir, std::time::Duration::from_secs(5), 4).await.unwrap();
        let tx = ReadThenWrite::begin(&store, store.lease_to_write().await.unwrap()).await.unwrap();
        tx.commit_with(insert(&[5])).await.unwrap();
        assert_eq!(values(&store).await, [1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn reads_after_a_write_see_it() {
        let (_dir, store) = store().await;
        let readers = store.readers.clone().unwrap();
        let mut tx = ReadThenWrite::begin(&store, store.lease_to_write().await.unwrap()).await.unwrap();
        insert(&[2]).execute_in(tx.conn()).await.unwrap();
        let answered = readers.answered();
        assert_eq!(read(&mut tx).await, [1, 2], "a reader would not have seen the 2");
        assert_eq!(readers.answered(), answered);
        tx.commit_with(Inserts::default()).await.unwrap();
        assert_eq!(values(&store).await, [1, 2]);
    }

    #[tokio::test]
    async fn a_failing_write_writes_nothing_and_frees_the_lock() {
        let (dir, store) = store().await;
        let mut tx = ReadThenWrite::begin(&store, store.lease_to_write().await.unwrap()).await.unwrap();
        insert(&[2]).execute_in(tx.conn()).await.unwrap();
        // The 3 goes in, then the 1 is a duplicate: the script stops there.
        let Err(refused) = tx.commit_with(insert(&[3, 1])).await else { panic!("a duplicate was written") };
        assert!(matches!(&refused, sqlx::Error::Database(db) if db.is_unique_violation()), "{refused}");
        assert_eq!(values(&store).await, [1]);
        other_writer_inserts(&dir, std::time::Duration::from_secs(5), 4).await.unwrap();
        let tx = ReadThenWrite::begin(&store, store.lease_to_write().await.unwrap()).await.unwrap();
        tx.commit_with(insert(&[5])).await.unwrap();
        assert_eq!(values(&store).await, [1, 4, 5]);
    }

    /// A transaction whose owner went away (a cancelled future) ends with
    /// its connection: what it wrote is gone, and the next writer writes.
    #[tokio::test]
    async fn a_transaction_dropped_open_is_rolled_back_by_closing_its_connection() {
        let (_dir, store) = store().await;
        let mut tx = ReadThenWrite::begin(&store, store.lease_to_write().await.unwrap()).await.unwrap();
        insert(&[2]).execute_in(tx.conn()).await.unwrap();
        drop(tx);
        let tx = ReadThenWrite::begin(&store, store.lease_to_write().await.unwrap()).await.unwrap();
        tx.commit_with(insert(&[3])).await.unwrap();
        assert_eq!(values(&store).await, [1, 3]);
    }
}
