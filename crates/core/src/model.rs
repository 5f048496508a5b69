use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) id, so that ordering by id is
            /// ordering by creation.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// Identifies an organization (a tenant).
    OrgId
);
id_type!(
    /// Identifies a platform user.
    UserId
);
id_type!(
    /// Identifies a sign-in session; carried as `sid` in access tokens.
    SessionId
);

/// An email address as given, plus the form it is compared in.
///
/// Emails are unique across the platform and compared case-insensitively, so
/// the store indexes [`Email::normalized`] and the user sees what they typed.
#[derive(Clone, PartialEq, Eq)]
pub struct Email {
    original: String,
    normalized: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most 254 characters")]
    TooLong,
    #[error("must look like name@domain")]
    Malformed,
}

impl Email {
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if trimmed.len() > 254 {
            return Err(EmailError::TooLong);
        }
        let (local, domain) = trimmed.rsplit_once('@').ok_or(EmailError::Malformed)?;
        let bad_char = |c: char| c.is_whitespace() || c.is_control() || c == '@';
        if local.is_empty()
            || domain.is_empty()
            || local.chars().any(bad_char)
            || domain.chars().any(bad_char)
            || domain.starts_with('.')
            || domain.ends_with('.')
        {
            return Err(EmailError::Malformed);
        }
        Ok(Self { original: trimmed.to_owned(), normalized: trimmed.to_lowercase() })
    }

    /// Rebuilds an email read back from storage, where it was validated on the
    /// way in.
    pub fn from_trusted(original: String) -> Self {
        let normalized = original.to_lowercase();
        Self { original, normalized }
    }

    pub fn as_str(&self) -> &str {
        &self.original
    }

    /// The domain, lower-cased: what follows the `@`.
    pub fn domain(&self) -> &str {
        self.normalized.rsplit_once('@').map_or("", |(_, d)| d)
    }

    pub fn normalized(&self) -> &str {
        &self.normalized
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.original, f)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

/// A password in transit. Its `Debug` and `Display` never show it, so it
/// cannot leak through a log line or an error message by accident.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    /// The secret itself. Call sites are few and greppable on purpose.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub id: OrgId,
    pub name: String,
    /// The Enterprise ToolKit entitlement: required for Okta, Azure AD and Ping.
    pub enterprise_toolkit: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub org_id: OrgId,
    /// `None` for a user an IdP provisioned with only a userName (SCIM
    /// requires no more); such a user signs in through single sign-on only.
    /// Every user has an email or a userName, or both.
    pub email: Option<Email>,
    pub display_name: String,
    pub external_id: Option<String>,
    pub active: bool,
    /// PHC-format argon2id hash; `None` when the user has no local password.
    pub password_hash: Option<String>,
    /// The SCIM `userName`, when an IdP set one; otherwise it is the email.
    pub user_name: Option<String>,
    /// The SCIM resource as the IdP last wrote it (JSON), so that attributes
    /// the platform does not model are kept and returned.
    pub scim_resource: Option<String>,
    /// Bumped on every change: the SCIM `meta.version` and ETag.
    pub version: i64,
    pub role: Role,
    pub created_via: Origin,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One of a user's SCIM emails, as filters compare it (see
/// [`User::email_index`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailIndexEntry {
    pub value: Option<String>,
    pub kind: Option<String>,
    pub primary: Option<bool>,
}

/// What a user may do in their organization's portal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    #[default]
    Member,
    /// Manages the organization's set-up and users in the portal.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "member" => Some(Self::Member),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// How a user came to be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Origin {
    /// Created by an admin, through the API or the portal.
    Admin,
    /// Provisioned by the organization's IdP over SCIM.
    Scim,
    /// Created at their first single sign-on.
    JustInTime,
    /// From before this was recorded.
    #[default]
    Unknown,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Scim => "scim",
            Self::JustInTime => "jit",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(name: &str) -> Self {
        match name {
            "admin" => Self::Admin,
            "scim" => Self::Scim,
            "jit" => Self::JustInTime,
            _ => Self::Unknown,
        }
    }
}

impl User {
    /// The SCIM `userName`: the one an IdP gave, or the email.
    pub fn scim_user_name(&self) -> &str {
        self.user_name.as_deref().or(self.email.as_ref().map(Email::as_str)).unwrap_or_default()
    }

    /// What to call the user where a person reads it: the email, else the
    /// userName.
    pub fn handle(&self) -> &str {
        self.email.as_ref().map_or_else(|| self.scim_user_name(), Email::as_str)
    }

