//! Loading audio prompts: any PCM or float WAV becomes 8 kHz mono i16.
//!
//! This runs once per file at load time, never per frame, so it may allocate;
//! the result is shared by reference count between calls that play it.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hound::{SampleFormat, WavReader};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler, WindowFunction};

/// Output rate: narrowband telephony.
pub const TARGET_RATE: u32 = 8000;

/// Rates outside this range are treated as a broken header; the bounds also
/// keep the FFT resampler's block sizes (and memory) reasonable.
const MIN_RATE: u32 = 1_000;
const MAX_RATE: u32 = 768_000;

/// Wanted FFT length on the 8 kHz side. Measured with rubato 5: 1024 keeps
/// 3.8 kHz flat and 4.2 kHz below -140 dB; shorter blocks roll off early,
/// longer ones leak more.
const FFT_OUT_TARGET: usize = 1024;

/// Cap on the up-front allocation trusted from a header's sample count; a
/// lying header must not make us reserve gigabytes.
const MAX_PREALLOC_FRAMES: usize = 1 << 22;

/// An 8 kHz mono 16-bit clip, cheap to clone and share between calls.
#[derive(Debug, Clone)]
pub struct AudioClip {
    /// The decoded audio, 8 kHz mono.
    pub samples: Arc<[i16]>,
    /// File path, or the label given to [`load_wav_bytes`].
    pub source: PathBuf,
}

impl AudioClip {
    /// Length in seconds at 8 kHz.
    pub fn duration_secs(&self) -> f64 {
        self.samples.len() as f64 / f64::from(TARGET_RATE)
    }
}

/// Why an audio file could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum AudioFileError {
    /// The file could not be opened or read.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// The path or label that failed.
        file: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The bytes are not a RIFF/WAVE file hound can read.
    #[error("{file}: not a WAV file: {reason}")]
    NotWav {
        /// The path or label that failed.
        file: String,
        /// hound's reason.
        reason: String,
    },
    /// A WAV we don't decode (codec, bit depth, rate out of range).
    #[error("{file}: unsupported WAV format: {detail}")]
    Unsupported {
        /// The path or label that failed.
        file: String,
        /// Which property is unsupported.
        detail: String,
    },
    /// A valid header with no samples after it.
    #[error("{file}: contains no audio samples")]
    Empty {
        /// The path or label that failed.
        file: String,
    },
    /// The resampler refused the input.
    #[error("{file}: cannot resample from {rate} Hz: {detail}")]
    Resample {
        /// The path or label that failed.
        file: String,
        /// The input's sample rate.
        rate: u32,
        /// rubato's reason.
        detail: String,
    },
}

/// Load a WAV file as an 8 kHz mono clip.
pub fn load_wav(path: &Path) -> Result<AudioClip, AudioFileError> {
    let label = path.display().to_string();
    let file = File::open(path).map_err(|source| AudioFileError::Io {
        file: label.clone(),
        source,
    })?;
    let samples = decode(BufReader::new(file), &label)?;
    Ok(AudioClip {
        samples,
        source: path.to_path_buf(),
    })
}

/// Load WAV data held in memory (HTTP bodies, TTS output). `label` names it
/// in errors and becomes [`AudioClip::source`].
pub fn load_wav_bytes(bytes: &[u8], label: &str) -> Result<AudioClip, AudioFileError> {
    let samples = decode(bytes, label)?;
    Ok(AudioClip {
        samples,
        source: PathBuf::from(label),
    })
}

/// Resample mono float samples (full scale `-1.0..=1.0`) at `rate` Hz to
/// 8 kHz i16, saturating. Input already at 8 kHz is only converted.
pub fn resample_to_8k(mono: &[f32], rate: u32) -> Result<Vec<i16>, AudioFileError> {
    resample_labelled(mono, rate, "audio buffer")
}

