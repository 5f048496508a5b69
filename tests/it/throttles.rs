//! Brute force and abuse: per-account lockouts and per-address limits, on
//! both backends, answered 429 with `Retry-After` and recorded when they
//! apply.

use chrono::Duration;
use gatehouse_store::ThrottleRule;
use gatehouse_testkit::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::stub::Stub;
use crate::support::{TestServer, count_audit_events, on_both_backends};

fn rule(limit: u32, minutes: i64) -> Option<ThrottleRule> {
    Some(ThrottleRule { limit, window: Duration::minutes(minutes) })
}

/// A server whose client addresses come from `X-Forwarded-For`, with
/// `limits` applied to its settings.
async fn server(db: TestDb, limits: impl FnOnce(&mut gatehouse::config::RateLimits)) -> TestServer {
    TestServer::start(db, |s| {
        s.allow_private_targets = true;
        s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        s.rate_limits = gatehouse::config::RateLimits::OFF;
        limits(&mut s.rate_limits);
    })
    .await
}

async fn login_from(server: &TestServer, ip: &str, email: &str, password: &str) -> reqwest::Response {
    server
        .http
        .post(server.url("/v1/login"))
        .header("x-forwarded-for", ip)
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap()
}

async fn status_and_retry(response: reqwest::Response) -> (StatusCode, Option<u64>) {
    let retry = response.headers().get("retry-after").map(|v| v.to_str().unwrap().parse().unwrap());
    (response.status(), retry)
}

async fn events(server: &TestServer, org: &str, kind: &str) -> Vec<Value> {
    let (_, events) =
        server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/audit-events?limit=200"), None).await;
    events["items"].as_array().unwrap().iter().filter(|e| e["kind"] == kind).cloned().collect()
}

