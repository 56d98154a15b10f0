//! Header list, header-name canonicalisation and typed headers (Via, CSeq).

use std::borrow::Cow;
use std::fmt;

use super::text::{
    find_param, is_token, is_token_char, parse_header_params, parse_u16, parse_u32,
    push_header_params, set_param, snippet, split_commas, take_while, trim_ws, trim_ws_start,
};
use super::uri::{split_host, valid_host, NameAddr, Params};
use super::{Method, ParseError, ParseErrorKind};

/// Known headers: canonical spelling and whether the value is a comma list
/// that may be split into one entry per element. Auth headers, Date and
/// anything unknown are never split (their values contain bare commas).
const KNOWN: &[(&str, bool)] = &[
    ("Accept", true),
    ("Accept-Contact", true),
    ("Accept-Encoding", true),
    ("Accept-Language", true),
    ("Accept-Resource-Priority", true),
    ("Alert-Info", true),
    ("Allow", true),
    ("Allow-Events", true),
    ("Authentication-Info", false),
    ("Authorization", false),
    ("Call-ID", false),
    ("Call-Info", true),
    ("Contact", true),
    ("Content-Disposition", false),
    ("Content-Encoding", true),
    ("Content-Language", true),
    ("Content-Length", false),
    ("Content-Type", false),
    ("CSeq", false),
    ("Date", false),
    ("Error-Info", true),
    ("Event", false),
    ("Expires", false),
    ("From", false),
    ("History-Info", true),
    ("Identity", false),
    ("Identity-Info", false),
    ("In-Reply-To", true),
    ("Max-Forwards", false),
    ("MIME-Version", false),
    ("Min-Expires", false),
    ("Min-SE", false),
    ("Organization", false),
    ("P-Asserted-Identity", true),
    ("P-Associated-URI", true),
    ("P-Preferred-Identity", true),
    ("Path", true),
    ("Priority", false),
    ("Privacy", false),
    ("Proxy-Authenticate", false),
    ("Proxy-Authorization", false),
    ("Proxy-Require", true),
    ("RAck", false),
    ("Reason", true),
    ("Record-Route", true),
    ("Refer-To", false),
    ("Referred-By", false),
    ("Reject-Contact", true),
    ("Replaces", false),
    ("Reply-To", false),
    ("Request-Disposition", true),
    ("Require", true),
    ("Resource-Priority", true),
    ("Retry-After", false),
    ("Route", true),
    ("RSeq", false),
    ("Security-Client", true),
    ("Security-Server", true),
    ("Security-Verify", true),
    ("Server", false),
    ("Service-Route", true),
    ("Session-Expires", false),
    ("SIP-ETag", false),
    ("SIP-If-Match", false),
    ("Subject", false),
    ("Subscription-State", false),
    ("Supported", true),
    ("Timestamp", false),
    ("To", false),
    ("Unsupported", true),
    ("User-Agent", false),
    ("Via", true),
    ("Warning", true),
    ("WWW-Authenticate", false),
];

/// Compact forms (RFC 3261 §7.3.3 and later extensions).
fn compact(c: u8) -> Option<&'static str> {
    Some(match c.to_ascii_lowercase() {
        b'a' => "Accept-Contact",
        b'b' => "Referred-By",
        b'c' => "Content-Type",
        b'd' => "Request-Disposition",
        b'e' => "Content-Encoding",
        b'f' => "From",
        b'i' => "Call-ID",
        b'j' => "Reject-Contact",
        b'k' => "Supported",
        b'l' => "Content-Length",
        b'm' => "Contact",
        b'n' => "Identity-Info",
        b'o' => "Event",
        b'r' => "Refer-To",
        b's' => "Subject",
        b't' => "To",
        b'u' => "Allow-Events",
        b'v' => "Via",
        b'x' => "Session-Expires",
        b'y' => "Identity",
        _ => return None,
    })
}

/// Canonical spelling of a known header name (compact forms expanded) and
/// whether it is a splittable list header.
pub(super) fn known(name: &str) -> Option<(&'static str, bool)> {
    let full = match name.as_bytes() {
        [c] => compact(*c)?,
        _ => name,
    };
    KNOWN
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(full))
        .copied()
}

fn canonical(name: &str) -> Cow<'_, str> {
    match known(name) {
        Some((n, _)) => Cow::Borrowed(n),
        None => Cow::Borrowed(name),
    }
}

fn missing(name: &str) -> ParseError {
    ParseError::new(ParseErrorKind::MissingHeader, format!("no {name} header"))
}

fn bad_header(name: &str, detail: &str, value: &str) -> ParseError {
    ParseError::new(
        ParseErrorKind::Header,
        format!("{name}: {detail}: {}", snippet(value)),
    )
}

