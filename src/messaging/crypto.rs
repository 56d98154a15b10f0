//! The little encoding and signing the adapters need: base64 for HTTP
//! Basic auth, HMAC-SHA256 (RFC 2104) for webhook signatures.

/// Header carrying the webhook body signature.
pub const SIGNATURE_HEADER: &str = "x-crossline-signature";
/// Header carrying when we signed (Unix seconds); it is signed too.
pub const TIMESTAMP_HEADER: &str = "x-crossline-timestamp";
/// How far a receiver should let a timestamp be from its clock.
pub const TIMESTAMP_TOLERANCE_SECS: u64 = 300;

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Lowercase hex.
pub fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    // HMAC takes keys of any length.
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA1 (RFC 2104): what Twilio signs its webhooks with.
pub fn hmac_sha1(key: &[u8], message: &[u8]) -> [u8; 20] {
    use hmac::{KeyInit, Mac};
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(key) else {
        return [0; 20];
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Equal in constant time (length is public).
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `X-Crossline-Signature` value for `body`: `sha256=<hex>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex(&hmac_sha256(secret, body)))
}

/// Checks a `sha256=<hex>` header against `body`, in constant time.
pub fn verify_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    same_bytes(signature(secret, body).as_bytes(), header.trim().as_bytes())
}

/// What our outbound webhooks carry in `X-Crossline-Signature`: HMAC-SHA256
/// over `"<timestamp>.<body>"`, so a captured request can't be replayed
/// once the receiver's tolerance has passed.
pub fn timed_signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    signature(secret, &signed)
}

/// A receiver's check of [`timed_signature`]: the signature matches and
/// the timestamp is within [`TIMESTAMP_TOLERANCE_SECS`] of `now`.
pub fn verify_timed_signature(
    secret: &[u8],
    body: &[u8],
    timestamp: &str,
    header: &str,
    now: u64,
) -> bool {
    let Ok(ts) = timestamp.trim().parse::<u64>() else {
        return false;
    };
    ts.abs_diff(now) <= TIMESTAMP_TOLERANCE_SECS
        && same_bytes(
            timed_signature(secret, ts, body).as_bytes(),
            header.trim().as_bytes(),
        )
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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

    #[test]
    fn timed_signatures_bind_the_time_and_expire() {
        let body = br#"{"state":"queued"}"#;
        // `printf '1795840000.<body>' | openssl dgst -sha256 -hmac whsec-test`
        let expected = "sha256=a00feffd0b990daa61b20741e5816254b7abeba1a6f2706c74e0def7b8f86a68";
        assert_eq!(
            timed_signature(b"whsec-test", 1_795_840_000, body),
            expected
        );
        let check =
            |ts: &str, now: u64| verify_timed_signature(b"whsec-test", body, ts, expected, now);
        assert!(check("1795840000", 1_795_840_000 + 299));
        assert!(check("1795840000", 1_795_840_000 - 300));
        assert!(
            !check("1795840000", 1_795_840_000 + 301),
            "replayed too late"
        );
        assert!(
            !check("1795840001", 1_795_840_001),
            "another time, same signature"
        );
        assert!(!check("not a time", 1_795_840_000));
    }
}
