//! SQLite only: commits do not checkpoint the WAL themselves (that would
//! stall the unlucky request), yet what they commit reaches the database
//! file soon after, by the store's background checkpointer.

// Tests and benchmarks stamp real data with the wall clock; the service
// reads time only through its Clock (clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use chrono::Utc;
use gatehouse_store::Store;
use sqlx::{Connection, Row};

/// Organizations as the database file alone holds them, without its WAL:
/// the file is copied on its own and opened read-only. `None` when the copy
/// caught the checkpointer halfway through writing the file.
async fn orgs_in_main_file(db_file: &std::path::Path, scratch: &std::path::Path) -> Option<i64> {
    let copy = scratch.join("copy.db");
    std::fs::copy(db_file, &copy).unwrap();
    let _ = std::fs::remove_file(scratch.join("copy.db-wal"));
    sqlx::any::install_default_drivers();
    let mut conn =
        sqlx::AnyConnection::connect(&format!("sqlite://{}?mode=ro", copy.display())).await.unwrap();
    let count = sqlx::query("SELECT COUNT(*) AS n FROM organizations").fetch_one(&mut conn).await;
    conn.close().await.unwrap();
    count.ok().map(|row| row.get("n"))
}

/// The first count [`orgs_in_main_file`] reads whole, within `deadline`,
/// that `done` accepts.
async fn wait_for_main_file(
    db_file: &std::path::Path,
    scratch: &std::path::Path,
    deadline: Instant,
    done: impl Fn(i64) -> bool,
) -> i64 {
    let mut last = None;
    while Instant::now() < deadline {
        last = orgs_in_main_file(db_file, scratch).await;
        if last.is_some_and(&done) {
            return last.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the database file did not get there in time; last count read: {last:?}");
}

#[tokio::test]
async fn committed_rows_reach_the_database_file_without_a_commit_checkpointing() {
    let dir = tempfile::tempdir().unwrap();
    let db_file = dir.path().join("gatehouse.db");
    let store = Store::open(&format!("sqlite://{}?mode=rwc", db_file.display())).await.unwrap();
    // Let the checkpointer catch up with the migrations first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before =
        wait_for_main_file(&db_file, dir.path(), Instant::now() + Duration::from_secs(10), |_| true).await;

    // Well past SQLite's automatic threshold of 1000 pages, had it been on.
    let filler = "x".repeat(3000);
    for i in 0..1500 {
        store.create_org(&format!("{i}-{filler}"), false, Utc::now()).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    wait_for_main_file(&db_file, dir.path(), deadline, |n| n == before + 1500).await;
    assert_eq!(store.checkpoint().await.unwrap(), 0, "nothing is left in the log");
    store.close().await;
}

#[tokio::test]
async fn the_log_starts_over_under_a_steady_stream_of_writes_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let db_file = dir.path().join("gatehouse.db");
    let store = Store::open(&format!("sqlite://{}?mode=rwc", db_file.display())).await.unwrap();
    let first = store.create_org("first", false, Utc::now()).await.unwrap();

    // Writes and reads without a pause, for many checkpoint intervals.
    let until = Instant::now() + Duration::from_secs(4);
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            while Instant::now() < until {
                store.get_org(first.id).await.unwrap();
            }
        })
    };
    let mut writes = 0u64;
    while Instant::now() < until {
        store.create_org(&format!("org {writes}"), false, Utc::now()).await.unwrap();
        writes += 1;
    }
    reader.await.unwrap();

    // Every commit appended at least one page to the log: had the log not
    // been started over every so often, it would be at least this long.
    // Measured (about 2.5 pages a commit): 0.3-0.5 of it as the store is,
    // 1.2-2.3 of it without the checkpoint's pass under the write turn.
    // (Half of it was the bound once; a busy machine, with the other test
    // of this file beside it, left the log at 0.51 of it.)
    let page_size = 4096;
    let appended = writes * page_size;
    let wal = std::fs::metadata(dir.path().join("gatehouse.db-wal")).unwrap().len();
    assert!(wal < appended, "the log ({wal} bytes) kept growing: {writes} commits");
    store.close().await;
}
