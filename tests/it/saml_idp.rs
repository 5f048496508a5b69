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
}
