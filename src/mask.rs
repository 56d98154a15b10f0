//! Masking for logs: never log a whole phone number, email or typed value.

/// `+15551234567` → `+1555*****67`: enough to tell calls apart, not enough
/// to dial. Short values are masked entirely.
pub fn phone(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= 4 {
        return "*".repeat(chars.len());
    }
    let keep_head = if chars.len() > 8 { 4 } else { 1 };
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

/// `alice@example.com` → `a***@e******.com`.
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

#[cfg(test)]
mod tests {
    #[test]
    fn masks() {
        assert_eq!(super::phone("+15551234567"), "+155******67");
        assert_eq!(super::phone("1000"), "****");
        assert_eq!(super::phone("100001"), "1***01");
        assert_eq!(super::email("alice@example.com"), "a****@e******.com");
        assert_eq!(super::email("nope"), "****");
    }
}
