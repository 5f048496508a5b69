//! A test peer: a real server (an identity provider) run as a child process
//! on a loopback port, killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Peer {
    child: Child,
    pub port: u16,
}

impl Peer {
    /// Starts `command(port)` and waits until `ready(port)` answers 2xx. The
    /// port is picked here and released for the child to take; another
    /// process may take it first, so a child that exits early is started
    /// again on another port.
    pub async fn start(what: &str, command: impl Fn(u16) -> Command, ready: impl Fn(u16) -> String) -> Self {
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = command(port)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{what} cannot start ({e}); scripts/setup installs it"));
            let mut peer = Self { child, port };
            // Generous: many tests start peers at once on two cores.
            for _ in 0..600 {
                if reqwest::get(ready(port)).await.is_ok_and(|r| r.status().is_success()) {
                    return peer;
                }
                if peer.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peer.stop();
        }
        panic!("{what} did not start");
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}
