//! OpenID Connect connections: Okta and Azure AD (Entra ID) are two
//! configurations of one OIDC connector, not two kinds of connector.
//!
//! This crate turns what an admin writes ([`ConnectionConfig`]) into a
//! validated [`OidcConnection`]: where discovery lives, and the
//! [`IssuerRule`] every ID token's `iss` must satisfy
//! (`docs/identity-providers.md` §1). The issuer is pinned per
//! connection, never derived from a token.

mod cache;
mod config;
mod discovery;
mod issuer;
mod rp;

pub use cache::ProviderCache;
pub use config::{ConnectionConfig, InvalidConnection, OidcConnection, Provider};
pub use discovery::{DiscoveryError, ProviderInfo, ProviderMetadata, PublicKey, discover};
pub use issuer::{IssuerError, IssuerRule, is_guid};
pub use rp::{
    Authorization, CLOCK_SKEW, Expectations, Identity, SignInError, authorization, exchange_code,
    verify_id_token,
};
