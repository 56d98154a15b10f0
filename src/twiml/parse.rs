//! TwiML documents in, verbs out. A real XML parser (quick-xml) reads
//! them, bounded: no DOCTYPE (so no entity declarations and no entity
//! expansion), only the five predefined entities and character
//! references, nesting at most [`MAX_DEPTH`] deep, at most [`MAX_VERBS`]
//! verbs. An unknown verb or attribute is an error naming its line, as
//! Twilio's own parser treats it.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::Method;

/// `<Response>` › `<Gather>` › `<Say>` is three; one spare.
pub const MAX_DEPTH: usize = 4;
/// Verbs in one document, nested ones included.
pub const MAX_VERBS: usize = 1_000;
/// How often a `loop="0"` (forever) `<Say>` or `<Play>` repeats.
pub const ENDLESS_LOOPS: u32 = 1_000;

/// Why a document can't run, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwimlError {
    /// 1-based; `None` when the problem is the document as a whole.
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for TwimlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn at(line: usize, message: impl Into<String>) -> TwimlError {
    TwimlError {
        line: Some(line),
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verb {
    pub line: usize,
    pub kind: VerbKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum VerbKind {
    Say(Say),
    Play(Play),
    /// Seconds of silence.
    Pause(f64),
    Gather(Gather),
    Dial(Dial),
    Hangup,
    /// The SIP status to refuse the call with (486 busy, 603 rejected).
    Reject(u16),
    Redirect {
        url: String,
        method: Method,
    },
    Refer {
        target: String,
        action: Option<String>,
        method: Method,
    },
    /// `<Connect><Stream>`: the call talks with a voice agent until it
    /// closes the socket.
    Connect(Connect),
    /// `<Start><Stream>`: a one-way copy while the document goes on.
    Start(Stream),
    /// `<Stop><Stream name>`: end the named fork (unnamed: every fork).
    Stop {
        name: Option<String>,
    },
    /// Wait in a queue until another call dequeues the caller.
    Enqueue(Enqueue),
    /// In a waitUrl document: out of the queue, on after `<Enqueue>`.
    Leave,
}

impl VerbKind {
    /// Whether the verb needs the call answered (it has audio).
    pub fn needs_media(&self) -> bool {
        !matches!(
            self,
            VerbKind::Pause(_)
                | VerbKind::Reject(_)
                | VerbKind::Redirect { .. }
                | VerbKind::Refer { .. }
                | VerbKind::Stop { .. }
                | VerbKind::Leave
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Enqueue {
    /// The queue (a `[[queues]]` name, or made on first use).
    pub name: String,
    pub action: Option<String>,
    pub method: Method,
    /// Run (and asked again) while the caller waits; unset: the queue's
    /// own music and announcements.
    pub wait_url: Option<String>,
    pub wait_method: Method,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Say {
    pub text: String,
    /// Twilio's voice name; ours is chosen by language.
    pub voice: Option<String>,
    pub language: String,
    pub loops: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Play {
    /// Empty when only `digits` are played.
    pub url: String,
    pub loops: u32,
    pub digits: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gather {
    pub num_digits: Option<u32>,
    pub timeout_secs: f64,
    /// `None`: no key ends the input (finishOnKey="").
    pub finish_on_key: Option<char>,
    /// Unset: the document's own URL.
    pub action: Option<String>,
    pub method: Method,
    pub action_on_empty_result: bool,
    /// Nested `<Say>`, `<Play>` and `<Pause>`, played until a key.
    pub prompts: Vec<Verb>,
    /// `input` has `dtmf` / `speech`.
    pub dtmf: bool,
    pub speech: bool,
    /// The recognizer's language (`en-US`).
    pub language: String,
    /// `hints`: phrases the recognizer should expect.
    pub hints: Vec<String>,
    /// Silence that ends speech; `auto` is [`AUTO_SPEECH_TIMEOUT_SECS`].
    pub speech_timeout_secs: f64,
    /// Speech or a key stops the prompts.
    pub barge_in: bool,
}

/// `speechTimeout="auto"`: the end-of-speech silence the endpointer
/// waits for.
pub const AUTO_SPEECH_TIMEOUT_SECS: f64 = 1.0;

/// `<Connect>` and the `<Stream>` it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Connect {
    pub stream: Stream,
    /// Asked when the stream ends; unset: the next verb runs.
    pub action: Option<String>,
    pub method: Method,
}

/// A `<Stream>` noun.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    /// `ws://` or `wss://`.
    pub url: String,
    pub name: Option<String>,
    pub track: crate::media_stream::protocol::Tracks,
    /// `<Parameter name value>`: the start message's `customParameters`.
    pub parameters: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dial {
    pub targets: Vec<DialTarget>,
    pub caller_id: Option<String>,
    pub timeout_secs: u32,
    pub time_limit_secs: Option<u32>,
    pub action: Option<String>,
    pub method: Method,
    pub hangup_on_star: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DialTarget {
    /// A phone number, dialled through the outbound trunk.
    Number {
        number: String,
        send_digits: Option<String>,
    },
    /// A SIP URI.
    Sip(String),
    /// The caller at the head of a queue; `url` runs on that caller's
    /// side before the two are bridged.
    Queue {
        name: String,
        url: Option<String>,
        method: Method,
    },
}

/// A parsed XML element: the generic tree the verbs are read from.
struct Element {
    name: String,
    line: usize,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Element>,
}

impl Element {
    /// Its attributes, refusing any not in `known`.
    fn attrs(&self, known: &[&str]) -> Result<Attrs<'_>, TwimlError> {
        if let Some((name, _)) = self
            .attrs
            .iter()
            .find(|(n, _)| !known.contains(&n.as_str()))
        {
            return Err(at(
                self.line,
                format!("<{}> has no attribute {name:?}", self.name),
            ));
        }
        Ok(Attrs(self))
    }

    fn no_children(&self) -> Result<(), TwimlError> {
        match self.children.first() {
            Some(c) => Err(at(
                c.line,
                format!("<{}> can't hold <{}>", self.name, c.name),
            )),
            None => Ok(()),
        }
    }
}

struct Attrs<'a>(&'a Element);

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn error(&self, name: &str, what: &str) -> TwimlError {
        at(
            self.0.line,
            format!(
                "<{}> {name}={:?}: {what}",
                self.0.name,
                self.get(name).unwrap_or_default()
            ),
        )
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, TwimlError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| self.error(name, "not a number")),
        }
    }

    fn method(&self) -> Result<Method, TwimlError> {
        match self.get("method") {
            None => Ok(Method::Post),
            Some(m) => Method::parse(m).ok_or_else(|| self.error("method", "use GET or POST")),
        }
    }

    fn flag(&self, name: &str) -> Result<bool, TwimlError> {
        match self.get(name).map(str::trim) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(self.error(name, "use true or false")),
        }
    }

    fn url(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
    }

    /// `loop`: 0 is "forever" (bounded by [`ENDLESS_LOOPS`]).
    fn loops(&self) -> Result<u32, TwimlError> {
        let n: u32 = self.number("loop", 1)?;
        Ok(if n == 0 {
            ENDLESS_LOOPS
        } else {
            n.min(ENDLESS_LOOPS)
        })
    }
}

/// Parse a TwiML document.
pub fn parse(text: &str) -> Result<Vec<Verb>, TwimlError> {
    let root = tree(text)?;
    if root.name != "Response" {
        return Err(at(
            root.line,
            format!("the root element is <{}>, not <Response>", root.name),
        ));
    }
    root.attrs(&[])?;
    if !root.text.trim().is_empty() {
        return Err(at(root.line, "<Response> holds text outside any verb"));
    }
    root.children.iter().map(verb).collect()
}

fn verb(e: &Element) -> Result<Verb, TwimlError> {
    let kind = match e.name.as_str() {
        "Say" => VerbKind::Say(say(e)?),
        "Play" => VerbKind::Play(play(e)?),
        "Pause" => VerbKind::Pause(pause(e)?),
        "Gather" => VerbKind::Gather(gather(e)?),
        "Dial" => VerbKind::Dial(dial(e)?),
        "Hangup" => {
            e.attrs(&[])?;
            e.no_children()?;
            VerbKind::Hangup
        }
        "Reject" => {
            let a = e.attrs(&["reason"])?;
            e.no_children()?;
            VerbKind::Reject(match a.get("reason").map(str::trim) {
                None | Some("rejected") => 603,
                Some("busy") => 486,
                Some(_) => return Err(a.error("reason", "use rejected or busy")),
            })
        }
        "Redirect" => {
            let a = e.attrs(&["method"])?;
            e.no_children()?;
            let url = e.text.trim();
            if url.is_empty() {
                return Err(at(e.line, "<Redirect> needs a URL"));
            }
            VerbKind::Redirect {
                url: url.to_string(),
                method: a.method()?,
            }
        }
        "Refer" => {
            let a = e.attrs(&["action", "method"])?;
            let target = match e.children.as_slice() {
                [sip] if sip.name == "Sip" => {
                    sip.attrs(&[])?;
                    sip.no_children()?;
                    sip.text.trim().to_string()
                }
                _ => return Err(at(e.line, "<Refer> holds exactly one <Sip>")),
            };
            VerbKind::Refer {
                target,
                action: a.url("action"),
                method: a.method()?,
            }
        }
        "Connect" => {
            let a = e.attrs(&["action", "method"])?;
            let stream = match e.children.as_slice() {
                [s] if s.name == "Stream" => stream(s, true)?,
                [other] => {
                    return Err(at(
                        other.line,
                        format!("<Connect><{}> is not supported yet", other.name),
                    ))
                }
                _ => return Err(at(e.line, "<Connect> holds exactly one <Stream>")),
            };
            VerbKind::Connect(Connect {
                stream,
                action: a.url("action"),
                method: a.method()?,
            })
        }
        "Start" => {
            e.attrs(&["action", "method"])?;
            match e.children.as_slice() {
                [s] if s.name == "Stream" => VerbKind::Start(stream(s, false)?),
                _ => return Err(at(e.line, "<Start> holds exactly one <Stream>")),
            }
        }
        "Stop" => {
            e.attrs(&[])?;
            match e.children.as_slice() {
                [s] if s.name == "Stream" => {
                    let a = s.attrs(&["name"])?;
                    s.no_children()?;
                    VerbKind::Stop {
                        name: a.get("name").map(|n| n.trim().to_string()),
                    }
                }
                _ => return Err(at(e.line, "<Stop> holds exactly one <Stream>")),
            }
        }
        "Enqueue" => VerbKind::Enqueue(enqueue(e)?),
        "Leave" => {
            e.attrs(&[])?;
            e.no_children()?;
            VerbKind::Leave
        }
        "Record" | "Sms" | "Message" | "Pay" | "Prompt" => {
            return Err(at(e.line, format!("<{}> is not supported yet", e.name)));
        }
        other => return Err(at(e.line, format!("unknown verb <{other}>"))),
    };
    Ok(Verb { line: e.line, kind })
}

fn enqueue(e: &Element) -> Result<Enqueue, TwimlError> {
    let a = e.attrs(&[
        "action",
        "method",
        "waitUrl",
        "waitUrlMethod",
        "workflowSid",
    ])?;
    if a.get("workflowSid").is_some() {
        return Err(a.error("workflowSid", "TaskRouter is not supported"));
    }
    if let Some(c) = e.children.first() {
        return Err(at(
            c.line,
            format!("<Enqueue><{}> is not supported", c.name),
        ));
    }
    let wait_method = match a.get("waitUrlMethod") {
        None => Method::Post,
        Some(m) => Method::parse(m).ok_or_else(|| a.error("waitUrlMethod", "use GET or POST"))?,
    };
    Ok(Enqueue {
        name: queue_name(e)?,
        action: a.url("action"),
        method: a.method()?,
        wait_url: a.url("waitUrl"),
        wait_method,
    })
}

/// A queue's name: 1 to 64 characters, none of them control characters.
fn queue_name(e: &Element) -> Result<String, TwimlError> {
    let name = e.text.trim();
    if !(1..=64).contains(&name.chars().count()) || name.chars().any(char::is_control) {
        return Err(at(
            e.line,
            format!("<{}> needs a queue name of 1 to 64 characters", e.name),
        ));
    }
    Ok(name.to_string())
}

fn say(e: &Element) -> Result<Say, TwimlError> {
    let a = e.attrs(&["voice", "language", "loop"])?;
    // SSML children (<break>, <emphasis>…) aren't read yet.
    e.no_children()?;
    let text = e.text.trim();
    if text.is_empty() {
        return Err(at(e.line, "<Say> has no text"));
    }
    Ok(Say {
        text: text.to_string(),
        voice: a.get("voice").map(str::to_string),
        language: a.get("language").unwrap_or("en-US").trim().to_string(),
        loops: a.loops()?,
    })
}

fn play(e: &Element) -> Result<Play, TwimlError> {
    let a = e.attrs(&["loop", "digits"])?;
    e.no_children()?;
    let digits = a.get("digits").map(|d| d.trim().to_string());
    if let Some(d) = &digits {
        if d.is_empty() || !d.chars().all(|c| "0123456789*#wW".contains(c)) {
            return Err(a.error("digits", "only 0-9, *, # and w (a half-second pause)"));
        }
    }
    let url = e.text.trim().to_string();
    if url.is_empty() && digits.is_none() {
        return Err(at(e.line, "<Play> needs a URL or digits"));
    }
    Ok(Play {
        url,
        loops: a.loops()?,
        digits,
    })
}

fn pause(e: &Element) -> Result<f64, TwimlError> {
    let a = e.attrs(&["length"])?;
    e.no_children()?;
    let secs: f64 = a.number("length", 1.0)?;
    if !(0.0..=3600.0).contains(&secs) {
        return Err(a.error("length", "must be 0..=3600 seconds"));
    }
    Ok(secs)
}

fn gather(e: &Element) -> Result<Gather, TwimlError> {
    let a = e.attrs(&[
        "action",
        "method",
        "numDigits",
        "timeout",
        "finishOnKey",
        "input",
        "hints",
        "language",
        "speechTimeout",
        "actionOnEmptyResult",
        "bargeIn",
        "profanityFilter",
        "speechModel",
        "enhanced",
    ])?;
    let num_digits = match a.get("numDigits") {
        None => None,
        Some(_) => Some(a.number("numDigits", 1u32)?).filter(|n| (1..=64).contains(n)),
    };
    if a.get("numDigits").is_some() && num_digits.is_none() {
        return Err(a.error("numDigits", "must be 1..=64"));
    }
    let timeout_secs: f64 = a.number("timeout", 5.0)?;
    if !(1.0..=600.0).contains(&timeout_secs) {
        return Err(a.error("timeout", "must be 1..=600 seconds"));
    }
    let finish_on_key = match a.get("finishOnKey").map(str::trim) {
        None => Some('#'),
        Some("") => None,
        Some(k) => {
            let mut chars = k.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if "0123456789*#".contains(c) => Some(c),
                _ => return Err(a.error("finishOnKey", "one of 0-9, * or #")),
            }
        }
    };
    let input: Vec<&str> = a
        .get("input")
        .unwrap_or("dtmf")
        .split_whitespace()
        .collect();
    let (dtmf, speech) = (input.contains(&"dtmf"), input.contains(&"speech"));
    if input.is_empty() || input.iter().any(|i| *i != "dtmf" && *i != "speech") {
        return Err(a.error("input", "use dtmf, speech or \"dtmf speech\""));
    }
    let speech_timeout_secs = match a.get("speechTimeout").map(str::trim) {
        None => timeout_secs,
        Some("auto") => AUTO_SPEECH_TIMEOUT_SECS,
        Some(_) => {
            let secs: f64 = a.number("speechTimeout", 1.0)?;
            if !(0.3..=60.0).contains(&secs) {
                return Err(a.error("speechTimeout", "auto, or 0.3..=60 seconds"));
            }
            secs
        }
    };
    let barge_in = match a.get("bargeIn") {
        None => true,
        Some(_) => a.flag("bargeIn")?,
    };
    let hints = a
        .get("hints")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .take(500)
        .map(str::to_string)
        .collect();
    let mut prompts = Vec::new();
    for c in &e.children {
        match c.name.as_str() {
            "Say" | "Play" | "Pause" => prompts.push(verb(c)?),
            other => return Err(at(c.line, format!("<Gather> can't hold <{other}>"))),
        }
    }
    Ok(Gather {
        num_digits,
        timeout_secs,
        finish_on_key,
        action: a.url("action"),
        method: a.method()?,
        action_on_empty_result: a.flag("actionOnEmptyResult")?,
        prompts,
        dtmf,
        speech,
        language: a.get("language").unwrap_or("en-US").trim().to_string(),
        hints,
        speech_timeout_secs,
        barge_in,
    })
}

/// A `<Stream>` noun; `connect`: bidirectional, so the caller's track only.
fn stream(e: &Element, connect: bool) -> Result<Stream, TwimlError> {
    use crate::media_stream::protocol::Tracks;
    let a = e.attrs(&[
        "url",
        "name",
        "track",
        "statusCallback",
        "statusCallbackMethod",
    ])?;
    if a.get("statusCallback").is_some() {
        return Err(a.error(
            "statusCallback",
            "stream status callbacks are not supported yet",
        ));
    }
    let url = a
        .url("url")
        .ok_or_else(|| at(e.line, "<Stream> needs a url"))?;
    if !(url.starts_with("wss://") || url.starts_with("ws://")) {
        return Err(a.error("url", "a stream's url is ws:// or wss://"));
    }
    let track = match a.get("track").map(str::trim) {
        None | Some("inbound_track") => Tracks::InboundTrack,
        Some("outbound_track") if !connect => Tracks::OutboundTrack,
        Some("both_tracks") if !connect => Tracks::BothTracks,
        Some(_) if connect => {
            return Err(a.error("track", "<Connect><Stream> carries inbound_track only"))
        }
        Some(_) => return Err(a.error("track", "inbound_track, outbound_track or both_tracks")),
    };
    let mut parameters = std::collections::BTreeMap::new();
    for p in &e.children {
        if p.name != "Parameter" {
            return Err(at(p.line, format!("<Stream> can't hold <{}>", p.name)));
        }
        let pa = p.attrs(&["name", "value"])?;
        p.no_children()?;
        let name = pa
            .get("name")
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| at(p.line, "<Parameter> needs a name"))?;
        parameters.insert(
            name.to_string(),
            pa.get("value").unwrap_or_default().to_string(),
        );
    }
    Ok(Stream {
        url,
        name: a.get("name").map(|n| n.trim().to_string()),
        track,
        parameters,
    })
}

fn dial(e: &Element) -> Result<Dial, TwimlError> {
    let a = e.attrs(&[
        "action",
        "method",
        "timeout",
        "hangupOnStar",
        "timeLimit",
        "callerId",
        "answerOnBridge",
        "ringTone",
    ])?;
    let mut targets = Vec::new();
    let bare = e.text.trim();
    if !bare.is_empty() {
        targets.push(DialTarget::Number {
            number: bare.to_string(),
            send_digits: None,
        });
    }
    for c in &e.children {
        match c.name.as_str() {
            "Number" => {
                let na = c.attrs(&["sendDigits"])?;
                c.no_children()?;
                targets.push(DialTarget::Number {
                    number: c.text.trim().to_string(),
                    send_digits: na.get("sendDigits").map(str::to_string),
                });
            }
            "Sip" => {
                c.attrs(&[])?;
                c.no_children()?;
                targets.push(DialTarget::Sip(c.text.trim().to_string()));
            }
            "Queue" => {
                let qa = c.attrs(&["url", "method", "reservationSid", "postWorkActivitySid"])?;
                c.no_children()?;
                if qa.get("reservationSid").is_some() || qa.get("postWorkActivitySid").is_some() {
                    return Err(at(c.line, "<Queue>: TaskRouter is not supported"));
                }
                targets.push(DialTarget::Queue {
                    name: queue_name(c)?,
                    url: qa.url("url"),
                    method: qa.method()?,
                });
            }
            "Client" | "Conference" | "Sim" | "Application" | "WhatsApp" => {
                return Err(at(
                    c.line,
                    format!("<Dial><{}> is not supported yet", c.name),
                ));
            }
            other => return Err(at(c.line, format!("<Dial> can't hold <{other}>"))),
        }
    }
    if targets.is_empty() {
        return Err(at(e.line, "<Dial> has nothing to dial"));
    }
    let queues = targets
        .iter()
        .filter(|t| matches!(t, DialTarget::Queue { .. }))
        .count();
    if queues > 0 && targets.len() > 1 {
        return Err(at(e.line, "<Dial> with a <Queue> dials nothing else"));
    }
    let timeout_secs: u32 = a.number("timeout", 30)?;
    if !(5..=600).contains(&timeout_secs) {
        return Err(a.error("timeout", "must be 5..=600 seconds"));
    }
    let time_limit_secs = match a.get("timeLimit") {
        None => None,
        Some(_) => Some(a.number("timeLimit", 14_400u32)?),
    };
    Ok(Dial {
        targets,
        caller_id: a.get("callerId").map(|c| c.trim().to_string()),
        timeout_secs,
        time_limit_secs,
        action: a.url("action"),
        method: a.method()?,
        hangup_on_star: a.flag("hangupOnStar")?,
    })
}

/// The document as a tree of elements, with line numbers.
fn tree(text: &str) -> Result<Element, TwimlError> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut lines = LineCounter::default();
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut verbs = 0usize;
    loop {
        let line = lines.line_at(text, reader.buffer_position());
        let event = reader.read_event().map_err(|e| {
            let pos = usize::try_from(reader.error_position()).unwrap_or(usize::MAX);
            at(
                lines.line_at(text, pos as u64),
                format!("malformed XML: {e}"),
            )
        })?;
        match event {
            Event::Start(start) | Event::Empty(start) if root.is_some() => {
                let _ = start;
                return Err(at(line, "content after the root element"));
            }
            Event::Start(start) => {
                verbs += 1;
                if stack.len() >= MAX_DEPTH || verbs > MAX_VERBS {
                    return Err(at(line, "nested too deep or too many elements"));
                }
                stack.push(element(&start, line)?);
            }
            Event::Empty(start) => {
                verbs += 1;
                if stack.len() >= MAX_DEPTH || verbs > MAX_VERBS {
                    return Err(at(line, "nested too deep or too many elements"));
                }
                let e = element(&start, line)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(e),
                    None => root = Some(e),
                }
            }
            Event::End(_) => {
                let Some(e) = stack.pop() else {
                    return Err(at(line, "an end tag with no start"));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(e),
                    None => root = Some(e),
                }
            }
            Event::Text(t) => {
                let s = t
                    .xml10_content()
                    .map_err(|e| at(line, format!("bad text: {e}")))?;
                push_text(&mut stack, &s, line)?;
            }
            Event::CData(t) => {
                let s = t
                    .decode()
                    .map_err(|e| at(line, format!("bad CDATA: {e}")))?;
                push_text(&mut stack, &s, line)?;
            }
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let name = r.decode().map_err(|e| at(line, e.to_string()))?;
                        match quick_xml::escape::resolve_predefined_entity(&name) {
                            Some(s) => s.to_string(),
                            None => {
                                return Err(at(line, format!("undefined entity &{name};")));
                            }
                        }
                    }
                    Err(e) => return Err(at(line, format!("bad character reference: {e}"))),
                };
                push_text(&mut stack, &c, line)?;
            }
            Event::DocType(_) => {
                return Err(at(
                    line,
                    "a DOCTYPE is not allowed (entity declarations are refused)",
                ));
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(at(open.line, format!("<{}> is never closed", open.name)));
    }
    root.ok_or(TwimlError {
        line: None,
        message: "empty document: no <Response>".into(),
    })
}

