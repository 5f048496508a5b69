//! External REST authentication against a real recording service on loopback.

use std::time::Duration;

use gatehouse_testkit::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::stub::{Recorded, Stub};
use crate::support::TestServer;

/// Values that try every way of breaking out of where they are placed.
const HOSTILE_PASSWORD: &str = "p\"a'ss\\w<o>r&d]]>%41+=&?#/ {{USEREMAIL}} é😀";
const HOSTILE_EXTERNAL_ID: &str = "ext\"<&>'%2F+ {{USERPASSWORD}}";
const HOSTILE_DEVICE: &str = "Bob's \"phone\" <&> 100% + = ü";

async fn server_allowing_loopback() -> TestServer {
    TestServer::start(TestDb::sqlite(), |s| s.allow_private_targets = true).await
}

async fn configure(server: &TestServer, org: &str, config: Value) -> (StatusCode, Value) {
    server.admin(Method::PUT, &format!("/admin/v1/orgs/{org}/external-auth/rest"), Some(config)).await
}

async fn org_with_user(server: &TestServer, external_id: Option<&str>) -> (String, Value) {
    let org = server.create_org("Acme").await;
    let mut body = json!({ "email": "bob@example.com", "display_name": "Bob" });
    if let Some(e) = external_id {
        body["external_id"] = json!(e);
    }
    let (status, user) = server.admin(Method::POST, &format!("/admin/v1/orgs/{org}/users"), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    (org, user)
}

/// The organization's sign-in audit events, newest first.
async fn login_events(server: &TestServer, org: &str) -> Vec<Value> {
    let (_, events) =
        server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/audit-events?limit=200"), None).await;
    events["items"].as_array().unwrap().iter().filter(|e| e["kind"] == "login").cloned().collect()
}

async fn login_with(server: &TestServer, password: &str) -> (StatusCode, Value) {
    server
        .post("/v1/login", json!({ "email": "bob@example.com", "password": password, "device": { "os": "Android 15", "name": HOSTILE_DEVICE } }))
        .await
}

fn body_for(data_as: &str) -> &'static str {
    match data_as {
        "json" => {
            r#"{"email":"{{USEREMAIL}}","password":"{{USERPASSWORD}}","id":"{{USERID}}","ext":"{{USEREXTERNALID}}","org":"{{ORGID}}","os":"{{DEVICEOS}}","device":"{{DEVICENAME}}","ip":"{{DEVICEIP}}"}"#
        }
        "url_encoded" => {
            "email={{USEREMAIL}}&password={{USERPASSWORD}}&id={{USERID}}&ext={{USEREXTERNALID}}&org={{ORGID}}&os={{DEVICEOS}}&device={{DEVICENAME}}&ip={{DEVICEIP}}"
        }
        "xml" => {
            r#"<?xml version="1.0" encoding="UTF-8"?><login email="{{USEREMAIL}}"><password>{{USERPASSWORD}}</password><id>{{USERID}}</id><ext>{{USEREXTERNALID}}</ext><org>{{ORGID}}</org><os>{{DEVICEOS}}</os><device name="{{DEVICENAME}}"/><ip>{{DEVICEIP}}</ip></login>"#
        }
        _ => unreachable!(),
    }
}

/// The fields of a recorded body, decoded the way the service would.
fn decoded_body(data_as: &str, r: &Recorded) -> Vec<(String, String)> {
    match data_as {
        "json" => {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            v.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())).collect()
        }
        "url_encoded" => {
            url::form_urlencoded::parse(&r.body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
        }
        "xml" => {
            use quick_xml::events::Event;
            let mut reader = quick_xml::Reader::from_reader(&r.body[..]);
            // Text arrives split at entity references; gather the raw text of
            // an element, then unescape it as a whole.
            let (mut out, mut current, mut raw) = (Vec::new(), None::<String>, String::new());
            loop {
                match reader.read_event().unwrap() {
                    Event::Start(e) | Event::Empty(e) => {
                        let tag = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                        for a in e.attributes() {
                            let a = a.unwrap();
                            let key = if tag == "login" { "email".to_owned() } else { "device".to_owned() };
                            out.push((
                                key,
                                a.normalized_value(quick_xml::XmlVersion::Implicit1_0).unwrap().into_owned(),
                            ));
                        }
                        current = Some(tag);
                        raw.clear();
                    }
                    Event::Text(t) => raw.push_str(&t.decode().unwrap()),
                    Event::GeneralRef(r) => raw.push_str(&format!("&{};", r.decode().unwrap())),
                    Event::End(_) => {
                        if let Some(tag) = current.take() {
                            out.push((tag, quick_xml::escape::unescape(&raw).unwrap().into_owned()));
                        }
                    }
                    Event::Eof => break,
                    _ => {}
                }
            }
            out
        }
        _ => unreachable!(),
    }
}

fn field(fields: &[(String, String)], name: &str) -> String {
    let found: Vec<_> = fields.iter().filter(|(k, _)| k == name).collect();
    assert_eq!(found.len(), 1, "{name} should appear once, structure intact: {fields:?}");
    found[0].1.clone()
}

