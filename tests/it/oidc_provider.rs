//! A real OpenID provider (`fixtures/oidc-idp`, oidc-provider from npm) on a
//! loopback port, stopped when dropped.

use std::process::Command;

use crate::peer::Peer;

pub struct OidcProvider {
    peer: Peer,
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
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/oidc-idp/server.mjs");
        let command = |port: u16| {
            let mut command = Command::new("node");
            command
                .arg(script)
                .envs(env.iter().copied())
                .env("PORT", port.to_string())
                .env("ISSUER", issuer(port));
            command
        };
        let discovery = |port: u16| {
            format!("{}/.well-known/openid-configuration", issuer(port).trim_end_matches('/'))
                .replace("localhost", "127.0.0.1")
        };
        let peer = Peer::start("the test OpenID provider (node)", command, discovery).await;
        Self { port: peer.port, peer }
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

    /// Makes the discovery document and key set answer 503 (`true`), or
    /// serve again.
    pub async fn outage(&self, on: bool) {
        let response = reqwest::Client::new()
            .post(format!("{}/_rig/outage", self.origin()))
            .body(serde_json::json!({ "on": on }).to_string())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "outage {on}");
    }

    /// How many times the discovery document has been asked for so far.
    pub async fn discovery_requests(&self) -> u64 {
        let url = format!("{}/_rig/discovery-requests", self.origin());
        let body: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        body["count"].as_u64().unwrap()
    }

    pub fn stop(&mut self) {
        self.peer.stop();
    }
}
