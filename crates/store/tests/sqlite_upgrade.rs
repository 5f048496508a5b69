//! SQLite only: migration 0015 rebuilds the users table (SQLite cannot drop
//! a NOT NULL). A database written before it keeps every user and
//! everything that hangs off them: the old table's drop must not cascade.
//! And users written before the email index (0016) and the filterable
//! display name (0017) get them on opening; migration 0018, which rebuilds
//! users and user_emails again to give them stable rowids, and 0019 leave
//! every user noted for the trigram index, which indexes them.

use gatehouse_core::Origin;
use gatehouse_store::{NewUser, Store};
use sqlx::migrate::Migrator;
use sqlx::{Connection, Row, SqliteConnection};

/// The last migration before users could lack an email.
const BEFORE_NAMELESS_USERS: i64 = 14;

#[tokio::test]
async fn rebuilding_the_users_table_keeps_what_hangs_off_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/sqlite");
    let migrator = Migrator::new(migrations).await.unwrap();
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    migrator.run_to(BEFORE_NAMELESS_USERS, &mut conn).await.unwrap();
    for statement in [
        "INSERT INTO organizations (id, name, enterprise_toolkit, created_at, updated_at) VALUES ('0190f0c0-0000-7000-8000-00000000000a', 'Acme', 1, 0, 0)",
        "INSERT INTO users (id, org_id, email, email_normalized, display_name, active, created_at, updated_at, \
           user_name_normalized, email_domain, scim_resource) VALUES ('0190f0c0-0000-7000-8000-00000000000b', '0190f0c0-0000-7000-8000-00000000000a', 'Ada@Acme.test', 'ada@acme.test', \
           'Ada', 1, 0, 0, 'ada@acme.test', 'acme.test', \
           '{\"emails\":[{\"value\":\"Ada@Acme.test\",\"type\":\"work\"},{\"value\":\"A@Home.test\",\"primary\":true}]}')",
        "INSERT INTO sessions (id, user_id, org_id, auth_method, created_at, expires_at) \
           VALUES ('s', '0190f0c0-0000-7000-8000-00000000000b', '0190f0c0-0000-7000-8000-00000000000a', 'local_password', 0, 99999999999999)",
        "INSERT INTO scim_groups (id, org_id, display_name, display_name_normalized, version, created_at, updated_at) \
           VALUES ('g', '0190f0c0-0000-7000-8000-00000000000a', 'Eng', 'eng', 1, 0, 0)",
        "INSERT INTO group_members (group_id, user_id) VALUES ('g', '0190f0c0-0000-7000-8000-00000000000b')",
        "INSERT INTO scim_tombstones (id, org_id, user_id, email_normalized, deleted_at) VALUES ('t', '0190f0c0-0000-7000-8000-00000000000a', 'x', '', 0)",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();

    // Opening the store migrates it. Some ids above are not the store's
    // own, so the rows are read as the database has them.
    let store = Store::open(&url).await.unwrap();
    // The background task would index the users within half a second.
    assert_eq!(store.index_pending_trigrams().await.unwrap(), 1);
    drop(store);
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    let count = |sql: &'static str| sqlx::query(sql);
    let mut counts = Vec::new();
    for sql in [
        "SELECT COUNT(*) AS n FROM users WHERE email = 'Ada@Acme.test' AND user_name_normalized = 'ada@acme.test'",
        "SELECT COUNT(*) AS n FROM sessions",
        "SELECT COUNT(*) AS n FROM group_members",
        "SELECT COUNT(*) AS n FROM scim_tombstones WHERE email_normalized IS NULL",
        // Users from before the email index are indexed as the store opens.
        "SELECT COUNT(*) AS n FROM user_emails WHERE value_normalized IN ('ada@acme.test', 'a@home.test')",
        "SELECT COUNT(*) AS n FROM users WHERE filter_data_written = 1",
        // And their display names lower-cased for filters (0017).
        "SELECT COUNT(*) AS n FROM users WHERE display_name_normalized = 'ada'",
        // The substring index lists the user by name and by email (0018, 0019).
        "SELECT COUNT(*) AS n FROM user_trigrams WHERE user_trigrams MATCH '{user_name} : \"da@acm\"'",
        "SELECT COUNT(*) AS n FROM user_trigrams WHERE user_trigrams MATCH '{emails} : \"@home.\"'",
    ] {
        counts.push(count(sql).fetch_one(&mut conn).await.unwrap().get::<i64, _>("n"));
    }
    assert_eq!(
        counts,
        [1, 1, 1, 1, 2, 1, 1, 1, 1],
        "users, sessions, group members, an empty address made absent, the emails indexed, the display name, \
         the substring indexes"
    );
    let broken = sqlx::query("PRAGMA foreign_key_check").fetch_all(&mut conn).await.unwrap();
    assert!(broken.is_empty(), "every reference holds after the rebuild");
    let indexes: Vec<String> = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'users' AND sql IS NOT NULL",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get("name"))
    .collect();
    for index in ["users_by_org", "users_by_user_name", "users_by_external_id", "users_by_email_domain"] {
        assert!(indexes.iter().any(|i| i == index), "{index} is back: {indexes:?}");
    }
    // Deleting the user still cascades: the references point at the new table.
    sqlx::query("PRAGMA foreign_keys = ON").execute(&mut conn).await.unwrap();
    sqlx::query("DELETE FROM users WHERE id = '0190f0c0-0000-7000-8000-00000000000b'")
        .execute(&mut conn)
        .await
        .unwrap();
    let left =
        count("SELECT COUNT(*) AS n FROM sessions").fetch_one(&mut conn).await.unwrap().get::<i64, _>("n");
    assert_eq!(left, 0);
    conn.close().await.unwrap();

    // And the upgraded database takes users without an email.
    let store = Store::open(&url).await.unwrap();
    let org = store.create_org("Beta", true, chrono::DateTime::UNIX_EPOCH).await.unwrap();
    let nameless = NewUser { user_name: Some("jdoe".into()), ..NewUser::member(org.id, Origin::Scim) };
    assert_eq!(store.create_user(&nameless, chrono::DateTime::UNIX_EPOCH).await.unwrap().email, None);

    // The trigram indexes point at rows by rowid. SQLite documents that a
    // VACUUM may renumber the rowids of a table without an INTEGER PRIMARY
    // KEY (the bundled version happens not to, here); whatever it does,
    // after deletions and a VACUUM the indexes still name the same users.
    let mut ids = Vec::new();
    for name in ["gone-1", "gone-2", "kept-needle"] {
        let user = NewUser { user_name: Some(name.into()), ..nameless.clone() };
        ids.push(store.create_user(&user, chrono::DateTime::UNIX_EPOCH).await.unwrap().id);
    }
    for id in &ids[..2] {
        store.delete_user(*id).await.unwrap();
    }
    sqlx::query("VACUUM").execute(&mut SqliteConnection::connect(&url).await.unwrap()).await.unwrap();
    let needle = gatehouse_store::UserCondition::Text {
        column: gatehouse_store::UserColumn::UserName,
        op: gatehouse_store::TextOp::Co,
        value: "t-needle".into(),
    };
    let window = gatehouse_store::UserWindow::Offset { offset: 0, sort: None };
    let found = store.users_matching(org.id, Some(&needle), window, 10).await.unwrap();
    assert_eq!(found.users.iter().map(|u| u.id).collect::<Vec<_>>(), [ids[2]]);
}

