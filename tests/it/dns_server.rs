//! A real DNS server (dnsmasq) on a loopback port, answering the TXT
//! records a test gives it and NXDOMAIN for every other name under `.test`
//! and `.example`, stopped when dropped. Its records are fixed when it
//! starts; `publish` restarts it, on the same port, with new ones.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

pub struct DnsServer {
    child: Option<Child>,
    pub addr: SocketAddr,
}

impl DnsServer {
    pub async fn start(records: &[(&str, &str)]) -> Self {
        for _ in 0..3 {
            let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut server = Self { child: None, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
            if server.spawn(records).await {
                return server;
            }
        }
        panic!("dnsmasq did not start");
    }

    /// Serves `records` from now on.
    pub async fn publish(&mut self, records: &[(&str, &str)]) {
        self.stop();
        for _ in 0..20 {
            if self.spawn(records).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("dnsmasq did not restart on {}", self.addr);
    }

    async fn spawn(&mut self, records: &[(&str, &str)]) -> bool {
        // Debian installs it in /usr/sbin, which is not on every PATH.
        let program =
            if std::path::Path::new("/usr/sbin/dnsmasq").exists() { "/usr/sbin/dnsmasq" } else { "dnsmasq" };
        let mut command = Command::new(program);
        command.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--pid-file",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--local=/test/",
            "--local=/example/",
            "--txt-record=ready.test,ready",
        ]);
        command.arg(format!("--port={}", self.addr.port()));
        for (name, value) in records {
            command.arg(format!("--txt-record={name},{value}"));
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("dnsmasq cannot start ({e}); scripts/setup installs it"));
        self.child = Some(child);
        let mut server = NameServerConfig::udp_and_tcp(self.addr.ip());
        for connection in &mut server.connections {
            connection.port = self.addr.port();
        }
        let resolver = Resolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![server]),
            TokioRuntimeProvider::default(),
        )
        .build()
        .unwrap();
        for _ in 0..100 {
            if resolver.txt_lookup("ready.test.").await.is_ok() {
                return true;
            }
            if self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop();
        false
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
