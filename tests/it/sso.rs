//! Single sign-on over OpenID Connect against a real provider
//! (`fixtures/oidc-idp`, oidc-provider) on loopback, configured like Okta
//! (org and custom authorization servers) and like Azure AD (tenant
//! issuers, `tid`/`oid`, the multi-tenant template).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use gatehouse_testkit::TestDb;
use reqwest::header::{LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::oidc_provider::OidcProvider;
use crate::support::{TestServer, on_both_backends};

pub(crate) const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const OTHER_TENANT: &str = "0b3f6a8e-2d1c-4e5f-9a7b-1c2d3e4f5a6b";
pub(crate) const RETURN_TO: &str = "https://app.acme.test/signed-in";
pub(crate) const APP_REDIRECT: &str = "com.acme.app:/sso";

/// A Gatehouse serving at its own loopback address (the provider sends
/// browsers back there) with its clock at real time (the provider stamps
/// tokens with it), and a provider whose issuer is `issuer(port)`.
pub(crate) async fn pair(
    db: TestDb,
    issuer: impl Fn(u16) -> String,
    env: &[(&str, &str)],
) -> (TestServer, OidcProvider) {
    let server = TestServer::start_with(db, |settings, base| {
        settings.public_url = base.parse().unwrap();
        settings.allow_private_targets = true;
    })
    .await;
    server.clock.set(Utc::now());
    let callback = server.url("/v1/sso/oidc/callback");
    let mut env = env.to_vec();
    env.push(("REDIRECT_URIS", &callback));
    let idp = OidcProvider::start_with(issuer, &env).await;
    (server, idp)
}

/// An organization with the Enterprise ToolKit, its allow list set, and a
/// connection; returns (org id, connection id).
pub(crate) async fn org_with_connection(server: &TestServer, connection: Value) -> (String, String) {
    let org = server.create_sso_org(&[RETURN_TO, APP_REDIRECT]).await;
    let (status, created) =
        server.admin(Method::POST, &format!("/admin/v1/orgs/{org}/connections"), Some(connection)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    (org, created["id"].as_str().unwrap().to_owned())
}

pub(crate) fn okta(issuer: &str, extra: Value) -> Value {
    let mut c = json!({ "kind": "okta", "issuer": issuer, "client_id": "gatehouse", "client_secret": "gatehouse-secret" });
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    c
}

pub(crate) fn azure(idp: &OidcProvider, tenant: &str, extra: Value) -> Value {
    let mut c = json!({ "kind": "azure_ad", "authority": idp.origin(), "tenant": tenant, "client_id": "gatehouse", "client_secret": "gatehouse-secret" });
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    c
}

/// A browser: keeps cookies, follows nothing by itself.
pub(crate) fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

pub(crate) fn location(response: &reqwest::Response, base: &str) -> String {
    let raw = response.headers().get(LOCATION).unwrap_or_else(|| panic!("no Location in {response:?}"));
    url::Url::parse(base).unwrap().join(raw.to_str().unwrap()).unwrap().to_string()
}

/// Goes through the provider as `claims` (the ID token's claims) until it
/// sends the browser back to Gatehouse; returns that callback URL.
pub(crate) async fn through_provider(
    browser: &reqwest::Client,
    authorize: &str,
    server: &TestServer,
    claims: &Value,
) -> String {
    let account = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut next = authorize.to_owned();
    for _ in 0..10 {
        if next.starts_with(&server.base) {
            return next;
        }
        let mut url = url::Url::parse(&next).unwrap();
        if url.path().starts_with("/interaction/") {
            url.query_pairs_mut().append_pair("account", &account);
        }
        let response = browser.get(url.clone()).send().await.unwrap();
        assert!(response.status().is_redirection(), "{url}: {}", response.status());
        next = location(&response, url.as_str());
    }
    panic!("the provider never sent the browser back");
}

pub(crate) struct Callback {
    pub(crate) status: StatusCode,
    pub(crate) location: Option<String>,
    pub(crate) cookies: Vec<String>,
    pub(crate) body: Value,
}

/// A web sign-in from start to Gatehouse's answer at the callback, in a
/// fresh browser (no session left at the provider from an earlier one).
pub(crate) async fn web_sign_in(server: &TestServer, connection: &str, claims: &Value) -> Callback {
    let browser = &browser();
    let start = format!("/v1/sso/start?connection={connection}&return_to={RETURN_TO}");
    let response = browser.get(server.url(&start)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND, "{:?}", response.text().await);
    let authorize = location(&response, &server.base);
    let callback = through_provider(browser, &authorize, server, claims).await;
    answer(browser.get(callback).send().await.unwrap()).await
}

pub(crate) async fn answer(response: reqwest::Response) -> Callback {
    let status = response.status();
    let location = response.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_owned());
    let cookies =
        response.headers().get_all(SET_COOKIE).iter().map(|c| c.to_str().unwrap().to_owned()).collect();
    let bytes = response.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Callback { status, location, cookies, body }
}

pub(crate) fn session_cookie(callback: &Callback) -> Option<String> {
    callback
        .cookies
        .iter()
        .find(|c| c.starts_with("gatehouse_session="))
        .map(|c| c.split(';').next().unwrap().trim_start_matches("gatehouse_session=").to_owned())
}

pub(crate) async fn sso_events(server: &TestServer, org: &str) -> Vec<Value> {
    let (_, events) =
        server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/audit-events?limit=200"), None).await;
    events["items"].as_array().unwrap().iter().filter(|e| e["kind"] == "sso_sign_in").cloned().collect()
}

async fn okta_org_server_web_sign_in(db: TestDb) {
    let (server, idp) = pair(db, |p| format!("http://127.0.0.1:{p}"), &[]).await;
    let (org, connection) = org_with_connection(
        &server,
        okta(&format!("http://127.0.0.1:{}", idp.port), json!({ "link_by_email": true })),
    )
    .await;
    let user = server.create_user(&org, "ada@acme.test", None).await;

    let claims = json!({ "sub": "00u-ada", "email": "ada@acme.test", "email_verified": true, "name": "Ada" });
    let done = web_sign_in(&server, &connection, &claims).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert_eq!(done.location.as_deref(), Some(RETURN_TO));
    let cookie = done.cookies.iter().find(|c| c.starts_with("gatehouse_session=")).expect("a session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain-http loopback is the one place without Secure: {cookie}");

    // The cookie is a session for the user the email linked to.
    let token = session_cookie(&done).unwrap();
    let me = server
        .send(server.http.get(server.url("/v1/me")).header("cookie", format!("gatehouse_session={token}")))
        .await;
    assert_eq!((me.0, &me.1["id"]), (StatusCode::OK, &user["id"]), "{}", me.1);

    // Now linked by subject: a changed email at the provider is the same user.
    let renamed = json!({ "sub": "00u-ada", "email": "ada.l@acme.test", "email_verified": true });
    let again = web_sign_in(&server, &connection, &renamed).await;
    assert_eq!(again.status, StatusCode::FOUND, "{}", again.body);
    let me = server.me(&session_cookie(&again).unwrap()).await;
    assert_eq!(me.1["id"], user["id"]);

    // Signing the browser out ends its session, not only its cookie: the
    // same token no longer works anywhere.
    let cookie = format!("gatehouse_session={}", session_cookie(&again).unwrap());
    let out =
        server.http.post(server.url("/v1/session/logout")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let cleared = out.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with("gatehouse_session=;") && cleared.contains("Max-Age=0"), "{cleared}");
    let me = server.send(server.http.get(server.url("/v1/me")).header("cookie", &cookie)).await;
    assert_eq!(me.0, StatusCode::UNAUTHORIZED);
    assert_eq!(server.me(&session_cookie(&again).unwrap()).await.0, StatusCode::UNAUTHORIZED);
    // The first browser's session is its own, and still live.
    assert_eq!(server.me(&token).await.0, StatusCode::OK);
    let out = server.http.post(server.url("/v1/session/logout")).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT, "nothing to end is not an error");

    let events = sso_events(&server, &org).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events.iter().all(|e| e["outcome"] == "success" && e["detail"]["subject"] == "00u-ada"),
        "{events:?}"
    );
}

