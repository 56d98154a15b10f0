//! RFC 4733 telephone-event (DTMF over RTP): payload codec, a receiver that
//! reports each key press exactly once, and a sender that produces the packet
//! sequence for one digit.
//!
//! Sans-IO: callers hand in the RTP timestamp, marker bit and payload of
//! packets already filtered by the negotiated telephone-event payload type,
//! and get payload bytes back to wrap in RTP themselves. Nothing allocates.

/// Size of one event in a telephone-event payload (RFC 4733 §2.3).
pub const EVENT_LEN: usize = 4;
/// Event code of hook flash (RFC 4733 §3.2).
pub const EVENT_FLASH: u8 = 16;
/// Samples per 20 ms packet at the 8 kHz telephone-event clock.
const SAMPLES_PER_FRAME: u32 = 160;
/// RFC 4733 §2.5.1.4: the final packet is sent three times in total.
const END_COPIES: u8 = 3;
/// Longest digit the sender accepts: the 16-bit duration field holds
/// 65535 samples (~8.19 s); beyond that §2.5.1.3 segments would be needed.
pub const MAX_DURATION_MS: u32 = 8000;
/// Number of recent events the receiver remembers, so late copies of an
/// earlier event (reordered behind a newer one) are still recognised.
const HISTORY: usize = 8;

/// Why a telephone-event payload or send request was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    /// The payload is shorter than the 4-byte event header.
    #[error("telephone-event payload too short: {0} bytes, need 4")]
    TooShort(usize),
    /// An event code other than a digit or flash.
    #[error("telephone-event code {0} is not a DTMF digit (0-15) or flash (16)")]
    UnsupportedEvent(u8),
    /// The character has no DTMF event.
    #[error("{0:?} is not a DTMF digit")]
    InvalidDigit(char),
    /// Outside the durations we send, 1..=8000 ms.
    #[error("DTMF duration {0} ms out of range 1..=8000")]
    InvalidDuration(u32),
    /// Above the 6-bit volume field's maximum, 63.
    #[error("DTMF volume {0} out of range 0..=63")]
    InvalidVolume(u8),
}

/// What a telephone-event denotes: a DTMF key or hook flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A key: `0`-`9`, `*`, `#` or `A`-`D`.
    Digit(char),
    /// Hook flash (event 16).
    Flash,
}

/// One decoded telephone event (RFC 4733 §2.3, figure 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Raw event code, 0..=16.
    pub code: u8,
    /// `code` decoded.
    pub kind: EventKind,
    /// E bit: this packet ends the event.
    pub end: bool,
    /// R bit: reserved, must be ignored by receivers; kept for tracing.
    pub reserved: bool,
    /// Power level as -dBm0, 0..=63.
    pub volume: u8,
    /// Duration so far in timestamp units (samples at 8 kHz).
    pub duration: u16,
}

impl TelephoneEvent {
    /// The DTMF key, or `None` for flash.
    pub fn digit(&self) -> Option<char> {
        match self.kind {
            EventKind::Digit(c) => Some(c),
            EventKind::Flash => None,
        }
    }

    /// Encode as the 4-byte wire form.
    pub fn write(&self, out: &mut [u8; EVENT_LEN]) {
        write_event(self.code, self.end, self.volume, self.duration, out);
    }
}

/// Encode one event; the R bit is always sent as zero (RFC 4733 §2.3).
fn write_event(code: u8, end: bool, volume: u8, duration: u16, out: &mut [u8; EVENT_LEN]) {
    let d = duration.to_be_bytes();
    *out = [code, (u8::from(end) << 7) | (volume & 0x3F), d[0], d[1]];
}

/// Map an event code to its key (RFC 4733 §3.2 table 1).
pub fn event_to_digit(code: u8) -> Option<char> {
    match code {
        0..=9 => Some(char::from(b'0' + code)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + code - 12)),
        _ => None,
    }
}

/// Map a key to its event code; lowercase `a`..`d` are accepted.
pub fn digit_to_event(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

/// Decode a telephone-event payload. Only the first event is read: with
/// several events packed into one packet (RFC 4733 §2.5.1.5) the first one is
/// the one the RTP timestamp belongs to.
pub fn parse_event(payload: &[u8]) -> Result<TelephoneEvent, DtmfError> {
    let [code, flags, d0, d1, ..] = *payload else {
        return Err(DtmfError::TooShort(payload.len()));
    };
    let kind = match event_to_digit(code) {
        Some(c) => EventKind::Digit(c),
        None if code == EVENT_FLASH => EventKind::Flash,
        None => return Err(DtmfError::UnsupportedEvent(code)),
    };
    Ok(TelephoneEvent {
        code,
        kind,
        end: flags & 0x80 != 0,
        reserved: flags & 0x40 != 0,
        volume: flags & 0x3F,
        duration: u16::from_be_bytes([d0, d1]),
    })
}

/// A key press, reported once at its first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfDigit {
    /// The key pressed.
    pub digit: char,
    /// RTP timestamp of the event (its start).
    pub timestamp: u32,
}

