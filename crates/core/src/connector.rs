use std::net::IpAddr;

use async_trait::async_trait;

use crate::{Password, User};

/// What the signing-in device said about itself, and where it came from.
///
/// `os` and `name` are client-supplied and length-limited by the HTTP layer;
/// `ip` is the peer address, or the forwarded one behind a trusted proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    pub os: Option<String>,
    pub name: Option<String>,
    pub ip: Option<IpAddr>,
}

/// One password sign-in attempt for a user the platform already knows.
///
/// The caller has already checked that the email belongs to a registered,
/// active user; connectors only ever see known users.
#[derive(Debug)]
pub struct PasswordAttempt<'a> {
    pub user: &'a User,
    pub password: &'a Password,
    pub device: &'a Device,
}

/// Why a password connector said no. Kept for audit events; callers never
/// tell the end user which one it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// The user has no credential this connector can check.
    NoCredential,
    /// The credential did not match.
    WrongPassword,
    /// The user has no email address, which this connector signs in with
    /// (a user an IdP provisioned with only a userName signs in through the
    /// IdP).
    NoEmail,
    /// An upstream service answered with something other than success; the
    /// HTTP status is kept for the audit trail.
    UpstreamStatus(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    Authenticated,
    Rejected(RejectReason),
}

/// Failures that are not the user's fault: the connector could not reach a
/// verdict at all.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The upstream service could not be reached in time (timeout, refused
    /// connection, TLS failure, or a target the platform refuses to call).
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// A value could not be placed into the request safely (for example a
    /// header value with a line break); the attempt fails closed.
    #[error("request could not be built safely: {0}")]
    UnsafeRequest(String),
    /// Too much work is waiting already (the password hashing queue is
    /// full); nothing was decided, and the caller may try again shortly.
    #[error("too busy to decide now")]
    Busy,
    /// Anything else that went wrong inside the connector.
    #[error("connector failure: {0}")]
    Internal(String),
}

/// A connector that decides on a user's password: the local argon2id store
/// and the REST pass-through are both this.
#[async_trait]
pub trait PasswordConnector: Send + Sync {
    async fn login(&self, attempt: PasswordAttempt<'_>) -> Result<LoginOutcome, ConnectorError>;
}
