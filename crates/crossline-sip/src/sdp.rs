//! SDP (RFC 4566) parsing and RFC 3264 offer/answer for G.711 audio.
//!
//! Only the subset a G.711 gateway needs is modelled. Parsing is strict about
//! the structure (v, o, m) and liberal about the rest: an attribute or `c=`
//! line that doesn't parse is skipped, and a format whose `rtpmap` doesn't
//! parse is never chosen, so one odd line from a real-world UA (RFC 4475's
//! `a=rtpmap:31 LPC` on a video line) doesn't refuse the whole offer.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Bigger than any sane audio SDP; bounds work on hostile input.
const MAX_SDP_LEN: usize = 64 * 1024;
/// Bound on m-lines, for the same reason.
const MAX_MEDIA: usize = 64;
/// Used when neither side gives a usable a=ptime.
const DEFAULT_PTIME_MS: u32 = 20;
/// The audio loop's frame: what we send is a whole number of these.
const TICK_MS: u32 = 20;
/// The longest packet we send (RFC 3551 §4.5: 10..=60 ms is what G.711
/// peers must take).
const MAX_SEND_PTIME_MS: u32 = 60;
/// G.711 clock rate (RFC 3551).
const G711_CLOCK: u32 = 8000;

/// Why an SDP body was refused or offer/answer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// Over 64 KiB.
    #[error("SDP too large")]
    TooLarge,
    /// Doesn't start with `v=0`.
    #[error("SDP must start with v=0")]
    MissingVersion,
    /// A line is malformed, repeated or out of place.
    #[error("SDP line {line}: {reason}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No `o=` line.
    #[error("SDP has no o= line")]
    MissingOrigin,
    /// More than 64 `m=` lines.
    #[error("SDP has too many m= lines")]
    TooManyMedia,
    /// The chosen audio stream has no `c=` address, at media or session level.
    #[error("no connection address for the audio stream")]
    MissingConnection,
    /// No usable audio stream with a G.711 codec we accept (answer with 488).
    #[error("no common audio codec")]
    NoCommonCodec,
}

/// The codecs we carry: G.711 only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 μ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
}

impl Codec {
    /// Static payload type (RFC 3551 table 4).
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The rtpmap encoding name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// RTP clock rate, Hz.
    pub fn clock_rate(self) -> u32 {
        G711_CLOCK
    }

    /// Case-insensitive, as encoding names are (RFC 4566 §6).
    pub fn from_name(name: &str) -> Option<Codec> {
        if name.eq_ignore_ascii_case("PCMU") {
            Some(Codec::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(Codec::Pcma)
        } else {
            None
        }
    }

    fn from_static_pt(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }
}

/// Media direction attribute (RFC 3264 §5.1), from the point of view of
/// the side whose SDP carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Both ways: normal media.
    SendRecv,
    /// It only sends: it is holding the other side.
    SendOnly,
    /// It only receives.
    RecvOnly,
    /// Neither way (hold without music).
    Inactive,
}

impl Direction {
    /// Answer direction for an offered one (RFC 3264 §6.1).
    pub fn reverse(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// The attribute name, e.g. `sendonly`.
    pub fn as_attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Case-insensitive: some UAs send e.g. `a=SendOnly`.
    pub fn from_attr(attr: &str) -> Option<Direction> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| d.as_attr().eq_ignore_ascii_case(attr))
    }

    /// Whether the side with this direction sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the side with this direction receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// Same direction with sending switched off.
    pub fn without_send(self) -> Direction {
        match self {
            Direction::SendRecv | Direction::RecvOnly => Direction::RecvOnly,
            Direction::SendOnly | Direction::Inactive => Direction::Inactive,
        }
    }
}

/// An `a=rtpmap` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpMap {
    /// Payload type it maps.
    pub payload_type: u8,
    /// Encoding name, as written.
    pub encoding: String,
    /// Clock rate, Hz.
    pub clock_rate: u32,
    /// Channel count, when given.
    pub channels: Option<u8>,
}

/// One `m=` section, with the attributes we use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaDescription {
    /// Media type: `audio`, `video`...
    pub media: String,
    /// Port; 0 means the stream is refused.
    pub port: u16,
    /// Transport protocol, e.g. `RTP/AVP`.
    pub proto: String,
    /// Formats (payload types for RTP) in preference order.
    pub formats: Vec<String>,
    /// Its rtpmaps.
    pub rtpmaps: Vec<RtpMap>,
    /// Its fmtp parameters by payload type, verbatim.
    pub fmtps: Vec<(u8, String)>,
    /// `a=ptime` in ms, if it parses.
    pub ptime: Option<u32>,
    /// `a=maxptime` in ms, if it parses.
    pub maxptime: Option<u32>,
    /// Payload types whose `a=rtpmap` didn't parse: never chosen.
    pub unparsed: Vec<u8>,
    /// Media-level direction, if any.
    pub direction: Option<Direction>,
    /// Media-level `c=` address, if any.
    pub connection: Option<IpAddr>,
}

impl MediaDescription {
    fn new(media: String, port: u16, proto: String, formats: Vec<String>) -> Self {
        MediaDescription {
            media,
            port,
            proto,
            formats,
            rtpmaps: Vec::new(),
            fmtps: Vec::new(),
            ptime: None,
            maxptime: None,
            unparsed: Vec::new(),
            direction: None,
            connection: None,
        }
    }

    fn is_audio(&self) -> bool {
        self.media.eq_ignore_ascii_case("audio")
    }

    /// Plain RTP/AVP only: we do no SRTP/DTLS or RTCP feedback.
    fn is_usable_audio(&self) -> bool {
        self.is_audio() && self.port != 0 && self.proto.eq_ignore_ascii_case("RTP/AVP")
    }

