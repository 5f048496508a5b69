//! Storage for everything Gatehouse keeps: one [`Store`] over SQLite or
//! PostgreSQL.
//!
//! The store runs on sqlx's `Any` driver, picked by the URL's scheme, with one
//! portable schema (`migrations/sqlite` and `migrations/postgres` share version
//! numbers and differ only in DDL spelling). All SQL uses `$N` placeholders,
//! which both backends accept. On SQLite the reads every request makes
//! run on the caller's thread instead, on connections of their own
//! (`embedded`), with the same SQL, decoded by the same code (`columns`),
//! and the group-commit batches (sign-ins, rotations, SCIM creates) are
//! written on a connection and thread of their own (`embedded_writer`),
//! from the same declared inserts (`inserts`).
//! The same conformance suite (`tests/conformance.rs`) runs against both.
//!
//! Architecture invariant: this crate stores; it does not decide. Hashing,
//! signing and policy live with the callers; every value it is handed is
//! already in its stored form (hashes, sealed keys).
//!
//! Every operation that must be atomic with another (deactivating a user and
//! revoking their sessions, rotating a refresh token) is one method and one
//! transaction here, so callers cannot get it half right.

mod admin_tokens;
mod audit;
mod checkpoint;
mod columns;
mod connections;
mod domains;
mod embedded;
mod embedded_writer;
mod error;
mod group_commit;
mod groups;
mod inserts;
mod keys;
mod lease;
mod orgs;
mod portal;
mod read_then_write;
mod rest_auth;
mod scim_tokens;
mod sealed;
mod sessions;
mod sso;
mod throttles;
mod tombstones;
mod trigrams;
mod users;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection, Executor};
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use admin_tokens::AdminTokenRecord;
pub use audit::{AuditEvent, AuditFilter, AuditPage, NewAuditEvent, OrgScope};
pub use connections::{ConnectionHealth, ConnectionRecord};
pub use domains::{DomainConflict, OrgDomain, domain_and_parents};
pub use error::StoreError;
pub use groups::{Group, GroupState};
pub use orgs::OrgUpdate;
pub use portal::{PortalLink, PortalSession};
pub use scim_tokens::ScimTokenRecord;
pub use sealed::SealedColumn;
pub use sessions::{NewSession, RefreshOutcome, SessionRecord};
pub use sso::{SsoCode, SsoFlow, SsoPolicy};
pub use throttles::{HitOutcome, ThrottleRule, ThrottleState};
pub use tombstones::{SignInKeys, Tombstone};
pub use users::{
    EmailCondition, EmailField, LoginAccount, LoginLookup, NewUser, TextOp, TimeColumn, TimeOp, UserColumn,
    UserCondition, UserMatches, UserPage, UserSort, UserSortKey, UserUpdate, UserWindow,
};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// PostgreSQL connections idle in the pool for longer than this are checked
/// before use; connections kept between operations (`lease`) that waited
/// longer go back through the pool.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// How long a query waits for a connection (for a free one under load, or
/// for the server to come back after an outage).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one writer at a time. Writers that race for its lock are
    /// put to sleep by SQLite's busy handler in millisecond steps, which
    /// ruins latency under load, so this process's writers queue here
    /// instead. (Other processes on the same file, such as a CLI command,
    /// still meet the busy timeout.) Unused with PostgreSQL.
    write_turn: Arc<Mutex<()>>,
    /// Connections that finished operations hand to the next (see `lease`).
    kept: Arc<lease::Kept>,
    /// SQLite connections that read on the caller's thread (see
    /// `embedded`); `None` on PostgreSQL and for a database that is not a
    /// file.
    readers: Option<Arc<embedded::Readers>>,
    /// The SQLite connection that writes the group-commit batches on a
    /// thread of its own (see `embedded_writer`); `None` as for `readers`,
    /// or when it could not be opened.
    writer: Option<Arc<embedded_writer::Writer>>,
    /// Group-commit writers (see `group_commit`); `None` on the writers' own
    /// handles.
    session_writer: Option<group_commit::Writer<sessions::SessionRow>>,
    user_writer: Option<group_commit::Writer<users::UserRow>>,
    rotation_writer: Option<group_commit::Writer<sessions::Rotation>>,
    /// The background WAL checkpointer (see `checkpoint`), SQLite only;
    /// `None` on the background tasks' own handles.
    checkpointer: Option<checkpoint::Stop>,
}

