//! Stream framing for TCP/TLS/WS (RFC 3261 §18.3, RFC 5626 §3.5.1 keep-alives).

use bytes::{Buf, Bytes, BytesMut};

use super::parse::split_head;
use super::text::{is_ws, parse_u32};
use super::{ParseError, ParseErrorKind};

/// Cuts a byte stream into whole messages. Content-Length is mandatory on
/// streams; after an error the stream cannot be resynchronised and the
/// caller must close it.
pub struct StreamFramer {
    buf: BytesMut,
    max_message: usize,
    /// Header-end search resumes here (keeps byte-by-byte input linear).
    scanned: usize,
    /// Total frame length once the header section has been read.
    frame_len: Option<usize>,
    /// LFs seen in the current run of keep-alive line ends.
    lf_run: u8,
    pings: usize,
    failed: Option<ParseError>,
}

impl StreamFramer {
    /// A framer that fails on any message over `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        StreamFramer {
            buf: BytesMut::new(),
            max_message,
            scanned: 0,
            frame_len: None,
            lf_run: 0,
            pings: 0,
            failed: None,
        }
    }

    /// Append bytes read from the stream (ignored once the framer has failed).
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes held that are not yet part of a returned frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Double-CRLF keep-alive pings seen since the last call; each deserves
    /// a single CRLF pong (RFC 5626 §3.5.1).
    pub fn take_pings(&mut self) -> usize {
        std::mem::take(&mut self.pings)
    }

    /// The next whole message, `None` until one is complete. An error is
    /// final: close the connection.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, ParseError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.try_frame() {
            Ok(f) => Ok(f),
            Err(e) => {
                self.failed = Some(e.clone());
                self.buf = BytesMut::new();
                Err(e)
            }
        }
    }

    fn try_frame(&mut self) -> Result<Option<Bytes>, ParseError> {
        if self.frame_len.is_none() {
            self.skip_keepalives();
            let Some((head_len, body_start)) = self.find_head_end() else {
                if self.buf.len() > self.max_message {
                    return Err(too_large(self.buf.len(), self.max_message));
                }
                return Ok(None);
            };
            let cl = content_length(self.buf.get(..head_len).unwrap_or(&[]))?;
            let total = body_start
                .checked_add(cl)
                .filter(|t| *t <= self.max_message)
                .ok_or_else(|| too_large(body_start.saturating_add(cl), self.max_message))?;
            self.frame_len = Some(total);
        }
        match self.frame_len {
            Some(total) if self.buf.len() >= total => {
                self.frame_len = None;
                self.scanned = 0;
                Ok(Some(self.buf.split_to(total).freeze()))
            }
            _ => Ok(None),
        }
    }

    /// Drop CR/LF before a start line, counting CRLFCRLF pings.
    fn skip_keepalives(&mut self) {
        let n = self
            .buf
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(self.buf.len());
        if n == 0 {
            if !self.buf.is_empty() {
                self.lf_run = 0;
            }
            return;
        }
        for &b in self.buf.iter().take(n) {
            if b == b'\n' {
                self.lf_run += 1;
                if self.lf_run == 2 {
                    self.pings += 1;
                    self.lf_run = 0;
                }
            }
        }
        self.buf.advance(n);
        self.scanned = 0;
        if !self.buf.is_empty() {
            self.lf_run = 0;
        }
    }

    /// (header length incl. last LF, body start) once the blank line is in.
    fn find_head_end(&mut self) -> Option<(usize, usize)> {
        let from = self.scanned;
        let tail = self.buf.get(from..)?;
        let (head, body_start) = split_head(tail);
        if body_start < tail.len() || ends_with_blank_line(tail) {
            return Some((from + head.len(), from + body_start));
        }
        // Re-examine the last two bytes next time: a line end may straddle pushes.
        self.scanned = self.buf.len().saturating_sub(2);
        None
    }
}

/// split_head reports "no blank line" and "blank line at the very end" the
/// same way (body_start == len); tell them apart.
fn ends_with_blank_line(b: &[u8]) -> bool {
    b.ends_with(b"\n\n") || b.ends_with(b"\n\r\n")
}

fn too_large(len: usize, max: usize) -> ParseError {
    ParseError::new(
        ParseErrorKind::TooLarge,
        format!("message of {len} bytes exceeds limit {max}"),
    )
}

/// Content-Length (or `l`) from a raw header section; required, and all
/// copies must agree (conflicting lengths would let a peer smuggle messages).
fn content_length(head: &[u8]) -> Result<usize, ParseError> {
    let bad = |d: &str| ParseError::new(ParseErrorKind::ContentLength, d.to_string());
    let mut found: Option<usize> = None;
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .skip(1) // start line
        .peekable();
    while let Some(line) = lines.next() {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = trim(line.get(..colon).unwrap_or(&[]));
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        if line.first().is_some_and(|&b| is_ws(b)) {
            continue; // a folded line of some other header
        }
        let mut value = trim(line.get(colon + 1..).unwrap_or(&[])).to_vec();
        while let Some(next) = lines.next_if(|l| l.first().is_some_and(|&b| is_ws(b))) {
            value.extend_from_slice(trim(next));
        }
        let n = std::str::from_utf8(&value)
            .ok()
            .and_then(parse_u32)
            .ok_or_else(|| bad("Content-Length is not a number"))?;
        let n = n as usize;
        if found.is_some_and(|f| f != n) {
            return Err(bad("conflicting Content-Length headers"));
        }
        found = Some(n);
    }
    found.ok_or_else(|| bad("Content-Length is required on stream transports"))
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if !is_ws(*first) {
            break;
        }
        b = rest;
    }
    while let [rest @ .., last] = b {
        if !is_ws(*last) {
            break;
        }
        b = rest;
    }
    b
}
