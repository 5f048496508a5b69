//! The one outbound HTTP client: pooled, with timeouts, TLS verification, no
//! redirects, no proxies, and a guard against calling internal addresses.
//!
//! Every call Gatehouse makes to an organization's systems (its REST
//! authentication service, its identity provider) goes through it, so the
//! guard cannot be forgotten. It knows nothing of what it carries.

use std::error::Error as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

mod in_flight;
mod published;
use in_flight::InFlight;
pub use published::Published;
use url::{Host, Url};

/// Bytes of an upstream answer read at most. The body is never trusted; it is
/// read only so that a well-behaved connection can be reused.
const BODY_CAP: usize = 4 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Calls in progress to one organization's service at most, and the
/// connections to one host the pool keeps idle: the same number, so that
/// every connection a burst opens is one the pool keeps (`in_flight`).
const CALLS_PER_ORIGIN: usize = 64;

/// Why an upstream call produced no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("timed out")]
    Timeout,
    #[error("connection failed")]
    Connect,
    #[error("TLS handshake failed")]
    Tls,
    #[error("the target address is not allowed (loopback, private, link-local or metadata)")]
    BlockedTarget,
    #[error("protocol error")]
    Protocol,
    /// The call waited out its timeout behind as many calls to the same
    /// service as may be in progress at once, and was never sent.
    #[error("too many calls to this service were already in progress")]
    TooManyInFlight,
}

impl UpstreamError {
    /// A short stable name for audit events and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect_failed",
            Self::Tls => "tls_failed",
            Self::BlockedTarget => "blocked_target",
            Self::Protocol => "protocol_error",
            Self::TooManyInFlight => "too_many_in_flight",
        }
    }
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamResponse {
    pub status: u16,
    pub elapsed: Duration,
}

/// One fetch per key at a time. Callers about to fetch the same document
/// (an identity provider's metadata, say, when the cached copy goes stale
/// under many sign-ins) take the key's lock; those that waited look at what
/// the first one stored before fetching again.
#[derive(Default)]
pub struct FetchLocks {
    locks: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl FetchLocks {
    /// Waits for `key`'s turn to fetch.
    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self.locks.lock().expect("fetch locks").entry(key.to_owned()).or_default().clone();
        lock.lock_owned().await
    }

    /// Drops `key`'s lock (its connection was changed or deleted).
    pub fn forget(&self, key: &str) {
        self.locks.lock().expect("fetch locks").remove(key);
    }
}

#[derive(Clone)]
pub struct OutboundClient {
    client: reqwest::Client,
    allow_private: bool,
    in_flight: Arc<InFlight>,
}

impl std::fmt::Debug for OutboundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundClient").field("allow_private", &self.allow_private).finish_non_exhaustive()
    }
}

impl OutboundClient {
    /// `allow_private` lifts the guard against internal addresses, for
    /// deployments whose authentication service lives on a private network
    /// (and for tests on loopback).
    pub fn new(allow_private: bool) -> Result<Self, reqwest::Error> {
        Self::with_calls_per_origin(allow_private, CALLS_PER_ORIGIN)
    }

    /// As [`OutboundClient::new`], with at most `per_origin` calls through
    /// [`OutboundClient::send`] in progress to one origin (the tests' own
    /// bounds).
    fn with_calls_per_origin(allow_private: bool, per_origin: usize) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(per_origin)
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .build()?;
        Ok(Self { client, allow_private, in_flight: Arc::new(InFlight::new(per_origin)) })
    }

    /// The resolver guards names; an address written into the URL is never
    /// resolved, so it is checked here, before every request.
    fn check_literal_target(&self, url: &Url) -> Result<(), UpstreamError> {
        let literal = match url.host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if !self.allow_private && literal.is_some_and(is_internal) {
            return Err(UpstreamError::BlockedTarget);
        }
        Ok(())
    }

    /// Sends one request and reads its status. Redirects are answers, not
    /// followed. `timeout` covers the whole call: the wait for a turn when
    /// as many calls to the same origin are already in progress as it may
    /// have (`in_flight`), then the request and its answer.
    ///
    /// This is the call made to an organization's own service on every
    /// sign-in. The calls to identity providers ([`OutboundClient::exchange`])
    /// have no such bound: their hosts serve every customer of the
    /// provider (one origin for all of Entra ID's tenants), and set their
    /// own limits.
    pub async fn send(
        &self,
        method: http::Method,
        url: Url,
        headers: http::HeaderMap,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.check_literal_target(&url)?;
        let started = Instant::now();
        let _turn = self.in_flight.turn(&url, timeout).await?;
        let left = || timeout.saturating_sub(started.elapsed());
        let mut request = self.client.request(method, url).headers(headers).timeout(left());
        if let Some(body) = body {
            request = request.body(body);
        }
        let mut response = request.send().await.map_err(classify)?;
        let status = response.status().as_u16();
        let mut read = 0;
        while read < BODY_CAP {
            match tokio::time::timeout(left(), response.chunk()).await {
                Ok(Ok(Some(chunk))) => read += chunk.len(),
                _ => break,
            }
        }
        Ok(UpstreamResponse { status, elapsed: started.elapsed() })
    }
}

