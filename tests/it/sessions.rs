//! Sign-in, tokens, refresh rotation, logout and revocation.

use chrono::Duration;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestServer, execute_sql, on_both_backends};

/// Verifies `token` the way a relying app would: against the published JWKS.
async fn verify_with_jwks(server: &TestServer, token: &str) -> Value {
    let jwks: JwkSet =
        server.http.get(server.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let kid = header.kid.expect("tokens carry a kid");
    let jwk = jwks.find(&kid).expect("the signing key is published");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let validation = |audience: &str| {
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&["http://gatehouse.test"]);
        validation.set_audience(&[audience]);
        // The test clock is in the past relative to the wall clock
        // jsonwebtoken reads, so expiry is checked by hand below.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        validation
    };
    // The audience is the service's (the issuer, by default); an app that
    // expects another refuses the token.
    assert!(jsonwebtoken::decode::<Value>(token, &key, &validation("https://other.app")).is_err());
    jsonwebtoken::decode::<Value>(token, &key, &validation("http://gatehouse.test")).unwrap().claims
}

async fn sign_in_refresh_and_sign_out(server: TestServer) {
    let org = server.create_org("Acme").await;
    let user = server.create_user(&org, "Alice@Example.com", Some("correct horse battery")).await;

    // Email is matched case-insensitively.
    let (status, tokens) = server.login("alice@EXAMPLE.com", "correct horse battery").await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    let access = tokens["access_token"].as_str().unwrap();
    let refresh1 = tokens["refresh_token"].as_str().unwrap().to_owned();

    let claims = verify_with_jwks(&server, access).await;
    assert_eq!(claims["iss"], "http://gatehouse.test");
    assert_eq!(claims["sub"], user["id"]);
    assert_eq!(claims["org"], org.as_str());
    assert_eq!(claims["email"], "Alice@Example.com");
    assert_eq!(claims["auth_method"], "password");
    assert_eq!(claims["iat"], server.clock_now());
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 900);
    assert!(claims["sid"].is_string() && claims["jti"].is_string());
    assert_eq!(jsonwebtoken::decode_header(access).unwrap().alg, Algorithm::ES256);

    let (status, me) = server.me(access).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["id"], user["id"]);

    // Refresh rotates: a new pair, and the old refresh token is spent.
    let (status, rotated) = server.post("/v1/token/refresh", json!({ "refresh_token": refresh1 })).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let refresh2 = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh2, refresh1);
    let claims2 = verify_with_jwks(&server, rotated["access_token"].as_str().unwrap()).await;
    assert_eq!(claims2["sid"], claims["sid"], "same session");
    assert_eq!(claims2["auth_method"], "password", "the method survives refresh");

    let (status, body) = server.post("/v1/token/refresh", json!({ "refresh_token": refresh2 })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refresh3 = body["refresh_token"].as_str().unwrap().to_owned();

    // Logout ends the session: the current refresh token and the access
    // tokens of the session stop working.
    let (status, _) = server.post("/v1/logout", json!({ "refresh_token": refresh3 })).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = server.post("/v1/token/refresh", json!({ "refresh_token": refresh3 })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(server.me(access).await.0, StatusCode::UNAUTHORIZED);
    // Logging out twice, or with a token never issued, is not an error.
    assert_eq!(
        server.post("/v1/logout", json!({ "refresh_token": refresh3 })).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server.post("/v1/logout", json!({ "refresh_token": "ghr_nope" })).await.0,
        StatusCode::NO_CONTENT
    );
}

async fn reusing_a_refresh_token_revokes_the_session(server: TestServer) {
    let org = server.create_org("Acme").await;
    server.create_user(&org, "bob@example.com", Some("hunter2hunter2")).await;
    let (_, tokens) = server.login("bob@example.com", "hunter2hunter2").await;
    let stolen = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (_, legit) = server.post("/v1/token/refresh", json!({ "refresh_token": stolen })).await;
    let legit_refresh = legit["refresh_token"].as_str().unwrap().to_owned();
    let legit_access = legit["access_token"].as_str().unwrap().to_owned();

    // The attacker replays the spent token: refused, and the session is
    // revoked, so the legitimate holder's newer tokens die too.
    let (status, body) = server.post("/v1/token/refresh", json!({ "refresh_token": stolen })).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_grant")));
    let (status, _) = server.post("/v1/token/refresh", json!({ "refresh_token": legit_refresh })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(server.me(&legit_access).await.0, StatusCode::UNAUTHORIZED);

    // Other sessions of the same user are untouched.
    let (status, _) = server.login("bob@example.com", "hunter2hunter2").await;
    assert_eq!(status, StatusCode::OK);
}

async fn every_failed_sign_in_looks_the_same(server: TestServer) {
    let org = server.create_org("Acme").await;
    server.create_user(&org, "carol@example.com", Some("right password")).await;
    server.create_user(&org, "nopass@example.com", None).await;
    let inactive = server.create_user(&org, "gone@example.com", Some("right password")).await;
    let path = format!("/admin/v1/orgs/{org}/users/{}", inactive["id"].as_str().unwrap());
    let (status, _) = server.admin(Method::PATCH, &path, Some(json!({ "active": false }))).await;
    assert_eq!(status, StatusCode::OK);

    for (email, password) in [
        ("nobody@example.com", "right password"),
        ("carol@example.com", "wrong password"),
        ("carol@example.com", ""),
        ("nopass@example.com", ""),
        ("nopass@example.com", "anything at all"),
        ("gone@example.com", "right password"),
    ] {
        let (status, body) = server.login(email, password).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{email}");
        assert_eq!(body, json!({ "error": "invalid_credentials" }), "{email}");
    }

    // Each attempt is audited with its real reason; the password is not.
    let (_, events) = server.admin(Method::GET, &format!("/admin/v1/orgs/{org}/audit-events"), None).await;
    let logins = events["items"].as_array().unwrap().iter().filter(|e| e["kind"] == "login");
    let reasons: Vec<&str> = logins.map(|e| e["detail"]["reason"].as_str().unwrap()).collect();
    assert_eq!(
        reasons,
        ["inactive_user", "no_password", "no_password", "wrong_password", "wrong_password"],
        "newest first; the unknown email has no organization"
    );
    assert!(!events.to_string().contains("right password") && !events.to_string().contains("wrong password"));
    assert_eq!(events["items"][0]["device_os"], "iOS");
    assert_eq!(events["items"][0]["device_ip"], "127.0.0.1");
}

async fn deactivating_or_deleting_a_user_ends_their_sessions(server: TestServer) {
    let org = server.create_org("Acme").await;
    let dave = server.create_user(&org, "dave@example.com", Some("dave's password")).await;
    let path = format!("/admin/v1/orgs/{org}/users/{}", dave["id"].as_str().unwrap());
    let (_, t1) = server.login("dave@example.com", "dave's password").await;
    let (_, t2) = server.login("dave@example.com", "dave's password").await;

    let (status, body) = server.admin(Method::PATCH, &path, Some(json!({ "active": false }))).await;
    assert_eq!((status, body["active"].as_bool()), (StatusCode::OK, Some(false)));
    for t in [&t1, &t2] {
        let (status, _) =
            server.post("/v1/token/refresh", json!({ "refresh_token": t["refresh_token"] })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(server.me(t["access_token"].as_str().unwrap()).await.0, StatusCode::UNAUTHORIZED);
    }

    // Reactivation restores sign-in (but not the revoked sessions).
    server.admin(Method::PATCH, &path, Some(json!({ "active": true }))).await;
    let (status, t3) = server.login("dave@example.com", "dave's password").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.post("/v1/token/refresh", json!({ "refresh_token": t1["refresh_token"] })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    assert_eq!(server.admin(Method::DELETE, &path, None).await.0, StatusCode::NO_CONTENT);
    let (status, _) = server.post("/v1/token/refresh", json!({ "refresh_token": t3["refresh_token"] })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(server.me(t3["access_token"].as_str().unwrap()).await.0, StatusCode::UNAUTHORIZED);
}

/// A changed or removed password ends every session it signed in.
async fn changing_a_password_ends_its_sessions(server: TestServer) {
    let org = server.create_org("Acme").await;
    let erin = server.create_user(&org, "erin@example.com", Some("erin's first password")).await;
    let path = format!("/admin/v1/orgs/{org}/users/{}", erin["id"].as_str().unwrap());
    let (_, before) = server.login("erin@example.com", "erin's first password").await;
    let change = json!({ "password": "erin's second password" });
    assert_eq!(server.admin(Method::PATCH, &path, Some(change)).await.0, StatusCode::OK);
    let (status, _) =
        server.post("/v1/token/refresh", json!({ "refresh_token": before["refresh_token"] })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(server.me(before["access_token"].as_str().unwrap()).await.0, StatusCode::UNAUTHORIZED);

    let (status, after) = server.login("erin@example.com", "erin's second password").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.admin(Method::PATCH, &path, Some(json!({ "password": null }))).await.0, StatusCode::OK);
    assert_eq!(server.me(after["access_token"].as_str().unwrap()).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(server.login("erin@example.com", "erin's second password").await.0, StatusCode::UNAUTHORIZED);
}

/// Refresh tokens carry their issue time, so that their keys sit together
/// in the index. Tokens issued before that (stored by their plain hash)
/// still rotate, are still spent once, and still sign out.
async fn refresh_tokens_issued_before_ordered_keys_still_work(server: TestServer) {
    use gatehouse_session::{OpaqueToken, hash_opaque_token, ordered_token_key};
    let org = server.create_org("Acme").await;
    server.create_user(&org, "old@example.com", Some("correct horse battery")).await;
    let (status, tokens) = server.login("old@example.com", "correct horse battery").await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let issued = tokens["refresh_token"].as_str().unwrap().to_owned();
    let millis = server.state.clock().now().timestamp_millis();
    assert!(issued.starts_with(&format!("ghr_{millis:012x}.")), "{issued}");

    // Two sessions' tokens turned into tokens of the old form, as an
    // upgraded database holds them.
    let url = server.db.url().to_owned();
    let rewrite = |new: String| {
        let url = url.clone();
        async move {
            let old = OpaqueToken::generate("ghr");
            let sql = "UPDATE refresh_tokens SET token_hash = $1 WHERE token_hash = $2";
            let keys = [hash_opaque_token(old.plain()), ordered_token_key(&new)];
            assert_eq!(execute_sql(&url, sql, &[&keys[0], &keys[1]]).await, 1);
            old.plain().to_owned()
        }
    };
    let old = rewrite(issued).await;
    let (_, other) = server.login("old@example.com", "correct horse battery").await;
    let old_other = rewrite(other["refresh_token"].as_str().unwrap().to_owned()).await;

    let (status, rotated) = server.post("/v1/token/refresh", json!({ "refresh_token": old })).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let next = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert!(next.starts_with(&format!("ghr_{millis:012x}.")), "its successor has the new form");
    // Spent: presented again, it is reuse, which ends the session.
    let (status, body) = server.post("/v1/token/refresh", json!({ "refresh_token": old })).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_grant")));
    let (status, _) = server.post("/v1/token/refresh", json!({ "refresh_token": next })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the session ended");
    // The other session's old token signs out.
    assert_eq!(
        server.post("/v1/logout", json!({ "refresh_token": old_other })).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, _) = server.post("/v1/token/refresh", json!({ "refresh_token": old_other })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "signed out");
}

on_both_backends!(
    refresh_tokens_issued_before_ordered_keys_still_work,
    changing_a_password_ends_its_sessions,
    sign_in_refresh_and_sign_out,
    reusing_a_refresh_token_revokes_the_session,
    every_failed_sign_in_looks_the_same,
    deactivating_or_deleting_a_user_ends_their_sessions,
);

#[tokio::test]
async fn access_tokens_expire_on_the_injected_clock() {
    let server = TestServer::sqlite().await;
    let org = server.create_org("Acme").await;
    server.create_user(&org, "erin@example.com", Some("erin's password")).await;
    let (_, tokens) = server.login("erin@example.com", "erin's password").await;
    let access = tokens["access_token"].as_str().unwrap();
    server.clock.advance(Duration::minutes(14));
    assert_eq!(server.me(access).await.0, StatusCode::OK);
    server.clock.advance(Duration::minutes(2));
    let (status, body) = server.me(access).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_token")));
    // The refresh token still works, within the session's lifetime...
    let (status, _) =
        server.post("/v1/token/refresh", json!({ "refresh_token": tokens["refresh_token"] })).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn sessions_end_at_their_absolute_lifetime() {
    let server = TestServer::sqlite().await;
    let org = server.create_org("Acme").await;
    server.create_user(&org, "fay@example.com", Some("fay's password")).await;
    let (_, mut tokens) = server.login("fay@example.com", "fay's password").await;
    // Refreshing every week does not extend the 30-day session.
    for _ in 0..4 {
        server.clock.advance(Duration::days(7));
        let (status, next) =
            server.post("/v1/token/refresh", json!({ "refresh_token": tokens["refresh_token"] })).await;
        assert_eq!(status, StatusCode::OK);
        tokens = next;
    }
    server.clock.advance(Duration::days(3));
    let (status, _) =
        server.post("/v1/token/refresh", json!({ "refresh_token": tokens["refresh_token"] })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forged_and_foreign_tokens_are_refused() {
    let server = TestServer::sqlite().await;
    let other = TestServer::sqlite().await;
    for s in [&server, &other] {
        let org = s.create_org("Acme").await;
        s.create_user(&org, "gus@example.com", Some("gus's password")).await;
    }
    let (_, theirs) = other.login("gus@example.com", "gus's password").await;
    let (_, ours) = server.login("gus@example.com", "gus's password").await;
    let ours = ours["access_token"].as_str().unwrap();

    // Signed by another deployment's key.
    assert_eq!(server.me(theirs["access_token"].as_str().unwrap()).await.0, StatusCode::UNAUTHORIZED);
    // Payload swapped.
    let mut parts: Vec<&str> = ours.split('.').collect();
    let forged_payload = base64_url(&json!({ "sub": "someone-else" }).to_string());
    parts[1] = &forged_payload;
    assert_eq!(server.me(&parts.join(".")).await.0, StatusCode::UNAUTHORIZED);
    // alg=none.
    let none =
        format!("{}.{}.", base64_url(r#"{"alg":"none","typ":"JWT"}"#), ours.split('.').nth(1).unwrap());
    assert_eq!(server.me(&none).await.0, StatusCode::UNAUTHORIZED);
    for junk in ["", "x", "a.b.c", "Basic abc"] {
        let (status, body) = server.me(junk).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{junk:?} {body}");
    }
    let (status, _) = server.send(server.http.get(server.url("/v1/me"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn eddsa_can_be_selected() {
    let server = TestServer::start(gatehouse_testkit::TestDb::sqlite(), |s| {
        s.signing_alg = gatehouse_session::SigningAlgorithm::EdDsa;
    })
    .await;
    let org = server.create_org("Acme").await;
    server.create_user(&org, "hal@example.com", Some("hal's password")).await;
    let (_, tokens) = server.login("hal@example.com", "hal's password").await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(jsonwebtoken::decode_header(access).unwrap().alg, Algorithm::EdDSA);
    assert_eq!(verify_with_jwks(&server, access).await["email"], "hal@example.com");
}
