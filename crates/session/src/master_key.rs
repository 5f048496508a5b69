use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// Sealed before key rotation existed: no key id. Still opened, by trying
/// each key.
const V1_PREFIX: &str = "v1.";
/// `v2.<key id>.<base64 of nonce and ciphertext>`.
const V2_PREFIX: &str = "v2.";
const NONCE_LEN: usize = 12;

/// The key that seals every private key and secret Gatehouse stores.
///
/// It is 32 random bytes, written as standard base64. It never reaches the
/// database; losing it makes stored signing keys unreadable.
#[derive(Clone)]
pub struct MasterKey {
    bytes: [u8; 32],
    id: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MasterKeyError {
    #[error("must be 32 bytes encoded as base64 (try `gatehouse master-key generate`)")]
    Format,
    #[error("sealed value is malformed or was sealed with another master key")]
    Unseal,
    /// Sealed with a key this process does not have (yet: another node may
    /// have rotated).
    #[error("sealed with master key {0}, which is not among the configured keys")]
    UnknownKey(String),
    #[error("no master key is configured")]
    Empty,
}

impl MasterKey {
    pub fn generate() -> Self {
        Self::from_bytes(rand::random())
    }

    fn from_bytes(bytes: [u8; 32]) -> Self {
        // Eight hex digits of a hash that says nothing useful about the key.
        let digest = Sha256::new().chain_update(b"gatehouse master key id\0").chain_update(bytes).finalize();
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Self { bytes, id }
    }

    pub fn from_base64(text: &str) -> Result<Self, MasterKeyError> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| MasterKeyError::Format)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| MasterKeyError::Format)?;
        Ok(Self::from_bytes(bytes))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.bytes)
    }

    /// A short name for the key, written into everything it seals.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn aead(&self) -> RandomizedNonceKey {
        // A 32-byte key is always valid for AES-256-GCM.
        RandomizedNonceKey::new(&AES_256_GCM, &self.bytes).unwrap_or_else(|_| unreachable!())
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
        format!("{V2_PREFIX}{}.{}", self.id, STANDARD.encode(out))
    }

    /// Opens a value sealed with this key.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, MasterKeyError> {
        match parse(sealed)? {
            (Some(id), _) if id != self.id => Err(MasterKeyError::UnknownKey(id.to_owned())),
            (_, body) => self.open_body(context, body),
        }
    }

    fn open_body(&self, context: &str, body: &str) -> Result<Vec<u8>, MasterKeyError> {
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

/// The key id (`None` for a value sealed before ids) and the sealed body.
fn parse(sealed: &str) -> Result<(Option<&str>, &str), MasterKeyError> {
    if let Some(body) = sealed.strip_prefix(V1_PREFIX) {
        return Ok((None, body));
    }
    let rest = sealed.strip_prefix(V2_PREFIX).ok_or(MasterKeyError::Unseal)?;
    let (id, body) = rest.split_once('.').ok_or(MasterKeyError::Unseal)?;
    Ok((Some(id), body))
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({}, <redacted>)", self.id)
    }
}

/// The master keys a process holds: the first seals, every one opens what
/// it sealed. During a rotation the new key comes first and the old ones
/// stay until nothing is sealed with them any more.
#[derive(Clone, Debug)]
pub struct MasterKeys {
    keys: Vec<MasterKey>,
}

impl MasterKeys {
    /// `keys[0]` seals; there must be at least one.
    pub fn new(keys: Vec<MasterKey>) -> Result<Self, MasterKeyError> {
        if keys.is_empty() {
            return Err(MasterKeyError::Empty);
        }
        Ok(Self { keys })
    }

    pub fn single(key: MasterKey) -> Self {
        Self { keys: vec![key] }
    }

