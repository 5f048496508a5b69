//! OIDC connections (Okta, Azure AD) in the admin API.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestServer, on_both_backends};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

async fn toolkit_org(server: &TestServer) -> String {
    let (_, org) = server
        .admin(Method::POST, "/admin/v1/orgs", Some(json!({ "name": "Acme", "enterprise_toolkit": true })))
        .await;
    org["id"].as_str().unwrap().to_owned()
}

fn okta() -> Value {
    json!({
        "kind": "okta",
        "issuer": "https://acme.okta.com/oauth2/default",
        "client_id": "0oa1abcd",
        "client_secret": "okta-client-secret-value",
        "jit_provisioning": true,
        "allowed_email_domains": ["acme.com"]
    })
}

async fn connections_crud(server: TestServer) {
    let org = toolkit_org(&server).await;
    let base = format!("/admin/v1/orgs/{org}/connections");
    let (status, created) = server.admin(Method::POST, &base, Some(okta())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["kind"], "okta");
    assert_eq!(created["issuer"], "https://acme.okta.com/oauth2/default");
    assert_eq!(created["client_secret_set"], true);
    assert!(!created.to_string().contains("okta-client-secret-value"), "the secret is never shown");
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("{base}/{id}");

    let (status, azure) = server
        .admin(Method::POST, &base, Some(json!({ "kind": "azure_ad", "tenant": "organizations", "allowed_tenant_ids": [TENANT], "client_id": "app-id", "client_secret": "azure-secret" })))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{azure}");
    let (_, listed) = server.admin(Method::GET, &base, None).await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(server.admin(Method::GET, &path, None).await.1, created);

    // A replace without a secret keeps the stored one.
    let mut changed = okta();
    changed.as_object_mut().unwrap().remove("client_secret");
    changed["jit_provisioning"] = json!(false);
    let (status, replaced) = server.admin(Method::PUT, &path, Some(changed)).await;
    assert_eq!((status, replaced["jit_provisioning"].as_bool()), (StatusCode::OK, Some(false)), "{replaced}");
    assert_eq!(replaced["client_secret_set"], true);

    // The secret is sealed in the database, and so is a replaced one.
    let db = std::fs::read(server.db.url().trim_start_matches("sqlite://").split('?').next().unwrap()).ok();
    let wal = std::fs::read(format!(
        "{}-wal",
        server.db.url().trim_start_matches("sqlite://").split('?').next().unwrap()
    ))
    .ok();
    for bytes in [db, wal].into_iter().flatten() {
        for secret in ["okta-client-secret-value", "azure-secret"] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} stored in clear");
        }
    }

    assert_eq!(server.admin(Method::DELETE, &path, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(server.admin(Method::GET, &path, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(server.admin(Method::DELETE, &path, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(server.admin(Method::PUT, &path, Some(okta())).await.0, StatusCode::NOT_FOUND);

    // Another organization's connections are not reachable through this one.
    let other = toolkit_org(&server).await;
    let foreign = format!("/admin/v1/orgs/{other}/connections/{}", azure["id"].as_str().unwrap());
    assert_eq!(server.admin(Method::GET, &foreign, None).await.0, StatusCode::NOT_FOUND);

    let (_, events) = server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/audit-events"), None).await;
    let kinds: Vec<&str> =
        events["items"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "connection_deleted",
            "connection_updated",
            "connection_created",
            "connection_created",
            "org_created"
        ]
    );
    // Each says who made it.
    assert!(events["items"].as_array().unwrap().iter().all(|e| e["actor"] == "admin:bootstrap"), "{events}");
}

on_both_backends!(connections_crud);

#[tokio::test]
async fn connections_need_the_toolkit() {
    let server = TestServer::sqlite().await;
    let org = server.create_org("No Toolkit").await;
    let (status, body) =
        server.admin(Method::POST, &format!("/admin/v1/orgs/{org}/connections"), Some(okta())).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("enterprise_toolkit_required"))
    );
    let (_, listed) = server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/connections"), None).await;
    assert_eq!(listed, json!([]));
}

#[tokio::test]
async fn bad_connections_name_the_field_and_change_nothing() {
    let server = TestServer::sqlite().await;
    let org = toolkit_org(&server).await;
    let base = format!("/admin/v1/orgs/{org}/connections");
    let with = |patch: Value| {
        let mut c = okta();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    for (config, field) in [
        (with(json!({ "kind": "ping" })), "client_id"),
        (with(json!({ "kind": "saml" })), "kind"),
        (with(json!({ "issuer": null })), "issuer"),
        (with(json!({ "issuer": "http://acme.okta.com" })), "issuer"),
        (with(json!({ "issuer": "https://acme.okta.com/not/an/issuer" })), "issuer"),
        (with(json!({ "client_id": "" })), "client_id"),
        (with(json!({ "client_secret": null })), "client_secret"),
        (with(json!({ "scopes": ["email"] })), "scopes"),
        (with(json!({ "allowed_email_domains": ["@acme.com"] })), "allowed_email_domains"),
        (with(json!({ "surprise": 1 })), "surprise"),
        (
            json!({ "kind": "azure_ad", "tenant": "contoso", "client_id": "a", "client_secret": "s" }),
            "tenant",
        ),
        (
            json!({ "kind": "azure_ad", "tenant": "common", "client_id": "a", "client_secret": "s" }),
            "allowed_tenant_ids",
        ),
        (
            json!({ "kind": "azure_ad", "tenant": "common", "allowed_tenant_ids": ["not-a-guid"], "client_id": "a", "client_secret": "s" }),
            "allowed_tenant_ids",
        ),
    ] {
        let (status, err) = server.admin(Method::POST, &base, Some(config.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{config}: {err}");
        assert_eq!(err["field"], field, "{config}: {err}");
    }
    let (_, listed) = server.admin(Method::GET, &base, None).await;
    assert_eq!(listed, json!([]));
}

/// Checking a connection fetches the real provider's discovery document and
/// keys, and holds its issuer to the connection's.
#[tokio::test]
async fn checking_a_connection_against_a_real_provider() {
    use crate::oidc_provider::OidcProvider;
    let server =
        TestServer::start(gatehouse_testkit::TestDb::sqlite(), |s| s.allow_private_targets = true).await;
    let org = toolkit_org(&server).await;
    let base = format!("/admin/v1/orgs/{org}/connections");
    let check = |id: String| {
        let path = format!("{base}/{id}/test");
        let server = &server;
        async move { server.admin(Method::POST, &path, None).await }
    };
    let create = |issuer: String| {
        let base = base.clone();
        let server = &server;
        async move {
            let (status, c) = server
                .admin(Method::POST, &base, Some(json!({ "kind": "okta", "issuer": issuer, "client_id": "gatehouse", "client_secret": "s" })))
                .await;
            assert_eq!(status, StatusCode::CREATED, "{c}");
            c["id"].as_str().unwrap().to_owned()
        }
    };

    // Okta's org authorization server, and a custom one under /oauth2/{id}.
    let org_as = OidcProvider::start(|p| format!("http://127.0.0.1:{p}")).await;
    let custom_as = OidcProvider::start(|p| format!("http://127.0.0.1:{p}/oauth2/default")).await;
    for (provider, issuer) in [
        (&org_as, format!("http://127.0.0.1:{}", org_as.port)),
        (&custom_as, format!("http://127.0.0.1:{}/oauth2/default", custom_as.port)),
    ] {
        let id = create(issuer.clone()).await;
        let (status, result) = check(id).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(result["outcome"], "ok", "{result}");
        assert_eq!(result["issuer"], issuer.as_str());
        assert!(
            result["token_endpoint"]
                .as_str()
                .unwrap()
                .starts_with(&format!("http://127.0.0.1:{}/", provider.port))
        );
        assert_eq!(
            result["keys"],
            json!([{ "kid": format!("rig-{}", provider.port), "kty": "RSA", "alg": "RS256" }])
        );
    }

    // A provider calling itself by another name is refused: the issuer is
    // pinned by the connection, never taken from the provider.
    let impostor = OidcProvider::start(|p| format!("http://localhost:{p}")).await;
    let id = create(format!("http://127.0.0.1:{}", impostor.port)).await;
    let (_, result) = check(id).await;
    assert_eq!(result["outcome"], "failed");
    assert!(result["error"].as_str().unwrap().contains("names issuer \"http://localhost:"), "{result}");
    assert_eq!(result["keys"], json!([]));

    // A wrong authorization server id, and a provider that is down.
    let id = create(format!("http://127.0.0.1:{}/oauth2/other", custom_as.port)).await;
    let (_, result) = check(id).await;
    assert_eq!(result["outcome"], "failed");
    assert!(result["error"].as_str().unwrap().contains("HTTP 404"), "{result}");
    let mut gone = OidcProvider::start(|p| format!("http://127.0.0.1:{p}")).await;
    let id = create(format!("http://127.0.0.1:{}", gone.port)).await;
    gone.stop();
    let (_, result) = check(id).await;
    assert_eq!(result["outcome"], "failed");
    assert!(result["error"].as_str().unwrap().contains("connection failed"), "{result}");
}
