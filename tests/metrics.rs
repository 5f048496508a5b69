//! `/metrics` counts, checked exactly.
//!
//! The metrics registry is process-wide, so this test has a binary of its
//! own: no other test's requests can add to the counts it reads.

#![allow(unreachable_pub, unused)]

#[path = "it/support.rs"]
mod support;

use reqwest::StatusCode;
use support::TestServer;

fn count(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
}

#[tokio::test]
async fn metrics_count_requests_and_logins() {
    let server = TestServer::sqlite().await;
    let org = server.create_org("Metrics Org").await;
    server.create_user(&org, "m@example.com", Some("m's password")).await;
    assert_eq!(server.login("m@example.com", "m's password").await.0, StatusCode::OK);
    for _ in 0..2 {
        assert_eq!(server.login("m@example.com", "not it").await.0, StatusCode::UNAUTHORIZED);
    }
    let text = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();

    assert_eq!(count(&text, r#"gatehouse_logins_total{method="password",outcome="success"}"#), 1);
    assert_eq!(count(&text, r#"gatehouse_logins_total{method="password",outcome="failure"}"#), 2);
    assert_eq!(
        count(&text, r#"gatehouse_http_requests_total{route="/v1/login",method="POST",status="200"}"#),
        1
    );
    assert_eq!(
        count(&text, r#"gatehouse_http_requests_total{route="/v1/login",method="POST",status="401"}"#),
        2
    );
    assert_eq!(
        count(
            &text,
            r#"gatehouse_http_requests_total{route="/admin/v1/orgs/{org_id}/users",method="POST",status="201"}"#
        ),
        1
    );
    assert_eq!(
        count(
            &text,
            r#"gatehouse_http_request_duration_seconds_count{route="/v1/login",method="POST",status="401"}"#
        ),
        2
    );
    assert!(text.contains("gatehouse_http_request_duration_seconds_bucket{"), "latency histograms: {text}");
    assert!(
        !text.contains("m's password") && !text.contains("m@example.com"),
        "no secrets or emails in metrics"
    );
}
