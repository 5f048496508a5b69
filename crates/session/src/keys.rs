use std::collections::HashMap;
use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use crate::{AccessClaims, MasterKeyError, MasterKeys, SessionError};

/// The algorithms platform tokens may be signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    Es256,
    EdDsa,
}

impl SigningAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "es256" => Some(Self::Es256),
            "eddsa" => Some(Self::EdDsa),
            _ => None,
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            Self::Es256 => Algorithm::ES256,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }

    fn encoding_key(self, pkcs8: &[u8]) -> EncodingKey {
        match self {
            Self::Es256 => EncodingKey::from_ec_der(pkcs8),
            Self::EdDsa => EncodingKey::from_ed_der(pkcs8),
        }
    }
}

/// A signing key as it is kept in storage: the private half sealed with the
/// master key, the public half as a JWK.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    pub alg: SigningAlgorithm,
    pub sealed_private_key: String,
    pub public_jwk: String,
    pub created_at: DateTime<Utc>,
    /// Set when a newer key took over signing. A retired key still verifies
    /// (and is still published) until every token it signed has expired.
    pub retired_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// A freshly generated key, ready to be stored.
#[derive(Debug)]
pub struct NewSigningKey {
    pub kid: String,
    pub alg: SigningAlgorithm,
    pub sealed_private_key: String,
    pub public_jwk: String,
}

pub fn generate_signing_key(
    alg: SigningAlgorithm,
    master: &MasterKeys,
) -> Result<NewSigningKey, SessionError> {
    let kid = uuid::Uuid::now_v7().simple().to_string();
    let bad = |reason: &str| SessionError::BadKey { kid: kid.clone(), reason: reason.into() };
    let rng = SystemRandom::new();
    let pkcs8 = match alg {
        SigningAlgorithm::Es256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| bad("P-256 key generation failed"))?
            .as_ref()
            .to_vec(),
        // jsonwebtoken reads Ed25519 keys as PKCS#8 v1 (no embedded public key).
        SigningAlgorithm::EdDsa => Ed25519KeyPair::generate_pkcs8v1(&rng)
            .map_err(|_| bad("Ed25519 key generation failed"))?
            .as_ref()
            .to_vec(),
    };
    let public_jwk = public_jwk(&kid, alg, &alg.encoding_key(&pkcs8))?;
    Ok(NewSigningKey {
        sealed_private_key: master.seal(&kid, &pkcs8),
        public_jwk: serde_json::to_string(&public_jwk).map_err(|e| bad(&e.to_string()))?,
        kid,
        alg,
    })
}

fn public_jwk(kid: &str, alg: SigningAlgorithm, key: &EncodingKey) -> Result<Jwk, SessionError> {
    let mut jwk = Jwk::from_encoding_key(key, alg.jwt())
        .map_err(|e| SessionError::BadKey { kid: kid.into(), reason: e.to_string() })?;
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(match alg {
        SigningAlgorithm::Es256 => KeyAlgorithm::ES256,
        SigningAlgorithm::EdDsa => KeyAlgorithm::EdDSA,
    });
    Ok(jwk)
}

/// The key set to publish: the public halves of `keys`, as stored. Nothing
/// is unsealed, so serving it costs no private-key work.
pub fn published_jwks(keys: &[StoredKey]) -> Result<JwkSet, SessionError> {
    let keys = keys
        .iter()
        .map(|k| {
            serde_json::from_str(&k.public_jwk)
                .map_err(|e| SessionError::BadKey { kid: k.kid.clone(), reason: e.to_string() })
        })
        .collect::<Result<_, _>>()?;
    Ok(JwkSet { keys })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("token is malformed")]
    Malformed,
    #[error("token was signed by an unknown key")]
    UnknownKey,
    #[error("token signature or claims are invalid")]
    Invalid,
    #[error("token has expired")]
    Expired,
}

struct Verifier {
    alg: SigningAlgorithm,
    key: DecodingKey,
}

/// The private key tokens are signed with, parsed once when the ring is
/// opened. Parsing checks the key, which costs about as much as a signature;
/// `jsonwebtoken::encode` parses its key for every token, and that was half
/// of what signing cost each sign-in.
enum KeyPair {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

impl KeyPair {
    fn open(alg: SigningAlgorithm, pkcs8: &[u8]) -> Result<Self, String> {
        match alg {
            SigningAlgorithm::Es256 => {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).map(Self::Es256)
            }
            SigningAlgorithm::EdDsa => Ed25519KeyPair::from_pkcs8(pkcs8).map(Self::EdDsa),
        }
        .map_err(|e| e.to_string())
    }