/// Notes when the underlying reader runs dry. hound reports a short read as
/// a generic `io::ErrorKind::Other`, so this is how end-of-data is told
/// apart from a real I/O failure.
struct EofWatch<'a, R> {
    inner: R,
    hit: &'a Cell<bool>,
}

impl<R: Read> Read for EofWatch<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.hit.set(true);
        }
        Ok(n)
    }
}

fn decode<R: Read>(reader: R, label: &str) -> Result<Arc<[i16]>, AudioFileError> {
    let eof = Cell::new(false);
    let reader = EofWatch {
        inner: reader,
        hit: &eof,
    };
    let wav = WavReader::new(reader).map_err(|e| header_error(e, eof.get(), label))?;
    let spec = wav.spec();
    let channels = usize::from(spec.channels);
    if channels == 0 {
        return Err(AudioFileError::NotWav {
            file: label.to_owned(),
            reason: "zero channels".to_owned(),
        });
    }
    if !(MIN_RATE..=MAX_RATE).contains(&spec.sample_rate) {
        return Err(AudioFileError::Unsupported {
            file: label.to_owned(),
            detail: format!(
                "sample rate {} Hz (accepted {MIN_RATE}..={MAX_RATE})",
                spec.sample_rate
            ),
        });
    }
    let frames_hint = (wav.duration() as usize).min(MAX_PREALLOC_FRAMES);
    let mono = match (spec.sample_format, spec.bits_per_sample) {
        (SampleFormat::Float, 32) => {
            downmix(wav.into_samples::<f32>(), channels, frames_hint, 1.0, &eof)
        }
        (SampleFormat::Int, bits @ 1..=32) => {
            // Full scale of a `bits`-wide signed sample maps to 1.0.
            let scale = 1.0 / (1u64 << (bits - 1)) as f64;
            downmix(
                wav.into_samples::<i32>(),
                channels,
                frames_hint,
                scale,
                &eof,
            )
        }
        (format, bits) => {
            return Err(AudioFileError::Unsupported {
                file: label.to_owned(),
                detail: format!("{bits}-bit {format:?} samples"),
            })
        }
    }
    .map_err(|e| sample_error(e, label))?;
    if mono.is_empty() {
        return Err(AudioFileError::Empty {
            file: label.to_owned(),
        });
    }
    Ok(resample_labelled(&mono, spec.sample_rate, label)?.into())
}

/// Average interleaved channels into mono f32 in `-1.0..=1.0`.
///
/// A data chunk that ends early (streamed TTS output often has a bogus
/// length) keeps the whole frames read so far rather than failing.
fn downmix<S, I>(
    samples: I,
    channels: usize,
    frames_hint: usize,
    scale: f64,
    eof: &Cell<bool>,
) -> Result<Vec<f32>, hound::Error>
where
    S: Into<f64>,
    I: Iterator<Item = hound::Result<S>>,
{
    let mut mono = Vec::with_capacity(frames_hint);
    let mut acc = 0.0f64;
    let mut in_frame = 0usize;
    let frame_scale = scale / channels as f64;
    for s in samples {
        let v: f64 = match s {
            Ok(v) => v.into(),
            Err(hound::Error::IoError(_)) if eof.get() => break,
            Err(e) => return Err(e),
        };
        // NaN/inf in float files would smear across the whole resampled clip.
        acc += if v.is_finite() { v } else { 0.0 };
        in_frame += 1;
        if in_frame == channels {
            mono.push((acc * frame_scale) as f32);
            acc = 0.0;
            in_frame = 0;
        }
    }
    Ok(mono)
}

