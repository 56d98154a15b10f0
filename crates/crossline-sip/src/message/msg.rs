//! Request/Response types and serialisation.

use std::fmt::Write as _;

use bytes::Bytes;

use super::header::Headers;
use super::uri::Uri;
use super::{Method, ParseError, ParseErrorKind};

/// A SIP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The method from the request line.
    pub method: Method,
    /// The Request-URI.
    pub uri: Uri,
    /// Headers in order.
    pub headers: Headers,
    /// The body; Content-Length is written from it.
    pub body: Bytes,
}

/// A SIP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code, 100..=699.
    pub status: u16,
    /// Reason phrase (CR/LF flattened when written).
    pub reason: String,
    /// Headers in order.
    pub headers: Headers,
    /// The body; Content-Length is written from it.
    pub body: Bytes,
}

/// Either kind of message, as parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SipMessage {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

/// CR/LF in a value would let it inject header lines; flatten them to SP.
fn push_line_safe(out: &mut String, s: &str) {
    if s.bytes().any(|b| b == b'\r' || b == b'\n') {
        out.extend(
            s.chars()
                .map(|c| if c == '\r' || c == '\n' { ' ' } else { c }),
        );
    } else {
        out.push_str(s);
    }
}

/// Headers (minus any stored Content-Length), the real Content-Length, the
/// blank line, then the body.
fn finish(mut out: String, headers: &Headers, body: &Bytes) -> Vec<u8> {
    for h in headers.iter() {
        if h.name.eq_ignore_ascii_case("Content-Length") || h.name.eq_ignore_ascii_case("l") {
            continue;
        }
        push_line_safe(&mut out, &h.name);
        out.push_str(": ");
        push_line_safe(&mut out, &h.value);
        out.push_str("\r\n");
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn head_capacity(headers: &Headers, body: &Bytes) -> usize {
    64 + body.len()
        + headers
            .iter()
            .map(|h| h.name.len() + h.value.len() + 4)
            .sum::<usize>()
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: Method, uri: Uri) -> Request {
        Request {
            method,
            uri,
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// The wire form; Content-Length is computed, any given one is dropped.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(head_capacity(&self.headers, &self.body));
        let _ = write!(out, "{} {} SIP/2.0\r\n", self.method, self.uri);
        finish(out, &self.headers, &self.body)
    }

    /// RFC 3261 §8.1.1 headers that `parse_message` tolerates missing (RFC 4475
    /// insuf is "parses; app decides"): From, To, Call-ID. Via and CSeq are
    /// already guaranteed by the parser. Err means answer 400.
    pub fn check_mandatory(&self) -> Result<(), ParseError> {
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            if self.headers.get(name).is_none() {
                return Err(ParseError::new(
                    ParseErrorKind::MissingHeader,
                    format!("no {name} header"),
                ));
            }
        }
        Ok(())
    }
}

impl Response {
    /// A response with the standard reason phrase, no headers and no body.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            reason: reason_phrase(status).to_string(),
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// The wire form; Content-Length is computed, any given one is dropped.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(head_capacity(&self.headers, &self.body));
        let _ = write!(out, "SIP/2.0 {} ", self.status);
        push_line_safe(&mut out, &self.reason);
        out.push_str("\r\n");
        finish(out, &self.headers, &self.body)
    }

    /// RFC 3261 §8.2.6: copy Via (all), From, To, Call-ID and CSeq, in the
    /// request's order. The caller adds a To tag where needed.
    pub fn for_request(req: &Request, status: u16) -> Response {
        let mut headers = Headers::new();
        for h in req.headers.iter() {
            if matches!(h.name.as_str(), "Via" | "From" | "To" | "Call-ID" | "CSeq") {
                headers.push_raw(h.name.clone(), h.value.clone());
            }
        }
        Response {
            status,
            reason: reason_phrase(status).to_string(),
            headers,
            body: Bytes::new(),
        }
    }
}

impl SipMessage {
    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            SipMessage::Request(r) => r.to_bytes(),
            SipMessage::Response(r) => r.to_bytes(),
        }
    }

    /// The message's headers.
    pub fn headers(&self) -> &Headers {
        match self {
            SipMessage::Request(r) => &r.headers,
            SipMessage::Response(r) => &r.headers,
        }
    }

    /// The message's headers, to change.
    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            SipMessage::Request(r) => &mut r.headers,
            SipMessage::Response(r) => &mut r.headers,
        }
    }

    /// The message's body.
    pub fn body(&self) -> &Bytes {
        match self {
            SipMessage::Request(r) => &r.body,
            SipMessage::Response(r) => &r.body,
        }
    }
}

/// Standard reason phrase; unknown codes get their class name.
pub fn reason_phrase(status: u16) -> &'static str {
    known_reason(status).unwrap_or(match status {
        100..=199 => "Provisional",
        200..=299 => "Success",
        300..=399 => "Redirection",
        400..=499 => "Client Error",
        500..=599 => "Server Error",
        600..=699 => "Global Failure",
        _ => "Unknown",
    })
}

fn known_reason(status: u16) -> Option<&'static str> {
    Some(match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        199 => "Early Dialog Terminated",
        200 => "OK",
        202 => "Accepted",
        204 => "No Notification",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        412 => "Conditional Request Failed",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        417 => "Unknown Resource-Priority",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        424 => "Bad Location Information",
        428 => "Use Identity Header",
        429 => "Provide Referrer Identity",
        430 => "Flow Failed",
        433 => "Anonymity Disallowed",
        436 => "Bad Identity-Info",
        437 => "Unsupported Certificate",
        438 => "Invalid Identity Header",
        439 => "First Hop Lacks Outbound Support",
        440 => "Max-Breadth Exceeded",
        469 => "Bad Info Package",
        470 => "Consent Needed",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        493 => "Undecipherable",
        494 => "Security Agreement Required",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        555 => "Push Notification Service Not Supported",
        580 => "Precondition Failure",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        607 => "Unwanted",
        608 => "Rejected",
        _ => return None,
    })
}
