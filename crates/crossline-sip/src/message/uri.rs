//! SIP/SIPS URIs (RFC 3261 §19.1, §25.1) and name-addr (§20.10, §20.20, §20.39).

use std::fmt;
use std::net::Ipv6Addr;

use super::text::{
    find_param, is_token_char, is_ws, parse_header_params, parse_quoted, parse_u16,
    push_header_params, push_quoted, set_param, snippet, take_while, trim_ws, trim_ws_start,
};
use super::{ParseError, ParseErrorKind};

/// Parameters: names lowercased, values as given (unquoted if they were quoted).
pub type Params = Vec<(String, Option<String>)>;

/// A URI. `sip:`/`sips:` are parsed into parts; any other scheme keeps its
/// text after the colon, verbatim, in `host` (user/port/params/headers empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uri {
    /// Lower-cased scheme: `sip`, `sips`, `tel`...
    pub scheme: String,
    /// The user part, still %-escaped.
    pub user: Option<String>,
    /// The password after the user, if any (deprecated, but parsed).
    pub password: Option<String>,
    /// Host name or address (IPv6 in brackets); the whole rest for other schemes.
    pub host: String,
    /// Port, if given.
    pub port: Option<u16>,
    /// `;` parameters in order.
    pub params: Params,
    /// The `?` header part, verbatim.
    pub headers: Option<String>,
}

fn uri_err(detail: &str, s: &str) -> ParseError {
    ParseError::new(ParseErrorKind::Uri, format!("{detail}: {}", snippet(s)))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

fn is_user_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
}

fn is_password_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',')
}

fn is_param_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

fn is_header_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$' | b'=' | b'&'
        )
}

/// Any char legal somewhere in a generic URI (RFC 3986), for opaque schemes.
fn is_generic_uri_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&b)
}

/// True if every byte passes `ok`, and every `%` starts a valid `%HH` escape.
fn valid_escaped(s: &str, ok: impl Fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            match (b.get(i + 1), b.get(i + 2)) {
                (Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else if ok(c) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// hostname / IPv4 / `[IPv6]`. Underscore tolerated in names (seen in the wild).
pub(super) fn valid_host(h: &str) -> bool {
    if let Some(inner) = h.strip_prefix('[') {
        return inner
            .strip_suffix(']')
            .is_some_and(|v6| v6.parse::<Ipv6Addr>().is_ok());
    }
    !h.is_empty()
        && !h.starts_with(['.', '-'])
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// Split `host[:port]` from the front of `s` (host may be `[IPv6]`).
/// Returns (host, rest after host, before any port).
pub(super) fn split_host(s: &str) -> (&str, &str) {
    if s.starts_with('[') {
        match s.find(']') {
            Some(i) => match (s.get(..=i), s.get(i + 1..)) {
                (Some(h), Some(r)) => (h, r),
                _ => (s, ""),
            },
            None => (s, ""),
        }
    } else {
        take_while(s, |b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')
        })
    }
}

impl Uri {
    /// Parse a URI as it appears in a request line or between `<>`.
    pub fn parse(s: &str) -> Result<Uri, ParseError> {
        let colon = s.find(':').ok_or_else(|| uri_err("missing scheme", s))?;
        let (scheme, rest) = match (s.get(..colon), s.get(colon + 1..)) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(uri_err("missing scheme", s)),
        };
        let scheme_ok = scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !scheme_ok {
            return Err(uri_err("bad scheme", s));
        }
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "sip" || scheme == "sips" {
            return parse_sip(scheme, rest, s);
        }
        if rest.is_empty() || !rest.bytes().all(is_generic_uri_char) {
            return Err(uri_err("bad URI", s));
        }
        Ok(Uri {
            scheme,
            user: None,
            password: None,
            host: rest.to_string(),
            port: None,
            params: Vec::new(),
            headers: None,
        })
    }

    /// Build a plain `sip:[user@]host[:port]` URI.
    pub fn sip(user: Option<&str>, host: &str, port: Option<u16>) -> Uri {
        Uri {
            scheme: "sip".to_string(),
            user: user.map(str::to_string),
            password: None,
            host: host.to_string(),
            port,
            params: Vec::new(),
            headers: None,
        }
    }

    /// True for `sip:` and `sips:`.
    pub fn is_sip(&self) -> bool {
        self.scheme == "sip" || self.scheme == "sips"
    }

    /// `Some(None)` for a flag parameter like `;lr`.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    /// Replace or append a URI parameter.
    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        set_param(&mut self.params, name, value)
    }

    /// `host[:port]`.
    pub fn host_port(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{}", self.host, p),
            None => self.host.clone(),
        }
    }
}

