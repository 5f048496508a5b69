//! SAML 2.0 single sign-on (Ping Identity) against a real IdP (pysaml2 with
//! xmlsec1) on loopback: SP- and IdP-initiated, each signing profile,
//! encrypted assertions, and the attack corpus the IdP rig forges.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use gatehouse_testkit::TestDb;
use reqwest::header::{LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::saml_idp::SamlIdp;
use crate::support::{TestServer, on_both_backends};

const RETURN_TO: &str = "https://app.acme.test/signed-in";

async fn server_with(db: TestDb, tweak: impl FnOnce(&mut gatehouse::Settings)) -> TestServer {
    let server = TestServer::start_with(db, |settings, base| {
        settings.public_url = base.parse().unwrap();
        settings.allow_private_targets = true;
        tweak(settings);
    })
    .await;
    server.clock.set(Utc::now());
    server
}

/// A Ping connection to `idp` (by metadata URL), registered at the IdP;
/// returns (connection id, our entity id).
async fn ping(server: &TestServer, idp: &SamlIdp, org: &str, extra: Value) -> (String, String) {
    let mut config = json!({ "kind": "ping", "idp_metadata_url": idp.url("/metadata"),
        "jit_provisioning": true, "allowed_email_domains": ["acme.test"] });
    config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let (status, created) =
        server.admin(Method::POST, &format!("/admin/v1/orgs/{org}/connections"), Some(config)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let entity_id = created["sp_entity_id"].as_str().unwrap().to_owned();
    let response = reqwest::get(&entity_id).await.unwrap();
    let (status, content_type) = (response.status(), response.headers()["content-type"].clone());
    let metadata = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{metadata}");
    assert_eq!(content_type, "application/samlmetadata+xml");
    for part in [
        entity_id.as_str(),
        created["acs_url"].as_str().unwrap(),
        "X509Certificate",
        "AssertionConsumerService",
    ] {
        assert!(metadata.contains(part), "{part} in our metadata: {metadata}");
    }
    idp.register_sp(metadata).await;
    (id, entity_id)
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The form Ping answers with: where it posts, and what.
struct PostForm {
    action: String,
    fields: Vec<(String, String)>,
}

fn parse_form(html: &str) -> PostForm {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        Some(tag[start..][..tag[start..].find('"')?].to_owned())
    };
    let action = attr(&html[html.find("<form").expect("a form")..], "action").unwrap();
    let mut fields = Vec::new();
    for input in html.split("<input").skip(1) {
        if let (Some(name), Some(value)) = (attr(input, "name"), attr(input, "value")) {
            fields.push((name, value.replace("&#x2B;", "+").replace("&#43;", "+").replace("&quot;", "\"")));
        }
    }
    PostForm { action, fields }
}

struct Answer {
    status: StatusCode,
    location: Option<String>,
    session: Option<String>,
    body: Value,
}

async fn post(browser: &reqwest::Client, form: &PostForm) -> Answer {
    let body: String = form
        .fields
        .iter()
        .map(|(k, v)| {
            format!("{k}={}", percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC))
        })
        .collect::<Vec<_>>()
        .join("&");
    let response = browser
        .post(&form.action)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let location = response.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_owned());
    let session = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|c| c.to_str().unwrap().strip_prefix("gatehouse_session="))
        .map(|c| c.split(';').next().unwrap().to_owned())
        .find(|c| !c.is_empty());
    let body = response.json().await.unwrap_or(Value::Null);
    Answer { status, location, session, body }
}

/// A response the rig forges (`/forge?sp=…&{query}`), as the form a browser
/// posts to the ACS, returning to `RETURN_TO`.
async fn forged(idp: &SamlIdp, entity_id: &str, query: String) -> PostForm {
    let url = idp.url(&format!("/forge?sp={entity_id}&{query}"));
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "forging {url}: {:?}", response.text().await);
    let forged: Value = response.json().await.unwrap();
    PostForm {
        action: forged["acs"].as_str().unwrap().to_owned(),
        fields: vec![
            ("SAMLResponse".into(), forged["SAMLResponse"].as_str().unwrap().to_owned()),
            ("RelayState".into(), RETURN_TO.into()),
        ],
    }
}

