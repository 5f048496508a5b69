//! Issue 13, hole 4: slow clients held connections forever. The server has a
//! header-read deadline (also for idle kept-alive connections), an idle
//! timeout for request bodies, a deadline for whole requests, a cap on open
//! connections, and a body limit on every route.

use std::time::{Duration, Instant};

use gatehouse_testkit::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stub::Stub;
use crate::support::{TestServer, on_both_backends};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
/// Far more than any deadline here: a connection still open after it was
/// held open forever, as before.
const FOREVER: Duration = Duration::from_secs(20);

async fn server(db: TestDb, max_connections: usize) -> TestServer {
    TestServer::start(db, |s| {
        s.limits.client_timeout = CLIENT_TIMEOUT;
        s.limits.max_connections = max_connections;
        s.allow_private_targets = true;
    })
    .await
}

async fn connect(server: &TestServer) -> TcpStream {
    TcpStream::connect(server.base.trim_start_matches("http://")).await.unwrap()
}

/// Reads until the server closes the connection; returns what it sent.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(FOREVER, stream.read_to_end(&mut seen)).await;
    assert!(
        read.is_ok(),
        "the server kept the connection open; it sent {:?}",
        String::from_utf8_lossy(&seen)
    );
    String::from_utf8_lossy(&seen).into_owned()
}

async fn half_sent_headers_and_idle_connections_are_closed(db: TestDb) {
    let server = server(db, 64).await;
    // Half the headers, then nothing.
    let mut half = connect(&server).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: gatehouse.test\r\nX-Slow: ").await.unwrap();
    let started = Instant::now();
    let sent = until_closed(&mut half).await;
    assert!(!sent.contains("200 OK"), "{sent}");
    assert!(started.elapsed() >= CLIENT_TIMEOUT / 2, "closed before the client had its time");

    // Nothing at all.
    let mut silent = connect(&server).await;
    until_closed(&mut silent).await;

    // One request, then an idle kept-alive connection.
    let mut idle = connect(&server).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: gatehouse.test\r\n\r\n").await.unwrap();
    let sent = until_closed(&mut idle).await;
    assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
}

async fn a_stalled_body_ends_its_request(db: TestDb) {
    let server = server(db, 64).await;
    let mut slow = connect(&server).await;
    slow.write_all(
        b"POST /v1/login HTTP/1.1\r\nHost: gatehouse.test\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"email\":",
    )
    .await
    .unwrap();
    let sent = until_closed(&mut slow).await;
    assert!(sent.starts_with("HTTP/1.1 400"), "a body that stops is a bad request: {sent}");
}

async fn a_request_has_a_deadline_whatever_it_waits_for(db: TestDb) {
    let server = TestServer::start(db, |s| {
        s.request_timeout = Duration::from_secs(1);
        s.allow_private_targets = true;
    })
    .await;
    let stub = Stub::start().await;
    stub.delay(FOREVER);
    let org = server.create_org("Acme").await;
    server.create_user(&org, "bob@example.com", None).await;
    let config = json!({ "authentication_url": format!("{}/login", stub.base), "http_action": "POST",
        "data_as": "json", "timeout_ms": 60_000 });
    let path = format!("/admin/v1/orgs/{org}/external-auth/rest");
    assert_eq!(server.admin(Method::PUT, &path, Some(config)).await.0, StatusCode::OK);
    let login = server.login("bob@example.com", "secret");
    let (status, body) = tokio::time::timeout(FOREVER, login).await.expect("the request ended");
    assert_eq!((status, body["error"].as_str()), (StatusCode::REQUEST_TIMEOUT, Some("request_timeout")));
}

async fn connections_beyond_the_cap_wait_for_a_free_place(db: TestDb) {
    let server = server(db, 3).await;
    // Three connections take every place and send nothing.
    let mut cut_at = Vec::new();
    for _ in 0..3 {
        let mut idle = connect(&server).await;
        cut_at.push(tokio::spawn(async move {
            until_closed(&mut idle).await;
            Instant::now()
        }));
    }
    tokio::time::sleep(CLIENT_TIMEOUT / 4).await;
    // A fourth is served, once an idle one was cut.
    let response = tokio::time::timeout(FOREVER, server.http.get(server.url("/healthz")).send())
        .await
        .expect("served once a place freed up")
        .unwrap();
    let served_at = Instant::now();
    assert_eq!(response.status(), StatusCode::OK);
    let mut first_cut = None;
    for cut in cut_at {
        let at = cut.await.unwrap();
        first_cut = Some(first_cut.map_or(at, |f: Instant| f.min(at)));
    }
    assert!(first_cut.unwrap() <= served_at, "served while every place was taken");
}

async fn every_route_limits_its_body(db: TestDb) {
    let server = server(db, 64).await;
    let org = server.create_org("Acme").await;
    let big = vec![b'a'; 300 * 1024];
    let routes = [
        ("/v1/login", "application/json"),
        ("/v1/password/forgot", "application/json"),
        ("/v1/token/refresh", "application/json"),
        ("/v1/sso/token", "application/json"),
        ("/admin/v1/orgs", "application/json"),
        (&*format!("/admin/v1/orgs/{org}/users"), "application/json"),
        ("/scim/v2/Users", "application/scim+json"),
    ];
    // The SAML ACS takes up to 256 KiB of base64 (its own test posts more).
    for (path, content_type) in routes {
        let response = server
            .http
            .post(server.url(path))
            .bearer_auth(crate::support::ADMIN_TOKEN)
            .header("content-type", content_type)
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
    }
}

on_both_backends!(
    databases: half_sent_headers_and_idle_connections_are_closed,
    a_stalled_body_ends_its_request,
    a_request_has_a_deadline_whatever_it_waits_for,
    connections_beyond_the_cap_wait_for_a_free_place,
    every_route_limits_its_body,
);

/// `serve` runs its accept loop as a task of its own (`src/lib.rs`), but
/// dropping it, as aborting the task that awaits it does, still stops
/// the server: its port is closed.
#[tokio::test]
async fn dropping_serve_stops_the_server() {
    let mut server = TestServer::sqlite().await;
    let answer = server.http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);

    server.abort_serving().await;
    let started = Instant::now();
    while TcpStream::connect(server.base.trim_start_matches("http://")).await.is_ok() {
        assert!(started.elapsed() < FOREVER, "the server still accepts after serve was dropped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
