//! RTCP (RFC 3550 §6): sender and receiver reports, SDES CNAME and BYE for
//! one RTP stream with one remote source.
//!
//! Sans-IO: the caller passes wall-clock NTP time and a monotonic millisecond
//! clock in, and moves bytes in and out. Building writes into a caller buffer
//! without allocating; parsing returns owned packets (RTCP arrives every few
//! seconds, far from the per-frame path). Every length in a received packet
//! is checked before use.

/// RTCP packet types (RFC 3550 §12.1): sender report.
pub const PT_SR: u8 = 200;
/// Receiver report.
pub const PT_RR: u8 = 201;
/// Source description.
pub const PT_SDES: u8 = 202;
/// Goodbye.
pub const PT_BYE: u8 = 203;
/// Application-defined (skipped when parsing).
pub const PT_APP: u8 = 204;
/// SDES item type of CNAME.
const SDES_CNAME: u8 = 1;
/// RFC 3550 §6.2 minimum interval; fine for a two-party call.
pub const DEFAULT_REPORT_INTERVAL_MS: u64 = 5000;
/// RTP clock of the audio this gateway carries (G.711).
const CLOCK_RATE_PER_MS: u64 = 8;
/// RFC 3550 appendix A.1 sequence validation limits.
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;
/// Seconds from 1900 (NTP epoch) to 1970 (Unix epoch).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

const HEADER_LEN: usize = 4;
const REPORT_BLOCK_LEN: usize = 24;
/// SR sender info plus the SSRC before it.
const SR_FIXED_LEN: usize = 24;

/// Why an RTCP packet could not be parsed or built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    /// No bytes at all.
    #[error("empty RTCP packet")]
    Empty,
    /// Fewer than 4 bytes where a header should start.
    #[error("RTCP header truncated: {0} bytes left, need 4")]
    TruncatedHeader(usize),
    /// The version field isn't 2.
    #[error("unsupported RTCP version {0}, expected 2")]
    BadVersion(u8),
    /// The length field runs past the end of the datagram.
    #[error("RTCP length field says {declared} bytes but only {available} remain")]
    LengthOverrun {
        /// Bytes the length field claims.
        declared: usize,
        /// Bytes left in the datagram.
        available: usize,
    },
    /// Padding on a packet that isn't last, or a bad padding count.
    #[error("invalid RTCP padding")]
    BadPadding,
    /// More report blocks or sources than the packet's length holds.
    #[error("RTCP packet type {packet_type} with count {count} does not fit in {len} bytes")]
    CountOverrun {
        /// The packet's type.
        packet_type: u8,
        /// Its count field.
        count: u8,
        /// Its length in bytes.
        len: usize,
    },
    /// An SDES chunk runs past its packet.
    #[error("malformed SDES chunk")]
    BadSdes,
    /// A BYE reason runs past its packet.
    #[error("malformed BYE reason")]
    BadBye,
    /// The output buffer can't hold the packet.
    #[error("RTCP output buffer too small: need {needed} bytes, have {available}")]
    BufferTooSmall {
        /// Bytes the packet takes.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// A BYE reason longer than its one-byte length allows.
    #[error("BYE reason is {0} bytes, at most 255 allowed")]
    ReasonTooLong(usize),
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: u32,
    /// Fraction of its packets lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// 24-bit signed on the wire (duplicates can make it negative).
    pub cumulative_lost: i32,
    /// Highest sequence number received, with the wrap count in the top 16 bits.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received.
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

/// SR: a sender's clocks and counts, with its reception reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderReport {
    /// The sender.
    pub ssrc: u32,
    /// Wall-clock time when the report was sent.
    pub ntp_timestamp: u64,
    /// The same instant on the sender's RTP clock.
    pub rtp_timestamp: u32,
    /// RTP packets sent so far.
    pub packet_count: u32,
    /// Payload bytes sent so far.
    pub octet_count: u32,
    /// Reports on the sources it receives.
    pub reports: Vec<ReportBlock>,
}

/// RR: reception reports from a source that isn't sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverReport {
    /// The reporting source.
    pub ssrc: u32,
    /// Reports on the sources it receives.
    pub reports: Vec<ReportBlock>,
}

/// One SDES chunk; only CNAME is kept, other items are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesChunk {
    /// The source described.
    pub ssrc: u32,
    /// Its canonical name, if the chunk carries one.
    pub cname: Option<String>,
}

/// A source leaving the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bye {
    /// The sources leaving.
    pub sources: Vec<u32>,
    /// Why, if given.
    pub reason: Option<String>,
}

/// A parsed RTCP packet. Types not listed (APP, feedback, XR) are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    /// SR.
    SenderReport(SenderReport),
    /// RR.
    ReceiverReport(ReceiverReport),
    /// SDES: one chunk per source.
    SourceDescription(Vec<SdesChunk>),
    /// BYE.
    Bye(Bye),
}

/// Middle 32 bits of a 64-bit NTP timestamp, the form used by LSR.
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// 64-bit NTP timestamp for a Unix time.
pub fn ntp_from_unix(secs: u64, nanos: u32) -> u64 {
    let frac = (u64::from(nanos.min(999_999_999)) << 32) / 1_000_000_000;
    (secs.wrapping_add(NTP_UNIX_OFFSET_SECS) << 32) | frac
}

