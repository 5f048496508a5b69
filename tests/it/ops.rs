//! Health, readiness, metrics, request ids and the OpenAPI document.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::TestServer;

#[tokio::test]
async fn probes_report_process_and_database_health() {
    let server = TestServer::sqlite().await;
    let (status, body) = server.send(server.http.get(server.url("/healthz"))).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "status": "ok" })));
    let (status, _) = server.send(server.http.get(server.url("/readyz"))).await;
    assert_eq!(status, StatusCode::OK);

    // With the database gone, the process is alive but not ready.
    server.state.store().close().await;
    let response = server.http.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers().get("retry-after").unwrap(), "5");
    assert_eq!(server.send(server.http.get(server.url("/healthz"))).await.0, StatusCode::OK);
    // And requests that need it fail at once as unavailable, with when to
    // try again and without detail; not a hang, and not a 500.
    let response = server
        .http
        .post(server.url("/v1/login"))
        .json(&json!({ "email": "a@example.com", "password": "whatever" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers().get("retry-after").unwrap(), "5");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, json!({ "error": "database_unavailable" }), "no internals leak");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let server = TestServer::sqlite().await;
    let resp = server.http.get(server.url("/healthz")).send().await.unwrap();
    let id = resp.headers().get("x-request-id").expect("generated").to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);
    let resp = server.http.get(server.url("/nope")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(resp.headers().get("x-request-id").unwrap(), "abc-123", "a caller's id is kept");
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let server = TestServer::sqlite().await;
    let (status, doc) = server.send(server.http.get(server.url("/openapi.json"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let expected = [
        ("/v1/login", "post"),
        ("/v1/password/forgot", "post"),
        ("/admin/v1/orgs/{org_id}/connections", "post"),
        ("/admin/v1/orgs/{org_id}/connections", "get"),
        ("/admin/v1/orgs/{org_id}/connections/{connection_id}", "get"),
        ("/admin/v1/orgs/{org_id}/connections/{connection_id}", "put"),
        ("/admin/v1/orgs/{org_id}/connections/{connection_id}", "delete"),
        ("/admin/v1/orgs/{org_id}/connections/{connection_id}/test", "post"),
        ("/admin/v1/orgs/{org_id}/sso", "get"),
        ("/admin/v1/orgs/{org_id}/sso", "put"),
        ("/v1/sso/start", "get"),
        ("/v1/sso/oidc/callback", "get"),
        ("/v1/sso/token", "post"),
        ("/v1/sso/saml/{connection_id}/metadata", "get"),
        ("/v1/sso/saml/{connection_id}/acs", "post"),
        ("/admin/v1/orgs/{org_id}/scim-tokens", "post"),
        ("/admin/v1/orgs/{org_id}/scim-tokens", "get"),
        ("/admin/v1/orgs/{org_id}/scim-tokens/{token_id}", "delete"),
        ("/admin/v1/orgs/{org_id}/external-auth/rest", "put"),
        ("/admin/v1/orgs/{org_id}/external-auth/rest", "get"),
        ("/admin/v1/orgs/{org_id}/external-auth/rest", "delete"),
        ("/admin/v1/orgs/{org_id}/external-auth/rest/test", "post"),
        ("/v1/token/refresh", "post"),
        ("/v1/logout", "post"),
        ("/v1/session/logout", "post"),
        ("/v1/me", "get"),
        ("/admin/v1/orgs", "post"),
        ("/admin/v1/orgs", "get"),
        ("/admin/v1/orgs/{org_id}", "get"),
        ("/admin/v1/orgs/{org_id}", "patch"),
        ("/admin/v1/orgs/{org_id}", "delete"),
        ("/admin/v1/orgs/{org_id}/users", "post"),
        ("/admin/v1/orgs/{org_id}/users", "get"),
        ("/admin/v1/orgs/{org_id}/users/{user_id}", "get"),
        ("/admin/v1/orgs/{org_id}/users/{user_id}", "patch"),
        ("/admin/v1/orgs/{org_id}/users/{user_id}", "delete"),
        ("/admin/v1/orgs/{org_id}/audit-events", "get"),
        ("/admin/v1/audit-events", "get"),
        ("/admin/v1/orgs/{org_id}/domains", "post"),
        ("/admin/v1/orgs/{org_id}/domains", "get"),
        ("/admin/v1/orgs/{org_id}/domains/{domain}", "get"),
        ("/admin/v1/orgs/{org_id}/domains/{domain}", "delete"),
        ("/admin/v1/orgs/{org_id}/domains/{domain}/verify", "post"),
        ("/admin/v1/domain-conflicts", "get"),
        ("/admin/v1/orgs/{org_id}/portal-links", "post"),
        ("/admin/v1/orgs/{org_id}/portal-links", "get"),
        ("/admin/v1/orgs/{org_id}/portal-links/{link_id}", "delete"),
        ("/.well-known/jwks.json", "get"),
        ("/openapi.json", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ];
    for (path, method) in expected {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing from the OpenAPI document");
    }
    let documented: usize =
        doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, expected.len(), "a documented route this test does not know");
    // Each documented route exists: calling it never reaches the 404 fallback.
    for (path, method) in expected {
        let path = path
            .replace("{org_id}", "01a2221d-50f7-7697-ad4d-23a24da039c7")
            .replace("{user_id}", "01a2221d-50f7-7697-ad4d-23a24da039c8")
            .replace("{domain}", "example.com");
        let resp = server
            .http
            .request(method.to_uppercase().parse().unwrap(), server.url(&path))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert!(!body.contains("route not found"), "{method} {path} is documented but not routed ({status})");
    }
    assert!(doc["components"]["schemas"]["TokenResponse"].is_object());
    assert!(doc["components"]["securitySchemes"]["admin_token"].is_object());
}
