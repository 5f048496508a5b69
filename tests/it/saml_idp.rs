//! A real SAML IdP (`fixtures/saml-idp/idp.py`, pysaml2 signing with
//! xmlsec1) on a loopback port, stopped when dropped.

use std::process::Command;

use crate::peer::Peer;

pub struct SamlIdp {
    _peer: Peer,
    pub port: u16,
}

impl SamlIdp {
    pub async fn start() -> Self {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/saml-idp");
        let command = |port: u16| {
            let mut command = Command::new(format!("{dir}/.venv/bin/python"));
            command.arg(format!("{dir}/idp.py")).args(["serve", "--port", &port.to_string()]);
            command
        };
        let metadata = |port: u16| format!("http://127.0.0.1:{port}/metadata");
        let peer = Peer::start("the test SAML IdP (pysaml2 virtualenv)", command, metadata).await;
        Self { port: peer.port, _peer: peer }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Tells the IdP about an SP, by its metadata.
    pub async fn register_sp(&self, metadata: String) {
        let response = reqwest::Client::new().post(self.url("/sp")).body(metadata).send().await.unwrap();
        assert!(response.status().is_success(), "registering the SP");
    }

    /// Makes the IdP's metadata endpoint answer 503 (`true`) or serve again.
    pub async fn metadata_outage(&self, on: bool) {
        let body = if on { "on" } else { "off" };
        let response =
            reqwest::Client::new().post(self.url("/metadata-outage")).body(body).send().await.unwrap();
        assert!(response.status().is_success(), "switching the metadata outage {body}");
    }

    /// How many times the IdP's metadata has been asked for so far.
    pub async fn metadata_requests(&self) -> u64 {
        reqwest::get(self.url("/metadata-requests")).await.unwrap().text().await.unwrap().parse().unwrap()
    }
}
