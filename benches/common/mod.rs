//! What the sign-in benchmarks share: the load generator, the stub
//! upstream service, and the bench organization.
//!
//! The load generator reuses connections as real clients do (one pooled
//! client, kept-alive connections). It has two modes: closed loops, each
//! client sending its next request when the last is answered (the
//! throughput figures), and a fixed rate, where request `i` is due at
//! `start + i / rate` and its latency is counted from when it was due, not
//! from when a free client got to send it: a slow answer that holds up the
//! requests behind it shows in their latencies too, instead of silently
//! lowering the rate (the "coordinated omission" that makes closed-loop
//! latency figures look better than what users see).

// Each benchmark uses its own part of this module.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};

pub(crate) const PASSWORD: &str = "correct horse battery staple";

/// What a run measured.
pub(crate) struct Run {
    /// Requests answered after the warm-up: what the rates count.
    pub(crate) requests: usize,
    /// Requests answered in all, the warm-up's and those still in flight
    /// at the end included: what a process's CPU over the run is divided
    /// by.
    pub(crate) answered: usize,
    pub(crate) seconds: f64,
    /// Sorted.
    pub(crate) latencies: Vec<Duration>,
}

impl Run {
    pub(crate) fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    pub(crate) fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// A request to send, built afresh for each (`n` counts them).
pub(crate) type Request = Arc<dyn Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync>;

fn client(connections: usize) -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(connections).build().unwrap()
}

async fn send(http: &reqwest::Client, request: &Request, n: usize) {
    let response = request(http, n).send().await.expect("request");
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

/// What one client measured.
#[derive(Default)]
pub(crate) struct ClientRun {
    /// The latencies of its requests after the warm-up.
    pub(crate) latencies: Vec<Duration>,
    /// Its requests answered in all, the warm-up's included.
    pub(crate) answered: usize,
}

impl ClientRun {
    /// Counts an answered request that started at `started`, and keeps its
    /// latency `latency` if it started after `warm_up`.
    pub(crate) fn record(&mut self, started: Instant, warm_up: Instant, latency: Duration) {
        self.answered += 1;
        if started >= warm_up {
            self.latencies.push(latency);
        }
    }
}

/// What the clients' tasks measured over `length`, as one run.
pub(crate) async fn gather(tasks: Vec<tokio::task::JoinHandle<ClientRun>>, length: Duration) -> Run {
    let (mut latencies, mut answered) = (Vec::new(), 0);
    for t in tasks {
        let client = t.await.unwrap();
        latencies.extend(client.latencies);
        answered += client.answered;
    }
    latencies.sort();
    Run { requests: latencies.len(), answered, seconds: length.as_secs_f64(), latencies }
}

/// POSTs `body` as JSON and reads the answer as JSON.
pub(crate) async fn post_json(http: &reqwest::Client, url: &str, body: &Value) -> Value {
    http.post(url).json(body).send().await.unwrap().json().await.unwrap()
}

/// `clients` closed loops for `length`, after half a second of warm-up;
/// every answer must be 200.
pub(crate) async fn closed_loop(clients: usize, length: Duration, request: Request) -> Run {
    let http = client(clients);
    let warm_up = Instant::now() + Duration::from_millis(500);
    let end = warm_up + length;
    let counter = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, request, counter) = (http.clone(), request.clone(), counter.clone());
            tokio::spawn(async move {
                let mut client = ClientRun::default();
                while Instant::now() < end {
                    let started = Instant::now();
                    send(&http, &request, counter.fetch_add(1, Ordering::Relaxed)).await;
                    client.record(started, warm_up, started.elapsed());
                }
                client
            })
        })
        .collect();
    gather(tasks, length).await
}

/// Requests at `rate` per second for `length` (after a warm-up at the same
/// rate), sent by at most `clients` at once; latency counts from when each
/// was due.
pub(crate) async fn fixed_rate(rate: f64, clients: usize, length: Duration, request: Request) -> Run {
    let http = client(clients);
    fixed_rate_of(rate, clients, length, Counted::FromDue, move |i| {
        let (http, request) = (http.clone(), request.clone());
        async move { send(&http, &request, i).await }
    })
    .await
}