    /// Keys written as base64, separated by commas, whitespace or lines; the
    /// first is the one that seals.
    pub fn parse(text: &str) -> Result<Self, MasterKeyError> {
        let keys = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|k| !k.is_empty())
            .map(MasterKey::from_base64)
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys)
    }

    /// The keys as [`MasterKeys::parse`] reads them, one per line.
    pub fn to_text(&self) -> String {
        self.keys.iter().map(|k| k.to_base64() + "\n").collect()
    }

    /// The key that seals.
    pub fn primary(&self) -> &MasterKey {
        &self.keys[0]
    }

    pub fn keys(&self) -> &[MasterKey] {
        &self.keys
    }

    pub fn seal(&self, context: &str, plaintext: &[u8]) -> String {
        self.primary().seal(context, plaintext)
    }

    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, MasterKeyError> {
        match parse(sealed)? {
            (Some(id), body) => {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.id == id)
                    .ok_or_else(|| MasterKeyError::UnknownKey(id.to_owned()))?;
                key.open_body(context, body)
            }
            (None, body) => {
                self.keys.iter().find_map(|k| k.open_body(context, body).ok()).ok_or(MasterKeyError::Unseal)
            }
        }
    }

    /// The id of the key `sealed` names; `None` for values sealed before
    /// key ids (or not sealed values at all).
    pub fn sealed_with(sealed: &str) -> Option<&str> {
        parse(sealed).ok()?.0
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
        assert!(sealed.starts_with(&format!("v2.{}.", key.id())));
        assert_eq!(key.open("kid-1", &sealed).unwrap(), b"secret");
        assert_eq!(key.open("kid-2", &sealed), Err(MasterKeyError::Unseal));
        let other = MasterKey::generate();
        assert_eq!(other.open("kid-1", &sealed), Err(MasterKeyError::UnknownKey(key.id().to_owned())));
    }

    #[test]
    fn master_key_text_must_be_32_bytes_of_base64() {
        assert_eq!(MasterKey::from_base64("short").unwrap_err(), MasterKeyError::Format);
        let key = MasterKey::generate();
        let again = MasterKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(again.id(), key.id(), "the id follows from the key");
        assert!(!format!("{key:?}").contains(&key.to_base64()), "Debug hides the key");
    }

    /// During a rotation the new key seals and every key opens its own.
    #[test]
    fn a_ring_seals_with_its_first_key_and_opens_with_any() {
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        let sealed_old = old.seal("c", b"old secret");
        let ring = MasterKeys::parse(&format!("{},{}", new.to_base64(), old.to_base64())).unwrap();
        assert_eq!(ring.primary().id(), new.id());
        assert_eq!(ring.open("c", &sealed_old).unwrap(), b"old secret");
        let sealed_new = ring.seal("c", b"new secret");
        assert_eq!(MasterKeys::sealed_with(&sealed_new), Some(new.id()));
        assert_eq!(new.open("c", &sealed_new).unwrap(), b"new secret");
        let only_old = MasterKeys::single(old);
        assert_eq!(only_old.open("c", &sealed_new), Err(MasterKeyError::UnknownKey(new.id().to_owned())));
        assert_eq!(MasterKeys::parse(&ring.to_text()).unwrap().keys().len(), 2);
        assert_eq!(MasterKeys::parse(" \n").unwrap_err(), MasterKeyError::Empty);
        assert_eq!(MasterKeys::parse("a,b").unwrap_err(), MasterKeyError::Format);
    }

    /// Values sealed before key ids are still opened, by whichever key can.
    #[test]
    fn values_without_a_key_id_are_still_opened() {
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        let v2 = old.seal("c", b"legacy");
        let v1 = format!("v1.{}", v2.rsplit('.').next().unwrap());
        let ring = MasterKeys::new(vec![new, old]).unwrap();
        assert_eq!(ring.open("c", &v1).unwrap(), b"legacy");
        assert_eq!(MasterKeys::sealed_with(&v1), None);
        assert_eq!(ring.open("c", "v3.x.y"), Err(MasterKeyError::Unseal));
    }
}