    fn rtpmap(&self, pt: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|r| r.payload_type == pt)
    }

    /// G.711 codec behind one format, by rtpmap or else static PT.
    fn codec_for(&self, fmt: &str) -> Option<(Codec, u8)> {
        let pt = parse_pt(fmt)?;
        if self.unparsed.contains(&pt) {
            return None;
        }
        match self.rtpmap(pt) {
            Some(r) => {
                let codec = Codec::from_name(&r.encoding)?;
                let mono = r.channels.is_none_or(|c| c == 1);
                (r.clock_rate == G711_CLOCK && mono).then_some((codec, pt))
            }
            None => Codec::from_static_pt(pt).map(|c| (c, pt)),
        }
    }

    /// First offered codec (in this m-line's order) that is in `supported`.
    fn first_common_codec(&self, supported: &[Codec]) -> Option<(Codec, u8)> {
        self.formats
            .iter()
            .filter_map(|f| self.codec_for(f))
            .find(|(c, _)| supported.contains(c))
    }

    /// RFC 4733 telephone-event at 8 kHz, if listed.
    fn telephone_event_pt(&self) -> Option<u8> {
        self.formats.iter().filter_map(|f| parse_pt(f)).find(|&pt| {
            self.rtpmap(pt).is_some_and(|r| {
                r.encoding.eq_ignore_ascii_case("telephone-event") && r.clock_rate == G711_CLOCK
            })
        })
    }
}

/// A parsed SDP body: the origin, session-level defaults and the m= sections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionDescription {
    /// `o=` username.
    pub origin_username: String,
    /// `o=` session id, verbatim.
    pub session_id: String,
    /// `o=` version, verbatim (it goes up when the session changes).
    pub session_version: String,
    /// `o=` address, verbatim.
    pub origin_address: String,
    /// Session-level `c=` address, if any.
    pub connection: Option<IpAddr>,
    /// Session-level direction, if any.
    pub direction: Option<Direction>,
    /// Media sections in order.
    pub media: Vec<MediaDescription>,
}

impl SessionDescription {
    /// Parse SDP text (CRLF or LF line ends). Requires `v=0` first, one
    /// `o=` line before the media, and well-formed `m=` lines; unknown
    /// lines, and attributes or `c=` lines that don't parse, are skipped
    /// (a repeated `c=` or direction keeps the first).
    pub fn parse(text: &str) -> Result<Self, SdpError> {
        if text.len() > MAX_SDP_LEN {
            return Err(SdpError::TooLarge);
        }
        let mut lines = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .enumerate()
            .map(|(i, l)| (i + 1, l))
            .filter(|(_, l)| !l.trim().is_empty());

        if lines.next().is_none_or(|(_, l)| l.trim_end() != "v=0") {
            return Err(SdpError::MissingVersion);
        }

        let mut origin: Option<[String; 4]> = None;
        let mut connection = None;
        let mut direction = None;
        let mut media: Vec<MediaDescription> = Vec::new();

        for (n, line) in lines {
            let bad = |reason| SdpError::Malformed { line: n, reason };
            let (ty, value) = match line.as_bytes() {
                [t, b'=', ..] => (*t, line.get(2..).ok_or(bad("not valid UTF-8"))?),
                _ => return Err(bad("expected <type>=<value>")),
            };
            match ty {
                b'v' => return Err(bad("repeated v= line")),
                b'o' => {
                    if origin.is_some() || !media.is_empty() {
                        return Err(bad("misplaced or repeated o= line"));
                    }
                    origin = Some(parse_origin(value).ok_or(bad("invalid o= line"))?);
                }
                b'c' => {
                    // A host name or an unknown address type: not an
                    // address we can send to, but no reason to refuse the
                    // session (the stream using it will be).
                    let Some(addr) = parse_connection(value) else {
                        continue;
                    };
                    let slot = match media.last_mut() {
                        Some(m) => &mut m.connection,
                        None => &mut connection,
                    };
                    // Layered multicast repeats c=; the first is the base.
                    if slot.is_none() {
                        *slot = Some(addr);
                    }
                }
                b'm' => {
                    if media.len() >= MAX_MEDIA {
                        return Err(SdpError::TooManyMedia);
                    }
                    media.push(parse_media(value).ok_or(bad("invalid m= line"))?);
                }
                b'a' => {
                    let (name, val) = match value.split_once(':') {
                        Some((n, v)) => (n, Some(v)),
                        None => (value, None),
                    };
                    if let Some(d) = Direction::from_attr(name) {
                        let slot = match media.last_mut() {
                            Some(m) => &mut m.direction,
                            None => &mut direction,
                        };
                        // The first one counts; a second is a UA's mistake.
                        if slot.is_none() {
                            *slot = Some(d);
                        }
                        continue;
                    }
                    // Remaining attributes we use are media-level only.
                    let (Some(m), Some(val)) = (media.last_mut(), val) else {
                        continue;
                    };
                    match name.to_ascii_lowercase().as_str() {
                        "rtpmap" => match parse_rtpmap(val) {
                            Some(map) => m.rtpmaps.push(map),
                            // Known PT, odd mapping: that format is unusable.
                            None => {
                                if let Some(pt) = val.split_whitespace().next().and_then(parse_pt) {
                                    m.unparsed.push(pt);
                                }
                            }
                        },
                        "fmtp" => {
                            // Non-RTP formats may be non-numeric; skip those.
                            let (fmt, params) = val.split_once(' ').unwrap_or((val, ""));
                            if let Some(pt) = parse_pt(fmt) {
                                m.fmtps.push((pt, params.trim().to_owned()));
                            }
                        }
                        "ptime" => m.ptime = parse_ptime(val),
                        "maxptime" => m.maxptime = parse_ptime(val),
                        _ => {}
                    }
                }
                // s, i, u, e, p, b, t, r, z, k and unknown types: not needed.
                _ => {}
            }
        }

        let [origin_username, session_id, session_version, origin_address] =
            origin.ok_or(SdpError::MissingOrigin)?;
        Ok(SessionDescription {
            origin_username,
            session_id,
            session_version,
            origin_address,
            connection,
            direction,
            media,
        })
    }