fn user(name_id: &str) -> String {
    let user = json!({ "name_id": name_id, "attributes": { "firstName": ["Ada"], "lastName": ["Lovelace"], "groups": ["eng"] } });
    URL_SAFE_NO_PAD.encode(user.to_string())
}

/// SP-initiated: start, through the IdP (as `name_id`, signing `sign`), and
/// the form posted back.
async fn sp_initiated(
    server: &TestServer,
    connection: &str,
    name_id: &str,
    hooks: &str,
) -> (reqwest::Client, PostForm) {
    let browser = browser();
    let start = format!("/v1/sso/start?connection={connection}&return_to={RETURN_TO}");
    let response = browser.get(server.url(&start)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let to_idp = response.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(to_idp.contains("SAMLRequest=") && to_idp.contains("RelayState=ghs_"), "{to_idp}");
    let at_idp = browser.get(format!("{to_idp}&user={}&{hooks}", user(name_id))).send().await.unwrap();
    assert_eq!(at_idp.status(), StatusCode::OK);
    let form = parse_form(&at_idp.text().await.unwrap());
    (browser, form)
}

async fn signs_in(server: &TestServer, answer: &Answer, email: &str) {
    assert_eq!(
        (answer.status, answer.location.as_deref()),
        (StatusCode::FOUND, Some(RETURN_TO)),
        "{}",
        answer.body
    );
    let (status, me) = server.me(answer.session.as_deref().expect("a session cookie")).await;
    assert_eq!((status, me["email"].as_str()), (StatusCode::OK, Some(email)));
}

/// A server and the IdP, and an organization with a Ping connection that
/// also takes IdP-initiated sign-ins to `RETURN_TO`.
struct Rig {
    server: TestServer,
    idp: SamlIdp,
    org: String,
    connection: String,
    entity_id: String,
}

impl Rig {
    async fn start(db: TestDb) -> Self {
        Self::start_with(db, |_| {}).await
    }

    async fn start_with(db: TestDb, tweak: impl FnOnce(&mut gatehouse::Settings)) -> Self {
        let server = server_with(db, tweak).await;
        let idp = SamlIdp::start().await;
        let org = server.create_sso_org(&[RETURN_TO]).await;
        let idp_initiated = json!({ "allow_idp_initiated": true, "allowed_relay_states": [RETURN_TO] });
        let (connection, entity_id) = ping(&server, &idp, &org, idp_initiated).await;
        Self { server, idp, org, connection, entity_id }
    }
}

async fn ping_sign_in_every_way(db: TestDb) {
    let Rig { server, idp, org, connection, entity_id } = Rig::start(db).await;

    // SP-initiated, with the assertion signed (the default policy), then both,
    // the second time with the value wrapped in 76-column lines as some IdPs
    // send it.
    for sign in ["assertion", "both"] {
        let (browser, mut form) =
            sp_initiated(&server, &connection, "ada@acme.test", &format!("sign={sign}")).await;
        if sign == "both" {
            let value = &mut form.fields.iter_mut().find(|(k, _)| k == "SAMLResponse").unwrap().1;
            let lines: Vec<String> =
                value.as_bytes().chunks(76).map(|l| String::from_utf8(l.to_vec()).unwrap()).collect();
            *value = lines.join("\r\n");
        }
        let answer = post(&browser, &form).await;
        signs_in(&server, &answer, "ada@acme.test").await;
        // The same post again: its flow is spent.
        assert_eq!(post(&browser, &form).await.status, StatusCode::BAD_REQUEST, "{sign}: replayed");
    }
    // Only the response signed, while the policy wants the assertion signed.
    let (browser, form) = sp_initiated(&server, &connection, "ada@acme.test", "sign=response").await;
    let refused = post(&browser, &form).await;
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unsigned"))
    );

    // IdP-initiated, to an allowed RelayState; replaying it is refused.
    let browser = self::browser();
    let html = browser
        .get(idp.url(&format!(
            "/idp-init?sp={entity_id}&RelayState={RETURN_TO}&user={}",
            user("grace@acme.test")
        )))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = parse_form(&html);
    let answer = post(&browser, &form).await;
    signs_in(&server, &answer, "grace@acme.test").await;
    let replayed = post(&browser, &form).await;
    assert_eq!(
        (replayed.status, replayed.body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("replayed_assertion"))
    );
    let mut elsewhere = parse_form(&html);
    elsewhere.fields.retain(|(k, _)| k != "RelayState");
    elsewhere.fields.push(("RelayState".into(), "https://evil.test/".into()));
    assert_eq!(post(&browser, &elsewhere).await.body["error"], "relay_state_not_allowed");

    // A policy wanting the response signed, and encrypted assertions.
    let path = format!("/admin/v1/orgs/{org}/connections/{connection}");
    let mut config = server.admin(Method::GET, &path, None).await.1;
    for field in ["id", "client_secret_set", "sp_entity_id", "acs_url", "created_at", "updated_at"] {
        config.as_object_mut().unwrap().remove(field);
    }
    config["signed"] = json!("response");
    let (status, body) = server.admin(Method::PUT, &path, Some(config.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (browser, form) = sp_initiated(&server, &connection, "ada@acme.test", "sign=response").await;
    signs_in(&server, &post(&browser, &form).await, "ada@acme.test").await;
    // IdP-initiated under this policy: response signed, then both, then
    // encrypted.
    for hooks in ["sign=response", "sign=both", "sign=response&encrypt=aes256-gcm"] {
        let url = format!(
            "/idp-init?sp={entity_id}&RelayState={RETURN_TO}&user={}&{hooks}",
            user("grace@acme.test")
        );
        let browser = self::browser();
        let html = browser.get(idp.url(&url)).send().await.unwrap().text().await.unwrap();
        signs_in(&server, &post(&browser, &parse_form(&html)).await, "grace@acme.test").await;
    }
    // Signed AuthnRequests: the IdP verifies them with our metadata's
    // certificate, and refuses one whose request was altered.
    config["sign_authn_requests"] = json!(true);
    let (status, body) = server.admin(Method::PUT, &path, Some(config)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (browser, form) = sp_initiated(&server, &connection, "ada@acme.test", "sign=response").await;
    signs_in(&server, &post(&browser, &form).await, "ada@acme.test").await;
    let start = format!("/v1/sso/start?connection={connection}&return_to={RETURN_TO}");
    let response = self::browser().get(server.url(&start)).send().await.unwrap();
    let to_idp = response.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(to_idp.contains("SigAlg=") && to_idp.contains("Signature="), "{to_idp}");
    let altered = to_idp.replace("RelayState=ghs_", "RelayState=ghs_x");
    assert_eq!(
        reqwest::get(altered).await.unwrap().status(),
        StatusCode::BAD_REQUEST,
        "the IdP checks our signature"
    );

    // Encrypted assertions (RSA-OAEP key transport), AES-128 and AES-256 in
    // CBC and GCM.
    for (user, alg) in [
        ("linus@acme.test", "aes128-cbc"),
        ("ken@acme.test", "aes128-gcm"),
        ("barbara@acme.test", "aes256-cbc"),
        ("radia@acme.test", "aes256-gcm"),
    ] {
        let (browser, form) =
            sp_initiated(&server, &connection, user, &format!("sign=response&encrypt={alg}")).await;
        let sent = &form.fields.iter().find(|(k, _)| k == "SAMLResponse").unwrap().1;
        let sent =
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(sent).unwrap()).unwrap();
        assert!(
            sent.contains("EncryptedAssertion") && sent.contains(alg) && !sent.contains(user),
            "{alg}: {sent}"
        );
        signs_in(&server, &post(&browser, &form).await, user).await;
    }

    // The IdP rolls its certificate over: the first response signed with
    // the new key makes Gatehouse fetch the metadata again, and it signs in
    // with no admin involved.
    let rotated = reqwest::Client::new().post(idp.url("/rotate")).send().await.unwrap();
    assert!(rotated.status().is_success());
    let url = format!(
        "/idp-init?sp={entity_id}&RelayState={RETURN_TO}&user={}&sign=response",
        user("ada@acme.test")
    );
    let browser = self::browser();
    let html = browser.get(idp.url(&url)).send().await.unwrap().text().await.unwrap();
    signs_in(&server, &post(&browser, &parse_form(&html)).await, "ada@acme.test").await;

    let (_, events) =
        server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/audit-events?limit=200"), None).await;
    let saml: Vec<&Value> =
        events["items"].as_array().unwrap().iter().filter(|e| e["method"] == "saml").collect();
    assert!(saml.iter().filter(|e| e["outcome"] == "success").count() >= 5, "{saml:?}");
    assert!(saml.iter().any(|e| e["detail"]["reason"] == "replayed_assertion"), "{saml:?}");
}

/// Every forged response the rig makes is refused, and no session is
/// issued; the same forge's genuine response is accepted, so the refusals
/// are the attacks' doing.
#[tokio::test]
async fn the_attack_corpus_is_refused() {
    let Rig { server, idp, org, entity_id, .. } = Rig::start(TestDb::sqlite()).await;
    let forge = |case: &str| forged(&idp, &entity_id, format!("case={case}"));
    let genuine = post(&browser(), &forge("valid").await).await;
    assert_eq!(genuine.status, StatusCode::FOUND, "the control case: {}", genuine.body);

    let cases = [
        ("xsw1", "assertion_count"),
        ("xsw2", "assertion_count"),
        ("xsw3", "assertion_count"),
        ("xsw4", "assertion_count"),
        ("xsw5", "assertion_count"),
        ("xsw6", "assertion_count"),
        ("xsw7", "assertion_count"),
        ("xsw8", "assertion_count"),
        ("comment_in_name_id", "forbidden_markup"),
        ("pi_in_name_id", "forbidden_markup"),
        ("xxe", "forbidden_markup"),
        ("entity_expansion", "forbidden_markup"),
        ("stripped_signature", "unsigned"),
        ("unknown_certificate", "invalid_signature"),
        ("keyinfo_swap", "invalid_signature"),
        ("two_assertions", "assertion_count"),
        ("unsigned_assertion_in_signed_response", "unsigned"),
        ("expired", "expired"),
        ("not_yet_valid", "not_yet_valid"),
        ("wrong_audience", "wrong_audience"),
        ("wrong_recipient", "wrong_recipient"),
        ("wrong_destination", "wrong_destination"),
        ("sha1", "invalid_signature"),
        ("deflate_bomb", "not_xml"),
    ];
    let mut wrong = Vec::new();
    for (case, reason) in cases {
        let answer = post(&browser(), &forge(case).await).await;
        assert!(
            answer.session.is_none() && answer.status != StatusCode::FOUND,
            "{case} signed in: {}",
            answer.body
        );
        if (answer.status, answer.body["error"].as_str()) != (StatusCode::UNAUTHORIZED, Some(reason)) {
            wrong.push(format!("{case}: expected {reason}, got {} {}", answer.status, answer.body));
        }
    }
    assert!(wrong.is_empty(), "refused, but not for the expected reason:\n{}", wrong.join("\n"));

    // A post beyond the ACS's body limit is refused without being read.
    let mut oversized = forge("valid").await;
    oversized.fields[0].1 = "A".repeat(gatehouse_saml::MAX_RESPONSE_BASE64 + 16 * 1024);
    let answer = post(&browser(), &oversized).await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_post"))
    );

    // Unsolicited responses, where IdP-initiated sign-in is off.
    let (_, strict_entity) = ping(&server, &idp, &org, json!({})).await;
    let url = idp.url(&format!("/idp-init?sp={strict_entity}&user={}", user("ada@acme.test")));
    let form = parse_form(&reqwest::get(url).await.unwrap().text().await.unwrap());
    let answer = post(&browser(), &form).await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unsolicited"))
    );

    let (_, events) =
        server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/audit-events?limit=200"), None).await;
    let refusals = events["items"].as_array().unwrap().iter().filter(|e| e["outcome"] == "failure").count();
    assert!(refusals > cases.len(), "every refusal is in the audit trail");
    let users = server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/users"), None).await.1;
    let emails: Vec<&str> =
        users["items"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap()).collect();
    assert_eq!(emails, ["alice@acme.test"], "only the genuine sign-in made a user");
}

