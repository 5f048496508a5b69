//! How a federated identity becomes a platform user, across the seams:
//! SCIM-provisioned users matched by the IdP's id, IdP groups in access
//! tokens, SCIM as the source of truth, verified domains deciding whose
//! emails are believed, and home-realm discovery for every kind of
//! organization. Against the real OpenID provider and the real SAML IdP.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_testkit::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::oidc_provider::OidcProvider;
use crate::saml_idp::SamlIdp;
use crate::sso::{
    RETURN_TO, TENANT, azure, browser, location, native_tokens, okta, pair, session_cookie, sso_events,
    through_provider, web_sign_in,
};
use crate::support::TestServer;

/// The claims of a platform access token.
fn claims_of(access_token: &str) -> Value {
    let payload = access_token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn okta_pair() -> (TestServer, OidcProvider) {
    pair(TestDb::sqlite(), |p| format!("http://127.0.0.1:{p}"), &[]).await
}

fn okta_at(idp: &OidcProvider, extra: Value) -> Value {
    okta(&format!("http://127.0.0.1:{}", idp.port), extra)
}

async fn connect(server: &TestServer, org: &str, config: Value) -> String {
    let (status, created) =
        server.admin(Method::POST, &format!("/admin/v1/orgs/{org}/connections"), Some(config)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

async fn scim_token(server: &TestServer, org: &str) -> String {
    let body = json!({ "label": "okta", "idp": "okta" });
    let (status, token) =
        server.admin(Method::POST, &format!("/admin/v1/orgs/{org}/scim-tokens"), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    token["token"].as_str().unwrap().to_owned()
}

fn scim_user(email: &str, external_id: &str) -> Value {
    json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": email, "externalId": external_id,
        "active": true, "emails": [{ "value": email, "primary": true, "type": "work" }],
        "name": { "givenName": "G", "familyName": "F" } })
}

async fn provision(server: &TestServer, token: &str, email: &str, external_id: &str) -> Value {
    let (status, user) =
        server.scim(token, Method::POST, "/scim/v2/Users", Some(scim_user(email, external_id))).await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    user
}

async fn scim_group(server: &TestServer, token: &str, name: &str, member: &str) {
    let group = json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name,
        "members": [{ "value": member }] });
    let (status, body) = server.scim(token, Method::POST, "/scim/v2/Groups", Some(group)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// The reason a refused sign-in gave, from the browser's answer.
fn refused(done: &crate::sso::Callback) -> &str {
    assert_eq!(done.status, StatusCode::FORBIDDEN, "{}", done.body);
    done.body["error"].as_str().unwrap()
}

/// Okta sends its user id as SCIM `externalId` and as the ID token's `sub`:
/// that id, not the email, says who signs in.
#[tokio::test]
async fn scim_users_are_matched_by_the_idp_id_before_email() {
    let (server, idp) = okta_pair().await;
    let org = server.create_sso_org(&[RETURN_TO]).await;
    let token = scim_token(&server, &org).await;
    let connection = connect(&server, &org, okta_at(&idp, json!({ "link_by_email": true }))).await;
    let ada = provision(&server, &token, "ada@acme.test", "00u-ada").await;
    let bob = provision(&server, &token, "bob@acme.test", "00u-bob").await;

    // The IdP changed Ada's email: still Ada, by her id.
    let renamed = json!({ "sub": "00u-ada", "email": "ada.lovelace@acme.test", "email_verified": true });
    let done = web_sign_in(&server, &connection, &renamed).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert_eq!(server.me(&session_cookie(&done).unwrap()).await.1["id"], ada["id"]);

    // Bob's address handed to someone else at the IdP: not Bob.
    let impostor = json!({ "sub": "00u-new-hire", "email": "bob@acme.test", "email_verified": true });
    let done = web_sign_in(&server, &connection, &impostor).await;
    assert_eq!(refused(&done), "external_id_mismatch");
    assert!(session_cookie(&done).is_none());
    // Bob himself is still Bob.
    let real_bob = json!({ "sub": "00u-bob", "email": "bob@acme.test", "email_verified": true });
    let done = web_sign_in(&server, &connection, &real_bob).await;
    assert_eq!(server.me(&session_cookie(&done).unwrap()).await.1["id"], bob["id"]);
}

/// SCIM requires only a userName: a user provisioned without an email is
/// grouped, signs in by the IdP's id, is deactivated like anyone else, and
/// cannot be given a password (nothing to sign in with it by).
#[tokio::test]
async fn users_without_an_email_are_provisioned_and_sign_in_by_idp_id() {
    let (server, idp) = okta_pair().await;
    let org = server.create_sso_org(&[RETURN_TO]).await;
    let token = scim_token(&server, &org).await;
    let connection = connect(&server, &org, okta_at(&idp, json!({ "link_by_email": true }))).await;
    let jdoe = json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "jdoe",
        "externalId": "00u-jdoe", "active": true, "name": { "givenName": "J", "familyName": "Doe" } });
    let (status, created) = server.scim(&token, Method::POST, "/scim/v2/Users", Some(jdoe)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!((created.get("emails"), &created["userName"]), (None, &json!("jdoe")), "{created}");
    let id = created["id"].as_str().unwrap();
    // A second one beside it: absent emails do not collide.
    let rroe = json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "rroe" });
    assert_eq!(server.scim(&token, Method::POST, "/scim/v2/Users", Some(rroe)).await.0, StatusCode::CREATED);
    let (_, found) =
        server.scim(&token, Method::GET, "/scim/v2/Users?filter=userName%20eq%20%22JDOE%22", None).await;
    assert_eq!((found["totalResults"].as_i64(), &found["Resources"][0]["id"]), (Some(1), &created["id"]));
    scim_group(&server, &token, "Field Staff", id).await;

    // Signs in by the IdP's id, with no email claim at all.
    let claims = json!({ "sub": "00u-jdoe" });
    let done = web_sign_in(&server, &connection, &claims).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    let session = session_cookie(&done).unwrap();
    let (_, me) = server.me(&session).await;
    assert_eq!((&me["id"], &me["email"], &me["user_name"]), (&created["id"], &Value::Null, &json!("jdoe")));
    let access = claims_of(&session);
    assert_eq!((access.get("email"), &access["groups"]), (None, &json!(["Field Staff"])));

    // A password would have no email to be typed beside.
    let user_path = format!("/admin/v1/orgs/{org}/users/{id}");
    let (status, body) = server
        .admin(Method::PATCH, &user_path, Some(json!({ "password": "correct horse battery staple" })))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["message"].as_str().unwrap().contains("no email address"), "{body}");
    assert_eq!(server.admin(Method::GET, &user_path, None).await.1["has_password"], false);

    // Deactivated like anyone: the session ends and sign-in is refused.
    let off = json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{ "op": "replace", "path": "active", "value": false }] });
    let (status, body) = server.scim(&token, Method::PATCH, &format!("/scim/v2/Users/{id}"), Some(off)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(server.me(&session).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(refused(&web_sign_in(&server, &connection, &claims).await), "user_deactivated");
}

/// Entra ID maps objectId to externalId when told to; the connection says
/// the token's `oid` is what to match.
#[tokio::test]
async fn azure_object_ids_match_scim_external_ids() {
    let (server, idp) = pair(TestDb::sqlite(), |p| format!("http://127.0.0.1:{p}/{TENANT}/v2.0"), &[]).await;
    let org = server.create_sso_org(&[RETURN_TO]).await;
    let token = scim_token(&server, &org).await;
    let oid = "5d0e6a1c-93b2-4f53-9d3e-0c1f2a3b4c5d";
    let user = provision(&server, &token, "linus@acme.test", oid).await;
    let connection = connect(&server, &org, azure(&idp, TENANT, json!({ "external_id_claim": "oid" }))).await;
    // No email at all: the id is enough.
    let claims = json!({ "sub": "pairwise", "tid": TENANT, "oid": oid, "ver": "2.0" });
    let done = web_sign_in(&server, &connection, &claims).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert_eq!(server.me(&session_cookie(&done).unwrap()).await.1["id"], user["id"]);
}

/// The groups the IdP asserts reach the access token, beside the SCIM
/// groups, as the connection chooses; and they last through refreshes.
#[tokio::test]
async fn idp_groups_reach_access_tokens() {
    let (server, idp) = okta_pair().await;
    let org = server.create_sso_org(&[RETURN_TO, crate::sso::APP_REDIRECT]).await;
    let token = scim_token(&server, &org).await;
    let user = provision(&server, &token, "ada@acme.test", "00u-ada").await;
    scim_group(&server, &token, "From SCIM", user["id"].as_str().unwrap()).await;
    let claims = json!({ "sub": "00u-ada", "email": "ada@acme.test", "email_verified": true,
        "groups": ["Engineering", "Admins", "Engineering"] });

    let both = connect(&server, &org, okta_at(&idp, json!({}))).await;
    let (tokens, refreshed) = native_tokens(&server, &both, &claims).await;
    let expected = json!(["Admins", "Engineering", "From SCIM"]);
    assert_eq!(claims_of(tokens["access_token"].as_str().unwrap())["groups"], expected);
    assert_eq!(
        claims_of(refreshed["access_token"].as_str().unwrap())["groups"],
        expected,
        "after a refresh too"
    );
    let done = web_sign_in(&server, &both, &claims).await;
    assert_eq!(claims_of(&session_cookie(&done).unwrap())["groups"], expected, "and in a browser's session");

    let idp_only = connect(&server, &org, okta_at(&idp, json!({ "groups_source": "idp" }))).await;
    let (tokens, _) = native_tokens(&server, &idp_only, &claims).await;
    assert_eq!(
        claims_of(tokens["access_token"].as_str().unwrap())["groups"],
        json!(["Admins", "Engineering"])
    );
    let scim_only = connect(&server, &org, okta_at(&idp, json!({ "groups_source": "scim" }))).await;
    let (tokens, _) = native_tokens(&server, &scim_only, &claims).await;
    let access = claims_of(tokens["access_token"].as_str().unwrap());
    assert_eq!((&access["groups"], access.get("groups_overage")), (&json!(["From SCIM"]), None));

    let (status, body) = server
        .admin(
            Method::POST,
            &format!("/admin/v1/orgs/{org}/connections"),
            Some(okta_at(&idp, json!({ "groups_source": "ldap" }))),
        )
        .await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("groups_source")));
}