/// Randomised report interval (RFC 3550 §6.3.1): `base_ms` scaled by a
/// factor uniform in [0.5, 1.5], from `rand_unit` in [0, 1] supplied by the
/// caller so tests stay deterministic. Out-of-range or NaN input is clamped.
pub fn report_interval_ms(base_ms: u64, rand_unit: f64) -> u64 {
    let r = if rand_unit.is_nan() {
        0.5
    } else {
        rand_unit.clamp(0.0, 1.0)
    };
    (base_ms as f64 * (0.5 + r)).round() as u64
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Parse a compound RTCP packet. Every packet must be version 2 with a
/// length that fits; padding is allowed only on the last one (RFC 3550
/// §6.4.1, A.2). Unknown packet types are skipped by their length.
pub fn parse_compound(buf: &[u8]) -> Result<Vec<RtcpPacket>, RtcpError> {
    if buf.is_empty() {
        return Err(RtcpError::Empty);
    }
    let mut packets = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let [b0, pt, l0, l1, ..] = *rest else {
            return Err(RtcpError::TruncatedHeader(rest.len()));
        };
        if b0 >> 6 != 2 {
            return Err(RtcpError::BadVersion(b0 >> 6));
        }
        let len = (usize::from(u16::from_be_bytes([l0, l1])) + 1) * 4;
        let (packet, tail) = match (rest.get(..len), rest.get(len..)) {
            (Some(p), Some(t)) => (p, t),
            _ => {
                return Err(RtcpError::LengthOverrun {
                    declared: len,
                    available: rest.len(),
                })
            }
        };
        let mut body = packet.get(HEADER_LEN..).unwrap_or_default();
        if b0 & 0x20 != 0 {
            if !tail.is_empty() {
                return Err(RtcpError::BadPadding);
            }
            let pad = usize::from(body.last().copied().unwrap_or(0));
            if pad == 0 || pad > body.len() {
                return Err(RtcpError::BadPadding);
            }
            body = body.get(..body.len() - pad).unwrap_or_default();
        }
        let count = b0 & 0x1F;
        match pt {
            PT_SR => packets.push(RtcpPacket::SenderReport(parse_sr(count, body)?)),
            PT_RR => packets.push(RtcpPacket::ReceiverReport(parse_rr(count, body)?)),
            PT_SDES => packets.push(RtcpPacket::SourceDescription(parse_sdes(count, body)?)),
            PT_BYE => packets.push(RtcpPacket::Bye(parse_bye(count, body)?)),
            _ => {}
        }
        rest = tail;
    }
    Ok(packets)
}

fn count_overrun(packet_type: u8, count: u8, len: usize) -> RtcpError {
    RtcpError::CountOverrun {
        packet_type,
        count,
        len,
    }
}

fn parse_blocks(pt: u8, count: u8, body: &[u8], at: usize) -> Result<Vec<ReportBlock>, RtcpError> {
    let needed = at + usize::from(count) * REPORT_BLOCK_LEN;
    if body.len() < needed {
        return Err(count_overrun(pt, count, body.len()));
    }
    let mut blocks = Vec::with_capacity(usize::from(count));
    for i in 0..usize::from(count) {
        let b = at + i * REPORT_BLOCK_LEN;
        let word = |k: usize| be32(body, b + 4 * k).ok_or(count_overrun(pt, count, body.len()));
        let lost = word(1)?;
        // Sign-extend the 24-bit cumulative loss.
        let cumulative_lost = ((lost << 8) as i32) >> 8;
        blocks.push(ReportBlock {
            ssrc: word(0)?,
            fraction_lost: (lost >> 24) as u8,
            cumulative_lost,
            extended_highest_seq: word(2)?,
            jitter: word(3)?,
            last_sr: word(4)?,
            delay_since_last_sr: word(5)?,
        });
    }
    Ok(blocks)
}

fn parse_sr(count: u8, body: &[u8]) -> Result<SenderReport, RtcpError> {
    let short = || count_overrun(PT_SR, count, body.len());
    let w = |k: usize| be32(body, 4 * k).ok_or_else(short);
    Ok(SenderReport {
        ssrc: w(0)?,
        ntp_timestamp: (u64::from(w(1)?) << 32) | u64::from(w(2)?),
        rtp_timestamp: w(3)?,
        packet_count: w(4)?,
        octet_count: w(5)?,
        // Bytes after the blocks are a profile extension: ignored.
        reports: parse_blocks(PT_SR, count, body, SR_FIXED_LEN)?,
    })
}

fn parse_rr(count: u8, body: &[u8]) -> Result<ReceiverReport, RtcpError> {
    Ok(ReceiverReport {
        ssrc: be32(body, 0).ok_or(count_overrun(PT_RR, count, body.len()))?,
        reports: parse_blocks(PT_RR, count, body, 4)?,
    })
}