/// Home-realm discovery reaches SAML connections like any other: a user's
/// email starts their sign-in at the organization's Ping IdP (it answered
/// 500 when every stored connection was read as OpenID Connect), and the
/// sign-in finishes, recorded as SAML.
#[tokio::test]
async fn an_email_starts_sign_in_at_a_saml_idp() {
    let Rig { server, idp, org, connection, .. } = Rig::start(TestDb::sqlite()).await;
    // Grace's first sign-in makes her account; the next starts from her email.
    let (browser, form) = sp_initiated(&server, &connection, "grace@acme.test", "").await;
    signs_in(&server, &post(&browser, &form).await, "grace@acme.test").await;
    let browser = self::browser();
    let start = format!("/v1/sso/start?email=grace@acme.test&return_to={RETURN_TO}");
    let response = browser.get(server.url(&start)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND, "{:?}", response.text().await);
    let to_idp = response.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(to_idp.starts_with(&idp.url("/sso")) && to_idp.contains("SAMLRequest="), "{to_idp}");
    let at_idp = browser.get(format!("{to_idp}&user={}", user("grace@acme.test"))).send().await.unwrap();
    let answer = post(&browser, &parse_form(&at_idp.text().await.unwrap())).await;
    signs_in(&server, &answer, "grace@acme.test").await;
    let (_, events) =
        server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/audit-events?limit=20"), None).await;
    let sign_in = events["items"].as_array().unwrap().iter().find(|e| e["kind"] == "sso_sign_in").unwrap();
    assert_eq!(sign_in["method"], "saml");
}

