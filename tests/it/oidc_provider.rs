//! A real OpenID provider (`fixtures/oidc-idp`, oidc-provider from npm) on a
//! loopback port, stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct OidcProvider {
    child: Child,
    pub port: u16,
}

impl OidcProvider {
    /// Starts a provider whose issuer is `issuer(port)`.
    pub async fn start(issuer: impl Fn(u16) -> String) -> Self {
        Self::start_with(issuer, &[]).await
    }

    /// Starts a provider with more of its environment (`REDIRECT_URIS`,
    /// `TENANT_ALIAS`, `CLIENT_ID`, `CLIENT_SECRET`).
    pub async fn start_with(issuer: impl Fn(u16) -> String, env: &[(&str, &str)]) -> Self {
        // The port is picked here and released for node to take: another
        // process may take it first, so a provider that exits early is
        // started again on another port.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/oidc-idp/server.mjs");
            let issuer = issuer(port);
            let child = Command::new("node")
                .arg(script)
                .envs(env.iter().copied())
                .env("PORT", port.to_string())
                .env("ISSUER", &issuer)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("node runs the test OpenID provider (scripts/setup installs it)");
            let mut provider = Self { child, port };
            let discovery = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))
                .replace("localhost", "127.0.0.1");
            // Generous: many tests start providers at once on two cores.
            for _ in 0..600 {
                if reqwest::get(&discovery).await.is_ok_and(|r| r.status().is_success()) {
                    return provider;
                }
                if provider.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            provider.stop();
        }
        panic!("the test OpenID provider did not start");
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Makes the next ID token the token endpoint returns a bad one (see
    /// `fixtures/oidc-idp/server.mjs` for the modes).
    pub async fn tamper(&self, mode: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/_rig/tamper", self.origin()))
            .body(serde_json::json!({ "mode": mode }).to_string())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "tamper {mode}");
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}