fn resample_labelled(mono: &[f32], rate: u32, label: &str) -> Result<Vec<i16>, AudioFileError> {
    if mono.is_empty() {
        return Err(AudioFileError::Empty {
            file: label.to_owned(),
        });
    }
    if rate == TARGET_RATE {
        return Ok(mono.iter().map(|&x| to_i16(x)).collect());
    }
    let fail = |detail: String| AudioFileError::Resample {
        file: label.to_owned(),
        rate,
        detail,
    };
    if !(MIN_RATE..=MAX_RATE).contains(&rate) {
        return Err(fail(format!("rate outside {MIN_RATE}..={MAX_RATE} Hz")));
    }
    // Fixed ratio, whole clip in memory: the FFT resampler is rubato's
    // highest-quality and fastest choice, and process_all trims its delay.
    let (rate_in, rate_out) = (rate as usize, TARGET_RATE as usize);
    let g = gcd(rate_in, rate_out);
    let (min_in, min_out) = (rate_in / g, rate_out / g);
    // An even block count keeps both FFT lengths even; with an odd length
    // rubato's reported delay is off by half a sample and the output shifts.
    let mut blocks = FFT_OUT_TARGET.div_ceil(min_out);
    blocks += blocks % 2;
    let mut resampler = Fft::<f32>::new_custom(
        rate_in,
        rate_out,
        blocks * min_in,
        1,
        1,
        WindowFunction::BlackmanHarris2,
        FixedSync::Both,
    )
    .map_err(|e| fail(e.to_string()))?;
    let input = InterleavedSlice::new(mono, 1, mono.len()).map_err(|e| fail(e.to_string()))?;
    let out = resampler
        .process_all(&input, mono.len(), None)
        .map_err(|e| fail(e.to_string()))?;
    Ok(out.take_data().into_iter().map(to_i16).collect())
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Float to i16 with saturation; `as` saturates and maps NaN to 0.
#[inline]
fn to_i16(x: f32) -> i16 {
    (x * 32768.0).round() as i16
}

fn header_error(e: hound::Error, at_eof: bool, label: &str) -> AudioFileError {
    let file = label.to_owned();
    match e {
        hound::Error::IoError(_) if at_eof => AudioFileError::NotWav {
            file,
            reason: "file ends inside the header".to_owned(),
        },
        hound::Error::IoError(source) => AudioFileError::Io { file, source },
        hound::Error::FormatError(reason) => AudioFileError::NotWav {
            file,
            reason: reason.to_owned(),
        },
        hound::Error::Unsupported => AudioFileError::Unsupported {
            file,
            detail: "encoding is not PCM or IEEE float".to_owned(),
        },
        other => AudioFileError::Unsupported {
            file,
            detail: other.to_string(),
        },
    }
}

fn sample_error(e: hound::Error, label: &str) -> AudioFileError {
    let file = label.to_owned();
    match e {
        hound::Error::IoError(source) => AudioFileError::Io { file, source },
        other => AudioFileError::Unsupported {
            file,
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hound::{WavSpec, WavWriter};
    use std::f64::consts::PI;
    use std::io::Cursor;

    const TONE_HZ: f64 = 1000.0;

    /// Sample `i` of a `TONE_HZ` sine at `rate` with peak `amp`.
    fn tone(i: usize, rate: u32, amp: f64) -> f64 {
        amp * (2.0 * PI * TONE_HZ * i as f64 / f64::from(rate)).sin()
    }

    fn spec(channels: u16, rate: u32, bits: u16, format: SampleFormat) -> WavSpec {
        WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: format,
        }
    }

    /// Write `secs` of tone; channel `c` has peak `amps[c]`.
    fn write_tone(path: &Path, spec: WavSpec, secs: f64, amps: &[f64]) {
        assert_eq!(amps.len(), usize::from(spec.channels));
        let mut w = WavWriter::create(path, spec).unwrap();
        let frames = (secs * f64::from(spec.sample_rate)).round() as usize;
        let full = (1i64 << (spec.bits_per_sample - 1)) as f64;
        for i in 0..frames {
            for &amp in amps {
                let v = tone(i, spec.sample_rate, amp);
                match (spec.sample_format, spec.bits_per_sample) {
                    (SampleFormat::Float, _) => w.write_sample(v as f32).unwrap(),
                    (_, 8) => w.write_sample((v * full).round() as i8).unwrap(),
                    (_, 16) => w.write_sample((v * full).round() as i16).unwrap(),
                    _ => w.write_sample((v * full).round() as i32).unwrap(),
                }
            }
        }
        w.finalize().unwrap();
    }

    /// Frequency from rising zero crossings, RMS as a fraction of full scale.
    /// Skips 50 ms at each end, where resampler edges live.
    fn analyse(s: &[i16]) -> (f64, f64) {
        let skip = 400;
        let s = &s[skip..s.len() - skip];
        let rising: Vec<usize> = s
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w[0] < 0 && w[1] >= 0)
            .map(|(i, _)| i)
            .collect();
        let (first, last) = (rising[0], rising[rising.len() - 1]);
        let periods = (rising.len() - 1) as f64;
        let freq = periods * f64::from(TARGET_RATE) / (last - first) as f64;
        let sum: f64 = s.iter().map(|&x| (f64::from(x) / 32768.0).powi(2)).sum();
        (freq, (sum / s.len() as f64).sqrt())
    }

    fn check_tone(clip: &AudioClip, secs: f64, peak: f64) {
        let expect_len = secs * f64::from(TARGET_RATE);
        let len = clip.samples.len() as f64;
        assert!(
            (len - expect_len).abs() <= expect_len * 0.01,
            "{}: length {len}, expected {expect_len}",
            clip.source.display()
        );
        let (freq, rms) = analyse(&clip.samples);
        assert!(
            (freq - TONE_HZ).abs() <= TONE_HZ * 0.03,
            "{}: frequency {freq}",
            clip.source.display()
        );
        let want = peak / 2f64.sqrt();
        let db = 20.0 * (rms / want).log10();
        assert!(
            db.abs() <= 1.0,
            "{}: RMS off by {db} dB",
            clip.source.display()
        );
        // No time shift: the resampler's start-up delay must be trimmed.
        let mid = &clip.samples[400..clip.samples.len() - 400];
        let err: f64 = mid
            .iter()
            .enumerate()
            .map(|(i, &x)| (f64::from(x) / 32768.0 - tone(i + 400, TARGET_RATE, peak)).abs())
            .sum::<f64>()
            / mid.len() as f64;
        assert!(err < 0.005, "{}: mean error {err}", clip.source.display());
    }

    #[test]
    fn loads_many_formats_and_keeps_the_tone() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, WavSpec, &[f64], f64); 6] = [
            // Stereo channels of different level: the mono mix is their mean.
            (
                "s16-44k1-stereo.wav",
                spec(2, 44_100, 16, SampleFormat::Int),
                &[0.6, 0.2],
                0.4,
            ),
            (
                "u8-22k05-mono.wav",
                spec(1, 22_050, 8, SampleFormat::Int),
                &[0.5],
                0.5,
            ),
            (
                "s24-48k-mono.wav",
                spec(1, 48_000, 24, SampleFormat::Int),
                &[0.5],
                0.5,
            ),
            (
                "f32-16k-mono.wav",
                spec(1, 16_000, 32, SampleFormat::Float),
                &[0.5],
                0.5,
            ),
            (
                "s32-11k025-3ch.wav",
                spec(3, 11_025, 32, SampleFormat::Int),
                &[0.3, 0.3, 0.3],
                0.3,
            ),
            (
                "s16-8k-mono.wav",
                spec(1, 8_000, 16, SampleFormat::Int),
                &[0.5],
                0.5,
            ),
        ];
        let secs = 1.5;
        for (name, spec, amps, peak) in cases {
            let path = dir.path().join(name);
            write_tone(&path, spec, secs, amps);
            let clip = load_wav(&path).unwrap();
            assert_eq!(clip.source, path);
            check_tone(&clip, secs, peak);

            let bytes = std::fs::read(&path).unwrap();
            let from_bytes = load_wav_bytes(&bytes, name).unwrap();
            assert_eq!(from_bytes.samples, clip.samples);
            assert_eq!(from_bytes.source, PathBuf::from(name));
        }
    }

    #[test]
    fn content_above_4khz_is_filtered_out() {
        // A 6 kHz tone would alias to 2 kHz without an anti-aliasing filter.
        let rate = 48_000;
        let loud: Vec<f32> = (0..rate)
            .map(|i| (0.5 * (2.0 * PI * 6000.0 * i as f64 / 48_000.0).sin()) as f32)
            .collect();
        let out = resample_to_8k(&loud, rate as u32).unwrap();
        // The abrupt start and stop are broadband clicks; judge the middle.
        let mid = &out[400..out.len() - 400];
        let rms = (mid
            .iter()
            .map(|&x| (f64::from(x) / 32768.0).powi(2))
            .sum::<f64>()
            / mid.len() as f64)
            .sqrt();
        assert!(rms < 1e-4, "aliased RMS {rms}");
    }

    /// The repo's `audio/` dir: the nearest one above this crate.
    fn repo_audio_dir() -> PathBuf {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        manifest
            .ancestors()
            .map(|dir| dir.join("audio"))
            .find(|dir| dir.is_dir())
            .unwrap_or_else(|| manifest.join("audio"))
    }

    #[test]
    fn committed_prompts_are_8khz_mono_and_audible() {
        let dir = repo_audio_dir();
        for (name, min_s, max_s) in [
            ("wait-music.wav", 19.0, 21.0),
            ("hold-en.wav", 2.0, 8.0),
            ("hold-es.wav", 2.0, 8.0),
            ("welcome-en.wav", 2.0, 8.0),
        ] {
            let path = dir.join(name);
            // Already in line format, so loading never resamples them.
            let spec = WavReader::open(&path).unwrap().spec();
            assert_eq!(spec, spec_8k_mono16(), "{name}");
            let clip = load_wav(&path).unwrap();
            let secs = clip.duration_secs();
            assert!((min_s..=max_s).contains(&secs), "{name}: {secs} s");
            let rms = (clip
                .samples
                .iter()
                .map(|&x| f64::from(x).powi(2))
                .sum::<f64>()
                / clip.samples.len() as f64)
                .sqrt();
            assert!(rms > 1000.0, "{name}: RMS {rms}");
        }
        // Loops cleanly: both ends are near silence.
        let music = load_wav(&dir.join("wait-music.wav")).unwrap();
        let n = music.samples.len();
        for &x in music.samples[..8].iter().chain(&music.samples[n - 8..]) {
            assert!(x.unsigned_abs() < 500, "loop edge sample {x}");
        }
    }

    fn spec_8k_mono16() -> WavSpec {
        spec(1, 8000, 16, SampleFormat::Int)
    }

    #[test]
    fn eight_khz_16_bit_is_bit_exact() {
        let samples: Vec<i16> = (0..800).map(|i| (i * 81 - 32768) as i16).collect();
        let mut buf = Cursor::new(Vec::new());
        let mut w = WavWriter::new(&mut buf, spec(1, 8000, 16, SampleFormat::Int)).unwrap();
        for &s in &samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        let clip = load_wav_bytes(buf.get_ref(), "exact").unwrap();
        assert_eq!(&clip.samples[..], &samples[..]);
    }

    #[test]
    fn float_input_saturates() {
        let out = resample_to_8k(&[2.0, -2.0, 0.5, f32::NAN, -1.0], 8000).unwrap();
        assert_eq!(out, vec![32767, -32768, 16384, 0, -32768]);
        // Through the resampler too: a clipped square wave must not wrap.
        let loud: Vec<f32> = (0..16_000)
            .map(|i| if i % 20 < 10 { 1.5 } else { -1.5 })
            .collect();
        let out = resample_to_8k(&loud, 16_000).unwrap();
        assert_eq!(out.len(), 8000);
        assert!(out.contains(&i16::MAX));
        assert!(out.contains(&i16::MIN));
    }

    #[test]
    fn resample_rejects_empty_and_silly_rates() {
        assert!(matches!(
            resample_to_8k(&[], 44_100),
            Err(AudioFileError::Empty { .. })
        ));
        assert!(matches!(
            resample_to_8k(&[0.0; 10], 0),
            Err(AudioFileError::Resample { rate: 0, .. })
        ));
        assert!(resample_to_8k(&[0.0; 10], u32::MAX).is_err());
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_file() {
        let err =
            load_wav_bytes(b"definitely not audio, just some text", "garbage.wav").unwrap_err();
        assert!(matches!(err, AudioFileError::NotWav { .. }), "{err:?}");
        assert!(err.to_string().contains("garbage.wav"), "{err}");

        let err = load_wav_bytes(&[], "empty-body").unwrap_err();
        assert!(err.to_string().contains("empty-body"), "{err}");

        let err = load_wav(Path::new("/nonexistent/dir/hold.wav")).unwrap_err();
        assert!(matches!(err, AudioFileError::Io { .. }), "{err:?}");
        assert!(
            err.to_string().contains("/nonexistent/dir/hold.wav"),
            "{err}"
        );

        // A valid header with no samples.
        let mut buf = Cursor::new(Vec::new());
        WavWriter::new(&mut buf, spec(1, 8000, 16, SampleFormat::Int))
            .unwrap()
            .finalize()
            .unwrap();
        let err = load_wav_bytes(buf.get_ref(), "silent.wav").unwrap_err();
        assert!(matches!(err, AudioFileError::Empty { .. }), "{err:?}");
        assert!(err.to_string().contains("silent.wav"), "{err}");

        // Format tag 0x0055 (MP3 in WAV).
        let mut mp3 = buf.get_ref().clone();
        mp3[20] = 0x55;
        let err = load_wav_bytes(&mp3, "mp3.wav").unwrap_err();
        assert!(matches!(err, AudioFileError::Unsupported { .. }), "{err:?}");
        assert!(err.to_string().contains("mp3.wav"), "{err}");
    }

    #[test]
    fn truncated_data_keeps_whole_frames() {
        let mut buf = Cursor::new(Vec::new());
        let mut w = WavWriter::new(&mut buf, spec(2, 8000, 16, SampleFormat::Int)).unwrap();
        for i in 0..100i16 {
            w.write_sample(i * 100).unwrap();
            w.write_sample(i * 100).unwrap();
        }
        w.finalize().unwrap();
        let bytes = buf.into_inner();
        // Cut mid-frame: 44-byte header + 10 frames + half a frame.
        let clip = load_wav_bytes(&bytes[..44 + 40 + 2], "cut.wav").unwrap();
        assert_eq!(clip.samples.len(), 10);
        assert_eq!(clip.samples[9], 900);
    }

    #[test]
    fn mangled_wavs_never_panic() {
        let mut buf = Cursor::new(Vec::new());
        let mut w = WavWriter::new(&mut buf, spec(2, 16_000, 24, SampleFormat::Int)).unwrap();
        for i in 0..400 {
            w.write_sample(i * 1000).unwrap();
        }
        w.finalize().unwrap();
        let good = buf.into_inner();
        // Every truncation.
        for len in 0..good.len() {
            let _ = load_wav_bytes(&good[..len], "t");
        }
        // Random byte overwrites in the header, deterministic xorshift.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..3000 {
            let mut m = good.clone();
            for _ in 0..1 + next() % 3 {
                let pos = (next() % 48) as usize;
                m[pos] = next() as u8;
            }
            if let Ok(clip) = load_wav_bytes(&m, "m") {
                assert!(!clip.samples.is_empty());
            }
        }
    }
}
