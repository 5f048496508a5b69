//! SAML 2.0 single sign-on with Gatehouse as the service provider: Ping
//! Identity (PingFederate, PingOne) and any IdP configured alike.
//!
//! Built on samael (xmlsec1 and libxml2 underneath), with its fail-open
//! defaults closed here (`docs/identity-providers.md` §2.3 says which, and why): an IdP without
//! a signing certificate is refused, SHA-1 is off unless a connection allows
//! it, a DOCTYPE, comment or processing instruction refuses a message before
//! samael sees it, and samael only verifies and reduces: what was signed is
//! read and judged here (`assertion.rs`), by the caller's clock.

mod acs;
mod assertion;
mod config;
mod decrypt;
mod fetch;
mod sp;

pub use acs::{AcsError, MAX_RESPONSE_BASE64, SamlIdentity, has_dtd, validate};
pub use config::{
    IdpDescriptor, InvalidSamlConnection, MAX_METADATA, SamlConfig, SamlConnection, SignedParts,
    parse_metadata,
};
pub use fetch::fetch_metadata;
pub use sp::{Sp, SpEndpoints, SpError, SpKeys};