/// One header line. `name` is canonical for known headers; `value` is
/// unfolded and trimmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The header's name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// Ordered header list. Lookups are case-insensitive and accept compact names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// Append without canonicalising (parser already did).
    pub(super) fn push_raw(&mut self, name: String, value: String) {
        self.0.push(Header { name, value });
    }

    /// The first value of `name` (any case, compact form accepted).
    pub fn get(&self, name: &str) -> Option<&str> {
        let name = canonical(name);
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(&name))
            .map(|h| h.value.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let name = canonical(name);
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(&name))
            .map(|h| h.value.as_str())
    }

    /// Append a header; known names (compact ones too) are stored canonically.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        let name = canonical(name).into_owned();
        self.0.push(Header {
            name,
            value: value.into(),
        });
    }

    /// Insert before the first header of this name (at the very front if none).
    pub fn push_front(&mut self, name: &str, value: impl Into<String>) {
        let name = canonical(name).into_owned();
        let at = self
            .0
            .iter()
            .position(|h| h.name.eq_ignore_ascii_case(&name))
            .unwrap_or(0);
        self.0.insert(
            at,
            Header {
                name,
                value: value.into(),
            },
        );
    }

    /// Replace all headers of this name with one, at the first one's position.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let name = canonical(name).into_owned();
        let value = value.into();
        match self
            .0
            .iter()
            .position(|h| h.name.eq_ignore_ascii_case(&name))
        {
            Some(at) => {
                let mut i = 0;
                self.0.retain(|h| {
                    let keep = i <= at || !h.name.eq_ignore_ascii_case(&name);
                    i += 1;
                    keep
                });
                if let Some(h) = self.0.get_mut(at) {
                    h.value = value;
                }
            }
            None => self.0.push(Header { name, value }),
        }
    }

    /// Remove every header of this name.
    pub fn remove(&mut self, name: &str) {
        let name = canonical(name);
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(&name));
    }

    /// Whether any header of this name is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Every header, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    /// How many header lines there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// All Via entries, top first (comma-joined values are split too).
    pub fn vias(&self) -> Result<Vec<Via>, ParseError> {
        self.get_all("Via")
            .flat_map(split_commas)
            .map(Via::parse)
            .collect()
    }

    /// The topmost Via (the first entry of the first Via header).
    pub fn top_via(&self) -> Result<Via, ParseError> {
        let first = self.get("Via").ok_or_else(|| missing("Via"))?;
        let top = split_commas(first).next().unwrap_or(first);
        Via::parse(top)
    }

    /// The Call-ID value.
    pub fn call_id(&self) -> Option<&str> {
        self.get("Call-ID")
    }

    /// The parsed CSeq.
    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        CSeq::parse(self.get("CSeq").ok_or_else(|| missing("CSeq"))?)
    }

    /// The parsed From.
    pub fn from(&self) -> Result<NameAddr, ParseError> {
        NameAddr::parse(self.get("From").ok_or_else(|| missing("From"))?)
    }

    /// The parsed To.
    pub fn to(&self) -> Result<NameAddr, ParseError> {
        NameAddr::parse(self.get("To").ok_or_else(|| missing("To"))?)
    }

    /// Contact addresses; empty for `*` (see [`Headers::is_star_contact`]) or none.
    pub fn contacts(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.get_all("Contact")
            .flat_map(split_commas)
            .filter(|v| *v != "*")
            .map(NameAddr::parse)
            .collect()
    }

    /// Whether the Contact is `*` (REGISTER's remove-all).
    pub fn is_star_contact(&self) -> bool {
        self.get_all("Contact").any(|v| trim_ws(v) == "*")
    }

    /// Max-Forwards, 0..=255 (RFC 3261 §20.22; RFC 4475 scalar02).
    pub fn max_forwards(&self) -> Result<Option<u32>, ParseError> {
        match self.get("Max-Forwards") {
            None => Ok(None),
            Some(v) => parse_u32(trim_ws(v))
                .filter(|n| *n <= 255)
                .map(Some)
                .ok_or_else(|| bad_header("Max-Forwards", "not 0-255", v)),
        }
    }

    /// Expires header in seconds (delta-seconds must fit 32 bits).
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        match self.get("Expires") {
            None => Ok(None),
            Some(v) => parse_u32(trim_ws(v))
                .map(Some)
                .ok_or_else(|| bad_header("Expires", "not a 32-bit number", v)),
        }
    }

    /// The Content-Type value, unparsed.
    pub fn content_type(&self) -> Option<&str> {
        self.get("Content-Type")
    }

    /// Route or Record-Route entries in order.
    pub fn routes(&self, name: &str) -> Result<Vec<NameAddr>, ParseError> {
        self.get_all(name)
            .flat_map(split_commas)
            .map(NameAddr::parse)
            .collect()
    }

    /// Comma-separated tokens across all instances (Require, Supported, Allow...).
    pub fn tokens(&self, name: &str) -> Vec<String> {
        self.get_all(name)
            .flat_map(|v| v.split(','))
            .map(trim_ws)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// One Via entry: `SIP/2.0/<transport> host[:port] *(;param)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    /// Transport token, upper-cased (UDP, TCP, TLS, WS...).
    pub transport: String,
    /// sent-by host.
    pub host: String,
    /// sent-by port, if given.
    pub port: Option<u16>,
    /// Parameters (branch, received, rport...) in order.
    pub params: Params,
}