    /// The user's SCIM `emails`: the first non-empty `emails` list the IdP
    /// wrote (its key in any case), else the platform email as the primary
    /// work address, else none. The SCIM resource shows exactly these, and
    /// the store indexes exactly these ([`User::email_index`]).
    pub fn scim_emails(&self) -> Vec<serde_json::Value> {
        let stored =
            self.scim_resource.as_deref().and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok());
        self.scim_emails_in(stored.as_ref().and_then(serde_json::Value::as_object))
    }

    /// [`User::scim_emails`], for a caller that has parsed the stored
    /// resource already.
    pub fn scim_emails_in(
        &self,
        stored: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Vec<serde_json::Value> {
        let written = stored.and_then(|map| {
            map.iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("emails"))
                .find_map(|(_, v)| v.as_array().filter(|a| !a.is_empty()))
        });
        match (written, &self.email) {
            (Some(list), _) => list.clone(),
            (None, Some(email)) => {
                vec![serde_json::json!({ "value": email.as_str(), "type": "work", "primary": true })]
            }
            (None, None) => Vec::new(),
        }
    }

    /// [`User::scim_emails`] as a SCIM filter reads them: per entry, its
    /// `value` and `type` lower-cased when they are strings, and `primary`
    /// when it is a boolean (or the string `"true"`/`"false"`, as Entra
    /// writes them). Names of sub-attributes compare without case; an entry
    /// that is not an object has none of them.
    pub fn email_index(&self) -> Vec<EmailIndexEntry> {
        fn field<'a>(entry: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
            entry.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
        }
        let text = |entry: &serde_json::Value, name: &str| {
            field(entry, name).and_then(serde_json::Value::as_str).map(str::to_lowercase)
        };
        self.scim_emails()
            .iter()
            .map(|entry| EmailIndexEntry {
                value: text(entry, "value"),
                kind: text(entry, "type"),
                primary: match field(entry, "primary") {
                    Some(serde_json::Value::Bool(b)) => Some(*b),
                    Some(serde_json::Value::String(s)) if s.eq_ignore_ascii_case("true") => Some(true),
                    Some(serde_json::Value::String(s)) if s.eq_ignore_ascii_case("false") => Some(false),
                    _ => None,
                },
            })
            .collect()
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("org_id", &self.org_id)
            .field("email", &self.email)
            .field("active", &self.active)
            .field("has_password", &self.password_hash.is_some())
            .finish_non_exhaustive()
    }
}