/// Azure leaves the groups out past its limit and says so: the token says
/// its groups are incomplete, and so does the audit trail.
#[tokio::test]
async fn azure_group_overage_is_reported() {
    let (server, idp) = pair(TestDb::sqlite(), |p| format!("http://127.0.0.1:{p}/{TENANT}/v2.0"), &[]).await;
    let org = server.create_sso_org(&[RETURN_TO]).await;
    let connection = connect(
        &server,
        &org,
        azure(&idp, TENANT, json!({ "jit_provisioning": true, "allowed_email_domains": ["acme.test"] })),
    )
    .await;
    let claims = json!({ "sub": "p", "tid": TENANT, "oid": "5d0e6a1c-93b2-4f53-9d3e-0c1f2a3b4c5e", "ver": "2.0",
        "email": "many@acme.test", "hasgroups": true });
    let done = web_sign_in(&server, &connection, &claims).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    let access = claims_of(&session_cookie(&done).unwrap());
    assert_eq!(access["groups_overage"], true, "{access}");
    let events = sso_events(&server, &org).await;
    assert_eq!(events[0]["detail"]["groups_overage"], true, "{events:?}");
}

/// Where SCIM provisions, it decides who exists: no just-in-time creation
/// unless the connection says so, and a user SCIM deleted stays deleted.
#[tokio::test]
async fn scim_is_the_source_of_truth() {
    let (server, idp) = okta_pair().await;
    let org = server.create_sso_org(&[RETURN_TO]).await;
    let token = scim_token(&server, &org).await;
    let newcomer = json!({ "sub": "00u-new", "email": "new@acme.test", "email_verified": true });

    let jit = connect(&server, &org, okta_at(&idp, json!({ "jit_provisioning": true }))).await;
    assert_eq!(refused(&web_sign_in(&server, &jit, &newcomer).await), "user_not_provisioned");

    let alongside = connect(
        &server,
        &org,
        okta_at(&idp, json!({ "jit_provisioning": true, "jit_alongside_scim": true, "link_by_email": true })),
    )
    .await;
    let done = web_sign_in(&server, &alongside, &newcomer).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    let created = server.me(&session_cookie(&done).unwrap()).await.1;

    // SCIM deletes the user: the next sign-in does not bring them back.
    let (status, found) = server
        .scim(&token, Method::GET, "/scim/v2/Users?filter=userName%20eq%20%22new@acme.test%22", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    let scim_id = found["Resources"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(scim_id, created["id"].as_str().unwrap());
    let (status, _) = server.scim(&token, Method::DELETE, &format!("/scim/v2/Users/{scim_id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(refused(&web_sign_in(&server, &alongside, &newcomer).await), "user_deleted");
    // Not under another subject with the same address either.
    let same_address = json!({ "sub": "00u-other", "email": "new@acme.test", "email_verified": true });
    assert_eq!(refused(&web_sign_in(&server, &alongside, &same_address).await), "user_deleted");
    let events = sso_events(&server, &org).await;
    assert_eq!(
        (events[0]["outcome"].as_str(), events[0]["detail"]["reason"].as_str()),
        (Some("failure"), Some("user_deleted"))
    );
    let (_, users) = server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/users"), None).await;
    assert_eq!(users["items"], json!([]), "nobody was created");

    // SCIM provisions the person again: they sign in.
    let again = provision(&server, &token, "new@acme.test", "00u-new").await;
    let done = web_sign_in(&server, &alongside, &newcomer).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert_eq!(server.me(&session_cookie(&done).unwrap()).await.1["id"], again["id"]);
}

/// An IdP's email is believed only in domains its organization verified,
/// unless the connection says otherwise; and never in another
/// organization's verified domain.
#[tokio::test]
async fn idp_emails_are_believed_only_in_verified_domains() {
    let (server, idp) = okta_pair().await;
    let victim = server.create_org("Victim").await;
    server.verify_domain(&victim, "victim.test").await;
    let org = server.create_sso_org(&[RETURN_TO]).await;
    let cautious =
        connect(&server, &org, okta_at(&idp, json!({ "jit_provisioning": true, "link_by_email": true })))
            .await;
    let trusting = connect(
        &server,
        &org,
        okta_at(&idp, json!({ "jit_provisioning": true, "trust_unverified_email_domains": true })),
    )
    .await;

    let elsewhere = json!({ "sub": "00u-x", "email": "x@unverified.test", "email_verified": true });
    assert_eq!(refused(&web_sign_in(&server, &cautious, &elsewhere).await), "email_domain_not_verified");
    let done = web_sign_in(&server, &trusting, &elsewhere).await;
    assert_eq!(done.status, StatusCode::FOUND, "the connection trusts its IdP: {}", done.body);

    // An existing user in an unverified domain is not linked by email.
    server.create_user(&org, "old@legacy.test", None).await;
    let legacy = json!({ "sub": "00u-old", "email": "old@legacy.test", "email_verified": true });
    assert_eq!(refused(&web_sign_in(&server, &cautious, &legacy).await), "email_domain_not_verified");

    // Another organization's verified domain: refused even when trusted.
    let squat = json!({ "sub": "00u-cfo", "email": "cfo@victim.test", "email_verified": true });
    assert_eq!(refused(&web_sign_in(&server, &cautious, &squat).await), "email_domain_not_verified");
    assert_eq!(refused(&web_sign_in(&server, &trusting, &squat).await), "email_domain_owned_elsewhere");
    let (_, users) = server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/users"), None).await;
    let emails: Vec<&str> =
        users["items"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap()).collect();
    assert_eq!(emails, ["x@unverified.test", "old@legacy.test"]);
}

/// Home-realm discovery: an email finds its organization (the user's, or
/// the one that verified the domain) and that organization's connection
/// for the domain, whatever its kind; someone not yet provisioned starts
/// their first sign-in from their email.
#[tokio::test]
async fn an_email_finds_its_connection_in_every_kind_of_organization() {
    let (server, oidc) = okta_pair().await;
    let saml = SamlIdp::start().await;
    let start = |email: &str| {
        let path = format!("/v1/sso/start?email={email}&return_to={RETURN_TO}");
        let browser = browser();
        let server = &server;
        async move {
            let response = browser.get(server.url(&path)).send().await.unwrap();
            let status = response.status();
            let to = (status == StatusCode::FOUND).then(|| location(&response, &server.base));
            (browser, status, to)
        }
    };

    // OIDC only: a newcomer starts from their email and is created.
    let oidc_org = server.create_sso_org(&[RETURN_TO]).await;
    connect(&server, &oidc_org, okta_at(&oidc, json!({ "jit_provisioning": true }))).await;
    let (browser, status, to) = start("newcomer@acme.test").await;
    assert_eq!(status, StatusCode::FOUND);
    let authorize = to.unwrap();
    assert!(authorize.starts_with(&oidc.origin()), "{authorize}");
    let claims = json!({ "sub": "00u-newcomer", "email": "newcomer@acme.test", "email_verified": true });
    let callback = through_provider(&browser, &authorize, &server, &claims).await;
    let done = crate::sso::answer(browser.get(callback).send().await.unwrap()).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    let me = server.me(&session_cookie(&done).unwrap()).await.1;
    assert_eq!(
        (me["email"].as_str(), me["org_id"].as_str()),
        (Some("newcomer@acme.test"), Some(oidc_org.as_str()))
    );
    // Existing users of an organization with no verified domain, too.
    let legacy_org = server.create_sso_org_for(&[RETURN_TO], None).await;
    connect(&server, &legacy_org, okta_at(&oidc, json!({}))).await;
    server.create_user(&legacy_org, "kept@legacy.test", None).await;
    let (_, status, to) = start("kept@legacy.test").await;
    assert!(status == StatusCode::FOUND && to.unwrap().starts_with(&oidc.origin()));
    assert_eq!(start("unknown@legacy.test").await.1, StatusCode::NOT_FOUND, "nobody speaks for that domain");

    // SAML only, by a verified domain.
    let saml_org = server.create_sso_org_for(&[RETURN_TO], Some("ping.test")).await;
    let ping = json!({ "kind": "ping", "idp_metadata_url": saml.url("/metadata"), "jit_provisioning": true });
    connect(&server, &saml_org, ping).await;
    let (_, status, to) = start("someone@ping.test").await;
    assert_eq!(status, StatusCode::FOUND);
    assert!(to.unwrap().starts_with(&saml.url("/")), "to the SAML IdP");

    // Mixed: the connection whose domain list names the email's domain,
    // else the one for every domain.
    let mixed = server.create_sso_org_for(&[RETURN_TO], Some("mixed.test")).await;
    connect(&server, &mixed, okta_at(&oidc, json!({}))).await;
    let ping = json!({ "kind": "ping", "idp_metadata_url": saml.url("/metadata"), "allowed_email_domains": ["eu.mixed.test"] });
    connect(&server, &mixed, ping).await;
    let (_, _, to) = start("anna@eu.mixed.test").await;
    assert!(to.unwrap().starts_with(&saml.url("/")), "the EU staff sign in at Ping");
    let (_, _, to) = start("bert@mixed.test").await;
    assert!(to.unwrap().starts_with(&oidc.origin()), "everyone else at Okta");
}

/// A connection can name the IdP group of the organization's admins: the
/// user's role follows it at every sign-in, recorded as the connection's
/// doing; without a complete group list nothing changes.
#[tokio::test]
async fn an_idp_group_makes_organization_admins() {
    let (server, idp) = okta_pair().await;
    let org = server.create_sso_org(&[RETURN_TO]).await;
    let config = okta_at(&idp, json!({ "jit_provisioning": true, "admin_group": "Gatehouse Admins" }));
    let connection = connect(&server, &org, config).await;
    let ada = |groups: Value| json!({ "sub": "00u-ada", "email": "ada@acme.test", "email_verified": true, "groups": groups });
    let done = web_sign_in(&server, &connection, &ada(json!(["Staff", "Gatehouse Admins"]))).await;
    assert_eq!(role_of(&server, done).await, "admin");
    let done = web_sign_in(&server, &connection, &ada(json!(["Staff"]))).await;
    assert_eq!(role_of(&server, done).await, "member", "out of the group, out of the role");
    let done = web_sign_in(&server, &connection, &ada(json!(["gatehouse admins"]))).await;
    assert_eq!(role_of(&server, done).await, "member", "group names are exact");
    let (_, events) = server
        .admin(Method::GET, &format!("/admin/v1/orgs/{org}/audit-events?kind=user_updated"), None)
        .await;
    assert_eq!(events["items"][0]["actor"], format!("connection:{connection}"), "{events}");
    assert_eq!(events["items"].as_array().unwrap().len(), 2, "two changes, no change recorded for none");

    let bad = okta_at(&idp, json!({ "admin_group": "a\u{7}b" }));
    let (status, body) =
        server.admin(Method::POST, &format!("/admin/v1/orgs/{org}/connections"), Some(bad)).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("admin_group")), "{body}");
}

/// The role of the user a sign-in signed in.
async fn role_of(server: &TestServer, done: crate::sso::Callback) -> String {
    let cookie = session_cookie(&done).expect("signed in");
    let (_, me) = server.me(&cookie).await;
    let path =
        format!("/admin/v1/orgs/{}/users/{}", me["org_id"].as_str().unwrap(), me["id"].as_str().unwrap());
    server.admin(Method::GET, &path, None).await.1["role"].as_str().unwrap().to_owned()
}