/// Where a fixed-rate operation's latency counts from.
#[derive(Clone, Copy)]
pub(crate) enum Counted {
    /// When it was due: what a user sees, waits for a free client and the
    /// driver's own lateness included (tokio's timer wakes on whole
    /// milliseconds and rounds up: an operation that does nothing, run this
    /// way at 400/s, measured 0.9–1.3 ms at p50 and 1.7–2.1 ms at p99;
    /// docs/benchmarks.md). A difference of two such runs cancels that
    /// lateness, near enough at p50; percentiles do not subtract exactly.
    FromDue,
    /// When it started: what the operation itself takes, for figures that
    /// are not compared with another run of the driver.
    FromStart,
}

/// Any operation (`operation(i)` is the `i`th) at `rate` per second, as
/// [`fixed_rate`] sends requests: at most `clients` at once, each
/// operation's latency counted as `counted` says.
pub(crate) async fn fixed_rate_of<F, Fut>(
    rate: f64,
    clients: usize,
    length: Duration,
    counted: Counted,
    operation: F,
) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let operation = Arc::new(operation);
    let start = Instant::now();
    let warm_up = Duration::from_millis(500);
    let total = ((warm_up + length).as_secs_f64() * rate) as usize;
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (operation, next) = (operation.clone(), next.clone());
            tokio::spawn(async move {
                let mut client = ClientRun::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return client;
                    }
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                    let began = Instant::now();
                    operation(i).await;
                    let latency = match counted {
                        Counted::FromDue => due.elapsed(),
                        Counted::FromStart => began.elapsed(),
                    };
                    client.record(due, start + warm_up, latency);
                }
            })
        })
        .collect();
    gather(tasks, length).await
}

/// The organization's service: answers every sign-in 200 after `latency`.
pub(crate) async fn stub(latency: Duration, addr: &str) -> String {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("the stub's address");
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().route(
        "/auth",
        post(move || async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            "ok"
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// The bench's users, for a run tagged `run`: their own addresses, so that
/// runs against one long-lived service do not collide.
pub(crate) fn bench_email(run: &str, n: usize) -> String {
    format!("user{n}.{run}@bench.example.com")
}

/// How many users the bench organization has; sign-ins cycle through them.
pub(crate) const BENCH_USERS: usize = 64;

/// Sets up, on the Gatehouse at `base`, an organization with
/// [`BENCH_USERS`] users that signs in through the service at `upstream`
/// (its `/auth`). Returns the organization's id.
pub(crate) async fn set_up(base: &str, admin: &str, run: &str, upstream: &str) -> String {
    let http = reqwest::Client::new();
    let org: Value = http
        .post(format!("{base}/admin/v1/orgs"))
        .bearer_auth(admin)
        .json(&json!({ "name": format!("Bench {run}") }))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .expect("creating the bench organization (is the admin token right?)")
        .json()
        .await
        .unwrap();
    let org = org["id"].as_str().unwrap().to_owned();
    for i in 0..BENCH_USERS {
        let status = http
            .post(format!("{base}/admin/v1/orgs/{org}/users"))
            .bearer_auth(admin)
            .json(&json!({ "email": bench_email(run, i) }))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "creating a bench user: {status}");
    }
    let status = http
        .put(format!("{base}/admin/v1/orgs/{org}/external-auth/rest"))
        .bearer_auth(admin)
        .json(&json!({
            "authentication_url": format!("{upstream}/auth"),
            "http_action": "POST",
            "data_as": "json",
            "body": "{\"email\":\"{{USEREMAIL}}\",\"password\":\"{{USERPASSWORD}}\"}",
        }))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200, "configuring the bench organization's REST sign-in");
    org
}

/// A pass-through sign-in of one of the bench users, at `base`.
pub(crate) fn sign_in(base: &str, run: &str) -> Request {
    let (url, run) = (format!("{base}/v1/login"), run.to_owned());
    Arc::new(move |http, n| {
        http.post(&url).json(&json!({
            "email": bench_email(&run, n % BENCH_USERS),
            "password": PASSWORD,
            "device": { "os": "bench", "name": "load" },
        }))
    })
}
