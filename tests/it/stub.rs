//! A real HTTP service on loopback that stands in for an organization's
//! authentication service: it records every request exactly as received and
//! answers with the status (and after the delay) the test sets.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// A header's value as UTF-8 (values may carry any Unicode the template
    /// placed there).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| String::from_utf8(v.as_bytes().to_vec()).unwrap())
    }

    /// The decoded query parameters.
    pub fn query(&self, name: &str) -> Option<String> {
        let q = self.uri.query()?;
        url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    status: AtomicU16,
    delay_ms: AtomicU64,
}

pub struct Stub {
    pub base: String,
    shared: Arc<Shared>,
}

impl Stub {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared { status: AtomicU16::new(200), ..Default::default() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().fallback({
            let shared = shared.clone();
            let base = base.clone();
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let shared = shared.clone();
                let base = base.clone();
                async move { answer(&shared, &base, Recorded { method, uri, headers, body }).await }
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, shared }
    }

    pub fn respond_with(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    pub fn delay(&self, by: Duration) {
        self.shared.delay_ms.store(by.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.shared.requests.lock().unwrap())
    }

    /// Waits until `n` requests have arrived (work Gatehouse does after
    /// answering, such as a forwarded password reset), and takes them.
    pub async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        for _ in 0..200 {
            if self.requests().len() >= n {
                return self.take();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("expected {n} requests, got {:#?}", self.requests());
    }

    pub fn single(&self) -> Recorded {
        let mut all = self.take();
        assert_eq!(all.len(), 1, "expected exactly one request: {all:#?}");
        all.remove(0)
    }
}

async fn answer(shared: &Shared, base: &str, request: Recorded) -> Response {
    shared.requests.lock().unwrap().push(request);
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = StatusCode::from_u16(shared.status.load(Ordering::SeqCst)).unwrap();
    if status.is_redirection() {
        // Points back at this stub, so a followed redirect would be recorded.
        return (status, [(header::LOCATION, format!("{base}/followed-redirect"))]).into_response();
    }
    (status, "stub answer that is never trusted").into_response()
}
