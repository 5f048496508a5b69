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

on_both_backends!(organizations_crud, users_crud);

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
