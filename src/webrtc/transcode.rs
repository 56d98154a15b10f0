//! Opus (the browser) ↔ G.711 µ-law 8 kHz (the gateway), one 20 ms frame
//! at a time, with audiopus. libopus itself decodes to 8 kHz and encodes
//! from 8 kHz (narrowband, all a G.711 leg carries), so there is no
//! separate resampler: about half the CPU of decoding at 48 kHz and
//! resampling (benches/README.md, section 5). Opus keeps its 48 kHz RTP
//! clock whatever the codec's sample rate. Buffers are allocated once per
//! leg; a frame allocates nothing.

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Channels, SampleRate};

/// Samples in 20 ms at Opus's RTP clock rate.
pub const FRAME_48K: usize = 960;
/// Samples in 20 ms at 8 kHz.
pub const FRAME_8K: usize = 160;
/// The largest Opus frame a decoder may return (120 ms), at 8 kHz.
const MAX_OPUS_SAMPLES_8K: usize = 960;

#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("opus: {0}")]
    Opus(#[from] audiopus::Error),
}

/// Browser → gateway: Opus packets in, 20 ms of µ-law out.
pub struct Uplink {
    decoder: Decoder,
    pcm: Vec<i16>,
    /// Decoded samples not yet sent on: a packet of 10 or 60 ms doesn't
    /// split into whole 20 ms frames.
    pending: Vec<i16>,
}

impl Uplink {
    pub fn new() -> Result<Uplink, TranscodeError> {
        Ok(Uplink {
            decoder: Decoder::new(SampleRate::Hz8000, Channels::Mono)?,
            pcm: vec![0; MAX_OPUS_SAMPLES_8K],
            pending: Vec::with_capacity(MAX_OPUS_SAMPLES_8K + FRAME_8K),
        })
    }

    /// Decode one Opus packet (None: it was lost; conceal it) and call
    /// `out` with each complete 20 ms µ-law frame.
    pub fn push(
        &mut self,
        packet: Option<&[u8]>,
        mut out: impl FnMut(&[u8; FRAME_8K]),
    ) -> Result<(), TranscodeError> {
        // Concealment fills exactly the space given: one 20 ms frame.
        let room = if packet.is_some() {
            MAX_OPUS_SAMPLES_8K
        } else {
            FRAME_8K
        };
        let n = self.decoder.decode(packet, &mut self.pcm[..room], false)?;
        let decoded = self.pcm.get(..n).unwrap_or_default();
        let mut frame = [0u8; FRAME_8K];
        if self.pending.is_empty() {
            // The usual case: whole 20 ms frames straight from the decoder.
            let mut frames = decoded.chunks_exact(FRAME_8K);
            for chunk in &mut frames {
                encode_ulaw(chunk, &mut frame);
                out(&frame);
            }
            self.pending.extend_from_slice(frames.remainder());
            return Ok(());
        }
        self.pending.extend_from_slice(decoded);
        let whole = self.pending.len() / FRAME_8K * FRAME_8K;
        for chunk in self.pending[..whole].chunks_exact(FRAME_8K) {
            encode_ulaw(chunk, &mut frame);
            out(&frame);
        }
        self.pending.drain(..whole);
        Ok(())
    }
}

fn encode_ulaw(pcm: &[i16], frame: &mut [u8; FRAME_8K]) {
    for (dst, s) in frame.iter_mut().zip(pcm) {
        *dst = crate::media::g711::linear_to_ulaw(*s);
    }
}

/// Gateway → browser: 20 ms of µ-law in, one Opus packet out.
pub struct Downlink {
    encoder: Encoder,
    pcm: [i16; FRAME_8K],
}

impl Downlink {
    /// `complexity` 0..=10: Opus's CPU/quality trade-off (see
    /// benches/README.md, section 5, for what each costs here).
    pub fn new(complexity: u8) -> Result<Downlink, TranscodeError> {
        let mut encoder = Encoder::new(SampleRate::Hz8000, Channels::Mono, Application::Voip)?;
        encoder.set_complexity(complexity.min(10))?;
        Ok(Downlink {
            encoder,
            pcm: [0; FRAME_8K],
        })
    }

    /// Encode one 20 ms µ-law frame into `packet`; returns its length.
    /// A short frame is padded with silence.
    pub fn push(&mut self, ulaw: &[u8], packet: &mut [u8]) -> Result<usize, TranscodeError> {
        self.pcm.fill(0);
        for (dst, c) in self.pcm.iter_mut().zip(ulaw) {
            *dst = crate::media::g711::ulaw_to_linear(*c);
        }
        Ok(self.encoder.encode(&self.pcm, packet)?)
    }
}

