//! SQLite reads on the calling thread.
//!
//! sqlx runs each SQLite connection on a thread of its own, and hands every
//! statement to that thread and every row back: two thread wake-ups per
//! query at least, on top of the query. On a pass-through sign-in, whose
//! one read finds a cached user in tens of microseconds, those hand-offs
//! cost more than the read (docs/benchmarks.md, "Reads on the caller's
//! thread"). So the reads that run on every request (a sign-in's lookup,
//! the SCIM token check, a user by id) run here instead: on a plain SQLite
//! connection (rusqlite, over the same SQLite library sqlx links), right
//! on the thread that asks.
//!
//! Nothing here may sleep, since the caller is an async task on one of
//! the runtime's few threads:
//! - in WAL mode a reader never waits for a writer, so the connections
//!   have no busy timeout, and a read that finds the database busy anyway
//!   (rare: another process recovering or resetting the log) returns
//!   `None`, and the caller asks the pool, which waits as it always has;
//! - any other SQLite error also returns `None` after a warning, so the
//!   pool's answer (or its error) is what the caller sees: this path only
//!   ever makes a read faster, never different;
//! - a connection is opened by the read that finds none idle (opening a
//!   file and reading its schema: the cost of the first read on each
//!   thread), and at most `keep` (one per core) stay open between reads.
//!
//! A database that is not a file (SQLite reports no file name for it)
//! cannot be opened a second time, so a store on one has no readers, and
//! every read goes through the pool.
//!
//! These connections only read (`query_only`). Writes go through sqlx,
//! except the group-commit batches, which the embedded writer makes on a
//! thread of its own (`embedded_writer`); all of them take the write turn.
//! A group-commit writer that reads before it writes reads here too, while
//! it holds the write lock (`read_then_write`).

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::{Connection, OpenFlags};

use crate::columns::{ColumnNames, Columns};
use crate::{Result, StoreError};

/// The reader connections of one SQLite database.
#[derive(Debug)]
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    keep: usize,
    /// Set when a connection could not be opened: the warning is logged
    /// once, and from then on every read goes through the pool.
    disabled: AtomicBool,
    /// Reads these connections answered, for tests to tell them from the
    /// pool's.
    #[cfg(test)]
    answered: std::sync::atomic::AtomicUsize,
}

/// Why a read on a reader connection did not answer.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// SQLite refused or failed: the pool is asked instead.
    Sqlite(rusqlite::Error),
    /// The rows were read, and are wrong (malformed stored data): the
    /// caller's error, as the pool would have found it.
    Store(StoreError),
}

impl From<rusqlite::Error> for ReadError {
    fn from(e: rusqlite::Error) -> Self {
        ReadError::Sqlite(e)
    }
}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        ReadError::Store(e)
    }
}

impl Readers {
    /// Readers of the database file at `path`, keeping at most `keep`
    /// connections idle.
    pub(crate) fn new(path: PathBuf, keep: usize) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::with_capacity(keep)),
            keep,
            disabled: AtomicBool::new(false),
            #[cfg(test)]
            answered: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Runs `read` on a reader connection, on this thread. `Ok(None)` when
    /// it could not (SQLite busy, or failing): the caller asks the pool.
    pub(crate) fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> std::result::Result<T, ReadError>,
    ) -> Result<Option<T>> {
        if self.disabled.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => match self.open() {
                Ok(conn) => conn,
                Err(e) => {
                    if !self.disabled.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "cannot open a reader on the SQLite database; reads use the pool");
                    }
                    return Ok(None);
                }
            },
        };
        let outcome = read(&conn);
        // A read leaves no transaction open; a connection that somehow did
        // is not handed on.
        if conn.is_autocommit() {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < self.keep {
                idle.push(conn);
            }
        }
        match outcome {
            Ok(value) => {
                #[cfg(test)]
                self.answered.fetch_add(1, Ordering::Relaxed);
                Ok(Some(value))
            }
            Err(ReadError::Store(e)) => Err(e),
            Err(ReadError::Sqlite(e)) => {
                if !is_busy(&e) {
                    tracing::warn!(error = %e, "a read on the SQLite reader failed; asking the pool");
                }
                Ok(None)
            }
        }
    }

    /// The rows `sql` selects with `params` bound to `$1`, `$2`, … (in any
    /// order in the statement), each decoded by `decode`, read on this
    /// thread; `Ok(None)` as for [`Readers::read`]. The statement is kept
    /// prepared in the connection's small cache, so its text must not vary
    /// with the request (a list is one bound value,
    /// `crate::in_json_strings`), or it would push the others out.
    pub(crate) fn rows<T>(
        &self,
        sql: &str,
        params: &[&str],
        decode: impl Fn(&dyn Columns) -> Result<T>,
    ) -> Result<Option<Vec<T>>> {
        self.read(|conn| rows_on(conn, sql, params, decode))
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        // No CREATE: the file is the pool's; if it is gone, so is this path.
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // Never sleep on the caller's thread (the module's header), and
        // never write through a connection opened to read.
        conn.busy_timeout(std::time::Duration::ZERO)?;
        conn.pragma_update(None, "query_only", true)?;
        // As the pool's connections (`SQLITE_PRAGMAS`): what a query
        // materializes stays in memory, not in files under /var/tmp.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        Ok(conn)
    }

    #[cfg(test)]
    pub(crate) fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    /// Closes the idle connections (the store is closing).
    pub(crate) fn close(&self) {
        self.disabled.store(true, Ordering::Relaxed);
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The rows `sql` selects on `conn`, as [`Readers::rows`] reads them: on
/// a reader, or on the embedded writer inside its transaction
/// (`embedded_writer`).
pub(crate) fn rows_on<T>(
    conn: &Connection,
    sql: &str,
    params: &[&str],
    decode: impl Fn(&dyn Columns) -> Result<T>,
) -> std::result::Result<Vec<T>, ReadError> {
    let names: Vec<Cow<'static, str>> = (0..params.len()).map(placeholder_name).collect();
    let named: Vec<(&str, &dyn rusqlite::ToSql)> = names
        .iter()
        .zip(params)
        .map(|(name, value)| (name.as_ref(), value as &dyn rusqlite::ToSql))
        .collect();
    let mut statement = conn.prepare_cached(sql)?;
    let names = ColumnNames::of(&statement);
    let mut rows = statement.query(named.as_slice())?;
    let mut decoded = Vec::new();
    while let Some(row) = rows.next()? {
        decoded.push(decode(&names.row(row))?);
    }
    Ok(decoded)
}

impl From<ReadError> for StoreError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Sqlite(e) => StoreError::Sqlite(e),
            ReadError::Store(e) => e,
        }
    }
}

