//! The little encoding and signing the adapters need: base64 for HTTP
//! Basic auth, HMAC-SHA256 (RFC 2104) for webhook signatures.

use sha2::{Digest, Sha256};

/// Header carrying the webhook body signature.
pub const SIGNATURE_HEADER: &str = "x-crossline-signature";

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |v: u32| char::from(ALPHABET[(v & 63) as usize]);
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let (b0, b1, b2) = match *chunk {
            [a] => (a, None, None),
            [a, b] => (a, Some(b), None),
            [a, b, c] => (a, Some(b), Some(c)),
            // chunks(3) yields 1 to 3 bytes.
            _ => continue,
        };
        let n = u32::from(b0) << 16 | u32::from(b1.unwrap_or(0)) << 8 | u32::from(b2.unwrap_or(0));
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if b1.is_some() { sym(n >> 6) } else { '=' });
        out.push(if b2.is_some() { sym(n) } else { '=' });
    }
    out
}

/// Lowercase hex.
pub fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA256 per RFC 2104: H((K ^ opad) || H((K ^ ipad) || m)).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    // Keys longer than a block are hashed first; shorter ones zero-padded.
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        let digest = Sha256::digest(key);
        for (dst, src) in block.iter_mut().zip(digest.iter()) {
            *dst = *src;
        }
    } else {
        for (dst, src) in block.iter_mut().zip(key) {
            *dst = *src;
        }
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();

    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner);
    let mut out = [0u8; 32];
    for (dst, src) in out.iter_mut().zip(outer.finalize().iter()) {
        *dst = *src;
    }
    out
}

/// The `X-Crossline-Signature` value for `body`: `sha256=<hex>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex(&hmac_sha256(secret, body)))
}

/// Checks a `sha256=<hex>` header against `body`, in constant time, so a
/// receiver (or our stand-ins) can verify what we send.
pub fn verify_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    let expected = signature(secret, body);
    let (a, b) = (expected.as_bytes(), header.trim().as_bytes());
    // Length is public (fixed by the format); the contents are not.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rfc4648_vectors() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), output, "{input:?}");
        }
        // All 64 symbols, including + and /.
        assert_eq!(base64_encode(&[0xfb, 0xff, 0xbf]), "+/+/");
        assert_eq!(base64_encode(&[0, 0x10, 0x83]), "ABCD");
    }

    #[test]
    fn hmac_rfc4231_vectors() {
        // Test case 1.
        assert_eq!(
            hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        // Test case 2: key shorter than the block.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: key longer than the block is hashed first.
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn signature_round_trip() {
        let body = br#"{"to":"+15551234567","idempotency_key":"k"}"#;
        // Computed independently with `openssl dgst -sha256 -hmac`.
        let expected = "sha256=d9c45b4a077e2346b0924a27f52e3546a483c198e3244f53d44e429d4df78971";
        assert_eq!(signature(b"whsec-test", body), expected);
        assert!(verify_signature(b"whsec-test", body, expected));
        assert!(!verify_signature(b"other", body, expected));
        assert!(!verify_signature(b"whsec-test", b"{}", expected));
        assert!(!verify_signature(b"whsec-test", body, "sha256=00"));
    }
}
