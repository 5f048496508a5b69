//! Connections handed from one operation to the next without sqlx's test.
//!
//! sqlx's pool tests every connection as it comes back (a ping), whatever
//! the operation that used it: on PostgreSQL one more round trip to the
//! server, on SQLite one more hand-off to the connection's thread and back.
//! That test is the pool's guard against a connection left mid-operation,
//! by a future dropped at an `.await` or a transaction that was never
//! finished. An operation that ran to its end knows better: its connection
//! is idle and outside any transaction. So the hot paths (a sign-in's read,
//! the SCIM token check, a user by id, a filtered list, the group-commit
//! writers) take a [`Lease`] and hand it back with
//! [`Lease::finish`] when they are done, and the next lease takes that
//! connection as it is. Any other end of a lease (an error returned with
//! `?`, a cancelled future) drops it, and the connection goes back through
//! the pool and its test, exactly as before; unless the lease was marked
//! [`Lease::mid_transaction`], when the connection is closed: the pool's
//! test cannot see a transaction begun in plain SQL.
//!
//! Kept connections are checked out of the pool while they wait here, so
//! at most half the pool waits here, and callers that use the pool
//! directly always have the other half. And a connection is kept only
//! while the pool has one to spare (idle, or room to open one): otherwise
//! someone may be waiting in the pool, which a connection kept here would
//! not wake (on SQLite's four connections, 64 concurrent sign-ins lost 8%
//! of their rate to that). A connection that waited longer than
//! `PING_IF_IDLE_FOR` goes back through the pool (and its test) instead of
//! being used, as the pool treats its own idle connections.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection};
use tokio::sync::OwnedMutexGuard;

use crate::{PING_IF_IDLE_FOR, Result, Store};

/// The connections finished leases left, most recently finished last.
#[derive(Debug)]
pub(crate) struct Kept {
    idle: Mutex<Vec<(PoolConnection<Any>, Instant)>>,
    capacity: usize,
    pool: AnyPool,
    /// Set as the store closes: from then on nothing is kept.
    closed: AtomicBool,
}

impl Kept {
    /// Room for half of `pool`'s connections.
    pub(crate) fn new(pool: AnyPool) -> Self {
        let capacity = pool.options().get_max_connections() as usize / 2;
        Self {
            idle: Mutex::new(Vec::with_capacity(capacity)),
            capacity,
            pool,
            closed: AtomicBool::new(false),
        }
    }

    /// Whether the pool has a connection for whoever asks it next without
    /// waiting for one to come back: an idle one, or room to open one.
    fn pool_can_spare(&self) -> bool {
        self.pool.num_idle() > 0 || self.pool.size() < self.pool.options().get_max_connections()
    }

    /// The most recently finished connection that is still fresh; stale
    /// ones go back to the pool on the way.
    fn take(&self) -> Option<PoolConnection<Any>> {
        let mut stale = Vec::new();
        let fresh = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                match idle.pop() {
                    Some((conn, since)) if since.elapsed() <= PING_IF_IDLE_FOR => break Some(conn),
                    Some((conn, _)) => stale.push(conn),
                    None => break None,
                }
            }
        };
        // Dropped outside the lock: each one is returned to the pool, which
        // tests it.
        drop(stale);
        fresh
    }

    /// Keeps `conn` if there is room; otherwise it goes back to the pool.
    fn put(&self, conn: PoolConnection<Any>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.capacity && !self.closed.load(Ordering::Acquire) && self.pool_can_spare() {
            idle.push((conn, Instant::now()));
            return;
        }
        drop(idle);
        // Back to the pool, outside the lock.
        drop(conn);
    }

    /// Returns every kept connection to the pool and keeps none from now
    /// on: the pool's `close` waits for all of its connections.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let all: Vec<_> = self.idle.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        drop(all);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

/// A connection for one operation; see the module's documentation.
pub(crate) struct Lease {
    conn: Option<PoolConnection<Any>>,
    kept: Arc<Kept>,
    /// This process's SQLite write turn, for a lease taken to write.
    turn: Option<OwnedMutexGuard<()>>,
    /// Whether the connection may be inside a transaction that only this
    /// lease's holder can end ([`Lease::mid_transaction`]).
    mid_transaction: bool,
}

impl Lease {
    /// Whether this lease holds the write turn (always false on
    /// PostgreSQL, which has none).
    pub(crate) fn holds_write_turn(&self) -> bool {
        self.turn.is_some()
    }

    /// Closes the connection instead of handing it on: for one left in a
    /// state that cannot be undone.
    pub(crate) async fn close(mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }

    /// From here on the connection may be inside a transaction begun and
    /// ended in plain SQL (a script's `BEGIN IMMEDIATE … COMMIT`, or
    /// `ReadThenWrite`), which sqlx does not track and the pool's test does
    /// not see. Dropped before [`Lease::finish`] or [`Lease::close`] (an
    /// error passed up with `?`, a cancelled future), the lease closes its
    /// connection, which ends the transaction, rather than hand it back to
    /// the pool with the transaction open and SQLite's write lock held.
    pub(crate) fn mid_transaction(&mut self) {
        self.mid_transaction = true;
    }

    /// The transaction [`Lease::mid_transaction`] spoke of has ended (or
    /// never began): a lease dropped from here on goes back through the
    /// pool and its test, as any lease does.
    pub(crate) fn transaction_ended(&mut self) {
        self.mid_transaction = false;
    }

