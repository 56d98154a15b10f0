//! Whole-message parsing (RFC 3261 §7, §18.3 for datagrams) and the lenient
//! extraction used to answer unparseable requests with 400.

use std::borrow::Cow;

use bytes::Bytes;

use super::header::{known, CSeq, Headers, Via};
use super::msg::{Request, Response, SipMessage};
use super::text::{is_sip_date, is_token, is_ws, parse_u32, snippet, split_commas, trim_ws};
use super::uri::{NameAddr, Uri};
use super::{Method, ParseError, ParseErrorKind};

fn err(kind: ParseErrorKind, detail: impl Into<String>) -> ParseError {
    ParseError::new(kind, detail)
}

/// Skip CR/LF before the start line (RFC 3261 §7.5).
fn skip_leading_crlf(buf: &[u8]) -> &[u8] {
    let n = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    buf.get(n..).unwrap_or(&[])
}

/// Find the empty line ending the header section. Returns (header bytes
/// including the last line's LF, body start). Accepts CRLF and bare LF.
/// Without an empty line the whole buffer is headers.
pub(super) fn split_head(buf: &[u8]) -> (&[u8], usize) {
    let mut i = 0;
    while let Some(off) = buf
        .get(i..)
        .and_then(|s| s.iter().position(|&b| b == b'\n'))
    {
        let lf = i + off;
        match (buf.get(lf + 1), buf.get(lf + 2)) {
            (Some(b'\n'), _) => return (buf.get(..=lf).unwrap_or(buf), lf + 2),
            (Some(b'\r'), Some(b'\n')) => return (buf.get(..=lf).unwrap_or(buf), lf + 3),
            _ => i = lf + 1,
        }
    }
    (buf, buf.len())
}

/// Lines of a header section with the line end (LF or CRLF) removed.
fn lines(head: &str) -> impl Iterator<Item = &str> {
    let head = head.strip_suffix('\n').unwrap_or(head);
    head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l))
}

/// A header as read: name as received, value unfolded.
struct RawHeader<'a> {
    name: &'a str,
    value: Cow<'a, str>,
}

/// Split header lines into (name, unfolded value); `strict` rejects junk
/// lines, otherwise they are skipped.
fn raw_headers<'a>(
    it: impl Iterator<Item = &'a str>,
    strict: bool,
) -> Result<Vec<RawHeader<'a>>, ParseError> {
    let mut out: Vec<RawHeader<'a>> = Vec::with_capacity(16);
    let mut skipping = false;
    for line in it {
        if strict && line.contains('\r') {
            return Err(err(ParseErrorKind::Header, "bare CR in header line"));
        }
        if line.bytes().next().is_some_and(is_ws) {
            // Folded continuation: join with one SP (RFC 3261 §7.3.1).
            let piece = trim_ws(line);
            match out.last_mut() {
                Some(h) if !skipping => {
                    if h.value.is_empty() {
                        h.value = Cow::Borrowed(piece);
                    } else if !piece.is_empty() {
                        let v = h.value.to_mut();
                        v.push(' ');
                        v.push_str(piece);
                    }
                }
                _ if strict => {
                    return Err(err(
                        ParseErrorKind::Header,
                        "continuation line without header",
                    ))
                }
                _ => {}
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            if strict {
                return Err(err(
                    ParseErrorKind::Header,
                    format!("line without colon: {}", snippet(line)),
                ));
            }
            skipping = true;
            continue;
        };
        let name = trim_ws(name);
        if !is_token(name) {
            if strict {
                return Err(err(
                    ParseErrorKind::Header,
                    format!("bad header name: {}", snippet(name)),
                ));
            }
            skipping = true;
            continue;
        }
        skipping = false;
        out.push(RawHeader {
            name,
            value: Cow::Borrowed(trim_ws(value)),
        });
    }
    Ok(out)
}

enum StartLine<'a> {
    Request(Method, Uri),
    Response(u16, &'a str),
}

fn is_version(v: &str) -> bool {
    v.len() == 7
        && v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
        && v.get(4..) == Some("2.0")
}