#[tokio::test]
async fn every_action_and_format_delivers_values_byte_exact() {
    let server = server_allowing_loopback().await;
    let stub = Stub::start().await;
    let (org, user) = org_with_user(&server, Some(HOSTILE_EXTERNAL_ID)).await;
    let user_id = user["id"].as_str().unwrap().to_owned();
    let expected = [
        ("email", "bob@example.com"),
        ("password", HOSTILE_PASSWORD),
        ("id", user_id.as_str()),
        ("ext", HOSTILE_EXTERNAL_ID),
        ("org", org.as_str()),
        ("os", "Android 15"),
        ("device", HOSTILE_DEVICE),
        ("ip", "127.0.0.1"),
    ];
    for action in ["POST", "PUT", "GET"] {
        for data_as in ["json", "url_encoded", "xml"] {
            let config = json!({
                "authentication_url": format!("{}/auth/{{{{ORGID}}}}/{{{{USEREXTERNALID}}}}?email={{{{USEREMAIL}}}}&password={{{{USERPASSWORD}}}}&device={{{{DEVICENAME}}}}&ip={{{{DEVICEIP}}}}&os={{{{DEVICEOS}}}}&id={{{{USERID}}}}&org={{{{ORGID}}}}&ext={{{{USEREXTERNALID}}}}", stub.base),
                "http_action": action,
                "data_as": data_as,
                "headers": [
                    { "name": "X-Email", "value": "{{USEREMAIL}}" },
                    { "name": "X-Password", "value": "pw={{USERPASSWORD}}" },
                    { "name": "X-External", "value": "{{USEREXTERNALID}}" },
                    { "name": "X-Device", "value": "{{DEVICENAME}} on {{DEVICEOS}} at {{DEVICEIP}}" },
                    { "name": "X-Ids", "value": "{{USERID}}/{{ORGID}}" },
                ],
                "body": body_for(data_as),
            });
            let (status, saved) = configure(&server, &org, config.clone()).await;
            assert_eq!(status, StatusCode::OK, "{action} {data_as}: {saved}");

            let (status, tokens) = login_with(&server, HOSTILE_PASSWORD).await;
            assert_eq!(status, StatusCode::OK, "{action} {data_as}: {tokens}");
            let claims =
                jsonwebtoken::dangerous::insecure_decode::<Value>(tokens["access_token"].as_str().unwrap())
                    .unwrap()
                    .claims;
            assert_eq!(claims["auth_method"], "external_rest");

            let r = stub.single();
            let what = format!("{action} {data_as}");
            assert_eq!(r.method.as_str(), action, "{what}");
            // URL: path segments and query values arrive decoded exactly.
            let segments: Vec<_> = r.uri.path().split('/').collect();
            assert_eq!(segments.len(), 4, "{what}: values added path segments: {}", r.uri);
            assert_eq!(segments[2], org);
            assert_eq!(
                percent_encoding::percent_decode_str(segments[3]).decode_utf8().unwrap(),
                HOSTILE_EXTERNAL_ID
            );
            for (name, value) in &expected {
                assert_eq!(r.query(name).as_deref(), Some(*value), "{what}: query {name}");
            }
            let query_keys: Vec<_> = url::form_urlencoded::parse(r.uri.query().unwrap().as_bytes())
                .map(|(k, _)| k.into_owned())
                .collect();
            assert_eq!(query_keys.len(), 8, "{what}: values added query parameters: {query_keys:?}");
            // Headers arrive as written.
            assert_eq!(r.header("x-email").as_deref(), Some("bob@example.com"));
            assert_eq!(r.header("x-password"), Some(format!("pw={HOSTILE_PASSWORD}")));
            assert_eq!(r.header("x-external").as_deref(), Some(HOSTILE_EXTERNAL_ID));
            assert_eq!(r.header("x-device"), Some(format!("{HOSTILE_DEVICE} on Android 15 at 127.0.0.1")));
            assert_eq!(r.header("x-ids"), Some(format!("{user_id}/{org}")));
            assert!(r.header("authorization").is_none());
            // Body: valid in its format, each value exactly once and exact.
            if action == "GET" {
                assert!(r.body.is_empty(), "{what}: GET carries no body");
                assert!(r.header("content-type").is_none());
            } else {
                let ct = r.header("content-type").unwrap();
                let expected_ct = match data_as {
                    "json" => "application/json",
                    "url_encoded" => "application/x-www-form-urlencoded",
                    _ => "application/xml; charset=utf-8",
                };
                assert_eq!(ct, expected_ct, "{what}");
                let fields = decoded_body(data_as, &r);
                assert_eq!(fields.len(), expected.len(), "{what}: {fields:?}");
                for (name, value) in &expected {
                    assert_eq!(field(&fields, name), *value, "{what}: body {name}");
                }
            }
        }
    }
}

#[tokio::test]
async fn basic_auth_is_built_from_email_and_password() {
    let server = server_allowing_loopback().await;
    let stub = Stub::start().await;
    let (org, _) = org_with_user(&server, None).await;
    let (status, body) = configure(
        &server,
        &org,
        json!({ "authentication_url": format!("{}/basic", stub.base), "http_action": "POST", "data_as": "json", "http_auth_type": "basic" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let password = "with:colon and ünïcode";
    assert_eq!(login_with(&server, password).await.0, StatusCode::OK);
    let r = stub.single();
    let auth = r.header("authorization").unwrap();
    let decoded = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        auth.strip_prefix("Basic ").unwrap(),
    )
    .unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), format!("bob@example.com:{password}"));
    assert!(r.body.is_empty(), "no body template, no body");

    // An Authorization header of one's own conflicts with basic.
    let (status, err) = configure(
        &server,
        &org,
        json!({ "authentication_url": format!("{}/basic", stub.base), "http_action": "POST", "data_as": "json", "http_auth_type": "basic",
                "headers": [{ "name": "Authorization", "value": "Bearer x" }] }),
    )
    .await;
    assert_eq!((status, err["field"].as_str()), (StatusCode::BAD_REQUEST, Some("headers[0].name")));
}