    fn direction_of(&self, m: &MediaDescription) -> Direction {
        m.direction
            .or(self.direction)
            .unwrap_or(Direction::SendRecv)
    }

    fn connection_of(&self, m: &MediaDescription) -> Option<IpAddr> {
        m.connection.or(self.connection)
    }
}

/// Outcome of offer/answer for the audio stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The codec we both send and receive.
    pub codec: Codec,
    /// PT to put on the RTP we send.
    pub payload_type: u8,
    /// Payload type for RFC 4733 DTMF, when both sides have it.
    pub telephone_event_pt: Option<u8>,
    /// Media c= overrides session c=; 0.0.0.0 is kept as-is.
    pub remote_rtp: SocketAddr,
    /// Packetisation we send with, ms: the peer's `a=ptime` (10..=60) in
    /// whole 20 ms frames, at most its `a=maxptime`; else ours.
    pub ptime_ms: u32,
    /// What WE do.
    pub local_direction: Direction,
    /// Peer is sendonly/inactive, or used c=0.0.0.0 (RFC 2543 hold).
    pub remote_on_hold: bool,
}

/// Our side of the media session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalMedia {
    /// Our RTP address for `c=` and `o=`.
    pub address: IpAddr,
    /// Our RTP port (RTCP on the next one).
    pub rtp_port: u16,
    /// `o=` session id.
    pub session_id: u64,
    /// `o=` version; bump it whenever our SDP changes.
    pub session_version: u64,
    /// Our preference, for offers; also the set we accept in answers.
    pub codecs: Vec<Codec>,
    /// Dynamic PT (96..=127) for telephone-event in our offers; usually 101.
    pub telephone_event_pt: u8,
    /// Preferred packetisation, ms.
    pub ptime_ms: u32,
}

impl LocalMedia {
    fn ptime(&self) -> u32 {
        if sane_ptime(self.ptime_ms) {
            self.ptime_ms
        } else {
            DEFAULT_PTIME_MS
        }
    }
}

/// Shared result of reading the peer's audio m-line, offer or answer.
fn negotiate(
    sd: &SessionDescription,
    m: &MediaDescription,
    codec: Codec,
    payload_type: u8,
    local: &LocalMedia,
) -> Result<Negotiated, SdpError> {
    let ip = sd.connection_of(m).ok_or(SdpError::MissingConnection)?;
    let peer_dir = sd.direction_of(m);
    // RFC 2543 hold: c=0.0.0.0 means "don't send to me".
    let null_addr = ip.is_unspecified();
    let mut local_direction = peer_dir.reverse();
    if null_addr {
        local_direction = local_direction.without_send();
    }
    Ok(Negotiated {
        codec,
        payload_type,
        telephone_event_pt: m.telephone_event_pt(),
        remote_rtp: SocketAddr::new(ip, m.port),
        ptime_ms: send_ptime(m, local.ptime()),
        local_direction,
        remote_on_hold: null_addr || matches!(peer_dir, Direction::SendOnly | Direction::Inactive),
    })
}

/// The packet length we send for the peer's `a=ptime`/`a=maxptime`: whole
/// audio-loop frames (20, 40 or 60 ms), never over its maxptime unless that
/// is under one frame; `ours` when it asks for nothing we can do.
fn send_ptime(m: &MediaDescription, ours: u32) -> u32 {
    let whole = |ms: u32| (ms / TICK_MS * TICK_MS).clamp(TICK_MS, MAX_SEND_PTIME_MS);
    let wanted = m
        .ptime
        .filter(|p| (10..=MAX_SEND_PTIME_MS).contains(p))
        .map_or(whole(ours), whole);
    match m.maxptime.filter(|&p| p >= 10) {
        Some(max) => wanted.min(whole(max)),
        None => wanted,
    }
}

/// RFC 3264 answer to `offer`.
///
/// Uses the first usable audio m-line (RTP/AVP, port ≠ 0, a G.711 codec we
/// support); the codec is the offerer's first acceptable one. Every other
/// m-line is refused with port 0. No usable audio → `NoCommonCodec` (488).
pub fn answer(
    offer: &SessionDescription,
    local: &LocalMedia,
) -> Result<(Negotiated, String), SdpError> {
    let (index, m, codec, pt) = pick_audio(offer, &local.codecs)?;
    let negotiated = negotiate(offer, m, codec, pt, local)?;

    let mut sdp = session_header(local);
    for (i, om) in offer.media.iter().enumerate() {
        if i == index {
            push_audio(
                &mut sdp,
                local.rtp_port,
                &om.proto,
                &[(codec, pt)],
                negotiated.telephone_event_pt,
                negotiated.ptime_ms,
                negotiated.local_direction,
            );
        } else {
            // Refused stream: port 0, formats echoed (RFC 3264 §6).
            let _ = write!(sdp, "m={} 0 {}", om.media, om.proto);
            for f in &om.formats {
                sdp.push(' ');
                sdp.push_str(f);
            }
            sdp.push_str("\r\n");
        }
    }
    Ok((negotiated, sdp))
}

/// Whether [`answer`] would accept `offer` with these codecs: checked when
/// an INVITE arrives, so a call we can't carry gets its 488 at once.
pub fn answerable(offer: &SessionDescription, codecs: &[Codec]) -> Result<(), SdpError> {
    let (_, m, _, _) = pick_audio(offer, codecs)?;
    offer
        .connection_of(m)
        .map(|_| ())
        .ok_or(SdpError::MissingConnection)
}

/// The audio m-line we answer (its index), and its codec and PT.
fn pick_audio<'a>(
    offer: &'a SessionDescription,
    codecs: &[Codec],
) -> Result<(usize, &'a MediaDescription, Codec, u8), SdpError> {
    offer
        .media
        .iter()
        .enumerate()
        .filter(|(_, m)| m.is_usable_audio())
        .find_map(|(i, m)| {
            let (codec, pt) = m.first_common_codec(codecs)?;
            Some((i, m, codec, pt))
        })
        .ok_or(SdpError::NoCommonCodec)
}

