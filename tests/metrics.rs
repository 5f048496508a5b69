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

/// Issue 13, hole 3: each request with a made-up method added series to
/// `/metrics`, a memory leak anyone could drive. Labels come from fixed sets.
#[tokio::test]
async fn callers_cannot_add_series() {
    let server = TestServer::sqlite().await;
    // Only this test sends requests that match no route.
    let unmatched = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains(r#"route="unmatched""#))
            .map(|l| l.split(' ').next().unwrap().to_owned())
            .collect()
    };
    let round = |n: usize| {
        let server = &server;
        async move {
            for i in 0..40 {
                let method = reqwest::Method::from_bytes(format!("M{n}X{i}").as_bytes()).unwrap();
                let path = format!("/made/up/{n}/{i}?q={i}");
                let status = server.http.request(method, server.url(&path)).send().await.unwrap().status();
                assert_eq!(status, StatusCode::NOT_FOUND);
            }
        }
    };
    let scrape =
        || async { server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap() };
    round(0).await;
    let before = unmatched(&scrape().await);
    round(1).await;
    let after = scrape().await;
    assert!(!after.contains("M1X") && !after.contains("/made/up"), "caller text in a label:\n{after}");
    assert_eq!(unmatched(&after), before, "the second round added series");
    assert_eq!(
        count(&after, r#"gatehouse_http_requests_total{route="unmatched",method="other",status="404"}"#),
        80
    );
}
