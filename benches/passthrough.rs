//! REST pass-through overhead: sign-ins through Gatehouse against the same
//! requests sent straight to the organization's service, side by side.
//!
//! Run with `cargo bench --bench passthrough` (a release build). Everything
//! runs in this process on loopback: a stub service that answers 200, a
//! Gatehouse on a fresh SQLite database (or `GATEHOUSE_BENCH_DATABASE_URL`, or
//! with `GATEHOUSE_BENCH_BACKEND=postgres` a fresh database on the PostgreSQL
//! of `GATEHOUSE_TEST_POSTGRES_URL`),
//! and the load generator, which is the same for every side. A third side,
//! a bare forwarding proxy (an axum handler that posts the body to the stub
//! with a pooled client: no storage, templates or tokens), shows what one
//! more HTTP hop costs on this machine by itself, the floor under any
//! pass-through's added latency. Set
//! `GATEHOUSE_BENCH_SECONDS` to change the length of each run (default 5),
//! `GATEHOUSE_BENCH_CLIENTS` to run other concurrency levels (default
//! `1,16,64`), and `GATEHOUSE_BENCH_UPSTREAM_MS` to make the stub take that
//! long to answer, as a real service that checks a password hash does
//! (default 0: a no-op upstream, which measures Gatehouse's own cost).
//!
//! Everything in one process shares the machine's cores, so on a small
//! machine the load generator and the stub compete with the service they
//! measure. To measure a Gatehouse running elsewhere (the real binary in its
//! own process, or on another host), set `GATEHOUSE_BENCH_TARGET` to its
//! base URL and `GATEHOUSE_BENCH_ADMIN_TOKEN` to one of its admin tokens;
//! the bench then sets up its own organization and users there. That
//! service must be allowed to call the stub (`GATEHOUSE_ALLOW_PRIVATE_TARGETS`
//! on loopback or a private network), and `GATEHOUSE_BENCH_STUB_ADDR` sets
//! the address the stub listens on (default `127.0.0.1:0`), which must be
//! one the service can reach.

// Tests and benchmarks stamp real data with the wall clock; the service
// reads time only through its Clock (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::routing::post;
use chrono::Utc;
use gatehouse::Settings;
use gatehouse_core::SystemClock;
use serde_json::json;

use common::{PASSWORD, Request, Run, closed_loop, ms, set_up, sign_in, stub};