/// Our offer: all codecs in preference order, telephone-event, a=ptime and
/// the given direction. An empty codec list offers PCMU and PCMA.
pub fn offer(local: &LocalMedia, direction: Direction) -> String {
    let mut codecs: Vec<(Codec, u8)> = Vec::new();
    for &c in &local.codecs {
        if !codecs.iter().any(|&(x, _)| x == c) {
            codecs.push((c, c.payload_type()));
        }
    }
    if codecs.is_empty() {
        codecs = [Codec::Pcmu, Codec::Pcma]
            .iter()
            .map(|&c| (c, c.payload_type()))
            .collect();
    }
    // Only a dynamic PT can carry telephone-event.
    let te = (96..=127)
        .contains(&local.telephone_event_pt)
        .then_some(local.telephone_event_pt);
    let mut sdp = session_header(local);
    push_audio(
        &mut sdp,
        local.rtp_port,
        "RTP/AVP",
        &codecs,
        te,
        local.ptime(),
        direction,
    );
    sdp
}

/// Apply the peer's answer to our offer.
pub fn accept_answer(
    answer: &SessionDescription,
    local: &LocalMedia,
) -> Result<Negotiated, SdpError> {
    // We offer a single audio m-line, so it's the first audio one here.
    let m = answer
        .media
        .iter()
        .find(|m| m.is_audio())
        .ok_or(SdpError::NoCommonCodec)?;
    if !m.is_usable_audio() {
        return Err(SdpError::NoCommonCodec);
    }
    let (codec, pt) = m
        .first_common_codec(&local.codecs)
        .ok_or(SdpError::NoCommonCodec)?;
    negotiate(answer, m, codec, pt, local)
}

// ---- writing ----