/// A user created just in time through SAML is recorded as created through
/// SAML, not OpenID Connect.
#[tokio::test]
async fn a_saml_jit_user_is_recorded_as_saml() {
    let Rig { server, connection, org, idp: _idp, .. } = Rig::start(TestDb::sqlite()).await;
    let (browser, form) = sp_initiated(&server, &connection, "newcomer@acme.test", "").await;
    let answer = post(&browser, &form).await;
    signs_in(&server, &answer, "newcomer@acme.test").await;
    let (_, events) =
        server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/audit-events?limit=20"), None).await;
    let created = events["items"].as_array().unwrap().iter().find(|e| e["kind"] == "user_created").unwrap();
    assert_eq!(created["method"], "saml", "{created}");
}

/// Refused responses count against their address: past the limit, even a
/// genuine response is 429 until the block ends, and the block is recorded.
#[tokio::test]
async fn refused_responses_are_limited_per_address() {
    let rule = gatehouse_store::ThrottleRule { limit: 3, window: chrono::Duration::minutes(10) };
    let Rig { server, idp, entity_id, .. } =
        Rig::start_with(TestDb::sqlite(), |s| s.rate_limits.saml_acs_ip = Some(rule)).await;
    // Refused ten minutes ago by the service's clock; then, at the IdP's
    // time (the wall clock), the block has ended.
    server.clock.set(Utc::now() - chrono::Duration::minutes(10));
    let forged = |case: &str| forged(&idp, &entity_id, format!("case={case}"));
    for case in ["xsw1", "expired", "unknown_certificate"] {
        assert_eq!(post(&browser(), &forged(case).await).await.status, StatusCode::UNAUTHORIZED, "{case}");
    }
    let answer = post(&browser(), &forged("valid").await).await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("too_many_requests"))
    );
    assert!(answer.session.is_none());
    server.clock.set(Utc::now());
    assert_eq!(post(&browser(), &forged("valid").await).await.status, StatusCode::FOUND, "the block ends");
}

