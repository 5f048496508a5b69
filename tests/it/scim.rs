//! SCIM provisioning as Okta and Entra ID drive it, against the running
//! server (`docs/identity-providers.md` §3).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestServer, on_both_backends};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

struct Scim<'a> {
    server: &'a TestServer,
    token: String,
    org: String,
}

impl<'a> Scim<'a> {
    async fn new(server: &'a TestServer, idp: &str) -> Scim<'a> {
        let (org, token) = server.scim_org(idp).await;
        Scim { server, token, org }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        self.call_with(method, path, body, &[]).await
    }

    /// `call`, with request headers.
    async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self.server.http.request(method, self.server.url(path)).bearer_auth(&self.token);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/scim+json").body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        assert_eq!(
            headers.get("content-type").map(|v| v.to_str().unwrap()),
            Some("application/scim+json"),
            "{path}"
        );
        let text = resp.text().await.unwrap();
        (status, headers, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (s, _, b) = self.call(Method::GET, path, None).await;
        (s, b)
    }

    async fn send(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, b) = self.call(method, path, Some(body)).await;
        (s, b)
    }
}

fn okta_user(user_name: &str, given: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "name": { "givenName": given, "familyName": "Lovelace" },
        "emails": [{ "primary": true, "value": user_name, "type": "work" }],
        "displayName": format!("{given} Lovelace"),
        "locale": "en-US",
        "externalId": "00u1abcd",
        "groups": [],
        "password": "okta-random-password-1!",
        "active": true
    })
}

fn assert_error(status: StatusCode, body: &Value, expected: u16) {
    assert_eq!(status.as_u16(), expected, "{body}");
    assert_eq!(body["schemas"], json!(["urn:ietf:params:scim:api:messages:2.0:Error"]), "{body}");
    assert_eq!(body["status"], expected.to_string());
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
}