    fn alg(&self) -> SigningAlgorithm {
        match self {
            Self::Es256(_) => SigningAlgorithm::Es256,
            Self::EdDsa(_) => SigningAlgorithm::EdDsa,
        }
    }

    /// The JWS signature of `input`; for ES256 the fixed-width `r || s` form
    /// that RFC 7518 (section 3.4) requires.
    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, SessionError> {
        match self {
            Self::Es256(key) => key
                .sign(&SystemRandom::new(), input)
                .map(|signature| signature.as_ref().to_vec())
                .map_err(|_| SessionError::Sign("ECDSA signing failed".into())),
            Self::EdDsa(key) => Ok(key.sign(input).as_ref().to_vec()),
        }
    }
}

/// The keys one process signs and verifies with.
///
/// Built from every key that is still published; signs with the newest key
/// that is not retired.
pub struct KeyRing {
    signer: Option<(String, KeyPair)>,
    verifiers: HashMap<String, Verifier>,
}

impl KeyRing {
    /// Opens the given keys. Keys are expected newest first, as the store
    /// lists them.
    pub fn open(keys: &[StoredKey], master: &MasterKeys) -> Result<Self, SessionError> {
        let mut signer = None;
        let mut verifiers = HashMap::new();
        for k in keys {
            let bad = |reason: String| SessionError::BadKey { kid: k.kid.clone(), reason };
            let jwk: Jwk = serde_json::from_str(&k.public_jwk).map_err(|e| bad(e.to_string()))?;
            let key = DecodingKey::from_jwk(&jwk).map_err(|e| bad(e.to_string()))?;
            if signer.is_none() && k.retired_at.is_none() {
                let pkcs8 = master.open(&k.kid, &k.sealed_private_key).map_err(|e| match e {
                    MasterKeyError::UnknownKey(id) => SessionError::UnknownMasterKey(id),
                    e => bad(e.to_string()),
                })?;
                signer = Some((k.kid.clone(), KeyPair::open(k.alg, &pkcs8).map_err(bad)?));
            }
            verifiers.insert(k.kid.clone(), Verifier { alg: k.alg, key });
        }
        Ok(Self { signer, verifiers })
    }

    pub fn knows(&self, kid: &str) -> bool {
        self.verifiers.contains_key(kid)
    }

    pub fn signing_kid(&self) -> Option<&str> {
        self.signer.as_ref().map(|(kid, _)| kid.as_str())
    }

    /// Signs `claims` as a compact JWS (RFC 7515): header and claims as
    /// base64url JSON, then the signature over both.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, SessionError> {
        let (kid, key) = self.signer.as_ref().ok_or(SessionError::NoSigningKey)?;
        let mut header = Header::new(key.alg().jwt());
        header.kid = Some(kid.clone());
        let json =
            |part: Result<Vec<u8>, serde_json::Error>| part.map_err(|e| SessionError::Sign(e.to_string()));
        let mut token = URL_SAFE_NO_PAD.encode(json(serde_json::to_vec(&header))?);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(json(serde_json::to_vec(claims))?, &mut token);
        let signature = key.sign(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }

    /// Verifies signature, algorithm, issuer, audience and lifetime against
    /// `now`.
    ///
    /// Expiry is checked here rather than by jsonwebtoken, which would read the
    /// system clock instead of the injected one.
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        now: DateTime<Utc>,
    ) -> Result<AccessClaims, VerifyError> {
        let kid = token_kid(token).ok_or(VerifyError::Malformed)?;
        let verifier = self.verifiers.get(&kid).ok_or(VerifyError::UnknownKey)?;
        let mut validation = Validation::new(verifier.alg.jwt());
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        let data = jsonwebtoken::decode::<AccessClaims>(token, &verifier.key, &validation)
            .map_err(|_| VerifyError::Invalid)?;
        let claims = data.claims;
        let now = now.timestamp();
        if claims.exp <= now {
            return Err(VerifyError::Expired);
        }
        // A token issued in the future means clocks disagree or it is forged.
        if claims.iat > now + 60 {
            return Err(VerifyError::Invalid);
        }
        Ok(claims)
    }
}