/// A write transaction: on a connection of its own from the pool
/// (`'static`, `Store::begin_write`), holding this process's SQLite write
/// turn until it commits or is dropped; or on a lease's
/// (`Store::begin_write_on`), whose lease holds the turn.
pub(crate) struct WriteTx<'c> {
    tx: sqlx::Transaction<'c, sqlx::Any>,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl WriteTx<'_> {
    pub(crate) async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl std::ops::Deref for WriteTx<'_> {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and applies pending
    /// migrations.
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Config("database URL must start with sqlite: or postgres:".into()));
        };
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid database URL: {e}")))?;
        // While the database is down, sqlx keeps trying to connect until
        // this runs out; each request then fails as unavailable.
        let mut pool = AnyPoolOptions::new().acquire_timeout(ACQUIRE_TIMEOUT);
        if backend == Backend::Sqlite {
            // One writer at a time is SQLite's model; WAL lets readers proceed
            // while it writes, and the busy timeout queues writers instead of
            // failing them. synchronous=FULL syncs the log at every commit:
            // with NORMAL a power loss could undo the last acknowledged
            // commits (a revoked session, a SCIM deactivation, a spent
            // refresh token), not only a crash of the process. Group commit
            // (`group_commit`) makes that one sync per batch of sign-ins or
            // SCIM creates.
            // Checkpoints are the background task's (`checkpoint`), not the
            // job of whichever commit happens to fill the log.
            // sqlx pings a connection each time it leaves the pool, by
            // default. On SQLite that is one more hand-off to the
            // connection's thread for every query, and it detects nothing:
            // the database is a file in this process, not a server that
            // may have hung up.
            // Temporary storage (statement journals, materialized
            // subqueries, transient indexes) stays in memory: a batch of
            // SCIM creates, several statements in one transaction, spilled
            // its statement journal to a new file under /var/tmp at nearly
            // every commit (open, write, unlink: user rows written to a
            // disk that the database's own protections do not cover, and
            // 11% fewer creates per second; docs/benchmarks.md, "Temporary
            // files"). Large sorts still spill, by SQLite's own measure.
            // Connections: each is a thread with its own page cache, and
            // SQLite's readers are CPU-bound once the pages are cached, so
            // more than two per core add memory and no throughput (eight on
            // two cores: 8-11 MiB more at the peak, no more sign-ins;
            // docs/benchmarks.md).
            let connections = std::thread::available_parallelism().map_or(4, |n| n.get() * 2).clamp(4, 32);
            pool = pool.max_connections(connections as u32).test_before_acquire(false).after_connect(
                |conn, _| {
                    Box::pin(async move {
                        conn.execute(SQLITE_PRAGMAS).await?;
                        Ok(())
                    })
                },
            );
        } else {
            // sqlx pings every connection as it goes back to the pool, so one
            // that broke while in use never returns. The ping it also makes
            // as a connection leaves the pool is a second round trip for
            // every query; it is only worth it for a connection that sat
            // idle long enough for the server or a proxy to have dropped it.
            pool = pool.max_connections(16).test_before_acquire(false).before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_IF_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            });
        }
        let pool = pool.connect_with(options).await?;
        let kept = Arc::new(lease::Kept::new(pool.clone()));
        let mut store = Self {
            pool,
            backend,
            write_turn: Arc::new(Mutex::new(())),
            kept,
            readers: None,
            writer: None,
            session_writer: None,
            user_writer: None,
            rotation_writer: None,
            checkpointer: None,
        };
        store.migrate().await?;
        store.write_missing_filter_data().await?;
        if backend == Backend::Sqlite
            && let Some(file) = store.database_file().await?
        {
            let keep = std::thread::available_parallelism().map_or(2, |n| n.get());
            store.readers = Some(Arc::new(embedded::Readers::new(file.clone(), keep)));
            store.writer = match embedded_writer::Writer::start(file, store.write_turn.clone()) {
                Ok(writer) => Some(Arc::new(writer)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the SQLite writer; batched writes use the pool");
                    None
                }
            };
        }
        store.session_writer = Some(group_commit::spawn(store.clone()));
        store.user_writer = Some(group_commit::spawn(store.clone()));
        store.rotation_writer = Some(group_commit::spawn(store.clone()));
        if backend == Backend::Sqlite {
            store.checkpointer = Some(checkpoint::spawn(store.clone()));
        }
        Ok(store)
    }

    /// The SQLite database's file, as SQLite resolved it; `None` for one
    /// that is not a file (in memory, or temporary).
    async fn database_file(&self) -> Result<Option<std::path::PathBuf>> {
        let file: Option<String> =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_optional(&self.pool)
                .await?;
        Ok(file.filter(|f| !f.is_empty()).map(std::path::PathBuf::from))
    }

    /// The row `sql` finds, if any, decoded by `decode`, with `params`
    /// bound to `$1`, `$2`, … in order. On SQLite it is read on this thread
    /// (`embedded`); where that cannot answer (PostgreSQL, a database that
    /// is not a file, SQLite busy or failing) it is read through a lease.
    /// For the reads every request makes.
    pub(crate) async fn optional_row<T>(
        &self,
        sql: &str,
        params: &[&str],
        decode: impl Fn(&dyn columns::Columns) -> Result<T>,
    ) -> Result<Option<T>> {
        if let Some(readers) = &self.readers
            && let Some(rows) = readers.rows(sql, params, &decode)?
        {
            return Ok(rows.into_iter().next());
        }
        let mut conn = self.lease().await?;
        let rows = read_then_write::fetch_rows(&mut conn, sql, params, &decode).await?;
        conn.finish();
        Ok(rows.into_iter().next())
    }

    async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("../../migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => sqlx::migrate!("../../migrations/postgres").run(&self.pool).await?,
        }
        Ok(())
    }

    /// Starts a transaction that will write.
    ///
    /// On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`): a
    /// deferred transaction that reads and then writes cannot wait for the
    /// lock, SQLite fails it at once with "database is locked" instead.
    pub(crate) async fn begin_write(&self) -> Result<WriteTx<'static>> {
        let turn = self.write_turn().await;
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTx { tx, _turn: turn })
    }

    /// Waits for this process's turn to write, on SQLite; hold the guard for
    /// the duration of a single-statement write.
    pub(crate) async fn write_turn(&self) -> Option<OwnedMutexGuard<()>> {
        match self.backend {
            Backend::Sqlite => Some(self.write_turn.clone().lock_owned().await),
            Backend::Postgres => None,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Succeeds when the database answers a query.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        // Closing waits for every connection to come back, kept ones too.
        self.kept.close();
        if let Some(readers) = &self.readers {
            readers.close();
        }
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
        self.pool.close().await;
    }
}

