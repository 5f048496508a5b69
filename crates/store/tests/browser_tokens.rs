//! Only browser sessions carry a browser token, and only they are in its
//! index (migration 0021): an app's sign-in writes no entry there, one
//! B-tree page fewer per batch of sign-ins. On both backends the index stays
//! unique, takes any number of sessions without a token, and is what a
//! lookup by token uses.

// Tests stamp real data with the wall clock; the service reads time only
// through its Clock (clippy.toml).
#![allow(clippy::disallowed_methods)]

use chrono::{Duration, Utc};
use gatehouse_core::{AuthMethod, Device, Email, Origin, SessionId};
use gatehouse_store::{Backend, NewSession, NewUser, Store, StoreError};
use gatehouse_testkit::TestDb;
use sqlx::{Connection, Row};

#[tokio::test]
async fn sqlite() {
    let db = TestDb::sqlite();
    only_browser_sessions_are_indexed(db.url()).await;
}

#[tokio::test]
async fn postgres() {
    let Some(db) = TestDb::postgres().await else { return };
    only_browser_sessions_are_indexed(db.url()).await;
}

async fn only_browser_sessions_are_indexed(url: &str) {
    let store = Store::open(url).await.unwrap();
    let now = Utc::now();
    let org = store.create_org("Acme", false, now).await.unwrap();
    let user = NewUser {
        email: Some(Email::parse("ada@acme.test").unwrap()),
        display_name: "Ada".into(),
        ..NewUser::member(org.id, Origin::Admin)
    };
    let user = store.create_user(&user, now).await.unwrap();
    let session = |browser: Option<&str>| NewSession {
        id: SessionId::new(),
        user_id: user.id,
        org_id: org.id,
        auth_method: AuthMethod::LocalPassword,
        device: Device::default(),
        expires_at: now + Duration::days(1),
        idp_groups: None,
        browser_token_hash: browser.map(str::to_owned),
    };
    // Apps' sessions, without a token: any number of them.
    for i in 0..3 {
        store.create_session(&session(None), &format!("refresh-app-{i}"), None, now).await.unwrap();
    }
    let browser = session(Some("browser-hash"));
    store.create_session(&browser, "refresh-browser", None, now).await.unwrap();
    // The same token again is refused, and nothing of it is written.
    let twin = session(Some("browser-hash"));
    assert!(store.create_session(&twin, "refresh-twin", None, now).await.is_err());
    assert!(
        matches!(store.get_session(twin.id).await, Err(StoreError::NotFound)),
        "the refused session was not stored"
    );
    let (found, _) = store.browser_session("browser-hash").await.unwrap().unwrap();
    assert_eq!(found.id, browser.id);
    let backend = store.backend();
    store.close().await;

    // The catalog's word that the index is partial, and the plan of the
    // lookup the store makes.
    match backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            let indexes = sqlx::query("PRAGMA index_list(sessions)").fetch_all(&mut conn).await.unwrap();
            let index = indexes
                .iter()
                .find(|row| row.get::<String, _>("name") == "sessions_by_browser_token")
                .expect("the index exists");
            assert_eq!((index.get::<i64, _>("unique"), index.get::<i64, _>("partial")), (1, 1));
            let plan = sqlx::query("EXPLAIN QUERY PLAN SELECT id FROM sessions WHERE browser_token_hash = ?")
                .bind("browser-hash")
                .fetch_all(&mut conn)
                .await
                .unwrap();
            let detail: Vec<String> = plan.iter().map(|row| row.get("detail")).collect();
            assert!(
                detail.iter().any(|d| d.contains("USING INDEX sessions_by_browser_token")),
                "the lookup uses the index: {detail:?}"
            );
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            let partial: bool = sqlx::query(
                "SELECT i.indisunique AND i.indpred IS NOT NULL AS partial FROM pg_index i \
                 JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'sessions_by_browser_token'",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get("partial");
            assert!(partial, "the index is unique and partial");
            // A table this small is read whole unless that is ruled out. The
            // store sends the token as a parameter, and a plan made for any
            // value (a generic one, which a prepared statement may be given)
            // must still prove the predicate from `= $1` alone.
            for setting in ["SET enable_seqscan = off", "SET plan_cache_mode = force_generic_plan"] {
                sqlx::query(setting).execute(&mut conn).await.unwrap();
            }
            sqlx::query("PREPARE by_token(text) AS SELECT id FROM sessions WHERE browser_token_hash = $1")
                .execute(&mut conn)
                .await
                .unwrap();
            let plan: Vec<String> = sqlx::query("EXPLAIN EXECUTE by_token('browser-hash')")
                .fetch_all(&mut conn)
                .await
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect();
            assert!(
                plan.iter().any(|line| line.contains("sessions_by_browser_token")),
                "the lookup uses the index: {plan:?}"
            );
        }
    }
}
