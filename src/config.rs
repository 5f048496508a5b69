//! Settings: read from the command line, the environment and an optional TOML
//! file, in that order of precedence, and validated once at startup.
//!
//! Every setting has one name, `GATEHOUSE_<NAME>` in the environment and
//! `<name>` in the file. A bad value stops startup with one line naming it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_session::{MasterKey, MasterKeys, SigningAlgorithm};
use gatehouse_store::ThrottleRule;
use ipnet::IpNet;
use serde::Deserialize;
use url::Url;

/// The settings as written, before validation. Every field is optional; the
/// TOML file deserialises straight into this.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    pub database_url: Option<String>,
    pub bind: Option<String>,
    pub public_url: Option<String>,
    pub token_audience: Option<String>,
    pub admin_token: Option<String>,
    pub master_key: Option<String>,
    pub master_key_file: Option<String>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub data_dir: Option<String>,
    pub signing_alg: Option<String>,
    pub access_token_ttl_secs: Option<u64>,
    pub session_ttl_secs: Option<u64>,
    pub trusted_proxies: Option<Vec<String>>,
    pub allow_private_targets: Option<bool>,
    pub password_hash_concurrency: Option<usize>,
    pub password_hash_queue: Option<usize>,
    pub max_connections: Option<usize>,
    pub worker_threads: Option<usize>,
    pub client_timeout_secs: Option<u64>,
    pub request_timeout_secs: Option<u64>,
    pub lockout: Option<String>,
    pub limit_login_ip: Option<String>,
    pub limit_forgot_password: Option<String>,
    pub limit_forgot_password_ip: Option<String>,
    pub limit_sso_start_ip: Option<String>,
    pub limit_saml_acs_ip: Option<String>,
    pub limit_scim_auth_ip: Option<String>,
    pub dns_resolver: Option<String>,
    pub audit_retention_days: Option<u64>,
    pub smtp_url: Option<String>,
    pub mail_from: Option<String>,
}