#[tokio::test]
async fn okta_custom_server_native_app_sign_in() {
    let (server, idp) = pair(TestDb::sqlite(), |p| format!("http://127.0.0.1:{p}/oauth2/default"), &[]).await;
    let issuer = format!("http://127.0.0.1:{}/oauth2/default", idp.port);
    let (org, connection) =
        org_with_connection(&server, okta(&issuer, json!({ "jit_provisioning": true }))).await;
    let browser = browser();

    let verifier = "app-verifier-0123456789-0123456789-0123456789-abc";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let start = format!(
        "/v1/sso/start?connection={connection}&redirect_uri={APP_REDIRECT}&code_challenge={challenge}&code_challenge_method=S256&state=app-state-1"
    );
    let response = browser.get(server.url(&start)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let authorize = location(&response, &server.base);
    assert!(authorize.starts_with(&format!("http://127.0.0.1:{}/", idp.port)), "{authorize}");
    for part in ["code_challenge_method=S256", "nonce=", "state=", "response_type=code"] {
        assert!(authorize.contains(part), "{part} in {authorize}");
    }
    assert!(!authorize.contains(&challenge), "the provider sees Gatehouse's own PKCE, not the app's");

    let claims =
        json!({ "sub": "00u-grace", "email": "grace@acme.test", "email_verified": true, "name": "Grace" });
    let callback = through_provider(&browser, &authorize, &server, &claims).await;
    let done = answer(browser.get(callback).send().await.unwrap()).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    let to_app = url::Url::parse(done.location.as_deref().unwrap()).unwrap();
    assert_eq!(format!("{}:{}", to_app.scheme(), to_app.path()), APP_REDIRECT);
    let query: std::collections::HashMap<_, _> = to_app.query_pairs().into_owned().collect();
    assert_eq!(query["state"], "app-state-1");
    let code = query["code"].clone();
    assert!(session_cookie(&done).is_none(), "native apps get a code, not a cookie");

    // A wrong verifier spends the code.
    let (status, body) =
        server.post("/v1/sso/token", json!({ "code": code, "code_verifier": "x".repeat(43) })).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    let (status, _) = server.post("/v1/sso/token", json!({ "code": code, "code_verifier": verifier })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a code works once, even after a wrong verifier");

    // A fresh sign-in, exchanged properly, and only once.
    let me = native_sign_in(&server, &connection, &claims).await;
    assert_eq!(me["email"].as_str(), Some("grace@acme.test"), "created just in time");
    assert_eq!(me["org_id"].as_str(), Some(org.as_str()));
}

/// A native app's whole sign-in: start with its own PKCE, through the
/// provider, the code at its redirect URI, the exchange (once only), and a
/// refresh of the session it got. Returns `/v1/me`.
pub(crate) async fn native_sign_in(server: &TestServer, connection: &str, claims: &Value) -> Value {
    let (tokens, _) = native_tokens(server, connection, claims).await;
    let (status, me) = server.me(tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    me
}

/// The same sign-in; returns the tokens the code was exchanged for and those
/// the refresh gave.
pub(crate) async fn native_tokens(server: &TestServer, connection: &str, claims: &Value) -> (Value, Value) {
    let browser = browser();
    let verifier = "app-verifier-9876543210-9876543210-9876543210-xyz";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let start = format!(
        "/v1/sso/start?connection={connection}&redirect_uri={APP_REDIRECT}&code_challenge={challenge}&code_challenge_method=S256"
    );
    let response = browser.get(server.url(&start)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let callback = through_provider(&browser, &location(&response, &server.base), server, claims).await;
    let done = answer(browser.get(callback).send().await.unwrap()).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    let to_app = url::Url::parse(done.location.as_deref().unwrap()).unwrap();
    assert_eq!(format!("{}:{}", to_app.scheme(), to_app.path()), APP_REDIRECT);
    let code = to_app.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let (status, tokens) =
        server.post("/v1/sso/token", json!({ "code": code, "code_verifier": verifier })).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let (status, _) = server.post("/v1/sso/token", json!({ "code": code, "code_verifier": verifier })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "replayed code");
    let (status, refreshed) =
        server.post("/v1/token/refresh", json!({ "refresh_token": tokens["refresh_token"] })).await;
    assert_eq!(status, StatusCode::OK, "the same sessions as /v1/login: {refreshed}");
    (tokens, refreshed)
}

#[tokio::test]
async fn azure_single_tenant_identifies_users_by_tenant_and_object_id() {
    let (server, idp) = pair(TestDb::sqlite(), |p| format!("http://127.0.0.1:{p}/{TENANT}/v2.0"), &[]).await;
    let (org, connection) = org_with_connection(
        &server,
        azure(&idp, TENANT, json!({ "jit_provisioning": true, "allowed_email_domains": ["acme.test"] })),
    )
    .await;
    let oid = "5d0e6a1c-93b2-4f53-9d3e-0c1f2a3b4c5d";
    // Entra sends no email_verified; the domain list vouches for JIT.
    let claims = json!({ "sub": "pairwise-1", "tid": TENANT, "oid": oid, "ver": "2.0", "email": "linus@acme.test",
        "preferred_username": "linus@acme.test", "name": "Linus", "groups": ["g-1", "g-2"] });
    let first = web_sign_in(&server, &connection, &claims).await;
    assert_eq!(first.status, StatusCode::FOUND, "{}", first.body);
    let me = server.me(&session_cookie(&first).unwrap()).await.1;
    assert_eq!(me["email"], "linus@acme.test");

    // Same tid+oid, another preferred_username and email: the same user.
    let mut renamed = claims.clone();
    renamed["preferred_username"] = json!("someone.else@acme.test");
    renamed["email"] = json!("l.t@acme.test");
    let second = web_sign_in(&server, &connection, &renamed).await;
    assert_eq!(server.me(&session_cookie(&second).unwrap()).await.1["id"], me["id"]);

    // An email outside the allowed domains is refused.
    let mut outsider = claims.clone();
    outsider["oid"] = json!("6d0e6a1c-93b2-4f53-9d3e-0c1f2a3b4c5d");
    outsider["email"] = json!("eve@elsewhere.test");
    let refused = web_sign_in(&server, &connection, &outsider).await;
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("email_domain_not_allowed"))
    );

    // A v1 token is not accepted under a v2 connection.
    let mut v1 = claims.clone();
    v1["ver"] = json!("1.0");
    let refused = web_sign_in(&server, &connection, &v1).await;
    assert_eq!(refused.body["error"], "unexpected_token_version");

    // A groups overage (groups left out, a claim source instead) still signs in.
    let mut overage = claims.clone();
    overage.as_object_mut().unwrap().remove("groups");
    overage["hasgroups"] = json!(true);
    let ok = web_sign_in(&server, &connection, &overage).await;
    assert_eq!(ok.status, StatusCode::FOUND, "{}", ok.body);
    let users = server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/users"), None).await.1;
    assert_eq!(users["items"].as_array().unwrap().len(), 1, "one user for one tid+oid: {users}");
}

#[tokio::test]
async fn azure_multi_tenant_takes_only_allowed_tenants() {
    let (server, idp) = pair(
        TestDb::sqlite(),
        |p| format!("http://127.0.0.1:{p}/{TENANT}/v2.0"),
        &[("TENANT_ALIAS", "organizations")],
    )
    .await;
    let (_, connection) = org_with_connection(
        &server,
        azure(&idp, "organizations", json!({ "allowed_tenant_ids": [TENANT], "jit_provisioning": true, "allowed_email_domains": ["acme.test"] })),
    )
    .await;
    let claims = json!({ "sub": "p-1", "tid": TENANT, "oid": "7d0e6a1c-93b2-4f53-9d3e-0c1f2a3b4c5d", "ver": "2.0", "email": "mt@acme.test" });
    let ok = web_sign_in(&server, &connection, &claims).await;
    assert_eq!(ok.status, StatusCode::FOUND, "{}", ok.body);
    // The same person from a native app: the same user.
    let web_user = server.me(&session_cookie(&ok).unwrap()).await.1;
    let me = native_sign_in(&server, &connection, &claims).await;
    assert_eq!((&me["id"], &me["email"]), (&web_user["id"], &json!("mt@acme.test")));

    let mut foreign = claims.clone();
    foreign["tid"] = json!(OTHER_TENANT);
    let refused = web_sign_in(&server, &connection, &foreign).await;
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("tenant_not_allowed"))
    );
    let mut no_tenant = claims.clone();
    no_tenant["tid"] = json!("common");
    let refused = web_sign_in(&server, &connection, &no_tenant).await;
    assert_eq!(refused.body["error"], "bad_tenant");
}

