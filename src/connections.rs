//! The registry of connection kinds: the one place that knows every kind of
//! identity-provider connection an organization can have, as Dex's server
//! does with its connector map.
//!
//! A stored connection is a kind (a name) and a configuration (JSON). It is
//! read here, once, into [`Connection`]: its [`Kind`], and its configuration
//! checked into the [`Protocol`] that kind speaks (OpenID Connect for Okta
//! and Azure AD, which are two configurations of one connector; SAML for
//! Ping). Everything that starts, finishes, tests or lists a connection
//! goes through it, and no other code compares kind names. Adding a kind
//! (Google Workspace, OneLogin, a generic SAML IdP) is a variant here, its
//! protocol crate, and its tests.

use gatehouse_core::{AccountPolicy, AuthMethod, Email, InvalidField};
use gatehouse_oidc::{ConnectionConfig as OidcConfig, OidcConnection, Provider};
use gatehouse_saml::{SamlConfig, SamlConnection};
use gatehouse_store::ConnectionRecord;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::parse_json;
use crate::state::AppState;

/// Every kind of connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Okta,
    AzureAd,
    Ping,
}

impl Kind {
    pub(crate) const ALL: [Kind; 3] = [Self::Okta, Self::AzureAd, Self::Ping];

    /// The name stored, and written in configurations as `kind`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Okta => "okta",
            Self::AzureAd => "azure_ad",
            Self::Ping => "ping",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Its name in the portal's addresses (and its guide's).
    pub(crate) fn slug(self) -> &'static str {
        match self {
            Self::Okta => "okta",
            Self::AzureAd => "azure-ad",
            Self::Ping => "ping",
        }
    }

    pub(crate) fn from_slug(slug: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.slug() == slug)
    }

    /// Its name as people know it.
    pub(crate) fn title(self) -> &'static str {
        match self {
            Self::Okta => "Okta",
            Self::AzureAd => "Azure Active Directory",
            Self::Ping => "Ping Identity",
        }
    }

    /// How people who sign in through this kind are recorded.
    pub(crate) fn method(self) -> AuthMethod {
        match self {
            Self::Okta | Self::AzureAd => AuthMethod::Oidc,
            Self::Ping => AuthMethod::Saml,
        }
    }
}

/// A connection's configuration as written, of whichever kind its `kind`
/// names (the admin API's body, and what is stored without the secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum Config {
    Oidc(OidcConfig),
    Saml(SamlConfig),
}

impl Config {
    /// Reads a configuration as the kind it names, naming the field at fault
    /// as every other body does; an unknown kind is refused as `kind`.
    pub(crate) fn parse(json: &[u8]) -> Result<Self, ApiError> {
        #[derive(Deserialize)]
        struct Named {
            kind: Option<String>,
        }
        let named = parse_json::<Named>(json)?.kind;
        match named.as_deref().map(Kind::parse) {
            Some(Some(Kind::Okta | Kind::AzureAd)) => parse_json(json).map(Self::Oidc),
            Some(Some(Kind::Ping)) => parse_json(json).map(Self::Saml),
            Some(None) | None => {
                let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                Err(ApiError::invalid("kind", format!("must be one of {}", kinds.join(", "))))
            }
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        match self {
            Self::Oidc(c) => match c.kind {
                Provider::Okta => Kind::Okta,
                Provider::AzureAd => Kind::AzureAd,
            },
            Self::Saml(_) => Kind::Ping,
        }
    }

    /// Checks everything that can be checked without the network.
    pub(crate) fn validate(&self, allow_private_targets: bool) -> Result<Protocol, InvalidField> {
        Ok(match self {
            Self::Oidc(c) => Protocol::Oidc(c.validate(allow_private_targets)?),
            Self::Saml(c) => Protocol::Saml(c.validate(allow_private_targets)?),
        })
    }
}

/// A configuration, checked: the protocol its kind speaks.
#[derive(Debug, Clone)]
pub(crate) enum Protocol {
    Oidc(OidcConnection),
    Saml(SamlConnection),
}

/// A stored connection, read and checked.
pub(crate) struct Connection {
    pub(crate) record: ConnectionRecord,
    pub(crate) kind: Kind,
    pub(crate) protocol: Protocol,
}

impl Connection {
    /// Reads a stored connection. What was stored was checked when it was
    /// saved: failing to read it is Gatehouse's fault, not the caller's.
    pub(crate) fn open(state: &AppState, record: ConnectionRecord) -> Result<Self, ApiError> {
        let config = Config::parse(record.config.as_bytes())
            .map_err(|e| ApiError::internal(format!("stored connection {}: {e:?}", record.id)))?;
        let kind = config.kind();
        if kind.as_str() != record.kind {
            return Err(ApiError::internal(format!(
                "stored connection {} is not the kind it says",
                record.id
            )));
        }
        let protocol = config
            .validate(state.settings().allow_private_targets)
            .map_err(|e| ApiError::internal(format!("stored connection {}: {e}", record.id)))?;
        Ok(Self { record, kind, protocol })
    }

    /// How the connection treats people it does not know yet.
    pub(crate) fn account(&self) -> &AccountPolicy {
        match &self.protocol {
            Protocol::Oidc(c) => &c.account,
            Protocol::Saml(c) => &c.account,
        }
    }

    /// Whether people with `email` sign in through this connection (its
    /// allowed domains; every email when it lists none).
    pub(crate) fn admits(&self, email: &Email) -> bool {
        self.account().allowed_email_domains.admits(email.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_parsed_by_its_name_and_speaks_its_protocol() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("Okta"), None, "names are exact");
        let okta = br#"{"kind":"okta","issuer":"https://acme.okta.com","client_id":"x","client_secret":"s"}"#;
        assert_eq!(Config::parse(okta).unwrap().kind(), Kind::Okta);
        let ping = br#"{"kind":"ping","idp_metadata_url":"https://idp.acme.com/metadata"}"#;
        assert_eq!(Config::parse(ping).unwrap().kind(), Kind::Ping);
        for unknown in [&br#"{"kind":"google"}"#[..], br#"{"issuer":"https://x"}"#] {
            assert!(
                matches!(Config::parse(unknown), Err(ApiError::Invalid { field: Some(f), .. }) if f == "kind")
            );
        }
        assert_eq!((Kind::Okta.method(), Kind::Ping.method()), (AuthMethod::Oidc, AuthMethod::Saml));
    }
}