/// The name SQLite files the `i`-th value's placeholder under (`$1` for
/// the first); the few that every request uses without allocating.
fn placeholder_name(i: usize) -> Cow<'static, str> {
    const NAMES: [&str; 4] = ["$1", "$2", "$3", "$4"];
    NAMES.get(i).map_or_else(|| Cow::Owned(format!("${}", i + 1)), |name| Cow::Borrowed(*name))
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with_one_row(dir: &tempfile::TempDir) -> PathBuf {
        let path = dir.path().join("r.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('x');")
            .unwrap();
        path
    }

    fn read_v(readers: &Readers) -> Result<Option<String>> {
        readers.read(|conn| Ok(conn.query_row("SELECT v FROM t", [], |row| row.get(0))?))
    }

    /// The SQLite library is built as `.cargo/config.toml` asks: no
    /// process-wide count of its allocations, and a page cache of its own
    /// for each connection, so that the writer's thread and the readers do
    /// not queue on the same two locks (docs/benchmarks.md, "SQLite's
    /// process-wide locks"). A build whose environment already set
    /// `LIBSQLITE3_FLAGS` would lose them, and fail here.
    #[test]
    fn sqlite_is_built_without_its_process_wide_locks() {
        let conn = Connection::open_in_memory().unwrap();
        let mut options = conn.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> =
            options.query_map([], |row| row.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap();
        assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{options:?}");
        assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
        // What it is still built with, from libsqlite3-sys's own flags.
        assert!(options.iter().any(|o| o == "THREADSAFE=1"), "{options:?}");
    }

    #[test]
    fn reads_and_keeps_at_most_keep_connections() {
        let dir = tempfile::tempdir().unwrap();
        let readers = Readers::new(file_with_one_row(&dir), 1);
        assert_eq!(read_v(&readers).unwrap().as_deref(), Some("x"));
        // A read inside a read needs a second connection; only one is kept.
        let nested = readers.read(|_| Ok(read_v(&readers).unwrap())).unwrap();
        assert_eq!(nested.flatten().as_deref(), Some("x"));
        assert_eq!(readers.idle.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_write_is_refused_and_left_to_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with_one_row(&dir);
        let readers = Readers::new(path.clone(), 2);
        let wrote = readers.read(|conn| Ok(conn.execute("DELETE FROM t", [])?)).unwrap();
        assert_eq!(wrote, None, "query_only refuses the write, and the caller is told to ask the pool");
        let rows: i64 =
            Connection::open(&path).unwrap().query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 1);
    }

    #[test]
    fn a_database_held_exclusively_is_read_through_the_pool_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with_one_row(&dir);
        let readers = Readers::new(path.clone(), 2);
        // An exclusive lock in rollback-journal mode blocks readers: the
        // reader must give up at once rather than sleep.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("PRAGMA journal_mode = DELETE; BEGIN EXCLUSIVE; DELETE FROM t;").unwrap();
        assert_eq!(read_v(&readers).unwrap(), None);
        other.execute_batch("ROLLBACK").unwrap();
        assert_eq!(read_v(&readers).unwrap().as_deref(), Some("x"));
    }

    #[test]
    fn malformed_rows_are_the_callers_error() {
        let dir = tempfile::tempdir().unwrap();
        let readers = Readers::new(file_with_one_row(&dir), 2);
        let e = readers.read::<()>(|_| Err(StoreError::Corrupt("bad".into()).into())).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt(_)));
    }

    #[test]
    fn a_missing_file_is_not_created_and_reads_go_to_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.db");
        let readers = Readers::new(path.clone(), 2);
        assert_eq!(read_v(&readers).unwrap(), None);
        assert!(!path.exists());
    }
}