/// Every way the provider's answer, or the browser's, can be wrong.
#[tokio::test]
async fn bad_answers_are_refused_and_audited() {
    let (server, idp) = pair(TestDb::sqlite(), |p| format!("http://127.0.0.1:{p}"), &[]).await;
    let issuer = format!("http://127.0.0.1:{}", idp.port);
    let (org, connection) =
        org_with_connection(&server, okta(&issuer, json!({ "link_by_email": true }))).await;
    server.create_user(&org, "ada@acme.test", None).await;
    let ada = json!({ "sub": "00u-ada", "email": "ada@acme.test", "email_verified": true });
    let browser = browser();

    // The ID token, tampered with at the provider's token endpoint.
    for (mode, error) in [
        ("wrong_nonce", "wrong_nonce"),
        ("wrong_aud", "wrong_audience"),
        ("wrong_iss", "wrong_issuer"),
        ("expired", "token_expired"),
        ("alg_none", "invalid_signature"),
        ("hs256_public_key", "invalid_signature"),
    ] {
        idp.tamper(mode).await;
        let refused = web_sign_in(&server, &connection, &ada).await;
        assert_eq!(
            (refused.status, refused.body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some(error)),
            "{mode}: {}",
            refused.body
        );
        assert!(session_cookie(&refused).is_none(), "{mode}");
    }

    // A key the provider rotated in after Gatehouse fetched its keys.
    idp.tamper("rotate").await;
    let rotated = web_sign_in(&server, &connection, &ada).await;
    assert_eq!(rotated.status, StatusCode::FOUND, "an unknown kid refetches the key set: {}", rotated.body);

    // Unknown and replayed state.
    let forged =
        answer(browser.get(server.url("/v1/sso/oidc/callback?code=x&state=forged")).send().await.unwrap())
            .await;
    assert_eq!((forged.status, forged.body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("state")));
    let start = format!("/v1/sso/start?connection={connection}&return_to={RETURN_TO}");
    let response = browser.get(server.url(&start)).send().await.unwrap();
    let callback = through_provider(&browser, &location(&response, &server.base), &server, &ada).await;
    assert_eq!(answer(browser.get(&callback).send().await.unwrap()).await.status, StatusCode::FOUND);
    let replayed = answer(browser.get(&callback).send().await.unwrap()).await;
    assert_eq!(replayed.status, StatusCode::BAD_REQUEST, "a state works once");

    // A replayed code under a fresh state: the provider refuses it.
    let code =
        url::Url::parse(&callback).unwrap().query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let response = browser.get(server.url(&start)).send().await.unwrap();
    let fresh = url::Url::parse(&location(&response, &server.base)).unwrap();
    let state = fresh.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let mut replay = url::Url::parse(&server.url("/v1/sso/oidc/callback")).unwrap();
    replay.query_pairs_mut().append_pair("code", &code).append_pair("state", &state);
    let refused = answer(browser.get(replay).send().await.unwrap()).await;
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("code_refused")),
        "{}",
        refused.body
    );

    // A flow finished in a browser other than the one that started it.
    let response = browser.get(server.url(&start)).send().await.unwrap();
    let callback = through_provider(&browser, &location(&response, &server.base), &server, &ada).await;
    let elsewhere = answer(self::browser().get(&callback).send().await.unwrap()).await;
    assert_eq!(
        (elsewhere.status, elsewhere.body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("browser_mismatch"))
    );

    // Not provisioned (JIT off, no such user), and deactivated.
    let stranger = json!({ "sub": "00u-x", "email": "nobody@acme.test", "email_verified": true });
    let refused = web_sign_in(&server, &connection, &stranger).await;
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("user_not_provisioned"))
    );
    let users = server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/users"), None).await.1;
    let ada_id = users["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = server
        .admin(
            Method::PATCH,
            &format!("/admin/v1/orgs/{org}/users/{ada_id}"),
            Some(json!({ "active": false })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let refused = web_sign_in(&server, &connection, &ada).await;
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("user_deactivated"))
    );

    // Every attempt left its reason in the audit trail.
    let events = sso_events(&server, &org).await;
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["detail"]["reason"].as_str()).collect();
    for reason in [
        "wrong_nonce",
        "wrong_audience",
        "wrong_issuer",
        "token_expired",
        "invalid_signature",
        "code_refused",
        "browser_mismatch",
        "user_not_provisioned",
        "user_deactivated",
    ] {
        assert!(reasons.contains(&reason), "{reason} in {reasons:?}");
    }
    assert_eq!(events.iter().filter(|e| e["outcome"] == "success").count(), 2, "{events:?}");
    let (_, all) =
        server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/audit-events?limit=200"), None).await;
    assert!(!all.to_string().contains("gatehouse-secret"), "no client secret in the trail");
}