#[tokio::test]
async fn only_exactly_200_signs_in() {
    // Fourteen refusals in a row would lock the account (see
    // `a_locked_account_is_refused_before_its_service_is_called`).
    let server = TestServer::start(TestDb::sqlite(), |s| {
        s.allow_private_targets = true;
        s.rate_limits.login_account = None;
    })
    .await;
    let stub = Stub::start().await;
    let (org, _) = org_with_user(&server, None).await;
    configure(&server, &org, json!({ "authentication_url": format!("{}/s", stub.base), "http_action": "POST", "data_as": "json", "body": "{\"p\":\"{{USERPASSWORD}}\"}" })).await;
    for code in [201, 202, 204, 301, 302, 307, 400, 401, 403, 404, 429, 500, 502, 503] {
        stub.respond_with(code);
        let (status, body) = login_with(&server, "pw").await;
        assert_eq!(
            (status, body.clone()),
            (StatusCode::UNAUTHORIZED, json!({ "error": "invalid_credentials" })),
            "upstream {code}"
        );
        let requests = stub.take();
        assert_eq!(requests.len(), 1, "upstream {code}: a redirect was followed: {requests:?}");
    }
    stub.respond_with(200);
    assert_eq!(login_with(&server, "pw").await.0, StatusCode::OK);

    let e = login_events(&server, &org).await;
    assert_eq!((e[0]["outcome"].as_str(), e[0]["method"].as_str()), (Some("success"), Some("external_rest")));
    assert_eq!(e[1]["detail"], json!({ "reason": "upstream_refused", "upstream_status": 503 }));
    assert_eq!(e[2]["detail"]["upstream_status"], 502);
    assert_eq!(e[1]["device_os"], "Android 15");
    assert_eq!(e[1]["device_name"], HOSTILE_DEVICE);
}

#[tokio::test]
async fn no_answer_is_unavailable_not_a_wrong_password() {
    let server = server_allowing_loopback().await;
    let stub = Stub::start().await;
    let (org, _) = org_with_user(&server, None).await;

    configure(&server, &org, json!({ "authentication_url": format!("{}/slow", stub.base), "http_action": "GET", "data_as": "json", "timeout_ms": 300 })).await;
    stub.delay(Duration::from_secs(3));
    let started = std::time::Instant::now();
    let (status, body) = login_with(&server, "pw").await;
    assert_eq!(
        (status, body),
        (StatusCode::SERVICE_UNAVAILABLE, json!({ "error": "external_auth_unavailable" }))
    );
    assert!(started.elapsed() < Duration::from_secs(3), "the timeout was not applied");

    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    configure(&server, &org, json!({ "authentication_url": format!("http://{closed}/x"), "http_action": "GET", "data_as": "json" })).await;
    let (status, body) = login_with(&server, "pw").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("external_auth_unavailable"))
    );

    let events = login_events(&server, &org).await;
    assert_eq!(events[0]["detail"], json!({ "reason": "upstream_unavailable", "error": "connect_failed" }));
    assert_eq!(events[1]["detail"], json!({ "reason": "upstream_unavailable", "error": "timeout" }));
    assert_eq!(events[0]["outcome"], "unavailable");
}

#[tokio::test]
async fn internal_targets_are_refused_unless_allowed() {
    let server = TestServer::sqlite().await; // GATEHOUSE_ALLOW_PRIVATE_TARGETS unset
    let stub = Stub::start().await;
    let (org, _) = org_with_user(&server, None).await;
    for url in [
        format!("{}/x", stub.base),
        stub.base.replace("127.0.0.1", "localhost") + "/x",
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[::1]:9/x".to_owned(),
    ] {
        let (status, _) = configure(
            &server,
            &org,
            json!({ "authentication_url": url, "http_action": "GET", "data_as": "json", "timeout_ms": 2000,
                "allow_insecure_http": true }),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = login_with(&server, "pw").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("external_auth_unavailable")),
            "{url}"
        );
        assert_eq!(login_events(&server, &org).await[0]["detail"]["error"], "blocked_target", "{url}");
    }
    assert!(stub.requests().is_empty(), "a blocked target was called");
}

