//! Encrypted assertions: RSA-OAEP key transport, AES-128 or AES-256 in CBC
//! or GCM. samael decrypts AES-128 only; this takes the response samael has
//! verified and decrypts it here, so that all four work one way.
//!
//! Only ever called on what xmlsec verified: the response's signature covers
//! the ciphertext, which is the only integrity an encrypted assertion has.

use openssl::pkey::{PKey, Private};
use openssl::rsa::Padding;
use openssl::symm::{Cipher, Crypter, Mode};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use samael::schema::Response;

use crate::acs::{ASSERTION_NS, AcsError, has_dtd};

const RSA_OAEP_MGF1P: &str = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p";
const RSA_OAEP: &str = "http://www.w3.org/2009/xmlenc11#rsa-oaep";

fn refused(why: impl Into<String>) -> AcsError {
    AcsError::Decryption(why.into())
}

/// The verified response with its encrypted assertion replaced by the
/// plaintext one.
pub(crate) fn decrypt_response(key: &PKey<Private>, verified: &str) -> Result<String, AcsError> {
    let response: Response = verified.parse().map_err(|e| AcsError::Malformed(format!("{e}")))?;
    let encrypted = response.encrypted_assertion.ok_or_else(|| refused("no encrypted assertion"))?;
    let (wrapped_key, key_method) =
        encrypted.encrypted_key_info().ok_or_else(|| refused("no encrypted key"))?;
    // RSA-1_5 is refused: its padding is an oracle (Bleichenbacher).
    if key_method != RSA_OAEP_MGF1P && key_method != RSA_OAEP {
        return Err(refused(format!("key transport {key_method} is not accepted")));
    }
    let wrapped = base64(&wrapped_key.value)?;
    let rsa = key.rsa().map_err(|e| refused(e.to_string()))?;
    let mut session_key = vec![0; rsa.size() as usize];
    let n = rsa
        .private_decrypt(&wrapped, &mut session_key, Padding::PKCS1_OAEP)
        .map_err(|_| refused("the key does not decrypt"))?;
    session_key.truncate(n);

    let (value, method) = encrypted.encrypted_value_info().ok_or_else(|| refused("no encrypted data"))?;
    let data = base64(&value.value)?;
    let plaintext = match method.as_str() {
        "http://www.w3.org/2001/04/xmlenc#aes128-cbc" => cbc(Cipher::aes_128_cbc(), &session_key, &data)?,
        "http://www.w3.org/2001/04/xmlenc#aes256-cbc" => cbc(Cipher::aes_256_cbc(), &session_key, &data)?,
        "http://www.w3.org/2009/xmlenc11#aes128-gcm" => gcm(Cipher::aes_128_gcm(), &session_key, &data)?,
        "http://www.w3.org/2009/xmlenc11#aes256-gcm" => gcm(Cipher::aes_256_gcm(), &session_key, &data)?,
        other => return Err(refused(format!("content encryption {other} is not accepted"))),
    };
    let assertion = String::from_utf8(plaintext).map_err(|_| refused("the assertion is not UTF-8"))?;
    let assertion = match assertion.trim_start().strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map(|(_, a)| a.to_owned()).ok_or_else(|| refused("malformed"))?,
        None => assertion,
    };
    if has_dtd(&assertion) || assertion.contains("<!--") || assertion.contains("<?") {
        return Err(AcsError::ForbiddenMarkup);
    }
    let (start, end) = encrypted_span(verified)?;
    Ok(format!("{}{}{}", &verified[..start], assertion.trim(), &verified[end..]))
}

fn base64(text: &str) -> Result<Vec<u8>, AcsError> {
    use base64::Engine as _;
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(compact).map_err(|_| refused("not base64"))
}

/// AES-CBC with the IV first; XML Encryption's padding (the last byte gives
/// its length, the others are arbitrary), removed by hand.
fn cbc(cipher: Cipher, key: &[u8], data: &[u8]) -> Result<Vec<u8>, AcsError> {
    let iv_len = cipher.iv_len().unwrap_or(16);
    if key.len() != cipher.key_len()
        || data.len() <= iv_len
        || !(data.len() - iv_len).is_multiple_of(cipher.block_size())
    {
        return Err(refused("the encrypted data does not fit the algorithm"));
    }
    let mut crypter = Crypter::new(cipher, Mode::Decrypt, key, Some(&data[..iv_len]))
        .map_err(|e| refused(e.to_string()))?;
    crypter.pad(false);
    let mut out = vec![0; data.len() + cipher.block_size()];
    let mut n = crypter.update(&data[iv_len..], &mut out).map_err(|_| refused("does not decrypt"))?;
    n += crypter.finalize(&mut out[n..]).map_err(|_| refused("does not decrypt"))?;
    out.truncate(n);
    let pad = usize::from(*out.last().ok_or_else(|| refused("empty"))?);
    if pad == 0 || pad > cipher.block_size() || pad > out.len() {
        return Err(refused("bad padding"));
    }
    out.truncate(out.len() - pad);
    Ok(out)
}

