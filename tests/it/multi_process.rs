//! Two `gatehouse serve` processes on one PostgreSQL are one service.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::cli::{Process, call, gatehouse, walkthrough};

#[tokio::test]
async fn two_processes_on_one_postgres_are_one_service() {
    let Some(db) = gatehouse_testkit::TestDb::postgres().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let master = gatehouse_session::MasterKey::generate().to_base64();
    let node = || {
        let mut cmd = gatehouse(dir.path());
        cmd.env("GATEHOUSE_DATABASE_URL", db.url())
            .env("GATEHOUSE_MASTER_KEY", &master)
            .env("GATEHOUSE_PUBLIC_URL", "https://id.example.com")
            .env("GATEHOUSE_LOG_FORMAT", "json");
        cmd
    };
    let out = node().args(["admin-token", "create", "--label", "ops"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let a = Process::serve(node(), dir.path(), "a").await;
    let b = Process::serve(node(), dir.path(), "b").await;
    assert!(!dir.path().join("data").exists(), "nothing kept on local disk with PostgreSQL");

    let (_, jwks_a) = call(Method::GET, format!("{}/.well-known/jwks.json", a.base), None, None).await;
    let (_, jwks_b) = call(Method::GET, format!("{}/.well-known/jwks.json", b.base), None, None).await;
    assert_eq!(jwks_a, jwks_b);
    assert_eq!(jwks_a["keys"].as_array().unwrap().len(), 1, "both nodes share one signing key");

    // Created on A, signed in on A...
    let (status, org) = call(
        Method::POST,
        format!("{}/admin/v1/orgs", a.base),
        Some(&admin),
        Some(json!({ "name": "Acme" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let org = org["id"].as_str().unwrap();
    call(
        Method::POST,
        format!("{}/admin/v1/orgs/{org}/users", a.base),
        Some(&admin),
        Some(json!({ "email": "pat@example.com", "password": "pat's password" })),
    )
    .await;
    let (status, tokens) = call(
        Method::POST,
        format!("{}/v1/login", a.base),
        None,
        Some(json!({ "email": "pat@example.com", "password": "pat's password" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // ...verified and refreshed on B.
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(call(Method::GET, format!("{}/v1/me", b.base), Some(access), None).await.0, StatusCode::OK);
    let (status, on_b) = call(
        Method::POST,
        format!("{}/v1/token/refresh", b.base),
        None,
        Some(json!({ "refresh_token": tokens["refresh_token"] })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{on_b}");

    // Replaying the spent token on A is detected, and revokes the session B
    // continued.
    let (status, _) = call(
        Method::POST,
        format!("{}/v1/token/refresh", a.base),
        None,
        Some(json!({ "refresh_token": tokens["refresh_token"] })),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(
        Method::POST,
        format!("{}/v1/token/refresh", b.base),
        None,
        Some(json!({ "refresh_token": on_b["refresh_token"] })),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A key rotated with the CLI is published by both nodes.
    let out = node().args(["keys", "rotate", "--alg", "EdDSA"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, jwks_a) = call(Method::GET, format!("{}/.well-known/jwks.json", a.base), None, None).await;
    let (_, jwks_b) = call(Method::GET, format!("{}/.well-known/jwks.json", b.base), None, None).await;
    assert_eq!(jwks_a, jwks_b);
    assert_eq!(jwks_a["keys"].as_array().unwrap().len(), 2);
    assert_eq!(
        call(Method::GET, format!("{}/v1/me", a.base), Some(on_b["access_token"].as_str().unwrap()), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED,
        "session was revoked"
    );

    walkthrough(&b.base, "https://id.example.com", &admin).await;

    // JSON logs with request ids, and no secret anywhere in them.
    let logs = format!("{}{}", a.log_text(), b.log_text());
    let first = logs.lines().find(|l| l.contains("request_id")).expect("request logs");
    serde_json::from_str::<serde_json::Value>(first).expect("JSON log lines");
    for secret in
        ["pat's password", admin.as_str(), access, tokens["refresh_token"].as_str().unwrap(), master.as_str()]
    {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}
