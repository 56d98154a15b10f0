//! RTP (RFC 3550) packet writing and parsing on top of `rtp-rs`.
//!
//! Both directions work on caller-owned buffers and never allocate, so they
//! can run once per 20 ms frame on the media path.

use rtp_rs::{RtpPacketBuildError, RtpPacketBuilder, RtpReader, RtpReaderError, Seq};

/// Size of the fixed RTP header (no CSRCs, no extension).
pub const RTP_HEADER_LEN: usize = 12;

/// Why an RTP packet could not be written or parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// The output buffer can't hold header and payload.
    #[error("RTP output buffer too small: need {needed} bytes, have {available}")]
    BufferTooSmall {
        /// Bytes the packet takes.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// Payload types are 7 bits.
    #[error("RTP payload type {0} out of range (0..=127)")]
    InvalidPayloadType(u8),
    /// Shorter than the fixed 12-byte header.
    #[error("RTP packet too short: {0} bytes, header needs 12")]
    TooShort(usize),
    /// The version field isn't 2.
    #[error("unsupported RTP version {0}, expected 2")]
    UnsupportedVersion(u8),
    /// CSRCs or a header extension run past the end of the packet.
    #[error("RTP header truncated: header needs {header_len} bytes, packet has {packet_len}")]
    HeaderTruncated {
        /// Bytes the header claims.
        header_len: usize,
        /// Bytes received.
        packet_len: usize,
    },
    /// The padding count is zero or longer than the packet body.
    #[error("invalid RTP padding length {0}")]
    InvalidPadding(u8),
    /// Only reachable if `rtp-rs` rejects something we do not set (extensions).
    #[error("RTP packet could not be built")]
    Build,
}

impl From<RtpReaderError> for RtpError {
    fn from(e: RtpReaderError) -> Self {
        match e {
            RtpReaderError::BufferTooShort(n) => RtpError::TooShort(n),
            RtpReaderError::UnsupportedVersion(v) => RtpError::UnsupportedVersion(v),
            RtpReaderError::HeadersTruncated {
                header_len,
                buffer_len,
            } => RtpError::HeaderTruncated {
                header_len,
                packet_len: buffer_len,
            },
            RtpReaderError::PaddingLengthInvalid(p) => RtpError::InvalidPadding(p),
        }
    }
}

/// A parsed incoming RTP packet, borrowing its payload from the receive buffer.
///
/// CSRCs, header extension and padding are skipped: `payload` is exactly the
/// media bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpView<'a> {
    /// 7-bit payload type.
    pub payload_type: u8,
    /// Marker bit: first packet of a talk spurt or a DTMF event.
    pub marker: bool,
    /// Sequence number, +1 per packet.
    pub sequence: u16,
    /// Media clock (8 kHz for G.711 and telephone-event).
    pub timestamp: u32,
    /// The sender's synchronisation source.
    pub ssrc: u32,
    /// The media bytes, without padding.
    pub payload: &'a [u8],
}

/// Write one RTP packet (version 2, no padding, CSRCs or extension) into
/// `buf` and return its length (`12 + payload.len()`).
pub fn write_rtp(
    buf: &mut [u8],
    pt: u8,
    marker: bool,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    payload: &[u8],
) -> Result<usize, RtpError> {
    // Checked here so the error says which limit was hit; rtp-rs folds
    // these into less specific variants.
    if pt > 0x7F {
        return Err(RtpError::InvalidPayloadType(pt));
    }
    let needed = RTP_HEADER_LEN + payload.len();
    if buf.len() < needed {
        return Err(RtpError::BufferTooSmall {
            needed,
            available: buf.len(),
        });
    }
    RtpPacketBuilder::new()
        .payload_type(pt)
        .marked(marker)
        .sequence(Seq::from(seq))
        .timestamp(timestamp)
        .ssrc(ssrc)
        .payload(payload)
        .build_into(buf)
        .map_err(|e| match e {
            RtpPacketBuildError::BufferTooSmall => RtpError::BufferTooSmall {
                needed,
                available: buf.len(),
            },
            RtpPacketBuildError::PayloadTypeInvalid => RtpError::InvalidPayloadType(pt),
            _ => RtpError::Build,
        })
}