const ADMIN: &str = "bench-admin-token-0123456789abcdefghijklmn";
/// The bare forwarding proxy (see the top of this file).
async fn bare_proxy(stub: &str) -> String {
    let client = reqwest::Client::new();
    let target = format!("{stub}/auth");
    let forward = move |body: Bytes| {
        let (client, target) = (client.clone(), target.clone());
        async move {
            let sent = client.post(&target).header(header::CONTENT_TYPE, "application/json").body(body);
            match sent.send().await {
                Ok(answer) if answer.status() == 200 => (StatusCode::OK, "{}"),
                _ => (StatusCode::BAD_GATEWAY, "{}"),
            }
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().route("/v1/login", post(forward));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// A Gatehouse in this process, on `db_url`; returns its base URL.
async fn gatehouse_in_process(db_url: &str) -> String {
    let mut settings = Settings::for_tests(db_url);
    settings.admin_token = Some(ADMIN.into());
    settings.allow_private_targets = true;
    let state = gatehouse::bootstrap(settings, Arc::new(SystemClock)).await.expect("bootstrap");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(gatehouse::serve(listener, state, std::future::pending()));
    base
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let length = Duration::from_secs(
            std::env::var("GATEHOUSE_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5),
        );
        let sqlite = gatehouse_testkit::TestDb::sqlite();
        let upstream = Duration::from_millis(
            std::env::var("GATEHOUSE_BENCH_UPSTREAM_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(0),
        );
        let stub_addr = std::env::var("GATEHOUSE_BENCH_STUB_ADDR").unwrap_or_else(|_| "127.0.0.1:0".into());
        let stub = stub(upstream, &stub_addr).await;
        let proxy = bare_proxy(&stub).await;
        let run = Utc::now().timestamp_millis().to_string();
        // A database of its own on the PostgreSQL of GATEHOUSE_TEST_POSTGRES_URL.
        let postgres = match std::env::var("GATEHOUSE_BENCH_BACKEND").as_deref() {
            Ok("postgres") => gatehouse_testkit::TestDb::postgres().await,
            _ => None,
        };
        let (gatehouse, service) = match std::env::var("GATEHOUSE_BENCH_TARGET") {
            Ok(target) => {
                let admin = std::env::var("GATEHOUSE_BENCH_ADMIN_TOKEN")
                    .expect("GATEHOUSE_BENCH_TARGET needs GATEHOUSE_BENCH_ADMIN_TOKEN");
                let target = target.trim_end_matches('/').to_owned();
                set_up(&target, &admin, &run, &stub).await;
                let service = format!("running at {target}");
                (target, service)
            }
            Err(_) => {
                let db_url = std::env::var("GATEHOUSE_BENCH_DATABASE_URL")
                    .ok()
                    .or_else(|| postgres.as_ref().map(|db| db.url().to_owned()))
                    .unwrap_or_else(|| sqlite.url().to_owned());
                let base = gatehouse_in_process(&db_url).await;
                set_up(&base, ADMIN, &run, &stub).await;
                (base, format!("in this process on {}", db_url.split(':').next().unwrap_or("?")))
            }
        };
        println!(
            "REST pass-through, {} s per run, upstream answers in {} ms, {} cores, Gatehouse {service}, started {}",
            length.as_secs(),
            upstream.as_millis(),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            Utc::now().format("%Y-%m-%d %H:%M"),
        );
        println!(
            "{:>7} | {:<10} | {:>8} {:>8} {:>8} | {:>6} {:>8} {:>8}",
            "clients", "side", "req/s", "p50 ms", "p99 ms", "ratio", "+p50 ms", "+p99 ms"
        );
        let levels: Vec<usize> = std::env::var("GATEHOUSE_BENCH_CLIENTS")
            .unwrap_or_else(|_| "1,16,64".into())
            .split(',')
            .map(|n| n.trim().parse().expect("GATEHOUSE_BENCH_CLIENTS: numbers separated by commas"))
            .collect();
        for clients in levels {
            // The direct calls and the bare proxy get the same credentials.
            let email = common::bench_email(&run, 0);
            let credentials_to = |url: String| -> Request {
                let email = email.clone();
                Arc::new(move |http: &reqwest::Client, _| {
                    http.post(&url).json(&json!({ "email": email, "password": PASSWORD }))
                })
            };
            let direct = closed_loop(clients, length, credentials_to(format!("{stub}/auth"))).await;
            let proxied = closed_loop(clients, length, credentials_to(format!("{proxy}/v1/login"))).await;
            let through = closed_loop(clients, length, sign_in(&gatehouse, &run)).await;
            // A row, compared with `baseline` when given.
            let row = |side: &str, run: &Run, baseline: Option<&Run>| {
                let (p50, p99) = (ms(run.percentile(0.5)), ms(run.percentile(0.99)));
                let compared = baseline.map_or_else(String::new, |base| {
                    format!(
                        "{:>5.0}% {:>8.3} {:>8.3}",
                        100.0 * run.rate() / base.rate(),
                        p50 - ms(base.percentile(0.5)),
                        p99 - ms(base.percentile(0.99)),
                    )
                });
                println!(
                    "{clients:>7} | {side:<10} | {:>8.0} {p50:>8.3} {p99:>8.3} | {compared}",
                    run.rate()
                );
            };
            row("direct", &direct, None);
            row("bare proxy", &proxied, Some(&direct));
            row("gatehouse", &through, Some(&direct));
        }
    });
}
