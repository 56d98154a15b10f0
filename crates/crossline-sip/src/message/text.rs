//! Lexical helpers shared by the parsers (RFC 3261 §25.1).

use super::uri::Params;

/// `token` characters.
pub(super) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

pub(super) fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Trim SP/HT only (not Unicode whitespace: those bytes are content).
pub(super) fn trim_ws(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

pub(super) fn trim_ws_start(s: &str) -> &str {
    s.trim_start_matches([' ', '\t'])
}

/// Split `s` where `pred` first fails: (matching prefix, rest).
pub(super) fn take_while(s: &str, pred: impl Fn(u8) -> bool) -> (&str, &str) {
    let n = s.bytes().position(|b| !pred(b)).unwrap_or(s.len());
    // `pred` only accepts ASCII here, so `n` is a char boundary; fall back safely anyway.
    match (s.get(..n), s.get(n..)) {
        (Some(a), Some(b)) => (a, b),
        _ => ("", s),
    }
}

/// Plain decimal into u32: digits only, leading zeros fine, overflow is None.
pub(super) fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    let mut v: u32 = 0;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u32::from(b - b'0'))?;
    }
    Some(v)
}

pub(super) fn parse_u16(s: &str) -> Option<u16> {
    parse_u32(s).and_then(|v| u16::try_from(v).ok())
}

/// Short, single-line excerpt of hostile text for error details.
pub(super) fn snippet(s: &str) -> String {
    const MAX: usize = 48;
    let mut out = String::with_capacity(s.len().min(MAX + 3));
    for (i, c) in s.chars().enumerate() {
        if i >= MAX {
            out.push_str("...");
            break;
        }
        out.push(if c.is_control() { '?' } else { c });
    }
    out
}

/// Parse a quoted-string at the start of `s` (which must begin with `"`).
/// Returns the unescaped content and the text after the closing quote.
pub(super) fn parse_quoted(s: &str) -> Result<(String, &str), &'static str> {
    let inner = s.strip_prefix('"').ok_or("expected quoted string")?;
    let mut out = String::new();
    let mut chars = inner.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let rest = inner.get(i + 1..).ok_or("bad quoted string")?;
                return Ok((out, rest));
            }
            '\\' => match chars.next() {
                Some((_, '\r' | '\n')) | None => return Err("bad escape in quoted string"),
                Some((_, e)) => out.push(e),
            },
            // qdtext excludes raw controls other than HT (quoted-pair may carry them).
            c if (c.is_ascii_control() && c != '\t') => {
                return Err("control character in quoted string")
            }
            c => out.push(c),
        }
    }
    Err("unterminated quoted string")
}

/// Write `s` as a quoted-string.
pub(super) fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            // Not representable even as quoted-pair.
            '\r' | '\n' => out.push(' '),
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_control() && c != '\t' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Characters allowed in an unquoted header parameter value:
/// `token / host` (host brings `:` and `[ ]` for IPv6).
fn is_gen_value_char(b: u8) -> bool {
    is_token_char(b) || matches!(b, b':' | b'[' | b']')
}

/// Parse `*( SWS ";" SWS name [ SWS "=" SWS value ] ) SWS` into `params`.
pub(super) fn parse_header_params(s: &str, params: &mut Params) -> Result<(), &'static str> {
    let mut rest = trim_ws_start(s);
    while !rest.is_empty() {
        rest = trim_ws_start(
            rest.strip_prefix(';')
                .ok_or("expected ';' before parameter")?,
        );
        let (name, after) = take_while(rest, is_token_char);
        if name.is_empty() {
            return Err("empty parameter name");
        }
        rest = trim_ws_start(after);
        let mut value = None;
        if let Some(v) = rest.strip_prefix('=') {
            let v = trim_ws_start(v);
            if v.starts_with('"') {
                let (q, after) = parse_quoted(v)?;
                value = Some(q);
                rest = after;
            } else {
                let (tok, after) = take_while(v, is_gen_value_char);
                if tok.is_empty() {
                    return Err("empty parameter value");
                }
                value = Some(tok.to_string());
                rest = after;
            }
            rest = trim_ws_start(rest);
        }
        params.push((name.to_ascii_lowercase(), value));
    }
    Ok(())
}

/// Serialise header params; values that are not plain tokens are quoted.
/// RFC 3840 feature tags (`+name`) always take quoted values.
pub(super) fn push_header_params(out: &mut String, params: &Params) {
    for (name, value) in params {
        out.push(';');
        out.push_str(name);
        if let Some(v) = value {
            out.push('=');
            if !v.is_empty() && !name.starts_with('+') && v.bytes().all(is_gen_value_char) {
                out.push_str(v);
            } else {
                push_quoted(out, v);
            }
        }
    }
}

pub(super) fn find_param<'a>(params: &'a Params, name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref())
}

pub(super) fn set_param(params: &mut Params, name: &str, value: Option<&str>) {
    let value = value.map(str::to_string);
    match params
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        Some(slot) => slot.1 = value,
        None => params.push((name.to_ascii_lowercase(), value)),
    }
}

/// Iterator over the top-level comma-separated elements of a header value,
/// skipping commas inside quoted strings and `<...>`. Elements are trimmed.
pub(super) struct CommaSplit<'a> {
    rest: Option<&'a str>,
}

pub(super) fn split_commas(s: &str) -> CommaSplit<'_> {
    CommaSplit { rest: Some(s) }
}

impl<'a> Iterator for CommaSplit<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        let mut in_quote = false;
        let mut escaped = false;
        let mut in_angle = false;
        for (i, b) in s.bytes().enumerate() {
            if in_quote {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_quote = false;
                }
                continue;
            }
            match b {
                b'"' => in_quote = true,
                b'<' => in_angle = true,
                b'>' => in_angle = false,
                b',' if !in_angle => {
                    // ASCII comma: both sides are char boundaries.
                    self.rest = s.get(i + 1..);
                    return Some(trim_ws(s.get(..i).unwrap_or("")));
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(trim_ws(s))
    }
}

/// `Wkday, DD Mon YYYY HH:MM:SS GMT` (RFC 1123 as profiled by RFC 3261 §20.17).
pub(super) fn is_sip_date(s: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut it = s.split_ascii_whitespace();
    let (Some(wd), Some(dd), Some(mon), Some(yyyy), Some(time), Some(gmt), None) = (
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
    ) else {
        return false;
    };
    let num =
        |t: &str, len: usize, max: u32| t.len() == len && parse_u32(t).is_some_and(|v| v <= max);
    let mut hms = time.split(':');
    let time_ok = matches!(
        (hms.next(), hms.next(), hms.next(), hms.next()),
        (Some(h), Some(m), Some(sec), None) if num(h, 2, 23) && num(m, 2, 59) && num(sec, 2, 60)
    );
    DAYS.contains(&wd)
        && num(dd, 2, 31)
        && dd != "00"
        && MONTHS.contains(&mon)
        && num(yyyy, 4, 9999)
        && time_ok
        && gmt == "GMT"
}