fn parse_sdes(count: u8, body: &[u8]) -> Result<Vec<SdesChunk>, RtcpError> {
    let mut chunks = Vec::with_capacity(usize::from(count));
    let mut off = 0usize;
    for _ in 0..count {
        let ssrc = be32(body, off).ok_or(RtcpError::BadSdes)?;
        off += 4;
        let mut cname = None;
        loop {
            let item = *body.get(off).ok_or(RtcpError::BadSdes)?;
            if item == 0 {
                // Null item ends the chunk; null padding to 32 bits follows.
                off = (off + 1).next_multiple_of(4);
                if off > body.len() {
                    return Err(RtcpError::BadSdes);
                }
                break;
            }
            let len = usize::from(*body.get(off + 1).ok_or(RtcpError::BadSdes)?);
            let text = body.get(off + 2..off + 2 + len).ok_or(RtcpError::BadSdes)?;
            if item == SDES_CNAME && cname.is_none() {
                cname = Some(String::from_utf8_lossy(text).into_owned());
            }
            off += 2 + len;
        }
        chunks.push(SdesChunk { ssrc, cname });
    }
    Ok(chunks)
}

fn parse_bye(count: u8, body: &[u8]) -> Result<Bye, RtcpError> {
    let n = usize::from(count);
    if body.len() < 4 * n {
        return Err(count_overrun(PT_BYE, count, body.len()));
    }
    let sources = (0..n)
        .map(|i| be32(body, 4 * i).ok_or(count_overrun(PT_BYE, count, body.len())))
        .collect::<Result<Vec<_>, _>>()?;
    let rest = body.get(4 * n..).unwrap_or_default();
    let reason = match rest.split_first() {
        None => None,
        Some((&len, text)) => {
            let text = text.get(..usize::from(len)).ok_or(RtcpError::BadBye)?;
            Some(String::from_utf8_lossy(text).into_owned())
        }
    };
    Ok(Bye { sources, reason })
}

/// Bounds-checked writer over the output buffer.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) -> Result<(), RtcpError> {
        let end = self.pos + b.len();
        let available = self.buf.len();
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(RtcpError::BufferTooSmall {
                needed: end,
                available,
            })?;
        dst.copy_from_slice(b);
        self.pos = end;
        Ok(())
    }

    fn u32(&mut self, v: u32) -> Result<(), RtcpError> {
        self.bytes(&v.to_be_bytes())
    }

    /// Common header; `len` is the packet's total length in bytes.
    fn header(&mut self, count: u8, pt: u8, len: usize) -> Result<(), RtcpError> {
        let words = (len / 4 - 1) as u16;
        let w = words.to_be_bytes();
        self.bytes(&[0x80 | (count & 0x1F), pt, w[0], w[1]])
    }

    fn zeros_to_word(&mut self) -> Result<(), RtcpError> {
        while self.pos % 4 != 0 {
            self.bytes(&[0])?;
        }
        Ok(())
    }
}

/// Reception state for the remote source (RFC 3550 appendix A.1, A.3, A.8).
#[derive(Debug, Clone)]
struct Reception {
    ssrc: u32,
    base_seq: u32,
    max_seq: u16,
    /// Wrap count shifted left 16, as in A.1.
    cycles: u32,
    /// Sequence number that would confirm a large jump; `None` if none.
    bad_seq: Option<u16>,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Relative transit time of the previous packet, in RTP units.
    transit: Option<u32>,
    /// Interarrival jitter in RTP units.
    jitter: f64,
}

impl Reception {
    fn new(ssrc: u32, seq: u16) -> Self {
        Self {
            ssrc,
            base_seq: u32::from(seq),
            max_seq: seq,
            cycles: 0,
            bad_seq: None,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter: 0.0,
        }
    }

    fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    fn expected(&self) -> u32 {
        self.extended_max()
            .wrapping_sub(self.base_seq)
            .wrapping_add(1)
    }

    /// A.1 `update_seq` without probation; false if the packet is not
    /// counted (first packet of a suspected sequence jump).
    fn update_seq(&mut self, seq: u16) -> bool {
        let udelta = seq.wrapping_sub(self.max_seq);
        if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(1 << 16);
            }
            self.max_seq = seq;
        } else if udelta <= u16::MAX - MAX_MISORDER + 1 {
            // Large jump: believe it only if the next packet follows on.
            if self.bad_seq == Some(seq) {
                *self = Self {
                    jitter: self.jitter,
                    ..Self::new(self.ssrc, seq)
                };
            } else {
                self.bad_seq = Some(seq.wrapping_add(1));
                return false;
            }
        }
        // Otherwise a duplicate or reordered packet: counted, max unchanged.
        self.received = self.received.wrapping_add(1);
        true
    }
}

#[derive(Debug, Clone, Copy)]
struct PeerSr {
    ssrc: u32,
    lsr: u32,
    arrival_ms: u64,
}

/// RTCP state for one stream: what we sent, what we received from the one
/// remote source, and the SR timing needed for LSR/DLSR and round-trip time.
#[derive(Debug, Clone)]
pub struct RtcpSender {
    ssrc: u32,
    cname: String,
    packets_sent: u32,
    octets_sent: u32,
    sent_since_report: bool,
    last_sent_rtp_timestamp: u32,
    remote: Option<Reception>,
    peer_sr: Option<PeerSr>,
    /// Our last SR: (middle NTP bits, local ms) to match the peer's LSR.
    our_last_sr: Option<(u32, u64)>,
    rtt_ms: Option<u64>,
    peer_bye: bool,
}