#[tokio::test]
async fn sso_only_organizations_refuse_passwords_and_point_to_sso() {
    let (server, idp) = pair(TestDb::sqlite(), |p| format!("http://127.0.0.1:{p}"), &[]).await;
    let (org, connection) = org_with_connection(
        &server,
        okta(&format!("http://127.0.0.1:{}", idp.port), json!({ "link_by_email": true })),
    )
    .await;
    server.create_user(&org, "ada@acme.test", Some("correct horse battery")).await;
    assert_eq!(server.login("ada@acme.test", "correct horse battery").await.0, StatusCode::OK);
    let (status, _) = server
        .admin(
            Method::PUT,
            &format!("/admin/v1/orgs/{org}/sso"),
            Some(json!({ "sso_required": true, "redirect_urls": [RETURN_TO] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server.login("ada@acme.test", "correct horse battery").await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::FORBIDDEN, Some("sso_required")), "{body}");
    let sso_url = body["sso_url"].as_str().unwrap();
    assert!(sso_url.starts_with(&server.url("/v1/sso/start?email=ada%40acme.test")), "{sso_url}");

    // The sso_url finds the connection from the email and signs in.
    let browser = browser();
    let response = browser.get(sso_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let authorize = location(&response, &server.base);
    assert!(authorize.contains("login_hint=ada%40acme.test"), "{authorize}");
    let claims = json!({ "sub": "00u-ada", "email": "ada@acme.test", "email_verified": true });
    let callback = through_provider(&browser, &authorize, &server, &claims).await;
    let done = answer(browser.get(callback).send().await.unwrap()).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    let _ = connection;
}

#[tokio::test]
async fn starts_are_checked_before_anyone_is_sent_away() {
    let (server, idp) = pair(TestDb::sqlite(), |p| format!("http://127.0.0.1:{p}"), &[]).await;
    let (org, connection) =
        org_with_connection(&server, okta(&format!("http://127.0.0.1:{}", idp.port), json!({}))).await;
    let get = |path: String| {
        let server = &server;
        async move { server.send(server.http.get(server.url(&path))).await }
    };
    let (status, body) =
        get(format!("/v1/sso/start?connection={connection}&return_to=https://evil.test/")).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("return_to")));
    let (status, body) = get(format!("/v1/sso/start?connection={connection}&redirect_uri=com.evil.app:/x&code_challenge={}&code_challenge_method=S256", "a".repeat(43))).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("redirect_uri")));
    let (status, body) = get(format!("/v1/sso/start?connection={connection}&redirect_uri={APP_REDIRECT}&code_challenge=short&code_challenge_method=S256")).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("code_challenge")));
    let (status, body) = get(format!("/v1/sso/start?connection={connection}&redirect_uri={APP_REDIRECT}&code_challenge={}&code_challenge_method=plain", "a".repeat(43))).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("code_challenge_method")));
    assert_eq!(get("/v1/sso/start?connection=nope".into()).await.0, StatusCode::NOT_FOUND);
    assert_eq!(get("/v1/sso/start?email=nobody@unclaimed.test".into()).await.0, StatusCode::NOT_FOUND);

    // Without the Enterprise ToolKit, no sign-in starts.
    let (status, _) = server
        .admin(Method::PATCH, &format!("/admin/v1/orgs/{org}"), Some(json!({ "enterprise_toolkit": false })))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = get(format!("/v1/sso/start?connection={connection}")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("enterprise_toolkit_required"))
    );

    // The allow list takes only addresses a redirect may go to.
    for bad in ["javascript:alert(1)", "http://app.acme.test/x", "https://app.acme.test/#frag", "myapp:/cb"] {
        let (status, body) = server
            .admin(Method::PUT, &format!("/admin/v1/orgs/{org}/sso"), Some(json!({ "redirect_urls": [bad] })))
            .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("redirect_urls")),
            "{bad}"
        );
    }
    let other = server.create_org("No connections").await;
    let (status, _) = server
        .admin(Method::PUT, &format!("/admin/v1/orgs/{other}/sso"), Some(json!({ "sso_required": true })))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "requiring SSO without a connection would lock everyone out");
}

