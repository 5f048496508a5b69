//! PostgreSQL only: the pool does not ping a connection before every query,
//! yet one the server dropped while it sat idle is not handed out, whether
//! it waited in sqlx's pool or was kept by the store between operations
//! (a sign-in's read and the group-commit writers keep theirs).

// Tests and benchmarks stamp real data with the wall clock; the service
// reads time only through its Clock (clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use chrono::Utc;
use gatehouse_core::{Email, Origin};
use gatehouse_store::{NewUser, Store};
use gatehouse_testkit::TestDb;
use sqlx::{Connection, Row};

#[tokio::test]
async fn connections_dropped_while_idle_are_replaced() {
    let Some(db) = TestDb::postgres().await else { return };
    let store = Store::open(db.url()).await.unwrap();
    let org = store.create_org("Kept", false, Utc::now()).await.unwrap();
    let email = Email::parse("kept@example.com").unwrap();
    let user = NewUser {
        email: Some(email.clone()),
        display_name: "Kept".into(),
        ..NewUser::member(org.id, Origin::Admin)
    };
    store.create_user(&user, Utc::now()).await.unwrap();
    // Several connections in the pool and kept by the store, then all of
    // them idle for longer than the pool trusts an idle connection without
    // a check.
    let reads = (0..8).map(|_| store.get_org(org.id));
    for read in futures::future::join_all(reads).await {
        read.unwrap();
    }
    let lookups = (0..8).map(|_| store.find_user_for_login(&email, &[]));
    for lookup in futures::future::join_all(lookups).await {
        assert!(lookup.unwrap().account.is_some());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The server (a restart, a proxy's idle timeout) drops them all.
    sqlx::any::install_default_drivers();
    let mut admin = sqlx::AnyConnection::connect(db.url()).await.unwrap();
    let dropped: i64 = sqlx::query(
        "SELECT COUNT(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap()
    .get("n");
    admin.close().await.unwrap();
    assert!(dropped >= 1, "the store had connections open");

    // Every read after that is served, on new connections.
    for _ in 0..16 {
        assert_eq!(store.get_org(org.id).await.unwrap().name, "Kept");
        assert!(store.find_user_for_login(&email, &[]).await.unwrap().account.is_some());
    }
    let again = NewUser { email: Some(Email::parse("kept.again@example.com").unwrap()), ..user };
    store.create_user(&again, Utc::now()).await.unwrap();
}
