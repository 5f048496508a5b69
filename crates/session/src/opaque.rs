use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
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

    /// Like [`OpaqueToken::generate`], for tokens written on every sign-in
    /// (refresh and browser tokens): the plain value also carries the
    /// millisecond it was issued, `{prefix}_{12 hex digits}.{secret}`, and
    /// its stored form ([`ordered_token_key`]) begins with those digits
    /// before the hash. So each new key lands beside the last one in the
    /// database's index instead of at a random place in it: one page of
    /// the log per batch of sign-ins rather than one per sign-in. The time
    /// says nothing the holder does not know; the hash still covers the
    /// whole token.
    pub fn generate_ordered(prefix: &str, issued_at: DateTime<Utc>) -> Self {
        let bytes: [u8; 32] = rand::random();
        let millis = u64::try_from(issued_at.timestamp_millis()).unwrap_or(0).min(MAX_ORDERED_MILLIS);
        let plain = format!("{prefix}_{millis:012x}.{}", URL_SAFE_NO_PAD.encode(bytes));
        let hash = ordered_token_key(&plain);
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

/// The largest time an ordered token can carry: 12 hex digits.
const MAX_ORDERED_MILLIS: u64 = (1 << 48) - 1;

/// The stored form of a token made by [`OpaqueToken::generate_ordered`]:
/// the 12 hex digits of its issue time, then [`hash_opaque_token`] of the
/// whole token. Anything else (a token from before ordered tokens, or a
/// value that only looks like one) is stored and looked up by its plain
/// hash, so tokens issued before stay valid, and a forged time leads
/// nowhere: without the secret, no key matches.
pub fn ordered_token_key(plain: &str) -> String {
    let time = plain
        .split_once('_')
        .and_then(|(_, rest)| rest.split_once('.'))
        .map(|(time, _)| time)
        .filter(|time| time.len() == 12 && time.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    let hash = hash_opaque_token(plain);
    match time {
        Some(time) => time.to_owned() + &hash,
        None => hash,
    }
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

    fn at(millis: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(millis).unwrap()
    }

    #[test]
    fn ordered_keys_follow_the_issue_time_whatever_the_secret() {
        let start = 1_796_000_000_000; // 2026-11
        let tokens: Vec<OpaqueToken> =
            (0..200).map(|i| OpaqueToken::generate_ordered("ghr", at(start + i * 7))).collect();
        let keys: Vec<&str> = tokens.iter().map(OpaqueToken::hash).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted, "keys in issue order are in byte order");
        for token in &tokens {
            assert!(token.plain().starts_with("ghr_"));
            assert_eq!(ordered_token_key(token.plain()), token.hash());
            assert_ne!(token.hash(), hash_opaque_token(token.plain()));
        }
        // Two in the same millisecond differ by their secrets.
        let (a, b) = (
            OpaqueToken::generate_ordered("ghr", at(start)),
            OpaqueToken::generate_ordered("ghr", at(start)),
        );
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.hash()[..12], b.hash()[..12]);
        // Times outside 48 bits are clamped, never wrapped or refused.
        assert!(OpaqueToken::generate_ordered("ghr", at(-5)).plain().starts_with("ghr_000000000000."));
        assert!(
            OpaqueToken::generate_ordered("ghr", DateTime::<Utc>::MAX_UTC)
                .plain()
                .starts_with("ghr_ffffffffffff.")
        );
    }

    #[test]
    fn other_tokens_are_keyed_by_their_plain_hash() {
        let old = OpaqueToken::generate("ghr");
        assert_eq!(ordered_token_key(old.plain()), old.hash(), "tokens issued before stay valid");
        let real = OpaqueToken::generate_ordered("ghr", at(1_796_000_000_000));
        let (time, secret) = real.plain()["ghr_".len()..].split_once('.').unwrap();
        // A forged secret or time gets a key of its own.
        let forged = format!("ghr_{time}.{}", &secret[1..]);
        assert_ne!(ordered_token_key(&forged), real.hash());
        let moved = format!("ghr_{:012x}.{secret}", 1_796_000_000_001_u64);
        assert_ne!(ordered_token_key(&moved), real.hash());
        // Anything but 12 lower-case hex digits before the dot is not an
        // ordered token, and is only hashed.
        for plain in [
            format!("ghr_{}.{secret}", &time[1..]),
            format!("ghr_0{time}.{secret}"),
            format!("ghr_{}.{secret}", time.to_uppercase()),
            format!("ghr_{}g.{secret}", &time[1..]),
            format!("ghr_{time}{secret}"),
            format!("{time}.{secret}"),
            String::new(),
            "ghr_.".into(),
        ] {
            assert_eq!(ordered_token_key(&plain), hash_opaque_token(&plain), "{plain}");
        }
    }
}
