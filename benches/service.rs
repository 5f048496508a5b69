//! The service as operators run it: the `gatehouse` binary in its own
//! process, measured from outside through `/proc`, so that the load
//! generator and the stub upstream (in this process) are not counted.
//!
//! Run with `cargo bench --bench service` (a release build), or through
//! `make bench`. For SQLite, and for PostgreSQL when
//! `GATEHOUSE_TEST_POSTGRES_URL` names a server (a database of its own is
//! created and dropped), it measures:
//! - start-up to a ready `/readyz`: the first start (which migrates), then
//!   an empty database, then one holding `GATEHOUSE_BENCH_USERS` users
//!   (default 100000), each the median of three starts;
//! - resident memory once ready and idle, and the anonymous part of it;
//! - pass-through sign-ins at 1, 16 and 64 clients (`GATEHOUSE_BENCH_CLIENTS`) against an upstream that
//!   answers at once: sign-ins/s, p50/p99, and the service's CPU (user +
//!   system, from `/proc/<pid>/stat`) per sign-in, in microseconds and in
//!   bare ES256 sign+verifies (below), with this process's own CPU per
//!   sign-in beside it (the load generator's and the stub's, which share
//!   the cores), and, since the kernel's part costs more on some machines
//!   than on others, the user-space part in bare units and two counts
//!   that do not depend on the machine's speed: context switches and write
//!   calls per sign-in;
//! - added latency with an upstream that takes 20 ms, at a fixed rate with
//!   up to 16 clients (latency counted from when each request was due),
//!   against the same requests sent straight to the upstream;
//! - peak resident memory (`VmHWM`) with 1,000 sign-ins in flight, and
//!   the largest anonymous part sampled through that phase;
//! - refresh-token rotations at the sign-ins' levels above one client,
//!   against bare ES256 signing and verification of the same claims on
//!   every core (in this process, before any service starts), with the
//!   service's CPU per rotation and the load generator's, as for sign-ins;
//! - for each closed-loop run, the cores the service and this process kept
//!   busy on average: fewer than the machine has means the run waited
//!   (on SQLite, for its one writer) rather than computed; and with
//!   PostgreSQL on this machine, the CPU per request of the service and
//!   the server together, since SQLite's figure holds the database's work
//!   and PostgreSQL's alone would not;
//! - local-password (argon2id) sign-ins with 4 clients, last, as each hash
//!   takes tens of MiB that the allocator keeps.
//!
//! `GATEHOUSE_BENCH_SECONDS` sets each timed run's length (default 5).
//! `GATEHOUSE_BENCH_BINARY` measures another build of `gatehouse` (say, the
//! one before a change, copied aside) in place of this one, so that runs of
//! the two can alternate. It may be a script that ends by exec'ing a build
//! (to record its pid for a profiler, say); the service starts with an
//! empty environment, so such a script must name its build itself. The
//! report names, for each backend, the executable the running service was
//! (from its `/proc/<pid>/exe`) and the start of its SHA-256, so that a run
//! shows which build it measured.

// Benchmarks stamp runs with the wall clock; the service reads time only
// through its Clock (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{
    BENCH_USERS, Counted, Run, bench_email, closed_loop, env_number, fixed_rate, fixed_rate_of, ms, set_up,
    sign_in, stub,
};
use gatehouse_core::Origin;

const ADMIN: &str = "bench-admin-token-0123456789abcdefghijklmn";
/// A fixed master key: these databases are thrown away.
const MASTER_KEY: &str = "YmVuY2gtbWFzdGVyLWtleS0wMTIzNDU2Nzg5YWJjZGU=";

/// A `gatehouse serve` process.
struct Service {
    child: Child,
    base: String,
    /// The process's data directory (unused with a database URL, but it
    /// must exist).
    _data: tempfile::TempDir,
}

impl Service {
    /// Starts the binary on `db_url`; returns it once `/readyz` answers 200,
    /// with the time that took.
    async fn start(db_url: &str) -> (Self, Duration) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let data = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let binary = std::env::var("GATEHOUSE_BENCH_BINARY")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_gatehouse").to_owned());
        let child = Command::new(binary)
            .arg("serve")
            .env_clear()
            .env("GATEHOUSE_DATABASE_URL", db_url)
            .env("GATEHOUSE_BIND", format!("127.0.0.1:{port}"))
            .env("GATEHOUSE_ADMIN_TOKEN", ADMIN)
            .env("GATEHOUSE_MASTER_KEY", MASTER_KEY)
            .env("GATEHOUSE_DATA_DIR", data.path())
            .env("GATEHOUSE_ALLOW_PRIVATE_TARGETS", "true")
            .env("GATEHOUSE_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("the gatehouse binary");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "the service did not get ready");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ready = started.elapsed();
        (Self { child, base, _data: data }, ready)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The CPU the process has used, and where it went.
    fn cpu(&self) -> Split {
        Split::read(self.pid())
    }

    /// Resident memory now and at its peak, and of it now the anonymous
    /// part (heap and stacks: what the service itself holds, without the
    /// mapped code of the binary and its libraries), in MiB.
    fn memory(&self) -> (f64, f64, f64) {
        memory_of(self.pid()).expect("the service is running")
    }

    fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let _ = self.child.wait();
    }
}

