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
        self.control("tamper", serde_json::json!({ "mode": mode })).await;
    }

    /// Makes the discovery document and key set answer 503 (`true`), or
    /// serve again.
    pub async fn outage(&self, on: bool) {
        self.control("outage", serde_json::json!({ "on": on })).await;
    }

    /// Posts `body` to the rig's control endpoint `/_rig/{name}`.
    async fn control(&self, name: &str, body: serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/_rig/{name}", self.origin()))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{name} {body}");
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