/// Okta's "SCIM 2.0 SPEC Test", step by step (`docs/identity-providers.md` §3.2).
async fn okta_spec_test(server: TestServer) {
    let scim = Scim::new(&server, "okta").await;
    // At least one user must already exist: an admin-created one, found by SCIM.
    server.create_user(&scim.org, "existing@example.com", None).await;

    let (status, list) = scim.get("/scim/v2/Users?count=1&startIndex=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["schemas"], json!(["urn:ietf:params:scim:api:messages:2.0:ListResponse"]));
    for k in ["itemsPerPage", "startIndex", "totalResults"] {
        assert!(list[k].is_u64(), "{k} is an integer: {list}");
    }
    let first = &list["Resources"][0];
    assert!(first["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(first["userName"], "existing@example.com");
    assert_eq!(first["emails"][0]["value"], "existing@example.com");
    assert_eq!(first["active"], true);
    let id = first["id"].as_str().unwrap();
    let (status, one) = scim.get(&format!("/scim/v2/Users/{id}")).await;
    assert_eq!((status, one["id"].as_str()), (StatusCode::OK, Some(id)));
    // The IdP can update a user an admin created.
    let (status, updated) = scim
        .send(
            Method::PATCH,
            &format!("/scim/v2/Users/{id}"),
            json!({ "Operations": [{ "op": "replace", "path": "displayName", "value": "Existing One" }] }),
        )
        .await;
    assert_eq!(
        (status, updated["displayName"].as_str()),
        (StatusCode::OK, Some("Existing One")),
        "{updated}"
    );

    let (status, none) =
        scim.get("/scim/v2/Users?filter=userName%20eq%20%22invalid-user%40example.com%22").await;
    assert_eq!(
        (status, none["totalResults"].as_u64(), none["Resources"].clone()),
        (StatusCode::OK, Some(0), json!([]))
    );
    let (status, err) = scim.get("/scim/v2/Users/00919288221112222").await;
    assert_error(status, &err, 404);

    let (status, created) =
        scim.send(Method::POST, "/scim/v2/Users", okta_user("Ada.Lovelace@Example.com", "Ada")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["active"], true);
    assert_eq!(created["name"]["givenName"], "Ada");
    assert_eq!(created["name"]["familyName"], "Lovelace");
    assert_eq!(created["userName"], "Ada.Lovelace@Example.com");
    assert!(
        created["schemas"].as_array().unwrap().contains(&json!("urn:ietf:params:scim:schemas:core:2.0:User"))
    );
    assert!(created.get("password").is_none(), "the password is never returned");
    let new_id = created["id"].as_str().unwrap().to_owned();
    let (_, again) = scim.get(&format!("/scim/v2/Users/{new_id}")).await;
    assert_eq!(again["name"]["givenName"], "Ada");

    let (status, dup) =
        scim.send(Method::POST, "/scim/v2/Users", okta_user("Ada.Lovelace@Example.com", "Ada")).await;
    assert_error(status, &dup, 409);
    assert_eq!(dup["scimType"], "uniqueness");

    let (status, caps) = scim.get("/scim/v2/Users?filter=userName eq \"ADA.LOVELACE@EXAMPLE.COM\"").await;
    assert_eq!((status, caps["totalResults"].as_u64()), (StatusCode::OK, Some(1)));

    // 401 with the SCIM error shape.
    let resp = server
        .http
        .get(server.url("/scim/v2/Users"))
        .header("authorization", "non-token")
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_error(status, &body, 401);

    // The Okta password was not stored anywhere a login could use.
    assert_eq!(
        server.login("Ada.Lovelace@Example.com", "okta-random-password-1!").await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// Okta's CRUD sequence as the SCIM server sees it (§3.2), and what
/// deprovisioning does to sign-in and sessions.
async fn okta_crud_and_deprovisioning(server: TestServer) {
    let scim = Scim::new(&server, "okta").await;
    let (_, created) =
        scim.send(Method::POST, "/scim/v2/Users", okta_user("grace@example.com", "Grace")).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/scim/v2/Users/{id}");
    // The platform admin gives the provisioned user a local password.
    let admin_path = format!("/admin/v1/orgs/{}/users/{id}", scim.org);
    assert_eq!(
        server.admin(Method::PATCH, &admin_path, Some(json!({ "password": "grace's password" }))).await.0,
        StatusCode::OK
    );

    let (_, found) =
        scim.get("/scim/v2/Users?filter=userName eq \"grace@example.com\"&startIndex=1&count=100").await;
    assert_eq!(found["Resources"][0]["id"], id.as_str());

    // Profile update: GET then full PUT.
    let (_, mut full) = scim.get(&path).await;
    full["name"]["givenName"] = json!("Gracie");
    let (status, put) = scim.send(Method::PUT, &path, full).await;
    assert_eq!((status, put["name"]["givenName"].as_str()), (StatusCode::OK, Some("Gracie")));

    // Okta's password sync PATCHes a password: accepted, never stored or shown,
    // and it does not become the platform password.
    let (status, synced) = scim
        .send(
            Method::PATCH,
            &path,
            json!({ "Operations": [{ "op": "replace", "value": { "password": "synced-from-okta-1!" } }] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!synced.to_string().contains("synced-from-okta"));
    assert!(!scim.get(&path).await.1.to_string().contains("synced-from-okta"));
    assert_eq!(server.login("grace@example.com", "synced-from-okta-1!").await.0, StatusCode::UNAUTHORIZED);
    if let Some(file) = server.db.url().strip_prefix("sqlite://").and_then(|u| u.split('?').next()) {
        for f in [file.to_owned(), format!("{file}-wal")] {
            let bytes = std::fs::read(&f).unwrap_or_default();
            assert!(!bytes.windows(19).any(|w| w == b"synced-from-okta-1!"), "password stored in {f}");
        }
    }

    let (_, tokens) = server.login("grace@example.com", "grace's password").await;
    assert!(tokens["refresh_token"].is_string(), "{tokens}");

    // Deactivation: visible, refused at every door, sessions revoked.
    let (status, off) = scim.send(Method::PATCH, &path, json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{ "op": "replace", "value": { "active": false } }] })).await;
    assert_eq!((status, off["active"].as_bool()), (StatusCode::OK, Some(false)), "{off}");
    let (status, still) = scim.get(&path).await;
    assert_eq!((status, still["active"].as_bool()), (StatusCode::OK, Some(false)));
    let (_, filtered) = scim.get("/scim/v2/Users?filter=userName eq \"grace@example.com\"").await;
    assert_eq!(filtered["totalResults"], 1, "deactivated users still answer filters");
    assert_eq!(server.login("grace@example.com", "grace's password").await.0, StatusCode::UNAUTHORIZED);
    let (status, _) =
        server.post("/v1/token/refresh", json!({ "refresh_token": tokens["refresh_token"] })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(server.me(tokens["access_token"].as_str().unwrap()).await.0, StatusCode::UNAUTHORIZED);

    // Reactivation (AIW style: PUT with active true) restores sign-in.
    let (_, mut full) = scim.get(&path).await;
    full["active"] = json!(true);
    assert_eq!(scim.send(Method::PUT, &path, full).await.0, StatusCode::OK);
    let (status, tokens) = server.login("grace@example.com", "grace's password").await;
    assert_eq!(status, StatusCode::OK);

    // Hard delete: gone, and so are its sessions.
    let (status, _, _) = scim.call(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, err) = scim.get(&path).await;
    assert_error(status, &err, 404);
    let (status, _) =
        server.post("/v1/token/refresh", json!({ "refresh_token": tokens["refresh_token"] })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (_, events) =
        server.admin(Method::GET, &format!("/admin/v1/orgs/{}/audit-events", scim.org), None).await;
    let kinds: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .filter(|k| k.starts_with("scim_user"))
        .collect();
    assert_eq!(
        kinds,
        [
            "scim_user_deleted",
            "scim_user_reactivated",
            "scim_user_deactivated",
            "scim_user_patched",
            "scim_user_replaced",
            "scim_user_created"
        ]
    );
}

/// Entra ID's user requests, default job and `aadOptscim062020` (§3.2).
async fn entra_user_quirks(server: TestServer) {
    let scim = Scim::new(&server, "azure_ad").await;
    // Creation with the enterprise extension, client `meta`, nulls, a custom
    // extension, and a string boolean.
    let (status, created) = scim
        .send(
            Method::POST,
            "/scim/Users?aadOptscim062020",
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE, "urn:ietf:params:scim:schemas:extension:acme:2.0:User"],
                "externalId": "alice",
                "userName": "alice@contoso.com",
                "active": "True",
                "emails": [{ "primary": true, "type": "work", "value": "alice@contoso.com" }],
                "meta": { "resourceType": "User" },
                "name": { "formatted": "Alice Smith", "familyName": "Smith", "givenName": "Alice" },
                "roles": [],
                "title": null,
                ENTERPRISE: { "employeeNumber": "701984", "department": "Tour Operations" },
                "urn:ietf:params:scim:schemas:extension:acme:2.0:User": { "badge": "B-7" }
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["active"], true);
    assert_eq!(created[ENTERPRISE]["department"], "Tour Operations");
    assert_eq!(
        created["urn:ietf:params:scim:schemas:extension:acme:2.0:User"]["badge"], "B-7",
        "unknown extensions are kept"
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/scim/users/{id}/"); // lower-case resource, trailing slash

    // Matching: by externalId, and by work email (both as Entra sends them).
    for filter in [
        "externalId eq \"alice\"",
        "externalId eq alice",
        "emails[type eq \"work\"].value eq \"ALICE@contoso.com\"",
    ] {
        let (_, found) = scim.get(&format!("/scim/v2/Users?filter={}", urlencode(filter))).await;
        assert_eq!(found["totalResults"], 1, "{filter}");
    }

    // Default job: capitalised ops, one op per path, string booleans.
    let patch = |ops: Value| json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops });
    let (status, out) = scim
        .send(Method::PATCH, &path, patch(json!([
            { "op": "Replace", "path": "emails[type eq \"work\"].value", "value": "alice.smith@contoso.com" },
            { "op": "Replace", "path": "name.givenName", "value": "Alicia" },
            { "op": "Replace", "path": format!("{ENTERPRISE}:employeeNumber"), "value": "42" },
            { "op": "Add", "path": "nickName", "value": "Ali" },
            { "op": "Add", "path": "manager", "value": [{ "$ref": null, "value": "mgr-1" }] }
        ])))
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["emails"][0]["value"], "alice.smith@contoso.com");
    assert_eq!(out["name"]["givenName"], "Alicia");
    assert_eq!(out[ENTERPRISE]["employeeNumber"], "42");
    assert_eq!(out[ENTERPRISE]["manager"], json!({ "value": "mgr-1" }));
    assert_eq!(out["nickName"], "Ali");
    // The platform email followed the work email.
    let (_, admin_view) =
        server.admin(Method::GET, &format!("/admin/v1/orgs/{}/users/{id}", scim.org), None).await;
    assert_eq!(admin_view["email"], "alice.smith@contoso.com");

    // With the flag: one path-less replace whose keys are paths.
    let (_, out) = scim
        .send(
            Method::PATCH,
            &path,
            patch(json!([{ "op": "replace", "value": {
            "displayName": "Alicia Smith",
            "name.familyName": "Smyth",
            format!("{ENTERPRISE}:department"): "Research"
        } }])),
        )
        .await;
    assert_eq!(
        (out["displayName"].as_str(), out["name"]["familyName"].as_str()),
        (Some("Alicia Smith"), Some("Smyth"))
    );
    assert_eq!(out[ENTERPRISE]["department"], "Research");

    // Clearing with "" and null, manager removal by filter.
    let (_, out) = scim
        .send(Method::PATCH, &path, patch(json!([{ "op": "Replace", "path": "nickName", "value": "" }])))
        .await;
    assert!(out.get("nickName").is_none(), "{out}");
    let (_, out) = scim
        .send(
            Method::PATCH,
            &path,
            patch(json!([{ "op": "Replace", "path": "name.givenName", "value": null }])),
        )
        .await;
    assert!(out["name"].get("givenName").is_none(), "{out}");
    let (_, out) = scim
        .send(Method::PATCH, &path, patch(json!([{ "op": "remove", "path": "manager[value eq \"mgr-1\"]" }])))
        .await;
    assert!(out[ENTERPRISE].get("manager").is_none(), "{out}");

    // Disable as the default job sends it.
    let (_, out) = scim
        .send(Method::PATCH, &path, patch(json!([{ "op": "Replace", "path": "active", "value": "False" }])))
        .await;
    assert_eq!(out["active"], false);
    let (_, found) = scim.get(&format!("/scim/v2/Users?filter={}", urlencode("active eq false"))).await;
    assert_eq!(found["totalResults"], 1);

    // A bad PATCH changes nothing at all.
    let (_, before) = scim.get(&path).await;
    let (status, err) = scim
        .send(
            Method::PATCH,
            &path,
            patch(json!([{ "op": "Replace", "path": "title", "value": "CEO" }, { "op": "frobnicate" }])),
        )
        .await;
    assert_error(status, &err, 400);
    assert_eq!(scim.get(&path).await.1, before);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn lists_page_filter_and_project() {
    let server = TestServer::sqlite().await;
    let scim = Scim::new(&server, "azure_ad").await;
    for i in 0..12 {
        let (status, _) = scim
            .send(Method::POST, "/scim/v2/Users", json!({ "userName": format!("user{i:02}@contoso.com"), "displayName": format!("User {i}"), "title": if i % 2 == 0 { "Engineer" } else { "Manager" } }))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    // Entra's pagination scenario: count=5, startIndex echoed, stable order.
    let mut seen = Vec::new();
    for page in 0..3 {
        let start = page * 5 + 1;
        let (_, list) = scim.get(&format!("/scim/v2/Users?startIndex={start}&count=5")).await;
        assert_eq!(
            (list["startIndex"].as_u64(), list["totalResults"].as_u64()),
            (Some(start as u64), Some(12))
        );
        for r in list["Resources"].as_array().unwrap() {
            seen.push(r["userName"].as_str().unwrap().to_owned());
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    assert_eq!(seen.len(), 12);

    for (filter, expected) in [
        ("title eq \"engineer\"", 6),
        ("title eq \"Engineer\" and (userName co \"01\" or userName co \"02\")", 1),
        ("userName sw \"user1\"", 2),
        ("not (title eq \"Engineer\")", 6),
        ("meta.lastModified gt \"2000-01-01T00:00:00Z\"", 12),
        ("USERNAME EQ \"USER03@CONTOSO.COM\"", 1),
        ("displayName ew \"11\"", 1),
    ] {
        let (status, list) = scim.get(&format!("/scim/v2/Users?filter={}", urlencode(filter))).await;
        assert_eq!((status, list["totalResults"].as_u64()), (StatusCode::OK, Some(expected)), "{filter}");
    }
    for bad in
        ["userName eq", "userName zz \"x\"", "(userName eq \"x\"", "meta.lastModified gt \"yesterday\""]
    {
        let (status, err) = scim.get(&format!("/scim/v2/Users?filter={}", urlencode(bad))).await;
        assert_error(status, &err, 400);
        assert_eq!(err["scimType"], "invalidFilter", "{bad}");
    }
    let (_, list) = scim.get("/scim/v2/Users?count=2&attributes=userName,emails").await;
    let r = &list["Resources"][0];
    assert!(r["userName"].is_string() && r["emails"].is_array() && r["id"].is_string());
    assert!(r.get("displayName").is_none() && r.get("title").is_none(), "{r}");
    let (_, list) = scim.get("/scim/v2/Users?count=1&excludedAttributes=title").await;
    assert!(list["Resources"][0].get("title").is_none());
    let (_, empty) = scim.get("/scim/v2/Users?count=0").await;
    assert_eq!((empty["totalResults"].as_u64(), empty["Resources"].clone()), (Some(12), json!([])));
}

#[tokio::test]
async fn etags_and_if_match() {
    let server = TestServer::sqlite().await;
    let scim = Scim::new(&server, "generic").await;
    let (_, headers, created) =
        scim.call(Method::POST, "/scim/v2/Users", Some(json!({ "userName": "eve@example.com" }))).await;
    let etag = headers.get("etag").unwrap().to_str().unwrap().to_owned();
    assert_eq!(created["meta"]["version"], etag.as_str());
    let path = format!("/scim/v2/Users/{}", created["id"].as_str().unwrap());
    let patch = json!({ "Operations": [{ "op": "add", "path": "title", "value": "A" }] });

    // A user provisioned inactive is written once, inactive, at version 1.
    let (status, _, inactive) = scim
        .call(
            Method::POST,
            "/scim/v2/Users",
            Some(json!({ "userName": "idle@example.com", "active": false })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        (inactive["active"].as_bool(), inactive["meta"]["version"].as_str()),
        (Some(false), Some("W/\"1\""))
    );
    assert_eq!(server.login("idle@example.com", "whatever").await.0, StatusCode::UNAUTHORIZED);

    let stale = |etag: &str| {
        server
            .http
            .patch(server.url(&path))
            .bearer_auth(&scim.token)
            .header("if-match", etag)
            .header("content-type", "application/json")
            .body(patch.to_string())
    };
    let resp = stale(&etag).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let new_etag = resp.headers().get("etag").unwrap().to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    let resp = stale(&etag).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    let resp = stale("*").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // Groups honour If-Match too, and a refused change changes nothing.
    let (_, headers, group) =
        scim.call(Method::POST, "/scim/v2/Groups", Some(json!({ "displayName": "Etag" }))).await;
    let group_etag = headers.get("etag").unwrap().to_str().unwrap().to_owned();
    let group_path = format!("/scim/v2/Groups/{}", group["id"].as_str().unwrap());
    let rename = |etag: &str| {
        server
            .http
            .patch(server.url(&group_path))
            .bearer_auth(&scim.token)
            .header("if-match", etag)
            .header("content-type", "application/scim+json")
            .body(
                json!({ "Operations": [{ "op": "replace", "path": "displayName", "value": "Renamed" }] })
                    .to_string(),
            )
    };
    assert_eq!(rename("W/\"99\"").send().await.unwrap().status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(scim.get(&group_path).await.1["displayName"], "Etag");
    assert_eq!(rename(&group_etag).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(scim.get(&group_path).await.1["displayName"], "Renamed");
}

#[tokio::test]
async fn tokens_need_the_toolkit_and_can_be_revoked() {
    let server = TestServer::sqlite().await;
    let plain_org = server.create_org("No Toolkit").await;
    // Whichever client the token is for: provisioning is part of the ToolKit.
    for idp in ["okta", "azure_ad", "generic"] {
        let (status, body) = server
            .admin(
                Method::POST,
                &format!("/admin/v1/orgs/{plain_org}/scim-tokens"),
                Some(json!({ "label": "x", "idp": idp })),
            )
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("enterprise_toolkit_required"))
        );
    }
    let scim = Scim::new(&server, "okta").await;
    let generic = Scim::new(&server, "generic").await;
    let tokens_path = format!("/admin/v1/orgs/{}/scim-tokens", scim.org);
    let (_, listed) = server.admin(Method::GET, &tokens_path, None).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(listed[0].get("token").is_none(), "the token is shown once");
    assert_eq!(scim.get("/scim/v2/Users").await.0, StatusCode::OK);

    // Losing the entitlement stops provisioning, by any token.
    for org in [&scim.org, &generic.org] {
        server
            .admin(
                Method::PATCH,
                &format!("/admin/v1/orgs/{org}"),
                Some(json!({ "enterprise_toolkit": false })),
            )
            .await;
    }
    assert_eq!(scim.get("/scim/v2/Users").await.0, StatusCode::FORBIDDEN);
    assert_eq!(generic.get("/scim/v2/Users").await.0, StatusCode::FORBIDDEN);
    server
        .admin(
            Method::PATCH,
            &format!("/admin/v1/orgs/{}", scim.org),
            Some(json!({ "enterprise_toolkit": true })),
        )
        .await;

    let id = listed[0]["id"].as_str().unwrap();
    assert_eq!(
        server.admin(Method::DELETE, &format!("{tokens_path}/{id}"), None).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, err) = scim.get("/scim/v2/Users").await;
    assert_error(status, &err, 401);

    // One organization's token never reaches another's users.
    let other = Scim::new(&server, "okta").await;
    let (_, created) =
        other.send(Method::POST, "/scim/v2/Users", json!({ "userName": "mine@example.com" })).await;
    let third = Scim::new(&server, "okta").await;
    let (status, _) = third.get(&format!("/scim/v2/Users/{}", created["id"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = third.get("/scim/v2/Users").await;
    assert_eq!(list["totalResults"], 0);
}

#[tokio::test]
async fn discovery_documents() {
    let server = TestServer::sqlite().await;
    let scim = Scim::new(&server, "azure_ad").await;
    let (status, spc) = scim.get("/scim/v2/ServiceProviderConfig").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            spc["patch"]["supported"].as_bool(),
            spc["filter"]["supported"].as_bool(),
            spc["etag"]["supported"].as_bool()
        ),
        (Some(true), Some(true), Some(true))
    );
    let (_, types) = scim.get("/scim/resourcetypes").await;
    assert_eq!(types["Resources"][0]["endpoint"], "/Users");
    let (_, schemas) = scim.get("/scim/v2/Schemas").await;
    let ids: Vec<&str> =
        schemas["Resources"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"urn:ietf:params:scim:schemas:core:2.0:User") && ids.contains(&ENTERPRISE));
    assert!(!schemas.to_string().contains("null"), "no nulls in /Schemas");
    let (status, err) = scim.get("/scim/v2/Nope").await;
    assert_error(status, &err, 404);
    // Bodies: application/json is accepted, other types are not.
    let resp = server
        .http
        .post(server.url("/scim/v2/Users"))
        .bearer_auth(&scim.token)
        .header("content-type", "application/json")
        .body(r#"{"userName":"json@example.com"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = server
        .http
        .post(server.url("/scim/v2/Users"))
        .bearer_auth(&scim.token)
        .header("content-type", "text/plain")
        .body(r#"{"userName":"t@example.com"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let many_emails = json!({ "userName": "many", "emails": vec![json!({}); 51] }).to_string();
    for (body, field) in [
        (r#"{"userName":""}"#, "userName"),
        (r#"not json"#, "JSON"),
        (r#"{"userName":"x@example.com","active":7}"#, "active"),
        // A userName alone is enough (RFC 7643 §4.1), but an address given
        // must be one.
        (r#"{"userName":"jdoe","emails":[{"value":"not-an-email"}]}"#, "emails"),
        // Each entry is a row of the email index: a body of many cannot
        // become as many rows.
        (many_emails.as_str(), "emails"),
    ] {
        let resp = server
            .http
            .post(server.url("/scim/v2/Users"))
            .bearer_auth(&scim.token)
            .header("content-type", "application/scim+json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert!(err["detail"].as_str().unwrap().contains(field), "{body}: {err}");
    }
}

async fn create_users(scim: &Scim<'_>, n: usize, prefix: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (status, u) = scim
            .send(Method::POST, "/scim/v2/Users", json!({ "userName": format!("{prefix}{i}@example.com"), "displayName": format!("{prefix} {i}") }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{u}");
        ids.push(u["id"].as_str().unwrap().to_owned());
    }
    ids
}

fn patch_ops(ops: Value) -> Value {
    json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops })
}

fn member_ids(group: &Value) -> Vec<String> {
    let mut ids: Vec<String> = group["members"]
        .as_array()
        .map(|m| m.iter().map(|m| m["value"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Okta's group push (§3.2), and the `groups` claim it feeds.
async fn okta_groups_and_the_groups_claim(server: TestServer) {
    let scim = Scim::new(&server, "okta").await;
    let users = create_users(&scim, 3, "member").await;
    let (status, group) = scim
        .send(Method::POST, "/scim/v2/Groups", json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Engineering", "members": [] }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let id = group["id"].as_str().unwrap().to_owned();
    let path = format!("/scim/v2/Groups/{id}");
    let (status, dup) =
        scim.send(Method::POST, "/scim/v2/Groups", json!({ "displayName": "engineering" })).await;
    assert_error(status, &dup, 409);

    let (_, found) =
        scim.get(&format!("/scim/v2/Groups?filter={}", urlencode("displayName eq \"Engineering\""))).await;
    assert_eq!(found["totalResults"], 1);
    let (status, all) = scim.get("/scim/v2/Groups").await;
    assert_eq!((status, all["Resources"].is_array()), (StatusCode::OK, true), "SPEC step 10");

    // Remove + add in one request, then replace the whole set.
    let (status, _, body) = scim
        .call(Method::PATCH, &path, Some(patch_ops(json!([
            { "op": "add", "path": "members", "value": [{ "value": users[0], "display": "member 0" }, { "value": users[1] }] },
        ]))))
        .await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    scim.send(
        Method::PATCH,
        &path,
        patch_ops(json!([
            { "op": "remove", "path": format!("members[value eq \"{}\"]", users[0]) },
            { "op": "add", "path": "members", "value": [{ "value": users[2] }] },
        ])),
    )
    .await;
    let (_, g) = scim.get(&path).await;
    let mut expected = vec![users[1].clone(), users[2].clone()];
    expected.sort();
    assert_eq!(member_ids(&g), expected);
    assert_eq!(
        g["members"].as_array().unwrap().iter().find(|m| m["value"] == users[2].as_str()).unwrap()["display"],
        "member 2"
    );

    // The members' tokens carry the group.
    let admin_path = format!("/admin/v1/orgs/{}/users/{}", scim.org, users[2]);
    server.admin(Method::PATCH, &admin_path, Some(json!({ "password": "member's password" }))).await;
    let (_, tokens) = server.login("member2@example.com", "member's password").await;
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(tokens["access_token"].as_str().unwrap())
        .unwrap()
        .claims;
    assert_eq!(claims["groups"], json!(["Engineering"]));

    // Okta's rename repeats the read-only id and keeps the members.
    scim.send(
        Method::PATCH,
        &path,
        patch_ops(json!([{ "op": "replace", "value": { "id": id, "displayName": "R&D" } }])),
    )
    .await;
    let (_, g) = scim.get(&format!("{path}?excludedAttributes=members")).await;
    assert_eq!(g["displayName"], "R&D");
    assert!(g.get("members").is_none(), "excludedAttributes=members honoured");
    scim.send(
        Method::PATCH,
        &path,
        patch_ops(json!([{ "op": "replace", "path": "members", "value": [{ "value": users[0] }] }])),
    )
    .await;
    let (_, g) = scim.get(&path).await;
    assert_eq!(member_ids(&g), vec![users[0].clone()]);
    // The claim follows at the next refresh.
    let (_, refreshed) =
        server.post("/v1/token/refresh", json!({ "refresh_token": tokens["refresh_token"] })).await;
    let claims =
        jsonwebtoken::dangerous::insecure_decode::<Value>(refreshed["access_token"].as_str().unwrap())
            .unwrap()
            .claims;
    assert!(claims.get("groups").is_none(), "{claims}");

    let (status, _, _) = scim.call(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, err) = scim.get(&path).await;
    assert_error(status, &err, 404);
}

/// Fifty parallel membership PATCHes on one group: none is lost.
async fn parallel_member_patches(server: TestServer) {
    let scim = Scim::new(&server, "azure_ad").await;
    let users = create_users(&scim, 50, "p").await;
    let (_, group) = scim.send(Method::POST, "/scim/v2/Groups", json!({ "displayName": "Everyone" })).await;
    let path = format!("/scim/v2/Groups/{}", group["id"].as_str().unwrap());
    let patches = users.iter().map(|u| {
        let req = server
            .http
            .patch(server.url(&path))
            .bearer_auth(&scim.token)
            .header("content-type", "application/scim+json")
            .body(
                patch_ops(
                    json!([{ "op": "Add", "path": "members", "value": [{ "value": u, "$ref": null }] }]),
                )
                .to_string(),
            );
        async move { req.send().await.unwrap().status() }
    });
    let statuses = futures::future::join_all(patches).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::NO_CONTENT), "{statuses:?}");
    let (_, g) = scim.get(&path).await;
    let mut expected = users.clone();
    expected.sort();
    assert_eq!(member_ids(&g), expected, "a concurrent PATCH was lost");
    assert_eq!(g["meta"]["version"], "W/\"51\"");
}

/// A SCIM token acts for its own organization only: another
/// organization's users and groups do not exist for it, by id, by filter or
/// as members, and nothing it sends changes them.
async fn a_token_reaches_only_its_organization(server: TestServer) {
    let ours = Scim::new(&server, "okta").await;
    let theirs = Scim::new(&server, "okta").await;
    let (status, user) =
        theirs.send(Method::POST, "/scim/v2/Users", okta_user("victim@theirs.test", "Vic")).await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let (status, group) = theirs
        .send(
            Method::POST,
            "/scim/v2/Groups",
            json!({ "displayName": "Admins", "members": [{ "value": user["id"] }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let (user_path, group_path) = (
        format!("/scim/v2/Users/{}", user["id"].as_str().unwrap()),
        format!("/scim/v2/Groups/{}", group["id"].as_str().unwrap()),
    );
    let deactivate = json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{ "op": "replace", "value": { "active": false } }] });
    let rename = json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{ "op": "replace", "value": { "displayName": "Ours now" } }] });
    for (method, path, body) in [
        (Method::GET, &user_path, None),
        (Method::PUT, &user_path, Some(okta_user("victim@theirs.test", "Mallory"))),
        (Method::PATCH, &user_path, Some(deactivate)),
        (Method::DELETE, &user_path, None),
        (Method::GET, &group_path, None),
        (Method::PATCH, &group_path, Some(rename)),
        (Method::DELETE, &group_path, None),
    ] {
        let (status, _, body) = ours.call(method.clone(), path, body).await;
        assert_error(status, &body, 404);
    }
    let (_, found) = ours.get("/scim/v2/Users?filter=userName%20eq%20%22victim@theirs.test%22").await;
    assert_eq!(found["totalResults"], 0);
    let (_, all) = ours.get("/scim/v2/Users").await;
    assert_eq!(all["totalResults"], 0, "{all}");
    let (_, groups) = ours.get("/scim/v2/Groups").await;
    assert_eq!(groups["totalResults"], 0, "{groups}");
    // Their user cannot be made a member of our group either.
    let (status, body) = ours
        .send(
            Method::POST,
            "/scim/v2/Groups",
            json!({ "displayName": "Ours", "members": [{ "value": user["id"] }] }),
        )
        .await;
    assert_error(status, &body, 400);

    // Untouched, as their own token sees it.
    let (status, still) = theirs.get(&user_path).await;
    assert_eq!(
        (status, &still["active"], &still["name"]["givenName"]),
        (StatusCode::OK, &json!(true), &json!("Vic"))
    );
    let (_, group) = theirs.get(&group_path).await;
    assert_eq!(
        (&group["displayName"], group["members"].as_array().map(Vec::len)),
        (&json!("Admins"), Some(1))
    );
}

/// RFC 9865 cursors: a walk sees every resource once, in id order, however
/// the list changes behind it, by the database (unfiltered or on columns)
/// and in memory (other filters, groups) alike; and a cursor that is not
/// one the server gave, or that is combined with startIndex or sortBy, is
/// an error, never another page.
async fn cursor_pages(server: TestServer) {
    let scim = Scim::new(&server, "generic").await;
    let mut ids = Vec::new();
    for i in 0..8 {
        let user = json!({ "userName": format!("c{i}@cursor.test"), "title": if i % 2 == 0 { "even" } else { "odd" } });
        let (status, body) = scim.send(Method::POST, "/scim/v2/Users", user).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
        let group = json!({ "displayName": format!("Group {i}") });
        assert_eq!(scim.send(Method::POST, "/scim/v2/Groups", group).await.0, StatusCode::CREATED);
    }
    let (_, config) = scim.get("/scim/v2/ServiceProviderConfig").await;
    assert_eq!(
        (
            &config["pagination"]["cursor"],
            &config["pagination"]["index"],
            &config["pagination"]["maxPageSize"]
        ),
        (&json!(true), &json!(true), &json!(1000)),
        "{config}"
    );

    // Walks a list by cursor, three at a time; `between` runs after the
    // first page. Returns the ids seen, in order, and the totals reported.
    async fn walk(scim: &Scim<'_>, list: &str, between: impl AsyncFnOnce()) -> (Vec<String>, Vec<u64>) {
        let (mut seen, mut totals) = (Vec::new(), Vec::new());
        let mut cursor = String::new();
        let mut between = Some(between);
        for _ in 0..20 {
            let sep = if list.contains('?') { '&' } else { '?' };
            let (status, page) = scim.get(&format!("{list}{sep}count=3&cursor={cursor}")).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            assert!(page.get("startIndex").is_none(), "a cursor page has no index: {page}");
            totals.push(page["totalResults"].as_u64().unwrap());
            let resources = page["Resources"].as_array().unwrap();
            assert_eq!(page["itemsPerPage"].as_u64(), Some(resources.len() as u64));
            seen.extend(resources.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
            if let Some(run) = between.take() {
                run().await;
            }
            match page["nextCursor"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => return (seen, totals),
            }
        }
        panic!("{list}: the cursor never ended");
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "ids follow creation");

    // Unfiltered, from the database; a user on the first page deleted
    // between pages shifts nothing after it (an offset would skip one).
    let first = ids[0].clone();
    let (seen, totals) = walk(&scim, "/scim/v2/Users", async || {
        assert_eq!(
            scim.call(Method::DELETE, &format!("/scim/v2/Users/{first}"), None).await.0,
            StatusCode::NO_CONTENT
        );
    })
    .await;
    assert_eq!(seen, ids, "every user once, in id order");
    assert_eq!(totals, [8, 7, 7]);
    // Filtered on a column (the database) and on another attribute (in
    // memory): the same pages.
    let later: Vec<String> = ids[1..].to_vec();
    let on_column = walk(&scim, "/scim/v2/Users?filter=userName%20sw%20%22c%22", async || {}).await.0;
    assert_eq!(on_column, later);
    let in_memory = walk(&scim, "/scim/v2/Users?filter=title%20pr", async || {}).await.0;
    assert_eq!(in_memory, later);
    let odd = walk(&scim, "/scim/v2/Users?filter=title%20eq%20%22odd%22", async || {}).await.0;
    assert_eq!(odd, [1, 3, 5, 7].map(|i| ids[i].clone()));
    // Groups, and a search by POST.
    let groups = walk(&scim, "/scim/v2/Groups?excludedAttributes=members", async || {}).await.0;
    let mut in_order = groups.clone();
    in_order.sort();
    assert_eq!((groups.len(), &groups), (8, &in_order));
    let search = json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "cursor": "", "count": 5 });
    let (status, page) = scim.send(Method::POST, "/scim/v2/Users/.search", search).await;
    assert_eq!((status, page["Resources"].as_array().map(Vec::len)), (StatusCode::OK, Some(5)), "{page}");
    assert_eq!(page["nextCursor"].as_str(), Some(ids[5].as_str()), "{page}");

    // Errors, not pages.
    for (query, scim_type) in [
        ("cursor=not-a-cursor", "invalidCursor"),
        ("cursor=%27%20OR%201%3D1%20--", "invalidCursor"),
        ("cursor=&startIndex=2", "invalidValue"),
        ("cursor=&sortBy=userName", "invalidValue"),
    ] {
        for list in ["/scim/v2/Users", "/scim/v2/Groups"] {
            let (status, body) = scim.get(&format!("{list}?{query}")).await;
            assert_error(status, &body, 400);
            assert_eq!(body["scimType"], scim_type, "{list}?{query}: {body}");
        }
    }
    let everything =
        json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "cursor": "" });
    let (status, body) = scim.send(Method::POST, "/scim/v2/.search", everything).await;
    assert_error(status, &body, 400);
}

on_both_backends!(
    filter_operators_on_every_kind_of_attribute,
    nul_characters_are_refused_not_failed_on,
    patch_on_every_kind_of_attribute,
    cursor_pages,
    versions_and_limits_are_scim_errors,
    database_filters_mean_what_the_matcher_means,
    bulk_requests,
    schemas_say_what_is_enforced,
    ping_provisioner_requests,
    sorting_and_search_requests,
    group_members_change_one_by_one_with_versions,
    a_token_reaches_only_its_organization,
    okta_spec_test,
    okta_crud_and_deprovisioning,
    okta_groups_and_the_groups_claim,
    parallel_member_patches,
    entra_user_quirks,
    entra_group_quirks,
    postman_garbage_and_restore,
);

/// Entra's group requests (§3.2).
async fn entra_group_quirks(server: TestServer) {
    let scim = Scim::new(&server, "azure_ad").await;
    let users = create_users(&scim, 3, "e").await;
    let (status, group) = scim
        .send(Method::POST, "/scim/Groups", json!({ "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159", "displayName": "Group1DisplayName", "members": [], "meta": { "resourceType": "Group" } }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let path = format!("/scim/groups/{}", group["id"].as_str().unwrap());
    for filter in
        ["displayName eq \"Group1DisplayName\"", "externalId eq \"8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159\""]
    {
        let (_, found) =
            scim.get(&format!("/scim/Groups?excludedAttributes=members&filter={}", urlencode(filter))).await;
        assert_eq!(found["totalResults"], 1, "{filter}");
        assert!(found["Resources"][0].get("members").is_none());
    }
    scim.send(Method::PATCH, &path, patch_ops(json!([{ "op": "Add", "path": "members", "value": users.iter().map(|u| json!({ "$ref": null, "value": u })).collect::<Vec<_>>() }]))).await;
    // The default job's Remove: only the listed member goes.
    scim.send(
        Method::PATCH,
        &path,
        patch_ops(json!([{ "op": "Remove", "path": "members", "value": [{ "value": users[1] }] }])),
    )
    .await;
    let (_, g) = scim.get(&path).await;
    let mut expected = vec![users[0].clone(), users[2].clone()];
    expected.sort();
    assert_eq!(member_ids(&g), expected);
    let (_, found) = scim
        .get(&format!("/scim/v2/Groups?filter={}", urlencode(&format!("members[value eq \"{}\"]", users[2]))))
        .await;
    assert_eq!(found["totalResults"], 1);

    // A member that is not a user here: refused, and nothing changes.
    let other = Scim::new(&server, "azure_ad").await;
    let outsider = create_users(&other, 1, "outsider").await;
    for bad in [outsider[0].as_str(), "01a2221d-50f7-7697-ad4d-23a24da039c7", "not-an-id"] {
        let (status, err) = scim
            .send(
                Method::PATCH,
                &path,
                patch_ops(json!([{ "op": "add", "path": "members", "value": [{ "value": bad }] }])),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {err}");
        assert_error(status, &err, 400);
    }
    assert_eq!(scim.get(&path).await.1, g);
    // Group PUT replaces the members too.
    let (status, replaced) = scim
        .send(Method::PUT, &path, json!({ "displayName": "Renamed", "members": [{ "value": users[1] }] }))
        .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(member_ids(&replaced), vec![users[1].clone()]);
    // Deleting a user takes it out of its groups.
    scim.call(Method::DELETE, &format!("/scim/v2/Users/{}", users[1]), None).await;
    let (_, g) = scim.get(&path).await;
    assert!(member_ids(&g).is_empty());
}

/// The Microsoft reference implementation's "garbage" tests and the
/// validator's restore scenario.
async fn postman_garbage_and_restore(server: TestServer) {
    let scim = Scim::new(&server, "azure_ad").await;
    // An apostrophe survives creation and filtering.
    let (status, omalley) = scim
        .send(
            Method::POST,
            "/scim/v2/Users",
            json!({ "userName": "OMalley@contoso.com", "displayName": "Ryan O'Malley" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{omalley}");
    let (_, found) =
        scim.get(&format!("/scim/v2/Users?filter={}", urlencode("displayName eq \"Ryan O'Malley\""))).await;
    assert_eq!(found["totalResults"], 1);
    // A misspelled attribute on PUT is kept, not refused.
    let path = format!("/scim/v2/Users/{}", omalley["id"].as_str().unwrap());
    let (status, put) = scim
        .send(
            Method::PUT,
            &path,
            json!({ "userName": "OMalley@contoso.com", "emials": [{ "value": "x@contoso.com" }] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["emials"][0]["value"], "x@contoso.com");
    // Renaming onto a taken userName is 409 and changes nothing.
    scim.send(Method::POST, "/scim/v2/Users", json!({ "userName": "taken@contoso.com" })).await;
    let (status, err) = scim
        .send(
            Method::PATCH,
            &path,
            patch_ops(json!([{ "op": "Replace", "path": "userName", "value": "TAKEN@contoso.com" }])),
        )
        .await;
    assert_error(status, &err, 409);
    assert_eq!(scim.get(&path).await.1["userName"], "OMalley@contoso.com");
    // A userName that is an admin-created user's email is taken too.
    server.create_user(&scim.org, "admin-made@contoso.com", None).await;
    let (status, err) = scim
        .send(
            Method::POST,
            "/scim/v2/Users",
            json!({ "userName": "Admin-Made@contoso.com", "emails": [{ "value": "other@contoso.com" }] }),
        )
        .await;
    assert_error(status, &err, 409);
    // Restore: unassign (disable), delete, reassign (create again).
    scim.send(
        Method::PATCH,
        &path,
        patch_ops(json!([{ "op": "Replace", "path": "active", "value": "False" }])),
    )
    .await;
    assert_eq!(scim.call(Method::DELETE, &path, None).await.0, StatusCode::NO_CONTENT);
    let (status, again) = scim
        .send(Method::POST, "/scim/v2/Users", json!({ "userName": "OMalley@contoso.com", "active": true }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_ne!(again["id"], omalley["id"], "ids are never reused");
    // Group pagination.
    for i in 0..7 {
        scim.send(Method::POST, "/scim/v2/Groups", json!({ "displayName": format!("G{i}") })).await;
    }
    let (_, page) = scim.get("/scim/v2/Groups?startIndex=6&count=5").await;
    assert_eq!(
        (page["totalResults"].as_u64(), page["itemsPerPage"].as_u64(), page["startIndex"].as_u64()),
        (Some(7), Some(2), Some(6))
    );
}

/// Member PATCHes in the IdPs' shapes touch only the members they name
/// (however large the group), keep versions and ETags honest, and change
/// nothing when they fail; a reader that leaves members out gets the same
/// version without them; `If-None-Match` answers 304.
async fn group_members_change_one_by_one_with_versions(server: TestServer) {
    let scim = Scim::new(&server, "okta").await;
    let users = create_users(&scim, 3, "v").await;
    let stranger = {
        let other = Scim::new(&server, "okta").await;
        create_users(&other, 1, "stranger").await.remove(0)
    };
    let (_, group) = scim
        .send(
            Method::POST,
            "/scim/v2/Groups",
            json!({ "displayName": "Ops", "members": [{ "value": users[0] }] }),
        )
        .await;
    let path = format!("/scim/v2/Groups/{}", group["id"].as_str().unwrap());
    let etag = |h: &reqwest::header::HeaderMap| h["etag"].to_str().unwrap().to_owned();
    let (_, headers, _) = scim.call(Method::GET, &path, None).await;
    let v1 = etag(&headers);

    // Adding a member already there and removing one who is not change no
    // membership, each with a new version.
    let add = |ids: &[&String]| {
        patch_ops(
            json!([{ "op": "add", "path": "members", "value": ids.iter().map(|u| json!({ "value": u })).collect::<Vec<_>>() }]),
        )
    };
    let (status, headers, _) =
        scim.call_with(Method::PATCH, &path, Some(add(&[&users[0], &users[1]])), &[("if-match", &v1)]).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let v2 = etag(&headers);
    assert_ne!(v1, v2);
    let remove_absent =
        patch_ops(json!([{ "op": "remove", "path": format!("members[value eq \"{}\"]", users[2]) }]));
    scim.send(Method::PATCH, &path, remove_absent).await;
    let (_, g) = scim.get(&path).await;
    let mut expected = vec![users[0].clone(), users[1].clone()];
    expected.sort();
    assert_eq!(member_ids(&g), expected);

    // A stale If-Match: 412, nothing changed.
    let (status, _, body) =
        scim.call_with(Method::PATCH, &path, Some(add(&[&users[2]])), &[("if-match", &v1)]).await;
    assert_error(status, &body, 412);
    // Another organization's user: refused, nothing changed.
    let (status, _, body) = scim.call(Method::PATCH, &path, Some(add(&[&users[2], &stranger]))).await;
    assert_error(status, &body, 400);
    let (_, g) = scim.get(&path).await;
    assert_eq!(member_ids(&g), expected, "all or nothing");

    // Without members: the same version, no members read or shown.
    let (_, full_headers, _) = scim.call(Method::GET, &path, None).await;
    let (status, headers, slim) =
        scim.call(Method::GET, &format!("{path}?excludedAttributes=members"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(slim.get("members").is_none() && slim["displayName"] == "Ops", "{slim}");
    assert_eq!(etag(&headers), etag(&full_headers));
    let (_, _, listed) = scim.call(Method::GET, "/scim/v2/Groups?excludedAttributes=members", None).await;
    assert!(listed["Resources"][0].get("members").is_none());
    let (_, _, attrs) = scim.call(Method::GET, &format!("{path}?attributes=displayName"), None).await;
    assert!(attrs.get("members").is_none());
    let filtered = format!(
        "/scim/v2/Groups?excludedAttributes=members&filter={}",
        urlencode(&format!("members[value eq \"{}\"]", users[1]))
    );
    let (_, _, found) = scim.call(Method::GET, &filtered, None).await;
    assert_eq!(found["totalResults"], 1, "a filter on members still sees them: {found}");

    // If-None-Match: 304 while current, 200 once changed.
    let current = etag(&full_headers);
    let (status, headers, body) =
        scim.call_with(Method::GET, &path, None, &[("if-none-match", &current)]).await;
    assert_eq!((status, body), (StatusCode::NOT_MODIFIED, Value::Null));
    assert_eq!(etag(&headers), current);
    let mixed = patch_ops(json!([
        { "op": "replace", "path": "displayName", "value": "Operations" },
        { "op": "add", "path": "members", "value": [{ "value": users[2] }] },
        { "op": "remove", "path": "members", "value": [{ "value": users[2] }] },
    ]));
    let (status, _, _) = scim.call(Method::PATCH, &path, Some(mixed)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, g) = scim.call_with(Method::GET, &path, None, &[("if-none-match", &current)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (g["displayName"].as_str(), member_ids(&g)),
        (Some("Operations"), expected),
        "operations in order"
    );
    let user_path = format!("/scim/v2/Users/{}", users[0]);
    let (_, headers, _) = scim.call(Method::GET, &user_path, None).await;
    let (status, _, _) =
        scim.call_with(Method::GET, &user_path, None, &[("if-none-match", &etag(&headers))]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED, "users too");
}

/// `sortBy` / `sortOrder` on every list, from the database or in memory,
/// and `POST /.search` (RFC 7644 §3.4.2.3, §3.4.3) on each resource type and
/// at the root.
async fn sorting_and_search_requests(server: TestServer) {
    let scim = Scim::new(&server, "generic").await;
    for (name, display, external) in [
        ("carol@x.test", "Carol", Some("3")),
        ("alice@x.test", "alice", None),
        ("bob@x.test", "Bob", Some("1")),
    ] {
        let mut user = json!({ "userName": name, "displayName": display, "emails": [{ "value": name, "primary": true }] });
        if let Some(e) = external {
            user["externalId"] = json!(e);
        }
        let (status, body) = scim.send(Method::POST, "/scim/v2/Users", user).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    for name in ["Zeta", "Eta"] {
        scim.send(Method::POST, "/scim/v2/Groups", json!({ "displayName": name })).await;
    }
    let names = |list: &Value, attr: &str| -> Vec<String> {
        list["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[attr].as_str().unwrap_or("-").to_owned())
            .collect()
    };
    let (_, sorted) = scim.get("/scim/v2/Users?sortBy=userName").await;
    assert_eq!(names(&sorted, "userName"), ["alice@x.test", "bob@x.test", "carol@x.test"]);
    let (_, sorted) = scim.get("/scim/v2/Users?sortBy=displayName&sortOrder=descending").await;
    assert_eq!(names(&sorted, "displayName"), ["Carol", "Bob", "alice"], "without case");
    let (_, page) = scim.get("/scim/v2/Users?sortBy=userName&startIndex=2&count=1").await;
    assert_eq!(
        (names(&page, "userName"), page["totalResults"].as_u64()),
        (vec!["bob@x.test".to_owned()], Some(3))
    );
    let (_, sorted) = scim.get("/scim/v2/Users?sortBy=externalId").await;
    assert_eq!(names(&sorted, "externalId"), ["1", "3", "-"], "missing values last");
    let (_, sorted) = scim.get("/scim/v2/Users?sortBy=urn:ietf:params:scim:schemas:core:2.0:User:emails.value&sortOrder=DESCENDING").await;
    assert_eq!(names(&sorted, "userName"), ["carol@x.test", "bob@x.test", "alice@x.test"]);
    let filter = urlencode("userName co \"@x.test\" and not (userName sw \"bob\")");
    let (_, filtered) =
        scim.get(&format!("/scim/v2/Users?filter={filter}&sortBy=userName&sortOrder=descending")).await;
    assert_eq!(
        names(&filtered, "userName"),
        ["carol@x.test", "alice@x.test"],
        "a filtered list is sorted too"
    );
    let (_, groups) = scim.get("/scim/v2/Groups?sortBy=displayName").await;
    assert_eq!(names(&groups, "displayName"), ["Eta", "Zeta"]);
    for bad in ["sortBy=name.familyName", "sortBy=userName&sortOrder=sideways", "sortBy=password"] {
        let (status, body) = scim.get(&format!("/scim/v2/Users?{bad}")).await;
        assert_error(status, &body, 400);
        assert_eq!(body["scimType"], "invalidValue", "{bad}");
    }
    let (status, body) = scim.get("/scim/v2/Groups?sortBy=userName").await;
    assert_error(status, &body, 400);
    let (_, config) = scim.get("/scim/v2/ServiceProviderConfig").await;
    assert_eq!(config["sort"]["supported"], true);

    // Search requests: the same lists, asked for in a body.
    let search = |body: Value| {
        let mut request = json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"] });
        request.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
        request
    };
    let (status, found) = scim
        .send(Method::POST, "/scim/v2/Users/.search", search(json!({ "filter": "userName eq \"bob@x.test\"", "attributes": ["userName"], "startIndex": 1, "count": 10 })))
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["totalResults"], 1);
    assert!(
        found["Resources"][0].get("displayName").is_none()
            && found["Resources"][0]["userName"] == "bob@x.test",
        "{found}"
    );
    let (_, sorted) = scim
        .send(
            Method::POST,
            "/scim/Users/.search",
            search(json!({ "sortBy": "userName", "sortOrder": "descending", "count": 2 })),
        )
        .await;
    assert_eq!(names(&sorted, "userName"), ["carol@x.test", "bob@x.test"]);
    let (_, groups) = scim
        .send(Method::POST, "/scim/v2/Groups/.search", search(json!({ "excludedAttributes": "members" })))
        .await;
    assert_eq!(groups["totalResults"], 2);
    // At the root: users, then groups, paged as one list.
    let (_, all) = scim.send(Method::POST, "/scim/v2/.search", search(json!({ "count": 4 }))).await;
    assert_eq!(
        (all["totalResults"].as_u64(), all["Resources"].as_array().unwrap().len()),
        (Some(5), 4),
        "{all}"
    );
    let (_, rest) =
        scim.send(Method::POST, "/scim/v2/.search", search(json!({ "startIndex": 4, "count": 10 }))).await;
    assert_eq!(names(&rest, "displayName"), ["Zeta", "Eta"], "{rest}");
    let (_, only) = scim
        .send(Method::POST, "/scim/v2/.search", search(json!({ "filter": "displayName eq \"Eta\"" })))
        .await;
    assert_eq!(only["totalResults"], 1);
    for bad in [
        json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"] }),
        json!({ "schemas": [], "count": "ten" }),
        json!([1]),
    ] {
        let (status, body) = scim.send(Method::POST, "/scim/v2/Users/.search", bad.clone()).await;
        assert_error(status, &body, 400);
    }
    let (status, body) =
        scim.send(Method::POST, "/scim/v2/Users/.search", search(json!({ "count": "ten" }))).await;
    assert_error(status, &body, 400);
    let (status, body) = scim.get("/scim/v2/.search").await;
    assert_error(status, &body, 405);
}

/// PingFederate's and PingOne's SCIM Provisioner, as their documentation
/// describes it (`docs/identity-providers.md` §3.2): users matched by a
/// configurable filter expression (`userName Eq "%s"`, or the work email),
/// created by POST and changed by PUT only (no PATCH for users), disabled
/// by `active: false` or deleted; groups found by listing them all and
/// matching by name, created by POST, members changed by PATCH.
async fn ping_provisioner_requests(server: TestServer) {
    let scim = Scim::new(&server, "ping").await;
    let user = |active: bool, title: &str| {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "jsmith",
            "name": { "givenName": "Janet", "familyName": "Smith" },
            "emails": [{ "value": "janet.smith@ping.test", "type": "work", "primary": true }],
            "title": title,
            "active": active
        })
    };
    // Matching before a create: the default expression, with Ping's
    // capitalised operator, and the work-email one.
    for filter in ["userName Eq \"jsmith\"", "emails[type eq \"work\"].value Eq \"janet.smith@ping.test\""] {
        let (status, found) = scim.get(&format!("/scim/v2/Users?filter={}", urlencode(filter))).await;
        assert_eq!((status, found["totalResults"].as_u64()), (StatusCode::OK, Some(0)), "{filter}: {found}");
    }
    let (status, created) = scim.send(Method::POST, "/scim/v2/Users", user(true, "Engineer")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    for filter in ["userName Eq \"jsmith\"", "emails[type eq \"work\"].value Eq \"janet.smith@ping.test\""] {
        let (_, found) = scim.get(&format!("/scim/v2/Users?filter={}", urlencode(filter))).await;
        assert_eq!(found["Resources"][0]["id"], id.as_str(), "{filter}");
    }
    // Updates are whole PUTs; disabling is one too.
    let path = format!("/scim/v2/Users/{id}");
    let (status, updated) = scim.send(Method::PUT, &path, user(true, "Manager")).await;
    assert_eq!((status, updated["title"].as_str()), (StatusCode::OK, Some("Manager")), "{updated}");
    let (_, tokens) =
        server.post("/v1/login", json!({ "email": "janet.smith@ping.test", "password": "x" })).await;
    assert!(tokens.get("access_token").is_none(), "a provisioned user has no password");
    let (status, disabled) = scim.send(Method::PUT, &path, user(false, "Manager")).await;
    assert_eq!((status, disabled["active"].as_bool()), (StatusCode::OK, Some(false)));
    let (status, enabled) = scim.send(Method::PUT, &path, user(true, "Manager")).await;
    assert_eq!((status, enabled["active"].as_bool()), (StatusCode::OK, Some(true)));

    // Groups: listed in pages and matched by name; then created and filled.
    for n in 0..3 {
        scim.send(Method::POST, "/scim/v2/Groups", json!({ "displayName": format!("Existing {n}") })).await;
    }
    let mut seen = Vec::new();
    let mut start = 1;
    loop {
        let (_, page) = scim.get(&format!("/scim/v2/Groups?startIndex={start}&count=2")).await;
        let items = page["Resources"].as_array().unwrap().clone();
        seen.extend(items.iter().map(|g| g["displayName"].as_str().unwrap().to_owned()));
        start += items.len();
        if items.is_empty() || start > page["totalResults"].as_u64().unwrap() as usize {
            break;
        }
    }
    assert_eq!(seen, ["Existing 0", "Existing 1", "Existing 2"]);
    let (status, group) = scim
        .send(Method::POST, "/scim/v2/Groups", json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Sales", "members": [] }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let group_path = format!("/scim/v2/Groups/{}", group["id"].as_str().unwrap());
    let (status, _, _) = scim
        .call(
            Method::PATCH,
            &group_path,
            Some(patch_ops(json!([{ "op": "add", "path": "members", "value": [{ "value": id }] }]))),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, g) = scim.get(&group_path).await;
    assert_eq!(member_ids(&g), vec![id.clone()]);
    let remove = patch_ops(json!([{ "op": "remove", "path": format!("members[value eq \"{id}\"]") }]));
    scim.call(Method::PATCH, &group_path, Some(remove)).await;
    let (_, g) = scim.get(&group_path).await;
    assert!(member_ids(&g).is_empty());
    // Deprovisioning by delete.
    let (status, _, _) = scim.call(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = scim.get(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, tokens) =
        server.admin(Method::GET, &format!("/admin/v1/orgs/{}/scim-tokens", scim.org), None).await;
    assert_eq!(tokens[0]["idp"], "ping");
}

/// `/Schemas` publishes the RFC 7643 §7 characteristics the server
/// enforces, and it enforces them: read-only attributes are ignored in a
/// PUT and refused in a PATCH, the password is never returned or kept,
/// userName is unique, and every optional attribute can be removed.
async fn schemas_say_what_is_enforced(server: TestServer) {
    let scim = Scim::new(&server, "generic").await;
    let (_, user_schema) = scim.get("/scim/v2/Schemas/urn:ietf:params:scim:schemas:core:2.0:User").await;
    let attr = |schema: &Value, name: &str| -> Value {
        schema["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
            .clone()
    };
    let id = attr(&user_schema, "id");
    assert_eq!(
        (id["mutability"].as_str(), id["returned"].as_str(), id["caseExact"].as_bool()),
        (Some("readOnly"), Some("always"), Some(true))
    );
    let user_name = attr(&user_schema, "userName");
    assert_eq!(
        (user_name["required"].as_bool(), user_name["uniqueness"].as_str()),
        (Some(true), Some("server"))
    );
    let password = attr(&user_schema, "password");
    assert_eq!(
        (password["mutability"].as_str(), password["returned"].as_str()),
        (Some("writeOnly"), Some("never"))
    );
    assert_eq!(attr(&user_schema, "externalId")["caseExact"], true);
    for a in user_schema["attributes"].as_array().unwrap() {
        for key in
            ["name", "type", "multiValued", "required", "caseExact", "mutability", "returned", "uniqueness"]
        {
            assert!(a.get(key).is_some(), "{key} of {}", a["name"]);
        }
    }
    let (_, group_schema) = scim.get("/scim/v2/Schemas/urn:ietf:params:scim:schemas:core:2.0:Group").await;
    let members = attr(&group_schema, "members");
    let display =
        members["subAttributes"].as_array().unwrap().iter().find(|s| s["name"] == "display").unwrap().clone();
    assert_eq!(display["mutability"], "readOnly");

    let enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    let (status, created) = scim
        .send(
            Method::POST,
            "/scim/v2/Users",
            json!({ "userName": "ro@x.test", "password": "Secret-123!", "title": "Eng", "nickName": "R",
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", enterprise],
            enterprise: { "department": "R&D", "costCenter": "7" },
            "id": "chosen-by-client", "meta": { "created": "2000-01-01T00:00:00Z" } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_ne!(id, "chosen-by-client", "id is the server's");
    assert_ne!(created["meta"]["created"], "2000-01-01T00:00:00Z");
    assert!(created.get("password").is_none() && !created.to_string().contains("Secret-123!"));
    let path = format!("/scim/v2/Users/{id}");
    // A PUT's read-only attributes are ignored.
    let (status, replaced) = scim
        .send(Method::PUT, &path, json!({ "id": "other", "userName": "ro@x.test", "title": "Lead" }))
        .await;
    assert_eq!((status, replaced["id"].as_str()), (StatusCode::OK, Some(id.as_str())));
    // A PATCH's are refused, and change nothing.
    for (op, kind) in [
        (json!({ "op": "replace", "path": "id", "value": "other" }), "mutability"),
        (json!({ "op": "remove", "path": "userName" }), "mutability"),
        (json!({ "op": "remove", "path": "active" }), "mutability"),
        (json!({ "op": "add", "path": "groups", "value": [{ "value": "g" }] }), "mutability"),
    ] {
        let (status, body) = scim.send(Method::PATCH, &path, patch_ops(json!([op]))).await;
        assert_error(status, &body, 400);
        assert_eq!(body["scimType"], kind, "{op}");
    }
    let (_, still) = scim.get(&path).await;
    assert_eq!((still["title"].as_str(), still["active"].as_bool()), (Some("Lead"), Some(true)));
    // Optional attributes, an extension's included, can all be removed.
    let (_, patched) = scim
        .send(
            Method::PATCH,
            &path,
            patch_ops(json!([
                { "op": "add", "path": enterprise, "value": { "department": "R&D", "costCenter": "7" } },
            ])),
        )
        .await;
    assert!(patched["schemas"].as_array().unwrap().iter().any(|s| s == enterprise), "{patched}");
    scim.send(
        Method::PATCH,
        &path,
        patch_ops(json!([
            { "op": "remove", "path": "title" },
            { "op": "remove", "path": format!("{enterprise}:costCenter") },
        ])),
    )
    .await;
    let (_, g) = scim.get(&path).await;
    assert!(g.get("title").is_none());
    assert_eq!(g[enterprise], json!({ "department": "R&D" }));
    scim.send(Method::PATCH, &path, patch_ops(json!([{ "op": "remove", "path": enterprise }]))).await;
    let (_, g) = scim.get(&path).await;
    assert!(
        g.get(enterprise).is_none() && !g["schemas"].as_array().unwrap().iter().any(|s| s == enterprise),
        "{g}"
    );
    // Uniqueness, whatever the case.
    let (status, body) = scim.send(Method::POST, "/scim/v2/Users", json!({ "userName": "RO@X.TEST" })).await;
    assert_error(status, &body, 409);
    assert_eq!(body["scimType"], "uniqueness");
}

/// `/Bulk` (RFC 7644 §3.7): operations in turn, `bulkId` references in
/// paths and data (forward ones too), `failOnErrors`, and the limits the
/// ServiceProviderConfig advertises, enforced.
async fn bulk_requests(server: TestServer) {
    let scim = Scim::new(&server, "generic").await;
    let bulk = |ops: Value, fail_on_errors: Option<u64>| {
        let mut request =
            json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops });
        if let Some(n) = fail_on_errors {
            request["failOnErrors"] = json!(n);
        }
        request
    };
    let (_, config) = scim.get("/scim/v2/ServiceProviderConfig").await;
    assert_eq!(
        (config["bulk"]["supported"].as_bool(), config["bulk"]["maxOperations"].as_u64()),
        (Some(true), Some(1000))
    );
    let max_payload = config["bulk"]["maxPayloadSize"].as_u64().unwrap() as usize;

    // A group that names a user created later in the same request, and a
    // PATCH of the user by its bulkId.
    let (status, answer) = scim
        .send(Method::POST, "/scim/v2/Bulk", bulk(json!([
            { "method": "POST", "path": "/Groups", "bulkId": "g", "data": { "displayName": "Bulk team", "members": [{ "value": "bulkId:u" }] } },
            { "method": "POST", "path": "/Users", "bulkId": "u", "data": { "userName": "bulk@x.test", "title": "New" } },
            { "method": "PATCH", "path": "/Users/bulkId:u", "data": { "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{ "op": "replace", "path": "title", "value": "Patched" }] } },
            { "method": "POST", "path": "/Users", "bulkId": "dup", "data": { "userName": "BULK@x.test" } },
        ]), None))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["schemas"], json!(["urn:ietf:params:scim:api:messages:2.0:BulkResponse"]));
    let ops = answer["Operations"].as_array().unwrap();
    let statuses: Vec<&str> = ops.iter().map(|o| o["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["201", "201", "200", "409"], "{answer}");
    assert_eq!(ops[3]["response"]["scimType"], "uniqueness");
    let user_location = ops[1]["location"].as_str().unwrap();
    let user_id = user_location.rsplit('/').next().unwrap();
    let group_id = ops[0]["location"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    assert!(ops[0]["version"].as_str().unwrap().starts_with("W/"), "{answer}");
    let (_, user) = scim.get(&format!("/scim/v2/Users/{user_id}")).await;
    assert_eq!(user["title"], "Patched");
    let (_, group) = scim.get(&format!("/scim/v2/Groups/{group_id}")).await;
    assert_eq!(member_ids(&group), [user_id.to_owned()]);

    // failOnErrors stops the run; a reference to nothing is 409.
    let (_, answer) = scim
        .send(Method::POST, "/scim/v2/Bulk", bulk(json!([
            { "method": "DELETE", "path": "/Users/no-such-user" },
            { "method": "PUT", "path": "/Users/bulkId:never", "data": { "userName": "x@x.test" } },
            { "method": "POST", "path": "/Users", "bulkId": "late", "data": { "userName": "late@x.test" } },
        ]), Some(1)))
        .await;
    let ops = answer["Operations"].as_array().unwrap();
    assert_eq!(ops.len(), 1, "stopped after the first error: {answer}");
    assert_eq!(ops[0]["status"], "404");
    let (_, found) =
        scim.get(&format!("/scim/v2/Users?filter={}", urlencode("userName eq \"late@x.test\""))).await;
    assert_eq!(found["totalResults"], 0, "nothing after the stop ran");
    let (_, answer) = scim
        .send(
            Method::POST,
            "/scim/v2/Bulk",
            bulk(
                json!([
                    { "method": "PUT", "path": "/Users/bulkId:never", "data": { "userName": "x@x.test" } },
                    { "method": "POST", "path": "/Users", "data": { "userName": "nobulkid@x.test" } },
                    { "method": "GET", "path": "/Users" },
                    { "method": "POST", "path": "/Bulk", "bulkId": "b", "data": {} },
                    { "method": "DELETE", "path": format!("/Users/{user_id}"), "version": "W/\"999\"" },
                ]),
                None,
            ),
        )
        .await;
    let statuses: Vec<&str> =
        answer["Operations"].as_array().unwrap().iter().map(|o| o["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["409", "400", "400", "400", "412"], "{answer}");

    // The limits: operations and bytes, and the request's own shape.
    let too_many: Vec<Value> =
        (0..1001).map(|i| json!({ "method": "DELETE", "path": format!("/Users/{i}") })).collect();
    let (status, body) = scim.send(Method::POST, "/scim/v2/Bulk", bulk(json!(too_many), None)).await;
    assert_error(status, &body, 413);
    let big = "x".repeat(max_payload);
    let (status, body) = scim
        .send(
            Method::POST,
            "/scim/Bulk",
            bulk(
                json!([{ "method": "POST", "path": "/Users", "bulkId": "a", "data": { "userName": big } }]),
                None,
            ),
        )
        .await;
    assert_error(status, &body, 413);
    let (status, body) = scim.send(Method::POST, "/scim/v2/Bulk", json!({ "Operations": [] })).await;
    assert_error(status, &body, 400);
    let (status, body) = scim.send(Method::POST, "/scim/v2/Bulk", bulk(json!([]), Some(0))).await;
    assert_error(status, &body, 400);
    let (status, body) = scim.get("/scim/v2/Bulk").await;
    assert_error(status, &body, 405);
    // A bulk request larger than any other request, within the limit, works.
    let many: Vec<Value> = (0..300)
        .map(|i| json!({ "method": "POST", "path": "/Users", "bulkId": format!("m{i}"), "data": { "userName": format!("many{i}@x.test"), "displayName": "x".repeat(200) } }))
        .collect();
    let (status, answer) = scim.send(Method::POST, "/scim/v2/Bulk", bulk(json!(many), None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(answer["Operations"].as_array().unwrap().iter().all(|o| o["status"] == "201"));
    // Under any spelling of its path, with its own limit; any other request
    // keeps the usual one.
    let more: Vec<Value> = (0..300)
        .map(|i| json!({ "method": "POST", "path": "/Users", "bulkId": format!("o{i}"), "data": { "userName": format!("more{i}@x.test"), "displayName": "x".repeat(200) } }))
        .collect();
    let (status, answer) = scim.send(Method::POST, "/scim//V2/BULK/", bulk(json!(more), None)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let user = json!({ "userName": "big@x.test", "nickName": "x".repeat(100 * 1024) });
    let (status, body) = scim.send(Method::POST, "/scim/v2/Users", user).await;
    assert_error(status, &body, 413);
}

/// Filters the database evaluates (on userName, externalId, id, active)
/// select exactly the users the in-memory matcher selects, for awkward
/// values too: case, non-ASCII, LIKE's own wildcards and escape, missing
/// externalIds, negation; with paging and sorting.
async fn database_filters_mean_what_the_matcher_means(server: TestServer) {
    let scim = Scim::new(&server, "generic").await;
    let names = [
        "Alice@X.test",
        "alicia@x.test",
        "bob_1@x.test",
        "bob%2@x.test",
        "b\\ob@x.test",
        "ÉLODIE@x.test",
        "élodie2@x.test",
        "zed@x.test",
        "Zoë@x.test",
        "mallory@y.test",
    ];
    // Display names with case beyond ASCII, blank ones (absent from the
    // resource) and one made from the name's parts.
    let display_names =
        ["Alice A", "", "Bob One", "bob two", " ", "ÉLODIE D", "élodie e", "Zed", "ZOË", "Mallory"];
    for (i, name) in names.iter().enumerate() {
        // Each created 1.25 s after the last: the fourth at 09:00:05.000.
        server.clock.advance(chrono::Duration::milliseconds(1250));
        let mut user = json!({ "userName": name, "active": i % 3 != 0, "displayName": display_names[i] });
        if i == 9 {
            user["name"] = json!({ "givenName": "Mal", "familyName": "Lory" });
            user.as_object_mut().unwrap().remove("displayName");
        }
        if i % 2 == 0 {
            user["externalId"] = json!(format!("EXT-{i}_a%"));
        }
        // Emails in the shapes IdPs send: several, typed or not, primary
        // as a boolean or as Entra's string; or none (the userName's).
        match i % 4 {
            1 => {
                user["emails"] = json!([{ "value": name, "type": "work" },
                    { "value": format!("N{i}@Home.test"), "type": "HOME", "primary": if i == 5 { json!("True") } else { json!(true) } }]);
            }
            3 => {
                user["emails"] =
                    json!([{ "value": format!("z{i}@acme.test") }, { "type": "other", "value": null }])
            }
            _ => {}
        }
        let (status, body) = scim.send(Method::POST, "/scim/v2/Users", user).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    for name in ["nomail-1", "NoMail-2"] {
        let (status, body) = scim.send(Method::POST, "/scim/v2/Users", json!({ "userName": name })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // One changes its emails: the index follows.
    let (_, zed) = scim.get("/scim/v2/Users?filter=userName%20eq%20%22zed@x.test%22").await;
    let zed = zed["Resources"][0]["id"].as_str().unwrap().to_owned();
    let moved = json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        { "op": "add", "path": "emails", "value": [{ "value": "zed@acme.test", "type": "work", "primary": true }] }] });
    server.clock.advance(chrono::Duration::minutes(5));
    assert_eq!(scim.send(Method::PATCH, &format!("/scim/v2/Users/{zed}"), moved).await.0, StatusCode::OK);
    // One is renamed and one deleted: the substring indexes follow.
    let (_, bob) = scim.get("/scim/v2/Users?filter=userName%20eq%20%22bob_1@x.test%22").await;
    let bob = bob["Resources"][0]["id"].as_str().unwrap().to_owned();
    let renamed = json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        { "op": "replace", "path": "userName", "value": "Robert_1@x.test" },
        { "op": "replace", "path": "displayName", "value": "Robert \"Bob\" One" }] });
    assert_eq!(scim.send(Method::PATCH, &format!("/scim/v2/Users/{bob}"), renamed).await.0, StatusCode::OK);
    let (_, mallory) = scim.get("/scim/v2/Users?filter=userName%20eq%20%22mallory@y.test%22").await;
    let mallory = mallory["Resources"][0]["id"].as_str().unwrap().to_owned();
    let gone = scim.call(Method::DELETE, &format!("/scim/v2/Users/{mallory}"), None).await.0;
    assert_eq!(gone, StatusCode::NO_CONTENT);
    let (_, all) = scim.get("/scim/v2/Users?count=1000").await;
    let all = all["Resources"].as_array().unwrap().clone();
    let some_id = all[3]["id"].as_str().unwrap().to_owned();
    let filters = [
        "userName co \"ALI\"".to_owned(),
        "userName sw \"bob_\"".to_owned(),
        "userName sw \"bob%\"".to_owned(),
        "userName co \"_\"".to_owned(),
        "userName co \"%\"".to_owned(),
        "userName co \"\\\\\"".to_owned(),
        "userName ew \"@X.TEST\"".to_owned(),
        "userName sw \"élodie\"".to_owned(),
        "userName gt \"m\"".to_owned(),
        "userName le \"bob%2@x.test\"".to_owned(),
        "userName ge \"z\" and userName lt \"zz\"".to_owned(),
        "userName ne \"zed@x.test\"".to_owned(),
        "externalId pr".to_owned(),
        "not (externalId pr)".to_owned(),
        "externalId eq \"ext-0_a%\"".to_owned(),
        "externalId ne \"EXT-0_a%\"".to_owned(),
        "externalId co \"_A%\"".to_owned(),
        "externalId gt \"ext-4\"".to_owned(),
        "active eq true".to_owned(),
        "active eq \"False\"".to_owned(),
        "active ne true and userName co \"o\"".to_owned(),
        "not (userName co \"x.test\") or externalId sw \"ext-2\"".to_owned(),
        format!("id eq \"{some_id}\""),
        format!("id ne \"{some_id}\" and active eq false"),
        "urn:ietf:params:scim:schemas:core:2.0:User:userName sw \"a\"".to_owned(),
        "emails[type eq \"work\" and value co \"@acme\"]".to_owned(),
        "emails[type eq \"work\"].value eq \"ALICE@X.test\"".to_owned(),
        "emails.value co \"HOME\"".to_owned(),
        "emails.value ne \"zed@acme.test\"".to_owned(),
        "emails.value gt \"m\"".to_owned(),
        "emails.type eq \"home\"".to_owned(),
        "emails[primary eq true]".to_owned(),
        "emails[primary ne \"True\"]".to_owned(),
        "emails.primary ne true".to_owned(),
        "not (emails[type eq \"home\"])".to_owned(),
        "emails[not (type eq \"work\")]".to_owned(),
        "emails[type ne \"work\" or value sw \"z\"]".to_owned(),
        "emails[value ew \".TEST\"] and active eq true".to_owned(),
        "userName sw \"a\" or emails.value co \"y.test\"".to_owned(),
        "urn:ietf:params:scim:schemas:core:2.0:User:emails[value sw \"n\"]".to_owned(),
        "displayName co \"éL\"".to_owned(),
        "userName co \"robert\"".to_owned(),
        "userName co \"bob_1\"".to_owned(),
        "userName co \"mallory\"".to_owned(),
        "emails.value co \"mallory\"".to_owned(),
        "displayName co \"\\\"bob\\\"\"".to_owned(),
        "displayName co \"ob\\\" o\"".to_owned(),
        "displayName co \"zoË\" or userName ew \"oË@X.TEST\"".to_owned(),
        "userName co \"élo\" and not (userName co \"die2\")".to_owned(),
        "externalId ew \"_A%\"".to_owned(),
        "emails.value ew \"acme.test\"".to_owned(),
        "emails[value co \"n5@h\" or value co \"z3@\"]".to_owned(),
        "userName co \"user_name : x\"".to_owned(),
        "displayName pr".to_owned(),
        "not (displayName pr)".to_owned(),
        "displayName eq \"BOB ONE\"".to_owned(),
        "displayName ne \"bob one\"".to_owned(),
        "displayName sw \"z\" or displayName ge \"m\"".to_owned(),
        "displayName lt \"bob\"".to_owned(),
        "meta.created gt \"2026-11-28T09:00:05Z\"".to_owned(),
        "meta.created ge \"2026-11-28T09:00:05Z\"".to_owned(),
        "meta.created le \"2026-11-28T10:00:05+01:00\"".to_owned(),
        "meta.created eq \"2026-11-28T09:00:05.000000Z\"".to_owned(),
        "meta.created lt \"2026-11-28T09:00:05.0004Z\"".to_owned(),
        "meta.created gt \"2026-11-28T09:00:04.9996Z\"".to_owned(),
        "meta.created ge \"2026-11-28T09:00:04.9996Z\"".to_owned(),
        "meta.created le \"2026-11-28T09:00:05.0004Z\"".to_owned(),
        "meta.created eq \"2026-11-28T09:00:05.0004Z\"".to_owned(),
        "meta.created ne \"2026-11-28T09:00:05.0004Z\"".to_owned(),
        "meta.created ne \"2026-11-28T09:00:05Z\"".to_owned(),
        "meta.lastModified gt \"2026-11-28T09:01:00Z\"".to_owned(),
        "meta.lastModified pr and not (meta.created lt \"2026-11-28T09:00:10Z\")".to_owned(),
        "urn:ietf:params:scim:schemas:core:2.0:User:meta.lastModified le \"2026-11-28T09:00:02.5Z\""
            .to_owned(),
        "displayName pr and meta.created lt \"2026-11-28T09:00:06Z\"".to_owned(),
    ];
    for filter in &filters {
        let parsed = gatehouse_scim::filter::parse(filter).unwrap();
        assert!(
            gatehouse::scim_filter_runs_in_the_database(&parsed),
            "{filter} is answered by the database, not user by user"
        );
        let mut expected: Vec<&str> =
            all.iter().filter(|r| parsed.matches(r)).map(|r| r["id"].as_str().unwrap()).collect();
        expected.sort();
        let (status, found) =
            scim.get(&format!("/scim/v2/Users?count=1000&filter={}", urlencode(filter))).await;
        assert_eq!(status, StatusCode::OK, "{filter}: {found}");
        let mut got: Vec<&str> =
            found["Resources"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
        got.sort();
        assert_eq!(got, expected, "{filter}");
        assert_eq!(found["totalResults"].as_u64(), Some(expected.len() as u64), "{filter}");
    }
    // Paged and sorted, from the database.
    let filter = urlencode("userName co \"@x.test\"");
    let (_, page) = scim
        .get(&format!(
            "/scim/v2/Users?filter={filter}&sortBy=userName&sortOrder=descending&startIndex=2&count=2"
        ))
        .await;
    let user_names: Vec<&str> =
        page["Resources"].as_array().unwrap().iter().map(|r| r["userName"].as_str().unwrap()).collect();
    // Byte order of the lower-cased names, as in memory: \"é\" sorts after \"z\".
    assert_eq!((page["totalResults"].as_u64(), user_names), (Some(9), vec!["élodie2@x.test", "Zoë@x.test"]));

    // Sorted by display name in the database as in memory: lower-cased
    // by Rust, users without one last when ascending and first when not.
    for order in ["ascending", "descending"] {
        let (_, sorted) =
            scim.get(&format!("/scim/v2/Users?count=1000&sortBy=displayName&sortOrder={order}")).await;
        let mut expected = all.clone();
        expected.sort_by(|a, b| {
            let key = |r: &Value| r["displayName"].as_str().map(str::to_lowercase);
            let by_name = match (key(a), key(b)) {
                (Some(x), Some(y)) => x.cmp(&y),
                (x, y) => x.is_none().cmp(&y.is_none()),
            };
            by_name.then_with(|| a["id"].as_str().cmp(&b["id"].as_str()))
        });
        if order == "descending" {
            expected.reverse();
        }
        let ids =
            |list: &[Value]| list.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
        assert_eq!(ids(sorted["Resources"].as_array().unwrap()), ids(&expected), "sorted {order}");
    }
    // A blank display name is no display name.
    let blank = all.iter().find(|r| r["userName"] == "alicia@x.test").unwrap();
    assert!(blank.get("displayName").is_none(), "{blank}");
}

/// RFC 7644 §3.12's `invalidVers` for another SCIM version (a path or a
/// SCIM 1.x schema) and `tooMany` for a filter the server would have to
/// match user by user over a directory past its bound.
async fn versions_and_limits_are_scim_errors(server: TestServer) {
    let scim = Scim::new(&server, "generic").await;
    for path in ["/scim/v1/Users", "/scim/V3/ServiceProviderConfig", "/scim/v1.1/Bulk"] {
        let (status, body) = scim.get(path).await;
        assert_error(status, &body, 400);
        assert_eq!(body["scimType"], "invalidVers", "{path}: {body}");
    }
    assert_eq!(scim.get("/scim/V2/Users").await.0, StatusCode::OK);
    let old = json!({ "schemas": ["urn:scim:schemas:core:1.0"], "userName": "ada@example.com" });
    let (status, body) = scim.send(Method::POST, "/scim/v2/Users", old).await;
    assert_error(status, &body, 400);
    assert_eq!(body["scimType"], "invalidVers", "{body}");
    assert_eq!(scim.get("/scim/v2/Users").await.1["totalResults"], 0, "nothing was created");

    // One past the bound, written straight to the store.
    let org: gatehouse_core::OrgId = scim.org.parse().unwrap();
    let now = server.state.clock().now();
    let seeds: Vec<_> = (0..10_001)
        .map(|i| gatehouse_store::NewUser {
            user_name: Some(format!("seed{i:05}")),
            ..gatehouse_store::NewUser::member(org, gatehouse_core::Origin::Scim)
        })
        .collect();
    for chunk in seeds.chunks(500) {
        let creates = chunk.iter().map(|new| server.state.store().create_user(new, now));
        for created in futures::future::join_all(creates).await {
            created.unwrap();
        }
    }
    let (status, body) = scim.get("/scim/v2/Users?filter=nickName%20eq%20%22ada%22").await;
    assert_error(status, &body, 400);
    assert_eq!(body["scimType"], "tooMany", "{body}");
    // What the database answers is answered at any size.
    let (status, body) = scim.get("/scim/v2/Users?filter=userName%20sw%20%22seed0999%22").await;
    assert_eq!((status, &body["totalResults"]), (StatusCode::OK, &json!(10)), "{body}");
}

/// RFC 7644 §3.5.2, one row per operation on each kind of attribute the
/// User schema has: singular strings and booleans, a complex attribute and
/// its sub-attributes, multi-valued complex attributes whole and through
/// value paths, an extension's attributes, and the read-only, required and
/// write-only ones. Each row runs on a user of its own and says what the
/// resource holds after it, or which error it is (and then nothing changed).
async fn patch_on_every_kind_of_attribute(server: TestServer) {
    let scim = Scim::new(&server, "generic").await;
    let manager = format!("{ENTERPRISE}:manager");
    let department = format!("{ENTERPRISE}:department");
    // (operation, expected: Ok(JSON pointers and what each holds, None for
    // absent) or Err((status, scimType))).
    type Expect = Result<Vec<(&'static str, Option<Value>)>, (u16, &'static str)>;
    let rows: Vec<(Value, Expect)> = vec![
        // A singular string.
        (
            json!({ "op": "add", "path": "nickName", "value": "N2" }),
            Ok(vec![("/nickName", Some(json!("N2")))]),
        ),
        (
            json!({ "op": "replace", "path": "nickName", "value": "N3" }),
            Ok(vec![("/nickName", Some(json!("N3")))]),
        ),
        (json!({ "op": "remove", "path": "nickName" }), Ok(vec![("/nickName", None)])),
        (json!({ "op": "add", "path": "title", "value": "Eng" }), Ok(vec![("/title", Some(json!("Eng")))])),
        // A boolean, also as Entra's string; `active` is required.
        (
            json!({ "op": "replace", "path": "active", "value": false }),
            Ok(vec![("/active", Some(json!(false)))]),
        ),
        (
            json!({ "op": "replace", "path": "active", "value": "False" }),
            Ok(vec![("/active", Some(json!(false)))]),
        ),
        (json!({ "op": "remove", "path": "active" }), Err((400, "mutability"))),
        // A complex attribute: a sub-attribute, and the whole. Replacing it
        // with some sub-attributes leaves the others (§3.5.2.3).
        (
            json!({ "op": "add", "path": "name.givenName", "value": "G" }),
            Ok(vec![("/name/givenName", Some(json!("G"))), ("/name/familyName", Some(json!("Inds")))]),
        ),
        (
            json!({ "op": "remove", "path": "name.familyName" }),
            Ok(vec![("/name/familyName", None), ("/name/givenName", Some(json!("Ka")))]),
        ),
        (
            json!({ "op": "replace", "path": "name", "value": { "givenName": "X" } }),
            Ok(vec![("/name/givenName", Some(json!("X"))), ("/name/familyName", Some(json!("Inds")))]),
        ),
        (json!({ "op": "remove", "path": "name" }), Ok(vec![("/name", None)])),
        // Multi-valued complex: add appends, replace replaces the whole,
        // value paths reach one entry.
        (
            json!({ "op": "add", "path": "emails", "value": [{ "value": "new@x.test", "type": "other" }] }),
            Ok(vec![
                ("/emails/2/value", Some(json!("new@x.test"))),
                ("/emails/0/value", Some(json!("kinds@x.test"))),
            ]),
        ),
        (
            json!({ "op": "replace", "path": "emails", "value": [{ "value": "only@x.test", "type": "work" }] }),
            Ok(vec![("/emails/0/value", Some(json!("only@x.test"))), ("/emails/1", None)]),
        ),
        (
            json!({ "op": "remove", "path": "emails[type eq \"home\"]" }),
            Ok(vec![("/emails/0/type", Some(json!("work"))), ("/emails/1", None)]),
        ),
        (
            json!({ "op": "replace", "path": "emails[type eq \"work\"].value", "value": "w2@x.test" }),
            Ok(vec![
                ("/emails/0/value", Some(json!("w2@x.test"))),
                ("/emails/1/value", Some(json!("k@home.test"))),
            ]),
        ),
        // Without a list of its own, a user shows its platform email as the
        // primary work address (docs/identity-providers.md).
        (
            json!({ "op": "remove", "path": "emails" }),
            Ok(vec![
                ("/emails/0", Some(json!({ "value": "kinds@x.test", "type": "work", "primary": true }))),
                ("/emails/1", None),
            ]),
        ),
        (
            json!({ "op": "remove", "path": "phoneNumbers[type eq \"mobile\"]" }),
            Ok(vec![("/phoneNumbers", None)]),
        ),
        (
            json!({ "op": "add", "path": "addresses", "value": [{ "locality": "Oslo", "type": "work" }] }),
            Ok(vec![("/addresses/0/locality", Some(json!("Oslo")))]),
        ),
        // A value path that selects nothing creates the entry it names, as
        // Entra expects (docs/identity-providers.md), where RFC 7644 would
        // answer noTarget; removing through one removes nothing.
        (
            json!({ "op": "replace", "path": "emails[type eq \"pager\"].value", "value": "p@x.test" }),
            Ok(vec![("/emails/2", Some(json!({ "type": "pager", "value": "p@x.test" })))]),
        ),
        (
            json!({ "op": "remove", "path": "emails[type eq \"pager\"]" }),
            Ok(vec![("/emails/1/type", Some(json!("home"))), ("/emails/2", None)]),
        ),
        // An extension: an attribute, a complex one, the whole.
        (
            json!({ "op": "replace", "path": department, "value": "Ops" }),
            Ok(vec![
                (
                    "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/department",
                    Some(json!("Ops")),
                ),
                (
                    "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/manager/value",
                    Some(json!("mgr-1")),
                ),
            ]),
        ),
        (
            json!({ "op": "replace", "path": manager, "value": { "value": "mgr-2" } }),
            Ok(vec![(
                "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/manager/value",
                Some(json!("mgr-2")),
            )]),
        ),
        (
            json!({ "op": "remove", "path": manager }),
            Ok(vec![
                ("/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/manager", None),
                (
                    "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/department",
                    Some(json!("R&D")),
                ),
            ]),
        ),
        (
            json!({ "op": "remove", "path": ENTERPRISE }),
            Ok(vec![("/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", None)]),
        ),
        // Without a path, the value's attributes are merged in.
        (
            json!({ "op": "add", "value": { "nickName": "P", "name.givenName": "Q" } }),
            Ok(vec![("/nickName", Some(json!("P"))), ("/name/givenName", Some(json!("Q")))]),
        ),
        (json!({ "op": "remove" }), Err((400, "noTarget"))),
        // Read-only, required, write-only.
        (json!({ "op": "replace", "path": "id", "value": "mine" }), Err((400, "mutability"))),
        (json!({ "op": "add", "path": "groups", "value": [{ "value": "g" }] }), Err((400, "mutability"))),
        (json!({ "op": "remove", "path": "userName" }), Err((400, "mutability"))),
        (
            json!({ "op": "replace", "path": "userName", "value": "Renamed@x.test" }),
            Ok(vec![("/userName", Some(json!("Renamed@x.test")))]),
        ),
        (
            json!({ "op": "replace", "path": "password", "value": "Secret-123!" }),
            Ok(vec![("/password", None)]),
        ),
        // Not a path, not an operation.
        (json!({ "op": "replace", "path": "emails[type eq]", "value": "x" }), Err((400, "invalidPath"))),
        (json!({ "op": "move", "path": "nickName", "value": "x" }), Err((400, "invalidSyntax"))),
    ];
    for (i, (op, expected)) in rows.into_iter().enumerate() {
        let user_name = format!("kinds{i}@x.test");
        let (status, created) = scim
            .send(
                Method::POST,
                "/scim/v2/Users",
                json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
                    "userName": user_name, "displayName": "Kinds", "nickName": "K", "active": true,
                    "name": { "givenName": "Ka", "familyName": "Inds" },
                    "emails": [{ "value": user_name, "type": "work", "primary": true },
                               { "value": "k@home.test", "type": "home" }],
                    "phoneNumbers": [{ "value": "+1 555 0100", "type": "mobile" }],
                    ENTERPRISE: { "department": "R&D", "manager": { "value": "mgr-1" } },
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let path = format!("/scim/v2/Users/{}", created["id"].as_str().unwrap());
        let (status, body) = scim.send(Method::PATCH, &path, patch_ops(json!([op.clone()]))).await;
        let (_, after) = scim.get(&path).await;
        match expected {
            Ok(checks) => {
                assert_eq!(status, StatusCode::OK, "{op}: {body}");
                assert_eq!(body, after, "{op}: the PATCH answers with what is stored");
                for (pointer, value) in checks {
                    // The userName and the work email are each row's own.
                    let value = value.map(|v| {
                        serde_json::from_str::<Value>(&v.to_string().replace("kinds@x.test", &user_name))
                            .unwrap()
                    });
                    assert_eq!(after.pointer(pointer).cloned(), value, "{op}: {pointer} in {after}");
                }
            }
            Err((code, kind)) => {
                assert_error(status, &body, code);
                assert_eq!(body["scimType"], kind, "{op}: {body}");
                let unchanged = |r: &Value| {
                    let mut r = r.clone();
                    r.as_object_mut().unwrap().remove("meta");
                    r
                };
                assert_eq!(unchanged(&after), unchanged(&created), "{op} changed nothing");
            }
        }
    }
}

/// A NUL character, which no stored text can hold (PostgreSQL's refuses
/// it), is a client's error wherever a SCIM request carries one: in a
/// filter (query string or search body) and in a resource's values.
async fn nul_characters_are_refused_not_failed_on(server: TestServer) {
    let scim = Scim::new(&server, "generic").await;
    let (status, body) = scim.send(Method::POST, "/scim/v2/Users", json!({ "userName": "ada@x.test" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for filter in
        ["userName%20eq%20%22a%00b%22", "userName%20co%20%22ada%00%22", "emails.value%20co%20%22x%00yz%22"]
    {
        let (status, body) = scim.get(&format!("/scim/v2/Users?filter={filter}")).await;
        assert_error(status, &body, 400);
        assert_eq!(body["scimType"], "invalidFilter", "{filter}: {body}");
    }
    let search = json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "userName co \"a\u{0}da\"" });
    let (status, body) = scim.send(Method::POST, "/scim/v2/Users/.search", search).await;
    assert_error(status, &body, 400);
    // Refused as a value of the body, before it is read as a filter.
    assert_eq!(body["scimType"], "invalidValue", "{body}");
    for user in [
        json!({ "userName": "nul\u{0}@x.test" }),
        json!({ "userName": "nul@x.test", "displayName": "N\u{0}" }),
        json!({ "userName": "nul@x.test", "emails": [{ "value": "nul\u{0}@x.test", "type": "work" }] }),
        json!({ "userName": "nul@x.test", "externalId": "\u{0}" }),
    ] {
        let (status, body) = scim.send(Method::POST, "/scim/v2/Users", user.clone()).await;
        assert_error(status, &body, 400);
        assert!(body["scimType"] == "invalidValue" || body["scimType"] == "invalidSyntax", "{user}: {body}");
    }
    let (_, list) = scim.get("/scim/v2/Users").await;
    assert_eq!(list["totalResults"], 1, "nothing was stored");
}

/// RFC 7644 §3.4.2.2, one row per operator on each kind of attribute: a
/// string (case-insensitive), the case-exact id, a boolean, a dateTime, a
/// complex attribute's sub-attribute, a multi-valued attribute's
/// sub-attributes and value paths, an extension's attribute, and a string
/// the database does not hold as a column; then the logical operators.
/// Each row names the users it finds, or the error it is.
async fn filter_operators_on_every_kind_of_attribute(server: TestServer) {
    let scim = Scim::new(&server, "generic").await;
    let mut ids = Vec::new();
    for user in [
        json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
            "userName": "ann@x.test", "active": true, "title": "Eng", "name": { "givenName": "Ann" },
            ENTERPRISE: { "department": "R&D" } }),
        json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
            "userName": "bob@y.test", "active": false, "title": "Ops", "name": { "givenName": "Bob" },
            "emails": [{ "value": "bob@y.test", "type": "work", "primary": true },
                       { "value": "b@home.test", "type": "home", "primary": false }],
            ENTERPRISE: { "department": "Ops" } }),
        json!({ "userName": "cy@x.test", "active": true }),
    ] {
        let (status, created) = scim.send(Method::POST, "/scim/v2/Users", user).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let department = format!("{ENTERPRISE}:department");
    let rows: Vec<(String, Result<&[&str], &str>)> = vec![
        // A string, compared without case.
        ("userName eq \"ANN@X.TEST\"".into(), Ok(&["ann"])),
        ("userName ne \"ann@x.test\"".into(), Ok(&["bob", "cy"])),
        ("userName co \"@X.\"".into(), Ok(&["ann", "cy"])),
        ("userName sw \"B\"".into(), Ok(&["bob"])),
        ("userName ew \".TEST\"".into(), Ok(&["ann", "bob", "cy"])),
        ("userName gt \"b\"".into(), Ok(&["bob", "cy"])),
        ("userName ge \"bob@y.test\"".into(), Ok(&["bob", "cy"])),
        ("userName lt \"bob\"".into(), Ok(&["ann"])),
        ("userName le \"ann@x.test\"".into(), Ok(&["ann"])),
        ("userName pr".into(), Ok(&["ann", "bob", "cy"])),
        // The id is case-exact.
        (format!("id eq \"{}\"", ids[0]), Ok(&["ann"])),
        (format!("id eq \"{}\"", ids[0].to_uppercase()), Ok(&[])),
        // A boolean: equal or not, never ordered.
        ("active eq true".into(), Ok(&["ann", "cy"])),
        ("active ne true".into(), Ok(&["bob"])),
        ("active pr".into(), Ok(&["ann", "bob", "cy"])),
        ("active gt false".into(), Err("invalidFilter")),
        ("active le true".into(), Err("invalidFilter")),
        // A dateTime, compared in time, and only with a dateTime.
        ("meta.created gt \"2000-01-01T00:00:00Z\"".into(), Ok(&["ann", "bob", "cy"])),
        ("meta.lastModified lt \"2000-01-01T00:00:00+01:00\"".into(), Ok(&[])),
        ("meta.created ge \"yesterday\"".into(), Err("invalidFilter")),
        // A complex attribute's sub-attribute.
        ("name.givenName sw \"a\"".into(), Ok(&["ann"])),
        ("name.givenName pr".into(), Ok(&["ann", "bob"])),
        ("not (name pr)".into(), Ok(&["cy"])),
        // A multi-valued attribute: any entry; the platform email stands in
        // for a user without a list (cy).
        ("emails.value co \"HOME\"".into(), Ok(&["bob"])),
        ("emails co \"@x.test\"".into(), Ok(&["ann", "cy"])),
        ("emails.primary eq false".into(), Ok(&["bob"])),
        ("emails[type eq \"work\" and primary eq true]".into(), Ok(&["ann", "bob", "cy"])),
        ("emails[type eq \"home\"].value ew \"home.test\"".into(), Ok(&["bob"])),
        ("emails.primary ge true".into(), Err("invalidFilter")),
        ("emails[primary lt true]".into(), Err("invalidFilter")),
        // An extension's attribute, by its full name.
        (format!("{department} eq \"r&d\""), Ok(&["ann"])),
        (format!("{department} pr"), Ok(&["ann", "bob"])),
        // A string that is not a column: matched on each user.
        ("title co \"N\"".into(), Ok(&["ann"])),
        ("title gt \"f\"".into(), Ok(&["bob"])),
        ("not (title pr)".into(), Ok(&["cy"])),
        // Logic, and what is not a filter.
        ("title pr and active eq false".into(), Ok(&["bob"])),
        ("userName sw \"a\" or (userName sw \"c\" and not (active eq false))".into(), Ok(&["ann", "cy"])),
        ("userName zz \"a\"".into(), Err("invalidFilter")),
        ("userName eq".into(), Err("invalidFilter")),
        ("(userName pr".into(), Err("invalidFilter")),
    ];
    for (filter, expected) in rows {
        let (status, body) = scim.get(&format!("/scim/v2/Users?filter={}", urlencode(&filter))).await;
        match expected {
            Ok(names) => {
                assert_eq!(status, StatusCode::OK, "{filter}: {body}");
                let mut found: Vec<String> = body["Resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["userName"].as_str().unwrap().split('@').next().unwrap().to_owned())
                    .collect();
                found.sort();
                assert_eq!(found, names, "{filter}");
                assert_eq!(body["totalResults"], names.len(), "{filter}");
            }
            Err(kind) => {
                assert_error(status, &body, 400);
                assert_eq!(body["scimType"], kind, "{filter}: {body}");
            }
        }
    }
}
