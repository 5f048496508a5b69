//! A TCP proxy on loopback that a test can cut, as a restarting database
//! server is: every open connection is dropped and the port refuses new
//! ones until it is restored. Between Gatehouse and PostgreSQL it stands in
//! for a restart without touching the server other tests use.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: SocketAddr,
    /// Whether the proxy is up; live connections end when it goes down.
    up: watch::Sender<bool>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, _) = watch::channel(true);
        let mut state = up.subscribe();
        tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                match listener.take() {
                    Some(open) => {
                        let mut watcher = state.clone();
                        tokio::select! {
                            accepted = open.accept() => {
                                listener = Some(open);
                                let Ok((client, _)) = accepted else { continue };
                                let mut down = state.clone();
                                tokio::spawn(async move {
                                    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                                    let mut client = client;
                                    tokio::select! {
                                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                        _ = down.wait_for(|up| !*up) => {}
                                    }
                                });
                            }
                            // Cut: close the port (the listener drops here).
                            _ = watcher.wait_for(|up| !*up) => {}
                        }
                    }
                    None => {
                        if state.wait_for(|up| *up).await.is_err() {
                            return;
                        }
                        listener =
                            Some(TcpListener::bind(addr).await.expect("the proxy's port is free again"));
                    }
                }
            }
        });
        Self { addr, up }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}