/// After three refusals by the organization's own service the account is
/// locked: the fourth attempt is 429 and never reaches the service (no
/// password spraying through Gatehouse), even with the right password,
/// until the lockout ends. A success forgets earlier failures.
async fn a_locked_account_is_refused_before_its_service_is_called(db: TestDb) {
    let server = server(db, |l| l.login_account = rule(3, 15)).await;
    let stub = Stub::start().await;
    let org = server.create_org("Acme").await;
    server.create_user(&org, "bob@example.com", None).await;
    let config = json!({ "authentication_url": format!("{}/login", stub.base), "http_action": "POST",
        "data_as": "json", "body": "{\"p\":\"{{USERPASSWORD}}\"}" });
    let path = format!("/admin/v1/orgs/{org}/external-auth/rest");
    assert_eq!(server.admin(Method::PUT, &path, Some(config)).await.0, StatusCode::OK);

    stub.respond_with(401);
    for _ in 0..3 {
        let (status, _) =
            status_and_retry(login_from(&server, "198.51.100.1", "bob@example.com", "guess").await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(stub.take().len(), 3);
    stub.respond_with(200);
    // Locked: from any address, with any password.
    for ip in ["198.51.100.1", "203.0.113.9"] {
        let (status, retry) =
            status_and_retry(login_from(&server, ip, "BOB@example.com", "right").await).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry, Some(15 * 60), "Retry-After says when the lockout ends");
    }
    assert!(stub.take().is_empty(), "nothing forwarded while locked");
    let applied = events(&server, &org, "rate_limit").await;
    assert_eq!(applied.len(), 1, "the lockout is recorded once: {applied:#?}");
    assert_eq!(applied[0]["detail"]["scope"], "account");
    assert_eq!(applied[0]["detail"]["action"], "login");
    assert!(applied[0]["user_id"].is_string());

    // The lockout ends by itself.
    server.clock.advance(Duration::minutes(15));
    assert_eq!(
        login_from(&server, "198.51.100.1", "bob@example.com", "right").await.status(),
        StatusCode::OK
    );
    // A success forgets the failures before it: two more are not a lockout.
    stub.respond_with(401);
    for _ in 0..2 {
        assert_eq!(
            login_from(&server, "198.51.100.1", "bob@example.com", "x").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    stub.respond_with(200);
    assert_eq!(
        login_from(&server, "198.51.100.1", "bob@example.com", "right").await.status(),
        StatusCode::OK
    );
    stub.respond_with(401);
    for _ in 0..2 {
        assert_eq!(
            login_from(&server, "198.51.100.1", "bob@example.com", "x").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

/// An unregistered email is locked out exactly like a registered one, so a
/// lockout tells an outsider nothing; and its attempts do not fill the
/// audit trail.
async fn lockouts_do_not_tell_which_emails_exist(db: TestDb) {
    let server = server(db, |l| {
        l.login_account = rule(3, 15);
        l.login_ip = rule(50, 10);
    })
    .await;
    let org = server.create_org("Acme").await;
    server.create_user(&org, "alice@example.com", Some("correct horse battery")).await;
    let mut answers = Vec::new();
    for email in ["alice@example.com", "nobody@example.com"] {
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(status_and_retry(login_from(&server, "198.51.100.7", email, "wrong").await).await);
        }
        answers.push(seen);
    }
    assert_eq!(answers[0], answers[1], "the same answers for a registered and an unknown email");
    assert_eq!(answers[0][3].0, StatusCode::TOO_MANY_REQUESTS);

    // Attempts at unknown emails: the first from each address in its window
    // is recorded, not every one.
    for i in 0..20 {
        login_from(&server, "198.51.100.8", &format!("probe{i}@example.com"), "x").await;
    }
    let unmatched = count_audit_events(server.db.url(), "login", true).await;
    assert_eq!(unmatched, 2, "25 attempts at unknown emails from two addresses");
}

/// Failed sign-ins from one address are limited whichever emails they
/// name; other addresses are not held up.
async fn an_address_is_limited_across_accounts(db: TestDb) {
    let server = server(db, |l| l.login_ip = rule(5, 10)).await;
    let org = server.create_org("Acme").await;
    server.create_user(&org, "alice@example.com", Some("correct horse battery")).await;
    for i in 0..5 {
        let response = login_from(&server, "2001:db8:1:2::1", &format!("user{i}@example.com"), "x").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    // The same /64, even with the right password: blocked.
    let (status, retry) = status_and_retry(
        login_from(&server, "2001:db8:1:2::99", "alice@example.com", "correct horse battery").await,
    )
    .await;
    assert_eq!((status, retry), (StatusCode::TOO_MANY_REQUESTS, Some(600)));
    let response = login_from(&server, "2001:db8:1:3::1", "alice@example.com", "correct horse battery").await;
    assert_eq!(response.status(), StatusCode::OK, "another subscriber is not held up");
    assert_eq!(
        count_audit_events(server.db.url(), "rate_limit", true).await,
        1,
        "the block is recorded, once"
    );
}

/// Reset requests are limited per account and per address; the answer is
/// the same whether or not the email is registered.
async fn password_resets_are_limited(db: TestDb) {
    let server = server(db, |l| {
        l.forgot_password_account = rule(2, 60);
        l.forgot_password_ip = rule(5, 60);
    })
    .await;
    let org = server.create_org("Acme").await;
    server.create_user(&org, "alice@example.com", Some("correct horse battery")).await;
    let forgot = |email: &'static str, ip: &'static str| {
        let server = &server;
        async move {
            let response = server
                .http
                .post(server.url("/v1/password/forgot"))
                .header("x-forwarded-for", ip)
                .json(&json!({ "email": email }))
                .send()
                .await
                .unwrap();
            status_and_retry(response).await
        }
    };
    for email in ["alice@example.com", "nobody@example.com"] {
        assert_eq!(forgot(email, "198.51.100.1").await.0, StatusCode::ACCEPTED);
        assert_eq!(forgot(email, "198.51.100.2").await.0, StatusCode::ACCEPTED);
        assert_eq!(
            forgot(email, "198.51.100.3").await,
            (StatusCode::TOO_MANY_REQUESTS, Some(3600)),
            "{email}"
        );
    }
    // Per address, whichever emails: five from one address, then no more.
    for email in [
        "carol@example.com",
        "dave@example.com",
        "erin@example.com",
        "frank@example.com",
        "grace@example.com",
    ] {
        assert_eq!(forgot(email, "198.51.100.9").await.0, StatusCode::ACCEPTED);
    }
    assert_eq!(forgot("heidi@example.com", "198.51.100.9").await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(forgot("heidi@example.com", "198.51.100.10").await.0, StatusCode::ACCEPTED);
}

/// Single sign-on starts are limited per address (each stores a flow).
async fn sso_starts_are_limited(db: TestDb) {
    let server = server(db, |l| l.sso_start_ip = rule(3, 10)).await;
    let start = |ip: &'static str| {
        let server = &server;
        async move {
            let response = server
                .http
                .get(server.url("/v1/sso/start?email=ada@example.com"))
                .header("x-forwarded-for", ip)
                .send()
                .await
                .unwrap();
            response.status()
        }
    };
    for _ in 0..3 {
        assert_eq!(start("198.51.100.1").await, StatusCode::NOT_FOUND);
    }
    assert_eq!(start("198.51.100.1").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(start("198.51.100.2").await, StatusCode::NOT_FOUND);
}

/// Calls with a bad SCIM token are limited per address; a valid token is
/// never held up, even from a blocked address.
async fn scim_authentication_failures_are_limited(db: TestDb) {
    let server = server(db, |l| l.scim_auth_ip = rule(3, 10)).await;
    let (_, token) = server.scim_org("okta").await;
    let token = token.as_str();
    let call = |bearer: &str| {
        server
            .http
            .get(server.url("/scim/v2/Users"))
            .header("x-forwarded-for", "198.51.100.1")
            .bearer_auth(bearer.to_owned())
            .send()
    };
    for i in 0..2 {
        assert_eq!(call(&format!("ghs_guess{i}")).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    let tripped = call("ghs_guess2").await.unwrap();
    assert_eq!(tripped.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(tripped.headers()["content-type"], "application/scim+json");
    assert_eq!(tripped.headers()["retry-after"], "600");
    assert_eq!(call("ghs_guess3").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(call(token).await.unwrap().status(), StatusCode::OK, "a valid token goes through");
}

/// With every hashing place taken and none to wait in, a sign-in is told
/// at once that the service is busy, instead of queueing without limit.
async fn a_full_hashing_queue_answers_503_at_once(db: TestDb) {
    let server = TestServer::start(db, |s| {
        s.password_hash_concurrency = 1;
        s.password_hash_queue = 0;
    })
    .await;
    let org = server.create_org("Acme").await;
    server.create_user(&org, "alice@example.com", Some("correct horse battery")).await;
    let burst = (0..16).map(|_| {
        let request = server
            .http
            .post(server.url("/v1/login"))
            .json(&json!({ "email": "alice@example.com", "password": "correct horse battery" }));
        async move { status_and_retry(request.send().await.unwrap()).await }
    });
    let answers = futures::future::join_all(burst).await;
    let busy = answers.iter().filter(|a| **a == (StatusCode::SERVICE_UNAVAILABLE, Some(1))).count();
    let ok = answers.iter().filter(|a| a.0 == StatusCode::OK).count();
    assert!(busy > 0 && ok > 0, "{answers:?}");
    assert_eq!(busy + ok, answers.len(), "only 200 or 503 busy: {answers:?}");
}

on_both_backends!(
    databases: a_locked_account_is_refused_before_its_service_is_called,
    lockouts_do_not_tell_which_emails_exist,
    an_address_is_limited_across_accounts,
    password_resets_are_limited,
    sso_starts_are_limited,
    scim_authentication_failures_are_limited,
    a_full_hashing_queue_answers_503_at_once,
);
