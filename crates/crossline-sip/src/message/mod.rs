//! SIP message model, parser and serialiser (RFC 3261 §7, §20, §25; RFC 4475).
//!
//! Everything here treats input as hostile: no panics, no unbounded
//! recursion, errors carry a short detail for logs and 400 reason phrases.
//!
//! Notes for callers:
//! - `parse_message` consumes Content-Length (it frames the body) and does
//!   not keep it in `headers`; `to_bytes` always writes it from `body.len()`.
//! - `parse_message` guarantees at least one Via and a valid CSeq (matching
//!   the method for requests). Missing From/To/Call-ID still parse (RFC 4475
//!   insuf is "application decides"): check with [`Request::check_mandatory`].
//! - List headers (Via, Contact, Route, ...) arrive split, one entry per
//!   element; auth headers, Date and unknown headers are never split.

mod framing;
mod header;
mod msg;
mod parse;
mod text;
mod uri;

#[cfg(test)]
mod tests;

pub use framing::StreamFramer;
pub use header::{CSeq, Header, Headers, Via};
pub use msg::{reason_phrase, Request, Response, SipMessage};
pub use parse::{bad_request_response, parse_message};
pub use uri::{NameAddr, Params, Uri};

use std::fmt;

/// What part of a message was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// The request or status line.
    StartLine,
    /// Not SIP/2.0.
    Version,
    /// A header's syntax or value.
    Header,
    /// A URI (Request-URI or in a header).
    Uri,
    /// A header the message must carry is absent.
    MissingHeader,
    /// Content-Length is malformed or disagrees with the bytes.
    ContentLength,
    /// The body.
    Body,
    /// Over the size limit.
    TooLarge,
    /// Not UTF-8 where text is required.
    Encoding,
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseErrorKind::StartLine => "bad start line",
            ParseErrorKind::Version => "unsupported SIP version",
            ParseErrorKind::Header => "bad header",
            ParseErrorKind::Uri => "bad URI",
            ParseErrorKind::MissingHeader => "missing header",
            ParseErrorKind::ContentLength => "bad Content-Length",
            ParseErrorKind::Body => "bad body",
            ParseErrorKind::TooLarge => "message too large",
            ParseErrorKind::Encoding => "bad encoding",
        })
    }
}

/// Why bytes are not an acceptable SIP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct ParseError {
    /// What part was wrong.
    pub kind: ParseErrorKind,
    /// Specifics for logs, often with a snippet of the input.
    pub detail: String,
}

impl ParseError {
    /// An error of `kind`.
    pub fn new(kind: ParseErrorKind, detail: impl Into<String>) -> Self {
        ParseError {
            kind,
            detail: detail.into(),
        }
    }
}

/// SIP request method. Matching is case-sensitive (RFC 3261 §7.1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE: start or change a session.
    Invite,
    /// ACK: confirm a final response to an INVITE.
    Ack,
    /// BYE: end a session.
    Bye,
    /// CANCEL: stop a pending request.
    Cancel,
    /// OPTIONS: ask for capabilities; also a liveness probe.
    Options,
    /// REGISTER: bind an address of record to a contact.
    Register,
    /// INFO: mid-session information such as DTMF (RFC 6086).
    Info,
    /// REFER: ask the peer to call elsewhere, a transfer (RFC 3515).
    Refer,
    /// NOTIFY: an event report, e.g. a transfer's progress (RFC 6665).
    Notify,
    /// SUBSCRIBE: ask for event reports (RFC 6665).
    Subscribe,
    /// UPDATE: change a session before it is answered (RFC 3311).
    Update,
    /// PRACK: acknowledge a reliable provisional response (RFC 3262).
    Prack,
    /// MESSAGE: an instant message (RFC 3428).
    Message,
    /// PUBLISH: publish event state (RFC 3903).
    Publish,
    /// Any other token, kept as received.
    Extension(String),
}

impl Method {
    /// The method's token as sent on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Extension(s) => s,
        }
    }

    /// Case-sensitive: `invite` is an extension method, not INVITE.
    pub fn from_token(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Extension(other.to_string()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
