use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const SEALED_PREFIX: &str = "v1.";
const NONCE_LEN: usize = 12;

/// The key that seals every private key and secret Gatehouse stores.
///
/// It is 32 random bytes, written as standard base64. It never reaches the
/// database; losing it makes stored signing keys unreadable.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MasterKeyError {
    #[error("must be 32 bytes encoded as base64 (try `openssl rand -base64 32`)")]
    Format,
    #[error("sealed value is malformed or was sealed with another master key")]
    Unseal,
}

impl MasterKey {
    pub fn generate() -> Self {
        Self(rand::random())
    }

    pub fn from_base64(text: &str) -> Result<Self, MasterKeyError> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| MasterKeyError::Format)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| MasterKeyError::Format)?;
        Ok(Self(bytes))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    fn aead(&self) -> RandomizedNonceKey {
        // A 32-byte key is always valid for AES-256-GCM.
        RandomizedNonceKey::new(&AES_256_GCM, &self.0).unwrap_or_else(|_| unreachable!())
    }

    /// Encrypts `plaintext`, binding it to `context` (for example a key id) so
    /// that a sealed value cannot be swapped into another row.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> String {
        let mut buf = plaintext.to_vec();
        let nonce = self
            .aead()
            .seal_in_place_append_tag(Aad::from(context.as_bytes()), &mut buf)
            .unwrap_or_else(|_| unreachable!("AES-GCM sealing of an in-memory buffer"));
        let mut out = nonce.as_ref().to_vec();
        out.extend_from_slice(&buf);
        format!("{SEALED_PREFIX}{}", STANDARD.encode(out))
    }

    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, MasterKeyError> {
        let body = sealed.strip_prefix(SEALED_PREFIX).ok_or(MasterKeyError::Unseal)?;
        let raw = STANDARD.decode(body).map_err(|_| MasterKeyError::Unseal)?;
        if raw.len() < NONCE_LEN {
            return Err(MasterKeyError::Unseal);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| MasterKeyError::Unseal)?;
        let mut buf = ciphertext.to_vec();
        let plain = self
            .aead()
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| MasterKeyError::Unseal)?;
        Ok(plain.to_vec())
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_is_bound_to_its_context() {
        let key = MasterKey::generate();
        let sealed = key.seal("kid-1", b"secret");
        assert!(!sealed.contains("secret"));
        assert_eq!(key.open("kid-1", &sealed).unwrap(), b"secret");
        assert_eq!(key.open("kid-2", &sealed), Err(MasterKeyError::Unseal));
        assert_eq!(MasterKey::generate().open("kid-1", &sealed), Err(MasterKeyError::Unseal));
    }

    #[test]
    fn master_key_text_must_be_32_bytes_of_base64() {
        assert_eq!(MasterKey::from_base64("short").unwrap_err(), MasterKeyError::Format);
        let key = MasterKey::generate();
        assert!(MasterKey::from_base64(&key.to_base64()).is_ok());
    }
}