/// When the provider's discovery document is down at the hourly refresh,
/// the last good copy keeps sign-ins starting, and the provider is asked
/// again a minute later, not on every sign-in meanwhile; once it is back,
/// the refreshed copy lasts another hour.
#[tokio::test]
async fn a_discovery_outage_keeps_the_last_good_copy() {
    let (server, idp) = pair(TestDb::sqlite(), |p| format!("http://127.0.0.1:{p}"), &[]).await;
    let (_, connection) =
        org_with_connection(&server, okta(&format!("http://127.0.0.1:{}", idp.port), json!({}))).await;
    // Starting a sign-in needs the provider's authorization endpoint, from
    // its discovery document.
    let start = || async {
        let path = format!("/v1/sso/start?connection={connection}&return_to={RETURN_TO}");
        let response = browser().get(server.url(&path)).send().await.unwrap();
        let status = response.status();
        assert_eq!(status, StatusCode::FOUND, "{:?}", response.text().await);
        assert!(location(&response, &server.base).starts_with(&idp.origin()));
    };
    start().await;
    let asked = idp.discovery_requests().await;

    idp.outage(true).await;
    server.clock.advance(chrono::Duration::minutes(61));
    start().await;
    assert_eq!(idp.discovery_requests().await, asked + 1, "the stale copy was due for a refresh");
    for _ in 0..3 {
        start().await;
    }
    assert_eq!(idp.discovery_requests().await, asked + 1, "not asked again within the minute");
    // A minute on, many sign-ins at once while the provider is slow to
    // fail: one of them asks, the others wait for its answer.
    server.clock.advance(chrono::Duration::seconds(61));
    futures::future::join_all((0..5).map(|_| start())).await;
    assert_eq!(idp.discovery_requests().await, asked + 2, "asked again after a minute, once");

    idp.outage(false).await;
    server.clock.advance(chrono::Duration::seconds(61));
    start().await;
    assert_eq!(idp.discovery_requests().await, asked + 3);
    server.clock.advance(chrono::Duration::minutes(59));
    start().await;
    assert_eq!(idp.discovery_requests().await, asked + 3, "a good copy lasts an hour");

    // A connection never fetched has no copy to fall back on: its sign-ins
    // are refused as the provider being unavailable.
    idp.outage(true).await;
    let other = server.create_sso_org_for(&[RETURN_TO], None).await;
    let config = okta(&format!("http://127.0.0.1:{}", idp.port), json!({}));
    let (status, created) =
        server.admin(Method::POST, &format!("/admin/v1/orgs/{other}/connections"), Some(config)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let fresh = created["id"].as_str().unwrap();
    let path = format!("/v1/sso/start?connection={fresh}&return_to={RETURN_TO}");
    let (status, body) = server.send(server.http.get(server.url(&path))).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("idp_unavailable")));
}