fn addr_type(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

fn session_header(local: &LocalMedia) -> String {
    let at = addr_type(local.address);
    let a = local.address;
    format!(
        "v=0\r\no=crossline {} {} IN {at} {a}\r\ns=crossline\r\nc=IN {at} {a}\r\nt=0 0\r\n",
        local.session_id, local.session_version
    )
}

fn push_audio(
    sdp: &mut String,
    port: u16,
    proto: &str,
    codecs: &[(Codec, u8)],
    te: Option<u8>,
    ptime: u32,
    direction: Direction,
) {
    let _ = write!(sdp, "m=audio {port} {proto}");
    for (_, pt) in codecs {
        let _ = write!(sdp, " {pt}");
    }
    if let Some(te) = te {
        let _ = write!(sdp, " {te}");
    }
    sdp.push_str("\r\n");
    for (c, pt) in codecs {
        let _ = write!(sdp, "a=rtpmap:{pt} {}/{}\r\n", c.name(), c.clock_rate());
    }
    if let Some(te) = te {
        let _ = write!(
            sdp,
            "a=rtpmap:{te} telephone-event/{G711_CLOCK}\r\na=fmtp:{te} 0-16\r\n"
        );
    }
    let _ = write!(sdp, "a=ptime:{ptime}\r\na={}\r\n", direction.as_attr());
}

// ---- line parsers (None = malformed) ----

fn parse_pt(s: &str) -> Option<u8> {
    // RTP payload types are 7 bits.
    s.parse::<u8>().ok().filter(|&pt| pt <= 127)
}

fn sane_ptime(p: u32) -> bool {
    (10..=200).contains(&p)
}

fn parse_ptime(v: &str) -> Option<u32> {
    // Some UAs write "20.0".
    let int = v.trim().split('.').next()?;
    int.parse::<u32>().ok().filter(|&p| p > 0)
}

/// o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>
fn parse_origin(v: &str) -> Option<[String; 4]> {
    let f: Vec<&str> = v.split_whitespace().collect();
    match f.as_slice() {
        [user, id, ver, _net, _at, addr] => Some([
            (*user).to_owned(),
            (*id).to_owned(),
            (*ver).to_owned(),
            (*addr).to_owned(),
        ]),
        _ => None,
    }
}

/// c=IN IP4|IP6 <address>[/ttl][/count]
fn parse_connection(v: &str) -> Option<IpAddr> {
    let f: Vec<&str> = v.split_whitespace().collect();
    let [net, at, addr] = f.as_slice() else {
        return None;
    };
    if !net.eq_ignore_ascii_case("IN") {
        return None;
    }
    let addr = addr.split('/').next()?;
    if at.eq_ignore_ascii_case("IP4") {
        addr.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else if at.eq_ignore_ascii_case("IP6") {
        addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        None
    }
}

/// m=<media> <port>[/<count>] <proto> <fmt> ...
fn parse_media(v: &str) -> Option<MediaDescription> {
    let mut f = v.split_whitespace();
    let media = f.next()?;
    let port = f.next()?;
    let proto = f.next()?;
    let formats: Vec<String> = f.map(str::to_owned).collect();
    if formats.is_empty() {
        return None;
    }
    let (port, count) = match port.split_once('/') {
        Some((p, c)) => (p, Some(c)),
        None => (port, None),
    };
    let port = port.parse::<u16>().ok()?;
    if let Some(c) = count {
        c.parse::<u16>().ok().filter(|&c| c > 0)?;
    }
    Some(MediaDescription::new(
        media.to_owned(),
        port,
        proto.to_owned(),
        formats,
    ))
}

/// a=rtpmap:<pt> <encoding>/<clock>[/<channels>]
fn parse_rtpmap(v: &str) -> Option<RtpMap> {
    let mut f = v.split_whitespace();
    let pt = parse_pt(f.next()?)?;
    let enc = f.next()?;
    if f.next().is_some() {
        return None;
    }
    let mut parts = enc.split('/');
    let encoding = parts.next().filter(|e| !e.is_empty())?;
    let clock_rate = parts.next()?.parse::<u32>().ok().filter(|&c| c > 0)?;
    let channels = match parts.next() {
        Some(c) => Some(c.parse::<u8>().ok().filter(|&c| c > 0)?),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(RtpMap {
        payload_type: pt,
        encoding: encoding.to_owned(),
        clock_rate,
        channels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_v4() -> LocalMedia {
        LocalMedia {
            address: "192.0.2.10".parse().unwrap(),
            rtp_port: 40000,
            session_id: 1234,
            session_version: 1,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event_pt: 101,
            ptime_ms: 20,
        }
    }

    const SIPP_OFFER: &str = "v=0\r\n\
        o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
        s=-\r\n\
        c=IN IP4 127.0.0.1\r\n\
        t=0 0\r\n\
        m=audio 6000 RTP/AVP 0\r\n\
        a=rtpmap:0 PCMU/8000\r\n";

    #[test]
    fn sipp_default_offer() {
        let sd = SessionDescription::parse(SIPP_OFFER).unwrap();
        assert_eq!(sd.origin_username, "user1");
        assert_eq!(sd.session_id, "53655765");
        assert_eq!(sd.session_version, "2353687637");
        assert_eq!(sd.origin_address, "127.0.0.1");
        assert_eq!(sd.media.len(), 1);
        let (neg, text) = answer(&sd, &local_v4()).unwrap();
        assert_eq!(
            neg,
            Negotiated {
                codec: Codec::Pcmu,
                payload_type: 0,
                telephone_event_pt: None,
                remote_rtp: "127.0.0.1:6000".parse().unwrap(),
                ptime_ms: 20,
                local_direction: Direction::SendRecv,
                remote_on_hold: false,
            }
        );
        assert_eq!(
            text,
            "v=0\r\no=crossline 1234 1 IN IP4 192.0.2.10\r\ns=crossline\r\n\
             c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n\
             a=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
        );
        // Our answer is itself valid SDP.
        let back = SessionDescription::parse(&text).unwrap();
        assert_eq!(back.media[0].formats, vec!["0"]);
    }

    #[test]
    fn pcma_first_with_telephone_event() {
        let offer = "v=0\no=- 1 1 IN IP4 198.51.100.7\ns=call\nc=IN IP4 198.51.100.7\nt=0 0\n\
            m=audio 5004 RTP/AVP 8 0 101\n\
            a=rtpmap:8 PCMA/8000\na=rtpmap:0 PCMU/8000\n\
            a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15\na=ptime:30\n";
        let sd = SessionDescription::parse(offer).unwrap();
        assert_eq!(sd.media[0].fmtps, vec![(101, "0-15".to_owned())]);
        let (neg, text) = answer(&sd, &local_v4()).unwrap();
        assert_eq!(neg.codec, Codec::Pcma);
        assert_eq!(neg.payload_type, 8);
        assert_eq!(neg.telephone_event_pt, Some(101));
        // 30 ms isn't a whole number of our 20 ms frames: we send 20.
        assert_eq!(neg.ptime_ms, 20);
        assert_eq!(neg.remote_rtp, "198.51.100.7:5004".parse().unwrap());
        assert!(text.contains("m=audio 40000 RTP/AVP 8 101\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:8 PCMA/8000\r\n"));
        assert!(text.contains("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"));
        assert!(!text.contains("PCMU"));
        assert!(text.ends_with("a=ptime:20\r\na=sendrecv\r\n"));
    }

    #[test]
    fn offered_te_pt_reused_and_dynamic_g711() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nc=IN IP4 10.0.0.1\r\n\
            m=audio 5004 RTP/AVP 96 98 97\r\na=rtpmap:96 opus/48000/2\r\n\
            a=rtpmap:98 pcma/8000/1\r\na=RtpMap:97 Telephone-Event/8000\r\n";
        let (neg, text) = answer(&SessionDescription::parse(offer).unwrap(), &local_v4()).unwrap();
        assert_eq!((neg.codec, neg.payload_type), (Codec::Pcma, 98));
        assert_eq!(neg.telephone_event_pt, Some(97));
        assert!(text.contains("m=audio 40000 RTP/AVP 98 97\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:98 PCMA/8000\r\n"));
        assert!(text.contains("a=fmtp:97 0-16\r\n"));
    }

    #[test]
    fn unsupported_clock_or_local_preference() {
        // PT 0 remapped to 16 kHz is not G.711.
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nc=IN IP4 10.0.0.1\r\n\
            m=audio 5004 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/16000\r\n";
        let sd = SessionDescription::parse(offer).unwrap();
        assert_eq!(answer(&sd, &local_v4()).unwrap().0.codec, Codec::Pcma);
        let mut only_pcmu = local_v4();
        only_pcmu.codecs = vec![Codec::Pcmu];
        assert_eq!(answer(&sd, &only_pcmu), Err(SdpError::NoCommonCodec));
    }

    #[test]
    fn dynamic_only_offer_is_rejected() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
            m=audio 5004 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n";
        let sd = SessionDescription::parse(offer).unwrap();
        assert_eq!(answer(&sd, &local_v4()), Err(SdpError::NoCommonCodec));
        // SRTP / disabled / video-only offers are no better.
        for m in [
            "m=audio 5004 RTP/SAVP 0",
            "m=audio 0 RTP/AVP 0",
            "m=video 5004 RTP/AVP 0",
        ] {
            let sd = SessionDescription::parse(&format!(
                "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nc=IN IP4 10.0.0.1\r\n{m}\r\n"
            ))
            .unwrap();
            assert_eq!(
                answer(&sd, &local_v4()),
                Err(SdpError::NoCommonCodec),
                "{m}"
            );
        }
        let no_media = SessionDescription::parse("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n").unwrap();
        assert_eq!(answer(&no_media, &local_v4()), Err(SdpError::NoCommonCodec));
    }

    #[test]
    fn missing_connection() {
        let sd = SessionDescription::parse(
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nm=audio 5004 RTP/AVP 0\r\n",
        )
        .unwrap();
        assert_eq!(answer(&sd, &local_v4()), Err(SdpError::MissingConnection));
    }

    #[test]
    fn non_audio_lines_get_port_zero() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
            m=video 5006 RTP/AVP 96 97\r\na=rtpmap:96 H264/90000\r\n\
            m=audio 5004 RTP/AVP 0\r\nc=IN IP4 10.0.0.2\r\n\
            m=application 5008 UDP/BFCP *\r\n";
        let sd = SessionDescription::parse(offer).unwrap();
        let (neg, text) = answer(&sd, &local_v4()).unwrap();
        assert_eq!(neg.remote_rtp, "10.0.0.2:5004".parse().unwrap());
        let ms: Vec<&str> = text.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            ms,
            vec![
                "m=video 0 RTP/AVP 96 97",
                "m=audio 40000 RTP/AVP 0",
                "m=application 0 UDP/BFCP *"
            ]
        );
        let back = SessionDescription::parse(&text).unwrap();
        assert_eq!(back.media.len(), 3);
    }

    fn hold_offer(extra_session: &str, conn: &str, extra_media: &str) -> SessionDescription {
        SessionDescription::parse(&format!(
            "v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\n{extra_session}c=IN IP4 {conn}\r\nt=0 0\r\n\
             m=audio 5004 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n{extra_media}"
        ))
        .unwrap()
    }

    fn answer_dir(text: &str) -> &str {
        text.lines()
            .filter_map(|l| l.strip_prefix("a="))
            .find(|a| Direction::from_attr(a).is_some())
            .unwrap()
    }

    #[test]
    fn hold_offers() {
        let l = local_v4();
        // sendonly → recvonly.
        let (n, t) = answer(&hold_offer("", "10.0.0.1", "a=sendonly\r\n"), &l).unwrap();
        assert_eq!(n.local_direction, Direction::RecvOnly);
        assert!(n.remote_on_hold);
        assert_eq!(answer_dir(&t), "recvonly");
        let (n, _) = answer(&hold_offer("", "10.0.0.1", "a=SendOnly\r\n"), &l).unwrap();
        assert_eq!(n.local_direction, Direction::RecvOnly);
        // inactive → inactive.
        let (n, t) = answer(&hold_offer("", "10.0.0.1", "a=inactive\r\n"), &l).unwrap();
        assert_eq!(n.local_direction, Direction::Inactive);
        assert!(n.remote_on_hold);
        assert_eq!(answer_dir(&t), "inactive");
        // RFC 2543 hold: c=0.0.0.0, address kept, we don't send.
        let (n, t) = answer(&hold_offer("", "0.0.0.0", ""), &l).unwrap();
        assert_eq!(n.remote_rtp, "0.0.0.0:5004".parse().unwrap());
        assert_eq!(n.local_direction, Direction::RecvOnly);
        assert!(n.remote_on_hold);
        assert_eq!(answer_dir(&t), "recvonly");
        // c=0.0.0.0 plus recvonly: nobody sends.
        let (n, _) = answer(&hold_offer("", "0.0.0.0", "a=recvonly\r\n"), &l).unwrap();
        assert_eq!(n.local_direction, Direction::Inactive);
        // recvonly (peer muted itself) is not hold; we only send.
        let (n, t) = answer(&hold_offer("", "10.0.0.1", "a=recvonly\r\n"), &l).unwrap();
        assert_eq!(n.local_direction, Direction::SendOnly);
        assert!(!n.remote_on_hold);
        assert_eq!(answer_dir(&t), "sendonly");
        // Resume.
        let (n, _) = answer(&hold_offer("", "10.0.0.1", "a=sendrecv\r\n"), &l).unwrap();
        assert_eq!(n.local_direction, Direction::SendRecv);
        assert!(!n.remote_on_hold);
        assert_eq!(n.telephone_event_pt, Some(101));
    }

    #[test]
    fn session_level_direction() {
        let l = local_v4();
        let sd = hold_offer("a=sendonly\r\n", "10.0.0.1", "");
        assert_eq!(sd.direction, Some(Direction::SendOnly));
        assert_eq!(sd.media[0].direction, None);
        let (n, t) = answer(&sd, &l).unwrap();
        assert_eq!(n.local_direction, Direction::RecvOnly);
        assert!(n.remote_on_hold);
        assert_eq!(answer_dir(&t), "recvonly");
        // Media level wins over session level.
        let sd = hold_offer("a=inactive\r\n", "10.0.0.1", "a=sendrecv\r\n");
        let (n, _) = answer(&sd, &l).unwrap();
        assert_eq!(n.local_direction, Direction::SendRecv);
        assert!(!n.remote_on_hold);
    }

    #[test]
    fn ipv6() {
        let offer = "v=0\r\no=- 7 7 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n\
            m=audio 7078 RTP/AVP 0\r\n";
        let sd = SessionDescription::parse(offer).unwrap();
        let mut l = local_v4();
        l.address = "2001:db8::2".parse().unwrap();
        let (n, text) = answer(&sd, &l).unwrap();
        assert_eq!(n.remote_rtp, "[2001:db8::1]:7078".parse().unwrap());
        assert!(text.contains("o=crossline 1234 1 IN IP6 2001:db8::2\r\n"));
        assert!(text.contains("c=IN IP6 2001:db8::2\r\n"));
        let back = SessionDescription::parse(&text).unwrap();
        assert_eq!(back.connection, Some(l.address));
        // Wrong address family for the type: no address for the stream.
        let bad = offer.replace("c=IN IP6", "c=IN IP4");
        let sd = SessionDescription::parse(&bad).unwrap();
        assert_eq!(answer(&sd, &l), Err(SdpError::MissingConnection));
    }

    /// What we send for an offer's ptime/maxptime: whole 20 ms frames up
    /// to 60 ms, never over maxptime; and the answer says so.
    #[test]
    fn ptime_and_maxptime_in_whole_frames() {
        let cases = [
            ("", 20),
            ("a=ptime:10\r\n", 20),
            ("a=ptime:20\r\n", 20),
            ("a=ptime:30\r\n", 20),
            ("a=ptime:40\r\n", 40),
            ("a=ptime:50\r\n", 40),
            ("a=ptime:60\r\n", 60),
            ("a=ptime:90\r\n", 20),
            ("a=ptime:60\r\na=maxptime:40\r\n", 40),
            ("a=ptime:60\r\na=maxptime:10\r\n", 20),
            ("a=maxptime:60\r\n", 20),
            ("a=ptime:abc\r\na=maxptime:\r\n", 20),
        ];
        for (attrs, want) in cases {
            let offer = format!(
                "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                 m=audio 4000 RTP/AVP 0\r\n{attrs}"
            );
            let sd = SessionDescription::parse(&offer).unwrap();
            let (n, text) = answer(&sd, &local_v4()).unwrap();
            assert_eq!(n.ptime_ms, want, "{attrs:?}");
            assert!(
                text.contains(&format!("a=ptime:{want}\r\n")),
                "{attrs:?}: {text}"
            );
        }
    }

    /// RFC 4475 esc01/longreq: `a=rtpmap:31 LPC` (no clock rate) on a video
    /// line. The audio is answered, the video refused with port 0.
    #[test]
    fn an_odd_rtpmap_on_a_format_we_would_not_use_is_ignored() {
        let offer = "v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.3\r\ns=-\r\n\
            c=IN IP4 192.0.2.4\r\nt=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\n\
            m=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n";
        let sd = SessionDescription::parse(offer).unwrap();
        assert_eq!(sd.media[1].unparsed, vec![31]);
        let (n, text) = answer(&sd, &local_v4()).unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
        assert!(text.contains("m=audio 40000 RTP/AVP 0\r\n"), "{text}");
        assert!(text.ends_with("m=video 0 RTP/AVP 31\r\n"), "{text}");
        // The same oddity on the audio format we'd use: the next one serves.
        let odd = "v=0\r\no=- 1 1 IN IP4 192.0.2.3\r\ns=-\r\nc=IN IP4 192.0.2.4\r\nt=0 0\r\n\
            m=audio 49217 RTP/AVP 0 8\r\na=rtpmap:0 PCMU\r\n";
        let sd = SessionDescription::parse(odd).unwrap();
        assert_eq!(answer(&sd, &local_v4()).unwrap().0.codec, Codec::Pcma);
    }

    #[test]
    fn tolerant_of_unknown_lines() {
        let offer = "v=0\no=alice 2890844526 2890844526 IN IP4 host.example\ns=\n\
            i=info\nu=http://x\ne=a@b\nb=AS:64\nt=0 0\nr=7d 1h 0\nz=0 0\nk=prompt\n\
            a=group:BUNDLE a\nX=whatever\nc=IN IP4 224.2.1.1/127/3\n\
            m=audio 49170/2 RTP/AVP 0\na=rtcp:49171\na=ptime:20.0\na=maxptime:40\n\
            a=silenceSupp:off - - - -\nb=TIAS:64000\n\n\n";
        let sd = SessionDescription::parse(offer).unwrap();
        assert_eq!(sd.origin_address, "host.example");
        assert_eq!(sd.connection, Some("224.2.1.1".parse().unwrap()));
        assert_eq!(sd.media[0].port, 49170);
        assert_eq!(sd.media[0].ptime, Some(20));
        assert!(answer(&sd, &local_v4()).is_ok());
    }

    #[test]
    fn garbage_and_truncated_input() {
        let cases = [
            "",
            "\r\n",
            "hello",
            "v=1\r\n",
            " v=0\r\n",
            "o=- 1 1 IN IP4 1.2.3.4\r\nv=0\r\n",
            "v=0\r\n",
            "v=0\r\nv=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n",
            "v=0\r\no=user1 53655765\r\n",
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio\r\n",
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 6000 RTP/AVP\r\n",
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n",
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio -1 RTP/AVP 0\r\n",
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 6000/0 RTP/AVP 0\r\n",
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 6000 RTP/AVP 0\r\no=- 1 1 IN IP4 1.2.3.4\r\n",
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nthis is not sdp\r\n",
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n=\r\n",
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n\u{e9}=x\r\n",
        ];
        for c in cases {
            assert!(SessionDescription::parse(c).is_err(), "{c:?}");
        }
        // Odd lines in a well-formed session: it parses (no 400), and the
        // stream they spoil can't be answered (488), whichever it is.
        let spoilt = [
            "c=IN IP4\r\nm=audio 6000 RTP/AVP 0\r\n",
            "c=IN IP4 example.com\r\nm=audio 6000 RTP/AVP 0\r\n",
            "c=IN IP5 1.2.3.4\r\nm=audio 6000 RTP/AVP 0\r\n",
            "c=IN IP4 1.2.3.4\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0\r\n",
            "c=IN IP4 1.2.3.4\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n",
            "c=IN IP4 1.2.3.4\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000/1/2\r\n",
            "c=IN IP4 1.2.3.4\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 /8000\r\n",
        ];
        for c in spoilt {
            let text = format!("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n{c}");
            let sd = SessionDescription::parse(&text).unwrap_or_else(|e| panic!("{c:?}: {e}"));
            assert!(answer(&sd, &local_v4()).is_err(), "{c:?}");
        }
        // Repeats keep the first; a PT out of range is no mapping at all.
        let sd = SessionDescription::parse(
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.4\r\nc=IN IP4 5.6.7.8\r\n\
             m=audio 6000 RTP/AVP 0\r\na=rtpmap:300 PCMU/8000\r\na=sendonly\r\na=recvonly\r\n",
        )
        .unwrap();
        assert_eq!(sd.connection, Some("1.2.3.4".parse().unwrap()));
        assert_eq!(sd.media[0].direction, Some(Direction::SendOnly));
        assert_eq!(answer(&sd, &local_v4()).unwrap().0.codec, Codec::Pcmu);
        assert_eq!(
            SessionDescription::parse(&"a".repeat(MAX_SDP_LEN + 1)),
            Err(SdpError::TooLarge)
        );
        let many = "m=audio 1 RTP/AVP 0\r\n".repeat(MAX_MEDIA + 1);
        assert_eq!(
            SessionDescription::parse(&format!("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n{many}")),
            Err(SdpError::TooManyMedia)
        );

        // Every prefix of a valid offer parses or errors, never panics.
        let full = "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=\u{e9}\r\nc=IN IP6 ::1\r\n\
            m=audio 5004 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n\
            a=fmtp:101 0-16\r\na=ptime:20\r\na=sendonly\r\n";
        for (i, _) in full.char_indices() {
            if let Ok(sd) = SessionDescription::parse(&full[..i]) {
                let _ = answer(&sd, &local_v4());
                let _ = accept_answer(&sd, &local_v4());
            }
        }
        // Byte soup built from SDP fragments.
        let frags = [
            "v=0",
            "\r\n",
            "m=",
            "a=",
            "c=IN IP4 ",
            ":",
            "/",
            " ",
            "0",
            "rtpmap",
            "\u{e9}",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut s = String::from("v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\n");
            for _ in 0..20 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push_str(frags[(seed % frags.len() as u64) as usize]);
            }
            if let Ok(sd) = SessionDescription::parse(&s) {
                let _ = answer(&sd, &local_v4());
            }
        }
    }

    #[test]
    fn offer_text_and_round_trip() {
        let us = local_v4();
        let text = offer(&us, Direction::SendRecv);
        assert_eq!(
            text,
            "v=0\r\no=crossline 1234 1 IN IP4 192.0.2.10\r\ns=crossline\r\n\
             c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8 101\r\n\
             a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n\
             a=ptime:20\r\na=sendrecv\r\n"
        );
        // A peer that only does PCMA answers; we accept that.
        let peer = LocalMedia {
            address: "203.0.113.5".parse().unwrap(),
            rtp_port: 30000,
            session_id: 99,
            session_version: 3,
            codecs: vec![Codec::Pcma],
            telephone_event_pt: 101,
            ptime_ms: 20,
        };
        let (peer_neg, peer_answer) =
            answer(&SessionDescription::parse(&text).unwrap(), &peer).unwrap();
        assert_eq!(peer_neg.remote_rtp, "192.0.2.10:40000".parse().unwrap());
        assert_eq!(peer_neg.codec, Codec::Pcma);
        let neg = accept_answer(&SessionDescription::parse(&peer_answer).unwrap(), &us).unwrap();
        assert_eq!(
            neg,
            Negotiated {
                codec: Codec::Pcma,
                payload_type: 8,
                telephone_event_pt: Some(101),
                remote_rtp: "203.0.113.5:30000".parse().unwrap(),
                ptime_ms: 20,
                local_direction: Direction::SendRecv,
                remote_on_hold: false,
            }
        );

        // We put the peer on hold: offer sendonly, peer answers recvonly.
        let hold = offer(&us, Direction::SendOnly);
        assert!(hold.ends_with("a=sendonly\r\n"));
        let (pn, pa) = answer(&SessionDescription::parse(&hold).unwrap(), &peer).unwrap();
        assert_eq!(pn.local_direction, Direction::RecvOnly);
        let neg = accept_answer(&SessionDescription::parse(&pa).unwrap(), &us).unwrap();
        assert_eq!(neg.local_direction, Direction::SendOnly);
        assert!(!neg.remote_on_hold);
    }

    #[test]
    fn offer_edge_cases() {
        let mut l = local_v4();
        l.codecs = vec![Codec::Pcma, Codec::Pcma];
        l.telephone_event_pt = 8;
        l.ptime_ms = 0;
        let text = offer(&l, Direction::Inactive);
        assert!(text.contains("m=audio 40000 RTP/AVP 8\r\n"), "{text}");
        assert!(text.contains("a=ptime:20\r\na=inactive\r\n"));
        l.codecs.clear();
        assert!(offer(&l, Direction::SendRecv).contains("RTP/AVP 0 8\r\n"));
    }

    #[test]
    fn accept_answer_rejections() {
        let us = local_v4();
        let rejected =
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nc=IN IP4 10.0.0.1\r\nm=audio 0 RTP/AVP 0\r\n";
        assert_eq!(
            accept_answer(&SessionDescription::parse(rejected).unwrap(), &us),
            Err(SdpError::NoCommonCodec)
        );
        let other =
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 18\r\n";
        assert_eq!(
            accept_answer(&SessionDescription::parse(other).unwrap(), &us),
            Err(SdpError::NoCommonCodec)
        );
        let held =
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let n = accept_answer(&SessionDescription::parse(held).unwrap(), &us).unwrap();
        assert!(n.remote_on_hold);
        assert_eq!(n.local_direction, Direction::RecvOnly);
    }

    #[test]
    fn codec_and_direction_helpers() {
        assert_eq!(Codec::from_name("pcmu"), Some(Codec::Pcmu));
        assert_eq!(Codec::from_name("PcMa"), Some(Codec::Pcma));
        assert_eq!(Codec::from_name("G729"), None);
        assert_eq!(Codec::Pcma.payload_type(), 8);
        assert_eq!(Codec::Pcmu.name(), "PCMU");
        for d in [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ] {
            assert_eq!(d.reverse().reverse(), d);
            assert_eq!(Direction::from_attr(d.as_attr()), Some(d));
        }
        assert_eq!(Direction::SendOnly.reverse(), Direction::RecvOnly);
        assert_eq!(Direction::Inactive.reverse(), Direction::Inactive);
    }
}