/// End of a key press, reported once at its first E-bit packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfEnd {
    /// The key released.
    pub digit: char,
    /// Total duration in 8 kHz samples, including earlier segments of a
    /// long event (RFC 4733 §2.5.1.3).
    pub duration_samples: u32,
}

/// What one packet told the receiver. Both can be set when the first packet
/// seen of an event is already its end (earlier ones lost).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DtmfUpdate {
    /// A new press started with this packet.
    pub started: Option<DtmfDigit>,
    /// The press ended with this packet.
    pub ended: Option<DtmfEnd>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    timestamp: u32,
    code: u8,
    ended: bool,
    /// Samples covered by earlier segments of the same long event.
    base: u32,
}

/// Per-stream telephone-event receiver.
///
/// Events are keyed by RTP timestamp (RFC 4733 §2.5.2.1): a timestamp seen
/// before is the same event, whatever its marker bit or E bit says, so
/// continuing packets and the retransmitted end packets are absorbed. A new
/// timestamp is a new press, except that a new timestamp *without* the marker
/// bit continuing an unfinished event with the same code is the next segment
/// of a long event (§2.5.1.3). Flash events are tracked but never reported.
#[derive(Debug, Clone, Default)]
pub struct DtmfReceiver {
    history: [Option<Seen>; HISTORY],
    /// Slot of the most recent event; the next one goes after it.
    newest: usize,
}

impl DtmfReceiver {
    /// A receiver that has seen no events.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget every event, e.g. after an SSRC change.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Feed one telephone-event packet; returns the digit at the first packet
    /// of a new press and `None` otherwise (including for malformed payloads).
    pub fn on_packet(&mut self, timestamp: u32, marker: bool, payload: &[u8]) -> Option<DtmfDigit> {
        self.on_packet_with_end(timestamp, marker, payload)
            .ok()
            .and_then(|u| u.started)
    }

    /// Like [`on_packet`](Self::on_packet), also reporting the end of an
    /// event (once, at its first E-bit packet) and malformed payloads.
    pub fn on_packet_with_end(
        &mut self,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<DtmfUpdate, DtmfError> {
        let ev = parse_event(payload)?;
        let mut update = DtmfUpdate::default();

        let slot = match self.find(timestamp) {
            Some(i) => i,
            None => {
                let prev = self.history.get(self.newest).copied().flatten();
                let continues = prev.filter(|p| {
                    !marker && !p.ended && p.code == ev.code && is_after(timestamp, p.timestamp)
                });
                let base = match continues {
                    Some(p) => {
                        // Only the newest segment of a long event may end it.
                        if let Some(Some(p)) = self.history.get_mut(self.newest) {
                            p.ended = true;
                        }
                        p.base.saturating_add(timestamp.wrapping_sub(p.timestamp))
                    }
                    None => {
                        if let Some(digit) = ev.digit() {
                            update.started = Some(DtmfDigit { digit, timestamp });
                        }
                        0
                    }
                };
                self.newest = (self.newest + 1) % HISTORY;
                if let Some(s) = self.history.get_mut(self.newest) {
                    *s = Some(Seen {
                        timestamp,
                        code: ev.code,
                        ended: false,
                        base,
                    });
                }
                self.newest
            }
        };

        if ev.end {
            if let Some(seen) = self.history.get_mut(slot).and_then(Option::as_mut) {
                if !seen.ended {
                    seen.ended = true;
                    if let Some(digit) = ev.digit() {
                        update.ended = Some(DtmfEnd {
                            digit,
                            duration_samples: seen.base.saturating_add(u32::from(ev.duration)),
                        });
                    }
                }
            }
        }
        Ok(update)
    }

    fn find(&self, timestamp: u32) -> Option<usize> {
        self.history
            .iter()
            .position(|s| s.is_some_and(|s| s.timestamp == timestamp))
    }
}

/// RTP timestamp order with wraparound (RFC 3550 serial arithmetic).
fn is_after(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 0x8000_0000
}

/// Produces the payloads for one digit, one per 20 ms frame.
///
/// Packet `i` (from 1) carries duration `160 * i`; the first has the marker
/// bit; the last frame's packet has the E bit and is sent three times with
/// the same duration (RFC 4733 §2.5.1.4). The caller keeps the RTP timestamp
/// at the event start for every packet and advances the sequence number.
#[derive(Debug, Clone)]
pub struct DtmfSender {
    code: u8,
    volume: u8,
    frames: u32,
    sent_frames: u32,
    end_sent: u8,
}

impl DtmfSender {
    /// A sender for `digit`, lasting `duration_ms` (rounded up to whole
    /// 20 ms frames) at `volume` -dBm0.
    pub fn new(digit: char, duration_ms: u32, volume: u8) -> Result<Self, DtmfError> {
        let code = digit_to_event(digit).ok_or(DtmfError::InvalidDigit(digit))?;
        if duration_ms == 0 || duration_ms > MAX_DURATION_MS {
            return Err(DtmfError::InvalidDuration(duration_ms));
        }
        if volume > 0x3F {
            return Err(DtmfError::InvalidVolume(volume));
        }
        // Round up to whole frames: the tone never comes out shorter.
        let frames = (duration_ms * 8).div_ceil(SAMPLES_PER_FRAME);
        Ok(Self {
            code,
            volume,
            frames,
            sent_frames: 0,
            end_sent: 0,
        })
    }