    /// The operation is over and its connection clean: keep it for the
    /// next lease. A connection still inside a transaction (which a
    /// finished operation never leaves, short of leaking its
    /// `Transaction`) is closed: the pool would hand it on with the
    /// transaction open.
    pub(crate) fn finish(mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        if conn.is_in_transaction() {
            conn.close_on_drop();
            return;
        }
        self.kept.put(conn);
    }
}

impl Deref for Lease {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        self.conn.as_ref().expect("a lease holds its connection until it ends")
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.conn.as_mut().expect("a lease holds its connection until it ends")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.mid_transaction
            && let Some(conn) = self.conn.as_mut()
        {
            conn.close_on_drop();
        }
    }
}

impl Store {
    /// A connection for one operation: a kept one if there is one, else one
    /// from the pool.
    pub(crate) async fn lease(&self) -> Result<Lease> {
        let conn = match self.kept.take() {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        Ok(Lease { conn: Some(conn), kept: self.kept.clone(), turn: None, mid_transaction: false })
    }

    /// A lease for writing: on SQLite it first waits for this process's
    /// write turn (as `begin_write` does, so that no connection is held
    /// while waiting) and holds it until the lease ends.
    pub(crate) async fn lease_to_write(&self) -> Result<Lease> {
        let turn = self.write_turn().await;
        let mut lease = self.lease().await?;
        lease.turn = turn;
        Ok(lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("l.db").display());
        (dir, Store::open(&url).await.unwrap())
    }

    /// Connections dropped while the store opened come back to the pool in
    /// tasks of their own; until one has, nothing is kept.
    async fn until_the_pool_can_spare(store: &Store) {
        for _ in 0..500 {
            if store.kept.pool_can_spare() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the pool never had a connection to spare");
    }

    /// A finished lease's connection serves the next one: the same
    /// connection, not a trip through the pool.
    #[tokio::test]
    async fn a_finished_lease_hands_its_connection_on() {
        let (_dir, store) = store().await;
        let mut lease = store.lease().await.unwrap();
        sqlx::query("CREATE TEMP TABLE mine (x INTEGER)").execute(&mut *lease).await.unwrap();
        until_the_pool_can_spare(&store).await;
        lease.finish();
        assert_eq!(store.kept.len(), 1);
        let mut next = store.lease().await.unwrap();
        // A temporary table exists only on the connection that made it.
        sqlx::query("SELECT x FROM mine").fetch_all(&mut *next).await.expect("the same connection");
        next.finish();
        store.close().await;
    }

    /// A lease that ends any other way (an error, a cancelled future) is not
    /// kept: its connection goes back through the pool and its test.
    #[tokio::test]
    async fn an_unfinished_lease_is_not_kept() {
        let (_dir, store) = store().await;
        let mut lease = store.lease().await.unwrap();
        assert!(sqlx::query("SELECT nothing FROM nowhere").execute(&mut *lease).await.is_err());
        drop(lease);
        assert_eq!(store.kept.len(), 0);
        store.close().await;
    }

    /// A lease finished inside a transaction (a bug in its caller) is not
    /// kept, nor handed to anyone else with the transaction open.
    #[tokio::test]
    async fn a_lease_inside_a_transaction_is_closed() {
        let (_dir, store) = store().await;
        let mut lease = store.lease().await.unwrap();
        let tx = (*lease).begin().await.unwrap();
        std::mem::forget(tx);
        lease.finish();
        assert_eq!(store.kept.len(), 0);
        let max = store.pool.options().get_max_connections() as usize;
        let all = futures::future::join_all((0..max).map(|_| store.lease())).await;
        assert!(all.iter().all(|l| !l.as_ref().unwrap().is_in_transaction()));
        drop(all);
        store.close().await;
    }

    /// Once the store closes nothing is kept: the pool's close waits for
    /// every connection.
    #[tokio::test]
    async fn nothing_is_kept_once_the_store_closes() {
        let (_dir, store) = store().await;
        let lease = store.lease().await.unwrap();
        store.kept.close();
        lease.finish();
        assert_eq!(store.kept.len(), 0);
        store.close().await;
    }

    /// At most `capacity` connections wait, so callers of the pool itself
    /// always find the rest of it.
    #[tokio::test]
    async fn no_more_than_the_capacity_waits() {
        let (_dir, store) = store().await;
        let capacity = store.kept.capacity;
        let leases: Vec<Lease> = futures::future::join_all((0..=capacity).map(|_| store.lease()))
            .await
            .into_iter()
            .map(|l| l.unwrap())
            .collect();
        until_the_pool_can_spare(&store).await;
        for lease in leases {
            lease.finish();
        }
        assert_eq!(store.kept.len(), capacity);
        // The pool still has a connection for a caller that uses it directly.
        sqlx::query("SELECT 1").execute(&store.pool).await.unwrap();
        store.close().await;
    }

    /// While every connection is out, someone may be waiting in the pool:
    /// a finished lease's connection goes back there, to wake them.
    #[tokio::test]
    async fn nothing_is_kept_while_the_pool_has_none_to_spare() {
        let (_dir, store) = store().await;
        let max = store.pool.options().get_max_connections() as usize;
        let mut leases: Vec<Lease> = futures::future::join_all((0..max).map(|_| store.lease()))
            .await
            .into_iter()
            .map(|l| l.unwrap())
            .collect();
        assert!(!store.kept.pool_can_spare());
        leases.pop().unwrap().finish();
        assert_eq!(store.kept.len(), 0);
        drop(leases);
        store.close().await;
    }
}