fn parse_start_line(line: &str) -> Result<StartLine<'_>, ParseError> {
    if line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let (version, rest) = line.split_once(' ').unwrap_or((line, ""));
        if !is_version(version) {
            return Err(err(
                ParseErrorKind::Version,
                format!("unsupported version {}", snippet(version)),
            ));
        }
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let status = match code.as_bytes() {
            [a, b, c] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => {
                return Err(err(
                    ParseErrorKind::StartLine,
                    "status code is not 3 digits",
                ))
            }
        };
        if !(100..=699).contains(&status) {
            return Err(err(ParseErrorKind::StartLine, "status code out of range"));
        }
        if reason.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(err(
                ParseErrorKind::StartLine,
                "control character in reason",
            ));
        }
        return Ok(StartLine::Response(status, reason));
    }
    // Request-Line = Method SP Request-URI SP SIP-Version, exactly.
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(err(
            ParseErrorKind::StartLine,
            format!(
                "request line is not 'METHOD URI SIP/2.0': {}",
                snippet(line)
            ),
        ));
    };
    if !is_token(method) {
        return Err(err(
            ParseErrorKind::StartLine,
            format!("bad method {}", snippet(method)),
        ));
    }
    if !is_version(version) {
        return Err(err(
            ParseErrorKind::Version,
            format!("unsupported version {}", snippet(version)),
        ));
    }
    let uri = Uri::parse(uri)?;
    if uri.is_sip() && uri.headers.is_some() {
        // RFC 3261 §19.1.1: headers are not allowed in a Request-URI (RFC 4475 escruri).
        return Err(err(ParseErrorKind::Uri, "headers in Request-URI"));
    }
    Ok(StartLine::Request(Method::from_token(method), uri))
}

/// Parse one complete message (a UDP datagram, or one frame from
/// [`super::StreamFramer`]). Content-Length, when present, bounds the body
/// and excess bytes are ignored; it is not kept in `headers` (the body
/// length is authoritative and `to_bytes` writes it).
pub fn parse_message(buf: &[u8]) -> Result<SipMessage, ParseError> {
    let buf = skip_leading_crlf(buf);
    if buf.is_empty() {
        return Err(err(ParseErrorKind::StartLine, "empty message"));
    }
    let (head, body_start) = split_head(buf);
    let head = std::str::from_utf8(head)
        .map_err(|_| err(ParseErrorKind::Encoding, "header section is not UTF-8"))?;
    let mut it = lines(head);
    let start = parse_start_line(it.next().unwrap_or(""))?;
    let raw = raw_headers(it, true)?;

    let mut headers = Headers::new();
    let mut content_length: Option<usize> = None;
    for h in raw {
        let (name, list) = match known(h.name) {
            Some(k) => k,
            None => {
                headers.push_raw(h.name.to_string(), h.value.into_owned());
                continue;
            }
        };
        check_value(name, &h.value)?;
        if name == "Content-Length" {
            let n = parse_u32(&h.value)
                .ok_or_else(|| err(ParseErrorKind::ContentLength, snippet(&h.value)))?;
            // First one wins when several disagree (RFC 4475 mcl01 is "app decides").
            content_length.get_or_insert(n as usize);
            continue;
        }
        if list && !h.value.is_empty() && h.value.contains(',') {
            for el in split_commas(&h.value) {
                if el.is_empty() {
                    if matches!(name, "Via" | "Contact" | "Route" | "Record-Route") {
                        return Err(err(
                            ParseErrorKind::Header,
                            format!("{name}: empty list element"),
                        ));
                    }
                    continue;
                }
                check_element(name, el)?;
                headers.push_raw(name.to_string(), el.to_string());
            }
        } else {
            check_element(name, &h.value)?;
            headers.push_raw(name.to_string(), h.value.into_owned());
        }
    }

    // Every message needs these to be matched to a transaction or answered.
    let cseq = headers.cseq()?;
    if headers.get("Via").is_none() {
        return Err(err(ParseErrorKind::MissingHeader, "no Via header"));
    }

    let rest = buf.get(body_start..).unwrap_or(&[]);
    let body = match content_length {
        Some(n) if n > rest.len() => {
            return Err(err(
                ParseErrorKind::ContentLength,
                format!(
                    "Content-Length {n} exceeds the {} bytes received",
                    rest.len()
                ),
            ))
        }
        Some(n) => rest.get(..n).unwrap_or(rest),
        None => rest,
    };
    let body = Bytes::copy_from_slice(body);

    Ok(match start {
        StartLine::Request(method, uri) => {
            if cseq.method != method {
                return Err(err(
                    ParseErrorKind::Header,
                    format!("CSeq method {} does not match {}", cseq.method, method),
                ));
            }
            SipMessage::Request(Request {
                method,
                uri,
                headers,
                body,
            })
        }
        StartLine::Response(status, reason) => SipMessage::Response(Response {
            status,
            reason: reason.to_string(),
            headers,
            body,
        }),
    })
}

