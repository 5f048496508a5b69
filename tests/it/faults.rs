//! Faults, provoked for real: the database going away under load, the
//! organization's service misbehaving, a process killed mid-write.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use gatehouse_testkit::TestDb;
use reqwest::StatusCode;

use crate::proxy::Proxy;
use crate::support::TestServer;

/// A Gatehouse on PostgreSQL, reached through a proxy the test can cut.
async fn postgres_behind_a_proxy() -> Option<(TestServer, Proxy)> {
    let db = TestDb::postgres().await?;
    let mut url = url::Url::parse(db.url()).unwrap();
    let upstream = (url.host_str().unwrap(), url.port().unwrap_or(5432));
    let upstream = tokio::net::lookup_host(upstream).await.unwrap().next().unwrap();
    let proxy = Proxy::start(upstream).await;
    url.set_port(Some(proxy.addr.port())).unwrap();
    let server = TestServer::start(db, |s| s.database_url = url.to_string()).await;
    Some((server, proxy))
}

/// While the database is down, requests fail cleanly (503 with
/// `Retry-After`, never 500), and once it is back they succeed again
/// without restarting Gatehouse.
#[tokio::test]
async fn the_database_going_away_mid_load_is_a_clean_503() {
    let Some((server, proxy)) = postgres_behind_a_proxy().await else { return };
    let org = server.create_sso_org(&["https://app.example.com/"]).await;
    server.create_user(&org, "ada@example.com", Some("correct horse battery")).await;
    let (_, token) = server
        .admin(
            reqwest::Method::POST,
            &format!("/admin/v1/orgs/{org}/scim-tokens"),
            Some(serde_json::json!({ "label": "okta", "idp": "okta" })),
        )
        .await;
    let scim_token = token["token"].as_str().unwrap().to_owned();
    assert_eq!(server.login("ada@example.com", "correct horse battery").await.0, StatusCode::OK);

    let server = Arc::new(server);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, unavailable) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (server, stop, ok, unavailable) = (server.clone(), stop.clone(), ok.clone(), unavailable.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let response = server
                        .http
                        .post(server.url("/v1/login"))
                        .json(&serde_json::json!({ "email": "ada@example.com", "password": "correct horse battery" }))
                        .send()
                        .await
                        .unwrap();
                    match response.status() {
                        StatusCode::OK => ok.fetch_add(1, Ordering::SeqCst),
                        StatusCode::SERVICE_UNAVAILABLE => {
                            let retry = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                            assert_eq!(retry.as_deref(), Some("5"), "503 says when to retry");
                            let body: serde_json::Value = response.json().await.unwrap();
                            assert_eq!(body["error"], "database_unavailable");
                            unavailable.fetch_add(1, Ordering::SeqCst)
                        }
                        other => panic!("a sign-in during the outage answered {other}: {:?}", response.text().await),
                    };
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ok.load(Ordering::SeqCst);
    assert!(before > 0, "the load runs");
    proxy.cut();
    // The outage is seen by every surface the same way.
    let ready = server.http.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let scim = server.http.get(server.url("/scim/v2/Users")).bearer_auth(&scim_token).send().await.unwrap();
    assert_eq!(scim.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(scim.headers().get("retry-after").unwrap(), "5");
    let body: serde_json::Value = scim.json().await.unwrap();
    assert_eq!(
        (body["status"].as_str(), body["schemas"][0].as_str()),
        (Some("503"), Some("urn:ietf:params:scim:api:messages:2.0:Error"))
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = unavailable.load(Ordering::SeqCst);
    assert!(during > 0, "requests failed as unavailable during the outage");
    proxy.restore();

    // Back without a restart: sign-ins succeed again.
    let resumed = ok.load(Ordering::SeqCst);
    let mut waited = Duration::ZERO;
    while ok.load(Ordering::SeqCst) < resumed + 10 {
        assert!(waited < Duration::from_secs(30), "sign-ins did not resume after the database came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(server.http.get(server.url("/readyz")).send().await.unwrap().status(), StatusCode::OK);
}

/// An organization with the user bob@example.com, made through the real
/// binary's admin API at `base`; the organization's id.
async fn org_with_bob(base: &str, admin: &str) -> String {
    use crate::cli::call;
    let body = serde_json::json!({ "name": "Acme" });
    let (status, org) =
        call(reqwest::Method::POST, format!("{base}/admin/v1/orgs"), Some(admin), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{org}");
    let org = org["id"].as_str().unwrap().to_owned();
    let user = serde_json::json!({ "email": "bob@example.com", "display_name": "Bob" });
    let (status, _) =
        call(reqwest::Method::POST, format!("{base}/admin/v1/orgs/{org}/users"), Some(admin), Some(user))
            .await;
    assert_eq!(status, StatusCode::CREATED);
    org
}

/// How the organization's service misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Misbehaviour {
    /// Reads the request and never answers.
    Silent,
    /// Resets the connection once the request arrives.
    Reset,
    /// Answers 503.
    ServerError,
    /// Answers 200 with a body that never ends.
    EndlessBody,
}

/// A service on loopback that misbehaves as told, on raw TCP; with when it
/// accepted each connection.
async fn misbehaving(how: Misbehaviour) -> (String, Arc<std::sync::Mutex<Vec<std::time::Instant>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
    let accepted = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            accepted.lock().unwrap().push(std::time::Instant::now());
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut request = vec![0u8; 16 * 1024];
                let mut read = 0;
                while !request[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut request[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                }
                match how {
                    Misbehaviour::Silent => tokio::time::sleep(Duration::from_secs(300)).await,
                    Misbehaviour::Reset => {
                        let std = stream.into_std().unwrap();
                        socket2::SockRef::from(&std).set_linger(Some(Duration::ZERO)).unwrap();
                        drop(std);
                    }
                    Misbehaviour::ServerError => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy")
                            .await;
                    }
                    Misbehaviour::EndlessBody => {
                        let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                        if stream.write_all(head).await.is_err() {
                            return;
                        }
                        let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
                        while stream.write_all(chunk.as_bytes()).await.is_ok() {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
            });
        }
    });
    (base, connections)
}

/// The organization's service misbehaves (no answer past its timeout,
/// reset connections, 5xx, an endless body) while a thousand sign-ins run
/// at once against the real binary: no crash, every request ends with a
/// clean answer well within its time, and memory stays bounded.
#[tokio::test]
async fn a_misbehaving_service_under_a_thousand_concurrent_sign_ins() {
    use reqwest::Method;

    use crate::cli::{Process, call, gatehouse};
    const SIGN_INS: usize = 1000;
    // The calls one organization's service may have in progress.
    const IN_PROGRESS: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let out = gatehouse(dir.path()).args(["admin-token", "create", "--label", "faults"]).output().unwrap();
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut command = gatehouse(dir.path());
    command
        .env("GATEHOUSE_ALLOW_PRIVATE_TARGETS", "true")
        .env("GATEHOUSE_LOG_LEVEL", "warn")
        .env("GATEHOUSE_LOCKOUT", "off")
        .env("GATEHOUSE_LIMIT_LOGIN_IP", "off");
    let server = Process::serve(command, dir.path(), "serve").await;
    let base = server.base.clone();
    let org = org_with_bob(&base, &admin).await;

    let http = reqwest::Client::builder().pool_max_idle_per_host(SIGN_INS).build().unwrap();
    for (how, expected) in [
        (Misbehaviour::Silent, StatusCode::SERVICE_UNAVAILABLE),
        (Misbehaviour::Reset, StatusCode::SERVICE_UNAVAILABLE),
        (Misbehaviour::ServerError, StatusCode::UNAUTHORIZED),
        (Misbehaviour::EndlessBody, StatusCode::OK),
    ] {
        let (upstream, connections) = misbehaving(how).await;
        let config = serde_json::json!({ "authentication_url": format!("{upstream}/login"), "http_action": "POST",
            "data_as": "json", "body": "{\"p\":\"{{USERPASSWORD}}\"}", "timeout_ms": 1000 });
        let (status, _) = call(
            Method::PUT,
            format!("{base}/admin/v1/orgs/{org}/external-auth/rest"),
            Some(&admin),
            Some(config),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let sign_ins = (0..SIGN_INS).map(|_| {
            let request = http
                .post(format!("{base}/v1/login"))
                .json(&serde_json::json!({ "email": "bob@example.com", "password": "pw" }));
            // Far past the service's 1 s timeout: a request still running
            // by then was left hanging.
            async move { tokio::time::timeout(Duration::from_secs(60), request.send()).await }
        });
        let answers = futures::future::join_all(sign_ins).await;
        let mut seen = std::collections::BTreeMap::new();
        for answer in answers {
            let response = answer.expect("a sign-in was left hanging").expect("the server answered");
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            *seen.entry(format!("{status} {}", body["error"].as_str().unwrap_or(""))).or_insert(0) += 1;
        }
        // The service's own answer, or, where it could not give one within
        // its timeout under this load, a clean 503 saying so.
        let expected = format!(
            "{} {}",
            expected.as_u16(),
            match expected {
                StatusCode::OK => "",
                StatusCode::UNAUTHORIZED => "invalid_credentials",
                _ => "external_auth_unavailable",
            }
        );
        let unavailable = "503 external_auth_unavailable".to_owned();
        assert!(seen.keys().all(|k| *k == expected || *k == unavailable), "{how:?}: {seen:?}");
        // The first calls to reach the service, as many as it may have in
        // progress (64, `crates/outbound/src/in_flight.rs`), wait for no
        // turn, so each ends with the service's own answer. How many more
        // do within their 1 s depends on how fast the machine is, which is
        // for a benchmark to measure: a quarter of them, as this test
        // asked once, was 236 of the 1,000 on a slow guest running the
        // whole suite.
        assert!(seen.get(&expected).is_some_and(|n| *n >= IN_PROGRESS), "{how:?}: {seen:?}");
        if how == Misbehaviour::Silent {
            // No call to a service that never answers ends before its 1 s
            // timeout, so until the first of them ends no more than the
            // calls one service may have in progress (64,
            // `crates/outbound/src/in_flight.rs`) can have reached it; the
            // other sign-ins wait for a turn. Counted over the half second
            // after its first connection, which leaves the first call half
            // a second to connect. (Each call that times out closes its
            // connection, and the next turn opens another, so the whole
            // phase opens more than 64.)
            let accepted = connections.lock().unwrap().clone();
            let first = *accepted.first().expect("the service was called");
            let early =
                accepted.iter().filter(|at| at.duration_since(first) < Duration::from_millis(500)).count();
            assert!(
                early <= IN_PROGRESS,
                "{early} connections in the first half second, {} in all",
                accepted.len()
            );
        }
        assert_eq!(
            call(Method::GET, format!("{base}/healthz"), None, None).await.0,
            StatusCode::OK,
            "{how:?}"
        );
    }
    // Measured: about 73 MiB at peak for the debug build (90 before the
    // calls to one service were bounded). Unbounded
    // buffering of the endless bodies, or of a thousand stuck requests,
    // would be far above this.
    let peak = server.peak_memory_mib();
    eprintln!("peak memory: {peak} MiB");
    assert!(peak < 256, "the server peaked at {peak} MiB");
    assert!(!server.log_text().contains("panicked"), "{}", server.log_text());
}

/// A node killed with SIGKILL in the middle of SCIM writes leaves no partial
/// resource: after a restart every create it acknowledged is there, and
/// every user there is whole (with the audit event written in its
/// transaction), on either backend.
async fn killed_mid_write_leaves_nothing_partial(db: TestDb) {
    use reqwest::Method;

    use crate::cli::{Process, call, gatehouse};
    let dir = tempfile::tempdir().unwrap();
    let master = gatehouse_session::MasterKey::generate().to_base64();
    let node = || {
        let mut cmd = gatehouse(dir.path());
        cmd.env("GATEHOUSE_DATABASE_URL", db.url())
            .env("GATEHOUSE_MASTER_KEY", &master)
            .env("GATEHOUSE_LOG_LEVEL", "warn");
        cmd
    };
    let out = node().args(["admin-token", "create", "--label", "faults"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let first = Process::serve(node(), dir.path(), "first").await;
    let base = first.base.clone();
    let body = serde_json::json!({ "name": "Acme", "enterprise_toolkit": true });
    let (_, org) = call(Method::POST, format!("{base}/admin/v1/orgs"), Some(&admin), Some(body)).await;
    let org = org["id"].as_str().unwrap().to_owned();
    let body = serde_json::json!({ "label": "okta", "idp": "okta" });
    let (_, token) =
        call(Method::POST, format!("{base}/admin/v1/orgs/{org}/scim-tokens"), Some(&admin), Some(body)).await;
    let token = token["token"].as_str().unwrap().to_owned();

    // Four clients create users as fast as they can; the node dies under them.
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let http = reqwest::Client::new();
    let writers: Vec<_> = (0..4)
        .map(|client| {
            let (http, base, token, acknowledged, stop) =
                (http.clone(), base.clone(), token.clone(), acknowledged.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let user_name = format!("u{client}-{n}@example.com");
                    let user = serde_json::json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                        "userName": user_name, "emails": [{ "value": user_name, "primary": true }],
                        "name": { "givenName": "A", "familyName": "B" }, "active": true });
                    let sent = http
                        .post(format!("{base}/scim/v2/Users"))
                        .bearer_auth(&token)
                        .header("content-type", "application/scim+json")
                        .body(user.to_string())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == StatusCode::CREATED => {
                            acknowledged.lock().unwrap().push(user_name)
                        }
                        Ok(r) => panic!("a create answered {}", r.status()),
                        Err(_) => break, // the node is gone
                    }
                }
            })
        })
        .collect();
    while acknowledged.lock().unwrap().len() < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.signal("KILL");
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    drop(first);
    let acknowledged = acknowledged.lock().unwrap().clone();

    let second = Process::serve(node(), dir.path(), "second").await;
    let base = second.base.clone();
    let mut present = std::collections::BTreeMap::new();
    let mut start = 1;
    loop {
        let (status, page) = call(
            Method::GET,
            format!("{base}/scim/v2/Users?startIndex={start}&count=200"),
            Some(&token),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let resources = page["Resources"].as_array().unwrap();
        for r in resources {
            // Whole: the resource as the IdP wrote it, not a bare row.
            assert_eq!(r["emails"][0]["value"], r["userName"], "{r}");
            assert_eq!(r["name"]["familyName"], "B", "{r}");
            present.insert(r["userName"].as_str().unwrap().to_owned(), r["id"].as_str().unwrap().to_owned());
        }
        if resources.len() < 200 {
            break;
        }
        start += 200;
    }
    for user in &acknowledged {
        assert!(present.contains_key(user), "{user} was acknowledged, and is gone after the crash");
    }
    // Each user's creation and its audit event were one transaction.
    let created = crate::support::count_audit_events(db.url(), "scim_user_created", false).await;
    assert_eq!(created, present.len() as i64, "every user has its creation event, and no event a lost user");
    assert!(present.len() >= acknowledged.len());
}

crate::support::on_both_backends!(databases: killed_mid_write_leaves_nothing_partial);

/// SIGTERM lets in-flight requests finish, then the process exits cleanly.
#[tokio::test]
async fn sigterm_finishes_what_is_in_flight() {
    use reqwest::Method;

    use crate::cli::{Process, call, gatehouse};
    use crate::stub::Stub;
    let dir = tempfile::tempdir().unwrap();
    let out = gatehouse(dir.path()).args(["admin-token", "create", "--label", "faults"]).output().unwrap();
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut command = gatehouse(dir.path());
    command.env("GATEHOUSE_ALLOW_PRIVATE_TARGETS", "true");
    let mut server = Process::serve(command, dir.path(), "serve").await;
    let base = server.base.clone();
    let org = org_with_bob(&base, &admin).await;
    let stub = Stub::start().await;
    stub.delay(Duration::from_secs(2));
    let config = serde_json::json!({ "authentication_url": format!("{}/login", stub.base), "http_action": "POST",
        "data_as": "json", "timeout_ms": 10_000 });
    call(Method::PUT, format!("{base}/admin/v1/orgs/{org}/external-auth/rest"), Some(&admin), Some(config))
        .await;

    let in_flight = tokio::spawn({
        let base = base.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{base}/v1/login"))
                .json(&serde_json::json!({ "email": "bob@example.com", "password": "pw" }))
                .send()
                .await
        }
    });
    stub.wait_for(1).await; // the sign-in is waiting on the service
    server.signal("TERM");
    let response = in_flight.await.unwrap().expect("the in-flight request was answered");
    assert_eq!(response.status(), StatusCode::OK, "finished, not cut off");
    let exit = tokio::task::spawn_blocking(move || server.wait()).await.unwrap();
    assert!(exit.success(), "exited with {exit}");
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err(), "no longer listening");
}
