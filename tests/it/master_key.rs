//! `gatehouse master-key`: rotating the key that seals stored secrets while
//! the service runs, on the real binary.

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::cli::{Process, call, gatehouse};
use crate::stub::Stub;

/// Runs `gatehouse master-key <args>` with `env`; its stdout.
fn master_key(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = gatehouse(dir).arg("master-key").args(args).envs(env.iter().copied()).output().unwrap();
    assert!(out.status.success(), "master-key {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// An organization signing in through `stub` with an API key in a header,
/// a user, and an OIDC connection with a client secret: one of each kind of
/// sealed value besides the signing key.
async fn sealed_setup(base: &str, admin: &str, stub: &Stub) -> String {
    let body = json!({ "name": "Acme", "enterprise_toolkit": true });
    let (_, org) = call(Method::POST, format!("{base}/admin/v1/orgs"), Some(admin), Some(body)).await;
    let org = org["id"].as_str().unwrap().to_owned();
    let user = json!({ "email": "bob@example.com", "display_name": "Bob" });
    call(Method::POST, format!("{base}/admin/v1/orgs/{org}/users"), Some(admin), Some(user)).await;
    let rest = json!({ "authentication_url": format!("{}/login", stub.base), "http_action": "POST",
        "data_as": "json", "headers": [{ "name": "X-Api-Key", "value": "api-key-123" }] });
    let (status, body) =
        call(Method::PUT, format!("{base}/admin/v1/orgs/{org}/external-auth/rest"), Some(admin), Some(rest))
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let oidc = json!({ "kind": "okta", "issuer": "https://acme.okta.com/oauth2/default", "client_id": "0oa1",
        "client_secret": "oidc-secret-456" });
    let (status, body) =
        call(Method::POST, format!("{base}/admin/v1/orgs/{org}/connections"), Some(admin), Some(oidc)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    org
}

async fn sign_in(base: &str, stub: &Stub) -> Value {
    let (status, tokens) = call(
        Method::POST,
        format!("{base}/v1/login"),
        None,
        Some(json!({ "email": "bob@example.com", "password": "pw" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let r = stub.wait_for(1).await.remove(0);
    assert_eq!(r.header("x-api-key").as_deref(), Some("api-key-123"), "the sealed header still opens");
    tokens
}

fn key_ids(status: &str) -> Vec<String> {
    status.lines().map(|l| l.split(' ').next().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn rotating_the_master_key_while_serving_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("GATEHOUSE_ALLOW_PRIVATE_TARGETS", "true")];
    let out = gatehouse(dir.path()).args(["admin-token", "create", "--label", "ops"]).output().unwrap();
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut command = gatehouse(dir.path());
    command.envs(env);
    let server = Process::serve(command, dir.path(), "serve").await;
    let base = server.base.clone();
    let stub = Stub::start().await;
    sealed_setup(&base, &admin, &stub).await;
    let before = sign_in(&base, &stub).await;

    let status = master_key(dir.path(), &env, &["status"]);
    let old = key_ids(&status)[0].clone();
    assert!(
        status.contains("(seals): 3 values"),
        "a signing key, a REST configuration, a client secret: {status}"
    );

    let rotated = master_key(dir.path(), &env, &["rotate"]);
    assert!(rotated.contains("3 re-sealed") || rotated.contains("re-sealed"), "{rotated}");
    let file = std::fs::read_to_string(dir.path().join("data/master.key")).unwrap();
    assert_eq!(file.lines().count(), 2, "the new key first, the old one after it");
    let status = master_key(dir.path(), &env, &["status"]);
    let ids = key_ids(&status);
    assert_ne!(ids[0], old);
    assert!(status.contains(&format!("{} (seals): 3 values", ids[0])), "{status}");
    assert!(status.contains(&format!("{old} (opens only): 0 values")), "{status}");

    // The running service opens what was re-sealed under a key it had not
    // read, and its sessions go on.
    let after = sign_in(&base, &stub).await;
    let (status, _) = call(
        Method::POST,
        format!("{base}/v1/token/refresh"),
        None,
        Some(json!({ "refresh_token": before["refresh_token"] })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "a session from before the rotation");
    let (status, _) = call(Method::GET, format!("{base}/v1/me"), after["access_token"].as_str(), None).await;
    assert_eq!(status, StatusCode::OK);

    // Nothing is sealed with the old key any more: it can go.
    assert!(master_key(dir.path(), &env, &["prune"]).contains(&old));
    let file = std::fs::read_to_string(dir.path().join("data/master.key")).unwrap();
    assert_eq!(file.lines().count(), 1);
    sign_in(&base, &stub).await;
    drop(server);
    let mut command = gatehouse(dir.path());
    command.envs(env);
    let restarted = Process::serve(command, dir.path(), "restarted").await;
    sign_in(&restarted.base, &stub).await;
    let (status, _) = call(
        Method::POST,
        format!("{}/v1/token/refresh", restarted.base),
        None,
        Some(json!({ "refresh_token": after["refresh_token"] })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // No secret was ever written in the clear, under either key.
    let db = std::fs::read(dir.path().join("data/gatehouse.db")).unwrap();
    for secret in ["api-key-123", "oidc-secret-456"] {
        assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} stored in clear");
    }
}

/// With the keys in GATEHOUSE_MASTER_KEY, `rotate` says how to go about it;
/// after the new key is put first, `reseal` moves everything under it.
#[tokio::test]
async fn keys_in_the_environment_rotate_by_reseal() {
    let dir = tempfile::tempdir().unwrap();
    let old = master_key(dir.path(), &[], &["generate"]).trim().to_owned();
    let new = master_key(dir.path(), &[], &["generate"]).trim().to_owned();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("g.db").display());
    let env_old = [("GATEHOUSE_DATABASE_URL", url.as_str()), ("GATEHOUSE_MASTER_KEY", old.as_str())];
    assert_eq!(key_ids(&master_key(dir.path(), &env_old, &["status"])).len(), 1);

    let out = gatehouse(dir.path()).args(["master-key", "rotate"]).envs(env_old).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GATEHOUSE_MASTER_KEY") && stderr.contains("reseal"), "{stderr}");
    assert!(!stderr.contains(&old), "the key is not echoed");

    let both = format!("{new},{old}");
    let env_both = [("GATEHOUSE_DATABASE_URL", url.as_str()), ("GATEHOUSE_MASTER_KEY", both.as_str())];
    assert!(master_key(dir.path(), &env_both, &["reseal"]).contains("1 re-sealed"));
    let status = master_key(dir.path(), &env_both, &["status"]);
    assert!(status.lines().nth(1).unwrap().ends_with("(opens only): 0 values"), "{status}");
    assert!(master_key(dir.path(), &env_both, &["prune"]).contains("remove it from GATEHOUSE_MASTER_KEY"));
    let env_new = [("GATEHOUSE_DATABASE_URL", url.as_str()), ("GATEHOUSE_MASTER_KEY", new.as_str())];
    assert_eq!(
        key_ids(&master_key(dir.path(), &env_new, &["status"])).len(),
        1,
        "opens with the new key alone"
    );
}

/// Two nodes on one PostgreSQL share a key file: a rotation run beside them
/// reaches both, and both keep serving.
#[tokio::test]
async fn a_rotation_reaches_every_node() {
    let Some(db) = gatehouse_testkit::TestDb::postgres().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("keys/master.key");
    std::fs::create_dir_all(key_file.parent().unwrap()).unwrap();
    std::fs::write(&key_file, master_key(dir.path(), &[], &["generate"])).unwrap();
    let key_file = key_file.to_str().unwrap().to_owned();
    let env = [
        ("GATEHOUSE_DATABASE_URL", db.url()),
        ("GATEHOUSE_MASTER_KEY_FILE", key_file.as_str()),
        ("GATEHOUSE_ALLOW_PRIVATE_TARGETS", "true"),
    ];
    let out =
        gatehouse(dir.path()).args(["admin-token", "create", "--label", "ops"]).envs(env).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let node = || {
        let mut command = gatehouse(dir.path());
        command.envs(env);
        command
    };
    let a = Process::serve(node(), dir.path(), "a").await;
    let b = Process::serve(node(), dir.path(), "b").await;
    let stub = Stub::start().await;
    let org = sealed_setup(&a.base, &admin, &stub).await;
    let tokens = sign_in(&b.base, &stub).await;

    master_key(dir.path(), &env, &["rotate"]);
    // Before either node has opened anything sealed under the new key, one
    // seals something new: it must use the new key, not the one a rotation
    // has put second, or pruning would make it unreadable.
    let rest = json!({ "authentication_url": format!("{}/login", stub.base), "http_action": "POST",
        "data_as": "json", "headers": [{ "name": "X-Api-Key", "value": "api-key-123" }] });
    let (status, body) = call(
        Method::PUT,
        format!("{}/admin/v1/orgs/{org}/external-auth/rest", b.base),
        Some(&admin),
        Some(rest),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let status = master_key(dir.path(), &env, &["status"]);
    assert!(status.lines().nth(1).unwrap().ends_with("(opens only): 0 values"), "{status}");
    for node in [&a, &b] {
        sign_in(&node.base, &stub).await;
    }
    let (status, _) = call(
        Method::POST,
        format!("{}/v1/token/refresh", a.base),
        None,
        Some(json!({ "refresh_token": tokens["refresh_token"] })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(master_key(dir.path(), &env, &["prune"]).contains("dropped"));
    for node in [&a, &b] {
        sign_in(&node.base, &stub).await;
    }
}
