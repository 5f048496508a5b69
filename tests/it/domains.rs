//! Organizations' email domains: verification against a real DNS server on
//! loopback (dnsmasq), and the rule that no other organization creates or
//! renames a user into a verified domain, whatever the path.

use gatehouse::DnsResolver;
use gatehouse_testkit::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::dns_server::DnsServer;
use crate::support::{TestServer, on_both_backends};

async fn server_asking(db: TestDb, dns: &DnsServer) -> TestServer {
    let addr = dns.addr;
    TestServer::start(db, move |s| s.dns_resolver = DnsResolver::At(addr)).await
}

async fn claim(server: &TestServer, org: &str, domain: &str) -> (StatusCode, Value) {
    server
        .admin(Method::POST, &format!("/admin/v1/orgs/{org}/domains"), Some(json!({ "domain": domain })))
        .await
}

async fn verify(server: &TestServer, org: &str, domain: &str) -> (StatusCode, Value) {
    server.admin(Method::POST, &format!("/admin/v1/orgs/{org}/domains/{domain}/verify"), None).await
}

async fn domains_are_verified_through_a_real_dns_server(db: TestDb) {
    let mut dns = DnsServer::start(&[]).await;
    let server = server_asking(db, &dns).await;
    let acme = server.create_org("Acme").await;
    let rival = server.create_org("Rival").await;

    // Claimed in any spelling, kept in one.
    let (status, claimed) = claim(&server, &acme, " Acme.TEST. ").await;
    assert_eq!(status, StatusCode::CREATED, "{claimed}");
    assert_eq!((claimed["domain"].as_str(), claimed["verified"].as_bool()), (Some("acme.test"), Some(false)));
    let record = &claimed["challenge"];
    assert_eq!(
        (record["type"].as_str(), record["name"].as_str()),
        (Some("TXT"), Some("_gatehouse-challenge.acme.test"))
    );
    let value = record["value"].as_str().unwrap().to_owned();
    assert!(value.starts_with("gatehouse-domain-verification=") && value.len() > 40, "{value}");
    assert_eq!(
        claim(&server, &acme, "acme.test").await.0,
        StatusCode::CONFLICT,
        "claimed once per organization"
    );

    // Nothing published yet: refused, saying what to publish where.
    let (status, body) = verify(&server, &acme, "acme.test").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("no TXT record found at _gatehouse-challenge.acme.test") && message.contains(&value)
    );

    // Something else published: refused too.
    dns.publish(&[("_gatehouse-challenge.acme.test", "gatehouse-domain-verification=guess")]).await;
    let (status, body) = verify(&server, &acme, "acme.test").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["message"].as_str().unwrap().contains("do not include"), "{body}");
    let (_, listed) = server.admin(Method::GET, &format!("/admin/v1/orgs/{acme}/domains"), None).await;
    assert_eq!(listed[0]["verified"], false, "a failed check changes nothing");

    // The right record, among others: verified by DNS.
    let (_, rival_claim) = claim(&server, &rival, "acme.test").await;
    let rival_value = rival_claim["challenge"]["value"].as_str().unwrap().to_owned();
    dns.publish(&[
        ("acme.test", "v=spf1 -all"),
        ("_gatehouse-challenge.acme.test", &value),
        ("_gatehouse-challenge.acme.test", &rival_value),
    ])
    .await;
    let (status, body) = verify(&server, &acme, "acme.test").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["verified"].as_bool(), body["verified_by"].as_str()), (Some(true), Some("dns")));
    assert_eq!(
        verify(&server, &acme, "acme.test").await.0,
        StatusCode::OK,
        "verifying again changes nothing"
    );

    // A domain is verified by one organization at most, even one that
    // proves it can publish there too.
    let (status, body) = verify(&server, &rival, "acme.test").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["message"].as_str().unwrap().contains("already verified by another organization"));
    let path = format!("/admin/v1/orgs/{rival}/domains/acme.test/verify");
    let (status, _) = server.admin(Method::POST, &path, Some(json!({ "method": "admin" }))).await;
    assert_eq!(status, StatusCode::CONFLICT, "nor by an admin's word");

    // The DNS server gone: a clear "try again", not a refusal.
    let (_, _) = claim(&server, &acme, "later.test").await;
    drop(dns);
    let response = server
        .http
        .post(server.url(&format!("/admin/v1/orgs/{acme}/domains/later.test/verify")))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "dns_unavailable");

    // Every step is in the audit trail, with who did it.
    let (_, events) = server.admin(Method::GET, "/admin/v1/audit-events?kind=domain_verified", None).await;
    let events = events["items"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0]["actor"].as_str(), events[0]["org_id"].as_str()),
        (Some("admin:bootstrap"), Some(acme.as_str()))
    );
    assert_eq!(events[0]["detail"], json!({ "domain": "acme.test", "verified_by": "dns" }));

    // Dropping a claim.
    let one = format!("/admin/v1/orgs/{acme}/domains/later.test");
    assert_eq!(server.admin(Method::GET, &one, None).await.0, StatusCode::OK);
    assert_eq!(server.admin(Method::DELETE, &one, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(server.admin(Method::GET, &one, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(server.admin(Method::DELETE, &one, None).await.0, StatusCode::NOT_FOUND);
}

/// What is not a domain is refused where it enters, in a body or a path,
/// and nothing is stored or looked up.
async fn hostile_domains_are_refused(server: TestServer) {
    let org = server.create_org("Acme").await;
    for bad in [
        "",
        "localhost",
        "127.0.0.1",
        "[::1]",
        "acme.test/../../x",
        "acme.test:53",
        "user@acme.test",
        "acme..test",
        "-acme.test",
        "acme_test.example",
        "acme.test\r\nX-Injected: 1",
        "acme.test\u{0}",
        "%2e%2e.test",
        &format!("{}.test", "a".repeat(64)),
        &format!("{}test", "a.".repeat(130)),
    ] {
        let (status, body) = claim(&server, &org, bad).await;
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("domain")),
            "{bad:?}: {body}"
        );
    }
    for bad in ["..", "%2e%2e", "acme.test%2F..%2Fx", "127.0.0.1", "a%0d%0ab.test", "%00"] {
        let path = format!("/admin/v1/orgs/{org}/domains/{bad}/verify");
        let (status, body) = server.admin(Method::POST, &path, None).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
            "{bad:?}: {status} {body}"
        );
        assert_ne!(body["error"], "dns_unavailable", "{bad:?} reached DNS");
    }
    let (status, body) = server
        .admin(
            Method::POST,
            &format!("/admin/v1/orgs/{org}/domains/acme.test/verify"),
            Some(json!({ "method": "admin" })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "unclaimed: {body}");
    let (_, listed) = server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/domains"), None).await;
    assert_eq!(listed, json!([]));
    // Internationalized names are kept in their ASCII form.
    let (status, body) = claim(&server, &org, "Bücher.test").await;
    assert_eq!((status, body["domain"].as_str()), (StatusCode::CREATED, Some("xn--bcher-kva.test")));
    let (status, body) = server
        .admin(
            Method::POST,
            &format!("/admin/v1/orgs/{org}/domains/xn--bcher-kva.test/verify"),
            Some(json!({ "method": "trust-me" })),
        )
        .await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("method")));
}