    /// Total packets this digit takes, end retransmissions included.
    pub fn packet_count(&self) -> u32 {
        self.frames + u32::from(END_COPIES) - 1
    }

    /// True once the end packet and its retransmissions are all out.
    pub fn is_done(&self) -> bool {
        self.end_sent >= END_COPIES
    }

    /// Fill `out` with the next payload; returns (marker, duration so far in
    /// samples), or `None` when the digit is complete.
    pub fn next_payload(&mut self, out: &mut [u8; EVENT_LEN]) -> Option<(bool, u32)> {
        if self.is_done() {
            return None;
        }
        let marker = self.sent_frames == 0;
        if self.sent_frames < self.frames {
            self.sent_frames += 1;
        }
        let end = self.sent_frames == self.frames;
        if end {
            self.end_sent += 1;
        }
        // frames <= 8000 * 8 / 160 = 400, so this is at most 64000.
        let duration = self.sent_frames * SAMPLES_PER_FRAME;
        let wire = u16::try_from(duration).unwrap_or(u16::MAX);
        write_event(self.code, end, self.volume, wire, out);
        Some((marker, duration))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp_packet::parse_rtp;

    const SIPP_DIR: &str = "/usr/share/sip-tester";

    fn le32(b: &[u8], at: usize) -> Option<u32> {
        let s = b.get(at..at + 4)?;
        Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    /// Minimal classic-pcap reader (little-endian, Ethernet/IPv4/UDP):
    /// returns the UDP payloads.
    fn pcap_udp_payloads(data: &[u8]) -> Vec<&[u8]> {
        assert_eq!(le32(data, 0), Some(0xA1B2_C3D4), "not a little-endian pcap");
        assert_eq!(le32(data, 20), Some(1), "link type is not Ethernet");
        let mut out = Vec::new();
        let mut off = 24;
        while off < data.len() {
            let incl = le32(data, off + 8).expect("record header") as usize;
            let rec = data.get(off + 16..off + 16 + incl).expect("record body");
            off += 16 + incl;
            if rec.get(12..14) != Some(&[0x08, 0x00][..]) {
                continue; // not IPv4
            }
            let ip = &rec[14..];
            let ihl = usize::from(ip[0] & 0x0F) * 4;
            if ip[9] != 17 {
                continue; // not UDP
            }
            let udp_len = usize::from(u16::from_be_bytes([ip[ihl + 4], ip[ihl + 5]]));
            out.push(&ip[ihl + 8..ihl + udp_len]);
        }
        out
    }

    #[test]
    fn sipp_pcaps_yield_one_digit_each() {
        let names = [
            ("0", '0'),
            ("1", '1'),
            ("2", '2'),
            ("3", '3'),
            ("4", '4'),
            ("5", '5'),
            ("6", '6'),
            ("7", '7'),
            ("8", '8'),
            ("9", '9'),
            ("star", '*'),
            ("pound", '#'),
        ];
        for (name, want) in names {
            let path = format!("{SIPP_DIR}/dtmf_2833_{name}.pcap");
            let data = std::fs::read(&path).unwrap_or_else(|e| {
                panic!("cannot read {path}: {e}; run `apt-get install sip-tester`")
            });
            let packets: Vec<_> = pcap_udp_payloads(&data)
                .into_iter()
                .map(|p| parse_rtp(p).expect("RTP"))
                .collect();
            // The telephone-event PT is the one carrying 4-byte payloads.
            let pt = packets
                .iter()
                .find(|p| p.payload.len() == EVENT_LEN)
                .expect("a telephone-event packet")
                .payload_type;
            assert_eq!(pt, 101, "{name}");

            let mut rx = DtmfReceiver::new();
            let mut digits = Vec::new();
            let mut ends = Vec::new();
            for p in packets.iter().filter(|p| p.payload_type == pt) {
                let u = rx
                    .on_packet_with_end(p.timestamp, p.marker, p.payload)
                    .expect("valid event");
                digits.extend(u.started);
                ends.extend(u.ended);
            }
            assert_eq!(digits.len(), 1, "{name}: {digits:?}");
            assert_eq!(digits[0].digit, want, "{name}");
            assert_eq!(ends.len(), 1, "{name}: {ends:?}");
            assert_eq!(ends[0].digit, want);
            // SIPp's end packets carry 0x08c0 = 2240 samples (280 ms).
            assert_eq!(ends[0].duration_samples, 2240, "{name}");
        }
    }

    #[test]
    fn parse_fields_and_codes() {
        let ev = parse_event(&[11, 0x80 | 0x40 | 10, 0x01, 0x40]).unwrap();
        assert_eq!(ev.kind, EventKind::Digit('#'));
        assert!(ev.end && ev.reserved);
        assert_eq!((ev.volume, ev.duration), (10, 320));
        let mut buf = [0u8; 4];
        ev.write(&mut buf);
        // R is sent as zero.
        assert_eq!(buf, [11, 0x8A, 0x01, 0x40]);

        for code in 0..=15u8 {
            let d = event_to_digit(code).unwrap();
            assert_eq!(digit_to_event(d), Some(code));
            assert_eq!(parse_event(&[code, 0, 0, 0]).unwrap().digit(), Some(d));
        }
        assert_eq!(digit_to_event('c'), Some(14));
        let flash = parse_event(&[16, 0, 0, 0]).unwrap();
        assert_eq!((flash.kind, flash.digit()), (EventKind::Flash, None));
        // Packed events: only the first counts.
        assert_eq!(
            parse_event(&[3, 0x8A, 0, 160, 4, 0x0A, 0, 80])
                .unwrap()
                .digit(),
            Some('3')
        );
    }

    #[test]
    fn garbage_is_rejected_without_panic() {
        for len in 0..4 {
            assert_eq!(parse_event(&[1; 3][..len]), Err(DtmfError::TooShort(len)));
        }
        for code in 17..=255u8 {
            assert_eq!(
                parse_event(&[code, 0, 0, 0]),
                Err(DtmfError::UnsupportedEvent(code))
            );
        }
        let mut rx = DtmfReceiver::new();
        let mut x: u32 = 0x1234_5678;
        let mut buf = [0u8; 8];
        for i in 0..5000u32 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            let len = (x >> 8) as usize % 9;
            let _ = rx.on_packet(x, i % 3 == 0, &buf[..len]);
            let _ = rx.on_packet_with_end(x >> 3, false, &buf[..len]);
        }
        assert_eq!(rx.on_packet(1, true, &[]), None);
        assert!(rx.on_packet_with_end(1, true, &[200, 0, 0, 0]).is_err());
    }

    fn send_all(tx: &mut DtmfSender) -> Vec<(bool, u32, [u8; 4])> {
        let mut v = Vec::new();
        let mut buf = [0u8; 4];
        while let Some((m, d)) = tx.next_payload(&mut buf) {
            v.push((m, d, buf));
        }
        v
    }

    #[test]
    fn sender_sequence() {
        let mut tx = DtmfSender::new('5', 100, 10).unwrap();
        assert_eq!(tx.packet_count(), 7);
        let pkts = send_all(&mut tx);
        let durations: Vec<u32> = pkts.iter().map(|p| p.1).collect();
        assert_eq!(durations, [160, 320, 480, 640, 800, 800, 800]);
        let markers: Vec<bool> = pkts.iter().map(|p| p.0).collect();
        assert_eq!(markers, [true, false, false, false, false, false, false]);
        for (i, (_, d, b)) in pkts.iter().enumerate() {
            let ev = parse_event(b).unwrap();
            assert_eq!(ev.digit(), Some('5'));
            assert_eq!(ev.volume, 10);
            assert_eq!(u32::from(ev.duration), *d);
            assert_eq!(ev.end, i >= 4, "packet {i}");
        }
        assert!(tx.is_done());
        assert_eq!(tx.next_payload(&mut [0; 4]), None);

        // 10 ms rounds up to one frame: marker and end on the same packet.
        let pkts = send_all(&mut DtmfSender::new('#', 10, 0).unwrap());
        assert_eq!(pkts.len(), 3);
        assert!(pkts[0].0 && parse_event(&pkts[0].2).unwrap().end);

        assert_eq!(
            DtmfSender::new('x', 100, 10).err(),
            Some(DtmfError::InvalidDigit('x'))
        );
        assert_eq!(
            DtmfSender::new('1', 0, 10).err(),
            Some(DtmfError::InvalidDuration(0))
        );
        assert_eq!(
            DtmfSender::new('1', 8001, 10).err(),
            Some(DtmfError::InvalidDuration(8001))
        );
        assert_eq!(
            DtmfSender::new('1', 100, 64).err(),
            Some(DtmfError::InvalidVolume(64))
        );
        let long = send_all(&mut DtmfSender::new('1', MAX_DURATION_MS, 0).unwrap());
        assert_eq!(long.last().map(|p| p.1), Some(64000));
    }

    /// Send `digit` starting at `ts`, feeding `rx`; returns what it reported.
    fn round_trip(rx: &mut DtmfReceiver, digit: char, ts: u32) -> (Vec<DtmfDigit>, Vec<DtmfEnd>) {
        let mut tx = DtmfSender::new(digit, 120, 10).unwrap();
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        for (marker, _, payload) in send_all(&mut tx) {
            let u = rx.on_packet_with_end(ts, marker, &payload).unwrap();
            starts.extend(u.started);
            ends.extend(u.ended);
        }
        (starts, ends)
    }

    #[test]
    fn round_trip_presses() {
        let mut rx = DtmfReceiver::new();
        let (s, e) = round_trip(&mut rx, '7', 1000);
        assert_eq!(
            s,
            [DtmfDigit {
                digit: '7',
                timestamp: 1000
            }]
        );
        assert_eq!(
            e,
            [DtmfEnd {
                digit: '7',
                duration_samples: 960
            }]
        );
        // More copies of the end packet (e.g. network duplication): nothing.
        let end = [7, 0x8A, 0x03, 0xC0];
        for _ in 0..5 {
            assert_eq!(
                rx.on_packet_with_end(1000, false, &end),
                Ok(DtmfUpdate::default())
            );
        }
        // Same digit, new timestamp: a second press.
        let (s, e) = round_trip(&mut rx, '7', 3000);
        assert_eq!(
            s,
            [DtmfDigit {
                digit: '7',
                timestamp: 3000
            }]
        );
        assert_eq!(e.len(), 1);
        // A late copy of the first press, reordered behind the second.
        assert_eq!(rx.on_packet(1000, false, &end), None);
        // Timestamp wraparound is just another timestamp.
        let (s, _) = round_trip(&mut rx, 'D', u32::MAX - 10);
        assert_eq!(s.len(), 1);
        let (s, _) = round_trip(&mut rx, 'D', 150);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn lost_start_and_lost_end() {
        let mut rx = DtmfReceiver::new();
        // Only the end packets arrive: digit and end both reported once.
        let end = [2, 0x8A, 0x03, 0x20];
        let u = rx.on_packet_with_end(500, false, &end).unwrap();
        assert_eq!(u.started.map(|d| d.digit), Some('2'));
        assert_eq!(u.ended.map(|e| e.duration_samples), Some(800));
        assert_eq!(
            rx.on_packet_with_end(500, false, &end),
            Ok(DtmfUpdate::default())
        );
        // Press whose end packets are all lost, then a new press with marker.
        assert!(rx.on_packet(900, true, &[2, 0x0A, 0, 160]).is_some());
        assert!(rx.on_packet(2000, true, &[2, 0x0A, 0, 160]).is_some());
    }

    #[test]
    fn long_event_segments_are_one_press() {
        let mut rx = DtmfReceiver::new();
        // First segment saturates at 0xFFFF without an end (§2.5.1.3).
        assert!(rx.on_packet(0, true, &[9, 0x0A, 0, 160]).is_some());
        assert!(rx.on_packet(0, false, &[9, 0x0A, 0xFF, 0xFF]).is_none());
        // Next segment: new timestamp, no marker, same code.
        assert!(rx.on_packet(65535, false, &[9, 0x0A, 0, 160]).is_none());
        let u = rx
            .on_packet_with_end(65535, false, &[9, 0x8A, 0x03, 0x20])
            .unwrap();
        assert_eq!(u.started, None);
        assert_eq!(u.ended.map(|e| e.duration_samples), Some(65535 + 800));
    }
}