/// Parse an incoming RTP packet. Malformed or truncated input is an error,
/// never a panic.
pub fn parse_rtp(buf: &[u8]) -> Result<RtpView<'_>, RtpError> {
    let r = RtpReader::new(buf)?;
    Ok(RtpView {
        payload_type: r.payload_type(),
        marker: r.mark(),
        sequence: u16::from(r.sequence_number()),
        timestamp: r.timestamp(),
        ssrc: r.ssrc(),
        payload: r.payload(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let payload: Vec<u8> = (0..160).map(|i| i as u8).collect();
        let mut buf = [0u8; 1500];
        let n = write_rtp(
            &mut buf,
            0,
            true,
            0xBEEF,
            0xDEAD_BEEF,
            0x1234_5678,
            &payload,
        )
        .unwrap();
        assert_eq!(n, 12 + 160);
        // Header bytes per RFC 3550 figure 1.
        assert_eq!(
            buf[..12],
            [0x80, 0x80, 0xBE, 0xEF, 0xDE, 0xAD, 0xBE, 0xEF, 0x12, 0x34, 0x56, 0x78]
        );
        let v = parse_rtp(&buf[..n]).unwrap();
        assert_eq!(
            v,
            RtpView {
                payload_type: 0,
                marker: true,
                sequence: 0xBEEF,
                timestamp: 0xDEAD_BEEF,
                ssrc: 0x1234_5678,
                payload: &payload,
            }
        );

        let n = write_rtp(&mut buf, 101, false, 0, 0, 0, &[]).unwrap();
        assert_eq!(n, 12);
        let v = parse_rtp(&buf[..n]).unwrap();
        assert_eq!((v.payload_type, v.marker, v.payload), (101, false, &[][..]));
    }

    #[test]
    fn write_errors() {
        let mut small = [0u8; 20];
        assert_eq!(
            write_rtp(&mut small, 8, false, 1, 2, 3, &[0u8; 9]),
            Err(RtpError::BufferTooSmall {
                needed: 21,
                available: 20
            })
        );
        assert_eq!(write_rtp(&mut small, 8, false, 1, 2, 3, &[0u8; 8]), Ok(20));
        assert_eq!(
            write_rtp(&mut small, 128, false, 1, 2, 3, &[]),
            Err(RtpError::InvalidPayloadType(128))
        );
    }

    #[test]
    fn parses_csrc_extension_and_padding() {
        let mut p = vec![0xB1, 0x08, 0, 7, 0, 0, 0, 9, 0, 0, 0, 5];
        p.extend_from_slice(&[1, 2, 3, 4]); // one CSRC
        p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 9, 9, 9, 9]); // extension, 1 word
        p.extend_from_slice(&[0xAA, 0xBB]); // payload
        p.extend_from_slice(&[0, 0, 3]); // 3 padding bytes
        let v = parse_rtp(&p).unwrap();
        assert_eq!(v.payload_type, 8);
        assert_eq!(v.sequence, 7);
        assert_eq!(v.timestamp, 9);
        assert_eq!(v.ssrc, 5);
        assert_eq!(v.payload, &[0xAA, 0xBB]);
    }

    #[test]
    fn truncated_and_garbage_rejected() {
        let mut buf = [0u8; 64];
        let n = write_rtp(&mut buf, 0, false, 1, 2, 3, &[5; 20]).unwrap();
        for len in 0..12 {
            assert_eq!(parse_rtp(&buf[..len]), Err(RtpError::TooShort(len)));
        }
        // Wrong version.
        let mut v1 = buf;
        v1[0] = 0x40;
        assert_eq!(parse_rtp(&v1[..n]), Err(RtpError::UnsupportedVersion(1)));
        // CSRC count larger than the packet.
        let mut cc = buf;
        cc[0] = 0x8F;
        assert!(matches!(
            parse_rtp(&cc[..20]),
            Err(RtpError::HeaderTruncated { .. })
        ));
        // Extension header cut off.
        let mut ext = buf;
        ext[0] = 0x90;
        assert!(parse_rtp(&ext[..14]).is_err());
        // Padding count of zero or past the payload.
        let mut pad = buf;
        pad[0] = 0xA0;
        pad[n - 1] = 0;
        assert_eq!(parse_rtp(&pad[..n]), Err(RtpError::InvalidPadding(0)));
        pad[n - 1] = 200;
        assert_eq!(parse_rtp(&pad[..n]), Err(RtpError::InvalidPadding(200)));
        // Padding flag with nothing after the header.
        assert!(parse_rtp(&pad[..12]).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // Deterministic xorshift so failures reproduce.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut buf = [0u8; 96];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 97) as usize;
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            // Force version 2 half the time so deeper checks are reached.
            if x & 1 == 0 {
                buf[0] = (buf[0] & 0x3F) | 0x80;
            }
            if let Ok(v) = parse_rtp(&buf[..len]) {
                assert!(v.payload.len() + 12 <= len);
            }
        }
    }
}
