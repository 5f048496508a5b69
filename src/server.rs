//! The HTTP/1.1 server loop: what `axum::serve` does, plus the limits a
//! service on the open network needs.
//!
//! `axum::serve` gives hyper no timer, so hyper's header-read timeout never
//! runs and a client that sends half its headers holds its connection
//! forever. Here every connection has:
//!
//! - a deadline for its request headers ([`Limits::client_timeout`]), which
//!   hyper also runs while a kept-alive connection waits for its next
//!   request, so idle connections close too;
//! - a place under a cap on open connections ([`Limits::max_connections`]):
//!   at the cap no more are accepted, and new ones wait in the kernel's
//!   backlog until one closes.
//!
//! The request deadline and the body idle timeout are layers of the app
//! itself (see `crate::app`), so that tests driving the router see them too.
//!
//! Only HTTP/1.1 is served: HTTP/2 belongs on the TLS-terminating proxy in
//! front, and cleartext HTTP/2 would need limits of its own.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long a client may take, and how many may be connected at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The most open connections; more wait in the listen backlog.
    pub max_connections: usize,
    /// How long a client may take to send its request headers, or stay
    /// connected between requests.
    pub client_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` completes; then stops
/// accepting, lets every in-flight request finish, and returns.
pub(crate) async fn run(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait for some to
                    // close rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            tower::ServiceExt::oneshot(app.clone(), request)
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.client_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
