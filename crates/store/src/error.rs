#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken; the text names what was duplicated.
    #[error("{0} already exists")]
    Conflict(&'static str),
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
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
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

    pub(crate) fn unique(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
            _ => StoreError::Backend(e),
        }
    }
}