/// Opening a store writes the filter data of users that lack it, in passes
/// until none is left. If a pass could not mark its users written, the next
/// would find them again, forever: opening fails instead, and says why.
#[tokio::test]
async fn users_whose_filter_data_cannot_be_marked_written_fail_the_opening() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("stuck.db").display());
    let store = Store::open(&url).await.unwrap();
    let org = store.create_org("Acme", true, chrono::DateTime::UNIX_EPOCH).await.unwrap();
    let ada = NewUser {
        email: Some(gatehouse_core::Email::parse("ada@acme.test").unwrap()),
        ..NewUser::member(org.id, Origin::Scim)
    };
    store.create_user(&ada, chrono::DateTime::UNIX_EPOCH).await.unwrap();
    drop(store);
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    for statement in [
        "UPDATE users SET filter_data_written = 0",
        // Every attempt to mark it written is dropped without an error.
        "CREATE TRIGGER stays_unwritten BEFORE UPDATE OF filter_data_written ON users \
           BEGIN SELECT RAISE(IGNORE); END",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();

    let opened = tokio::time::timeout(std::time::Duration::from_secs(60), Store::open(&url))
        .await
        .expect("opening the store ends");
    let error = opened.expect_err("a pass that marks nothing fails the opening").to_string();
    assert!(error.contains("1 users' filter data was written but not marked written"), "{error}");
}