/// User + system CPU that process `pid` (a number, or `self`) has used.
fn cpu_of(pid: &str) -> Duration {
    ticks_to_time(ProcStat::read(pid).expect("the process is running").cpu_ticks())
}

/// A process's `/proc/<pid>/stat`: its command's name, and the fields
/// after it, counted from the name's closing parenthesis (the name may hold
/// spaces): 0 the state, 1 the parent's pid, 11 and 12 the process's user
/// and system time, 13 and 14 those of its children it has waited for, in
/// clock ticks.
struct ProcStat {
    name: String,
    fields: Vec<u64>,
}

impl ProcStat {
    fn read(pid: &str) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (open, close) = (stat.find('(')?, stat.rfind(')')?);
        // The state (a letter) does not parse, and is not needed.
        let fields = stat[close + 2..].split(' ').map(|f| f.trim().parse().unwrap_or(0)).collect();
        Some(Self { name: stat[open + 1..close].to_owned(), fields })
    }

    fn field(&self, i: usize) -> u64 {
        self.fields.get(i).copied().unwrap_or(0)
    }

    fn parent(&self) -> u64 {
        self.field(1)
    }

    fn cpu_ticks(&self) -> u64 {
        self.field(11) + self.system_ticks()
    }

    fn system_ticks(&self) -> u64 {
        self.field(12)
    }

    fn reaped_children_ticks(&self) -> u64 {
        self.field(13) + self.field(14)
    }
}

/// Where the service's CPU went, in clock ticks since it started: the
/// threads of its async runtime (the workers, which run HTTP in and out,
/// the reads and the signing, and its blocking pool), the SQLite writer's
/// thread (`crates/store/src/embedded_writer.rs`: the batches' statements,
/// the log's writes and their sync), and the kernel's part of the whole.
/// The rest (sqlx's connection threads, threads that have ended) is the
/// whole less the two.
///
/// Beside the time, two counts that do not depend on how fast the machine
/// is: the context switches of the live threads (`/proc/<pid>/task/*/status`),
/// and the write calls (`syscw` in `/proc/<pid>/io`: `write`, `pwrite64`,
/// `writev`, ..., not `send*`) of the process and of the writer's thread,
/// whose writes are the log's pages.
#[derive(Clone, Copy, Default)]
struct Split {
    total: u64,
    system: u64,
    runtime: u64,
    writer: u64,
    switches: u64,
    writes: u64,
    writer_writes: u64,
}

impl Split {
    /// The service `pid`'s split so far.
    fn read(pid: u32) -> Self {
        let process = ProcStat::read(&pid.to_string()).expect("the service is running");
        let mut split = Self {
            total: process.cpu_ticks(),
            system: process.system_ticks(),
            writes: write_calls(&pid.to_string()),
            ..Self::default()
        };
        let threads = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
        for thread in threads {
            let task = format!("{pid}/task/{}", thread.file_name().to_string_lossy());
            let Some(stat) = ProcStat::read(&task) else {
                continue;
            };
            split.switches += context_switches(&task);
            // The runtime names its threads `tokio-rt-worker` (older
            // releases `tokio-runtime-worker`, which the kernel cuts to 15
            // bytes).
            if stat.name.starts_with("tokio-r") {
                split.runtime += stat.cpu_ticks();
            } else if stat.name == "sqlite-writer" {
                split.writer += stat.cpu_ticks();
                split.writer_writes += write_calls(&task);
            }
        }
        split
    }

    /// What was used between `before` and `self`.
    fn since(self, before: Self) -> Self {
        Self {
            total: self.total.saturating_sub(before.total),
            system: self.system.saturating_sub(before.system),
            runtime: self.runtime.saturating_sub(before.runtime),
            writer: self.writer.saturating_sub(before.writer),
            switches: self.switches.saturating_sub(before.switches),
            writes: self.writes.saturating_sub(before.writes),
            writer_writes: self.writer_writes.saturating_sub(before.writer_writes),
        }
    }

    /// The whole, user and system.
    fn time(self) -> Duration {
        ticks_to_time(self.total)
    }

    /// The runtime's, the writer's and the rest's part, each over
    /// `requests`, and the kernel's share of the whole in per cent.
    fn per_request(self, requests: f64) -> Threads {
        let each = |ticks: u64| ticks_to_time(ticks).div_f64(requests);
        Threads {
            runtime: each(self.runtime),
            writer: each(self.writer),
            rest: each(self.total.saturating_sub(self.runtime + self.writer)),
            user: each(self.total.saturating_sub(self.system)),
            kernel_percent: 100.0 * self.system as f64 / (self.total as f64).max(1.0),
            switches: self.switches as f64 / requests,
            writes: self.writes as f64 / requests,
            writer_writes: self.writer_writes as f64 / requests,
        }
    }
}

/// A [`Split`] per request.
struct Threads {
    runtime: Duration,
    writer: Duration,
    rest: Duration,
    /// The whole less the kernel's part.
    user: Duration,
    kernel_percent: f64,
    switches: f64,
    writes: f64,
    writer_writes: f64,
}