/// Every setting with its environment name, for `--help` and errors.
pub const ENV_HELP: &str = "\
Settings (environment variable, or the same name in lower case without the
GATEHOUSE_ prefix in the --config TOML file; the environment wins):
  GATEHOUSE_DATABASE_URL          sqlite://… or postgres://… [default: SQLite under the data dir]
  GATEHOUSE_BIND                  address to listen on [default: 127.0.0.1:8080]
  GATEHOUSE_PUBLIC_URL            external base URL; the issuer of tokens [default: http://<bind>]
  GATEHOUSE_TOKEN_AUDIENCE        the aud of access tokens, which apps check [default: the issuer]
  GATEHOUSE_ADMIN_TOKEN           bootstrap platform-admin bearer token (at least 32 characters)
  GATEHOUSE_MASTER_KEY            32 bytes of base64 that seal stored keys and secrets (several,
                                  comma-separated, during a rotation: the first seals); required
                                  with PostgreSQL, generated under the data dir for SQLite
  GATEHOUSE_MASTER_KEY_FILE       or a file holding them, one per line, re-read while running so
                                  that `gatehouse master-key rotate` reaches every node
  GATEHOUSE_LOG_FORMAT            text or json [default: text]
  GATEHOUSE_LOG_LEVEL             tracing filter, e.g. info or gatehouse=debug [default: info]
  GATEHOUSE_DATA_DIR              where the embedded database and master key live [default: ./data]
  GATEHOUSE_SIGNING_ALG           ES256 or EdDSA, for new signing keys [default: ES256]
  GATEHOUSE_ACCESS_TOKEN_TTL_SECS access token lifetime [default: 900]
  GATEHOUSE_SESSION_TTL_SECS      session (refresh token) lifetime [default: 2592000]
  GATEHOUSE_TRUSTED_PROXIES       comma-separated IPs or CIDRs whose X-Forwarded-For is believed
  GATEHOUSE_ALLOW_PRIVATE_TARGETS true to let external-auth calls reach private addresses
  GATEHOUSE_PASSWORD_HASH_CONCURRENCY  argon2 hashes computed at once [default: CPU count]
  GATEHOUSE_PASSWORD_HASH_QUEUE   argon2 hashes waiting at most; more are refused with 503 [default: 64]
  GATEHOUSE_MAX_CONNECTIONS       open client connections at most; more wait to be accepted [default: 1024]
  GATEHOUSE_WORKER_THREADS        threads that serve requests [default: one fewer than the CPUs with
                                  SQLite, whose writer thread keeps the one left; the CPUs with PostgreSQL]
  GATEHOUSE_CLIENT_TIMEOUT_SECS   how long a client may take to send its headers, pause in its body,
                                  or keep an idle connection open [default: 10]
  GATEHOUSE_REQUEST_TIMEOUT_SECS  the most any request may take, body and upstream calls included;
                                  keep it above the longest REST timeout (60 s) [default: 90]
  GATEHOUSE_DNS_RESOLVER          system, or IP:PORT of the DNS server that domain verification asks
                                  [default: system]
  GATEHOUSE_AUDIT_RETENTION_DAYS  audit events older than this are deleted [default: 365]
  GATEHOUSE_SMTP_URL              where password reset mail goes: smtps://user:pass@host, or
                                  smtp://host:587?tls=required (plain smtp:// only to loopback)
  GATEHOUSE_MAIL_FROM             the sender of that mail, e.g. Acme <no-reply@acme.com>
Limits are N/DURATION (N events within DURATION block the key for DURATION; 30s, 15m, 1h, 1d) or off:
  GATEHOUSE_LOCKOUT               failed sign-ins per account before it is locked [default: 10/15m]
  GATEHOUSE_LIMIT_LOGIN_IP        failed sign-ins per client address [default: 100/10m]
  GATEHOUSE_LIMIT_FORGOT_PASSWORD password reset requests per account [default: 5/1h]
  GATEHOUSE_LIMIT_FORGOT_PASSWORD_IP  password reset requests per client address [default: 50/1h]
  GATEHOUSE_LIMIT_SSO_START_IP    single sign-on starts per client address [default: 300/10m]
  GATEHOUSE_LIMIT_SAML_ACS_IP     refused SAML responses per client address [default: 50/10m]
  GATEHOUSE_LIMIT_SCIM_AUTH_IP    SCIM calls with a bad token per client address [default: 50/10m]";

impl RawSettings {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("--config", format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| {
            let msg = e.message().replace('\n', " ");
            ConfigError::new("--config", format!("{}: {msg}", path.display()))
        })
    }

    /// Overlays every `GATEHOUSE_*` variable that is set onto `self`.
    pub fn overlay_env(mut self, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        macro_rules! text {
            ($field:ident, $name:literal) => {
                if let Some(v) = env($name) {
                    self.$field = Some(v);
                }
            };
        }
        macro_rules! parsed {
            ($field:ident, $name:literal) => {
                if let Some(v) = env($name) {
                    self.$field = Some(
                        v.trim()
                            .parse()
                            .map_err(|_| ConfigError::new($name, format!("{v:?} is not valid")))?,
                    );
                }
            };
        }
        text!(database_url, "GATEHOUSE_DATABASE_URL");
        text!(bind, "GATEHOUSE_BIND");
        text!(public_url, "GATEHOUSE_PUBLIC_URL");
        text!(token_audience, "GATEHOUSE_TOKEN_AUDIENCE");
        text!(admin_token, "GATEHOUSE_ADMIN_TOKEN");
        text!(master_key, "GATEHOUSE_MASTER_KEY");
        text!(master_key_file, "GATEHOUSE_MASTER_KEY_FILE");
        text!(log_format, "GATEHOUSE_LOG_FORMAT");
        text!(log_level, "GATEHOUSE_LOG_LEVEL");
        text!(data_dir, "GATEHOUSE_DATA_DIR");
        text!(signing_alg, "GATEHOUSE_SIGNING_ALG");
        text!(lockout, "GATEHOUSE_LOCKOUT");
        text!(limit_login_ip, "GATEHOUSE_LIMIT_LOGIN_IP");
        text!(limit_forgot_password, "GATEHOUSE_LIMIT_FORGOT_PASSWORD");
        text!(limit_forgot_password_ip, "GATEHOUSE_LIMIT_FORGOT_PASSWORD_IP");
        text!(limit_sso_start_ip, "GATEHOUSE_LIMIT_SSO_START_IP");
        text!(limit_saml_acs_ip, "GATEHOUSE_LIMIT_SAML_ACS_IP");
        text!(limit_scim_auth_ip, "GATEHOUSE_LIMIT_SCIM_AUTH_IP");
        text!(dns_resolver, "GATEHOUSE_DNS_RESOLVER");
        text!(smtp_url, "GATEHOUSE_SMTP_URL");
        text!(mail_from, "GATEHOUSE_MAIL_FROM");
        parsed!(audit_retention_days, "GATEHOUSE_AUDIT_RETENTION_DAYS");
        parsed!(access_token_ttl_secs, "GATEHOUSE_ACCESS_TOKEN_TTL_SECS");
        parsed!(session_ttl_secs, "GATEHOUSE_SESSION_TTL_SECS");
        parsed!(allow_private_targets, "GATEHOUSE_ALLOW_PRIVATE_TARGETS");
        parsed!(password_hash_concurrency, "GATEHOUSE_PASSWORD_HASH_CONCURRENCY");
        parsed!(password_hash_queue, "GATEHOUSE_PASSWORD_HASH_QUEUE");
        parsed!(max_connections, "GATEHOUSE_MAX_CONNECTIONS");
        parsed!(worker_threads, "GATEHOUSE_WORKER_THREADS");
        parsed!(client_timeout_secs, "GATEHOUSE_CLIENT_TIMEOUT_SECS");
        parsed!(request_timeout_secs, "GATEHOUSE_REQUEST_TIMEOUT_SECS");
        if let Some(v) = env("GATEHOUSE_TRUSTED_PROXIES") {
            self.trusted_proxies =
                Some(v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect());
        }
        Ok(self)
    }
}