/// Why a JSON document could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the answer is not JSON: {0}")]
    NotJson(String),
    #[error("the request cannot be sent: {0}")]
    Request(String),
}

impl OutboundClient {
    /// GETs a JSON document (a discovery document, a key set), reading at
    /// most `max_bytes`. Anything but HTTP 200 with JSON is an error.
    pub async fn get_json(
        &self,
        url: Url,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<serde_json::Value, FetchError> {
        let request = http::Request::get(url.as_str())
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|e| FetchError::Request(e.to_string()))?;
        let response = self.exchange(request, timeout, max_bytes).await?;
        if response.status() != http::StatusCode::OK {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        serde_json::from_slice(response.body()).map_err(|e| FetchError::NotJson(e.to_string()))
    }

    /// Sends `request` and returns the whole answer, whatever its status,
    /// with a body of at most `max_bytes`. The timeout covers the body too.
    /// This is the shape protocol libraries (`openidconnect`) plug into.
    pub async fn exchange(
        &self,
        request: http::Request<Vec<u8>>,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<http::Response<Vec<u8>>, FetchError> {
        let request = reqwest::Request::try_from(request).map_err(|e| FetchError::Request(e.to_string()))?;
        self.check_literal_target(request.url())?;
        let started = Instant::now();
        let mut request = request;
        *request.timeout_mut() = Some(timeout);
        let mut response = self.client.execute(request).await.map_err(classify)?;
        let mut body = Vec::new();
        loop {
            let chunk = tokio::time::timeout(timeout.saturating_sub(started.elapsed()), response.chunk())
                .await
                .map_err(|_| UpstreamError::Timeout)?
                .map_err(classify)?;
            match chunk {
                Some(c) if body.len() + c.len() > max_bytes => return Err(FetchError::TooLarge(max_bytes)),
                Some(c) => body.extend_from_slice(&c),
                None => break,
            }
        }
        let mut answer = http::Response::new(body);
        *answer.status_mut() = response.status();
        *answer.headers_mut() = std::mem::take(response.headers_mut());
        Ok(answer)
    }
}

fn classify(e: reqwest::Error) -> UpstreamError {
    if e.is_timeout() {
        return UpstreamError::Timeout;
    }
    let mut source = e.source();
    while let Some(s) = source {
        if s.downcast_ref::<BlockedAddress>().is_some() {
            return UpstreamError::BlockedTarget;
        }
        let text = s.to_string().to_ascii_lowercase();
        if text.contains("certificate") || text.contains("tls") || text.contains("handshake") {
            return UpstreamError::Tls;
        }
        source = s.source();
    }
    if e.is_connect() { UpstreamError::Connect } else { UpstreamError::Protocol }
}

#[derive(Debug, thiserror::Error)]
#[error("every address of the target is internal")]
struct BlockedAddress;

/// Resolves names and drops internal addresses, so that the address actually
/// connected to is the one that was checked (no second lookup to rebind).
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                addrs.into_iter().filter(|a| allow_private || !is_internal(a.ip())).collect();
            if allowed.is_empty() {
                return Err(Box::new(BlockedAddress) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Loopback, private, link-local (which holds the cloud metadata address
/// 169.254.169.254), carrier-grade NAT, unspecified, broadcast, multicast and
/// reserved ranges; IPv4-mapped IPv6 addresses are judged as IPv4.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_internal_v4(v4),
            None => is_internal_v6(v6),
        },
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240
}

/// IPv6 ranges that are internal, or that translate to IPv4 addresses a
/// gateway would reach on our side (so a public-looking IPv6 literal could
/// reach 169.254.169.254 or 10.0.0.0/8 through them): they are refused
/// whole, since which IPv4 address they carry is the gateway's to decide.
fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local, incl. fd00:ec2::254
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated, still routed by some)
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4]) // NAT64, 64:ff9b::/96
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64, 64:ff9b:1::/48
        || s[0] == 0x2002 // 6to4, 2002::/16
        || (s[0] == 0x2001 && s[1] == 0) // Teredo, 2001::/32
        || ip.to_ipv4().is_some_and(|v4| is_internal_v4(v4) && s[..6] == [0; 6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "fec0::1",
            "feff::1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::808:808",
            "64:ff9b:1::a00:1",
            "2002:a9fe:a9fe::1",
            "2002:0808:0808::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2001:db8::1",
            "2001:4860::8888",
            "64:ff9b:2::1",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    /// A loopback HTTP/1.1 service that holds each request for `hold`
    /// (forever if `None`) before answering 200, and counts what it saw.
    #[derive(Default)]
    struct Seen {
        connections: std::sync::atomic::AtomicUsize,
        requests: std::sync::atomic::AtomicUsize,
        in_progress: std::sync::atomic::AtomicUsize,
        most_in_progress: std::sync::atomic::AtomicUsize,
    }

    async fn service(hold: Option<Duration>) -> (Url, Arc<Seen>) {
        use std::sync::atomic::Ordering::SeqCst;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/auth", listener.local_addr().unwrap())).unwrap();
        let seen = Arc::new(Seen::default());
        let counts = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counts.connections.fetch_add(1, SeqCst);
                let counts = counts.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    loop {
                        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => request.extend_from_slice(&buf[..n]),
                            }
                        }
                        request.clear();
                        counts.requests.fetch_add(1, SeqCst);
                        let now = counts.in_progress.fetch_add(1, SeqCst) + 1;
                        counts.most_in_progress.fetch_max(now, SeqCst);
                        match hold {
                            Some(hold) => tokio::time::sleep(hold).await,
                            None => std::future::pending::<()>().await,
                        }
                        counts.in_progress.fetch_sub(1, SeqCst);
                        if socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, seen)
    }

    async fn get(client: &OutboundClient, url: &Url, timeout: Duration) -> Result<u16, UpstreamError> {
        let answer = client.send(http::Method::GET, url.clone(), http::HeaderMap::new(), None, timeout).await;
        answer.map(|r| r.status)
    }

    /// A burst of calls to one service: all of them answered, never more
    /// than the bound in progress at once, over no more connections than
    /// that (each one kept and used again).
    #[tokio::test]
    async fn a_burst_to_one_service_is_sent_a_bounded_number_at_a_time_over_kept_connections() {
        use std::sync::atomic::Ordering::SeqCst;
        let (url, seen) = service(Some(Duration::from_millis(20))).await;
        let client = OutboundClient::with_calls_per_origin(true, 8).unwrap();
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let (client, url) = (client.clone(), url.clone());
            calls.spawn(async move { get(&client, &url, Duration::from_secs(30)).await });
        }
        while let Some(answer) = calls.join_next().await {
            assert_eq!(answer.unwrap(), Ok(200));
        }
        assert_eq!(seen.requests.load(SeqCst), 100);
        assert_eq!(seen.most_in_progress.load(SeqCst), 8, "as many at once as the bound, never more");
        assert!(seen.connections.load(SeqCst) <= 8, "{} connections", seen.connections.load(SeqCst));
    }

    /// A service that stops answering holds its own turns, not anyone
    /// else's: the next call to it fails within its own timeout without
    /// being sent, and another service is called as usual.
    #[tokio::test]
    async fn a_service_that_stops_answering_holds_up_only_its_own_calls() {
        use std::sync::atomic::Ordering::SeqCst;
        let (stuck, seen) = service(None).await;
        let (other, _) = service(Some(Duration::ZERO)).await;
        let client = OutboundClient::with_calls_per_origin(true, 1).unwrap();
        let first = tokio::spawn({
            let (client, stuck) = (client.clone(), stuck.clone());
            async move { get(&client, &stuck, Duration::from_secs(60)).await }
        });
        while seen.requests.load(SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            get(&client, &stuck, Duration::from_millis(100)).await,
            Err(UpstreamError::TooManyInFlight)
        );
        assert_eq!(seen.requests.load(SeqCst), 1, "the call that waited was never sent");
        assert_eq!(get(&client, &other, Duration::from_secs(30)).await, Ok(200));
        first.abort();
    }
}