/// Opus packets as a browser sends them, for benchmarks and the load
/// tool: 48 kHz fullband at 32 kb/s, 20 ms each, of a voice-like signal (a
/// wobbling pitch with harmonics up to 8 kHz, in 4 Hz syllables), so the
/// decoder does a browser's work, not a narrowband packet's.
#[doc(hidden)]
pub fn browser_like_opus(frames: usize) -> Result<Vec<Vec<u8>>, TranscodeError> {
    let mut encoder = Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip)?;
    encoder.set_bitrate(audiopus::Bitrate::BitsPerSecond(32_000))?;
    let mut pcm = [0i16; FRAME_48K];
    let mut packet = [0u8; 1500];
    let mut phase = 0.0f64;
    let mut packets = Vec::with_capacity(frames);
    for f in 0..frames {
        for (i, s) in pcm.iter_mut().enumerate() {
            let t = (f * FRAME_48K + i) as f64 / 48_000.0;
            let pitch = 160.0 + 40.0 * (t * 2.3).sin();
            phase += 2.0 * std::f64::consts::PI * pitch / 48_000.0;
            let voice: f64 = (1..=40)
                .map(|k| {
                    let k = f64::from(k);
                    if k * pitch < 8_000.0 {
                        (phase * k).sin() / k
                    } else {
                        0.0
                    }
                })
                .sum();
            let syllables = 0.55 + 0.45 * (t * 2.0 * std::f64::consts::PI * 4.0).sin();
            *s = (voice * syllables * 5_000.0) as i16;
        }
        let n = encoder.encode(&pcm, &mut packet)?;
        packets.push(packet.get(..n).unwrap_or_default().to_vec());
    }
    Ok(packets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone_8k(freq: f64, frames: usize) -> Vec<u8> {
        (0..frames * FRAME_8K)
            .map(|i| {
                let s = (i as f64 * 2.0 * std::f64::consts::PI * freq / 8000.0).sin() * 8000.0;
                crate::media::g711::linear_to_ulaw(s as i16)
            })
            .collect()
    }

    /// Goertzel amplitude of `freq` in 8 kHz samples.
    fn level(samples: &[i16], freq: f64) -> f64 {
        let k = 2.0 * (2.0 * std::f64::consts::PI * freq / 8000.0).cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in samples {
            let s0 = f64::from(x) + k * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        2.0 * (s1 * s1 + s2 * s2 - k * s1 * s2).max(0.0).sqrt() / samples.len() as f64
    }

    #[test]
    fn ten_millisecond_packets_make_whole_frames() {
        // A browser may send 10 ms packets: two make one 20 ms frame, and
        // the half frame in between waits.
        let enc = Encoder::new(SampleRate::Hz8000, Channels::Mono, Application::Voip).unwrap();
        let pcm: Vec<i16> = tone_8k(1000.0, 3)
            .iter()
            .map(|c| crate::media::g711::ulaw_to_linear(*c))
            .collect();
        let mut up = Uplink::new().unwrap();
        let mut packet = [0u8; 1500];
        let mut out = Vec::new();
        for half in pcm.chunks(FRAME_8K / 2).take(5) {
            let n = enc.encode(half, &mut packet).unwrap();
            let mut frames = 0;
            up.push(Some(&packet[..n]), |_| frames += 1).unwrap();
            out.push(frames);
        }
        assert_eq!(out, [0, 1, 0, 1, 0]);
    }

    #[test]
    fn a_tone_survives_the_round_trip() {
        // 8 kHz µ-law → Opus 48 kHz → back to 8 kHz µ-law: the 1 kHz tone
        // is still there, and 400 Hz is not.
        let mut down = Downlink::new(1).unwrap();
        let mut up = Uplink::new().unwrap();
        let input = tone_8k(1000.0, 50);
        let mut packet = [0u8; 1500];
        let mut back: Vec<i16> = Vec::new();
        for frame in input.chunks(FRAME_8K) {
            let n = down.push(frame, &mut packet).unwrap();
            assert!(n < 400, "opus packet of {n} bytes");
            if n == 0 {
                continue;
            }
            up.push(Some(&packet[..n]), |f| {
                back.extend(f.iter().map(|c| crate::media::g711::ulaw_to_linear(*c)))
            })
            .unwrap();
        }
        assert!(back.len() >= 45 * FRAME_8K, "{} samples back", back.len());
        // Skip the codec and resampler start-up.
        let steady = &back[10 * FRAME_8K..];
        let tone = level(steady, 1000.0);
        assert!(tone > 4000.0, "1 kHz at {tone}");
        assert!(level(steady, 400.0) < tone / 20.0);
        // A lost packet is concealed: still one frame out.
        let mut frames = 0;
        up.push(None, |_| frames += 1).unwrap();
        assert_eq!(frames, 1);
    }
}