/// A setting that could not be used; its `Display` is the one line printed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {name}: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(name: &str, reason: impl Into<String>) -> Self {
        Self { name: name.to_owned(), reason: reason.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the master keys come from.
#[derive(Debug, Clone)]
pub enum MasterKeySource {
    /// In the settings themselves (`GATEHOUSE_MASTER_KEY`).
    Given(MasterKeys),
    /// In a file, one key per line, re-read while the service runs so that a
    /// rotation reaches every node (`GATEHOUSE_MASTER_KEY_FILE`, or the
    /// embedded default's own, created on first start).
    File { path: PathBuf, create: bool },
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
    /// Whether the database is the embedded default under `data_dir`.
    pub embedded_database: bool,
    pub bind: SocketAddr,
    pub public_url: Url,
    /// The `aud` of every access token.
    pub token_audience: String,
    pub admin_token: Option<String>,
    pub master_key: MasterKeySource,
    pub log_format: LogFormat,
    pub log_level: String,
    pub data_dir: PathBuf,
    pub signing_alg: SigningAlgorithm,
    pub access_token_ttl: Duration,
    pub session_ttl: Duration,
    pub trusted_proxies: Vec<IpNet>,
    pub allow_private_targets: bool,
    pub password_hash_concurrency: usize,
    pub password_hash_queue: usize,
    /// The async runtime's worker threads, which serve every request.
    pub worker_threads: usize,
    /// Connections, header and idle timeouts (see `crate::server`).
    pub limits: crate::server::Limits,
    /// The most any request may take.
    pub request_timeout: Duration,
    pub rate_limits: RateLimits,
    /// Where domain verification looks up TXT records.
    pub dns_resolver: crate::dns::DnsResolver,
    /// How long audit events are kept.
    pub audit_retention: Duration,
    /// Where mail goes; none, and no reset mail is sent.
    pub mail: Option<crate::mail::MailSettings>,
}

/// Brute-force and abuse limits (see `crate::throttle`); `None` is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Failed sign-ins per account: the lockout.
    pub login_account: Option<ThrottleRule>,
    pub login_ip: Option<ThrottleRule>,
    pub forgot_password_account: Option<ThrottleRule>,
    pub forgot_password_ip: Option<ThrottleRule>,
    pub sso_start_ip: Option<ThrottleRule>,
    /// Refused SAML responses.
    pub saml_acs_ip: Option<ThrottleRule>,
    /// SCIM calls with a missing or unknown token.
    pub scim_auth_ip: Option<ThrottleRule>,
}

impl RateLimits {
    /// Every limit off.
    pub const OFF: Self = Self {
        login_account: None,
        login_ip: None,
        forgot_password_account: None,
        forgot_password_ip: None,
        sso_start_ip: None,
        saml_acs_ip: None,
        scim_auth_ip: None,
    };
}

/// The most worker threads a setting may ask for: each is a thread with its
/// own stack and run queue, and far more than the machine has CPUs only adds
/// switching between them.
const MAX_WORKER_THREADS: usize = 1024;

