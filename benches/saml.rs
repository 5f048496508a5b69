//! SAML ACS validation against raw signature verification, on one core.
//!
//! Run with `cargo bench --bench saml` (a release build). It starts the test
//! IdP (`fixtures/saml-idp`, which `scripts/setup` installs), gets one
//! genuinely signed response for a bench SP from it, and then, on this one
//! thread, side by side in one run:
//! - raw: xmlsec's verification of that response's signature with the IdP
//!   certificate (samael's `verify_signed_xml`: parse and verify, nothing
//!   else);
//! - ACS: `gatehouse_saml::validate` on the same response: size, markup and
//!   shape checks, signature verification and reduction, every condition,
//!   the identity.
//!
//! The target is ACS ≥ 80% of raw. `GATEHOUSE_BENCH_SECONDS` sets each
//! run's length (default 5). (The replay check and the session are database
//! writes, measured by the sign-in benchmarks, not here.)

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use gatehouse_core::{Clock as _, SystemClock};
use samael::crypto::{CertificateDer, CryptoProvider, XmlSec};
use serde_json::{Value, json};

struct Idp(Child);

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tiny blocking HTTP/1.0 client over std, so the bench needs no runtime.
mod http10 {
    pub(crate) fn get(url: &str) -> String {
        request("GET", url, "")
    }

    pub(crate) fn post(url: &str, body: &str) -> String {
        request("POST", url, body)
    }

    fn request(method: &str, url: &str, body: &str) -> String {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").expect("http URL");
        let (host, path) =
            rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
        let mut stream = std::net::TcpStream::connect(host).expect("the IdP listens");
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_owned()
    }
}

fn start_idp() -> (Idp, String) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/saml-idp");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(format!("{dir}/.venv/bin/python"))
        .arg(format!("{dir}/idp.py"))
        .args(["serve", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the SAML IdP's virtualenv exists (scripts/setup makes it)");
    // Owned at once, so the process is killed and reaped on every path.
    let idp = Idp(child);
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (idp, base);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the IdP did not start");
}

/// Runs `f` for `length`; returns calls per second.
fn rate(length: Duration, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < length {
        f();
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let seconds: u64 =
        std::env::var("GATEHOUSE_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let length = Duration::from_secs(seconds);
    let (_idp, base) = start_idp();
    let idp_metadata = http10::get(&format!("{base}/metadata"));
    let idp = gatehouse_saml::parse_metadata(&idp_metadata).expect("the IdP's metadata");

    let entity_id = "http://bench.test/metadata";
    let config: gatehouse_saml::SamlConfig = serde_json::from_value(json!({
        "kind": "ping", "idp_metadata_xml": idp_metadata, "allow_idp_initiated": true
    }))
    .unwrap();
    let connection = config.validate(true).unwrap();
    let keys = gatehouse_saml::SpKeys::generate(entity_id).unwrap();
    let endpoints =
        gatehouse_saml::SpEndpoints { entity_id: entity_id.into(), acs_url: "http://bench.test/acs".into() };
    let sp = gatehouse_saml::Sp::new(connection, &idp, endpoints, keys).unwrap();
    http10::post(&format!("{base}/sp"), &sp.metadata_xml().unwrap());
    let forged: Value =
        serde_json::from_str(&http10::get(&format!("{base}/forge?sp={entity_id}&case=valid"))).unwrap();
    let response = forged["SAMLResponse"].as_str().unwrap().to_owned();
    let xml =
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(&response).unwrap()).unwrap();
    let cert = CertificateDer::from(idp.signing_certs[0].clone());
    if let Ok(dir) = std::env::var("GATEHOUSE_BENCH_DUMP") {
        std::fs::write(format!("{dir}/bench-resp.xml"), &xml).unwrap();
        std::fs::write(format!("{dir}/bench-cert.der"), &idp.signing_certs[0]).unwrap();
        std::fs::write(format!("{dir}/bench-md.xml"), &idp_metadata).unwrap();
    }

    // Both must succeed on this response, or the rates mean nothing.
    XmlSec::verify_signed_xml(&xml, &cert, Some("ID")).expect("raw verification");
    gatehouse_saml::validate(&sp, &response, None, SystemClock.now()).expect("ACS validation");

    // Warm up, then measure, alternating so that drift hits both alike.
    let _ = rate(Duration::from_millis(500), || XmlSec::verify_signed_xml(&xml, &cert, Some("ID")).unwrap());
    let _ = rate(Duration::from_millis(500), || {
        gatehouse_saml::validate(&sp, &response, None, SystemClock.now()).unwrap();
    });
    // Short rounds, alternating, and the median of the per-round ratios:
    // this machine's neighbours come and go, and hit both sides alike.
    const ROUNDS: u32 = 10;
    let (mut raw, mut acs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let r = rate(length / ROUNDS, || XmlSec::verify_signed_xml(&xml, &cert, Some("ID")).unwrap());
        let a = rate(length / ROUNDS, || {
            gatehouse_saml::validate(&sp, &response, None, SystemClock.now()).unwrap();
        });
        raw.push(r);
        acs.push(a);
        ratios.push(a / r);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (raw, acs, ratio) = (median(&mut raw), median(&mut acs), median(&mut ratios));
    println!(
        "SAML response: {} bytes, assertion signed (RSA-SHA256), one thread, {ROUNDS} alternating rounds",
        xml.len()
    );
    println!("raw signature verification: {raw:>8.0} /s (median)");
    println!("ACS validation:             {acs:>8.0} /s (median)");
    println!("ACS / raw, median of rounds: {:.1}% (target >= 80%)", ratio * 100.0);
}
