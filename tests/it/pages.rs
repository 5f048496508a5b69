//! The web pages in a real browser (headless Chromium through ChromeDriver):
//! the hosted sign-in, password reset by email, and the admin portal, with
//! the real REST stub, OpenID provider, SAML IdP and SMTP server the other
//! suites use. Screenshots land in `target/screenshots/`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use gatehouse_testkit::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::chrome::Chrome;
use crate::oidc_provider::OidcProvider;
use crate::saml_idp::SamlIdp;
use crate::smtp::SmtpServer;
use crate::stub::Stub;
use crate::support::{ADMIN_TOKEN, TestServer};

/// A server at its own loopback address (the browser's origin), allowed to
/// call the loopback peers.
async fn server(tweak: impl FnOnce(&mut gatehouse::Settings)) -> TestServer {
    let server = TestServer::start_with(TestDb::sqlite(), |settings, base| {
        settings.public_url = base.parse().unwrap();
        settings.allow_private_targets = true;
        tweak(settings);
    })
    .await;
    // The identity providers stamp their tokens with the wall clock.
    server.clock.set(Utc::now());
    server
}

async fn org(server: &TestServer, name: &str, toolkit: bool) -> String {
    let body = json!({ "name": name, "enterprise_toolkit": toolkit });
    let (status, org) = server.admin(Method::POST, "/admin/v1/orgs", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{org}");
    org["id"].as_str().unwrap().to_owned()
}

async fn user(server: &TestServer, org: &str, email: &str, password: Option<&str>, role: &str) -> Value {
    let mut body = json!({ "email": email, "display_name": "Test User", "role": role });
    if let Some(p) = password {
        body["password"] = json!(p);
    }
    let (status, user) = server.admin(Method::POST, &format!("/admin/v1/orgs/{org}/users"), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    user
}

/// Signs in on `/login` with a password; returns where the browser ended.
async fn password_sign_in(browser: &Chrome, server: &TestServer, email: &str, password: &str) -> url::Url {
    browser.goto(&server.url("/login")).await;
    browser.fill("#email", email).await;
    browser.click("button[type=submit]").await;
    browser.fill("#password", password).await;
    browser.click("button[type=submit]").await;
    browser.url().await
}

async fn portal_sign_in(browser: &Chrome, server: &TestServer) {
    browser.goto(&server.url("/admin/login")).await;
    browser.fill("#token", ADMIN_TOKEN).await;
    browser.click("button[type=submit]").await;
    assert_eq!(browser.url().await.path(), "/admin", "{}", browser.body().await);
}

/// A platform admin configures REST pass-through in the portal, tests it
/// and saves it; the organization's users then sign in on `/login` through
/// the service, which sees their browser; a wrong password and an unknown
/// email get the same answer; signing out ends the session.
#[tokio::test]
async fn rest_configured_in_the_portal_signs_users_in() {
    let server = server(|_| {}).await;
    let org = org(&server, "Acme", false).await;
    user(&server, &org, "ada@acme.test", None, "member").await;
    let stub = Stub::start().await;
    let browser = Chrome::start(false).await;

    portal_sign_in(&browser, &server).await;
    browser.screenshot("portal-organizations").await;
    browser.click(&format!("a[href='/admin/orgs/{org}']")).await;
    browser.screenshot("portal-organization").await;
    browser.click("#external-auth-link").await;
    browser.screenshot("external-auth").await;
    // The ToolKit gate, with its reason.
    for kind in ["okta", "azure-ad", "ping"] {
        let why = browser.text(&format!("#unavailable-{kind}")).await;
        assert!(why.contains("needs the Enterprise ToolKit"), "{why}");
        assert!(!browser.exists(&format!("#add-{kind}")).await);
    }
    let (status, _) = server
        .http
        .get(server.url(&format!("/admin/orgs/{org}/setup/integrations/external-auth/new/okta")))
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, StatusCode::SEE_OTHER, "without a portal session: to the sign-in");

    browser.click("#configure-rest").await;
    let page = browser.body().await;
    for placeholder in
        ["{{USERID}}", "{{USEREMAIL}}", "{{USERPASSWORD}}", "{{DEVICEOS}}", "{{DEVICENAME}}", "{{DEVICEIP}}"]
    {
        assert!(page.contains(placeholder), "{placeholder} is listed");
    }
    // A bad URL is named beside its field, and nothing is saved.
    browser.fill("#authentication_url", "ftp://nowhere").await;
    browser.click("#save").await;
    assert!(browser.exists("#authentication_url-error").await, "{}", browser.body().await);
    assert!(
        server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/external-auth/rest"), None).await.0
            == StatusCode::NOT_FOUND
    );

    let url =
        format!("{}/auth?email={{{{USEREMAIL}}}}&os={{{{DEVICEOS}}}}&device={{{{DEVICENAME}}}}", stub.base);
    browser.fill("#authentication_url", &url).await;
    browser.fill("#headers", "X-Api-Key: key-that-stays-secret").await;
    // The placeholders insert themselves where the cursor was.
    browser.fill("#body", r#"{"password":""}"#).await;
    browser
        .client
        .execute("const b = document.getElementById('body'); b.focus(); b.setSelectionRange(13, 13);", vec![])
        .await
        .unwrap();
    browser.find("button[data-placeholder='{{USERPASSWORD}}']").await.click().await.unwrap();
    let body = browser.find("#body").await.prop("value").await.unwrap().unwrap();
    assert_eq!(body, r#"{"password":"{{USERPASSWORD}}"}"#);
    browser.fill("#test_email", "ada@acme.test").await;
    browser.fill("#test_password", "ada-password-at-the-service").await;
    browser.click("#test").await;
    let summary = browser.text("#test-summary").await;
    assert!(summary.starts_with("Authenticated"), "{summary}");
    let shown = browser.text("#test-request").await;
    assert!(
        !shown.contains("ada-password-at-the-service") && !shown.contains("key-that-stays-secret"),
        "{shown}"
    );
    assert_eq!(stub.take().len(), 1, "the test made the real call");
    assert!(
        server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/external-auth/rest"), None).await.0
            == StatusCode::NOT_FOUND,
        "a test saves nothing"
    );

    // Header values are not shown again, even after a test: typed again to
    // save. With a test user's credentials, a save tests first.
    assert!(!browser.body().await.contains("key-that-stays-secret"));
    browser.fill("#headers", "X-Api-Key: key-that-stays-secret").await;
    browser.fill("#test_password", "ada-password-at-the-service").await;
    browser.click("#save").await;
    assert!(browser.text("#notice").await.starts_with("Saved"), "{}", browser.body().await);
    assert!(browser.text("#test-summary").await.starts_with("Authenticated"));
    stub.take();
    let page = browser.body().await;
    assert!(
        !page.contains("key-that-stays-secret") && page.contains("X-Api-Key:"),
        "header values are write-only"
    );
    browser.screenshot("rest").await;
    browser.click("#portal-sign-out").await;
    assert_eq!(browser.url().await.path(), "/admin/login");

    // Ada signs in through the service.
    let landed = password_sign_in(&browser, &server, "ada@acme.test", "right at the service").await;
    assert_eq!(landed.path(), "/account");
    assert!(browser.text("#method").await.contains("your organization's sign-in service"));
    browser.screenshot("account").await;
    let call = stub.single();
    assert_eq!(call.query("email").as_deref(), Some("ada@acme.test"));
    assert_eq!(call.query("os").as_deref(), Some("Linux"));
    assert_eq!(call.query("device").as_deref(), Some("Chrome on Linux"));
    assert_eq!(call.header("x-api-key").as_deref(), Some("key-that-stays-secret"));
    assert!(String::from_utf8_lossy(&call.body).contains("right at the service"));
    browser.click("#sign-out").await;
    assert_eq!(browser.url().await.path(), "/login");
    browser.goto(&server.url("/account")).await;
    assert_eq!(browser.url().await.path(), "/login", "signed out");

    // A wrong password, and an unknown email: the same words.
    stub.respond_with(401);
    password_sign_in(&browser, &server, "ada@acme.test", "wrong").await;
    let wrong = browser.text("#error").await;
    browser.screenshot("login-wrong-password").await;
    password_sign_in(&browser, &server, "nobody@acme.test", "wrong").await;
    assert_eq!(browser.text("#error").await, wrong);
    assert_eq!(wrong, "The email or password is not right.");
    // Who configured it is on record.
    let (_, events) = server
        .admin(Method::GET, &format!("/admin/v1/orgs/{org}/audit-events?kind=external_auth_configured"), None)
        .await;
    assert_eq!(events["items"][0]["actor"], "admin:bootstrap", "{events}");
    browser.close().await;
}

/// A link in a received mail, undoing quoted-printable soft line breaks.
fn link_in(mail: &str, prefix: &str) -> String {
    let joined = mail.replace("=\r\n", "").replace("=\n", "").replace("=3D", "=");
    let start = joined.find(prefix).unwrap_or_else(|| panic!("no {prefix} in {mail}"));
    joined[start..].split_whitespace().next().unwrap().to_owned()
}

/// Forgot password, both ways: a local user gets a single-use link by mail
/// (through a real SMTP server) that sets a new password and ends their
/// sessions; an organization with a REST Forgot Password URL gets the
/// request. The page says the same whether or not the email is registered.
#[tokio::test]
async fn forgot_password_by_mail_and_by_the_rest_service() {
    let smtp = SmtpServer::start().await;
    let server = server(|s| {
        s.mail =
            Some(gatehouse::MailSettings::parse(&smtp.url(), "Gatehouse <no-reply@gatehouse.test>").unwrap());
    })
    .await;
    let local = org(&server, "Local", false).await;
    user(&server, &local, "bob@local.test", Some("old password 123"), "member").await;
    let (_, old) = server.login("bob@local.test", "old password 123").await;
    let browser = Chrome::start(false).await;

    browser.goto(&server.url("/login")).await;
    browser.click("a[href='/login/forgot']").await;
    browser.fill("#email", "bob@local.test").await;
    browser.click("button[type=submit]").await;
    let answer = browser.text("#sent").await;
    browser.screenshot("forgot-sent").await;
    let mail = smtp.message(1).await;
    assert!(mail.contains("To: bob@local.test") && mail.contains("no-reply@gatehouse.test"), "{mail}");
    let link = link_in(&mail, &server.url("/login/reset?token="));

    // An unknown email: the same answer, and no mail.
    browser.goto(&server.url("/login/forgot")).await;
    browser.fill("#email", "nobody@local.test").await;
    browser.click("button[type=submit]").await;
    assert_eq!(browser.text("#sent").await, answer.replace("bob@local.test", "nobody@local.test"));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(smtp.count(), 1);

    browser.goto(&link).await;
    browser.screenshot("reset").await;
    browser.fill("#password", "new password 456").await;
    browser.fill("#confirm", "new password 456").await;
    browser.click("button[type=submit]").await;
    assert!(browser.body().await.contains("Password changed"));
    let (status, _) =
        server.post("/v1/token/refresh", json!({ "refresh_token": old["refresh_token"] })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old sessions ended");
    assert_eq!(
        password_sign_in(&browser, &server, "bob@local.test", "new password 456").await.path(),
        "/account"
    );
    assert_eq!(server.login("bob@local.test", "old password 123").await.0, StatusCode::UNAUTHORIZED);
    browser.goto(&link).await;
    assert!(browser.text("#error").await.contains("expired or was already used"));

    // An organization with its own service: the request goes there.
    let stub = Stub::start().await;
    let rest = org(&server, "Rest", false).await;
    user(&server, &rest, "cy@rest.test", None, "member").await;
    let config = json!({ "authentication_url": format!("{}/auth", stub.base), "http_action": "POST", "data_as": "json",
        "forgot_password_url": format!("{}/forgot?email={{{{USEREMAIL}}}}", stub.base) });
    let (status, body) =
        server.admin(Method::PUT, &format!("/admin/v1/orgs/{rest}/external-auth/rest"), Some(config)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    browser.goto(&server.url("/login/forgot")).await;
    browser.fill("#email", "cy@rest.test").await;
    browser.click("button[type=submit]").await;
    assert!(browser.exists("#sent").await);
    let forwarded = stub.wait_for(1).await;
    assert_eq!(
        (forwarded[0].method.as_str(), forwarded[0].query("email").as_deref()),
        ("GET", Some("cy@rest.test"))
    );
    assert_eq!(smtp.count(), 1, "no mail for a REST user");
    browser.close().await;
}

/// Through the real OpenID provider: an organization admin types their
/// email, signs in at the IdP, and reaches only their own organization's
/// portal; an organization admin with a local password too; neither may
/// require single sign-on without having signed in through it.
#[tokio::test]
async fn organization_admins_sign_in_on_login_and_see_only_their_organization() {
    let server = server(|_| {}).await;
    let callback = server.url("/v1/sso/oidc/callback");
    let idp =
        OidcProvider::start_with(|p| format!("http://127.0.0.1:{p}"), &[("REDIRECT_URIS", &callback)]).await;
    let acme = server.create_sso_org(&[]).await;
    let other = org(&server, "Other", true).await;
    let connection = json!({ "kind": "okta", "issuer": idp.origin(), "client_id": "gatehouse",
        "client_secret": "gatehouse-secret", "link_by_email": true });
    let (status, body) =
        server.admin(Method::POST, &format!("/admin/v1/orgs/{acme}/connections"), Some(connection)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    user(&server, &acme, "ada@acme.test", None, "admin").await;
    let browser = Chrome::start(false).await;

    browser.goto(&server.url("/login")).await;
    browser.screenshot("login").await;
    browser.fill("#email", "ada@acme.test").await;
    browser.click("button[type=submit]").await;
    // At the provider: sign Ada in.
    let mut at_idp = browser.url().await;
    assert!(
        at_idp.as_str().starts_with(&idp.origin()) && at_idp.path().starts_with("/interaction/"),
        "{at_idp}"
    );
    let claims = json!({ "sub": "00u-ada", "email": "ada@acme.test", "email_verified": true });
    at_idp.query_pairs_mut().append_pair("account", &URL_SAFE_NO_PAD.encode(claims.to_string()));
    browser.goto(at_idp.as_str()).await;
    assert_eq!(browser.url().await.path(), "/account", "{}", browser.body().await);
    assert_eq!(browser.text("#method").await, "Single sign-on (OpenID Connect)");

    browser.click("a[href='/admin']").await;
    assert_eq!(browser.url().await.path(), format!("/admin/orgs/{acme}"));
    assert_eq!(browser.text("#who").await, "ada@acme.test");
    assert!(!browser.exists("#make-setup-link").await, "setup links are for platform admins");
    browser.click("#external-auth-link").await;
    let health = browser.text("#connections").await;
    assert!(!health.contains("none yet"), "the last sign-in is shown: {health}");
    for path in [
        format!("/admin/orgs/{other}"),
        format!("/admin/orgs/{other}/setup/integrations/external-auth"),
        format!("/admin/orgs/{other}/users"),
    ] {
        browser.goto(&server.url(&path)).await;
        assert!(browser.body().await.contains("does not exist"), "{path}: {}", browser.body().await);
    }
    let response = reqwest::Client::new().get(server.url("/admin/v1/orgs")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "the admin API still needs an admin token");

    // Ada, signed in through single sign-on, may require it.
    browser.goto(&server.url(&format!("/admin/orgs/{acme}/setup/integrations/external-auth"))).await;
    browser.click("#sso_required").await;
    browser.click("form[action$='/sso-policy'] button").await;
    assert!(browser.text("#notice").await.contains("saved"), "{}", browser.body().await);
    let (_, policy) = server.admin(Method::GET, &format!("/admin/v1/orgs/{acme}/sso"), None).await;
    assert_eq!(policy["sso_required"], true);
    let (_, events) = server
        .admin(Method::GET, &format!("/admin/v1/orgs/{acme}/audit-events?kind=sso_policy_changed"), None)
        .await;
    assert!(events["items"][0]["actor"].as_str().unwrap().starts_with("user:"), "{events}");
    // Her organization's last connection cannot go while it is required.
    browser.click("#connections a").await;
    browser.click("#delete").await;
    let why = browser.text("#error").await;
    assert!(why.contains("lock you out") || why.contains("locked out"), "{why}");
    assert_eq!(
        server
            .admin(Method::GET, &format!("/admin/v1/orgs/{acme}/connections"), None)
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
    sign_out(&browser, &server).await;

    // An admin of another organization, with a local password: their own
    // organization only, and no single sign-on requirement from a password
    // session.
    user(&server, &other, "bo@other.test", Some("bo's password 123"), "admin").await;
    user(&server, &other, "cy@other.test", Some("cy's password 123"), "member").await;
    assert_eq!(
        password_sign_in(&browser, &server, "bo@other.test", "bo's password 123").await.path(),
        "/account"
    );
    browser.goto(&server.url("/admin")).await;
    assert_eq!(browser.url().await.path(), format!("/admin/orgs/{other}"));
    browser.goto(&server.url(&format!("/admin/orgs/{acme}"))).await;
    assert!(browser.body().await.contains("does not exist"));
    browser.goto(&server.url(&format!("/admin/orgs/{other}/setup/integrations/external-auth"))).await;
    browser.click("#sso_required").await;
    browser.click("form[action$='/sso-policy'] button").await;
    assert!(browser.text("#error").await.contains("Only someone signed in through single sign-on"));
    browser.goto(&server.url(&format!("/admin/orgs/{other}/users"))).await;
    browser.screenshot("users").await;
    let users = browser.text("#users").await;
    assert!(users.contains("cy@other.test") && users.contains("admin") && users.contains("never"), "{users}");
    browser.click("#users button[value=make_admin]").await;
    let (_, cy) = server.admin(Method::GET, &format!("/admin/v1/orgs/{other}/users?limit=50"), None).await;
    let cy = cy["items"].as_array().unwrap().iter().find(|u| u["email"] == "cy@other.test").unwrap().clone();
    assert_eq!(cy["role"], "admin");
    browser.goto(&server.url(&format!("/admin/orgs/{other}/audit?kind=user_updated"))).await;
    browser.screenshot("audit").await;
    assert!(browser.text("#events").await.contains("user_updated"));

    // The portal's sign-out ends an organization admin's session; a
    // member is not let in.
    browser.click("#portal-sign-out").await;
    browser.goto(&server.url("/account")).await;
    assert_eq!(browser.url().await.path(), "/login", "signed out");
    assert_eq!(
        password_sign_in(&browser, &server, "cy@other.test", "cy's password 123").await.path(),
        "/account"
    );
    let (_, _) = server
        .admin(
            Method::PATCH,
            &format!("/admin/v1/orgs/{other}/users/{}", cy["id"].as_str().unwrap()),
            Some(json!({ "role": "member" })),
        )
        .await;
    browser.goto(&server.url("/admin")).await;
    assert!(browser.body().await.contains("not an administrator"), "{}", browser.body().await);

    // A refusal at the end of single sign-on comes back to the sign-in
    // page, in words. (A new browser: the provider remembers Ada.)
    browser.close().await;
    let browser = Chrome::start(false).await;
    browser.goto(&server.url("/login")).await;
    browser.fill("#email", "newcomer@acme.test").await;
    browser.click("button[type=submit]").await;
    let mut at_idp = browser.url().await;
    let claims = json!({ "sub": "00u-new", "email": "newcomer@acme.test", "email_verified": true });
    at_idp.query_pairs_mut().append_pair("account", &URL_SAFE_NO_PAD.encode(claims.to_string()));
    browser.goto(at_idp.as_str()).await;
    assert_eq!(browser.url().await.path(), "/login");
    assert_eq!(
        browser.text("#error").await,
        "You have no account in this organization; ask its administrator."
    );
    browser.goto(&server.url("/login?refused=%3Cscript%3E")).await;
    assert_eq!(browser.text("#error").await, "You cannot sign in here.", "only fixed words are shown");
    browser.close().await;
}

/// Ends the browser's session from its account page.
async fn sign_out(browser: &Chrome, server: &TestServer) {
    browser.goto(&server.url("/account")).await;
    if browser.exists("#sign-out").await {
        browser.click("#sign-out").await;
    }
}

/// Through the real SAML IdP: a Ping user types their email and lands
/// signed in; the connection's page shows what to give Ping, and its
/// health shows the IdP certificate's expiry.
#[tokio::test]
async fn ping_users_sign_in_through_the_saml_idp() {
    let server = server(|_| {}).await;
    let idp = SamlIdp::start().await;
    let acme = server.create_sso_org(&[]).await;
    let config = json!({ "kind": "ping", "idp_metadata_url": idp.url("/metadata"), "link_by_email": true });
    let (status, created) =
        server.admin(Method::POST, &format!("/admin/v1/orgs/{acme}/connections"), Some(config)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let metadata =
        reqwest::get(created["sp_entity_id"].as_str().unwrap()).await.unwrap().text().await.unwrap();
    idp.register_sp(metadata).await;
    user(&server, &acme, "alice@acme.test", None, "member").await;
    let browser = Chrome::start(false).await;

    browser.goto(&server.url("/login")).await;
    browser.fill("#email", "alice@acme.test").await;
    browser.click("button[type=submit]").await;
    // The IdP's page posts itself back; wait for the account page.
    for _ in 0..100 {
        if browser.url().await.path() == "/account" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(browser.url().await.path(), "/account", "{}", browser.body().await);
    assert_eq!(browser.text("#method").await, "Single sign-on (SAML)");
    assert_eq!(browser.text("#who").await, "alice@acme.test");

    portal_sign_in(&browser, &server).await;
    let id = created["id"].as_str().unwrap();
    browser
        .goto(&server.url(&format!("/admin/orgs/{acme}/setup/integrations/external-auth/connections/{id}")))
        .await;
    browser.screenshot("ping").await;
    assert_eq!(browser.text("#acs-url").await, created["acs_url"].as_str().unwrap());
    assert_eq!(browser.text("#entity-id").await, created["sp_entity_id"].as_str().unwrap());
    browser.click("#test").await;
    assert!(browser.text("#test-summary").await.contains("checks out"));
    browser.goto(&server.url(&format!("/admin/orgs/{acme}/setup/integrations/external-auth"))).await;
    let health = browser.text("#connections").await;
    assert!(health.contains("expires 20"), "{health}");
    browser.close().await;
}

/// A setup link opens its organization's portal, and no other; revoking it
/// ends what it opened. The pages hold on a phone-sized screen.
#[tokio::test]
async fn setup_links_open_one_organization_and_pages_fit_a_phone() {
    let server = server(|_| {}).await;
    let acme = org(&server, "Acme", true).await;
    let other = org(&server, "Other", true).await;
    let (status, link) = server
        .admin(Method::POST, &format!("/admin/v1/orgs/{acme}/portal-links"), Some(json!({ "ttl_hours": 24 })))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let (_, listed) = server.admin(Method::GET, &format!("/admin/v1/orgs/{acme}/portal-links"), None).await;
    assert!(listed[0].get("url").is_none(), "the link's address is shown once: {listed}");
    let browser = Chrome::start(true).await;

    for page in ["/login", "/login/forgot", "/admin/login"] {
        browser.goto(&server.url(page)).await;
        assert!(!browser.scrolls_sideways().await, "{page} fits a phone");
    }
    browser.goto(&server.url("/login")).await;
    browser.screenshot("phone-login").await;

    browser.goto(link["url"].as_str().unwrap()).await;
    assert_eq!(browser.url().await.path(), format!("/admin/orgs/{acme}"), "the token leaves the address bar");
    assert_eq!(browser.text("#who").await, "Setup link");
    browser.click("#external-auth-link").await;
    assert!(!browser.scrolls_sideways().await, "the integrations page fits a phone");
    browser.screenshot("phone-external-auth").await;
    browser.click("#add-okta").await;
    assert!(browser.text("#redirect-uri").await.ends_with("/v1/sso/oidc/callback"));
    assert!(!browser.scrolls_sideways().await);
    browser.goto(&server.url(&format!("/admin/orgs/{other}"))).await;
    assert!(browser.body().await.contains("does not exist"), "another organization is out of reach");
    browser.goto(&server.url("/admin")).await;
    assert_eq!(browser.url().await.path(), format!("/admin/orgs/{acme}"));

    // A SCIM token, shown once.
    browser.goto(&server.url(&format!("/admin/orgs/{acme}/setup/integrations/external-auth"))).await;
    browser.fill("#label", "Okta provisioning").await;
    browser.click("#mint-scim-token").await;
    let token = browser.text("#new-scim-token").await;
    assert!(token.starts_with("ghs_"), "{token}");
    let (status, _) = server.scim(&token, Method::GET, "/scim/v2/Users", None).await;
    assert_eq!(status, StatusCode::OK, "the token works");
    browser.goto(&server.url(&format!("/admin/orgs/{acme}/setup/integrations/external-auth"))).await;
    assert!(!browser.body().await.contains(&token), "and is not shown again");

    let (status, _) = server
        .admin(
            Method::DELETE,
            &format!("/admin/v1/orgs/{acme}/portal-links/{}", link["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    browser.goto(&server.url(&format!("/admin/orgs/{acme}"))).await;
    assert_eq!(browser.url().await.path(), "/admin/login", "the revoked link's session ended");
    browser.goto(link["url"].as_str().unwrap()).await;
    assert!(browser.body().await.contains("expired or was revoked"));
    let (_, events) = server
        .admin(Method::GET, &format!("/admin/v1/orgs/{acme}/audit-events?kind=scim_token_created"), None)
        .await;
    assert!(events["items"][0]["actor"].as_str().unwrap().starts_with("setup:"), "{events}");
    browser.close().await;
}

/// What a guide asks the reader to find in the portal: the portal labels it
/// names (in italics), the addresses it says to copy (code starting with
/// `{gatehouse}`), and the error codes its table explains.
struct GuideRefs {
    labels: Vec<String>,
    addresses: Vec<String>,
    codes: Vec<String>,
}

fn guide_refs(markdown: &str) -> GuideRefs {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
    let mut refs = GuideRefs { labels: vec![], addresses: vec![], codes: vec![] };
    let (mut emphasis, mut in_table, mut text) = (false, false, String::new());
    for event in Parser::new_ext(markdown, Options::ENABLE_TABLES) {
        match event {
            Event::Start(Tag::Emphasis) => (emphasis, text) = (true, String::new()),
            Event::End(TagEnd::Emphasis) => {
                emphasis = false;
                refs.labels.push(text.clone());
            }
            Event::Start(Tag::Table(_)) => in_table = true,
            Event::End(TagEnd::Table) => in_table = false,
            Event::Text(t) if emphasis => text.push_str(&t),
            Event::Code(c) if emphasis => text.push_str(&c),
            Event::Code(c) if c.starts_with("{gatehouse}") => refs.addresses.push(c.to_string()),
            Event::Code(c)
                if in_table
                    && c.contains('_')
                    && c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_') =>
            {
                refs.codes.push(c.to_string())
            }
            _ => {}
        }
    }
    refs
}

/// The guides stay true: every portal label they name is on the portal's
/// pages, every address they say to copy is the one the portal shows, every
/// error code they explain is one Gatehouse gives, and the portal serves
/// them.
#[tokio::test]
async fn the_guides_name_what_the_portal_shows() {
    let server = server(|_| {}).await;
    let idp = SamlIdp::start().await;
    let acme = org(&server, "Acme", true).await;
    let plain = org(&server, "Plain", false).await;
    let config = json!({ "kind": "ping", "idp_metadata_url": idp.url("/metadata") });
    let (status, ping) =
        server.admin(Method::POST, &format!("/admin/v1/orgs/{acme}/connections"), Some(config)).await;
    assert_eq!(status, StatusCode::CREATED, "{ping}");
    let ping_id = ping["id"].as_str().unwrap();
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = |path: String| {
        let browser = browser.clone();
        let url = server.url(&path);
        async move {
            let response = browser.get(&url).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{url}");
            response.text().await.unwrap()
        }
    };
    let login = browser.get(server.url("/admin/login")).send().await.unwrap();
    let csrf = login.cookies().find(|c| c.name() == "gatehouse_csrf").unwrap().value().to_owned();
    let signed_in = browser
        .post(server.url("/admin/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&token={ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);

    let base = |org: &str| format!("/admin/orgs/{org}/setup/integrations/external-auth");
    let mut shown = String::new();
    for path in [
        base(&acme),
        base(&plain),
        format!("{}/new/okta", base(&acme)),
        format!("{}/new/azure-ad", base(&acme)),
        format!("{}/connections/{ping_id}", base(&acme)),
    ] {
        shown.push_str(&page(path).await);
    }
    let shown =
        shown.replace("&amp;", "&").replace("&#x27;", "'").replace("&#39;", "'").replace("&quot;", "\"");
    let sources = [
        include_str!("../../src/signin.rs"),
        include_str!("../../src/sso.rs"),
        include_str!("../../src/saml.rs"),
        include_str!("../../crates/saml/src/acs.rs"),
        include_str!("../../crates/oidc/src/rp.rs"),
    ]
    .concat();
    for (slug, markdown) in [
        ("okta", include_str!("../../docs/guides/okta.md")),
        ("azure-ad", include_str!("../../docs/guides/azure-ad.md")),
        ("ping", include_str!("../../docs/guides/ping.md")),
    ] {
        let refs = guide_refs(markdown);
        assert!(
            refs.labels.len() > 10 && !refs.addresses.is_empty() && refs.codes.len() >= 3,
            "{slug}: the convention holds"
        );
        for label in &refs.labels {
            assert!(shown.contains(label.as_str()), "{slug}: the portal shows no \"{label}\"");
        }
        for address in &refs.addresses {
            let address = address.replace("{gatehouse}", &server.base).replace("{connection id}", ping_id);
            assert!(shown.contains(&address), "{slug}: the portal does not show {address}");
        }
        for code in &refs.codes {
            assert!(sources.contains(&format!("\"{code}\"")), "{slug}: Gatehouse gives no error {code}");
        }
        let served = page(format!("/admin/guides/{slug}")).await;
        let title = markdown.lines().next().unwrap().trim_start_matches("# ");
        assert!(served.contains(title), "{slug} is served");
        assert!(page(base(&acme)).await.contains(&format!("href=\"/admin/guides/{slug}\"")), "and linked");
    }
    // A guide's raw HTML would be escaped, not run.
    assert!(!page("/admin/guides/okta".into()).await.contains("<script"));
}
