//! A real SMTP server (`fixtures/smtp/server.py`, aiosmtpd) on a loopback
//! port, keeping every message it receives in a directory of its own.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct SmtpServer {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl SmtpServer {
    pub async fn start() -> Self {
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/smtp");
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut child = Command::new(format!("{fixture}/.venv/bin/python"))
                .arg(format!("{fixture}/server.py"))
                .arg(port.to_string())
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("the test SMTP server (aiosmtpd virtualenv); scripts/setup installs it");
            for _ in 0..300 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    return Self { child, port, dir };
                }
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("the test SMTP server did not start");
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn messages(&self) -> Vec<PathBuf> {
        let mut all: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        all.sort();
        all
    }

    /// How many messages have arrived.
    pub fn count(&self) -> usize {
        self.messages().len()
    }

    /// Waits for message number `n` (from 1), and returns it as received.
    pub async fn message(&self, n: usize) -> String {
        for _ in 0..200 {
            if let Some(path) = self
                .dir
                .path()
                .join(format!("{n}.eml"))
                .exists()
                .then(|| self.dir.path().join(format!("{n}.eml")))
            {
                return std::fs::read_to_string(path).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("message {n} never arrived ({} did)", self.count());
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