/// The voluntary and involuntary context switches of the thread at
/// `/proc/<task>` so far; 0 once it has ended.
fn context_switches(task: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{task}/status")).unwrap_or_default();
    status
        .lines()
        .filter(|l| l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// The write calls (`syscw`) of the process or thread at `/proc/<task>` so
/// far; 0 once it has ended.
fn write_calls(task: &str) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{task}/io")).unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("syscw:")?.trim().parse().ok()).unwrap_or(0)
}

/// The CPU this process (the load generator and the stub upstream) has
/// used.
fn own_cpu() -> Duration {
    cpu_of("self")
}

/// [`Service::memory`] of the process `pid`; `None` once it has exited.
fn memory_of(pid: u32) -> Option<(f64, f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Some((kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0, kib("RssAnon:") / 1024.0))
}

/// The executable the process `pid` runs. Once the service answers, a
/// wrapper script has exec'd its build, so this is the build, not the
/// wrapper.
fn executable_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).expect("the service is running")
}

/// `path` and the first 12 hex digits of its SHA-256. Called once every
/// service has stopped: reading the whole binary fills the page cache with
/// it, and a binary in the page cache is mapped more widely around each
/// page fault, which raises the memory figures (docs/benchmarks.md, "Idle
/// memory depends on the page cache").
fn identify(path: &Path) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(std::fs::read(path).expect("the measured executable"));
    let short: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{} (sha256 {short}…)", path.display())
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// `ticks` of the kernel's clock, in which `/proc/<pid>/stat` counts, as
/// time. Their rate is asked of `getconf` once: the CPU figures read it
/// inside the runs they measure, and a process started each time was
/// counted in the load's CPU.
fn ticks_to_time(ticks: u64) -> Duration {
    static PER_SECOND: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let per_second = *PER_SECOND.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().expect("getconf");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(100)
    });
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// The concurrency levels of the rotation runs: those of the sign-in runs
/// above one client (a single client's rotations measure the disk's sync,
/// which the sign-ins at one client already show).
fn refresh_levels() -> Vec<usize> {
    let levels: Vec<usize> = levels().into_iter().filter(|&c| c > 1).collect();
    if levels.is_empty() { vec![16] } else { levels }
}

/// The concurrency levels of the sign-in runs: `GATEHOUSE_BENCH_CLIENTS`,
/// numbers separated by commas (default 1,16,64).
fn levels() -> Vec<usize> {
    std::env::var("GATEHOUSE_BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,16,64".into())
        .split(',')
        .map(|n| n.trim().parse().expect("GATEHOUSE_BENCH_CLIENTS: numbers separated by commas"))
        .collect()
}

/// The median start-up of three, and the last service started.
async fn start_up(db_url: &str) -> Duration {
    let mut times = Vec::new();
    for _ in 0..3 {
        let (service, ready) = Service::start(db_url).await;
        times.push(ready);
        service.stop();
    }
    times.sort();
    times[1]
}

/// Adds `count` users to a new organization in the database at `db_url`,
/// through the store, as SCIM would provision them.
async fn seed(db_url: &str, count: usize) {
    let store = gatehouse_store::Store::open(db_url).await.unwrap();
    let now = Utc::now();
    let org = store.create_org("Seeded", true, now).await.unwrap();
    let new = |i: usize| gatehouse_store::NewUser {
        email: Some(gatehouse_core::Email::parse(&format!("seed{i}@seeded.example.com")).unwrap()),
        display_name: format!("Seeded {i}"),
        external_id: Some(format!("ext-{i}")),
        ..gatehouse_store::NewUser::member(org.id, Origin::Scim)
    };
    let users: Vec<_> = (0..count).map(new).collect();
    for chunk in users.chunks(512) {
        let creates = chunk.iter().map(|u| store.create_user(u, now));
        for created in futures::future::join_all(creates).await {
            created.unwrap();
        }
    }
    store.close().await;
}

/// The database's own part of a sign-in's added latency.
struct DatabaseTrips {
    /// A user read by their email, as a sign-in's lookup reads them.
    lookup: Run,
    /// A one-row insert committed (synced to disk) as it runs, as a
    /// sign-in's session is.
    commit: Run,
}

impl DatabaseTrips {
    /// The lookup's and the commit's p50s together, in milliseconds.
    fn p50s(&self) -> f64 {
        ms(self.lookup.percentile(0.5)) + ms(self.commit.percentile(0.5))
    }

    /// "lookup+commit" at `quantile`, in milliseconds.
    fn both(&self, quantile: f64) -> String {
        format!("{:.2}+{:.2}", ms(self.lookup.percentile(quantile)), ms(self.commit.percentile(quantile)))
    }
}

/// `show` of PostgreSQL's own round trips, where they were measured.
fn trips(f: &Figures, show: impl Fn(&DatabaseTrips) -> String) -> String {
    f.database_trips.as_ref().map_or_else(String::new, show)
}

