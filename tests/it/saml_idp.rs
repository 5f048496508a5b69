//! A real SAML IdP (`fixtures/saml-idp/idp.py`, pysaml2 signing with
//! xmlsec1) on a loopback port, stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct SamlIdp {
    child: Child,
    pub port: u16,
}

impl SamlIdp {
    pub async fn start() -> Self {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/saml-idp");
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new(format!("{dir}/.venv/bin/python"))
                .arg(format!("{dir}/idp.py"))
                .args(["serve", "--port", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("the SAML IdP's virtualenv exists (scripts/setup makes it)");
            let mut idp = Self { child, port };
            for _ in 0..600 {
                if reqwest::get(idp.url("/metadata")).await.is_ok_and(|r| r.status().is_success()) {
                    return idp;
                }
                if idp.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            idp.stop();
        }
        panic!("the test SAML IdP did not start");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Tells the IdP about an SP, by its metadata.
    pub async fn register_sp(&self, metadata: String) {
        let response = reqwest::Client::new().post(self.url("/sp")).body(metadata).send().await.unwrap();
        assert!(response.status().is_success(), "registering the SP");
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SamlIdp {
    fn drop(&mut self) {
        self.stop();
    }
}
