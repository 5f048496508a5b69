use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// A random bearer secret (refresh token, admin token, SCIM token) and the
/// hash under which it is stored. The plain value is shown to its owner once
/// and never stored.
pub struct OpaqueToken {
    plain: String,
    hash: String,
}

impl OpaqueToken {
    /// 256 random bits, base64url, with a short prefix saying what it is for
    /// (so that a leaked token found in the wild can be recognised).
    pub fn generate(prefix: &str) -> Self {
        let bytes: [u8; 32] = rand::random();
        let plain = format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(bytes));
        let hash = hash_opaque_token(&plain);
        Self { plain, hash }
    }

    pub fn plain(&self) -> &str {
        &self.plain
    }

    pub fn hash(&self) -> &str {
        &self.hash
    }
}

impl fmt::Debug for OpaqueToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpaqueToken").field("hash", &self.hash).finish_non_exhaustive()
    }
}

/// The stored form of an opaque token. The tokens carry 256 bits of entropy,
/// so a fast hash is enough: there is nothing to brute-force.
pub fn hash_opaque_token(plain: &str) -> String {
    let digest = Sha256::digest(plain.as_bytes());
    URL_SAFE_NO_PAD.encode(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hash_consistently() {
        let a = OpaqueToken::generate("ghr");
        let b = OpaqueToken::generate("ghr");
        assert_ne!(a.plain(), b.plain());
        assert!(a.plain().starts_with("ghr_"));
        assert_eq!(hash_opaque_token(a.plain()), a.hash());
        assert_ne!(a.hash(), a.plain());
    }
}
