//! Signing-key rotation, sealing and publication.

use chrono::Duration;
use gatehouse::Settings;
use gatehouse_session::SigningAlgorithm;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::TestServer;

async fn jwks_kids(server: &TestServer) -> Vec<String> {
    let jwks: Value =
        server.http.get(server.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

fn kid_of(token: &Value) -> String {
    jsonwebtoken::decode_header(token["access_token"].as_str().unwrap()).unwrap().kid.unwrap()
}

#[tokio::test]
async fn rotation_keeps_old_tokens_valid_until_they_expire() {
    let server = TestServer::sqlite().await;
    let org = server.create_org("Acme").await;
    server.create_user(&org, "kim@example.com", Some("kim's password")).await;
    let (_, before) = server.login("kim@example.com", "kim's password").await;
    let old_kid = kid_of(&before);
    assert_eq!(jwks_kids(&server).await, vec![old_kid.clone()]);

    let new_kid = server.state.keys().rotate(SigningAlgorithm::EdDsa).await.unwrap();
    assert_eq!(
        jwks_kids(&server).await,
        [new_kid.clone(), old_kid.clone()],
        "newest first, old still published"
    );
    let (_, after) = server.login("kim@example.com", "kim's password").await;
    assert_eq!(kid_of(&after), new_kid);
    assert_eq!(server.me(before["access_token"].as_str().unwrap()).await.0, StatusCode::OK);

    // Once every token the old key signed has expired, it is withdrawn.
    server.clock.advance(Duration::minutes(14));
    assert_eq!(jwks_kids(&server).await.len(), 2);
    server.clock.advance(Duration::minutes(3));
    assert_eq!(jwks_kids(&server).await, [new_kid]);
    // Refresh tokens outlive key rotation: they are not signed.
    let (status, _) = server
        .post("/v1/token/refresh", serde_json::json!({ "refresh_token": before["refresh_token"] }))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_key_rotated_by_another_process_is_picked_up() {
    let server = TestServer::sqlite().await;
    let org = server.create_org("Acme").await;
    server.create_user(&org, "lee@example.com", Some("lee's password")).await;
    let (_, first) = server.login("lee@example.com", "lee's password").await;

    // Another node on the same database rotates.
    let mut settings = Settings::for_tests(server.db.url());
    settings.master_key = server.state.settings().master_key.clone();
    let other = gatehouse::bootstrap(settings, server.clock.clone()).await.unwrap();
    let new_kid = other.keys().rotate(SigningAlgorithm::Es256).await.unwrap();

    // This node publishes it at once and signs with it once its cache ages.
    assert!(jwks_kids(&server).await.contains(&new_kid));
    server.clock.advance(Duration::seconds(31));
    let (_, second) = server.login("lee@example.com", "lee's password").await;
    assert_eq!(kid_of(&second), new_kid);
    assert_ne!(kid_of(&first), new_kid);
}

#[tokio::test]
async fn signing_keys_are_sealed_with_the_master_key() {
    let server = TestServer::sqlite().await;
    let pool = sqlx::SqlitePool::connect(server.db.url()).await.unwrap();
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT sealed_private_key, public_jwk FROM signing_keys")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    let (sealed, jwk) = &rows[0];
    assert!(sealed.starts_with("v2."), "sealed, and naming its master key: {sealed}");
    assert!(!jwk.contains("\"d\""), "only the public half is stored in clear: {jwk}");
    pool.close().await;

    // With another master key the stored keys cannot be opened, and the
    // service refuses to start rather than mint a second identity.
    let mut settings = Settings::for_tests(server.db.url());
    settings.admin_token = None;
    let err =
        gatehouse::bootstrap(settings, server.clock.clone()).await.err().expect("wrong master key refused");
    assert!(format!("{err:#}").contains("signing"), "{err:#}");
}