/// A sign-in on PostgreSQL makes two round trips to the server: the
/// lookup before the upstream call and the commit of its session after.
/// Measured here without the service, from this process, at the
/// added-latency figure's `rate` with as many clients, on the service's own
/// database (idle by then), they are the part of that figure the server
/// and its disk set: where a commit's sync takes a millisecond, no service
/// can add less than that. Each is one round trip, as the service's are: a
/// read by email, and a one-row insert that commits as it runs (the
/// service's batch is one such statement), on connections taken from the
/// pool without the ping sqlx makes by default (the service's leases skip
/// it too), which would be a second round trip for each. Each counts from
/// when it started, not from when it was due: the added latency, a
/// difference of two runs, cancels the driver's own lateness, which these
/// would otherwise carry (`common::Counted`). (Where the disk cannot keep
/// up with a commit per request, these commits queue in the server while
/// the service's batches share theirs, and the added latency less them
/// goes negative: docs/benchmarks.md.) The commits go to a table of their
/// own, in a database the bench drops.
async fn database_round_trips(db_url: &str, run: &str, rate: f64, length: Duration) -> DatabaseTrips {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(16)
        .test_before_acquire(false)
        .connect(db_url)
        .await
        .expect("the service's database");
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_commits (n BIGINT NOT NULL, at BIGINT NOT NULL)")
        .execute(&pool)
        .await
        .expect("a table for the commits");
    let lookup = fixed_rate_of(rate, 16, length, Counted::FromStart, {
        let (pool, run) = (pool.clone(), run.to_owned());
        move |i| {
            let (pool, email) = (pool.clone(), bench_email(&run, i % BENCH_USERS));
            async move {
                let found = sqlx::query("SELECT id, email, active FROM users WHERE email_normalized = $1")
                    .bind(email)
                    .fetch_optional(&pool)
                    .await
                    .expect("the lookup");
                assert!(found.is_some(), "the bench user is there");
            }
        }
    })
    .await;
    let commit = fixed_rate_of(rate, 16, length, Counted::FromStart, {
        let pool = pool.clone();
        move |i| {
            let pool = pool.clone();
            async move {
                sqlx::query("INSERT INTO bench_commits (n, at) VALUES ($1, $2)")
                    .bind(i as i64)
                    .bind(Utc::now().timestamp_millis())
                    .execute(&pool)
                    .await
                    .expect("the insert, committed");
            }
        }
    })
    .await;
    pool.close().await;
    DatabaseTrips { lookup, commit }
}

/// Refresh-token rotations: each of `clients` signs in once as its own
/// bench user, then rotates its refresh token in a loop (each rotation
/// spends the token and returns the next), for `length` after a warm-up.
async fn refreshes(base: &str, run: &str, clients: usize, length: Duration) -> Run {
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients).build().unwrap();
    let warm_up = Instant::now() + Duration::from_millis(500);
    let end = warm_up + length;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (http, base) = (http.clone(), base.to_owned());
            let email = common::bench_email(run, c % common::BENCH_USERS);
            tokio::spawn(async move {
                let credentials = serde_json::json!({ "email": email, "password": common::PASSWORD });
                let signed_in = common::post_json(&http, &format!("{base}/v1/login"), &credentials).await;
                let mut token = signed_in["refresh_token"].as_str().expect("a refresh token").to_owned();
                let mut client = common::ClientRun::default();
                while Instant::now() < end {
                    let started = Instant::now();
                    let body = serde_json::json!({ "refresh_token": token });
                    let rotated = common::post_json(&http, &format!("{base}/v1/token/refresh"), &body).await;
                    token = rotated["refresh_token"].as_str().expect("the next refresh token").to_owned();
                    client.record(started, warm_up, started.elapsed());
                }
                client
            })
        })
        .collect();
    common::gather(tasks, length).await
}

