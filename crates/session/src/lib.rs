//! Platform session tokens: the only crate that signs anything.
//!
//! Architecture invariant: no other crate in the workspace holds a private
//! signing key or calls `jsonwebtoken::encode`. This crate does no IO; keys
//! come in as sealed [`StoredKey`]s read by the caller, and all time comes in
//! as an argument taken from the injected clock.
//!
//! - [`MasterKeys`] seal private keys (AES-256-GCM) before they reach storage;
//!   each sealed value names the [`MasterKey`] that sealed it, so keys rotate.
//! - [`KeyRing`] is the set of keys a process signs and verifies with, and the
//!   JWKS it publishes.
//! - [`OpaqueToken`] makes refresh and admin tokens, which are stored only as
//!   SHA-256 hashes.

mod claims;
mod keys;
mod master_key;
mod opaque;

pub use claims::AccessClaims;
pub use jsonwebtoken::jwk::JwkSet;
pub use keys::{
    KeyRing, NewSigningKey, SigningAlgorithm, StoredKey, VerifyError, generate_signing_key, published_jwks,
    token_kid,
};
pub use master_key::{MasterKey, MasterKeyError, MasterKeys};
pub use opaque::{OpaqueToken, hash_opaque_token, ordered_token_key};

/// Fails unless exactly one jsonwebtoken crypto backend is compiled in.
///
/// With none or two, jsonwebtoken compiles but panics on first use; checking
/// at startup turns that into a clear error before the service listens.
pub fn check_crypto_backend() -> Result<(), SessionError> {
    jsonwebtoken::crypto::CryptoProvider::try_get_default().map(|_| ()).ok_or(SessionError::CryptoBackend)
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("jsonwebtoken must be built with exactly one crypto backend")]
    CryptoBackend,
    #[error("no active signing key; run `gatehouse keys rotate`")]
    NoSigningKey,
    #[error("signing key {kid} cannot be used: {reason}")]
    BadKey { kid: String, reason: String },
    #[error("signing failed: {0}")]
    Sign(String),
    /// A key was sealed with a master key this process does not have (yet).
    #[error("a signing key is sealed with master key {0}, which is not configured here")]
    UnknownMasterKey(String),
}
