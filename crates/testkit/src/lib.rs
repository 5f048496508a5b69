//! Throwaway databases for tests: a fresh SQLite file, or a fresh database on
//! the PostgreSQL named by `GATEHOUSE_TEST_POSTGRES_URL`.
//!
//! Every test gets its own database, so tests never share state and run in
//! any order. PostgreSQL tests are skipped (with a message) when the variable
//! is unset, except under CI (`CI=true`), where a missing PostgreSQL fails the
//! run instead of silently halving it.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};
use tempfile::TempDir;

pub const POSTGRES_ENV: &str = "GATEHOUSE_TEST_POSTGRES_URL";

/// A database that lives as long as this value.
pub struct TestDb {
    url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] TempDir),
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A fresh SQLite database file in its own temporary directory.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("gatehouse.db").display());
        Self { url, cleanup: Cleanup::Sqlite(dir) }
    }

    /// A fresh, empty database on the test PostgreSQL, or `None` when none is
    /// configured (outside CI).
    pub async fn postgres() -> Option<Self> {
        let admin_url = match std::env::var(POSTGRES_ENV) {
            Ok(url) if !url.is_empty() => url,
            _ => {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("{POSTGRES_ENV} must be set in CI: the PostgreSQL tests may not be skipped");
                }
                eprintln!("skipped: {POSTGRES_ENV} is not set");
                return None;
            }
        };
        let name = format!("gh_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnectOptions::from_str(&admin_url)
            .expect("valid GATEHOUSE_TEST_POSTGRES_URL")
            .disable_statement_logging()
            .connect()
            .await
            .expect("connect to the test PostgreSQL");
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create test database");
        conn.close().await.ok();
        let mut url = url::Url::parse(&admin_url).expect("GATEHOUSE_TEST_POSTGRES_URL is a URL");
        url.set_path(&name);
        Some(Self { url: url.to_string(), cleanup: Cleanup::Postgres { admin_url, name } })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Cleanup::Postgres { admin_url, name } = &self.cleanup else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on;
        // do the cleanup on a thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let mut conn = PgConnectOptions::from_str(&admin_url).ok()?.connect().await.ok()?;
                conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .await
                    .ok()
            })
        });
        let _ = cleanup.join();
    }
}
