//! OpenID Connect connections: Okta and Azure AD (Entra ID) are two
//! configurations of one OIDC connector, not two kinds of connector.
//!
//! This crate turns what an admin writes ([`ConnectionConfig`]) into a
//! validated [`OidcConnection`]: where discovery lives, and the
//! [`IssuerRule`] every ID token's `iss` must satisfy
//! (`shared/reference/idp-interop.md` §3). The issuer is pinned per
//! connection, never derived from a token.

mod config;
mod discovery;
mod issuer;

pub use config::{ConnectionConfig, InvalidConnection, OidcConnection, Provider};
pub use discovery::{DiscoveryError, ProviderMetadata, PublicKey, discover};
pub use issuer::{IssuerError, IssuerRule, is_guid};