pub(crate) fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or(DateTime::<Utc>::MIN_UTC)
}

pub(crate) fn parse_id<T: FromStr>(raw: &str) -> Result<T> {
    raw.parse().map_err(|_| StoreError::Corrupt(format!("malformed id {raw:?}")))
}

/// `(SELECT value FROM …)`: the strings of a JSON array bound to `$param`,
/// for `column IN` them. The list is one bound value, so a statement's text
/// is the same whatever the list's length and stays prepared (a batch's
/// read was prepared afresh for each width: 4% of a refresh rotation's CPU,
/// docs/benchmarks.md, "Lists as one value"), and SQLite looks up one named
/// value rather than one per item, each by a linear search. Every `IN` list
/// of the store is written this way. Bind [`json_strings`] of the list.
pub(crate) fn in_json_strings(backend: Backend, param: usize) -> String {
    match backend {
        Backend::Sqlite => format!("(SELECT value FROM json_each(${param}))"),
        Backend::Postgres => format!("(SELECT value FROM json_array_elements_text(${param}::json))"),
    }
}

/// `values` as the JSON array [`in_json_strings`] reads. A NUL inside a
/// value stays in it on the SQLite built in here (older SQLite cut the
/// string short there; `a_nul_inside_a_listed_value_stays_in_it`).
pub(crate) fn json_strings<S: AsRef<str>>(values: &[S]) -> String {
    serde_json::Value::from(values.iter().map(AsRef::as_ref).collect::<Vec<&str>>()).to_string()
}

/// The backend `conn` talks to.
pub(crate) fn backend_of(conn: &AnyConnection) -> Backend {
    if conn.backend_name() == <sqlx::Sqlite as sqlx::Database>::NAME {
        Backend::Sqlite
    } else {
        Backend::Postgres
    }
}