/// The address of someone whose organization verified the domain cannot be
/// created or taken by another: admin API, SCIM create, replace and patch,
/// email change. The owner creates it; earlier conflicts are reported.
async fn no_path_creates_a_user_in_another_orgs_domain(server: TestServer) {
    let victim = server.create_org("Victim").await;
    let (squatter, token) = server.scim_org("okta").await;
    // There before the victim arrived: reported, not changed.
    let early = server.create_user(&squatter, "early@victim.test", None).await;
    let mine = server.create_user(&squatter, "mine@squatter.test", None).await;
    server.verify_domain(&victim, "victim.test").await;

    let owned = |status: StatusCode, body: &Value| {
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let text = body.to_string();
        assert!(text.contains("victim.test") && text.contains("another organization"), "{body}");
    };
    let (status, body) = server
        .admin(
            Method::POST,
            &format!("/admin/v1/orgs/{squatter}/users"),
            Some(json!({ "email": "cfo@Victim.test" })),
        )
        .await;
    owned(status, &body);
    assert_eq!((body["error"].as_str(), body["field"].as_str()), (Some("email_domain_owned"), Some("email")));
    let (status, body) = server
        .admin(
            Method::POST,
            &format!("/admin/v1/orgs/{squatter}/users"),
            Some(json!({ "email": "cfo@mail.victim.test" })),
        )
        .await;
    owned(status, &body);
    let path = format!("/admin/v1/orgs/{squatter}/users/{}", mine["id"].as_str().unwrap());
    let (status, body) =
        server.admin(Method::PATCH, &path, Some(json!({ "email": "cfo@victim.test" }))).await;
    owned(status, &body);

    let scim_user = |email: &str| {
        json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": email, "active": true,
            "emails": [{ "value": email, "primary": true, "type": "work" }], "name": { "givenName": "C", "familyName": "F" } })
    };
    let (status, body) =
        server.scim(&token, Method::POST, "/scim/v2/Users", Some(scim_user("cfo@victim.test"))).await;
    owned(status, &body);
    assert_eq!(body["scimType"], Value::Null, "not a duplicate to link to");
    let (status, created) =
        server.scim(&token, Method::POST, "/scim/v2/Users", Some(scim_user("ok@squatter.test"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    let (status, body) = server
        .scim(&token, Method::PUT, &format!("/scim/v2/Users/{id}"), Some(scim_user("cfo@victim.test")))
        .await;
    owned(status, &body);
    let patch = json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{ "op": "replace", "path": "emails[type eq \"work\"].value", "value": "cfo@victim.test" }] });
    let (status, body) =
        server.scim(&token, Method::PATCH, &format!("/scim/v2/Users/{id}"), Some(patch)).await;
    owned(status, &body);
    let (_, unchanged) = server.scim(&token, Method::GET, &format!("/scim/v2/Users/{id}"), None).await;
    assert_eq!(unchanged["emails"][0]["value"], "ok@squatter.test", "nothing changed");

    // The owner creates the address.
    server.create_user(&victim, "cfo@victim.test", None).await;

    // The conflict found on verification is reported, and left alone.
    let (status, conflicts) = server.admin(Method::GET, "/admin/v1/domain-conflicts", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        conflicts,
        json!([{ "user_id": early["id"], "org_id": squatter, "email": "early@victim.test",
            "domain": "victim.test", "owner_org_id": victim }])
    );
    let (status, _) = server
        .admin(
            Method::GET,
            &format!("/admin/v1/orgs/{squatter}/users/{}", early["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

on_both_backends!(databases: domains_are_verified_through_a_real_dns_server);
mod rules {
    use super::*;
    on_both_backends!(hostile_domains_are_refused, no_path_creates_a_user_in_another_orgs_domain);
}