/// The time window is judged by the service's clock, not the machine's:
/// one genuine response is too early an hour before it was issued, too
/// late an hour after, and good at the time the IdP gave it. And an
/// assertion that answers a request stays an answer to it: posted as an
/// unsolicited one (the response's unsigned `InResponseTo` stripped, where
/// IdP-initiated sign-in is on), it is refused.
#[tokio::test]
async fn the_service_clock_judges_responses_and_answers_stay_answers() {
    let Rig { server, idp, entity_id, .. } = Rig::start(TestDb::sqlite()).await;
    let genuine = forged(&idp, &entity_id, "case=valid".into()).await;
    let issued = Utc::now();
    for (offset, reason) in [(-60, "not_yet_valid"), (60, "expired")] {
        server.clock.set(issued + chrono::Duration::minutes(offset));
        let answer = post(&browser(), &genuine).await;
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some(reason)),
            "{offset} minutes"
        );
    }
    server.clock.set(issued);
    signs_in(&server, &post(&browser(), &genuine).await, "alice@acme.test").await;

    let mut answering =
        forged(&idp, &entity_id, "case=valid&in_response_to=_a_request_of_another_browser".into()).await;
    let xml = base64::engine::general_purpose::STANDARD.decode(&answering.fields[0].1).unwrap();
    let xml = String::from_utf8(xml).unwrap();
    let stripped = xml.replacen(r#" InResponseTo="_a_request_of_another_browser""#, "", 1);
    assert_ne!(stripped, xml);
    assert!(stripped.contains(r#"InResponseTo="_a_request_of_another_browser""#), "the assertion's stays");
    answering.fields[0].1 = base64::engine::general_purpose::STANDARD.encode(stripped);
    let answer = post(&browser(), &answering).await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("in_response_to_mismatch")),
        "{}",
        answer.body
    );
    assert!(answer.session.is_none());
}