/// The floor under a refresh: signing an access token's claims with ES256
/// and verifying it, with the service's own key ring, on every core at
/// once (as the service may use them): how many per second, and the CPU
/// each took (this process's, which runs nothing else by then).
fn bare_sign_verify(length: Duration) -> Bare {
    use gatehouse_session::{AccessClaims, KeyRing, MasterKey, MasterKeys, SigningAlgorithm, StoredKey};
    let master = MasterKeys::single(MasterKey::generate());
    let new = gatehouse_session::generate_signing_key(SigningAlgorithm::Es256, &master).unwrap();
    let stored = StoredKey {
        kid: new.kid,
        alg: new.alg,
        sealed_private_key: new.sealed_private_key,
        public_jwk: new.public_jwk,
        created_at: Utc::now(),
        retired_at: None,
    };
    let ring = std::sync::Arc::new(KeyRing::open(&[stored], &master).unwrap());
    let now = Utc::now();
    let id = || uuid::Uuid::now_v7().to_string();
    let issuer = "http://127.0.0.1:8080";
    let claims = AccessClaims {
        iss: issuer.into(),
        aud: issuer.into(),
        sub: id(),
        org: id(),
        email: Some("user0.bench@bench.example.com".into()),
        sid: id(),
        iat: now.timestamp(),
        exp: now.timestamp() + 900,
        jti: id(),
        auth_method: "external_rest".into(),
        groups: Vec::new(),
        groups_overage: false,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let before = own_cpu();
    let end = Instant::now() + length;
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (ring, claims) = (ring.clone(), claims.clone());
            std::thread::spawn(move || {
                let mut n = 0_u64;
                while Instant::now() < end {
                    let token = ring.sign(&claims).unwrap();
                    ring.verify(&token, issuer, issuer, now).unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    Bare {
        rate: total as f64 / length.as_secs_f64(),
        cpu: (own_cpu() - before).div_f64((total as f64).max(1.0)),
    }
}

/// The service's CPU per request and the database server's together, in
/// bare sign+verifies; empty where the database runs in the service.
fn with_database(level: &Level, bare: &Bare) -> String {
    level.database_cpu.map_or_else(String::new, |database| format!("{:.2}", bare.units(level.cpu + database)))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// What [`bare_sign_verify`] measured.
struct Bare {
    /// Sign+verifies per second on every core.
    rate: f64,
    /// CPU per sign+verify: the unit in which the service's CPU per
    /// sign-in and per rotation is also reported, which does not move with
    /// the speed of the day's machine as microseconds do.
    cpu: Duration,
}

impl Bare {
    /// `cpu` in bare sign+verifies.
    fn units(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() / self.cpu.as_secs_f64().max(1e-12)
    }
}

/// Sign-ins with a local password (argon2id), `clients` at once.
async fn local_sign_ins(base: &str, run: &str, clients: usize, length: Duration) -> Run {
    let http = reqwest::Client::new();
    let org: serde_json::Value = http
        .post(format!("{base}/admin/v1/orgs"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({ "name": format!("Local {run}") }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let org = org["id"].as_str().unwrap();
    let email = format!("local.{run}@bench.example.com");
    let created = http
        .post(format!("{base}/admin/v1/orgs/{org}/users"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({ "email": email, "password": common::PASSWORD }))
        .send()
        .await
        .unwrap()
        .status();
    assert!(created.is_success(), "creating the local-password user: {created}");
    let url = format!("{base}/v1/login");
    let request: common::Request = std::sync::Arc::new(move |http: &reqwest::Client, _| {
        http.post(&url).json(&serde_json::json!({ "email": email, "password": common::PASSWORD }))
    });
    closed_loop(clients, length, request).await
}

/// A closed-loop run (sign-ins or rotations) at one level of concurrency.
struct Level {
    clients: usize,
    run: Run,
    /// The service's CPU per request.
    cpu: Duration,
    /// This process's CPU per request: the load generator's (and for
    /// sign-ins the stub upstream's), on the same cores as the service.
    load_cpu: Duration,
    /// The cores the service and this process kept busy through the run,
    /// on average: below the machine's count, the run was bound by
    /// waiting (on SQLite's one writer, say), not by CPU.
    busy: f64,
    /// The database server's CPU per request, where it is a process on
    /// this machine (PostgreSQL on loopback); SQLite's is the service's.
    database_cpu: Option<Duration>,
    /// Where the service's CPU went, per request.
    threads: Threads,
}

impl Level {
    /// Runs `load` (a closed loop of `clients` clients against `service`)
    /// and reads the CPU both processes used while it ran.
    async fn measure(
        service: &Service,
        database: Database,
        clients: usize,
        load: impl Future<Output = Run>,
    ) -> Self {
        // The database's CPU is read outside the other two's window: it
        // walks `/proc`, in this process.
        let database_before = database.cpu();
        let (before, load_before, started) = (service.cpu(), own_cpu(), Instant::now());
        let run = load.await;
        let load_cpu = own_cpu() - load_before;
        let split = service.cpu().since(before);
        let cpu = split.time();
        let busy = (cpu + load_cpu).as_secs_f64() / started.elapsed().as_secs_f64();
        // The warm-up's requests used CPU too; they are counted in.
        let all = (run.answered as f64).max(1.0);
        let database_cpu =
            database.cpu().zip(database_before).map(|(after, before)| (after - before).div_f64(all));
        Self {
            clients,
            run,
            cpu: cpu.div_f64(all),
            load_cpu: load_cpu.div_f64(all),
            busy,
            database_cpu,
            threads: split.per_request(all),
        }
    }
}

/// Whether `url`'s host is this machine.
fn on_loopback(url: &str) -> bool {
    let Some(host) = url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned)) else {
        return false;
    };
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Where the database's CPU is spent.
#[derive(Clone, Copy)]
enum Database {
    /// In the service's process (SQLite).
    InProcess,
    /// In the PostgreSQL server's processes on this machine.
    LocalPostgres,
}

impl Database {
    /// The CPU the database's own processes have used so far: every
    /// process named `postgres` (the server and its backends), and what
    /// the server's exited backends used (its reaped children's CPU, so
    /// that a backend that ends during a run still counts). `None` when
    /// it runs in the service.
    fn cpu(self) -> Option<Duration> {
        let Self::LocalPostgres = self else { return None };
        let postgres: HashMap<u64, ProcStat> = std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .filter_map(|entry| {
                let pid: u64 = entry.file_name().to_str()?.parse().ok()?;
                let stat = ProcStat::read(&pid.to_string())?;
                (stat.name == "postgres").then_some((pid, stat))
            })
            .collect();
        // The server is the one whose parent is not a postgres process.
        let ticks = postgres
            .values()
            .map(|stat| {
                let server = !postgres.contains_key(&stat.parent());
                stat.cpu_ticks() + if server { stat.reaped_children_ticks() } else { 0 }
            })
            .sum();
        Some(ticks_to_time(ticks))
    }
}

struct Figures {
    backend: &'static str,
    /// What the service ran.
    executable: PathBuf,
    first_start: Duration,
    empty_start: Duration,
    seeded_start: Duration,
    idle_mib: f64,
    idle_anon_mib: f64,
    sign_ins: Vec<Level>,
    added: (f64, f64, f64),
    /// The database's own round trips that every sign-in makes, at the
    /// added-latency figure's rate: its lookup and its commit.
    database_trips: Option<DatabaseTrips>,
    peak_mib: f64,
    peak_anon_mib: f64,
    /// Rotations at each level (the sign-ins that start the clients'
    /// sessions are counted in their CPU, and are noise beside the
    /// rotations).
    refresh: Vec<Level>,
    local: Run,
}

async fn measure(
    backend: &'static str,
    db_url: &str,
    database: Database,
    length: Duration,
    seeded: usize,
) -> Figures {
    let (service, first_start) = Service::start(db_url).await;
    service.stop();
    let empty_start = start_up(db_url).await;
    let (service, _) = Service::start(db_url).await;
    let executable = executable_of(service.pid());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle_mib, _, idle_anon_mib) = service.memory();

    let run = Utc::now().timestamp_millis().to_string();
    let instant = stub(Duration::ZERO, "127.0.0.1:0").await;
    set_up(&service.base, ADMIN, &run, &instant).await;
    let mut sign_ins = Vec::new();
    for clients in levels() {
        let load = closed_loop(clients, length, sign_in(&service.base, &run));
        sign_ins.push(Level::measure(&service, database, clients, load).await);
    }
    let mut refresh = Vec::new();
    for clients in refresh_levels() {
        let load = refreshes(&service.base, &run, clients, length);
        refresh.push(Level::measure(&service, database, clients, load).await);
    }

    // A 20 ms upstream, at a rate 16 clients sustain with room to spare.
    let slow = stub(Duration::from_millis(20), "127.0.0.1:0").await;
    let slow_run = format!("{run}s");
    set_up(&service.base, ADMIN, &slow_run, &slow).await;
    let rate = 400.0;
    let direct = {
        let url = format!("{slow}/auth");
        let request: common::Request = std::sync::Arc::new(move |http: &reqwest::Client, _| {
            http.post(&url).json(&serde_json::json!({ "email": "x@bench.example.com", "password": "p" }))
        });
        fixed_rate(rate, 16, length, request).await
    };
    let through = fixed_rate(rate, 16, length, sign_in(&service.base, &slow_run)).await;
    let added = (
        ms(through.percentile(0.5)) - ms(direct.percentile(0.5)),
        ms(through.percentile(0.99)) - ms(direct.percentile(0.99)),
        through.rate(),
    );
    // SQLite is read and written in the service's own process: it has no
    // round trips of its own to measure apart.
    let database_trips = if db_url.starts_with("sqlite:") {
        None
    } else {
        Some(database_round_trips(db_url, &slow_run, rate, length).await)
    };

    // A thousand sign-ins in flight, each waiting 20 ms on the upstream.
    // The process's peak (`VmHWM`) counts the mapped code too, which moves
    // with how the kernel maps the binary's pages from one run to the next;
    // so the anonymous part (what the service holds) is sampled through the
    // phase, and its largest sample reported beside it.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (sampling, pid) = (sampling.clone(), service.pid());
        async move {
            let anon = || memory_of(pid).expect("the service runs through the phase").2;
            let mut peak = 0.0_f64;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(anon());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak.max(anon())
        }
    });
    let _ = closed_loop(1000, Duration::from_secs(3).min(length), sign_in(&service.base, &slow_run)).await;
    sampling.store(false, Ordering::Relaxed);
    let peak_anon_mib = sampler.await.expect("the memory sampler");
    let (_, peak_mib, _) = service.memory();
    // Last: argon2id takes tens of MiB per hash, which the allocator keeps.
    let local = local_sign_ins(&service.base, &run, 4, length).await;
    service.stop();

    seed(db_url, seeded).await;
    let seeded_start = start_up(db_url).await;
    Figures {
        backend,
        executable,
        first_start,
        empty_start,
        seeded_start,
        idle_mib,
        idle_anon_mib,
        sign_ins,
        added,
        database_trips,
        peak_mib,
        peak_anon_mib,
        refresh,
        local,
    }
}

fn report(all: &[Figures], seeded: usize, bare: &Bare) {
    println!();
    for figures in all {
        println!("{}: measured {}", figures.backend, identify(&figures.executable));
    }
    println!("{:<44} {:>12} {:>12}   target", "figure", all[0].backend, all.get(1).map_or("", |f| f.backend));
    let row = |name: &str, value: &dyn Fn(&Figures) -> String, target: &str| {
        let cells: Vec<String> = all.iter().map(value).collect();
        println!("{name:<44} {:>12} {:>12}   {target}", cells[0], cells.get(1).cloned().unwrap_or_default());
    };
    // Only a run with a database server of its own has its CPU to show.
    let with_server = all.iter().any(|f| f.sign_ins.iter().any(|l| l.database_cpu.is_some()));
    // What a closed-loop run cost per request (`noun`), under `label`:
    // the service's CPU in µs and in bare sign+verifies (with `targets`
    // for the two), where in the service it went, the load's, the
    // database server's added, and the cores busy.
    let cpu_rows = |label: &str, noun: &str, level: &dyn Fn(&Figures) -> &Level, targets: [&str; 2]| {
        row(label, &|f| format!("{:.0}", micros(level(f).cpu)), targets[0]);
        row("    in bare ES256 sign+verifies", &|f| format!("{:.2}", bare.units(level(f).cpu)), targets[1]);
        row(
            "    runtime/SQLite writer/other threads, us",
            &|f| {
                let threads = &level(f).threads;
                let [runtime, writer, rest] = [threads.runtime, threads.writer, threads.rest].map(micros);
                format!("{runtime:.0}/{writer:.0}/{rest:.0}")
            },
            "",
        );
        row("    of it in the kernel, %", &|f| format!("{:.0}", level(f).threads.kernel_percent), "");
        row(
            "    in user space, in bare sign+verifies",
            &|f| format!("{:.2}", bare.units(level(f).threads.user)),
            "",
        );
        row(
            "    switches/write calls/the writer's",
            &|f| {
                let t = &level(f).threads;
                format!("{:.1}/{:.1}/{:.1}", t.switches, t.writes, t.writer_writes)
            },
            "",
        );
        row(
            &format!("    the load's CPU per {noun}, us"),
            &|f| format!("{:.0}", micros(level(f).load_cpu)),
            "",
        );
        if with_server {
            row(
                "    with the database server's, in bare sign+verifies",
                &|f| with_database(level(f), bare),
                "",
            );
        }
        row("  cores busy, service and load", &|f| format!("{:.2}", level(f).busy), "");
    };
    row("start-up, first (migrating), ms", &|f| format!("{:.0}", ms(f.first_start)), "");
    row("start-up, empty database, ms", &|f| format!("{:.0}", ms(f.empty_start)), "<= 100");
    row(
        &format!("start-up, {seeded} users, ms"),
        &|f| format!("{:.0}", ms(f.seeded_start)),
        if seeded >= 100_000 { "<= 500" } else { "" },
    );
    row("memory idle, MiB", &|f| format!("{:.1}", f.idle_mib), "<= 16");
    row("  of which anonymous (not mapped code), MiB", &|f| format!("{:.1}", f.idle_anon_mib), "");
    for i in 0..all[0].sign_ins.len() {
        let clients = all[0].sign_ins[i].clients;
        row(&format!("sign-ins/s, {clients} clients"), &|f| format!("{:.0}", f.sign_ins[i].run.rate()), "");
        row(
            &format!("  p50 / p99 ms, {clients} clients"),
            &|f| {
                format!(
                    "{:.2}/{:.2}",
                    ms(f.sign_ins[i].run.percentile(0.5)),
                    ms(f.sign_ins[i].run.percentile(0.99))
                )
            },
            "",
        );
        cpu_rows(
            &format!("  CPU per sign-in, us, {clients} clients"),
            "sign-in",
            &|f| &f.sign_ins[i],
            if clients > 1 { ["<= 150", "<= 1.7"] } else { ["", ""] },
        );
    }
    for i in 0..all[0].refresh.len() {
        let clients = all[0].refresh[i].clients;
        row(
            &format!("refresh rotations/s, {clients} clients"),
            &|f| format!("{:.0}", f.refresh[i].run.rate()),
            "",
        );
        row(
            &format!("  over bare ES256 sign+verify ({:.0}/s)", bare.rate),
            &|f| format!("{:.2}x", f.refresh[i].run.rate() / bare.rate),
            ">= 0.35x",
        );
        cpu_rows("  CPU per rotation, us", "rotation", &|f| &f.refresh[i], ["", "<= 2.86"]);
    }
    row("local-password sign-ins/s, 4 clients", &|f| format!("{:.1}", f.local.rate()), "");
    row("20 ms upstream at 400/s: added p50, ms", &|f| format!("{:.2}", f.added.0), "<= 1");
    row("20 ms upstream at 400/s: added p99, ms", &|f| format!("{:.2}", f.added.1), "<= 2");
    row("  the database's lookup + commit, p50, ms", &|f| trips(f, |t| t.both(0.5)), "");
    row("  the same, p99, ms", &|f| trips(f, |t| t.both(0.99)), "");
    row(
        "  added p50 beyond the database's, ms",
        &|f| trips(f, |t| format!("{:.2}", f.added.0 - t.p50s())),
        "",
    );
    row("memory peak, 1000 in flight, MiB", &|f| format!("{:.1}", f.peak_mib), "<= 64");
    row("  anonymous at its largest, MiB", &|f| format!("{:.1}", f.peak_anon_mib), "");
    // Throughput must not fall as concurrency rises: the highest level
    // against the one below it.
    if let [.., Level { clients: below, .. }, Level { clients: top, .. }] = all[0].sign_ins[..] {
        let n = all[0].sign_ins.len();
        let ratio = |f: &Figures| f.sign_ins[n - 1].run.rate() / f.sign_ins[n - 2].run.rate();
        row(
            &format!("sign-ins/s at {top} over {below} clients"),
            &|f| format!("{:.2}x", ratio(f)),
            ">= 1.00x",
        );
    }
}

/// What a panel plots of a run: values, each with its line's dash pattern.
type Series = Box<dyn Fn(&Run) -> Vec<(f64, &'static str)>>;

/// The chart of sign-ins against concurrency: throughput on the left,
/// p50 and p99 latency on the right, a line per backend.
fn chart(all: &[Figures]) -> String {
    let (w, h, pad) = (360.0, 220.0, 48.0);
    let colours = ["#1f6feb", "#d1242f"];
    let levels: Vec<usize> = all[0].sign_ins.iter().map(|level| level.clients).collect();
    let x = |i: usize, left: f64| left + pad + i as f64 * (w - 2.0 * pad) / (levels.len() - 1).max(1) as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * w,
        h + 40.0
    );
    let panels: [(&str, f64, Series); 2] = [
        ("pass-through sign-ins/s", 0.0, Box::new(|r: &Run| vec![(r.rate(), "")])),
        (
            "latency, ms (solid p50, dashed p99)",
            w,
            Box::new(|r: &Run| vec![(ms(r.percentile(0.5)), ""), (ms(r.percentile(0.99)), "4 3")]),
        ),
    ];
    for (title, left, values) in &panels {
        let top = all
            .iter()
            .flat_map(|f| f.sign_ins.iter().flat_map(|level| values(&level.run).into_iter().map(|(v, _)| v)))
            .fold(0.0_f64, f64::max)
            * 1.1;
        let y = |v: f64| h - pad + 20.0 - v / top.max(1e-9) * (h - 2.0 * pad);
        svg += &format!(
            "<text x=\"{}\" y=\"16\" text-anchor=\"middle\" font-weight=\"bold\">{title}</text>\n\
             <line x1=\"{l}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n\
             <line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{b}\" stroke=\"black\"/>\n\
             <text x=\"{l}\" y=\"{t}\" text-anchor=\"end\" dx=\"-4\">{top:.0}</text>\n\
             <text x=\"{l}\" y=\"{b}\" text-anchor=\"end\" dx=\"-4\">0</text>\n",
            left + w / 2.0,
            l = left + pad,
            r = left + w - pad,
            t = y(top),
            b = y(0.0),
        );
        for (i, clients) in levels.iter().enumerate() {
            svg += &format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{clients} clients</text>\n",
                x(i, *left),
                y(0.0) + 16.0
            );
        }
        for (f, colour) in all.iter().zip(colours) {
            let series: Vec<Vec<(f64, &str)>> = f.sign_ins.iter().map(|level| values(&level.run)).collect();
            for k in 0..series[0].len() {
                let points: Vec<String> = series
                    .iter()
                    .enumerate()
                    .map(|(i, v)| format!("{:.1},{:.1}", x(i, *left), y(v[k].0)))
                    .collect();
                svg += &format!(
                    "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"{}\" points=\"{}\"/>\n",
                    series[0][k].1,
                    points.join(" ")
                );
            }
        }
    }
    for (i, (f, colour)) in all.iter().zip(colours).enumerate() {
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{}</text>\n",
            pad + i as f64 * 120.0,
            h + 34.0,
            f.backend
        );
    }
    svg + "</svg>\n"
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let length = Duration::from_secs(env_number("GATEHOUSE_BENCH_SECONDS", 5));
        let seeded = env_number("GATEHOUSE_BENCH_USERS", 100_000) as usize;
        println!(
            "The service in its own process ({} cores shared with the load), {} s runs, started {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            length.as_secs(),
            Utc::now().format("%Y-%m-%d %H:%M"),
        );
        // First, on a quiet machine: after the PostgreSQL run, the server's
        // own background work (its checkpoint, dropping the bench's
        // database) can run beside it, and once took a third off its rate
        // (16.2k/s against 25.2k/s in the run before; docs/benchmarks.md).
        let bare = bare_sign_verify(length);
        let mut all = Vec::new();
        let sqlite = gatehouse_testkit::TestDb::sqlite();
        all.push(measure("SQLite", sqlite.url(), Database::InProcess, length, seeded).await);
        if let Some(postgres) = gatehouse_testkit::TestDb::postgres().await {
            // The server's CPU can be read only where it runs here.
            let database =
                if on_loopback(postgres.url()) { Database::LocalPostgres } else { Database::InProcess };
            all.push(measure("PostgreSQL", postgres.url(), database, length, seeded).await);
        }
        report(&all, seeded, &bare);
        let svg = chart(&all);
        std::fs::create_dir_all("target/bench").unwrap();
        std::fs::write("target/bench/service.svg", &svg).unwrap();
        // A full run is what the docs show; a quick one proves only that
        // the bench still runs.
        if std::env::var("GATEHOUSE_BENCH_QUICK").is_err() {
            std::fs::write("docs/benchmarks.svg", &svg).unwrap();
        }
    });
}