fn push_text(stack: &mut [Element], s: &str, line: usize) -> Result<(), TwimlError> {
    match stack.last_mut() {
        Some(e) => {
            e.text.push_str(s);
            Ok(())
        }
        None if s.trim().is_empty() => Ok(()),
        None => Err(at(line, "text outside <Response>")),
    }
}

fn element(start: &BytesStart<'_>, line: usize) -> Result<Element, TwimlError> {
    let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| at(line, format!("<{name}>: malformed attribute: {e}")))?;
        let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| at(line, format!("<{name}> {key}: {e}")))?;
        attrs.push((key, value.into_owned()));
    }
    Ok(Element {
        name,
        line,
        attrs,
        text: String::new(),
        children: Vec::new(),
    })
}

/// Byte offsets to 1-based lines, counting forward only (linear in the
/// document however many elements it has).
#[derive(Default)]
struct LineCounter {
    pos: usize,
    line: usize,
}

impl LineCounter {
    fn line_at(&mut self, text: &str, pos: u64) -> usize {
        let pos = usize::try_from(pos).unwrap_or(usize::MAX).min(text.len());
        if pos > self.pos {
            self.line += text.as_bytes()[self.pos..pos]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            self.pos = pos;
        }
        self.line + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<VerbKind> {
        parse(text)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|v| v.kind)
            .collect()
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(v) => panic!("parsed: {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn reads_every_verb_with_defaults() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Say voice="alice" language="es-ES" loop="2">Hola &amp; adiós</Say>
  <Play loop="0">https://example.com/a.wav</Play>
  <Pause length="2"/>
  <Gather numDigits="1" action="/menu" method="GET" input="dtmf speech" hints="yes">
    <Say>Press one</Say>
  </Gather>
  <Dial callerId="+15550100" timeout="10" action="/dialed" hangupOnStar="true">
    <Number sendDigits="ww12">+15551234567</Number>
    <Sip>sip:agent@example.com</Sip>
  </Dial>
  <Reject reason="busy"/>
  <Redirect>https://example.com/next</Redirect>
  <Refer><Sip>sip:elsewhere@example.com</Sip></Refer>
  <Hangup/>
</Response>"#;
        let verbs = parse(doc).unwrap();
        assert_eq!(verbs[0].line, 3);
        assert_eq!(
            verbs[0].kind,
            VerbKind::Say(Say {
                text: "Hola & adiós".into(),
                voice: Some("alice".into()),
                language: "es-ES".into(),
                loops: 2,
            })
        );
        assert_eq!(
            verbs[1].kind,
            VerbKind::Play(Play {
                url: "https://example.com/a.wav".into(),
                loops: ENDLESS_LOOPS,
                digits: None,
            })
        );
        assert_eq!(verbs[2].kind, VerbKind::Pause(2.0));
        let VerbKind::Gather(g) = &verbs[3].kind else {
            panic!("{:?}", verbs[3]);
        };
        assert_eq!(
            (g.num_digits, g.timeout_secs, g.finish_on_key, g.method),
            (Some(1), 5.0, Some('#'), Method::Get)
        );
        assert_eq!(g.action.as_deref(), Some("/menu"));
        assert_eq!(g.prompts.len(), 1);
        assert_eq!(g.prompts[0].line, 7);
        let VerbKind::Dial(d) = &verbs[4].kind else {
            panic!("{:?}", verbs[4]);
        };
        assert_eq!(d.timeout_secs, 10);
        assert!(d.hangup_on_star);
        assert_eq!(
            d.targets,
            vec![
                DialTarget::Number {
                    number: "+15551234567".into(),
                    send_digits: Some("ww12".into())
                },
                DialTarget::Sip("sip:agent@example.com".into()),
            ]
        );
        assert_eq!(verbs[5].kind, VerbKind::Reject(486));
        assert_eq!(
            verbs[6].kind,
            VerbKind::Redirect {
                url: "https://example.com/next".into(),
                method: Method::Post
            }
        );
        assert!(
            matches!(&verbs[7].kind, VerbKind::Refer { target, .. } if target == "sip:elsewhere@example.com")
        );
        assert_eq!(verbs[8].kind, VerbKind::Hangup);
        assert_eq!(
            kinds("<Response><Reject/></Response>"),
            vec![VerbKind::Reject(603)]
        );
        assert_eq!(kinds("<Response/>"), vec![]);
    }

    #[test]
    fn unknown_verbs_and_attributes_name_their_line() {
        assert_eq!(
            error("<Response>\n  <Say>hi</Say>\n  <Shout>hi</Shout>\n</Response>"),
            "line 3: unknown verb <Shout>"
        );
        assert_eq!(
            error("<Response>\n<Say colour=\"red\">hi</Say></Response>"),
            "line 2: <Say> has no attribute \"colour\""
        );
        assert_eq!(
            error("<Response><Gather><Dial>1</Dial></Gather></Response>"),
            "line 1: <Gather> can't hold <Dial>"
        );
        assert_eq!(
            error("<Response><Record/></Response>"),
            "line 1: <Record> is not supported yet"
        );
        assert_eq!(
            error("<Response><Reject reason=\"later\"/></Response>"),
            "line 1: <Reject> reason=\"later\": use rejected or busy"
        );
        assert_eq!(
            error("<Say>hi</Say>"),
            "line 1: the root element is <Say>, not <Response>"
        );
    }

    #[test]
    fn streams_and_speech_gathers_read_as_twilio_writes_them() {
        use crate::media_stream::protocol::Tracks;
        let doc = r#"<Response>
  <Start><Stream name="fork" url="wss://a.example/fork" track="both_tracks"/></Start>
  <Gather input="dtmf speech" language="es-ES" hints="agente, SMS" speechTimeout="auto" bargeIn="false" action="/heard">
    <Say>Diga algo</Say>
  </Gather>
  <Gather input="speech" timeout="3"/>
  <Stop><Stream name="fork"/></Stop>
  <Connect action="/after"><Stream url="ws://127.0.0.1:9/media"><Parameter name="lang" value="es"/><Parameter name="who" value="bot"/></Stream></Connect>
</Response>"#;
        let verbs = kinds(doc);
        let VerbKind::Start(fork) = &verbs[0] else {
            panic!("{:?}", verbs[0]);
        };
        assert_eq!(fork.name.as_deref(), Some("fork"));
        assert_eq!(fork.track, Tracks::BothTracks);
        let VerbKind::Gather(g) = &verbs[1] else {
            panic!("{:?}", verbs[1]);
        };
        assert!(g.dtmf && g.speech && !g.barge_in);
        assert_eq!(g.language, "es-ES");
        assert_eq!(g.hints, vec!["agente".to_string(), "SMS".into()]);
        assert_eq!(g.speech_timeout_secs, AUTO_SPEECH_TIMEOUT_SECS);
        let VerbKind::Gather(g) = &verbs[2] else {
            panic!("{:?}", verbs[2]);
        };
        assert!(!g.dtmf && g.speech && g.barge_in);
        assert_eq!(g.speech_timeout_secs, 3.0, "unset: the timeout, as Twilio");
        assert_eq!(
            verbs[3],
            VerbKind::Stop {
                name: Some("fork".into())
            }
        );
        let VerbKind::Connect(c) = &verbs[4] else {
            panic!("{:?}", verbs[4]);
        };
        assert_eq!(c.action.as_deref(), Some("/after"));
        assert_eq!(c.stream.track, Tracks::InboundTrack);
        assert_eq!(
            c.stream.parameters.get("lang").map(String::as_str),
            Some("es")
        );
        assert_eq!(c.stream.parameters.len(), 2);
        assert!(VerbKind::Connect(c.clone()).needs_media());
        assert!(!verbs[3].needs_media());
    }

    #[test]
    fn bad_streams_and_inputs_name_their_line() {
        assert_eq!(
            error("<Response><Connect><Stream url=\"http://x/\"/></Connect></Response>"),
            "line 1: <Stream> url=\"http://x/\": a stream's url is ws:// or wss://"
        );
        assert_eq!(
            error("<Response><Connect><Stream url=\"wss://x/\" track=\"both_tracks\"/></Connect></Response>"),
            "line 1: <Stream> track=\"both_tracks\": <Connect><Stream> carries inbound_track only"
        );
        assert_eq!(
            error("<Response><Connect><Room>r</Room></Connect></Response>"),
            "line 1: <Connect><Room> is not supported yet"
        );
        assert_eq!(
            error("<Response><Start/></Response>"),
            "line 1: <Start> holds exactly one <Stream>"
        );
        assert_eq!(
            error("<Response><Gather input=\"voice\"/></Response>"),
            "line 1: <Gather> input=\"voice\": use dtmf, speech or \"dtmf speech\""
        );
        assert_eq!(
            error("<Response><Gather input=\"speech\" speechTimeout=\"soon\"/></Response>"),
            "line 1: <Gather> speechTimeout=\"soon\": not a number"
        );
        assert_eq!(
            error("<Response><Connect><Stream url=\"wss://x/\"><Parameter value=\"v\"/></Stream></Connect></Response>"),
            "line 1: <Parameter> needs a name"
        );
    }

    #[test]
    fn queues_read_as_twilio_writes_them() {
        let doc = r#"<Response>
  <Enqueue action="/left" method="GET" waitUrl="/wait" waitUrlMethod="GET">support</Enqueue>
  <Enqueue>made on the fly</Enqueue>
  <Leave/>
  <Dial action="/after" timeout="10"><Queue url="/about-to-connect">support</Queue></Dial>
</Response>"#;
        let verbs = kinds(doc);
        assert_eq!(
            verbs[0],
            VerbKind::Enqueue(Enqueue {
                name: "support".into(),
                action: Some("/left".into()),
                method: Method::Get,
                wait_url: Some("/wait".into()),
                wait_method: Method::Get,
            })
        );
        let VerbKind::Enqueue(made) = &verbs[1] else {
            panic!("{:?}", verbs[1]);
        };
        assert_eq!(
            (made.wait_url.as_deref(), made.method),
            (None, Method::Post)
        );
        assert_eq!(verbs[2], VerbKind::Leave);
        assert!(!verbs[2].needs_media() && verbs[0].needs_media());
        let VerbKind::Dial(d) = &verbs[3] else {
            panic!("{:?}", verbs[3]);
        };
        assert_eq!(
            d.targets,
            vec![DialTarget::Queue {
                name: "support".into(),
                url: Some("/about-to-connect".into()),
                method: Method::Post,
            }]
        );
        assert_eq!(
            error("<Response><Enqueue>  </Enqueue></Response>"),
            "line 1: <Enqueue> needs a queue name of 1 to 64 characters"
        );
        assert!(error(&format!(
            "<Response><Enqueue>{}</Enqueue></Response>",
            "q".repeat(65)
        ))
        .contains("1 to 64"));
        assert_eq!(
            error("<Response><Enqueue workflowSid=\"WW1\">q</Enqueue></Response>"),
            "line 1: <Enqueue> workflowSid=\"WW1\": TaskRouter is not supported"
        );
        assert_eq!(
            error("<Response><Dial><Queue>q</Queue><Sip>sip:a@example.com</Sip></Dial></Response>"),
            "line 1: <Dial> with a <Queue> dials nothing else"
        );
    }

    #[test]
    fn malformed_xml_is_an_error_with_its_line() {
        let e = error("<Response>\n<Say>hi</Sey>\n</Response>");
        assert!(e.starts_with("line 2: malformed XML"), "{e}");
        let e = error("<Response>\n<Say>hi");
        assert!(e.contains("never closed") || e.contains("malformed"), "{e}");
        assert_eq!(error(""), "empty document: no <Response>");
        assert!(error("not xml at all").contains("text outside <Response>"));
    }

    #[test]
    fn entity_bombs_and_deep_nesting_are_refused() {
        let bomb = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<Response><Say>&lol3;</Say></Response>"#;
        assert_eq!(
            error(bomb),
            "line 2: a DOCTYPE is not allowed (entity declarations are refused)"
        );
        assert_eq!(
            error("<Response><Say>&lol;</Say></Response>"),
            "line 1: undefined entity &lol;"
        );
        assert_eq!(kinds("<Response><Say>&#72;i</Say></Response>").len(), 1);
        let deep = format!(
            "<Response>{}{}</Response>",
            "<Gather>".repeat(5),
            "</Gather>".repeat(5)
        );
        assert!(error(&deep).contains("nested too deep"));
        let many = format!("<Response>{}</Response>", "<Hangup/>".repeat(MAX_VERBS + 1));
        assert!(error(&many).contains("too many"));
    }
}
