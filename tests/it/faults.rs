//! Faults, provoked for real: the database going away under load, the
//! organization's service misbehaving, a process killed mid-write.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use gatehouse_testkit::TestDb;
use reqwest::StatusCode;

use crate::proxy::Proxy;
use crate::support::TestServer;

/// A Gatehouse on PostgreSQL, reached through a proxy the test can cut.
async fn postgres_behind_a_proxy() -> Option<(TestServer, Proxy)> {
    let db = TestDb::postgres().await?;
    let mut url = url::Url::parse(db.url()).unwrap();
    let upstream = (url.host_str().unwrap(), url.port().unwrap_or(5432));
    let upstream = tokio::net::lookup_host(upstream).await.unwrap().next().unwrap();
    let proxy = Proxy::start(upstream).await;
    url.set_port(Some(proxy.addr.port())).unwrap();
    let server = TestServer::start(db, |s| s.database_url = url.to_string()).await;
    Some((server, proxy))
}

/// While the database is down, requests fail cleanly (503 with
/// `Retry-After`, never 500), and once it is back they succeed again
/// without restarting Gatehouse.
#[tokio::test]
async fn the_database_going_away_mid_load_is_a_clean_503() {
    let Some((server, proxy)) = postgres_behind_a_proxy().await else { return };
    let org = server.create_sso_org(&["https://app.example.com/"]).await;
    server.create_user(&org, "ada@example.com", Some("correct horse battery")).await;
    let (_, token) = server
        .admin(
            reqwest::Method::POST,
            &format!("/admin/v1/orgs/{org}/scim-tokens"),
            Some(serde_json::json!({ "label": "okta", "idp": "okta" })),
        )
        .await;
    let scim_token = token["token"].as_str().unwrap().to_owned();
    assert_eq!(server.login("ada@example.com", "correct horse battery").await.0, StatusCode::OK);

    let server = Arc::new(server);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, unavailable) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (server, stop, ok, unavailable) = (server.clone(), stop.clone(), ok.clone(), unavailable.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let response = server
                        .http
                        .post(server.url("/v1/login"))
                        .json(&serde_json::json!({ "email": "ada@example.com", "password": "correct horse battery" }))
                        .send()
                        .await
                        .unwrap();
                    match response.status() {
                        StatusCode::OK => ok.fetch_add(1, Ordering::SeqCst),
                        StatusCode::SERVICE_UNAVAILABLE => {
                            let retry = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                            assert_eq!(retry.as_deref(), Some("5"), "503 says when to retry");
                            let body: serde_json::Value = response.json().await.unwrap();
                            assert_eq!(body["error"], "database_unavailable");
                            unavailable.fetch_add(1, Ordering::SeqCst)
                        }
                        other => panic!("a sign-in during the outage answered {other}: {:?}", response.text().await),
                    };
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ok.load(Ordering::SeqCst);
    assert!(before > 0, "the load runs");
    proxy.cut();
    // The outage is seen by every surface the same way.
    let ready = server.http.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let scim = server.http.get(server.url("/scim/v2/Users")).bearer_auth(&scim_token).send().await.unwrap();
    assert_eq!(scim.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(scim.headers().get("retry-after").unwrap(), "5");
    let body: serde_json::Value = scim.json().await.unwrap();
    assert_eq!(
        (body["status"].as_str(), body["schemas"][0].as_str()),
        (Some("503"), Some("urn:ietf:params:scim:api:messages:2.0:Error"))
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = unavailable.load(Ordering::SeqCst);
    assert!(during > 0, "requests failed as unavailable during the outage");
    proxy.restore();

    // Back without a restart: sign-ins succeed again.
    let resumed = ok.load(Ordering::SeqCst);
    let mut waited = Duration::ZERO;
    while ok.load(Ordering::SeqCst) < resumed + 10 {
        assert!(waited < Duration::from_secs(30), "sign-ins did not resume after the database came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(server.http.get(server.url("/readyz")).send().await.unwrap().status(), StatusCode::OK);
}