/// When the IdP's metadata endpoint is down at the hourly refresh, the last
/// good copy keeps sign-ins working, and the endpoint is tried again a
/// minute later, not on every request meanwhile; once it is back, the
/// refreshed copy lasts another hour.
#[tokio::test]
async fn a_metadata_outage_keeps_the_last_good_copy() {
    // The metadata is first read an hour and a minute ago by the service's
    // clock, which is then set to the IdP's (the wall clock): the copy is
    // due for a refresh, and the IdP's responses are fresh.
    let server = server_with(TestDb::sqlite(), |_| {}).await;
    server.clock.set(Utc::now() - chrono::Duration::minutes(61));
    let idp = SamlIdp::start().await;
    let org = server.create_sso_org(&[RETURN_TO]).await;
    let (connection, entity_id) = ping(&server, &idp, &org, json!({})).await;
    // Our SP metadata is built from the cached IdP metadata, so each GET of
    // it goes through the cache without needing a sign-in.
    let ours = || async { reqwest::get(&entity_id).await.unwrap().status() };
    let asked = idp.metadata_requests().await;

    idp.metadata_outage(true).await;
    server.clock.set(Utc::now());
    let (browser, form) = sp_initiated(&server, &connection, "ada@acme.test", "").await;
    signs_in(&server, &post(&browser, &form).await, "ada@acme.test").await;
    assert_eq!(idp.metadata_requests().await, asked + 1, "the stale copy was due for a refresh");
    for _ in 0..3 {
        assert_eq!(ours().await, StatusCode::OK);
    }
    assert_eq!(idp.metadata_requests().await, asked + 1, "not asked again within the minute");

    // A minute on, many requests at once while the endpoint is slow to
    // fail: one of them asks, the others wait for its answer.
    server.clock.advance(chrono::Duration::seconds(61));
    let answers = futures::future::join_all((0..5).map(|_| ours())).await;
    assert!(answers.iter().all(|s| *s == StatusCode::OK), "{answers:?}");
    assert_eq!(idp.metadata_requests().await, asked + 2, "asked again after a minute, once");

    idp.metadata_outage(false).await;
    server.clock.advance(chrono::Duration::seconds(61));
    assert_eq!(ours().await, StatusCode::OK);
    assert_eq!(idp.metadata_requests().await, asked + 3);
    server.clock.advance(chrono::Duration::minutes(59));
    assert_eq!(ours().await, StatusCode::OK);
    assert_eq!(idp.metadata_requests().await, asked + 3, "a good copy lasts an hour");
}

