//! Opus 48 kHz (the browser) ↔ G.711 µ-law 8 kHz (the gateway), one 20 ms
//! frame at a time: audiopus for Opus, rubato for the rate change. Buffers
//! are allocated once per leg; a frame allocates nothing.

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Channels, SampleRate};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

/// Samples in 20 ms.
pub const FRAME_48K: usize = 960;
pub const FRAME_8K: usize = 160;
/// The largest Opus frame a decoder may return (120 ms at 48 kHz).
const MAX_OPUS_SAMPLES: usize = 5760;

#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("opus: {0}")]
    Opus(#[from] audiopus::Error),
    #[error("resampler: {0}")]
    Resample(String),
}

fn resampler(rate_in: usize, rate_out: usize, chunk_in: usize) -> Result<Fft<f32>, TranscodeError> {
    Fft::<f32>::new(rate_in, rate_out, chunk_in, 1, FixedSync::Both)
        .map_err(|e| TranscodeError::Resample(e.to_string()))
}

/// A fixed-ratio resampler fed from a queue: whatever arrives is queued,
/// every full chunk is converted, and output accumulates for the caller.
struct Stream {
    resampler: Fft<f32>,
    input: Vec<f32>,
    chunk: Vec<f32>,
    converted: Vec<f32>,
    /// Output not yet taken.
    pub output: Vec<f32>,
}

impl Stream {
    fn new(rate_in: usize, rate_out: usize, chunk_in: usize) -> Result<Stream, TranscodeError> {
        let resampler = resampler(rate_in, rate_out, chunk_in)?;
        let max_out = resampler.output_frames_max();
        Ok(Stream {
            resampler,
            input: Vec::with_capacity(chunk_in * 8),
            chunk: vec![0.0; chunk_in],
            converted: vec![0.0; max_out],
            output: Vec::with_capacity(max_out * 8),
        })
    }

    fn push(&mut self, samples: impl Iterator<Item = f32>) -> Result<(), TranscodeError> {
        self.input.extend(samples);
        loop {
            let need = self.resampler.input_frames_next();
            if self.input.len() < need {
                return Ok(());
            }
            self.chunk.resize(need, 0.0);
            self.chunk.copy_from_slice(&self.input[..need]);
            self.input.drain(..need);
            let room = self.converted.len();
            let inp = InterleavedSlice::new(&self.chunk[..], 1, need)
                .map_err(|e| TranscodeError::Resample(e.to_string()))?;
            let mut out = InterleavedSlice::new_mut(&mut self.converted[..], 1, room)
                .map_err(|e| TranscodeError::Resample(e.to_string()))?;
            let (_, written) = self
                .resampler
                .process_into_buffer(&inp, &mut out, None)
                .map_err(|e| TranscodeError::Resample(e.to_string()))?;
            self.output
                .extend_from_slice(&self.converted[..written.min(room)]);
        }
    }
}

/// Browser → gateway: Opus packets in, 20 ms of µ-law out.
pub struct Uplink {
    decoder: Decoder,
    stream: Stream,
    pcm: Vec<i16>,
}

impl Uplink {
    pub fn new() -> Result<Uplink, TranscodeError> {
        Ok(Uplink {
            decoder: Decoder::new(SampleRate::Hz48000, Channels::Mono)?,
            stream: Stream::new(48_000, 8_000, FRAME_48K)?,
            pcm: vec![0; MAX_OPUS_SAMPLES],
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
            MAX_OPUS_SAMPLES
        } else {
            FRAME_48K
        };
        let n = self.decoder.decode(packet, &mut self.pcm[..room], false)?;
        let decoded = self.pcm.get(..n).unwrap_or_default();
        self.stream
            .push(decoded.iter().map(|s| f32::from(*s) / 32768.0))?;
        while self.stream.output.len() >= FRAME_8K {
            let mut frame = [0u8; FRAME_8K];
            for (dst, s) in frame.iter_mut().zip(&self.stream.output[..FRAME_8K]) {
                *dst = crate::media::g711::linear_to_ulaw((s * 32768.0).round() as i16);
            }
            self.stream.output.drain(..FRAME_8K);
            out(&frame);
        }
        Ok(())
    }
}

/// Gateway → browser: 20 ms of µ-law in, one Opus packet out.
pub struct Downlink {
    encoder: Encoder,
    stream: Stream,
    pcm: Vec<i16>,
}

impl Downlink {
    /// `complexity` 0..=10: Opus's CPU/quality trade-off (1 is plenty for
    /// telephone-band audio and about 3x cheaper than 10).
    pub fn new(complexity: u8) -> Result<Downlink, TranscodeError> {
        let mut encoder = Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip)?;
        encoder.set_complexity(complexity.min(10))?;
        Ok(Downlink {
            encoder,
            stream: Stream::new(8_000, 48_000, FRAME_8K)?,
            pcm: vec![0; FRAME_48K],
        })
    }

    /// Encode one 20 ms µ-law frame into `packet`; returns its length (0
    /// while the resampler is still filling up).
    pub fn push(&mut self, ulaw: &[u8], packet: &mut [u8]) -> Result<usize, TranscodeError> {
        self.stream.push(
            ulaw.iter()
                .map(|c| f32::from(crate::media::g711::ulaw_to_linear(*c)) / 32768.0),
        )?;
        if self.stream.output.len() < FRAME_48K {
            return Ok(0);
        }
        for (dst, s) in self.pcm.iter_mut().zip(&self.stream.output[..FRAME_48K]) {
            *dst = (s * 32768.0).round() as i16;
        }
        self.stream.output.drain(..FRAME_48K);
        Ok(self.encoder.encode(&self.pcm, packet)?)
    }
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
