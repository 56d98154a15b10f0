//! Checking and normalising what a visitor typed for an `ask` prompt. The
//! web client checks too, but only this counts.

use super::event::InputKind;

/// The value to store, or why it was refused.
pub fn validate(kind: InputKind, raw: &str) -> Result<String, &'static str> {
    let s = raw.trim();
    match kind {
        InputKind::Text | InputKind::Choice => {
            if s.is_empty() {
                Err("empty")
            } else {
                Ok(s.to_string())
            }
        }
        InputKind::Email => email(s),
        InputKind::Phone => phone(s),
        InputKind::Number => number(s),
    }
}

/// One `@`, a non-empty local part, a dotted domain with a 2+ letter TLD,
/// no spaces. The domain is lower-cased; the local part is kept as typed.
fn email(s: &str) -> Result<String, &'static str> {
    let (local, domain) = s.split_once('@').ok_or("no @")?;
    let ok_local = !local.is_empty()
        && local.len() <= 64
        && !local.contains(char::is_whitespace)
        && !local.contains('@');
    let labels: Vec<&str> = domain.split('.').collect();
    let ok_domain = labels.len() >= 2
        && domain.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|t| t.len() >= 2 && t.chars().all(char::is_alphabetic));
    if ok_local && ok_domain {
        Ok(format!("{local}@{}", domain.to_lowercase()))
    } else {
        Err("not an email address")
    }
}

/// E.164: `+` or `00`, then 7 to 15 digits; spaces, dots, dashes and
/// brackets between digits are dropped.
pub fn phone(s: &str) -> Result<String, &'static str> {
    let rest = if let Some(r) = s.strip_prefix('+') {
        r
    } else if let Some(r) = s.strip_prefix("00") {
        r
    } else {
        return Err("needs the country code (+…)");
    };
    let mut digits = String::with_capacity(16);
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '.' | '-' | '(' | ')' => {}
            _ => return Err("not a phone number"),
        }
    }
    if !(7..=15).contains(&digits.len()) || digits.starts_with('0') {
        return Err("not a phone number");
    }
    Ok(format!("+{digits}"))
}

/// A decimal number; a comma works as the decimal point too.
fn number(s: &str) -> Result<String, &'static str> {
    let t = s.replace(',', ".");
    let digits_ok = {
        let body = t.strip_prefix('-').unwrap_or(&t);
        let mut parts = body.split('.');
        let int = parts.next().unwrap_or_default();
        let frac = parts.next();
        parts.next().is_none()
            && !int.is_empty()
            && int.chars().all(|c| c.is_ascii_digit())
            && frac.is_none_or(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_digit()))
    };
    if digits_ok && t.len() <= 32 {
        Ok(t)
    } else {
        Err("not a number")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            validate(InputKind::Email, " Ana.Lopez@Example.COM ").unwrap(),
            "Ana.Lopez@example.com"
        );
        for bad in [
            "",
            "ana",
            "ana@",
            "@x.com",
            "ana@x",
            "ana@x.c",
            "a b@x.com",
            "a@b@x.com",
            "ana@-x.com",
            "ana@x..com",
        ] {
            assert!(validate(InputKind::Email, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn phones_normalise_to_e164() {
        assert_eq!(
            validate(InputKind::Phone, "+34 600-12.34 (56)").unwrap(),
            "+346001234 56".replace(' ', "")
        );
        assert_eq!(phone("0044 20 7946 0000").unwrap(), "+442079460000");
        for bad in [
            "600123456",
            "+12",
            "+1234567890123456",
            "+34 6OO",
            "+0123456789",
        ] {
            assert!(phone(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numbers_and_text() {
        assert_eq!(validate(InputKind::Number, "12,5").unwrap(), "12.5");
        assert_eq!(validate(InputKind::Number, "-3").unwrap(), "-3");
        for bad in ["", "1.", ".5", "1.2.3", "12a", "--1"] {
            assert!(validate(InputKind::Number, bad).is_err(), "{bad:?}");
        }
        assert!(validate(InputKind::Text, "   ").is_err());
        assert_eq!(validate(InputKind::Text, " hi ").unwrap(), "hi");
    }
}
