//! Opus in Ogg (RFC 7845) for recordings: one 20 ms Opus packet a frame,
//! a page a second. Runs on the writer thread, never on the audio loop.

use std::fs::File;
use std::io::{BufWriter, Write as _};

use audiopus::coder::Encoder;
use audiopus::{Application, Channels, SampleRate};
use ogg::writing::{PacketWriteEndInfo, PacketWriter};

use crate::config::RecordChannels;
use crate::media::record_tap::RecordFrame;
use crate::media::FRAME_SAMPLES;

/// One 20 ms packet in 48 kHz granule units (RFC 7845 §4).
const GRANULE_PER_FRAME: u64 = 960;
/// Packets per page: about a second.
const PACKETS_PER_PAGE: u64 = 50;
const SERIAL: u32 = 0x6372_6c6e;

pub(super) struct OggSink {
    out: PacketWriter<'static, BufWriter<File>>,
    encoder: Encoder,
    channels: RecordChannels,
    /// Packets written; the one encoded last waits in `held`, so the
    /// stream's last packet can carry its end flag.
    packets: u64,
    held: Option<Vec<u8>>,
}

fn io(e: audiopus::Error) -> std::io::Error {
    std::io::Error::other(format!("opus: {e}"))
}

impl OggSink {
    pub(super) fn new(file: File, channels: RecordChannels) -> std::io::Result<OggSink> {
        let (opus_channels, count) = match channels {
            RecordChannels::Mono => (Channels::Mono, 1u8),
            RecordChannels::Dual => (Channels::Stereo, 2u8),
        };
        let encoder =
            Encoder::new(SampleRate::Hz8000, opus_channels, Application::Voip).map_err(io)?;
        // Lookahead is in input samples (8 kHz); pre-skip counts at 48 kHz.
        let pre_skip = u16::try_from(encoder.lookahead().map_err(io)? * 6).unwrap_or(0);
        let mut out = PacketWriter::new(BufWriter::with_capacity(16 * 1024, file));
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1);
        head.push(count);
        head.extend_from_slice(&pre_skip.to_le_bytes());
        head.extend_from_slice(&8000u32.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes());
        head.push(0);
        out.write_packet(head, SERIAL, PacketWriteEndInfo::EndPage, 0)?;
        let vendor = b"crossline";
        let mut tags = Vec::with_capacity(8 + 4 + vendor.len() + 4);
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes());
        out.write_packet(tags, SERIAL, PacketWriteEndInfo::EndPage, 0)?;
        Ok(OggSink {
            out,
            encoder,
            channels,
            packets: 0,
            held: None,
        })
    }

    fn put(&mut self, packet: Vec<u8>, end: PacketWriteEndInfo) -> std::io::Result<()> {
        self.packets += 1;
        self.out
            .write_packet(packet, SERIAL, end, self.packets * GRANULE_PER_FRAME)
    }
}

impl super::writer::Sink for OggSink {
    fn write(&mut self, frame: &RecordFrame) -> std::io::Result<()> {
        let mut pcm = [0i16; FRAME_SAMPLES * 2];
        let input: &[i16] = match self.channels {
            RecordChannels::Mono => {
                for (slot, (a, b)) in pcm
                    .iter_mut()
                    .zip(frame.caller.iter().zip(frame.other.iter()))
                {
                    *slot = a.saturating_add(*b);
                }
                pcm.get(..FRAME_SAMPLES).unwrap_or_default()
            }
            RecordChannels::Dual => {
                for (pair, (l, r)) in pcm
                    .chunks_exact_mut(2)
                    .zip(frame.caller.iter().zip(frame.other.iter()))
                {
                    if let [left, right] = pair {
                        *left = *l;
                        *right = *r;
                    }
                }
                &pcm
            }
        };
        let mut packet = [0u8; 1275];
        let n = self.encoder.encode(input, &mut packet).map_err(io)?;
        let encoded = packet.get(..n).unwrap_or_default().to_vec();
        if let Some(previous) = self.held.replace(encoded) {
            let end = if (self.packets + 1) % PACKETS_PER_PAGE == 0 {
                PacketWriteEndInfo::EndPage
            } else {
                PacketWriteEndInfo::NormalPacket
            };
            self.put(previous, end)?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> std::io::Result<()> {
        if let Some(last) = self.held.take() {
            self.put(last, PacketWriteEndInfo::EndStream)?;
        }
        let mut out = self.out.into_inner();
        out.flush()?;
        out.get_ref().sync_data()
    }
}