/// `NotFound` when a statement that targets one row by its key touched none.
pub(crate) fn found(done: sqlx::any::AnyQueryResult) -> Result<()> {
    if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

/// Set on every SQLite connection as it opens (see `Store::open`).
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; PRAGMA synchronous = FULL; \
                              PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864; PRAGMA temp_store = MEMORY;";

/// Page sizes are clamped here so that no caller can ask for the whole table.
pub(crate) fn clamp_limit(limit: u32) -> i64 {
    i64::from(limit.clamp(1, 200))
}

#[cfg(test)]
mod tests {
    use sqlx::AssertSqlSafe;

    use super::*;

    /// Temporary files this process holds open: SQLite unlinks each one as
    /// it opens it, so they are found among the open descriptors. Without
    /// `/proc` (not Linux) the test fails rather than pass unseeing.
    fn open_temporary_files() -> Vec<String> {
        let fds = std::fs::read_dir("/proc/self/fd").expect("this process's descriptors in /proc");
        fds.flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .map(|target| target.display().to_string())
            .filter(|target| target.contains("etilqs_"))
            .collect()
    }

    /// A statement that rewrites pages written earlier in its transaction
    /// journals their earlier content, so that it can undo itself alone if
    /// it fails. Here that journal is hundreds of KB, past the 64 KiB that
    /// SQLite keeps in memory when temporary storage is on disk.
    #[tokio::test]
    async fn a_transactions_statement_journal_stays_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        let mut lease = store.lease_to_write().await.unwrap();
        lease.mid_transaction();
        sqlx::raw_sql(AssertSqlSafe(
            "CREATE TABLE spill (v TEXT UNIQUE); BEGIN IMMEDIATE; \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
             INSERT INTO spill SELECT printf('%0200d', i) FROM n; \
             UPDATE spill SET v = v || 'x';",
        ))
        .execute(&mut *lease)
        .await
        .unwrap();
        let open = open_temporary_files();
        sqlx::raw_sql(AssertSqlSafe("ROLLBACK")).execute(&mut *lease).await.unwrap();
        lease.transaction_ended();
        lease.finish();
        assert!(open.is_empty(), "the statement journal went to a file: {open:?}");
    }

    /// A list bound as one JSON value matches exactly its members, however
    /// they are spelled: quotes, brackets, backslashes, SQL and JSON syntax
    /// and non-ASCII are data, never syntax, on either backend; the empty
    /// list matches nothing.
    async fn lists_bound_as_one_value_match_exactly(store: Store) {
        let stored = [
            "plain",
            "quote\"d",
            "it's",
            "back\\slash",
            "]",
            "\"]) OR 1=1 --",
            "ünï©ødé",
            "tab\there",
            "",
            "PLAIN",
        ];
        let mut conn = store.pool.acquire().await.unwrap();
        sqlx::raw_sql(AssertSqlSafe("CREATE TEMPORARY TABLE listed (v TEXT NOT NULL)"))
            .execute(&mut *conn)
            .await
            .unwrap();
        for v in stored {
            sqlx::query("INSERT INTO listed (v) VALUES ($1)").bind(v).execute(&mut *conn).await.unwrap();
        }
        let sql = format!("SELECT v FROM listed WHERE v IN {}", in_json_strings(store.backend(), 1));
        for wanted in [&stored[..], &["plain", "\"]) OR 1=1 --", "absent", "ünï©ødé"], &["[]"], &[]] {
            let mut found: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql.as_str()))
                .bind(json_strings(wanted))
                .fetch_all(&mut *conn)
                .await
                .unwrap();
            found.sort();
            let mut expected: Vec<String> =
                stored.iter().filter(|v| wanted.contains(v)).map(|v| (*v).to_owned()).collect();
            expected.sort();
            assert_eq!(found, expected, "{wanted:?} on {:?}", store.backend());
        }
    }

    /// A NUL inside a listed value stays in it, so `a\0b` is not looked up
    /// as `a`. (SQLite 3.40's JSON functions cut a string short at an
    /// escaped NUL; the SQLite built into this binary does not. PostgreSQL's
    /// text holds no NUL at all, listed or bound.)
    #[test]
    fn a_nul_inside_a_listed_value_stays_in_it() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE listed (v TEXT); INSERT INTO listed VALUES ('a')").unwrap();
        conn.execute("INSERT INTO listed VALUES ($1)", ["a\0b"]).unwrap();
        let sql = format!("SELECT v FROM listed WHERE v IN {}", in_json_strings(Backend::Sqlite, 1));
        let found: Vec<String> = conn
            .prepare(&sql)
            .unwrap()
            .query_map([json_strings(&["a\0b"])], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(found, ["a\0b"]);
    }

    #[tokio::test]
    async fn lists_bound_as_one_value_match_exactly_on_sqlite() {
        let db = gatehouse_testkit::TestDb::sqlite();
        lists_bound_as_one_value_match_exactly(Store::open(db.url()).await.unwrap()).await;
    }

    #[tokio::test]
    async fn lists_bound_as_one_value_match_exactly_on_postgres() {
        let Some(db) = gatehouse_testkit::TestDb::postgres().await else { return };
        lists_bound_as_one_value_match_exactly(Store::open(db.url()).await.unwrap()).await;
    }
}
