//! Lowercase hexadecimal, the form of the keys and identifiers written in it
//! (throttle keys, SAML request ids).

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends `bytes` to `out` in lowercase hex, two digits a byte, without
/// formatting machinery: throttle keys are written twice per sign-in, and
/// `{:02x}` per byte cost about 1% of its CPU (docs/benchmarks.md, "Throttle
/// keys in one string").
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    out.reserve(2 * bytes.len());
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
}

/// `bytes` in lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::new();
    push_hex(&mut out, bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_is_its_two_lowercase_digits() {
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&all), expected);
        assert_eq!(hex(&[]), "");
        let mut out = "key:".to_owned();
        push_hex(&mut out, &[0x00, 0x0f, 0xf0, 0xff]);
        assert_eq!(out, "key:000ff0ff");
    }
}