/// How a session was authenticated; recorded on the session and carried in
/// the access token's `amr`-like `auth_method` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// The platform's own argon2id password store.
    LocalPassword,
    /// The organization's external REST authentication service.
    ExternalRest,
    /// Single sign-on through an OpenID Connect provider (Okta, Azure AD).
    Oidc,
    /// Single sign-on through a SAML 2.0 IdP (Ping Identity).
    Saml,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LocalPassword => "password",
            Self::ExternalRest => "external_rest",
            Self::Oidc => "oidc",
            Self::Saml => "saml",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "password" => Some(Self::LocalPassword),
            "external_rest" => Some(Self::ExternalRest),
            "oidc" => Some(Self::Oidc),
            "saml" => Some(Self::Saml),
            _ => None,
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_compared_case_insensitively_but_kept_as_typed() {
        let e = Email::parse("  Alice@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "Alice@Example.COM");
        assert_eq!(e.normalized(), "alice@example.com");
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in ["", "alice", "@example.com", "alice@", "a b@example.com", "a@b@c", "a@.com"] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn password_debug_is_redacted() {
        let p = Password::new("hunter2".into());
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}

/// An allow list of email domains (lower-cased); empty admits every domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmailDomains(Vec<String>);

impl EmailDomains {
    /// Checks and normalises `domains`; the error names the first that is
    /// not a domain.
    pub fn parse(domains: &[String]) -> Result<Self, String> {
        let label_ok = |l: &str| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        let mut checked = Vec::with_capacity(domains.len());
        for d in domains {
            let d = d.trim().to_ascii_lowercase();
            if !d.contains('.') || !d.split('.').all(label_ok) {
                return Err(format!("{d:?} is not a domain"));
            }
            checked.push(d);
        }
        Ok(Self(checked))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `email`'s domain is on the list (always, for an empty list).
    pub fn admits(&self, email: &str) -> bool {
        let domain = email.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
        self.0.is_empty() || domain.is_some_and(|d| self.0.contains(&d))
    }
}

/// How a single sign-on connection treats people it does not know yet: the
/// same for every kind of connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountPolicy {
    /// Create unknown users on their first sign-in.
    pub jit_provisioning: bool,
    /// Link a first sign-in to an existing user with the same, verified,
    /// email.
    pub link_by_email: bool,
    pub allowed_email_domains: EmailDomains,
    /// Believe the provider's email for linking and creating users even in
    /// domains the organization has not verified. Off by default: an IdP
    /// can assert any address, and only a verified domain says that the
    /// organization (and so its IdP) speaks for it.
    pub trust_unverified_email_domains: bool,
    /// Create users just in time even though the organization provisions
    /// them by SCIM. Off by default: where SCIM is the source of truth, a
    /// sign-in does not create the people it did not push.
    pub jit_alongside_scim: bool,
    /// Which groups reach the access token.
    pub groups_source: GroupsSource,
    /// The IdP group whose members are the organization's admins: with it
    /// set, each sign-in through the connection makes the user an admin or
    /// a member by whether the IdP asserts it.
    pub admin_group: Option<String>,
}

/// The groups an access token carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupsSource {
    /// Those the provider asserts at sign-in (OIDC claim, SAML attribute).
    Idp,
    /// Those SCIM has pushed.
    Scim,
    /// Both, merged.
    #[default]
    Both,
}

impl GroupsSource {
    pub fn parse(name: Option<&str>) -> Result<Self, InvalidField> {
        match name {
            None | Some("both") => Ok(Self::Both),
            Some("idp") => Ok(Self::Idp),
            Some("scim") => Ok(Self::Scim),
            Some(_) => Err(InvalidField::new("groups_source", "must be idp, scim or both")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idp => "idp",
            Self::Scim => "scim",
            Self::Both => "both",
        }
    }

    /// The groups to put in an access token: `idp` (as asserted at sign-in)
    /// and `scim` (as pushed), by this choice; sorted, without duplicates.
    pub fn merge(self, idp: &[String], scim: Vec<String>) -> Vec<String> {
        let mut groups = match self {
            Self::Idp => Vec::new(),
            Self::Scim | Self::Both => scim,
        };
        if self != Self::Scim {
            groups.extend(idp.iter().cloned());
        }
        groups.sort_unstable();
        groups.dedup();
        groups
    }
}

/// What a provider said about a user's groups at sign-in, and what the
/// connection makes of it: kept with the session, so that every access
/// token of the session carries the same choice.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdpGroups {
    pub source: GroupsSource,
    pub groups: Vec<String>,
    /// The provider said there were more groups than it would send (Azure
    /// AD's overage marker), or sent more than are kept: `groups` is not
    /// the whole list.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overage: bool,
}

impl IdpGroups {
    /// Groups kept from one assertion at most; past that the list counts as
    /// an overage.
    pub const MAX: usize = 200;
    /// The longest group name kept.
    pub const MAX_NAME: usize = 256;

    /// From what a provider asserted: empty, overlong and control-character
    /// names dropped, duplicates merged, at most [`Self::MAX`] kept.
    pub fn asserted(source: GroupsSource, asserted: &[String], overage: bool) -> Self {
        let mut groups: Vec<String> = asserted
            .iter()
            .map(|g| g.trim())
            .filter(|g| !g.is_empty() && g.len() <= Self::MAX_NAME && !g.chars().any(char::is_control))
            .map(str::to_owned)
            .collect();
        groups.sort_unstable();
        groups.dedup();
        let overage = overage || groups.len() > Self::MAX;
        groups.truncate(Self::MAX);
        Self { source, groups, overage }
    }

    /// The groups of an access token, given the user's SCIM groups now.
    pub fn token_groups(&self, scim: Vec<String>) -> Vec<String> {
        self.source.merge(&self.groups, scim)
    }
}

/// A connection's account settings as written (in any kind's configuration).
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountSettings<'a> {
    pub jit_provisioning: bool,
    pub link_by_email: bool,
    pub allowed_email_domains: &'a [String],
    pub trust_unverified_email_domains: bool,
    pub jit_alongside_scim: bool,
    pub groups_source: Option<&'a str>,
    pub admin_group: Option<&'a str>,
}

impl AccountPolicy {
    /// From a connection's settings; a bad value is refused naming its
    /// field.
    pub fn new(settings: AccountSettings<'_>) -> Result<Self, InvalidField> {
        let allowed_email_domains = EmailDomains::parse(settings.allowed_email_domains)
            .map_err(|m| InvalidField::new("allowed_email_domains", m))?;
        Ok(Self {
            jit_provisioning: settings.jit_provisioning,
            link_by_email: settings.link_by_email,
            allowed_email_domains,
            trust_unverified_email_domains: settings.trust_unverified_email_domains,
            jit_alongside_scim: settings.jit_alongside_scim,
            groups_source: GroupsSource::parse(settings.groups_source)?,
            admin_group: match settings.admin_group.map(str::trim) {
                None | Some("") => None,
                Some(g) if g.chars().count() > 256 || g.chars().any(char::is_control) => {
                    return Err(InvalidField::new(
                        "admin_group",
                        "must be a group name of at most 256 characters",
                    ));
                }
                Some(g) => Some(g.to_owned()),
            },
        })
    }
}

/// A configuration value refused, naming the field at fault (for the
/// `field` of a 400 answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    pub field: &'static str,
    pub message: String,
}

impl InvalidField {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}
