//! Storage for everything Gatehouse keeps: one [`Store`] over SQLite or
//! PostgreSQL.
//!
//! The store runs on sqlx's `Any` driver, picked by the URL's scheme, with one
//! portable schema (`migrations/sqlite` and `migrations/postgres` share version
//! numbers and differ only in DDL spelling). All SQL uses `$N` placeholders,
//! which both backends accept. The same conformance suite
//! (`tests/conformance.rs`) runs against both.
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
mod error;
mod keys;
mod orgs;
mod rest_auth;
mod sessions;
mod users;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use admin_tokens::AdminTokenRecord;
pub use audit::{AuditEvent, AuditPage, NewAuditEvent};
pub use error::StoreError;
pub use orgs::OrgUpdate;
pub use sessions::{NewSession, RefreshOutcome, SessionRecord};
pub use users::{NewUser, UserPage, UserUpdate};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

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
        let mut pool = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Sqlite {
            // One writer at a time is SQLite's model; WAL lets readers proceed
            // while it writes, and the busy timeout queues writers instead of
            // failing them.
            pool = pool.max_connections(8).after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000;").await?;
                    Ok(())
                })
            });
        } else {
            pool = pool.max_connections(16);
        }
        let pool = pool.connect_with(options).await?;
        let store = Self { pool, backend };
        store.migrate().await?;
        Ok(store)
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
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
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

/// Page sizes are clamped here so that no caller can ask for the whole table.
pub(crate) fn clamp_limit(limit: u32) -> i64 {
    i64::from(limit.clamp(1, 200))
}
