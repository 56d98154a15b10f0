//! Audio for and from the tests: tone WAVs to play, and the analysis of
//! the G.711 RTP a caller received.

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

/// A sine tone as a 16-bit mono WAV at `rate`.
pub fn write_tone(path: &Path, freq: f64, secs: f64, amp: f64, rate: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..(secs * f64::from(rate)) as usize {
        let t = i as f64 / f64::from(rate);
        w.write_sample((amp * (2.0 * PI * freq * t).sin()) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
}

/// Amplitude of one frequency in an 8 kHz frame (Goertzel).
pub fn tone_level(samples: &[f64], freq: f64) -> f64 {
    tone_level_at(samples, freq, 8000.0)
}

/// Amplitude of one frequency in samples at `rate` Hz (Goertzel).
pub fn tone_level_at(samples: &[f64], freq: f64, rate: f64) -> f64 {
    let k = 2.0 * (2.0 * PI * freq / rate).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in samples {
        let s0 = x + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = (s1 * s1 + s2 * s2 - k * s1 * s2).max(0.0);
    2.0 * power.sqrt() / samples.len() as f64
}

/// G.711 µ-law to linear (ITU-T G.711, independent of the code under test).
pub fn ulaw_to_linear(u: u8) -> f64 {
    let u = !u;
    let sign = u & 0x80;
    let exponent = (u >> 4) & 0x07;
    let mantissa = u & 0x0F;
    let magnitude = ((i32::from(mantissa) << 3) + 0x84) << exponent;
    f64::from(if sign != 0 {
        0x84 - magnitude
    } else {
        magnitude - 0x84
    })
}

/// A PCMU payload as tshark prints it (hex, with or without ':'), decoded.
pub fn pcmu_hex_to_linear(hex: &str) -> Vec<f64> {
    let hex: String = hex.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .map(ulaw_to_linear)
        .collect()
}

/// G.711 A-law to linear (ITU-T G.711, independent of the code under test).
pub fn alaw_to_linear(a: u8) -> f64 {
    let a = a ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = i32::from(a & 0x0F);
    let magnitude = match exponent {
        0 => (mantissa << 4) + 8,
        e => ((mantissa << 4) + 0x108) << (e - 1),
    };
    f64::from(if a & 0x80 != 0 { magnitude } else { -magnitude })
}

/// A G.711 payload (PCMU for payload type 0, else PCMA) as tshark prints
/// it, decoded.
pub fn g711_hex_to_linear(hex: &str, payload_type: &str) -> Vec<f64> {
    let hex: String = hex.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    let decode = if payload_type.trim() == "0" {
        ulaw_to_linear
    } else {
        alaw_to_linear
    };
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .map(decode)
        .collect()
}

/// A tone as raw µ-law at 8 kHz, what SIPp's `rtp_stream` plays (sox).
pub fn ulaw_tone(dir: &Path, freq: u32, secs: u32) -> PathBuf {
    super::require("sox", "sox");
    let file = dir.join(format!("tone{freq}.ulaw"));
    let status = std::process::Command::new("sox")
        .args(["-n", "-r", "8000", "-c", "1", "-e", "u-law", "-t", "raw"])
        .arg(&file)
        .args([
            "synth",
            &secs.to_string(),
            "sine",
            &freq.to_string(),
            "vol",
            "0.5",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "sox failed");
    file
}
