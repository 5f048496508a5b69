//! The admin API: authentication, organizations and users.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{ADMIN_TOKEN, TestServer, on_both_backends};

async fn organizations_crud(server: TestServer) {
    let (status, org) = server
        .admin(Method::POST, "/admin/v1/orgs", Some(json!({ "name": " Acme ", "enterprise_toolkit": true })))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{org}");
    assert_eq!(org["name"], "Acme", "names are trimmed");
    assert_eq!(org["enterprise_toolkit"], true);
    let id = org["id"].as_str().unwrap();
    let path = format!("/admin/v1/orgs/{id}");

    let (status, got) = server.admin(Method::GET, &path, None).await;
    assert_eq!((status, &got), (StatusCode::OK, &org));

    let (status, updated) =
        server.admin(Method::PATCH, &path, Some(json!({ "enterprise_toolkit": false }))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (updated["name"].as_str(), updated["enterprise_toolkit"].as_bool()),
        (Some("Acme"), Some(false))
    );

    for name in ["Beta", "Gamma"] {
        server.create_org(name).await;
    }
    let (_, page1) = server.admin(Method::GET, "/admin/v1/orgs?limit=2", None).await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    let next = page1["next"].as_str().unwrap();
    let (_, page2) = server.admin(Method::GET, &format!("/admin/v1/orgs?limit=2&after={next}"), None).await;
    let names: Vec<_> =
        page2["items"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Gamma"]);

    assert_eq!(server.admin(Method::DELETE, &path, None).await.0, StatusCode::NO_CONTENT);
    let (status, body) = server.admin(Method::GET, &path, None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    assert_eq!(server.admin(Method::DELETE, &path, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        server.admin(Method::PATCH, &path, Some(json!({ "name": "X" }))).await.0,
        StatusCode::NOT_FOUND
    );
}

async fn users_crud(server: TestServer) {
    let org = server.create_org("Acme").await;
    let other_org = server.create_org("Other").await;
    let users = format!("/admin/v1/orgs/{org}/users");
    let (status, user) = server
        .admin(
            Method::POST,
            &users,
            Some(json!({ "email": "Ann@Example.com", "display_name": "Ann", "external_id": "E-1", "password": "ann's password" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["email"], "Ann@Example.com");
    assert_eq!(user["external_id"], "E-1");
    assert_eq!(user["active"], true);
    assert_eq!(user["has_password"], true);
    assert!(!user.to_string().contains("argon2"), "no hash in the view: {user}");
    let path = format!("{users}/{}", user["id"].as_str().unwrap());

    // Emails are unique across the platform, whatever their case.
    for (org_id, email) in [(&org, "ann@example.com"), (&other_org, "ANN@EXAMPLE.COM")] {
        let (status, body) = server
            .admin(Method::POST, &format!("/admin/v1/orgs/{org_id}/users"), Some(json!({ "email": email })))
            .await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "{email}");
    }
    let unknown = "/admin/v1/orgs/01a2221d-50f7-7697-ad4d-23a24da039c7/users";
    assert_eq!(
        server.admin(Method::POST, unknown, Some(json!({ "email": "x@example.com" }))).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(server.admin(Method::GET, unknown, None).await.0, StatusCode::NOT_FOUND);

    let (status, patched) = server
        .admin(
            Method::PATCH,
            &path,
            Some(json!({ "display_name": "Ann B.", "external_id": null, "password": null })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["display_name"], "Ann B.");
    assert_eq!(patched["external_id"], json!(null));
    assert_eq!(patched["has_password"], false);
    assert_eq!(patched["email"], "Ann@Example.com", "untouched");
    assert_eq!(server.login("ann@example.com", "ann's password").await.0, StatusCode::UNAUTHORIZED);

    let (_, patched) =
        server.admin(Method::PATCH, &path, Some(json!({ "password": "a new password" }))).await;
    assert_eq!(patched["has_password"], true);
    assert_eq!(server.login("ann@example.com", "a new password").await.0, StatusCode::OK);

    // A user is only reachable under its own organization.
    let foreign = format!("/admin/v1/orgs/{other_org}/users/{}", user["id"].as_str().unwrap());
    assert_eq!(server.admin(Method::GET, &foreign, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(server.admin(Method::DELETE, &foreign, None).await.0, StatusCode::NOT_FOUND);

    for i in 0..4 {
        server.create_user(&org, &format!("u{i}@example.com"), None).await;
    }
    let (_, page) = server.admin(Method::GET, &format!("{users}?limit=3"), None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let (_, rest) = server
        .admin(Method::GET, &format!("{users}?limit=3&after={}", page["next"].as_str().unwrap()), None)
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);
    assert_eq!(rest["next"], json!(null));

    assert_eq!(server.admin(Method::DELETE, &path, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(server.admin(Method::GET, &path, None).await.0, StatusCode::NOT_FOUND);
    // Deleting the organization takes its users with it.
    assert_eq!(
        server.admin(Method::DELETE, &format!("/admin/v1/orgs/{org}"), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(server.login("u0@example.com", "whatever").await.0, StatusCode::UNAUTHORIZED);
}

/// Every change made through the admin API is in the audit trail, with the
/// admin token that made it; the trail filters by organization (or none),
/// kind, user and time, and forgets what is past its retention.
async fn admin_changes_are_audited(server: TestServer) {
    // A stored admin token, beside the bootstrap one.
    let ops_token = "ops-admin-token-0123456789abcdefghijkl";
    let hash = gatehouse_session::hash_opaque_token(ops_token);
    let record = server.state.store().create_admin_token("ops", &hash, chrono::Utc::now()).await.unwrap();
    let ops = |method: Method, path: String, body: Option<serde_json::Value>| {
        let mut req = server.http.request(method, server.url(&path)).bearer_auth(ops_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        server.send(req)
    };

    let org = server.create_org("Acme").await;
    let (_, user) = ops(
        Method::POST,
        format!("/admin/v1/orgs/{org}/users"),
        Some(json!({ "email": "a@acme.test", "password": "a long secret" })),
    )
    .await;
    let user_id = user["id"].as_str().unwrap().to_owned();
    ops(
        Method::PATCH,
        format!("/admin/v1/orgs/{org}/users/{user_id}"),
        Some(json!({ "password": "another secret", "active": false })),
    )
    .await;
    ops(Method::PATCH, format!("/admin/v1/orgs/{org}"), Some(json!({ "enterprise_toolkit": true }))).await;
    let (_, token) = ops(
        Method::POST,
        format!("/admin/v1/orgs/{org}/scim-tokens"),
        Some(json!({ "label": "okta", "idp": "okta" })),
    )
    .await;
    ops(Method::DELETE, format!("/admin/v1/orgs/{org}/scim-tokens/{}", token["id"].as_str().unwrap()), None)
        .await;
    ops(Method::POST, format!("/admin/v1/orgs/{org}/domains"), Some(json!({ "domain": "acme.test" }))).await;
    ops(
        Method::PUT,
        format!("/admin/v1/orgs/{org}/sso"),
        Some(json!({ "redirect_urls": ["https://app.acme.test/"] })),
    )
    .await;
    ops(Method::DELETE, format!("/admin/v1/orgs/{org}/users/{user_id}"), None).await;
    // A sign-in attempt that matches no organization.
    server.login("nobody@nowhere.test", "whatever").await;

    let list = |query: String| {
        let server = &server;
        async move {
            let (status, page) =
                server.admin(Method::GET, &format!("/admin/v1/audit-events?{query}"), None).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            page["items"].as_array().unwrap().clone()
        }
    };
    let kinds = |events: &[serde_json::Value]| -> Vec<String> {
        events.iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect()
    };
    let mine = list(format!("org_id={org}")).await;
    assert_eq!(
        kinds(&mine),
        [
            "user_deleted",
            "sso_policy_changed",
            "domain_added",
            "scim_token_revoked",
            "scim_token_created",
            "org_updated",
            "user_updated",
            "user_created",
            "org_created"
        ]
    );
    let actor = format!("admin:{}", record.id);
    assert!(mine[..8].iter().all(|e| e["actor"] == actor.as_str()), "{mine:?}");
    assert_eq!(mine[8]["actor"], "admin:bootstrap");
    // What changed, never to what: no password, no token.
    assert_eq!(mine[6]["detail"], json!({ "fields": ["active", "password"], "active": false }));
    let text = serde_json::to_string(&mine).unwrap();
    assert!(!text.contains("secret") && !text.contains(token["token"].as_str().unwrap()));

    // Filters: by kind, by user, by time, and the attempts of no organization.
    assert_eq!(kinds(&list("kind=org_updated".into()).await), ["org_updated"]);
    assert_eq!(
        kinds(&list(format!("user_id={user_id}")).await),
        ["user_deleted", "user_updated", "user_created"]
    );
    let nobody = list("org_id=none".into()).await;
    assert_eq!(
        (kinds(&nobody), nobody[0]["detail"]["reason"].as_str()),
        (vec!["login".to_owned()], Some("unknown_user"))
    );
    let now = server.clock_now().as_i64().unwrap();
    let at = |t: i64| chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339().replace('+', "%2B");
    assert_eq!(list(format!("since={}", at(now + 1))).await.len(), 0);
    assert_eq!(list(format!("org_id={org}&until={}", at(now + 1))).await.len(), 9);
    for bad in [
        "kind=DROP%20TABLE",
        "user_id=nope",
        "org_id=nope",
        "since=yesterday",
        &format!("since={0}&until={0}", at(now)),
    ] {
        let (status, body) = server.admin(Method::GET, &format!("/admin/v1/audit-events?{bad}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, _) =
        server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/audit-events?org_id=none"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Retention (365 days by default): a year and a day on, the sweep forgets them.
    server.clock.advance(chrono::Duration::days(366));
    server.state.sweep().await;
    assert_eq!(list(String::new()).await.len(), 0);
}

on_both_backends!(organizations_crud, users_crud, admin_changes_are_audited);

#[tokio::test]
async fn every_admin_route_needs_a_valid_token() {
    let server = TestServer::sqlite().await;
    let org = server.create_org("Acme").await;
    let user = server.create_user(&org, "a@example.com", None).await;
    let user_path = format!("/admin/v1/orgs/{org}/users/{}", user["id"].as_str().unwrap());
    let routes = [
        (Method::GET, "/admin/v1/orgs".to_owned()),
        (Method::POST, "/admin/v1/orgs".to_owned()),
        (Method::GET, format!("/admin/v1/orgs/{org}")),
        (Method::PATCH, format!("/admin/v1/orgs/{org}")),
        (Method::DELETE, format!("/admin/v1/orgs/{org}")),
        (Method::GET, format!("/admin/v1/orgs/{org}/users")),
        (Method::POST, format!("/admin/v1/orgs/{org}/users")),
        (Method::GET, user_path.clone()),
        (Method::PATCH, user_path.clone()),
        (Method::DELETE, user_path.clone()),
        (Method::GET, format!("/admin/v1/orgs/{org}/audit-events")),
    ];
    for (method, path) in &routes {
        for auth in
            [None, Some("Bearer wrong-token"), Some(&format!("Basic {ADMIN_TOKEN}")[..]), Some("Bearer ")]
        {
            let mut req = server.http.request(method.clone(), server.url(path)).json(&json!({ "name": "x" }));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let (status, body) = server.send(req).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with {auth:?}");
            assert_eq!(body["error"], "unauthorized");
        }
    }
    // Nothing was changed by the refused calls.
    let (_, user_now) = server.admin(Method::GET, &user_path, None).await;
    assert_eq!(user_now, user);
}

#[tokio::test]
async fn validation_errors_name_the_field() {
    let server = TestServer::sqlite().await;
    let org = server.create_org("Acme").await;
    let users = format!("/admin/v1/orgs/{org}/users");
    let cases = [
        ("/admin/v1/orgs", json!({}), "name"),
        ("/admin/v1/orgs", json!({ "name": "" }), "name"),
        ("/admin/v1/orgs", json!({ "name": "   " }), "name"),
        ("/admin/v1/orgs", json!({ "name": "x".repeat(201) }), "name"),
        ("/admin/v1/orgs", json!({ "name": "a\u{0}b" }), "name"),
        ("/admin/v1/orgs", json!({ "name": 42 }), "name"),
        ("/admin/v1/orgs", json!({ "name": "A", "enterprise_toolkit": "yes" }), "enterprise_toolkit"),
        ("/admin/v1/orgs", json!({ "name": "A", "enterprize_toolkit": true }), "enterprize_toolkit"),
        (&users, json!({ "display_name": "No Email" }), "email"),
        (&users, json!({ "email": "not-an-email" }), "email"),
        (&users, json!({ "email": "a@example.com", "password": "short" }), "password"),
        (&users, json!({ "email": "a@example.com", "password": "x".repeat(1025) }), "password"),
        (&users, json!({ "email": "a@example.com", "external_id": "" }), "external_id"),
        (&users, json!({ "email": "a@example.com", "display_name": ["a"] }), "display_name"),
    ];
    for (path, body, field) in cases {
        let (status, err) = server.admin(Method::POST, path, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert_eq!(err["error"], "invalid_request");
        assert!(
            err["field"].as_str().is_some_and(|f| f == field)
                || err["message"].as_str().unwrap().contains(field),
            "{body} should name {field}: {err}"
        );
    }
    // None of the refused requests created anything.
    let (_, orgs) = server.admin(Method::GET, "/admin/v1/orgs", None).await;
    assert_eq!(orgs["items"].as_array().unwrap().len(), 1);
    let (_, listed) = server.admin(Method::GET, &users, None).await;
    assert_eq!(listed["items"], json!([]));
}