impl RtcpSender {
    /// `cname` longer than 255 bytes is cut at a character boundary (the
    /// SDES length field is one byte).
    pub fn new(ssrc: u32, cname: &str) -> Self {
        let mut end = cname.len().min(255);
        while !cname.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            ssrc,
            cname: cname.get(..end).unwrap_or_default().to_owned(),
            packets_sent: 0,
            octets_sent: 0,
            sent_since_report: false,
            last_sent_rtp_timestamp: 0,
            remote: None,
            peer_sr: None,
            our_last_sr: None,
            rtt_ms: None,
            peer_bye: false,
        }
    }

    /// Our SSRC for this stream.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// RTP packets sent (wraps like the SR field).
    pub fn packets_sent(&self) -> u32 {
        self.packets_sent
    }

    /// Payload octets sent (wraps like the SR field).
    pub fn octets_sent(&self) -> u32 {
        self.octets_sent
    }

    /// The RTP timestamp of the last packet sent.
    pub fn last_sent_rtp_timestamp(&self) -> u32 {
        self.last_sent_rtp_timestamp
    }

    /// Round-trip time from the peer's last report block about us (§6.4.1).
    pub fn rtt_ms(&self) -> Option<u64> {
        self.rtt_ms
    }

    /// The remote source sent a BYE.
    pub fn peer_left(&self) -> bool {
        self.peer_bye
    }

    /// Packets lost so far (RFC 3550 A.3: expected − received; negative
    /// with duplicates) and the interarrival jitter in RTP units.
    pub fn reception(&self) -> Option<(i64, f64)> {
        let r = self.remote.as_ref()?;
        Some((i64::from(r.expected()) - i64::from(r.received), r.jitter))
    }

    /// Account one RTP packet we sent, for the next SR.
    pub fn on_rtp_sent(&mut self, rtp_timestamp: u32, payload_len: usize) {
        self.packets_sent = self.packets_sent.wrapping_add(1);
        // The octet count wraps like the wire field (§6.4.1).
        self.octets_sent = self.octets_sent.wrapping_add(payload_len as u32);
        self.sent_since_report = true;
        self.last_sent_rtp_timestamp = rtp_timestamp;
    }

    /// Account one RTP packet from the peer. A new SSRC replaces the old
    /// source (one remote per stream).
    pub fn on_rtp_received(&mut self, now_ms: u64, ssrc: u32, seq: u16, rtp_timestamp: u32) {
        let r = match &mut self.remote {
            Some(r) if r.ssrc == ssrc => r,
            slot => slot.insert(Reception::new(ssrc, seq)),
        };
        if !r.update_seq(seq) {
            return;
        }
        // §6.4.1 / A.8: arrival time in RTP units; only differences matter,
        // so wrapping is harmless.
        let arrival = now_ms.wrapping_mul(CLOCK_RATE_PER_MS) as u32;
        let transit = arrival.wrapping_sub(rtp_timestamp);
        if let Some(prev) = r.transit {
            let d = f64::from((transit.wrapping_sub(prev) as i32).unsigned_abs());
            r.jitter += (d - r.jitter) / 16.0;
        }
        r.transit = Some(transit);
    }

    /// Record what the peer told us: its last SR (for LSR/DLSR), report
    /// blocks about us (round-trip time), and BYE.
    pub fn on_rtcp_received(&mut self, now_ms: u64, packets: &[RtcpPacket]) {
        for p in packets {
            let blocks = match p {
                RtcpPacket::SenderReport(sr) => {
                    self.peer_sr = Some(PeerSr {
                        ssrc: sr.ssrc,
                        lsr: ntp_middle(sr.ntp_timestamp),
                        arrival_ms: now_ms,
                    });
                    &sr.reports
                }
                RtcpPacket::ReceiverReport(rr) => &rr.reports,
                RtcpPacket::Bye(bye) => {
                    if let Some(r) = &self.remote {
                        self.peer_bye |= bye.sources.contains(&r.ssrc);
                    }
                    continue;
                }
                RtcpPacket::SourceDescription(_) => continue,
            };
            for b in blocks.iter().filter(|b| b.ssrc == self.ssrc) {
                if let Some((lsr, sent_ms)) = self.our_last_sr {
                    if b.last_sr == lsr && lsr != 0 {
                        let held_ms = u64::from(b.delay_since_last_sr) * 1000 / 65536;
                        self.rtt_ms = Some(now_ms.saturating_sub(sent_ms).saturating_sub(held_ms));
                    }
                }
            }
        }
    }

    fn sdes_len(&self) -> usize {
        // SSRC, CNAME item, at least one null octet, padded to 32 bits.
        HEADER_LEN + (4 + 2 + self.cname.len() + 1).next_multiple_of(4)
    }

    /// Report block for the remote source; updates the interval counters.
    fn take_report_block(&mut self, now_ms: u64) -> Option<ReportBlock> {
        let peer_sr = self.peer_sr;
        let r = self.remote.as_mut()?;
        let expected = r.expected();
        let expected_interval = expected.wrapping_sub(r.expected_prior);
        let received_interval = r.received.wrapping_sub(r.received_prior);
        let lost = i64::from(expected) - i64::from(r.received);
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        r.expected_prior = expected;
        r.received_prior = r.received;
        let (last_sr, delay_since_last_sr) = match peer_sr {
            Some(sr) if sr.ssrc == r.ssrc => {
                let held = now_ms.saturating_sub(sr.arrival_ms) * 65536 / 1000;
                (sr.lsr, u32::try_from(held).unwrap_or(u32::MAX))
            }
            _ => (0, 0),
        };
        Some(ReportBlock {
            ssrc: r.ssrc,
            fraction_lost,
            cumulative_lost: lost.clamp(-0x80_0000, 0x7F_FFFF) as i32,
            extended_highest_seq: r.extended_max(),
            jitter: r.jitter as u32,
            last_sr,
            delay_since_last_sr,
        })
    }

    fn write_block(w: &mut Writer<'_>, b: &ReportBlock) -> Result<(), RtcpError> {
        let lost = (u32::from(b.fraction_lost) << 24) | (b.cumulative_lost as u32 & 0x00FF_FFFF);
        for v in [
            b.ssrc,
            lost,
            b.extended_highest_seq,
            b.jitter,
            b.last_sr,
            b.delay_since_last_sr,
        ] {
            w.u32(v)?;
        }
        Ok(())
    }

    fn write_sdes(&self, w: &mut Writer<'_>) -> Result<(), RtcpError> {
        w.header(1, PT_SDES, self.sdes_len())?;
        w.u32(self.ssrc)?;
        // cname.len() <= 255 by construction.
        w.bytes(&[SDES_CNAME, self.cname.len() as u8])?;
        w.bytes(self.cname.as_bytes())?;
        w.bytes(&[0])?;
        w.zeros_to_word()
    }

    /// Build SR (if we sent RTP since the last report) or RR, with a report
    /// block for the remote source, then SDES CNAME (§6.1). `rtp_now` is the
    /// RTP timestamp corresponding to `now_ntp`.
    pub fn build_report(
        &mut self,
        now_ntp: u64,
        now_ms: u64,
        rtp_now: u32,
        out: &mut [u8],
    ) -> Result<usize, RtcpError> {
        let sender = self.sent_since_report;
        let block_due = self
            .remote
            .as_ref()
            .is_some_and(|r| r.received != r.received_prior);
        let report_len = HEADER_LEN
            + if sender { SR_FIXED_LEN } else { 4 }
            + if block_due { REPORT_BLOCK_LEN } else { 0 };
        let needed = report_len + self.sdes_len();
        if out.len() < needed {
            return Err(RtcpError::BufferTooSmall {
                needed,
                available: out.len(),
            });
        }
        // Checked before taking the block so a failed build loses no interval.
        let block = if block_due {
            self.take_report_block(now_ms)
        } else {
            None
        };
        let count = u8::from(block.is_some());

        let mut w = Writer { buf: out, pos: 0 };
        if sender {
            w.header(count, PT_SR, report_len)?;
            w.u32(self.ssrc)?;
            w.u32((now_ntp >> 32) as u32)?;
            w.u32(now_ntp as u32)?;
            w.u32(rtp_now)?;
            w.u32(self.packets_sent)?;
            w.u32(self.octets_sent)?;
            self.our_last_sr = Some((ntp_middle(now_ntp), now_ms));
        } else {
            w.header(count, PT_RR, report_len)?;
            w.u32(self.ssrc)?;
        }
        if let Some(b) = &block {
            Self::write_block(&mut w, b)?;
        }
        self.write_sdes(&mut w)?;
        self.sent_since_report = false;
        Ok(w.pos)
    }

    /// Build the compound packet announcing we leave (§6.6): an empty RR,
    /// SDES CNAME, then BYE with our SSRC and an optional reason. The RR
    /// carries no block because no clock is passed in for DLSR; the last
    /// regular report already carried the statistics.
    pub fn build_bye(&mut self, reason: Option<&str>, out: &mut [u8]) -> Result<usize, RtcpError> {
        let reason = reason.map(str::as_bytes);
        if let Some(r) = reason {
            if r.len() > 255 {
                return Err(RtcpError::ReasonTooLong(r.len()));
            }
        }
        let rr_len = HEADER_LEN + 4;
        let bye_len = HEADER_LEN + 4 + reason.map_or(0, |r| (1 + r.len()).next_multiple_of(4));
        let needed = rr_len + self.sdes_len() + bye_len;
        if out.len() < needed {
            return Err(RtcpError::BufferTooSmall {
                needed,
                available: out.len(),
            });
        }
        let mut w = Writer { buf: out, pos: 0 };
        w.header(0, PT_RR, rr_len)?;
        w.u32(self.ssrc)?;
        self.write_sdes(&mut w)?;
        w.header(1, PT_BYE, bye_len)?;
        w.u32(self.ssrc)?;
        if let Some(r) = reason {
            // r.len() <= 255 checked above.
            w.bytes(&[r.len() as u8])?;
            w.bytes(r)?;
            w.zeros_to_word()?;
        }
        Ok(w.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    const US: u32 = 0x1111_1111;
    const PEER: u32 = 0x2222_2222;

    fn report_block(buf: &[u8]) -> ReportBlock {
        let pkts = parse_compound(buf).unwrap();
        match &pkts[0] {
            RtcpPacket::SenderReport(sr) => sr.reports[0],
            RtcpPacket::ReceiverReport(rr) => rr.reports[0],
            p => panic!("first packet is {p:?}"),
        }
    }

    #[test]
    fn sender_report_round_trip() {
        let mut s = RtcpSender::new(US, "gw@example.net");
        for i in 0..10u32 {
            s.on_rtp_sent(i * 160, 160);
        }
        for seq in 100..150u16 {
            s.on_rtp_received(u64::from(seq) * 20, PEER, seq, u32::from(seq) * 160);
        }
        let mut buf = [0u8; 1500];
        let ntp = 0xE8A0_1234_8000_0000;
        let n = s.build_report(ntp, 5000, 777_000, &mut buf).unwrap();
        // SR with one block = 52 bytes; SDES: 4 + (4 + 2 + 14 + 1 -> 24) = 28.
        assert_eq!(n, 52 + 28);
        assert_eq!(buf[..4], [0x81, 200, 0, 12]);
        assert_eq!(buf[52..56], [0x81, 202, 0, 6]);
        let pkts = parse_compound(&buf[..n]).unwrap();
        assert_eq!(
            pkts,
            vec![
                RtcpPacket::SenderReport(SenderReport {
                    ssrc: US,
                    ntp_timestamp: ntp,
                    rtp_timestamp: 777_000,
                    packet_count: 10,
                    octet_count: 1600,
                    reports: vec![ReportBlock {
                        ssrc: PEER,
                        fraction_lost: 0,
                        cumulative_lost: 0,
                        extended_highest_seq: 149,
                        jitter: 0,
                        last_sr: 0,
                        delay_since_last_sr: 0,
                    }],
                }),
                RtcpPacket::SourceDescription(vec![SdesChunk {
                    ssrc: US,
                    cname: Some("gw@example.net".into()),
                }]),
            ]
        );
        // Nothing sent since: the next report is an RR, and without new
        // packets from the peer it carries no block.
        let n = s
            .build_report(ntp + (5 << 32), 10_000, 817_000, &mut buf)
            .unwrap();
        let pkts = parse_compound(&buf[..n]).unwrap();
        assert_eq!(
            pkts[0],
            RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: US,
                reports: vec![]
            })
        );
        assert_eq!(
            s.build_report(0, 0, 0, &mut buf[..20]),
            Err(RtcpError::BufferTooSmall {
                needed: 8 + 28,
                available: 20
            })
        );
    }

    #[test]
    fn receiver_report_counts_loss() {
        let mut s = RtcpSender::new(US, "x");
        let mut buf = [0u8; 256];
        // Interval 1: 0..=9 without 3, 4, 7.
        for seq in (0..10u16).filter(|q| ![3, 4, 7].contains(q)) {
            s.on_rtp_received(u64::from(seq) * 20, PEER, seq, u32::from(seq) * 160);
        }
        let n = s.build_report(0, 200, 0, &mut buf).unwrap();
        let b = report_block(&buf[..n]);
        assert_eq!(b.extended_highest_seq, 9);
        assert_eq!(b.cumulative_lost, 3);
        assert_eq!(b.fraction_lost, (3 * 256 / 10) as u8); // 76
                                                           // Interval 2: 10..=19 without 15; a duplicate of 12 offsets one loss.
        for seq in (10..20u16).filter(|&q| q != 15) {
            s.on_rtp_received(u64::from(seq) * 20, PEER, seq, u32::from(seq) * 160);
        }
        let n = s.build_report(0, 400, 0, &mut buf).unwrap();
        let b = report_block(&buf[..n]);
        assert_eq!((b.cumulative_lost, b.fraction_lost), (4, 25));
        s.on_rtp_received(420, PEER, 12, 12 * 160);
        s.on_rtp_received(420, PEER, 12, 12 * 160);
        s.on_rtp_received(420, PEER, 20, 20 * 160);
        let n = s.build_report(0, 600, 0, &mut buf).unwrap();
        let b = report_block(&buf[..n]);
        // Expected 1 more, received 3: lost goes down, fraction clamps at 0.
        assert_eq!((b.cumulative_lost, b.fraction_lost), (2, 0));
    }

    #[test]
    fn cumulative_lost_is_signed_24_bit() {
        let mut buf = [0u8; 64];
        let mut w = Writer {
            buf: &mut buf,
            pos: 0,
        };
        w.header(1, PT_RR, 32).unwrap();
        w.u32(US).unwrap();
        let block = ReportBlock {
            ssrc: PEER,
            fraction_lost: 9,
            cumulative_lost: -5,
            extended_highest_seq: 1,
            jitter: 2,
            last_sr: 3,
            delay_since_last_sr: 4,
        };
        RtcpSender::write_block(&mut w, &block).unwrap();
        assert_eq!(buf[12..16], [9, 0xFF, 0xFF, 0xFB]);
        assert_eq!(report_block(&buf[..32]), block);
    }

    #[test]
    fn jitter_matches_hand_computation() {
        let mut s = RtcpSender::new(US, "x");
        let mut buf = [0u8; 256];
        // 20 ms packets; packet 3 arrives 10 ms late (80 timestamp units).
        // Transit: 0, 0, 0, 80, 0, 0 -> |D|: 0, 0, 80, 80, 0.
        // J: 0, 0, 5, 5 + 75/16 = 9.6875, 9.6875 * 15/16 = 9.08203125.
        let arrivals = [0u64, 20, 40, 70, 80, 100];
        for (i, &t) in arrivals.iter().enumerate() {
            s.on_rtp_received(1_000 + t, PEER, i as u16, 5_000 + i as u32 * 160);
            let j = s.remote.as_ref().unwrap().jitter;
            let want = [0.0, 0.0, 0.0, 5.0, 9.6875, 9.082_031_25][i];
            assert!((j - want).abs() < 1e-9, "packet {i}: {j} vs {want}");
        }
        let n = s.build_report(0, 2_000, 0, &mut buf).unwrap();
        assert_eq!(report_block(&buf[..n]).jitter, 9);
    }

    #[test]
    fn sequence_wrap_counts_cycles() {
        let mut s = RtcpSender::new(US, "x");
        let mut buf = [0u8; 256];
        let mut seq = 65_530u16;
        for i in 0..16u32 {
            s.on_rtp_received(u64::from(i) * 20, PEER, seq, i * 160);
            seq = seq.wrapping_add(1);
        }
        let n = s.build_report(0, 400, 0, &mut buf).unwrap();
        let b = report_block(&buf[..n]);
        assert_eq!(b.extended_highest_seq, 65_536 + 9);
        assert_eq!((b.cumulative_lost, b.fraction_lost), (0, 0));
        // A reordered packet from before the wrap does not move the maximum
        // or add a cycle.
        s.on_rtp_received(400, PEER, 65_535, 0);
        s.on_rtp_received(420, PEER, 10, 16 * 160);
        let n = s.build_report(0, 500, 0, &mut buf).unwrap();
        let b = report_block(&buf[..n]);
        assert_eq!(b.extended_highest_seq, 65_536 + 10);
        assert_eq!(b.cumulative_lost, -1);
    }

    #[test]
    fn large_jump_needs_confirmation() {
        let mut s = RtcpSender::new(US, "x");
        for seq in 0..10u16 {
            s.on_rtp_received(0, PEER, seq, 0);
        }
        // One stray packet far ahead is ignored...
        s.on_rtp_received(0, PEER, 20_000, 0);
        s.on_rtp_received(0, PEER, 10, 0);
        assert_eq!(s.remote.as_ref().unwrap().extended_max(), 10);
        // ...two in a row restart the sequence.
        s.on_rtp_received(0, PEER, 30_000, 0);
        s.on_rtp_received(0, PEER, 30_001, 0);
        let r = s.remote.as_ref().unwrap();
        assert_eq!(
            (r.base_seq, r.extended_max(), r.received),
            (30_001, 30_001, 1)
        );
        // A new SSRC replaces the source.
        s.on_rtp_received(0, 0xABCD, 5, 0);
        assert_eq!(s.remote.as_ref().unwrap().ssrc, 0xABCD);
    }

    #[test]
    fn lsr_dlsr_and_rtt() {
        let mut peer = RtcpSender::new(PEER, "peer");
        let mut us = RtcpSender::new(US, "us");
        let mut buf = [0u8; 512];
        // The peer sends RTP and an SR at its NTP time T.
        peer.on_rtp_sent(0, 160);
        us.on_rtp_received(0, PEER, 1, 0);
        let peer_ntp = 0x1234_5678_9ABC_DEF0;
        let n = peer.build_report(peer_ntp, 0, 0, &mut buf).unwrap();
        us.on_rtcp_received(1_000, &parse_compound(&buf[..n]).unwrap());
        // We report 500 ms later.
        us.on_rtp_sent(0, 160);
        let n = us
            .build_report(0xAAAA_BBBB_CCCC_0000, 1_500, 0, &mut buf)
            .unwrap();
        let b = report_block(&buf[..n]);
        assert_eq!(b.last_sr, 0x5678_9ABC);
        assert_eq!(b.delay_since_last_sr, 32_768);

        // The peer answers with a block about our SR after holding it 250 ms;
        // it reaches us 400 ms after we sent: RTT = 400 - 250 = 150 ms.
        let pkts = parse_compound(&buf[..n]).unwrap();
        peer.on_rtp_received(0, US, 1, 0);
        peer.on_rtcp_received(10_000, &pkts);
        let n = peer.build_report(0, 10_250, 0, &mut buf).unwrap();
        us.on_rtcp_received(1_900, &parse_compound(&buf[..n]).unwrap());
        assert_eq!(us.rtt_ms(), Some(150));
    }

    #[test]
    fn bye_round_trip() {
        let mut s = RtcpSender::new(US, "gw");
        let mut buf = [0u8; 256];
        let n = s.build_bye(Some("call ended"), &mut buf).unwrap();
        // RR 8 + SDES 4 + (4 + 2 + 2 + 1 -> 12) + BYE 4 + 4 + (1 + 10 -> 12).
        assert_eq!(n, 8 + 16 + 20);
        let pkts = parse_compound(&buf[..n]).unwrap();
        assert_eq!(
            pkts,
            vec![
                RtcpPacket::ReceiverReport(ReceiverReport {
                    ssrc: US,
                    reports: vec![]
                }),
                RtcpPacket::SourceDescription(vec![SdesChunk {
                    ssrc: US,
                    cname: Some("gw".into())
                }]),
                RtcpPacket::Bye(Bye {
                    sources: vec![US],
                    reason: Some("call ended".into())
                }),
            ]
        );
        let n = s.build_bye(None, &mut buf).unwrap();
        assert_eq!(
            parse_compound(&buf[..n]).unwrap()[2],
            RtcpPacket::Bye(Bye {
                sources: vec![US],
                reason: None
            })
        );
        let long = "x".repeat(256);
        assert_eq!(
            s.build_bye(Some(&long), &mut buf),
            Err(RtcpError::ReasonTooLong(256))
        );
        let mut big = [0u8; 512];
        let n = s.build_bye(Some(&long[..255]), &mut big).unwrap();
        assert_eq!(n, 8 + 16 + 8 + 256);
        assert!(matches!(
            s.build_bye(Some(&long[..255]), &mut buf),
            Err(RtcpError::BufferTooSmall { needed: 288, .. })
        ));

        let mut peer = RtcpSender::new(PEER, "p");
        peer.on_rtp_received(0, US, 0, 0);
        peer.on_rtcp_received(0, &pkts);
        assert!(peer.peer_left());
    }

    #[test]
    fn unknown_types_and_padding() {
        // RR, APP (skipped), then SDES with padding on the last packet.
        let mut p = vec![0x80, 201, 0, 1, 0, 0, 0, 7];
        p.extend_from_slice(&[0x80, 204, 0, 2, 0, 0, 0, 7, b'n', b'a', b'm', b'e']);
        p.extend_from_slice(&[0xA1, 202, 0, 3, 0, 0, 0, 7, 1, 1, b'c', 0, 0, 0, 0, 4]);
        let pkts = parse_compound(&p).unwrap();
        assert_eq!(pkts.len(), 2);
        assert_eq!(
            pkts[1],
            RtcpPacket::SourceDescription(vec![SdesChunk {
                ssrc: 7,
                cname: Some("c".into())
            }])
        );
        // Padding on a packet that is not the last: rejected.
        let mut q = p[..8].to_vec();
        q[0] |= 0x20;
        q[7] = 4;
        q.extend_from_slice(&p[8..]);
        assert_eq!(parse_compound(&q), Err(RtcpError::BadPadding));
        // Long CNAMEs are cut to 255 bytes on a character boundary.
        let s = RtcpSender::new(US, &"é".repeat(200));
        assert_eq!(s.cname.len(), 254);
    }

    #[test]
    fn truncated_and_garbage_never_panic() {
        let mut s = RtcpSender::new(US, "gw@example.net");
        s.on_rtp_sent(0, 160);
        s.on_rtp_received(0, PEER, 1, 0);
        let mut buf = [0u8; 512];
        let n = s.build_report(1 << 40, 0, 0, &mut buf).unwrap();
        let m = s.build_bye(Some("bye"), &mut buf[n..]).unwrap();
        let full = &buf[..n + m];
        let boundaries = [52, n, n + 8, n + 8 + 28];
        assert_eq!(parse_compound(full).unwrap().len(), 5);
        for len in 0..full.len() {
            let r = parse_compound(&full[..len]);
            if boundaries.contains(&len) {
                assert!(r.is_ok(), "{len}");
            } else {
                assert!(r.is_err(), "truncated to {len} parsed: {r:?}");
            }
        }
        assert_eq!(
            parse_compound(&[0x80, 201, 0, 9, 0, 0, 0, 1]),
            Err(RtcpError::LengthOverrun {
                declared: 40,
                available: 8
            })
        );
        assert_eq!(
            parse_compound(&[0x40, 201, 0, 1, 0, 0, 0, 1]),
            Err(RtcpError::BadVersion(1))
        );
        assert!(matches!(
            parse_compound(&[0x83, 201, 0, 1, 0, 0, 0, 1]),
            Err(RtcpError::CountOverrun { .. })
        ));

        let mut rng = XorShift(0xDEAD_BEEF);
        let mut ok = 0;
        let mut junk = [0u8; 128];
        for i in 0..2000 {
            for b in junk.iter_mut() {
                *b = rng.next() as u8;
            }
            let len = (rng.next() % 129) as usize;
            if i % 2 == 0 {
                // Half get a plausible header so the body parsers are hit.
                let words = (len / 4).saturating_sub(1) as u16;
                junk[0] = 0x80 | (junk[0] & 0x3F);
                junk[1] = 200 + (junk[1] % 5);
                junk[2..4].copy_from_slice(&words.to_be_bytes());
            }
            if let Ok(pkts) = parse_compound(&junk[..len]) {
                ok += 1;
                s.on_rtcp_received(0, &pkts);
            }
        }
        println!("random RTCP buffers that parsed: {ok} / 2000");
    }

    #[test]
    fn interval_and_ntp_helpers() {
        assert_eq!(report_interval_ms(5000, 0.0), 2500);
        assert_eq!(report_interval_ms(5000, 0.5), 5000);
        assert_eq!(report_interval_ms(5000, 1.0), 7500);
        assert_eq!(report_interval_ms(5000, 7.0), 7500);
        assert_eq!(report_interval_ms(5000, f64::NAN), 5000);
        assert_eq!(
            ntp_from_unix(0, 500_000_000),
            (2_208_988_800 << 32) | 0x8000_0000
        );
        assert_eq!(ntp_middle(0x1234_5678_9ABC_DEF0), 0x5678_9ABC);
    }
}