#[tokio::test]
async fn unknown_and_inactive_users_are_never_forwarded() {
    let server = server_allowing_loopback().await;
    let stub = Stub::start().await;
    let (org, user) = org_with_user(&server, None).await;
    configure(&server, &org, json!({ "authentication_url": format!("{}/x", stub.base), "http_action": "POST", "data_as": "json", "body": "{\"p\":\"{{USERPASSWORD}}\"}" })).await;
    let (status, _) =
        server.post("/v1/login", json!({ "email": "stranger@example.com", "password": "pw" })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let path = format!("/admin/v1/orgs/{org}/users/{}", user["id"].as_str().unwrap());
    server.admin(Method::PATCH, &path, Some(json!({ "active": false }))).await;
    assert_eq!(login_with(&server, "pw").await.0, StatusCode::UNAUTHORIZED);
    assert!(stub.requests().is_empty(), "{:?}", stub.requests());
    // Forgot Password likewise: same 202, nothing sent.
    for email in ["stranger@example.com", "bob@example.com"] {
        let (status, body) = server.post("/v1/password/forgot", json!({ "email": email })).await;
        assert_eq!((status, body), (StatusCode::ACCEPTED, json!({ "status": "accepted" })));
    }
    assert!(stub.requests().is_empty());
}

#[tokio::test]
async fn a_line_break_bound_for_a_header_fails_closed() {
    let server = server_allowing_loopback().await;
    let stub = Stub::start().await;
    let (org, _) = org_with_user(&server, None).await;
    configure(
        &server,
        &org,
        json!({ "authentication_url": format!("{}/x", stub.base), "http_action": "POST", "data_as": "json",
        "headers": [{ "name": "X-Password", "value": "{{USERPASSWORD}}" }] }),
    )
    .await;
    for password in ["a\r\nX-Injected: yes", "a\nb", "a\rb", "a\u{0}b"] {
        let (status, body) = login_with(&server, password).await;
        assert_eq!(
            (status, body),
            (StatusCode::UNAUTHORIZED, json!({ "error": "invalid_credentials" })),
            "{password:?}"
        );
    }
    assert!(stub.requests().is_empty(), "sent anyway: {:?}", stub.requests());

    // In a body the same password is just data, and arrives intact.
    configure(
        &server,
        &org,
        json!({ "authentication_url": format!("{}/x", stub.base), "http_action": "POST", "data_as": "json",
        "body": "{\"p\":\"{{USERPASSWORD}}\"}" }),
    )
    .await;
    assert_eq!(login_with(&server, "a\r\nX-Injected: yes").await.0, StatusCode::OK);
    let r = stub.single();
    assert_eq!(serde_json::from_slice::<Value>(&r.body).unwrap()["p"], "a\r\nX-Injected: yes");
    assert!(r.header("x-injected").is_none());
}

/// Issue 13, hole 1, as reproduced: with the URL `…/login/{{DEVICENAME}}`
/// and a device named `..`, the request went to `/`, and anything answering
/// 200 there signed the caller in without the password.
#[tokio::test]
async fn a_value_cannot_move_the_request_to_another_path() {
    let server = server_allowing_loopback().await;
    let stub = Stub::start().await; // answers 200 on every path
    let (org, _) = org_with_user(&server, None).await;
    let (status, body) = configure(&server, &org, json!({
        "authentication_url": format!("{}/login/{{{{DEVICENAME}}}}", stub.base), "http_action": "GET", "data_as": "json",
        "forgot_password_url": format!("{}/reset/{{{{DEVICEOS}}}}/{{{{DEVICENAME}}}}", stub.base),
    }))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for name in ["..", ".", "%2e%2e", ".%2E", "..%2F..", "..\\.."] {
        let device = json!({ "os": "..", "name": name });
        let (status, body) = server
            .post("/v1/login", json!({ "email": "bob@example.com", "password": "wrong", "device": device }))
            .await;
        let sent = stub.take();
        assert!(
            sent.iter().all(|r| r.uri.path().starts_with("/login/") && r.uri.path().len() > "/login/".len()),
            "{name:?} moved the request: {sent:?}"
        );
        if sent.is_empty() {
            assert_eq!((status, body), (StatusCode::UNAUTHORIZED, json!({ "error": "invalid_credentials" })));
        }
        server.post("/v1/password/forgot", json!({ "email": "bob@example.com", "device": device })).await;
        let sent = stub.take();
        assert!(sent.iter().all(|r| r.uri.path().starts_with("/reset/")), "{name:?}: {sent:?}");
    }
    // The values that are dot segments (to the URL parser, or to a server
    // that reads `\` as `/`) were never sent, and the audit trail says why.
    let events = login_events(&server, &org).await;
    let mut unsafe_ones: Vec<&str> = events
        .iter()
        .filter(|e| e["detail"]["reason"] == "unsafe_request")
        .map(|e| e["device_name"].as_str().unwrap())
        .collect();
    unsafe_ones.sort();
    assert_eq!(unsafe_ones, [".", "..", "..\\.."], "{events:#?}");
    // A URL whose own text holds a dot segment is refused when saved.
    let (status, body) = configure(&server, &org, json!({
        "authentication_url": format!("{}/a/../{{{{USEREMAIL}}}}", stub.base), "http_action": "GET", "data_as": "json",
    }))
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("authentication_url")),
        "{body}"
    );
}