/// Nodes share nothing but the database (and the master key): a flow one
/// node starts, another finishes.
async fn a_flow_started_on_one_node_finishes_on_another(db: TestDb) {
    let (server, idp) = pair(db, |p| format!("http://127.0.0.1:{p}"), &[]).await;
    let (_, connection) = org_with_connection(
        &server,
        okta(&format!("http://127.0.0.1:{}", idp.port), json!({ "jit_provisioning": true })),
    )
    .await;
    // The second node has the same settings, as behind one load balancer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = format!("http://{}", listener.local_addr().unwrap());
    let clock = std::sync::Arc::new(gatehouse_core::ManualClock::new(Utc::now()));
    let node = gatehouse::bootstrap(server.state.settings().clone(), clock).await.unwrap();
    tokio::spawn(gatehouse::serve(listener, node, std::future::pending()));

    let browser = browser();
    let start = format!("/v1/sso/start?connection={connection}&return_to={RETURN_TO}");
    let response = browser.get(server.url(&start)).send().await.unwrap();
    let claims = json!({ "sub": "00u-n", "email": "n@acme.test", "email_verified": true });
    let callback = through_provider(&browser, &location(&response, &server.base), &server, &claims).await;
    let on_other = callback.replacen(&server.base, &other, 1);
    let done = answer(browser.get(on_other).send().await.unwrap()).await;
    assert_eq!(
        (done.status, done.location.as_deref()),
        (StatusCode::FOUND, Some(RETURN_TO)),
        "{}",
        done.body
    );
    assert_eq!(server.me(&session_cookie(&done).unwrap()).await.1["email"], "n@acme.test");
}

on_both_backends!(databases: okta_org_server_web_sign_in, a_flow_started_on_one_node_finishes_on_another);