/// The runtime's worker threads on a machine with `cpus` CPUs, unless the
/// operator says otherwise.
///
/// On SQLite the database is a thread of this process: the embedded writer,
/// which commits every sign-in, rotation and SCIM create in batches (one
/// sync each), and which every one of those requests waits for. As many
/// workers as CPUs leave it none of its own, and workers that the load
/// keeps only partly busy park and are woken again, a futex call and a
/// context switch each time: on two CPUs one worker took 12-20% less CPU
/// per pass-through sign-in than two, with as many sign-ins per second
/// (docs/benchmarks.md, "One worker fewer than the CPUs"). On PostgreSQL
/// the database is a server of its own, usually on another machine, and
/// the runtime keeps tokio's default of one worker per CPU.
fn default_worker_threads(cpus: usize, sqlite: bool) -> usize {
    if sqlite { cpus.saturating_sub(1).max(1) } else { cpus.max(1) }
}

/// `N/DURATION` (`10/15m`), or `off`.
fn parse_rule(name: &str, text: Option<&str>, default: &str) -> Result<Option<ThrottleRule>, ConfigError> {
    let text = text.unwrap_or(default).trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let bad = || ConfigError::new(name, format!("{text:?}: write N/DURATION such as 10/15m, or off"));
    let (limit, window) = text.split_once('/').ok_or_else(bad)?;
    let limit: u32 = limit.trim().parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
    let window = window.trim();
    let unit_at = window.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let amount: i64 = window[..unit_at].parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
    let window = match &window[unit_at..] {
        "s" => chrono::Duration::seconds(amount),
        "m" => chrono::Duration::minutes(amount),
        "h" => chrono::Duration::hours(amount),
        "d" if amount <= 30 => chrono::Duration::days(amount),
        _ => return Err(bad()),
    };
    Ok(Some(ThrottleRule { limit, window }))
}

