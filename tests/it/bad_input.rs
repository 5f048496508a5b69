//! Malformed input of every kind gets a JSON 4xx, never a 5xx or a panic.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, TestServer};

async fn raw(
    server: &TestServer,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = server.http.request(method, server.url(path)).bearer_auth(ADMIN_TOKEN).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    server.send(req).await
}

#[tokio::test]
async fn malformed_bodies_are_client_errors() {
    let server = TestServer::sqlite().await;
    let org = server.create_org("Acme").await;
    let users = format!("/admin/v1/orgs/{org}/users");
    let json_ct = Some("application/json");
    let cases: Vec<(&str, Option<&str>, Vec<u8>, StatusCode)> = vec![
        ("/admin/v1/orgs", json_ct, b"{\"name\"".to_vec(), StatusCode::BAD_REQUEST),
        ("/admin/v1/orgs", json_ct, b"".to_vec(), StatusCode::BAD_REQUEST),
        ("/admin/v1/orgs", json_ct, b"[]".to_vec(), StatusCode::BAD_REQUEST),
        ("/admin/v1/orgs", json_ct, b"null".to_vec(), StatusCode::BAD_REQUEST),
        ("/admin/v1/orgs", json_ct, b"{\"name\":\"\xff\xfe\"}".to_vec(), StatusCode::BAD_REQUEST),
        ("/admin/v1/orgs", json_ct, b"\xff\xfe\xfd".to_vec(), StatusCode::BAD_REQUEST),
        ("/admin/v1/orgs", json_ct, b"{\"name\":\"\\ud800\"}".to_vec(), StatusCode::BAD_REQUEST),
        ("/admin/v1/orgs", None, b"{\"name\":\"A\"}".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (
            "/admin/v1/orgs",
            Some("text/plain"),
            b"{\"name\":\"A\"}".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "/admin/v1/orgs",
            json_ct,
            format!("{{\"name\":\"{}\"}}", "a".repeat(100_000)).into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        ("/admin/v1/orgs", json_ct, "[".repeat(10_000).into_bytes(), StatusCode::BAD_REQUEST),
        (&users, json_ct, b"{\"email\":[1,2,3]}".to_vec(), StatusCode::BAD_REQUEST),
        ("/v1/login", json_ct, b"{\"email\":\"a@b.c\"}".to_vec(), StatusCode::BAD_REQUEST),
        ("/v1/login", json_ct, b"{\"email\":\"a@b.c\",\"password\":7}".to_vec(), StatusCode::BAD_REQUEST),
        (
            "/v1/login",
            json_ct,
            b"{\"email\":\"a@b.c\",\"password\":\"x\",\"device\":\"phone\"}".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/token/refresh", json_ct, b"{}".to_vec(), StatusCode::BAD_REQUEST),
        ("/v1/logout", json_ct, b"{\"refresh_token\":null}".to_vec(), StatusCode::BAD_REQUEST),
    ];
    for (path, ct, body, expected) in cases {
        let preview = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        let (status, err) = raw(&server, Method::POST, path, ct, body).await;
        assert_eq!(status, expected, "POST {path} {ct:?} {preview}: {err}");
        assert!(err["error"].is_string(), "{err}");
    }
    let (_, orgs) = server.admin(Method::GET, "/admin/v1/orgs", None).await;
    assert_eq!(orgs["items"].as_array().unwrap().len(), 1, "nothing was created");
}

#[tokio::test]
async fn device_fields_are_bounded() {
    let server = TestServer::sqlite().await;
    for (device, field) in [
        (json!({ "os": "x".repeat(129) }), "device.os"),
        (json!({ "name": "x".repeat(129) }), "device.name"),
        (json!({ "name": "line\nbreak" }), "device.name"),
        (json!({ "os": 5 }), "device.os"),
    ] {
        let (status, err) = server
            .post("/v1/login", json!({ "email": "a@example.com", "password": "x", "device": device }))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{device}");
        assert_eq!(err["field"], field, "{err}");
    }
    let (status, err) = server.post("/v1/login", json!({ "email": "not an email", "password": "x" })).await;
    assert_eq!((status, err["field"].as_str()), (StatusCode::BAD_REQUEST, Some("email")));
}

#[tokio::test]
async fn bad_paths_methods_and_queries_are_json_errors() {
    let server = TestServer::sqlite().await;
    let org = server.create_org("Acme").await;
    let cases = [
        (Method::GET, "/admin/v1/orgs/not-a-uuid".to_owned(), StatusCode::BAD_REQUEST),
        (Method::GET, format!("/admin/v1/orgs/{org}/users/also-not-a-uuid"), StatusCode::BAD_REQUEST),
        (Method::GET, "/admin/v1/orgs?limit=ten".to_owned(), StatusCode::BAD_REQUEST),
        (Method::GET, "/admin/v1/orgs?limit=-1".to_owned(), StatusCode::BAD_REQUEST),
        (Method::GET, "/admin/v1/orgs?after=garbage".to_owned(), StatusCode::BAD_REQUEST),
        (Method::GET, format!("/admin/v1/orgs/{org}/audit-events?before=garbage"), StatusCode::BAD_REQUEST),
        (Method::GET, "/no/such/route".to_owned(), StatusCode::NOT_FOUND),
        (Method::PUT, "/admin/v1/orgs".to_owned(), StatusCode::METHOD_NOT_ALLOWED),
        (Method::GET, "/v1/login".to_owned(), StatusCode::METHOD_NOT_ALLOWED),
    ];
    for (method, path, expected) in cases {
        let (status, body) = raw(&server, method.clone(), &path, None, vec![]).await;
        assert_eq!(status, expected, "{method} {path}: {body}");
        assert!(body["error"].is_string(), "{method} {path}: {body}");
    }
}

/// A small deterministic fuzz: random bytes and mangled JSON at every POST
/// endpoint. The service must answer each with a 4xx and keep serving.
#[tokio::test]
async fn garbage_never_causes_a_server_error() {
    let server = TestServer::sqlite().await;
    let org = server.create_org("Acme").await;
    let paths = [
        "/admin/v1/orgs".to_owned(),
        format!("/admin/v1/orgs/{org}/users"),
        "/v1/login".into(),
        "/v1/token/refresh".into(),
        "/v1/logout".into(),
    ];
    let seeds: [&[u8]; 6] = [
        br#"{"email":"a@b.c","password":"p","device":{"os":"x","name":"y"}}"#,
        br#"{"name":"Acme","enterprise_toolkit":true}"#,
        br#"{"refresh_token":"ghr_x"}"#,
        br#"{"email":"a@example.com","display_name":"A","external_id":"1","password":"12345678"}"#,
        b"{}",
        b"\"\"",
    ];
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..300 {
        let mut body = seeds[round % seeds.len()].to_vec();
        for _ in 0..(next() % 6 + 1) {
            let pos = (next() as usize) % (body.len() + 1);
            match next() % 4 {
                0 if !body.is_empty() => {
                    body.remove(pos.min(body.len() - 1));
                }
                1 => body.insert(pos, (next() % 256) as u8),
                2 => body.insert(pos, b"{}[]\",:\\0-e9"[(next() % 12) as usize]),
                _ => body.truncate(pos),
            }
        }
        let path = &paths[round % paths.len()];
        let (status, err) = raw(&server, Method::POST, path, Some("application/json"), body.clone()).await;
        assert!(
            status.is_client_error() || status.is_success(),
            "POST {path} {:?} gave {status}: {err}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(server.send(server.http.get(server.url("/healthz"))).await.0, StatusCode::OK);
}

/// Issue 13, hole 2: a SCIM filter of a few thousand nested parentheses
/// overflowed the stack and aborted the process, for every organization.
/// Every parser that reads request input bounds its nesting, length and
/// work, and answers with a 4xx; the service keeps serving.
#[tokio::test]
async fn deep_and_long_inputs_are_refused_not_crashed_on() {
    let server = TestServer::sqlite().await;
    let (_, token) = server.scim_org("okta").await;
    let scim =
        |method: Method, path: String| server.http.request(method, server.url(&path)).bearer_auth(&token);
    let encode = |f: &str| url::form_urlencoded::byte_serialize(f.as_bytes()).collect::<String>();

    let deep =
        |open: &str, close: &str, n: usize| format!("{}userName eq \"a\"{}", open.repeat(n), close.repeat(n));
    let filters = [
        deep("(", ")", 5_000),
        deep("not (", ")", 3_000),
        format!("{}type eq \"work\"{}", "emails[".repeat(3_000), "]".repeat(3_000)),
        vec!["userName eq \"a\""; 2_000].join(" or "),
        vec!["title pr"; 4_000].join(" and "),
        format!("userName eq \"{}\"", "a".repeat(20_000)),
    ];
    for filter in &filters {
        let resp =
            scim(Method::GET, format!("/scim/v2/Users?filter={}", encode(filter))).send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{}…: {body}", &filter[..40]);
        assert_eq!(body["scimType"], "invalidFilter", "{body}");
    }

    // The same bounds hold for a PATCH path, which holds a filter.
    let (_, user) = {
        let body = json!({ "userName": "alice@example.com", "emails": [{ "value": "alice@example.com" }] });
        let resp = scim(Method::POST, "/scim/v2/Users".into())
            .header("content-type", "application/scim+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (resp.status(), resp.json::<Value>().await.unwrap())
    };
    let id = user["id"].as_str().unwrap();
    let path = format!("emails[{}type eq \"work\"{}].value", "(".repeat(5_000), ")".repeat(5_000));
    let patch = json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{ "op": "replace", "path": path, "value": "x@example.com" }] });
    let resp = scim(Method::PATCH, format!("/scim/v2/Users/{id}"))
        .header("content-type", "application/scim+json")
        .body(patch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.json::<Value>().await.unwrap()["scimType"], "invalidPath");

    // JSON nesting beyond the parser's limit, in a SCIM body and an API body.
    let nested = format!("{}1{}", "{\"a\":".repeat(5_000), "}".repeat(5_000));
    let resp = scim(Method::POST, "/scim/v2/Users".into())
        .header("content-type", "application/scim+json")
        .body(nested.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (status, _) =
        raw(&server, Method::POST, "/admin/v1/orgs", Some("application/json"), nested.into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Oversized and malformed tokens and cookies are invalid, not errors.
    let huge = format!("eyJ{}.e30.x", "A".repeat(60_000));
    for token in [huge.as_str(), "a.b.c", "....", "eyJhbGciOiJub25lIn0.e30.", "\u{e9}"] {
        let resp = server.http.get(server.url("/v1/me")).bearer_auth(token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{}", &token[..token.len().min(20)]);
        let resp = server
            .http
            .get(server.url("/v1/me"))
            .header("cookie", format!("a=b; gatehouse_session={token}; {}", "c=d; ".repeat(500)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }

    assert_eq!(server.send(server.http.get(server.url("/healthz"))).await.0, StatusCode::OK);
    let resp = scim(Method::GET, "/scim/v2/Users?filter=userName%20eq%20%22alice@example.com%22".into())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["totalResults"], 1, "still serving");
}
