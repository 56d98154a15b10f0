//! Masking for logs: never log a whole phone number, email or typed value.

/// `+15551234567` → `+155******67`: enough to tell calls apart, not enough
/// to dial. Shorter numbers show less (`600123456` → `60*****56`); four
/// characters or fewer are masked entirely.
pub fn phone(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= 4 {
        return "*".repeat(chars.len());
    }
    let keep_head = match chars.len() {
        11.. => 4,
        7..=10 => 2,
        _ => 1,
    };
    let keep_tail = 2;
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < keep_head || i >= chars.len() - keep_tail {
                *c
            } else {
                '*'
            }
        })
        .collect()
}

/// `alice@example.com` → `a****@e******.com`.
pub fn email(s: &str) -> String {
    match s.split_once('@') {
        Some((user, domain)) => {
            let mask_part = |p: &str| {
                let mut it = p.chars();
                match it.next() {
                    Some(first) => format!("{first}{}", "*".repeat(it.count())),
                    None => String::new(),
                }
            };
            let (name, tld) = domain.rsplit_once('.').unwrap_or((domain, ""));
            let tld = if tld.is_empty() {
                String::new()
            } else {
                format!(".{tld}")
            };
            format!("{}@{}{}", mask_part(user), mask_part(name), tld)
        }
        None => "*".repeat(s.chars().count()),
    }
}

/// A SIP URI with any password in it (`sip:user:pw@host`) starred out.
pub fn uri_secret(uri: &str) -> String {
    let Some((userinfo, rest)) = uri.split_once('@') else {
        return uri.to_string();
    };
    // `sip:user:pw`: the scheme's colon, then the password's.
    let scheme_end = userinfo.find(':').map_or(0, |i| i + 1);
    match userinfo[scheme_end..].split_once(':') {
        Some((user, _)) => format!("{}{user}:***@{rest}", &userinfo[..scheme_end]),
        None => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn masks() {
        assert_eq!(super::phone("+15551234567"), "+155******67");
        assert_eq!(super::phone("1000"), "****");
        assert_eq!(super::phone("100001"), "1***01");
        assert_eq!(super::email("alice@example.com"), "a****@e******.com");
        assert_eq!(super::email("nope"), "****");
        assert_eq!(super::phone("600123456"), "60*****56");
        assert_eq!(
            super::uri_secret("sip:alice:hunter2@pbx.example.com"),
            "sip:alice:***@pbx.example.com"
        );
        assert_eq!(super::uri_secret("sip:pbx:5060"), "sip:pbx:5060");
        assert_eq!(super::uri_secret("sip:bob@h"), "sip:bob@h");
    }
}