on_both_backends!(databases: ping_sign_in_every_way);

/// Users SCIM provisioned are matched by the attribute the connection names
/// (the IdP's id, sent as SCIM externalId) before their email, and the
/// groups the IdP asserts reach the access token beside the SCIM groups.
#[tokio::test]
async fn saml_identities_match_scim_ids_and_carry_groups() {
    let server = server_with(TestDb::sqlite(), |_| {}).await;
    let idp = SamlIdp::start().await;
    let org = server.create_sso_org(&[RETURN_TO]).await;
    let body = json!({ "label": "ping", "idp": "generic" });
    let (_, token) =
        server.admin(Method::POST, &format!("/admin/v1/orgs/{org}/scim-tokens"), Some(body)).await;
    let token = token["token"].as_str().unwrap();
    let scim_user = json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "ada@acme.test",
        "externalId": "ping-1234", "emails": [{ "value": "ada@acme.test", "primary": true }] });
    let (status, ada) = server.scim(token, Method::POST, "/scim/v2/Users", Some(scim_user)).await;
    assert_eq!(status, StatusCode::CREATED, "{ada}");
    let group = json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Pushed",
        "members": [{ "value": ada["id"] }] });
    assert_eq!(server.scim(token, Method::POST, "/scim/v2/Groups", Some(group)).await.0, StatusCode::CREATED);
    let (connection, _) =
        ping(&server, &idp, &org, json!({ "jit_provisioning": false, "external_id_attribute": "uid" })).await;

    // The IdP renamed her NameID and email; her id is the same.
    let renamed = json!({ "name_id": "ada.lovelace@acme.test", "attributes": {
        "uid": ["ping-1234"], "groups": ["Analysts", "Engineers"], "firstName": ["Ada"] } });
    let browser = browser();
    let start = format!("/v1/sso/start?connection={connection}&return_to={RETURN_TO}");
    let response = browser.get(server.url(&start)).send().await.unwrap();
    let to_idp = response.headers()[LOCATION].to_str().unwrap().to_owned();
    let encoded = URL_SAFE_NO_PAD.encode(renamed.to_string());
    let at_idp = browser.get(format!("{to_idp}&user={encoded}")).send().await.unwrap();
    let answer = post(&browser, &parse_form(&at_idp.text().await.unwrap())).await;
    assert_eq!(answer.status, StatusCode::FOUND, "{}", answer.body);
    let session = answer.session.expect("a session");
    assert_eq!(server.me(&session).await.1["id"], ada["id"]);
    let payload = URL_SAFE_NO_PAD.decode(session.split('.').nth(1).unwrap()).unwrap();
    let access: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(access["groups"], json!(["Analysts", "Engineers", "Pushed"]));
}
