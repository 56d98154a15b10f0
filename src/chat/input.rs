//! Checking and normalising what a visitor typed for an `ask` prompt. The
//! web client checks too, but only this counts.

use super::event::InputKind;

/// The country whose national format a number without `+` is read in.
pub type Region = phonenumber::country::Id;

/// The value to store, or why it was refused. `region`: how to read a
/// phone number written without its country code (unset: refuse it).
pub fn validate(
    kind: InputKind,
    raw: &str,
    region: Option<Region>,
) -> Result<String, &'static str> {
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
        InputKind::Phone => phone(s, region),
        InputKind::Number => number(s),
    }
}

/// A practical subset of RFC 5322's addr-spec: a dot-atom local part of
/// atext (without `'`), one `@`, a dotted domain of letters, digits and
/// hyphens (labels up to 63) with a 2+ letter TLD; 254 bytes at most. So nothing that reads
/// as markup or quoting (`< > " ' ( ) , ; : \ [ ]`), no spaces, no
/// controls. The domain is lower-cased; the local part is kept as typed.
fn email(s: &str) -> Result<String, &'static str> {
    if s.len() > 254 {
        return Err("not an email address");
    }
    let (local, domain) = s.split_once('@').ok_or("no @")?;
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&*+-/=?^_`{|}~".contains(c);
    let ok_local = !local.is_empty()
        && local.len() <= 64
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext));
    let labels: Vec<&str> = domain.split('.').collect();
    let ok_domain = labels.len() >= 2
        && domain.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
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

/// Load libphonenumber's metadata, which the first parse would otherwise
/// do (and take its time over).
pub fn load_numbering_plans() {
    let _ = phone("+12125550100", None);
}

/// A number valid in its country's numbering plan (libphonenumber's
/// metadata), as E.164. `+` or `00` starts an international number;
/// anything else is read in `region`'s national format.
pub fn phone(s: &str, region: Option<Region>) -> Result<String, &'static str> {
    // The parser accepts letters (vanity numbers) and extensions; a chat
    // answer with either is more likely a typo.
    if s.len() > 32
        || !s
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '.' | '-' | '(' | ')'))
    {
        return Err("not a phone number");
    }
    let international = s.starts_with('+') || s.starts_with("00");
    if !international && region.is_none() {
        return Err("needs the country code (+…)");
    }
    let text = match s.strip_prefix("00") {
        Some(rest) => format!("+{rest}"),
        None => s.to_string(),
    };
    let number = phonenumber::parse(region, &text).map_err(|_| "not a phone number")?;
    if !phonenumber::is_valid(&number) {
        return Err("not a valid number");
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
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
            validate(InputKind::Email, " Ana.Lopez@Example.COM ", None).unwrap(),
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
            // Markup, quoting and comments.
            "a<script>@x.com",
            "\"a\"@x.com",
            "a@x.com<img>",
            "<a@x.com>",
            "o'brien@x.com",
            "a(b)@x.com",
            "a,b@x.com",
            "a;b@x.com",
            "a:b@x.com",
            "a\\b@x.com",
            "[a]@x.com",
            "a@[127.0.0.1]",
            "a@x.com\"onmouseover=\"x",
            // Spaces, controls, odd dots, too long.
            "a\tb@x.com",
            "a\u{0}@x.com",
            "a@x\u{1b}.com",
            "a\u{a0}b@x.com",
            ".a@x.com",
            "a.@x.com",
            "a..b@x.com",
            &format!("{}@{}.com", "a".repeat(64), "b".repeat(190)),
            &format!("{}@x.com", "a".repeat(65)),
            &format!("a@{}.com", "b".repeat(64)),
        ] {
            assert!(validate(InputKind::Email, bad, None).is_err(), "{bad:?}");
        }
        for good in [
            "first.last+tag@sub.example.org",
            "a_b-c=d@x.io",
            "x@münchen.de",
        ] {
            assert_eq!(validate(InputKind::Email, good, None).unwrap(), good);
        }
        let label = "b".repeat(61);
        let longest = format!("{}@{label}.{label}.{label}.com", "a".repeat(64));
        assert_eq!(longest.len(), 254);
        assert!(validate(InputKind::Email, &longest, None).is_ok());
    }

    #[test]
    fn phones_normalise_to_e164() {
        assert_eq!(
            validate(InputKind::Phone, "+34 600-12.34 (56)", None).unwrap(),
            "+34600123456"
        );
        assert_eq!(phone("0044 20 7946 0000", None).unwrap(), "+442079460000");
        // National formats need the configured country.
        let es: Region = "ES".parse().unwrap();
        assert_eq!(phone("600 12 34 56", Some(es)).unwrap(), "+34600123456");
        assert_eq!(phone("+44 7911 123456", Some(es)).unwrap(), "+447911123456");
        for bad in [
            "600123456",
            "+12",
            "+1234567890123456",
            "+34 6OO",
            "+0123456789",
            // Right length, not in Spain's numbering plan.
            "+34 000 123 456",
            "+34 600 123 456 ext. 12",
            "",
        ] {
            assert!(phone(bad, None).is_err(), "{bad:?}");
        }
        assert!(phone("123", Some(es)).is_err());
    }

    #[test]
    fn numbers_and_text() {
        assert_eq!(validate(InputKind::Number, "12,5", None).unwrap(), "12.5");
        assert_eq!(validate(InputKind::Number, "-3", None).unwrap(), "-3");
        for bad in ["", "1.", ".5", "1.2.3", "12a", "--1"] {
            assert!(validate(InputKind::Number, bad, None).is_err(), "{bad:?}");
        }
        assert!(validate(InputKind::Text, "   ", None).is_err());
        assert_eq!(validate(InputKind::Text, " hi ", None).unwrap(), "hi");
    }
}