impl Via {
    /// Parse one Via entry (not a comma-joined list).
    pub fn parse(s: &str) -> Result<Via, ParseError> {
        let bad = |d: &str| bad_header("Via", d, s);
        // sent-protocol: name SLASH version SLASH transport, SLASH = SWS "/" SWS.
        let mut parts = [""; 3];
        let mut rest = trim_ws(s);
        for (i, part) in parts.iter_mut().enumerate() {
            if i > 0 {
                rest = trim_ws_start(rest.strip_prefix('/').ok_or_else(|| bad("expected '/'"))?);
            }
            let (tok, after) = take_while(rest, is_token_char);
            if tok.is_empty() {
                return Err(bad("bad sent-protocol"));
            }
            *part = tok;
            rest = trim_ws_start(after);
            if i == 2 && rest.len() == after.len() {
                return Err(bad("expected space after transport"));
            }
        }
        let [proto, version, transport] = parts;
        if !proto.eq_ignore_ascii_case("SIP") || version != "2.0" {
            return Err(ParseError::new(
                ParseErrorKind::Version,
                format!("Via: not SIP/2.0: {}", snippet(s)),
            ));
        }
        let (host, after) = split_host(rest);
        if !valid_host(host) {
            return Err(bad("bad sent-by host"));
        }
        rest = trim_ws_start(after);
        let mut port = None;
        if let Some(p) = rest.strip_prefix(':') {
            let (digits, after) = take_while(trim_ws_start(p), |b| b.is_ascii_digit());
            port = Some(parse_u16(digits).ok_or_else(|| bad("bad port"))?);
            rest = after;
        }
        let mut params = Vec::new();
        parse_header_params(rest, &mut params).map_err(bad)?;
        if let Some(Some(v)) = find_param(&params, "rport") {
            if parse_u16(v).is_none() {
                return Err(bad("bad rport"));
            }
        }
        if let Some(v) = find_param(&params, "branch") {
            if !v.is_some_and(is_token) {
                return Err(bad("bad branch"));
            }
        }
        Ok(Via {
            transport: transport.to_ascii_uppercase(),
            host: host.to_string(),
            port,
            params,
        })
    }

    /// The transaction branch.
    pub fn branch(&self) -> Option<&str> {
        find_param(&self.params, "branch").flatten()
    }

    /// The `received` address a server stamped on it.
    pub fn received(&self) -> Option<&str> {
        find_param(&self.params, "received").flatten()
    }

    /// `Some(None)`: `;rport` flag without a value (RFC 3581 request).
    pub fn rport(&self) -> Option<Option<u16>> {
        find_param(&self.params, "rport").map(|v| v.and_then(parse_u16))
    }

    /// A parameter: `None` if absent, `Some(None)` if present without a value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    /// Replace the parameter's value, or append it.
    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        set_param(&mut self.params, name, value)
    }

    /// Remove a parameter, any case.
    pub fn remove_param(&mut self, name: &str) {
        self.params.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// `host[:port]` as it appears in the Via.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{}", self.host, p),
            None => self.host.clone(),
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        let mut out = String::new();
        push_header_params(&mut out, &self.params);
        f.write_str(&out)
    }
}

/// `CSeq: <seq> <method>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    /// The sequence number.
    pub seq: u32,
    /// The method the sequence number counts.
    pub method: Method,
}

impl CSeq {
    /// The number must fit 32 bits (RFC 3261 §20.16; RFC 4475 scalar02).
    pub fn parse(s: &str) -> Result<CSeq, ParseError> {
        let bad = |d: &str| bad_header("CSeq", d, s);
        let (digits, rest) = take_while(trim_ws(s), |b| b.is_ascii_digit());
        let seq = parse_u32(digits).ok_or_else(|| bad("bad sequence number"))?;
        let method = trim_ws_start(rest);
        if method.len() == rest.len() || !is_token(method) {
            return Err(bad("bad method"));
        }
        Ok(CSeq {
            seq,
            method: Method::from_token(method),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}
