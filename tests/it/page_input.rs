//! Hostile input to the web pages, without a browser: forged and
//! cross-site posts, open redirects, markup in names, garbage tokens and
//! paths. Each must get a clear answer and change nothing.

use reqwest::header::{CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{ADMIN_TOKEN, TestServer, execute_sql, on_both_backends};

/// A client that keeps cookies and follows nothing, with the CSRF cookie a
/// first page view gives; returns it and the token.
async fn visitor(server: &TestServer) -> (reqwest::Client, String) {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = client.get(server.url("/login")).send().await.unwrap();
    let csrf =
        page.cookies().find(|c| c.name() == "gatehouse_csrf").expect("a CSRF cookie").value().to_owned();
    (client, csrf)
}

async fn post_form(
    client: &reqwest::Client,
    server: &TestServer,
    path: &str,
    body: &str,
) -> reqwest::Response {
    client
        .post(server.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn forged_and_cross_site_posts_are_refused(server: TestServer) {
    let org = server.create_org("Acme").await;
    server.create_user(&org, "ada@acme.test", Some("correct horse battery")).await;
    let (client, csrf) = visitor(&server).await;
    let form = "email=ada%40acme.test&password=correct+horse+battery";
    // No token, a wrong token, and the right token from another origin.
    for (body, origin) in [
        (form.to_owned(), None),
        (format!("csrf={}&{form}", "x".repeat(43)), None),
        (format!("csrf={csrf}&{form}"), Some("https://evil.example")),
        (format!("csrf={csrf}&{form}"), Some("null")),
    ] {
        let mut request = client
            .post(server.url("/login/password"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origin:?}");
        assert!(
            response
                .headers()
                .get_all(SET_COOKIE)
                .iter()
                .all(|c| !c.to_str().unwrap().starts_with("gatehouse_browser"))
        );
    }
    let cross_site = client
        .post(server.url("/login/password"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .body(format!("csrf={csrf}&{form}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    // The same form, done right, signs in.
    let ok = post_form(&client, &server, "/login/password", &format!("csrf={csrf}&{form}")).await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
}

async fn sign_ins_never_redirect_off_site(server: TestServer) {
    let org = server.create_org("Acme").await;
    server.create_user(&org, "ada@acme.test", Some("correct horse battery")).await;
    let (client, csrf) = visitor(&server).await;
    for hostile in [
        "https://evil.example/",
        "//evil.example",
        "/\\evil.example",
        "javascript:alert(1)",
        "/account\r\nSet-Cookie: x=y",
        &format!("/{}", "a".repeat(5000)),
    ] {
        let body = format!(
            "csrf={csrf}&email=ada%40acme.test&password=correct+horse+battery&return_to={}",
            urlencoding(hostile)
        );
        let response = post_form(&client, &server, "/login/password", &body).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{hostile}");
        let to = response.headers()[LOCATION].to_str().unwrap().to_owned();
        // The test server's public URL.
        assert!(to.starts_with("http://gatehouse.test/"), "{hostile} led to {to}");
        assert!(!to.contains("evil") && !to.contains('\n'), "{to}");
    }
    // A path of ours is followed.
    let body = format!(
        "csrf={csrf}&email=ada%40acme.test&password=correct+horse+battery&return_to=%2Faccount%3Ftab%3D1"
    );
    let response = post_form(&client, &server, "/login/password", &body).await;
    assert_eq!(response.headers()[LOCATION].to_str().unwrap(), "http://gatehouse.test/account?tab=1");
}

fn urlencoding(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn markup_in_names_is_shown_as_text(server: TestServer) {
    let body = json!({ "name": "<script>alert('org')</script>", "enterprise_toolkit": true });
    let (_, org) = server.admin(Method::POST, "/admin/v1/orgs", Some(body)).await;
    let org = org["id"].as_str().unwrap().to_owned();
    let user = json!({ "email": "ada@acme.test", "display_name": "<img src=x onerror=alert(1)>", "password": "correct horse battery" });
    server.admin(Method::POST, &format!("/admin/v1/orgs/{org}/users"), Some(user)).await;
    let (client, csrf) = visitor(&server).await;
    let signed_in =
        post_form(&client, &server, "/admin/login", &format!("csrf={csrf}&token={ADMIN_TOKEN}")).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    for path in [format!("/admin/orgs/{org}"), format!("/admin/orgs/{org}/users"), "/admin".into()] {
        let response = client.get(server.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let csp = response.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned();
        assert!(csp.contains("default-src 'none'") && csp.contains("form-action 'self'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        let html = response.text().await.unwrap();
        assert!(!html.contains("<script>alert") && !html.contains("<img src=x"), "{path}: {html}");
    }
    let page =
        client.get(server.url(&format!("/admin/orgs/{org}"))).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("&#60;script&#62;"), "{page}");
}

async fn garbage_tokens_and_paths_get_clear_answers(server: TestServer) {
    let (client, _) = visitor(&server).await;
    for (path, expected) in [
        ("/login/reset?token=%00%FF' OR 1=1", StatusCode::BAD_REQUEST),
        (&format!("/login/reset?token={}", "x".repeat(6_000)), StatusCode::BAD_REQUEST),
        ("/admin/setup?token=ghl_nope", StatusCode::FORBIDDEN),
        ("/admin/setup", StatusCode::FORBIDDEN),
    ] {
        let response = client.get(server.url(path)).send().await.unwrap();
        let status = response.status();
        let html = response.text().await.unwrap();
        assert!(status == expected || status == StatusCode::URI_TOO_LONG, "{path}: {status} {html}");
        assert!(html.is_empty() || html.contains("<h1>"), "{path}: a page, not a stack trace");
    }
    // Not signed in to the portal: to its sign-in, whatever the path.
    for path in ["/admin", "/admin/orgs/not-an-id", "/admin/guides/../../etc/passwd", "/admin/orgs/x/users/y"]
    {
        let response = client.get(server.url(path)).send().await.unwrap();
        assert!(
            matches!(
                response.status(),
                StatusCode::SEE_OTHER
                    | StatusCode::NOT_FOUND
                    | StatusCode::BAD_REQUEST
                    | StatusCode::METHOD_NOT_ALLOWED
            ),
            "{path}: {}",
            response.status()
        );
    }
    let (client, csrf) = visitor(&server).await;
    post_form(&client, &server, "/admin/login", &format!("csrf={csrf}&token={ADMIN_TOKEN}")).await;
    for path in ["/admin/orgs/not-an-id", "/admin/guides/..%2F..%2Fetc%2Fpasswd", "/admin/guides/google"] {
        let response = client.get(server.url(path)).send().await.unwrap();
        assert!(response.status().is_client_error(), "{path}: {}", response.status());
    }
    // A wrong admin token: refused, and no portal cookie.
    let (client, csrf) = visitor(&server).await;
    let refused = post_form(&client, &server, "/admin/login", &format!("csrf={csrf}&token=guess")).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(
        refused
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .all(|c| !c.to_str().unwrap().starts_with("gatehouse_portal"))
    );
}

/// A setup link for one organization, created through the API, is a
/// portal for that organization only; it cannot make more setup links.
async fn setup_links_cannot_reach_further(server: TestServer) {
    let acme = server.create_org("Acme").await;
    let other = server.create_org("Other").await;
    let (status, link) =
        server.admin(Method::POST, &format!("/admin/v1/orgs/{acme}/portal-links"), None).await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    for bad in [json!({ "ttl_hours": 0 }), json!({ "ttl_hours": 10_000 }), json!({ "ttl": 1 })] {
        let (status, _) =
            server.admin(Method::POST, &format!("/admin/v1/orgs/{acme}/portal-links"), Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let (status, _) = server
        .admin(Method::POST, &format!("/admin/v1/orgs/{}/portal-links", uuid::Uuid::now_v7()), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (client, csrf) = visitor(&server).await;
    let url = link["url"].as_str().unwrap().replace("http://gatehouse.test", &server.base);
    let followed = client.get(url).send().await.unwrap();
    assert_eq!(followed.headers()[LOCATION].to_str().unwrap(), format!("/admin/orgs/{acme}"));
    let more =
        post_form(&client, &server, &format!("/admin/orgs/{acme}/portal-links"), &format!("csrf={csrf}"))
            .await;
    assert_eq!(more.status(), StatusCode::FORBIDDEN, "setup links are for platform admins to make");
    for path in [format!("/admin/orgs/{other}"), format!("/admin/orgs/{other}/audit")] {
        assert_eq!(client.get(server.url(&path)).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    }
    let change = post_form(
        &client,
        &server,
        &format!("/admin/orgs/{other}/setup/integrations/external-auth/sso-policy"),
        &format!("csrf={csrf}&sso_required=on"),
    )
    .await;
    assert_eq!(change.status(), StatusCode::NOT_FOUND);
    let (_, policy) = server.admin(Method::GET, &format!("/admin/v1/orgs/{other}/sso"), None).await;
    assert_eq!(policy["sso_required"], false, "nothing changed");
}

/// Browser tokens carry their issue time, as refresh tokens do. A browser
/// holding a cookie from before (its session stored by the plain hash) is
/// still signed in.
async fn browser_cookies_from_before_ordered_keys_still_sign_in(server: TestServer) {
    use gatehouse_session::{OpaqueToken, hash_opaque_token, ordered_token_key};
    let org = server.create_org("Acme").await;
    server.create_user(&org, "ada@acme.test", Some("correct horse battery")).await;
    let (client, csrf) = visitor(&server).await;
    let form = format!("csrf={csrf}&email=ada%40acme.test&password=correct+horse+battery");
    let signed_in = post_form(&client, &server, "/login/password", &form).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let issued = signed_in
        .cookies()
        .find(|c| c.name() == "gatehouse_browser")
        .expect("a browser cookie")
        .value()
        .to_owned();
    let millis = server.state.clock().now().timestamp_millis();
    assert!(issued.starts_with(&format!("ghw_{millis:012x}.")), "{issued}");

    // The session's token turned into one of the old form.
    let old = OpaqueToken::generate("ghw");
    let sql = "UPDATE sessions SET browser_token_hash = $1 WHERE browser_token_hash = $2";
    let keys = [hash_opaque_token(old.plain()), ordered_token_key(&issued)];
    assert_eq!(execute_sql(server.db.url(), sql, &[&keys[0], &keys[1]]).await, 1);

    let account = |cookie: String| {
        server.http.get(server.url("/account")).header("cookie", format!("gatehouse_browser={cookie}")).send()
    };
    let page = account(old.plain().to_owned()).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("ada@acme.test"));
    let gone = account(issued).await.unwrap();
    assert_eq!(gone.status(), StatusCode::SEE_OTHER, "the token's new form names no session now");
}

on_both_backends!(
    browser_cookies_from_before_ordered_keys_still_sign_in,
    forged_and_cross_site_posts_are_refused,
    sign_ins_never_redirect_off_site,
    markup_in_names_is_shown_as_text,
    garbage_tokens_and_paths_get_clear_answers,
    setup_links_cannot_reach_further,
);