fn parse_sip(scheme: String, rest: &str, whole: &str) -> Result<Uri, ParseError> {
    // '@' is never literal in user, password, host, params or headers, so the
    // first one ends the userinfo (user may contain ';' and '?': RFC 4475 semiuri).
    let (user, password, hostpart) = match rest.find('@') {
        Some(at) => {
            let (info, hp) = match (rest.get(..at), rest.get(at + 1..)) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err(uri_err("bad userinfo", whole)),
            };
            let (user, password) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            if user.is_empty() || !valid_escaped(user, is_user_char) {
                return Err(uri_err("bad user part", whole));
            }
            if let Some(p) = password {
                if !valid_escaped(p, is_password_char) {
                    return Err(uri_err("bad password", whole));
                }
            }
            (Some(user.to_string()), password.map(str::to_string), hp)
        }
        None => (None, None, rest),
    };

    let (host, mut rest) = split_host(hostpart);
    if !valid_host(host) {
        return Err(uri_err("bad host", whole));
    }
    let mut port = None;
    if let Some(p) = rest.strip_prefix(':') {
        let (digits, after) = take_while(p, |b| b.is_ascii_digit());
        port = Some(parse_u16(digits).ok_or_else(|| uri_err("bad port", whole))?);
        rest = after;
    }

    let mut params = Vec::new();
    while let Some(p) = rest.strip_prefix(';') {
        let end = p.find([';', '?']).unwrap_or(p.len());
        let (one, after) = match (p.get(..end), p.get(end..)) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(uri_err("bad parameter", whole)),
        };
        let (name, value) = match one.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (one, None),
        };
        if name.is_empty() || !valid_escaped(name, is_param_char) {
            return Err(uri_err("bad parameter name", whole));
        }
        if let Some(v) = value {
            if v.is_empty() || !valid_escaped(v, is_param_char) {
                return Err(uri_err("bad parameter value", whole));
            }
        }
        params.push((name.to_ascii_lowercase(), value.map(str::to_string)));
        rest = after;
    }

    let mut headers = None;
    if let Some(h) = rest.strip_prefix('?') {
        if !valid_escaped(h, is_header_char) {
            return Err(uri_err("bad URI headers", whole));
        }
        headers = Some(h.to_string());
        rest = "";
    }
    if !rest.is_empty() {
        return Err(uri_err("unexpected text", whole));
    }
    Ok(Uri {
        scheme,
        user,
        password,
        host: host.to_string(),
        port,
        params,
        headers,
    })
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.scheme)?;
        f.write_str(":")?;
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        f.write_str(&self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        for (n, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

/// `[display-name] <uri> *(;param)` or `addr-spec *(;param)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name, unquoted.
    pub display: Option<String>,
    /// The address.
    pub uri: Uri,
    /// Header parameters after the address (tag, expires...).
    pub params: Params,
}

impl NameAddr {
    /// A bare address with no display name or parameters.
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display: None,
            uri,
            params: Vec::new(),
        }
    }

    /// Parse a From/To/Contact/Route style value.
    pub fn parse(s: &str) -> Result<NameAddr, ParseError> {
        let bad = |d: &str| ParseError::new(ParseErrorKind::Header, format!("{d}: {}", snippet(s)));
        let s = trim_ws(s);
        let mut display = None;
        let rest;
        if s.starts_with('"') {
            let (d, after) = parse_quoted(s).map_err(bad)?;
            display = Some(d);
            rest = trim_ws_start(after);
            if !rest.starts_with('<') {
                return Err(bad("expected '<' after display name"));
            }
        } else {
            // Display name as tokens separated by LWS, or a bare addr-spec.
            let (words, after) = take_while(s, |b| is_token_char(b) || is_ws(b));
            if after.starts_with('<') {
                let words = trim_ws(words);
                if !words.is_empty() {
                    display = Some(words.to_string());
                }
                rest = after;
            } else if after.starts_with(':') && !words.bytes().any(is_ws) {
                return parse_addr_spec(s);
            } else {
                return Err(bad("bad display name"));
            }
        }
        // rest starts with '<'; no LWS allowed inside the brackets (RFC 4475 badaspec).
        let inner = rest.get(1..).unwrap_or("");
        let close = inner.find('>').ok_or_else(|| bad("missing '>'"))?;
        let (uri_text, after) = match (inner.get(..close), inner.get(close + 1..)) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(bad("missing '>'")),
        };
        if uri_text.starts_with([' ', '\t']) || uri_text.ends_with([' ', '\t']) {
            return Err(bad("whitespace inside <>"));
        }
        let uri = Uri::parse(uri_text)?;
        let mut params = Vec::new();
        parse_header_params(after, &mut params).map_err(bad)?;
        Ok(NameAddr {
            display,
            uri,
            params,
        })
    }

    /// The dialog tag parameter.
    pub fn tag(&self) -> Option<&str> {
        find_param(&self.params, "tag").flatten()
    }

    /// Set (or replace) the tag.
    pub fn set_tag(&mut self, tag: &str) {
        set_param(&mut self.params, "tag", Some(tag))
    }

    /// A header parameter: `None` if absent, `Some(None)` if present without a value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    /// Replace the parameter's value, or append it.
    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        set_param(&mut self.params, name, value)
    }
}

/// Unbracketed URI: RFC 3261 §20 says `;` starts header params, and a URI
/// containing `,` or `?` must have been bracketed (RFC 4475 regbadct).
fn parse_addr_spec(s: &str) -> Result<NameAddr, ParseError> {
    let end = s.find([';', ' ', '\t']).unwrap_or(s.len());
    let (uri_text, after) = match (s.get(..end), s.get(end..)) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(uri_err("bad address", s)),
    };
    if uri_text.contains([',', '?', '<', '>']) {
        return Err(ParseError::new(
            ParseErrorKind::Header,
            format!("URI with ',' or '?' must be in <>: {}", snippet(s)),
        ));
    }
    let uri = Uri::parse(uri_text)?;
    let mut params = Vec::new();
    parse_header_params(after, &mut params)
        .map_err(|d| ParseError::new(ParseErrorKind::Header, format!("{d}: {}", snippet(s))))?;
    Ok(NameAddr {
        display: None,
        uri,
        params,
    })
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        if let Some(d) = &self.display {
            push_quoted(&mut out, d);
            out.push(' ');
        }
        write!(f, "{out}<{}>", self.uri)?;
        out.clear();
        push_header_params(&mut out, &self.params);
        f.write_str(&out)
    }
}
