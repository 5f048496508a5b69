//! A real server on a loopback port, with its own database and a clock the
//! test can move.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use gatehouse::{AppState, Settings};
use gatehouse_core::ManualClock;
use gatehouse_testkit::TestDb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdefghij";

pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    /// The task that awaits `gatehouse::serve`.
    serving: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    // Dropped last: the database outlives the server using it.
    pub db: TestDb,
}

impl TestServer {
    pub async fn sqlite() -> Self {
        Self::start(TestDb::sqlite(), |_| {}).await
    }

    pub async fn postgres() -> Option<Self> {
        Some(Self::start(TestDb::postgres().await?, |_| {}).await)
    }

    pub async fn start(db: TestDb, tweak: impl FnOnce(&mut Settings)) -> Self {
        Self::start_with(db, |settings, _| tweak(settings)).await
    }

    /// Like `start`, and `tweak` learns the server's own address (to serve
    /// its public URL there, as single sign-on's callbacks need).
    pub async fn start_with(db: TestDb, tweak: impl FnOnce(&mut Settings, &str)) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut settings = Settings::for_tests(db.url());
        settings.admin_token = Some(ADMIN_TOKEN.into());
        tweak(&mut settings, &base);
        let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 28, 9, 0, 0).unwrap()));
        let state = gatehouse::bootstrap(settings, clock.clone()).await.expect("bootstrap");
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(gatehouse::serve(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { base, http, clock, state, stop: Some(stop), serving: Some(serving), db }
    }

    /// The test clock's current time, in seconds, as a JSON number.
    pub fn clock_now(&self) -> Value {
        use gatehouse_core::Clock;
        json!(self.clock.now().timestamp())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("non-JSON body for {status}: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, body)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.post(self.url(path)).json(&body)).await
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.send(req).await
    }

    pub async fn create_org(&self, name: &str) -> String {
        let (status, body) =
            self.admin(reqwest::Method::POST, "/admin/v1/orgs", Some(json!({ "name": name }))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// An organization with the Enterprise ToolKit (single sign-on), whose
    /// sign-ins may return to `redirect_urls`, that has verified
    /// `acme.test`; returns its id.
    pub async fn create_sso_org(&self, redirect_urls: &[&str]) -> String {
        self.create_sso_org_for(redirect_urls, Some("acme.test")).await
    }

    /// The same, verifying `domain` if any.
    pub async fn create_sso_org_for(&self, redirect_urls: &[&str], domain: Option<&str>) -> String {
        let body = json!({ "name": "Acme", "enterprise_toolkit": true });
        let (status, org) = self.admin(reqwest::Method::POST, "/admin/v1/orgs", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{org}");
        let org = org["id"].as_str().unwrap().to_owned();
        let policy = json!({ "redirect_urls": redirect_urls });
        let (status, body) =
            self.admin(reqwest::Method::PUT, &format!("/admin/v1/orgs/{org}/sso"), Some(policy)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // The organization speaks for its users' addresses: their IdP's
        // emails are believed for linking and just-in-time creation.
        if let Some(domain) = domain {
            self.verify_domain(&org, domain).await;
        }
        org
    }

    /// Claims `domain` for `org` and marks it verified, as a platform admin
    /// may.
    pub async fn verify_domain(&self, org: &str, domain: &str) {
        let path = format!("/admin/v1/orgs/{org}/domains");
        let (status, body) =
            self.admin(reqwest::Method::POST, &path, Some(json!({ "domain": domain }))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let verify = format!("{path}/{domain}/verify");
        let (status, body) =
            self.admin(reqwest::Method::POST, &verify, Some(json!({ "method": "admin" }))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["verified"], true, "{body}");
    }

    pub async fn create_user(&self, org: &str, email: &str, password: Option<&str>) -> Value {
        let mut body = json!({ "email": email, "display_name": "Test User" });
        if let Some(p) = password {
            body["password"] = json!(p);
        }
        let (status, body) =
            self.admin(reqwest::Method::POST, &format!("/admin/v1/orgs/{org}/users"), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// An organization with the Enterprise ToolKit and a SCIM token for
    /// `idp`: (organization id, token).
    pub async fn scim_org(&self, idp: &str) -> (String, String) {
        let body = json!({ "name": "Acme", "enterprise_toolkit": true });
        let (status, org) = self.admin(reqwest::Method::POST, "/admin/v1/orgs", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{org}");
        let org = org["id"].as_str().unwrap().to_owned();
        let body = json!({ "label": idp, "idp": idp });
        let (status, token) =
            self.admin(reqwest::Method::POST, &format!("/admin/v1/orgs/{org}/scim-tokens"), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{token}");
        (org, token["token"].as_str().unwrap().to_owned())
    }

    /// A SCIM call with `token`, as an IdP makes it.
    pub async fn scim(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.header("content-type", "application/scim+json").body(b.to_string());
        }
        let response = req.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }

    pub async fn login(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.post(
            "/v1/login",
            json!({ "email": email, "password": password, "device": { "os": "iOS", "name": "test" } }),
        )
        .await
    }

    /// Aborts the task that awaits `gatehouse::serve`, which drops it
    /// without the graceful stop, and waits until the task is gone.
    pub async fn abort_serving(&mut self) {
        let serving = self.serving.take().expect("serve is awaited until now");
        serving.abort();
        assert!(serving.await.expect_err("an aborted task").is_cancelled());
    }

    pub async fn me(&self, access_token: &str) -> (StatusCode, Value) {
        self.send(self.http.get(self.url("/v1/me")).bearer_auth(access_token)).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs a scenario on SQLite and, when configured, on PostgreSQL. A scenario
/// takes a started `TestServer`, or, after `databases:`, the `TestDb` itself
/// (for scenarios that start their servers with settings of their own).
macro_rules! on_both_backends {
    (databases: $($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(gatehouse_testkit::TestDb::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let Some(db) = gatehouse_testkit::TestDb::postgres().await else { return };
                    super::$scenario(db).await;
                }
            )*
        }
    };
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(crate::support::TestServer::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let Some(server) = crate::support::TestServer::postgres().await else { return };
                    super::$scenario(server).await;
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;

/// Runs one statement with text parameters on the database at `url`, as an
/// operator or an older release would have; returns the rows it changed.
pub async fn execute_sql(url: &str, sql: &str, params: &[&str]) -> u64 {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    for param in params {
        query = query.bind(param.to_string());
    }
    let changed = query.execute(&pool).await.unwrap().rows_affected();
    pool.close().await;
    changed
}

/// How many audit events of `kind` the database at `url` holds; with
/// `without_org`, only those that belong to no organization. Read with SQL,
/// for events no API lists.
pub async fn count_audit_events(url: &str, kind: &str, without_org: bool) -> i64 {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let sql = if without_org {
        "SELECT COUNT(*) AS n FROM audit_events WHERE kind = $1 AND org_id IS NULL"
    } else {
        "SELECT COUNT(*) AS n FROM audit_events WHERE kind = $1"
    };
    let row = sqlx::query(sql).bind(kind.to_owned()).fetch_one(&pool).await.unwrap();
    pool.close().await;
    row.get("n")
}