impl Settings {
    pub fn from_raw(raw: RawSettings) -> Result<Self, ConfigError> {
        let data_dir = PathBuf::from(raw.data_dir.unwrap_or_else(|| "./data".into()));
        let (database_url, embedded_database) = match raw.database_url {
            Some(url) => {
                if !(url.starts_with("sqlite:")
                    || url.starts_with("postgres:")
                    || url.starts_with("postgresql:"))
                {
                    return Err(ConfigError::new(
                        "GATEHOUSE_DATABASE_URL",
                        "must start with sqlite: or postgres:",
                    ));
                }
                (url, false)
            }
            None => (format!("sqlite://{}?mode=rwc", data_dir.join("gatehouse.db").display()), true),
        };
        // The embedded default is a SQLite URL too.
        let sqlite = database_url.starts_with("sqlite:");
        let bind: SocketAddr = match raw.bind {
            Some(b) => b.trim().parse().map_err(|_| {
                ConfigError::new("GATEHOUSE_BIND", format!("{b:?} is not an address like 127.0.0.1:8080"))
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let public_url = match raw.public_url {
            Some(u) => {
                let url = Url::parse(u.trim())
                    .map_err(|e| ConfigError::new("GATEHOUSE_PUBLIC_URL", format!("{u:?}: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                    return Err(ConfigError::new("GATEHOUSE_PUBLIC_URL", "must be an absolute http(s) URL"));
                }
                url
            }
            None => Url::parse(&format!("http://{bind}"))
                .map_err(|e| ConfigError::new("GATEHOUSE_BIND", e.to_string()))?,
        };
        let token_audience = match raw.token_audience.as_deref().map(str::trim) {
            None => public_url.as_str().trim_end_matches('/').to_owned(),
            Some(a) if a.is_empty() || a.len() > 512 || a.chars().any(char::is_control) => {
                return Err(ConfigError::new(
                    "GATEHOUSE_TOKEN_AUDIENCE",
                    "must be 1 to 512 printable characters",
                ));
            }
            Some(a) => a.to_owned(),
        };
        if let Some(token) = &raw.admin_token
            && token.len() < 32
        {
            return Err(ConfigError::new("GATEHOUSE_ADMIN_TOKEN", "must be at least 32 characters"));
        }
        let master_key = match (raw.master_key, raw.master_key_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "GATEHOUSE_MASTER_KEY_FILE",
                    "give the master keys either in GATEHOUSE_MASTER_KEY or in a file, not both",
                ));
            }
            (Some(k), None) => MasterKeySource::Given(
                MasterKeys::parse(&k).map_err(|e| ConfigError::new("GATEHOUSE_MASTER_KEY", e.to_string()))?,
            ),
            (None, Some(path)) => MasterKeySource::File { path: PathBuf::from(path.trim()), create: false },
            (None, None) if sqlite => {
                MasterKeySource::File { path: data_dir.join("master.key"), create: true }
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "GATEHOUSE_MASTER_KEY",
                    "(or GATEHOUSE_MASTER_KEY_FILE) is required with PostgreSQL, so that every node shares it",
                ));
            }
        };
        let log_format = match raw.log_format.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new("GATEHOUSE_LOG_FORMAT", format!("{other:?}: use text or json")));
            }
        };
        let signing_alg = match raw.signing_alg {
            None => SigningAlgorithm::Es256,
            Some(a) => SigningAlgorithm::parse(&a).ok_or_else(|| {
                ConfigError::new("GATEHOUSE_SIGNING_ALG", format!("{a:?}: use ES256 or EdDSA"))
            })?,
        };
        let seconds = |name: &str, v: Option<u64>, default: u64, max: u64| match v.unwrap_or(default) {
            0 => Err(ConfigError::new(name, "must be positive")),
            s if s > max => Err(ConfigError::new(name, format!("must be at most {max}"))),
            s => Ok(Duration::from_secs(s)),
        };
        let access_token_ttl =
            seconds("GATEHOUSE_ACCESS_TOKEN_TTL_SECS", raw.access_token_ttl_secs, 900, 86_400)?;
        let session_ttl =
            seconds("GATEHOUSE_SESSION_TTL_SECS", raw.session_ttl_secs, 30 * 86_400, 365 * 86_400)?;
        let trusted_proxies = raw
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .map(|p| {
                p.parse::<IpNet>().or_else(|_| p.parse::<IpAddr>().map(IpNet::from)).map_err(|_| {
                    ConfigError::new(
                        "GATEHOUSE_TRUSTED_PROXIES",
                        format!("{p:?} is not an IP address or CIDR"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        // Asked once: on Linux the answer reads the process's cgroup files.
        let cpus = std::thread::available_parallelism().ok().map(|n| n.get());
        let password_hash_concurrency = match raw.password_hash_concurrency {
            Some(0) => {
                return Err(ConfigError::new("GATEHOUSE_PASSWORD_HASH_CONCURRENCY", "must be positive"));
            }
            Some(n) => n,
            None => cpus.unwrap_or(2),
        };
        let worker_threads = match raw.worker_threads {
            Some(0) => return Err(ConfigError::new("GATEHOUSE_WORKER_THREADS", "must be positive")),
            Some(n) if n > MAX_WORKER_THREADS => {
                return Err(ConfigError::new(
                    "GATEHOUSE_WORKER_THREADS",
                    format!("must be at most {MAX_WORKER_THREADS}"),
                ));
            }
            Some(n) => n,
            None => default_worker_threads(cpus.unwrap_or(1), sqlite),
        };
        let max_connections = match raw.max_connections {
            Some(0) => return Err(ConfigError::new("GATEHOUSE_MAX_CONNECTIONS", "must be positive")),
            Some(n) => n,
            None => 1024,
        };
        let client_timeout = seconds("GATEHOUSE_CLIENT_TIMEOUT_SECS", raw.client_timeout_secs, 10, 3600)?;
        let request_timeout = seconds("GATEHOUSE_REQUEST_TIMEOUT_SECS", raw.request_timeout_secs, 90, 3600)?;
        let rule =
            |name: &str, text: &Option<String>, default: &str| parse_rule(name, text.as_deref(), default);
        let rate_limits = RateLimits {
            login_account: rule("GATEHOUSE_LOCKOUT", &raw.lockout, "10/15m")?,
            login_ip: rule("GATEHOUSE_LIMIT_LOGIN_IP", &raw.limit_login_ip, "100/10m")?,
            forgot_password_account: rule(
                "GATEHOUSE_LIMIT_FORGOT_PASSWORD",
                &raw.limit_forgot_password,
                "5/1h",
            )?,
            forgot_password_ip: rule(
                "GATEHOUSE_LIMIT_FORGOT_PASSWORD_IP",
                &raw.limit_forgot_password_ip,
                "50/1h",
            )?,
            sso_start_ip: rule("GATEHOUSE_LIMIT_SSO_START_IP", &raw.limit_sso_start_ip, "300/10m")?,
            saml_acs_ip: rule("GATEHOUSE_LIMIT_SAML_ACS_IP", &raw.limit_saml_acs_ip, "50/10m")?,
            scim_auth_ip: rule("GATEHOUSE_LIMIT_SCIM_AUTH_IP", &raw.limit_scim_auth_ip, "50/10m")?,
        };
        let dns_resolver = match raw.dns_resolver.as_deref().map(str::trim) {
            None | Some("system") => crate::dns::DnsResolver::System,
            Some(addr) => crate::dns::DnsResolver::At(addr.parse().map_err(|_| {
                ConfigError::new("GATEHOUSE_DNS_RESOLVER", format!("{addr:?}: use system or IP:PORT"))
            })?),
        };
        let audit_retention = Duration::from_secs(
            86_400
                * match raw.audit_retention_days {
                    Some(0) => {
                        return Err(ConfigError::new("GATEHOUSE_AUDIT_RETENTION_DAYS", "must be positive"));
                    }
                    Some(d) if d > 36_500 => {
                        return Err(ConfigError::new(
                            "GATEHOUSE_AUDIT_RETENTION_DAYS",
                            "must be at most 36500",
                        ));
                    }
                    Some(d) => d,
                    None => 365,
                },
        );
        let mail = match (raw.smtp_url.as_deref(), raw.mail_from.as_deref()) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new("GATEHOUSE_MAIL_FROM", "is required with GATEHOUSE_SMTP_URL"));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new("GATEHOUSE_SMTP_URL", "is required with GATEHOUSE_MAIL_FROM"));
            }
            (Some(url), Some(from)) => Some(
                crate::mail::MailSettings::parse(url, from)
                    .map_err(|why| ConfigError::new("GATEHOUSE_SMTP_URL", why))?,
            ),
        };
        Ok(Self {
            database_url,
            embedded_database,
            bind,
            public_url,
            token_audience,
            admin_token: raw.admin_token,
            master_key,
            log_format,
            log_level: raw.log_level.unwrap_or_else(|| "info".into()),
            data_dir,
            signing_alg,
            access_token_ttl,
            session_ttl,
            trusted_proxies,
            allow_private_targets: raw.allow_private_targets.unwrap_or(false),
            password_hash_concurrency,
            password_hash_queue: raw.password_hash_queue.unwrap_or(64),
            worker_threads,
            limits: crate::server::Limits { max_connections, client_timeout },
            request_timeout,
            rate_limits,
            dns_resolver,
            audit_retention,
            mail,
        })
    }

    /// The issuer written into tokens: the public URL without a trailing
    /// slash.
    pub fn issuer(&self) -> String {
        self.public_url.as_str().trim_end_matches('/').to_owned()
    }

    /// Settings for tests: a given database, a fixed master key, loopback.
    pub fn for_tests(database_url: &str) -> Self {
        let raw = RawSettings {
            database_url: Some(database_url.into()),
            master_key: Some(MasterKey::generate().to_base64()),
            bind: Some("127.0.0.1:0".into()),
            public_url: Some("http://gatehouse.test".into()),
            ..RawSettings::default()
        };
        Self::from_raw(raw).unwrap_or_else(|e| unreachable!("test settings are valid: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env = |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        Settings::from_raw(RawSettings::default().overlay_env(env)?)
    }

    #[test]
    fn defaults_are_the_embedded_sqlite_on_loopback() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.bind, "127.0.0.1:8080".parse().unwrap());
        assert!(s.embedded_database);
        assert!(s.database_url.starts_with("sqlite://./data/gatehouse.db"));
        assert!(
            matches!(s.master_key, MasterKeySource::File { ref path, create: true } if path.ends_with("master.key"))
        );
        assert_eq!(s.issuer(), "http://127.0.0.1:8080");
        assert_eq!(s.access_token_ttl, Duration::from_secs(900));
    }

    #[test]
    fn bad_settings_name_themselves() {
        for (pairs, name) in [
            (vec![("GATEHOUSE_BIND", "nonsense")], "GATEHOUSE_BIND"),
            (vec![("GATEHOUSE_DATABASE_URL", "mysql://x")], "GATEHOUSE_DATABASE_URL"),
            (vec![("GATEHOUSE_DATABASE_URL", "postgres://x/y")], "GATEHOUSE_MASTER_KEY"),
            (vec![("GATEHOUSE_MASTER_KEY", "tooshort")], "GATEHOUSE_MASTER_KEY"),
            (vec![("GATEHOUSE_ADMIN_TOKEN", "short")], "GATEHOUSE_ADMIN_TOKEN"),
            (vec![("GATEHOUSE_LOG_FORMAT", "xml")], "GATEHOUSE_LOG_FORMAT"),
            (vec![("GATEHOUSE_PUBLIC_URL", "ftp://x")], "GATEHOUSE_PUBLIC_URL"),
            (vec![("GATEHOUSE_ACCESS_TOKEN_TTL_SECS", "soon")], "GATEHOUSE_ACCESS_TOKEN_TTL_SECS"),
            (vec![("GATEHOUSE_TRUSTED_PROXIES", "10.0.0.0/8, bogus")], "GATEHOUSE_TRUSTED_PROXIES"),
            (vec![("GATEHOUSE_SIGNING_ALG", "HS256")], "GATEHOUSE_SIGNING_ALG"),
        ] {
            let err = settings(&pairs).unwrap_err();
            assert_eq!(err.name, name, "{pairs:?}");
            assert!(!err.to_string().contains('\n'));
        }
    }

    #[test]
    fn limits_are_n_per_duration_or_off() {
        let s = settings(&[("GATEHOUSE_LOCKOUT", "3/90s"), ("GATEHOUSE_LIMIT_SCIM_AUTH_IP", "OFF")]).unwrap();
        let lockout = s.rate_limits.login_account.unwrap();
        assert_eq!((lockout.limit, lockout.window), (3, chrono::Duration::seconds(90)));
        assert_eq!(s.rate_limits.scim_auth_ip, None);
        assert_eq!(s.rate_limits.login_ip.unwrap().window, chrono::Duration::minutes(10), "the default");
        for bad in ["10", "0/1m", "10/0m", "10/15", "10/15w", "-1/1m", "10/m", "x/1h", "10/365d"] {
            let err = settings(&[("GATEHOUSE_LIMIT_LOGIN_IP", bad)]).unwrap_err();
            assert_eq!(err.name, "GATEHOUSE_LIMIT_LOGIN_IP", "{bad}");
        }
    }

    #[test]
    fn worker_threads_leave_sqlite_its_writer_a_cpu() {
        assert_eq!(default_worker_threads(1, true), 1, "one CPU still needs a worker");
        assert_eq!(default_worker_threads(2, true), 1);
        assert_eq!(default_worker_threads(8, true), 7);
        assert_eq!(default_worker_threads(1, false), 1);
        assert_eq!(default_worker_threads(2, false), 2);
        assert_eq!(default_worker_threads(8, false), 8);
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(settings(&[]).unwrap().worker_threads, default_worker_threads(cpus, true));
        let key = MasterKey::generate().to_base64();
        let postgres =
            [("GATEHOUSE_DATABASE_URL", "postgres://db/g"), ("GATEHOUSE_MASTER_KEY", key.as_str())];
        assert_eq!(settings(&postgres).unwrap().worker_threads, cpus);
        assert_eq!(settings(&[("GATEHOUSE_WORKER_THREADS", " 3 ")]).unwrap().worker_threads, 3);
        for bad in ["0", "-1", "1025", "two", "1e3", "18446744073709551616", ""] {
            let err = settings(&[("GATEHOUSE_WORKER_THREADS", bad)]).unwrap_err();
            assert_eq!(err.name, "GATEHOUSE_WORKER_THREADS", "{bad:?}");
        }
    }

    #[test]
    fn secrets_are_not_echoed_in_errors() {
        let err = settings(&[("GATEHOUSE_ADMIN_TOKEN", "hunter2")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        let err = settings(&[("GATEHOUSE_MASTER_KEY", "hunter2hunter2")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn the_file_refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        std::fs::write(&path, "bind = \"127.0.0.1:9000\"\nbnid = 1\n").unwrap();
        let err = RawSettings::from_file(&path).unwrap_err();
        assert!(err.reason.contains("bnid"), "{err}");
        std::fs::write(&path, "bind = \"127.0.0.1:9000\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n").unwrap();
        let raw = RawSettings::from_file(&path).unwrap();
        let s = Settings::from_raw(
            raw.overlay_env(|n| (n == "GATEHOUSE_BIND").then(|| "127.0.0.1:9001".into())).unwrap(),
        )
        .unwrap();
        assert_eq!(s.bind.port(), 9001, "environment wins over the file");
        assert_eq!(s.trusted_proxies.len(), 1);
    }
}
