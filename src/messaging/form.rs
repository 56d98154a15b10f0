//! `application/x-www-form-urlencoded` as the WHATWG URL standard defines
//! it: what Twilio's API takes, and what its webhooks post back.

/// Encodes pairs as `a=1&b=two+words`. Bytes other than ASCII letters,
/// digits and `*-._` are percent-encoded; space becomes `+`.
pub fn encode<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_into(&mut out, k.as_ref());
        out.push('=');
        encode_into(&mut out, v.as_ref());
    }
    out
}

fn encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0x0f)]));
            }
        }
    }
}

/// Decodes a form body into pairs, in order, keeping repeats. Never fails:
/// like browsers, a `%` not followed by two hex digits is kept as is, and
/// invalid UTF-8 becomes U+FFFD.
pub fn decode(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            (decode_component(k), decode_component(v))
        })
        .collect()
}

/// Owned pairs from borrowed ones (tests build forms with it).
#[cfg(test)]
pub fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The first value for `name`, if any.
pub fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn decode_component(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn encodes_like_whatwg() {
        assert_eq!(
            encode(&[("To", "+15551234567"), ("Body", "Hi there & bye=1")]),
            "To=%2B15551234567&Body=Hi+there+%26+bye%3D1"
        );
        assert_eq!(encode(&[("k", "a*b-c.d_e~")]), "k=a*b-c.d_e%7E");
        assert_eq!(encode(&[("k", "ñ€")]), "k=%C3%B1%E2%82%AC");
        assert_eq!(encode::<&str, &str>(&[]), "");
    }

    #[test]
    fn decodes_plus_percent_and_repeats() {
        assert_eq!(
            decode("To=%2B15551234567&Body=Hi+there+%26+bye%3D1&Body=again"),
            pairs(&[
                ("To", "+15551234567"),
                ("Body", "Hi there & bye=1"),
                ("Body", "again")
            ])
        );
        assert_eq!(
            decode("a=%c3%b1&b&&c="),
            pairs(&[("a", "ñ"), ("b", ""), ("c", "")])
        );
        assert_eq!(decode(""), pairs(&[]));
    }

    #[test]
    fn bad_escapes_are_kept() {
        assert_eq!(
            decode("a=100%&b=%zz&c=%4"),
            pairs(&[("a", "100%"), ("b", "%zz"), ("c", "%4")])
        );
        assert_eq!(decode("a=%FF"), pairs(&[("a", "\u{FFFD}")]));
    }

    #[test]
    fn round_trip_and_get() {
        let original = pairs(&[
            ("Body", "line1\nline2 +%&=?/ ünï €"),
            ("From", "+15550100000"),
        ]);
        let decoded = decode(&encode(&original));
        assert_eq!(decoded, original);
        assert_eq!(get(&decoded, "From"), Some("+15550100000"));
        assert_eq!(get(&decoded, "To"), None);
    }
}