/// Whole-value checks for single-valued known headers.
fn check_value(name: &str, value: &str) -> Result<(), ParseError> {
    let bad = |d: &str| {
        err(
            ParseErrorKind::Header,
            format!("{name}: {d}: {}", snippet(value)),
        )
    };
    match name {
        "CSeq" => CSeq::parse(value).map(drop),
        "Max-Forwards" => match parse_u32(value) {
            Some(n) if n <= 255 => Ok(()),
            _ => Err(bad("not 0-255")),
        },
        "Expires" | "Min-Expires" => parse_u32(value)
            .map(drop)
            .ok_or_else(|| bad("not a 32-bit number")),
        "Date" if !is_sip_date(value) => Err(bad("not 'Wkday, DD Mon YYYY HH:MM:SS GMT'")),
        "From" | "To" => NameAddr::parse(value).map(drop),
        "Call-ID" if value.is_empty() || value.bytes().any(is_ws) => Err(bad("bad Call-ID")),
        _ => Ok(()),
    }
}

/// Checks for one element of a (possibly split) list header.
fn check_element(name: &str, el: &str) -> Result<(), ParseError> {
    match name {
        "Via" => Via::parse(el).map(drop),
        "Route" | "Record-Route" => NameAddr::parse(el).map(drop),
        "Contact" if el == "*" => Ok(()),
        "Contact" => {
            let c = NameAddr::parse(el)?;
            match c.param("expires") {
                Some(Some(v)) if parse_u32(v).is_none() => Err(err(
                    ParseErrorKind::Header,
                    format!("Contact: bad expires {}", snippet(v)),
                )),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// For a request that failed to parse: a 400 carrying the Via, From, To,
/// Call-ID and CSeq read leniently from `buf`, with a reason naming the
/// problem. None when those cannot be found (or `buf` is a response):
/// the caller drops the message. Adds a deterministic To tag when missing
/// (RFC 3261 §8.2.6.2, stateless reply).
pub fn bad_request_response(buf: &[u8], err: &ParseError) -> Option<Response> {
    let buf = skip_leading_crlf(buf);
    let (head, _) = split_head(buf);
    let mut byte_lines = head.split(|&b| b == b'\n');
    let first = byte_lines.next()?;
    if first.len() < 4 || first.get(..4)?.eq_ignore_ascii_case(b"SIP/") {
        return None;
    }
    // Keep only valid UTF-8 lines: enough for the headers we need.
    let text_lines = byte_lines.filter_map(|l| {
        let l = std::str::from_utf8(l).ok()?;
        Some(l.strip_suffix('\r').unwrap_or(l))
    });
    let raw = raw_headers(text_lines, false).ok()?;

    let mut vias: Vec<&str> = Vec::new();
    let (mut from, mut to, mut call_id, mut cseq) = (None, None, None, None);
    for h in &raw {
        match known(h.name).map(|k| k.0) {
            Some("Via") => vias.extend(split_commas(&h.value).filter(|v| !v.is_empty())),
            Some("From") => {
                from.get_or_insert(&*h.value);
            }
            Some("To") => {
                to.get_or_insert(&*h.value);
            }
            Some("Call-ID") => {
                call_id.get_or_insert(&*h.value);
            }
            Some("CSeq") => {
                cseq.get_or_insert(&*h.value);
            }
            _ => {}
        }
    }
    let (from, to, call_id, cseq) = (from?, to?, call_id?, cseq?);
    if call_id.is_empty() || cseq.is_empty() {
        return None;
    }
    // The response is routed by the top Via, so that one must make sense.
    let top = Via::parse(vias.first()?).ok()?;

    let mut headers = Headers::new();
    for v in &vias {
        headers.push_raw("Via".to_string(), (*v).to_string());
    }
    headers.push_raw("From".to_string(), from.to_string());
    let to = match NameAddr::parse(to) {
        Ok(mut na) if na.tag().is_none() => {
            na.set_tag(&stateless_tag(&[
                call_id,
                from,
                cseq,
                top.branch().unwrap_or(""),
            ]));
            na.to_string()
        }
        _ => to.to_string(),
    };
    headers.push_raw("To".to_string(), to);
    headers.push_raw("Call-ID".to_string(), call_id.to_string());
    headers.push_raw("CSeq".to_string(), cseq.to_string());

    let detail: String = err
        .to_string()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(100)
        .collect();
    Some(Response {
        status: 400,
        reason: format!("Bad Request ({detail})"),
        headers,
        body: Bytes::new(),
    })
}

/// Same request, same tag: retransmissions get identical responses.
fn stateless_tag(parts: &[&str]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    format!("{:016x}", h.finish())
}
