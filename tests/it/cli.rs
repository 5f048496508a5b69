//! The `gatehouse` binary itself: help, settings errors, the embedded
//! default, and the operator commands.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

/// A `gatehouse` command with a clean environment: only what the test sets.
pub fn gatehouse(cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

/// A `gatehouse serve` process, killed on drop, with its log in a file.
pub struct Process {
    child: std::process::Child,
    pub base: String,
    pub log: std::path::PathBuf,
}

impl Process {
    pub async fn serve(mut cmd: Command, dir: &Path, name: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.join(format!("{name}.log"));
        let child = cmd
            .arg("serve")
            .env("GATEHOUSE_BIND", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let process = Self { child, base, log };
        process.wait_ready().await;
        process
    }

    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("{}/readyz", self.base)).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gatehouse did not become ready: {}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The most memory the process has held at once (`VmHWM`), in MiB.
    pub fn peak_memory_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kib / 1024
    }

    /// Sends the process `signal` (`TERM`, `KILL`).
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
        assert!(sent.unwrap().success(), "kill -{signal}");
    }

    /// Waits for the process to exit; its exit status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn call(
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

#[test]
fn help_documents_every_setting() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["keys", "rotate", "--help"],
        vec!["master-key", "rotate", "--help"],
        vec!["admin-token", "--help"],
    ] {
        let out = gatehouse(dir.path()).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        for setting in [
            "GATEHOUSE_DATABASE_URL",
            "GATEHOUSE_BIND",
            "GATEHOUSE_PUBLIC_URL",
            "GATEHOUSE_ADMIN_TOKEN",
            "GATEHOUSE_MASTER_KEY",
            "GATEHOUSE_LOG_FORMAT",
        ] {
            assert!(text.contains(setting), "{args:?} help lacks {setting}");
        }
    }
}

#[test]
fn a_bad_setting_stops_startup_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[("GATEHOUSE_BIND", "not-an-address")], "GATEHOUSE_BIND"),
        (&[("GATEHOUSE_DATABASE_URL", "mysql://localhost/x")], "GATEHOUSE_DATABASE_URL"),
        (&[("GATEHOUSE_DATABASE_URL", "postgres://127.0.0.1/test")], "GATEHOUSE_MASTER_KEY"),
        (&[("GATEHOUSE_LOG_FORMAT", "yaml")], "GATEHOUSE_LOG_FORMAT"),
        (&[("GATEHOUSE_ADMIN_TOKEN", "too-short-secret")], "GATEHOUSE_ADMIN_TOKEN"),
        (&[("GATEHOUSE_WORKER_THREADS", "0")], "GATEHOUSE_WORKER_THREADS"),
    ];
    for (env, name) in cases {
        let out = gatehouse(dir.path()).arg("serve").envs(env.iter().copied()).output().unwrap();
        assert!(!out.status.success(), "{env:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{env:?}: {stderr}");
        assert!(stderr.contains(name), "{env:?}: {stderr}");
        assert!(!stderr.contains("too-short-secret"), "the secret is not echoed");
    }
    let bad_file = dir.path().join("bad.toml");
    std::fs::write(&bad_file, "bind = 8080\n").unwrap();
    let out = gatehouse(dir.path()).args(["--config", bad_file.to_str().unwrap(), "serve"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("bad.toml"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "nothing created by a refused start");
}

/// The runtime serves with the workers it is given, and by default on SQLite
/// with one fewer than the CPUs, which leaves one to the embedded writer.
#[tokio::test]
async fn the_runtime_has_the_workers_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let cpus = std::thread::available_parallelism().unwrap().get();
    for (setting, workers) in [(None, cpus.saturating_sub(1).max(1)), (Some("3"), 3)] {
        let mut cmd = gatehouse(dir.path());
        if let Some(n) = setting {
            cmd.env("GATEHOUSE_WORKER_THREADS", n);
        }
        let process = Process::serve(cmd, dir.path(), "workers").await;
        let log = process.log_text();
        let listening =
            log.lines().find(|l| l.contains("gatehouse listening")).unwrap_or_else(|| panic!("{log}"));
        // The whole field, so that `workers=12` is not taken for `workers=1`.
        let field = format!("workers={workers}");
        assert!(listening.split_whitespace().any(|f| f == field), "{setting:?}: {listening}");
    }
}

/// `gatehouse serve` with no configuration: SQLite under ./data, a master key
/// only its owner can read, and the README's walkthrough.
#[tokio::test]
async fn the_embedded_default_works_out_of_the_box() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        gatehouse(dir.path()).args(["admin-token", "create", "--label", "walkthrough"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("gha_"));

    let server = Process::serve(gatehouse(dir.path()), dir.path(), "serve").await;
    let data = dir.path().join("data");
    assert!(data.join("gatehouse.db").is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("master.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "master key readable by others: {mode:o}");
        assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o077, 0);
    }
    walkthrough(&server.base, &server.base.replace("localhost", "127.0.0.1"), &token).await;

    // The minted token is stored only as a hash.
    let db = std::fs::read(data.join("gatehouse.db")).unwrap();
    let wal = std::fs::read(data.join("gatehouse.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()), "admin token stored in clear");
    }
}

/// The README walkthrough: org, user, login, JWKS, refresh, logout.
pub async fn walkthrough(base: &str, issuer: &str, admin: &str) {
    use reqwest::Method;
    let (status, org) = call(
        Method::POST,
        format!("{base}/admin/v1/orgs"),
        Some(admin),
        Some(json!({ "name": "Acme", "enterprise_toolkit": false })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{org}");
    let org = org["id"].as_str().unwrap();
    let (status, _) = call(
        Method::POST,
        format!("{base}/admin/v1/orgs/{org}/users"),
        Some(admin),
        Some(json!({ "email": "alice@example.com", "display_name": "Alice", "password": "correct horse battery staple" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, tokens) = call(
        Method::POST,
        format!("{base}/v1/login"),
        None,
        Some(json!({ "email": "alice@example.com", "password": "correct horse battery staple", "device": { "os": "macOS", "name": "laptop" } })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let (_, jwks) = call(Method::GET, format!("{base}/.well-known/jwks.json"), None, None).await;
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(access).unwrap();
    let key =
        jsonwebtoken::DecodingKey::from_jwk(jwks.find(header.kid.as_deref().unwrap()).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[issuer]);
    let claims =
        jsonwebtoken::decode::<Value>(access, &key, &validation).expect("token verifies against the JWKS");
    assert_eq!(claims.claims["email"], "alice@example.com");
    let (status, me) = call(Method::GET, format!("{base}/v1/me"), Some(access), None).await;
    assert_eq!((status, me["email"].as_str()), (StatusCode::OK, Some("alice@example.com")));
    let (status, refreshed) = call(
        Method::POST,
        format!("{base}/v1/token/refresh"),
        None,
        Some(json!({ "refresh_token": tokens["refresh_token"] })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        Method::POST,
        format!("{base}/v1/logout"),
        None,
        Some(json!({ "refresh_token": refreshed["refresh_token"] })),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(
        Method::POST,
        format!("{base}/v1/token/refresh"),
        None,
        Some(json!({ "refresh_token": refreshed["refresh_token"] })),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