/// The longest token read: far above what this service signs (a token
/// carries the user's group names, so a member of hundreds of groups makes a
/// token of tens of kilobytes), and anything longer is refused before base64
/// or JSON sees it.
pub(crate) const MAX_TOKEN_LEN: usize = 64 * 1024;

/// The `kid` of a token's header, if it has one; used to decide whether the
/// key ring needs reloading before verification.
pub fn token_kid(token: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    jsonwebtoken::decode_header(token).ok()?.kid
}

// The tests check tokens with jsonwebtoken too, which reads the wall clock.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn stored(new: NewSigningKey, created_at: DateTime<Utc>) -> StoredKey {
        StoredKey {
            kid: new.kid,
            alg: new.alg,
            sealed_private_key: new.sealed_private_key,
            public_jwk: new.public_jwk,
            created_at,
            retired_at: None,
        }
    }

    fn claims(now: DateTime<Utc>) -> AccessClaims {
        AccessClaims {
            iss: "https://gh.test".into(),
            aud: "https://gh.test/app".into(),
            sub: "u".into(),
            org: "o".into(),
            email: Some("a@b.c".into()),
            sid: "s".into(),
            iat: now.timestamp(),
            exp: (now + Duration::minutes(15)).timestamp(),
            jti: "j".into(),
            auth_method: "password".into(),
            groups: vec!["Engineering".into()],
            groups_overage: false,
        }
    }

    #[test]
    fn both_algorithms_sign_and_verify_and_publish_public_keys_only() {
        crate::check_crypto_backend().unwrap();
        let master = MasterKeys::single(crate::MasterKey::generate());
        let now = Utc::now();
        for alg in [SigningAlgorithm::Es256, SigningAlgorithm::EdDsa] {
            let stored_key = stored(generate_signing_key(alg, &master).unwrap(), now);
            let ring = KeyRing::open(std::slice::from_ref(&stored_key), &master).unwrap();
            let token = ring.sign(&claims(now)).unwrap();
            let aud = "https://gh.test/app";
            assert_eq!(ring.verify(&token, "https://gh.test", aud, now).unwrap(), claims(now));
            assert_eq!(ring.verify(&token, "https://other", aud, now), Err(VerifyError::Invalid));
            assert_eq!(
                ring.verify(&token, "https://gh.test", "https://gh.test", now),
                Err(VerifyError::Invalid)
            );
            assert_eq!(
                ring.verify(&token, "https://gh.test", aud, now + Duration::minutes(16)),
                Err(VerifyError::Expired)
            );
            let jwks = serde_json::to_value(published_jwks(&[stored_key]).unwrap()).unwrap();
            let jwk = &jwks["keys"][0];
            assert!(jwk.get("d").is_none(), "private part published: {jwk}");
            assert_eq!(jwk["alg"], alg.as_str());
        }
    }

    /// The tokens are what jsonwebtoken would write: the same header and
    /// claims parts, and for Ed25519 (deterministic) the same signature;
    /// ES256 signatures are the fixed 64-byte `r || s` form.
    #[test]
    fn tokens_match_jsonwebtoken_s_own() {
        let master = MasterKeys::single(crate::MasterKey::generate());
        let now = Utc::now();
        for alg in [SigningAlgorithm::Es256, SigningAlgorithm::EdDsa] {
            let key = stored(generate_signing_key(alg, &master).unwrap(), now);
            let ring = KeyRing::open(std::slice::from_ref(&key), &master).unwrap();
            let pkcs8 = master.open(&key.kid, &key.sealed_private_key).unwrap();
            let mut header = Header::new(alg.jwt());
            header.kid = Some(key.kid.clone());
            let theirs = jsonwebtoken::encode(&header, &claims(now), &alg.encoding_key(&pkcs8)).unwrap();
            let ours = ring.sign(&claims(now)).unwrap();
            let (ours_parts, theirs_parts): (Vec<_>, Vec<_>) =
                (ours.split('.').collect(), theirs.split('.').collect());
            assert_eq!(ours_parts[..2], theirs_parts[..2], "{alg:?}");
            let signature = base64::Engine::decode(&URL_SAFE_NO_PAD, ours_parts[2]).unwrap();
            assert_eq!(signature.len(), 64, "{alg:?}");
            if alg == SigningAlgorithm::EdDsa {
                assert_eq!(ours, theirs);
            }
            assert_eq!(
                ring.verify(&ours, "https://gh.test", "https://gh.test/app", now).unwrap(),
                claims(now)
            );
        }
    }

    #[test]
    fn a_tampered_token_or_foreign_key_is_refused() {
        let master = MasterKeys::single(crate::MasterKey::generate());
        let now = Utc::now();
        let ring = KeyRing::open(
            &[stored(generate_signing_key(SigningAlgorithm::Es256, &master).unwrap(), now)],
            &master,
        )
        .unwrap();
        let token = ring.sign(&claims(now)).unwrap();
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::to_vec(&AccessClaims { sub: "admin".into(), ..claims(now) }).unwrap(),
        );
        assert_eq!(
            ring.verify(&parts.join("."), "https://gh.test", "https://gh.test/app", now),
            Err(VerifyError::Invalid)
        );
        let other = KeyRing::open(
            &[stored(generate_signing_key(SigningAlgorithm::Es256, &master).unwrap(), now)],
            &master,
        )
        .unwrap();
        assert_eq!(
            other.verify(&token, "https://gh.test", "https://gh.test/app", now),
            Err(VerifyError::UnknownKey)
        );
        assert_eq!(
            ring.verify("not-a-jwt", "https://gh.test", "https://gh.test/app", now),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn signs_with_the_newest_unretired_key() {
        let master = MasterKeys::single(crate::MasterKey::generate());
        let now = Utc::now();
        let new = stored(generate_signing_key(SigningAlgorithm::EdDsa, &master).unwrap(), now);
        let mut old = stored(generate_signing_key(SigningAlgorithm::Es256, &master).unwrap(), now);
        old.retired_at = Some(now);
        let ring = KeyRing::open(&[new.clone(), old.clone()], &master).unwrap();
        assert_eq!(ring.signing_kid(), Some(new.kid.as_str()));
        assert!(ring.knows(&old.kid));
        assert_eq!(published_jwks(&[new, old]).unwrap().keys.len(), 2);
    }

    mod fuzz {
        //! Property tests (proptest): any text presented as a token, or
        //! anything made from a real token by changing it, is refused and
        //! never panics; only the untouched token verifies.

        use proptest::prelude::*;
        use proptest::test_runner::FileFailurePersistence;

        use super::*;

        fn config() -> ProptestConfig {
            ProptestConfig {
                failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
                    "../../fixtures/fuzz/proptest-regressions/session.txt",
                ))),
                ..ProptestConfig::default()
            }
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn any_text_is_not_a_token(text in any::<String>()) {
                let master = MasterKeys::single(crate::MasterKey::generate());
                let now = DateTime::<Utc>::UNIX_EPOCH + Duration::days(20_000);
                let key = stored(generate_signing_key(SigningAlgorithm::Es256, &master).unwrap(), now);
                let ring = KeyRing::open(std::slice::from_ref(&key), &master).unwrap();
                let _ = token_kid(&text);
                prop_assert!(ring.verify(&text, "https://gh.test", "https://gh.test/app", now).is_err());
            }

            #[test]
            fn a_changed_token_is_refused(at in any::<prop::sample::Index>(), with in any::<u8>()) {
                let master = MasterKeys::single(crate::MasterKey::generate());
                let now = DateTime::<Utc>::UNIX_EPOCH + Duration::days(20_000);
                let key = stored(generate_signing_key(SigningAlgorithm::Es256, &master).unwrap(), now);
                let ring = KeyRing::open(std::slice::from_ref(&key), &master).unwrap();
                let token = ring.sign(&claims(now)).unwrap();
                let mut bytes = token.clone().into_bytes();
                let i = at.index(bytes.len());
                bytes[i] = with;
                let changed = String::from_utf8_lossy(&bytes).into_owned();
                let verdict = ring.verify(&changed, "https://gh.test", "https://gh.test/app", now);
                if changed == token {
                    prop_assert!(verdict.is_ok());
                } else {
                    // base64url ignores nothing: a changed character changes
                    // what was signed, or breaks the token.
                    prop_assert!(verdict.is_err(), "{changed} verified");
                }
            }
        }
    }
}