/// AES-GCM: a 12-byte IV first, the 16-byte tag last.
fn gcm(cipher: Cipher, key: &[u8], data: &[u8]) -> Result<Vec<u8>, AcsError> {
    const IV: usize = 12;
    const TAG: usize = 16;
    if key.len() != cipher.key_len() || data.len() < IV + TAG {
        return Err(refused("the encrypted data does not fit the algorithm"));
    }
    let (iv, rest) = data.split_at(IV);
    let (body, tag) = rest.split_at(rest.len() - TAG);
    openssl::symm::decrypt_aead(cipher, key, Some(iv), &[], body, tag)
        .map_err(|_| refused("does not decrypt or authenticate"))
}

/// Where the response's one `EncryptedAssertion` element starts and ends.
fn encrypted_span(xml: &str) -> Result<(usize, usize), AcsError> {
    let mut reader = NsReader::from_str(xml);
    let mut depth = 0usize;
    let mut start = None;
    loop {
        let before = reader.buffer_position() as usize;
        let (ns, event) = reader.read_resolved_event().map_err(|e| AcsError::Malformed(e.to_string()))?;
        let is_encrypted = |local: &[u8]| {
            matches!(&ns, ResolveResult::Bound(n) if n.as_ref() == ASSERTION_NS)
                && local == b"EncryptedAssertion"
        };
        match event {
            Event::Start(e) => {
                if depth == 1 && start.is_none() && is_encrypted(e.local_name().as_ref()) {
                    start = Some((before, depth));
                }
                depth += 1;
            }
            Event::End(_) => {
                depth -= 1;
                if let Some((s, d)) = start
                    && d == depth
                {
                    return Ok((s, reader.buffer_position() as usize));
                }
            }
            Event::Eof => return Err(refused("no encrypted assertion in the verified response")),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encrypt_cbc(cipher: Cipher, key: &[u8], iv: &[u8], plain: &[u8]) -> Vec<u8> {
        // XML Encryption padding: arbitrary bytes, the last one the count.
        let pad = 16 - plain.len() % 16;
        let mut padded = plain.to_vec();
        padded.extend(std::iter::repeat_n(0xA5, pad - 1));
        padded.push(pad as u8);
        let mut c = Crypter::new(cipher, Mode::Encrypt, key, Some(iv)).unwrap();
        c.pad(false);
        let mut out = vec![0; padded.len() + 16];
        let n = c.update(&padded, &mut out).unwrap();
        out.truncate(n);
        [iv.to_vec(), out].concat()
    }

    #[test]
    fn cbc_takes_xml_encryption_padding() {
        let (key, iv) = ([7u8; 32], [9u8; 16]);
        for plain in [&b"<a/>"[..], &[b'x'; 32][..]] {
            let data = encrypt_cbc(Cipher::aes_256_cbc(), &key, &iv, plain);
            assert_eq!(cbc(Cipher::aes_256_cbc(), &key, &data).unwrap(), plain);
        }
        assert!(
            cbc(Cipher::aes_128_cbc(), &key, &encrypt_cbc(Cipher::aes_256_cbc(), &key, &iv, b"x")).is_err(),
            "key size"
        );
        assert!(cbc(Cipher::aes_256_cbc(), &key, &iv).is_err(), "no ciphertext");
    }

    #[test]
    fn gcm_refuses_a_changed_ciphertext() {
        let (key, iv) = ([3u8; 16], [1u8; 12]);
        let mut tag = [0u8; 16];
        let body =
            openssl::symm::encrypt_aead(Cipher::aes_128_gcm(), &key, Some(&iv), &[], b"<a/>", &mut tag)
                .unwrap();
        let data = [iv.to_vec(), body, tag.to_vec()].concat();
        assert_eq!(gcm(Cipher::aes_128_gcm(), &key, &data).unwrap(), b"<a/>");
        let mut changed = data.clone();
        changed[13] ^= 1;
        assert!(gcm(Cipher::aes_128_gcm(), &key, &changed).is_err());
    }

    #[test]
    fn the_encrypted_assertion_is_found_by_namespace() {
        let xml = r#"<p:Response xmlns:p="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:a="urn:oasis:names:tc:SAML:2.0:assertion"><a:Issuer>i</a:Issuer><a:EncryptedAssertion><x><y/></x></a:EncryptedAssertion></p:Response>"#;
        let (s, e) = encrypted_span(xml).unwrap();
        assert_eq!(&xml[s..e], "<a:EncryptedAssertion><x><y/></x></a:EncryptedAssertion>");
        assert!(encrypted_span(r#"<r><EncryptedAssertion/></r>"#).is_err(), "not in the assertion namespace");
    }
}
