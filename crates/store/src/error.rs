#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken; the text names what was duplicated.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The email address is in a domain another organization has verified.
    #[error("the email domain {0} belongs to another organization")]
    DomainOwned(String),
    /// The row changed since the version the caller read (optimistic
    /// concurrency, SCIM `If-Match`).
    #[error("the resource was changed by someone else")]
    VersionMismatch,
    /// A reference to something that does not exist (a group member that is
    /// not a user of the organization).
    #[error("{0} does not exist here")]
    UnknownReference(String),
    #[error("database configuration: {0}")]
    Config(String),
    #[error("stored data is malformed: {0}")]
    Corrupt(String),
    #[error("database: {0}")]
    Backend(#[from] sqlx::Error),
    /// SQLite's error, on a connection of the store's own (`embedded_writer`).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database could not be reached; what a batch of writes answers each
    /// of its callers when its transaction could not be attempted.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Whether the database could not be reached (refused, dropped, timed out,
    /// shutting down), as opposed to refusing this operation: worth trying
    /// again shortly, and no fault of the caller's.
    pub fn is_unavailable(&self) -> bool {
        let e = match self {
            StoreError::Unavailable(_) => return true,
            StoreError::Backend(e) => e,
            // Nothing a row did: the file is locked by another process past
            // the busy timeout, or the disk failed, filled, or went away.
            StoreError::Sqlite(e) => {
                use rusqlite::ErrorCode::*;
                return matches!(
                    e.sqlite_error_code(),
                    Some(DatabaseBusy | DatabaseLocked | SystemIoFailure | DiskFull | CannotOpen | ReadOnly)
                );
            }
            _ => return false,
        };
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            // A connection that breaks mid-handshake or mid-message.
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // PostgreSQL's connection exceptions (08…) and operator
            // intervention (57P01 admin shutdown, 57P02 crash shutdown,
            // 57P03 cannot connect now).
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|c| c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")),
            _ => false,
        }
    }

    /// Maps a unique-constraint violation to [`StoreError::Conflict`] naming
    /// `what`; passes every other error through.
    /// For inserts: a missing referenced row (a foreign key) is `NotFound`,
    /// a duplicate is a `Conflict` over `what`.
    pub(crate) fn on_insert(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
            _ => StoreError::unique(what)(e),
        }
    }

    /// As [`StoreError::on_insert`], for SQLite's errors on the store's
    /// own connections (`embedded_writer`); other errors pass through.
    pub(crate) fn on_embedded_insert(what: &'static str) -> impl FnOnce(StoreError) -> StoreError {
        use rusqlite::ffi::{
            SQLITE_CONSTRAINT_FOREIGNKEY, SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE,
        };
        move |e| match &e {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => match failure.extended_code {
                SQLITE_CONSTRAINT_FOREIGNKEY => StoreError::NotFound,
                SQLITE_CONSTRAINT_UNIQUE | SQLITE_CONSTRAINT_PRIMARYKEY => StoreError::Conflict(what),
                _ => e,
            },
            _ => e,
        }
    }

    pub(crate) fn unique(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
            _ => StoreError::Backend(e),
        }
    }
}