#[tokio::test]
async fn external_auth_replaces_local_passwords() {
    let server = server_allowing_loopback().await;
    let stub = Stub::start().await;
    let org = server.create_org("Acme").await;
    let user = server.create_user(&org, "bob@example.com", Some("local password")).await;
    assert_eq!(user["has_password"], true);
    let users = format!("/admin/v1/orgs/{org}/users");
    let path = format!("{users}/{}", user["id"].as_str().unwrap());

    let rest = json!({ "authentication_url": format!("{}/x", stub.base), "http_action": "POST", "data_as": "json", "body": "{\"p\":\"{{USERPASSWORD}}\"}" });
    assert_eq!(configure(&server, &org, rest.clone()).await.0, StatusCode::OK);
    let (_, user) = server.admin(Method::GET, &path, None).await;
    assert_eq!(user["has_password"], false, "local hash erased when external auth is enabled");

    // No local password can be set while it is on.
    let (status, body) =
        server.admin(Method::PATCH, &path, Some(json!({ "password": "another local one" }))).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    let (status, _) = server
        .admin(
            Method::POST,
            &users,
            Some(json!({ "email": "new@example.com", "password": "a local password" })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, listed) = server.admin(Method::GET, &users, None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "the refused user was not created");
    let (status, _) = server.admin(Method::POST, &users, Some(json!({ "email": "new@example.com" }))).await;
    assert_eq!(status, StatusCode::CREATED, "users without a password are fine");

    // The service decides now; the old local password means nothing.
    stub.respond_with(401);
    assert_eq!(server.login("bob@example.com", "local password").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(stub.take().len(), 1);

    // Turned off: back to local passwords, of which there are none.
    let rest_path = format!("/admin/v1/orgs/{org}/external-auth/rest");
    assert_eq!(server.admin(Method::DELETE, &rest_path, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(server.admin(Method::GET, &rest_path, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(server.admin(Method::DELETE, &rest_path, None).await.0, StatusCode::NOT_FOUND);
    stub.respond_with(200);
    assert_eq!(server.login("bob@example.com", "local password").await.0, StatusCode::UNAUTHORIZED);
    assert!(stub.requests().is_empty());
    let (status, _) =
        server.admin(Method::PATCH, &path, Some(json!({ "password": "a fresh local one" }))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.login("bob@example.com", "a fresh local one").await.0, StatusCode::OK);
}

#[tokio::test]
async fn configuration_is_validated_and_returned_as_written() {
    let server = server_allowing_loopback().await;
    let org = server.create_org("Acme").await;
    let rest_path = format!("/admin/v1/orgs/{org}/external-auth/rest");
    let good = json!({
        "authentication_url": "https://auth.example.com/login",
        "http_action": "POST",
        "data_as": "json",
        "headers": [{ "name": "X-Api-Key", "value": "static-secret-key" }],
        "body": "{\"u\":\"{{USEREMAIL}}\",\"p\":\"{{USERPASSWORD}}\"}",
        "forgot_password_url": "https://auth.example.com/forgot?u={{USEREMAIL}}",
    });
    let bad = |patch: Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    for (config, field) in [
        (bad(json!({ "authentication_url": "ftp://auth.example.com/" })), "authentication_url"),
        (bad(json!({ "authentication_url": "https://auth.example.com/{{PASSWORD}}" })), "authentication_url"),
        (
            bad(json!({ "forgot_password_url": "https://auth.example.com/f?p={{USERPASSWORD}}" })),
            "forgot_password_url",
        ),
        (bad(json!({ "headers": [{ "name": "X Bad", "value": "v" }] })), "headers[0].name"),
        (bad(json!({ "body": "{\"u\": {{USEREMAIL}} }" })), "body"),
        (bad(json!({ "body": "{\"u\":\"{{USEREMAIL}}\"" })), "body"),
        (bad(json!({ "data_as": "xml", "body": "<a>{{USEREMAIL}}</b>" })), "body"),
        (bad(json!({ "data_as": "url_encoded", "body": "u={{USEREMAIL}}&p w={{USERPASSWORD}}" })), "body"),
        (bad(json!({ "http_action": "DELETE" })), "http_action"),
        (bad(json!({ "data_as": "yaml" })), "data_as"),
        (bad(json!({ "timeout_ms": 0 })), "timeout_ms"),
        (bad(json!({ "surprise": true })), "surprise"),
    ] {
        let (status, err) = configure(&server, &org, config.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{config}");
        assert_eq!(err["field"], field, "{config}: {err}");
    }
    assert_eq!(
        server.admin(Method::GET, &rest_path, None).await.0,
        StatusCode::NOT_FOUND,
        "nothing was saved"
    );

    let (status, saved) = configure(&server, &org, good.clone()).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    let (status, got) = server.admin(Method::GET, &rest_path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, saved);
    for (k, v) in good.as_object().unwrap().iter().filter(|(k, _)| *k != "headers") {
        assert_eq!(&got[k], v, "{k} returned as written");
    }
    // Header values are write-only: the names come back, the values never.
    assert_eq!(got["headers"], json!([{ "name": "X-Api-Key" }]));
    assert!(
        !got.to_string().contains("static-secret-key") && !saved.to_string().contains("static-secret-key")
    );
    assert_eq!((got["timeout_ms"].as_u64(), got["http_auth_type"].as_str()), (Some(10_000), Some("none")));
    assert_eq!(got["allow_insecure_http"], false);

    // A header secret is sealed in the database, not stored in clear.
    let pool = sqlx::SqlitePool::connect(server.db.url()).await.unwrap();
    let (sealed,): (String,) =
        sqlx::query_as("SELECT config_sealed FROM rest_auth_configs").fetch_one(&pool).await.unwrap();
    assert!(!sealed.contains("static-secret-key") && !sealed.contains("auth.example.com"));
    pool.close().await;

    let unknown = "/admin/v1/orgs/01a2221d-50f7-7697-ad4d-23a24da039c7/external-auth/rest";
    assert_eq!(server.admin(Method::PUT, unknown, Some(good)).await.0, StatusCode::NOT_FOUND);
}

/// A configuration sent back as it was shown keeps its header values; a new
/// header needs one.
#[tokio::test]
async fn header_values_survive_an_edit_without_them() {
    let server = server_allowing_loopback().await;
    let stub = Stub::start().await;
    let (org, _) = org_with_user(&server, None).await;
    let config = json!({ "authentication_url": format!("{}/x", stub.base), "http_action": "POST", "data_as": "json",
        "headers": [{ "name": "X-Api-Key", "value": "k-123" }] });
    let (status, shown) = configure(&server, &org, config).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let mut edited = shown.clone();
    edited["timeout_ms"] = json!(5000);
    edited["headers"][0]["name"] = json!("x-api-key");
    assert_eq!(configure(&server, &org, edited.clone()).await.0, StatusCode::OK);
    assert_eq!(login_with(&server, "pw").await.0, StatusCode::OK);
    assert_eq!(stub.single().header("x-api-key").as_deref(), Some("k-123"), "the saved value was kept");

    edited["headers"].as_array_mut().unwrap().push(json!({ "name": "X-Other" }));
    let (status, err) = configure(&server, &org, edited).await;
    assert_eq!((status, err["field"].as_str()), (StatusCode::BAD_REQUEST, Some("headers[1].value")));
}

/// Plain http sends passwords in clear text: refused unless the service may
/// call private addresses or the organization accepts it, and flagged by
/// the test call.
#[tokio::test]
async fn plain_http_needs_an_explicit_yes() {
    let server = TestServer::sqlite().await; // private targets not allowed
    let org = server.create_org("Acme").await;
    let config = json!({ "authentication_url": "http://auth.example.com/login", "http_action": "POST", "data_as": "json" });
    let (status, err) = configure(&server, &org, config.clone()).await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("authentication_url")),
        "{err}"
    );
    let mut accepted = config;
    accepted["allow_insecure_http"] = json!(true);
    assert_eq!(configure(&server, &org, accepted).await.0, StatusCode::OK);

    let loopback = server_allowing_loopback().await;
    let stub = Stub::start().await;
    let (org, _) = org_with_user(&loopback, None).await;
    let config =
        json!({ "authentication_url": format!("{}/x", stub.base), "http_action": "POST", "data_as": "json" });
    assert_eq!(configure(&loopback, &org, config).await.0, StatusCode::OK);
    let test = format!("/admin/v1/orgs/{org}/external-auth/rest/test");
    let (_, result) = loopback
        .admin(Method::POST, &test, Some(json!({ "email": "bob@example.com", "password": "pw" })))
        .await;
    let warnings = result["warnings"].as_array().unwrap();
    assert!(warnings[0].as_str().unwrap().contains("plain http"), "{result}");
}

/// The organization's audit events of `kind`, newest first, once there are
/// `n` of them (some are written after the answer).
async fn events_of(server: &TestServer, org: &str, kind: &str, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let (_, events) =
            server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/audit-events?limit=200"), None).await;
        let found: Vec<Value> =
            events["items"].as_array().unwrap().iter().filter(|e| e["kind"] == kind).cloned().collect();
        if found.len() >= n {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("fewer than {n} {kind} events");
}

#[tokio::test]
async fn forgot_password_is_forwarded_as_a_get() {
    let server = server_allowing_loopback().await;
    let stub = Stub::start().await;
    let (org, user) = org_with_user(&server, Some("E-77")).await;
    configure(&server, &org, json!({
        "authentication_url": format!("{}/login", stub.base), "http_action": "POST", "data_as": "json",
        "headers": [{ "name": "X-Who", "value": "{{USEREMAIL}}" }], "timeout_ms": 1000,
        "forgot_password_url": format!("{}/forgot?email={{{{USEREMAIL}}}}&id={{{{USERID}}}}&ext={{{{USEREXTERNALID}}}}&org={{{{ORGID}}}}&os={{{{DEVICEOS}}}}&device={{{{DEVICENAME}}}}&ip={{{{DEVICEIP}}}}", stub.base),
    })).await;
    let forgot = json!({ "email": "BOB@example.com", "device": { "os": "iOS", "name": HOSTILE_DEVICE } });
    let accepted = (StatusCode::ACCEPTED, json!({ "status": "accepted" }));
    assert_eq!(server.post("/v1/password/forgot", forgot.clone()).await, accepted);
    let r = stub.wait_for(1).await.remove(0);
    assert_eq!((r.method.as_str(), r.uri.path()), ("GET", "/forgot"));
    for (k, v) in [
        ("email", "bob@example.com"),
        ("id", user["id"].as_str().unwrap()),
        ("ext", "E-77"),
        ("org", org.as_str()),
        ("os", "iOS"),
        ("device", HOSTILE_DEVICE),
        ("ip", "127.0.0.1"),
    ] {
        assert_eq!(r.query(k).as_deref(), Some(v), "{k}");
    }
    assert_eq!(r.header("x-who").as_deref(), Some("bob@example.com"), "configured headers go along");
    assert!(r.body.is_empty());

    // Whatever the service answers, and for an unknown email too, the
    // caller sees the same: only the audit trail knows.
    for code in [302, 500] {
        stub.respond_with(code);
        assert_eq!(server.post("/v1/password/forgot", forgot.clone()).await, accepted, "{code}");
        assert_eq!(stub.wait_for(1).await.len(), 1);
    }
    stub.respond_with(200);
    stub.delay(Duration::from_secs(3));
    assert_eq!(server.post("/v1/password/forgot", forgot).await, accepted, "answered without waiting");
    assert_eq!(server.post("/v1/password/forgot", json!({ "email": "nobody@example.com" })).await, accepted);

    let events = events_of(&server, &org, "password_reset", 4).await;
    assert_eq!(events[0]["detail"], json!({ "reason": "upstream_unavailable", "error": "timeout" }));
    assert_eq!(events[1]["detail"], json!({ "reason": "upstream_refused", "upstream_status": 500 }));
    assert_eq!(events[2]["detail"], json!({ "reason": "upstream_refused", "upstream_status": 302 }));
    assert_eq!(events[3]["detail"], json!({ "upstream_status": 200 }));
}

#[tokio::test]
async fn the_test_call_shows_the_request_masked_and_stores_nothing() {
    let server = server_allowing_loopback().await;
    let stub = Stub::start().await;
    let (org, _) = org_with_user(&server, None).await;
    configure(&server, &org, json!({
        "authentication_url": format!("{}/check?p={{{{USERPASSWORD}}}}&u={{{{USEREMAIL}}}}", stub.base),
        "http_action": "POST", "data_as": "json", "http_auth_type": "basic",
        "headers": [{ "name": "X-Pass", "value": "{{USERPASSWORD}}" }, { "name": "X-Key", "value": "k-123" }],
        "body": "{\"password\":\"{{USERPASSWORD}}\",\"user\":\"{{USEREMAIL}}\"}",
    })).await;
    let (_, before) = server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/audit-events"), None).await;
    stub.respond_with(401);
    let test_path = format!("/admin/v1/orgs/{org}/external-auth/rest/test");
    let (status, result) = server
        .admin(
            Method::POST,
            &test_path,
            Some(
                json!({ "email": "bob@example.com", "password": "s3cret-pass", "device": { "os": "Linux" } }),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert!(!result.to_string().contains("s3cret-pass"), "password shown: {result}");
    assert_eq!(result["status"], 401);
    assert_eq!(result["outcome"], "rejected");
    assert!(result["elapsed_ms"].is_u64());
    let req = &result["request"];
    assert_eq!(req["method"], "POST");
    assert_eq!(req["url"], format!("{}/check?p=%2A%2A%2A%2A%2A%2A%2A%2A&u=bob%40example.com", stub.base));
    assert_eq!(req["body"], "{\"password\":\"********\",\"user\":\"bob@example.com\"}");
    let headers: Vec<(String, String)> = req["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["name"].as_str().unwrap().into(), h["value"].as_str().unwrap().into()))
        .collect();
    assert!(headers.contains(&("x-pass".into(), "********".into())), "{headers:?}");
    assert!(headers.contains(&("x-key".into(), "********".into())), "header values are masked too");
    assert!(!result.to_string().contains("k-123"), "a header secret shown: {result}");
    assert!(headers.contains(&("authorization".into(), "Basic ********".into())));
    assert!(headers.contains(&("content-type".into(), "application/json".into())));

    // The real call went out, with the real values.
    let r = stub.single();
    assert_eq!(r.query("p").as_deref(), Some("s3cret-pass"));
    assert_eq!(r.header("x-pass").as_deref(), Some("s3cret-pass"));

    let (_, after) = server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/audit-events"), None).await;
    assert_eq!(before, after, "the test call stored nothing");
    let (status, _) = server
        .admin(Method::POST, &test_path, Some(json!({ "email": "nobody@example.com", "password": "x" })))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(stub.requests().is_empty());
}

#[tokio::test]
async fn device_ip_comes_from_a_trusted_proxy_only() {
    let stub = Stub::start().await;
    for (trusted, expected) in [(false, "127.0.0.1"), (true, "198.51.100.23")] {
        let server = TestServer::start(TestDb::sqlite(), |s| {
            s.allow_private_targets = true;
            if trusted {
                s.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
            }
        })
        .await;
        let (org, _) = org_with_user(&server, None).await;
        configure(&server, &org, json!({ "authentication_url": format!("{}/ip?ip={{{{DEVICEIP}}}}", stub.base), "http_action": "GET", "data_as": "json" })).await;
        let req = server
            .http
            .post(server.url("/v1/login"))
            .header("x-forwarded-for", "203.0.113.9, 198.51.100.23")
            .json(&json!({ "email": "bob@example.com", "password": "pw" }));
        assert_eq!(server.send(req).await.0, StatusCode::OK);
        assert_eq!(stub.single().query("ip").as_deref(), Some(expected), "trusted={trusted}");
    }
}

/// On PostgreSQL too: configuration, a pass-through sign-in and its session.
#[tokio::test]
async fn pass_through_on_postgres() {
    let Some(db) = TestDb::postgres().await else { return };
    let server = TestServer::start(db, |s| s.allow_private_targets = true).await;
    let stub = Stub::start().await;
    let org = server.create_org("Acme").await;
    server.create_user(&org, "bob@example.com", Some("will be erased")).await;
    configure(&server, &org, json!({ "authentication_url": format!("{}/x", stub.base), "http_action": "PUT", "data_as": "url_encoded", "body": "p={{USERPASSWORD}}" })).await;
    let (status, tokens) = login_with(&server, HOSTILE_PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(url::form_urlencoded::parse(&stub.single().body).next().unwrap().1, HOSTILE_PASSWORD);
    let (status, _) =
        server.post("/v1/token/refresh", json!({ "refresh_token": tokens["refresh_token"] })).await;
    assert_eq!(status, StatusCode::OK);
    stub.respond_with(403);
    assert_eq!(login_with(&server, HOSTILE_PASSWORD).await.0, StatusCode::UNAUTHORIZED);
}

/// The real binary, at the most verbose log level: after a run of
/// pass-through sign-ins (accepted, refused, timed out, via the test call and
/// Forgot Password), the password is nowhere in the database or the logs.
#[tokio::test]
async fn the_password_is_never_stored_or_logged() {
    use crate::cli::{Process, call, gatehouse};
    const PASSWORD: &str = "Tr0ub4dor&3-never-store-me";
    let stub = Stub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = crate::support::ADMIN_TOKEN;
    let mut cmd = gatehouse(dir.path());
    cmd.env("GATEHOUSE_ALLOW_PRIVATE_TARGETS", "true")
        .env("GATEHOUSE_ADMIN_TOKEN", admin)
        .env("GATEHOUSE_LOG_LEVEL", "trace");
    let server = Process::serve(cmd, dir.path(), "serve").await;
    let base = &server.base;

    let (_, org) =
        call(Method::POST, format!("{base}/admin/v1/orgs"), Some(admin), Some(json!({ "name": "Acme" })))
            .await;
    let org = org["id"].as_str().unwrap();
    call(
        Method::POST,
        format!("{base}/admin/v1/orgs/{org}/users"),
        Some(admin),
        Some(json!({ "email": "bob@example.com" })),
    )
    .await;
    let (status, _) = call(
        Method::PUT,
        format!("{base}/admin/v1/orgs/{org}/external-auth/rest"),
        Some(admin),
        Some(json!({
            "authentication_url": format!("{}/login?p={{{{USERPASSWORD}}}}", stub.base),
            "http_action": "POST", "data_as": "json", "http_auth_type": "basic", "timeout_ms": 300,
            "headers": [{ "name": "X-Password", "value": "{{USERPASSWORD}}" }],
            "body": "{\"password\":\"{{USERPASSWORD}}\"}",
            "forgot_password_url": format!("{}/forgot?u={{{{USEREMAIL}}}}", stub.base),
        })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let login = json!({ "email": "bob@example.com", "password": PASSWORD, "device": { "os": "iOS", "name": "phone" } });
    for (upstream, expected) in
        [(200, StatusCode::OK), (401, StatusCode::UNAUTHORIZED), (500, StatusCode::UNAUTHORIZED)]
    {
        stub.respond_with(upstream);
        let (status, _) = call(Method::POST, format!("{base}/v1/login"), None, Some(login.clone())).await;
        assert_eq!(status, expected);
    }
    stub.delay(Duration::from_secs(1));
    assert_eq!(
        call(Method::POST, format!("{base}/v1/login"), None, Some(login.clone())).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    stub.delay(Duration::ZERO);
    let (status, shown) = call(
        Method::POST,
        format!("{base}/admin/v1/orgs/{org}/external-auth/rest/test"),
        Some(admin),
        Some(login.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!shown.to_string().contains(PASSWORD));
    call(
        Method::POST,
        format!("{base}/v1/password/forgot"),
        None,
        Some(json!({ "email": "bob@example.com" })),
    )
    .await;
    // Bad input that echoes nothing back either.
    let (_, err) = call(Method::POST, format!("{base}/v1/login"), None, Some(json!({ "email": "bob@example.com", "password": PASSWORD, "device": { "os": PASSWORD.repeat(10) } }))).await;
    assert!(!err.to_string().contains(PASSWORD), "{err}");
    let sent = stub.take();
    assert!(
        sent.len() >= 6 && sent.iter().any(|r| r.query("p").as_deref() == Some(PASSWORD)),
        "the password did go out"
    );
    drop(server);

    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("bob@example.com:{PASSWORD}"),
    );
    let encoded: String = url::form_urlencoded::byte_serialize(PASSWORD.as_bytes()).collect();
    let needles = [PASSWORD.to_owned(), basic, encoded, PASSWORD.replace('&', "\\u0026")];
    let mut haystacks = vec![("log", std::fs::read(dir.path().join("serve.log")).unwrap())];
    for f in ["gatehouse.db", "gatehouse.db-wal", "gatehouse.db-shm"] {
        if let Ok(bytes) = std::fs::read(dir.path().join("data").join(f)) {
            haystacks.push((f, bytes));
        }
    }
    assert!(haystacks[0].1.len() > 10_000, "trace logging was on");
    for (name, bytes) in &haystacks {
        for needle in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle:?} found in {name}"
            );
        }
    }
}

/// Line breaks can only come from a password (device fields and external ids
/// refuse control characters). In a URL or a body they are data, and arrive
/// exactly; XML keeps them through character references.
#[tokio::test]
async fn line_breaks_in_passwords_arrive_intact_in_urls_and_bodies() {
    let server = server_allowing_loopback().await;
    let stub = Stub::start().await;
    let (org, _) = org_with_user(&server, None).await;
    let password = "line one\r\nline two\n\ttabbed\r";
    for (data_as, body) in [
        ("json", r#"{"password":"{{USERPASSWORD}}"}"#),
        ("url_encoded", "password={{USERPASSWORD}}"),
        ("xml", "<login><password>{{USERPASSWORD}}</password><again p=\"{{USERPASSWORD}}\"/></login>"),
    ] {
        let (status, err) = configure(
            &server,
            &org,
            json!({
                "authentication_url": format!("{}/nl?password={{{{USERPASSWORD}}}}", stub.base),
                "http_action": "POST", "data_as": data_as, "body": body,
            }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{err}");
        assert_eq!(login_with(&server, password).await.0, StatusCode::OK, "{data_as}");
        let r = stub.single();
        assert_eq!(r.query("password").as_deref(), Some(password), "{data_as} URL");
        match data_as {
            "xml" => {
                let text = String::from_utf8(r.body.to_vec()).unwrap();
                assert!(
                    !text.contains('\n') && !text.contains('\r'),
                    "raw line breaks would be normalised: {text}"
                );
                let inner = text.split("<password>").nth(1).unwrap().split("</password>").next().unwrap();
                assert_eq!(quick_xml::escape::unescape(inner).unwrap(), password);
                let attr = text.split("p=\"").nth(1).unwrap().split('"').next().unwrap();
                assert_eq!(quick_xml::escape::unescape(attr).unwrap(), password);
            }
            _ => assert_eq!(field(&decoded_body(data_as, &r), "password"), password, "{data_as} body"),
        }
    }
}
