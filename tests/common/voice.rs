//! Voice-AI peers shared by the stream, speech and TwiML tests: the media
//! stream agent (tests/peers/stream_agent.py), the recognizer stand-in
//! (tests/peers/stt_standin.py), espeak-ng phrases, and correlation of
//! what a peer received against what was said.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, repo, require};

/// A Python peer from tests/peers (needing `module`), once it has printed
/// `ready`.
pub fn start_peer(module: &str, script: &str, args: &[&str], ready: &str) -> Child {
    let mut child = Command::new(super::peers::python(module))
        .arg(repo().join("tests/peers").join(script))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {script}: {e}"));
    let mut line = String::new();
    let stdout = child.stdout.take().expect("peer stdout");
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("peer output");
    assert_eq!(line.trim(), ready, "{script} didn't start");
    child
}

/// A child process killed and reaped however the test ends.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The media stream agent, listening on its own port in `mode`; its
/// summary lands in `dir`.
pub struct Agent {
    child: Child,
    pub port: u16,
    summary: PathBuf,
}

impl Agent {
    pub fn start(mode: &str, token: &str, dir: &Path) -> Agent {
        let port = free_port();
        let summary = dir.join(format!("agent-{mode}.json"));
        let child = start_peer(
            "websockets",
            "stream_agent.py",
            &[&port.to_string(), token, mode, &super::path_str(&summary)],
            "listening",
        );
        Agent {
            child,
            port,
            summary,
        }
    }

    /// What it saw, once it has finished (at most `limit` from now).
    pub fn summary(mut self, limit: Duration) -> serde_json::Value {
        let deadline = std::time::Instant::now() + limit;
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the agent never finished"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let text = std::fs::read_to_string(&self.summary).expect("the agent's summary");
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The errors an agent or stand-in summary lists.
pub fn errors(summary: &serde_json::Value) -> Vec<String> {
    summary["errors"]
        .as_array()
        .map(|a| a.iter().map(|e| e.to_string()).collect())
        .unwrap_or_default()
}

/// The recognizer stand-in: `proto` deepgram or generic, `mode` normal,
/// slow or drop, answering `transcript`.
pub struct Standin {
    child: Child,
    pub port: u16,
    summary: PathBuf,
    /// Every audio frame it received, μ-law, appended.
    pub audio: PathBuf,
}

impl Standin {
    pub fn start(proto: &str, mode: &str, transcript: &str, dir: &Path) -> Standin {
        let port = free_port();
        let summary = dir.join(format!("stt-{proto}-{mode}.json"));
        let audio = dir.join(format!("stt-{proto}-{mode}.ulaw"));
        let child = start_peer(
            "websockets",
            "stt_standin.py",
            &[
                &port.to_string(),
                proto,
                mode,
                transcript,
                &super::path_str(&summary),
                &super::path_str(&audio),
            ],
            "listening",
        );
        Standin {
            child,
            port,
            summary,
            audio,
        }
    }

    pub fn summary(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(&self.summary).expect("the stand-in saw a connection");
        serde_json::from_str(&text).unwrap()
    }

    /// What it received, decoded to linear samples.
    pub fn heard(&self) -> Vec<f64> {
        std::fs::read(&self.audio)
            .unwrap_or_default()
            .into_iter()
            .map(super::audio::ulaw_to_linear)
            .collect()
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` spoken by espeak-ng in `voice` (en, es…) as an 8 kHz mono WAV,
/// with 0.3 s of silence after it.
pub fn spoken(dir: &Path, voice: &str, text: &str) -> PathBuf {
    spoken_at(dir, voice, text, 150)
}

/// [`spoken`] at `wpm` words per minute.
pub fn spoken_at(dir: &Path, voice: &str, text: &str, wpm: u32) -> PathBuf {
    require("espeak-ng", "espeak-ng");
    require("sox", "sox");
    let name: String = text
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let raw = dir.join(format!("raw-{voice}-{wpm}-{name}.wav"));
    let out = dir.join(format!("said-{voice}-{wpm}-{name}.wav"));
    let ok = Command::new("espeak-ng")
        .args(["-v", voice, "-s", &wpm.to_string(), "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .unwrap()
        .success();
    assert!(ok, "espeak-ng");
    let ok = Command::new("sox")
        .arg(&raw)
        .args(["-r", "8000", "-c", "1", "-b", "16"])
        .arg(&out)
        .args(["pad", "0", "0.3"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "sox");
    out
}

/// A WAV's samples as f64.
pub fn wav_samples(wav: &Path) -> Vec<f64> {
    hound::WavReader::open(wav)
        .unwrap()
        .into_samples::<i16>()
        .map(|s| f64::from(s.unwrap()))
        .collect()
}

/// Best normalised cross-correlation of `b` against `a` over every lag
/// (a coarse grid misses the peak: speech decorrelates within a few
/// samples once resampled by the caller).
pub fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let eb = b.iter().map(|v| v * v).sum::<f64>().sqrt();
    if eb == 0.0 || b.is_empty() || b.len() > a.len() {
        return 0.0;
    }
    // Running window energy: prefix sums of a².
    let mut prefix = Vec::with_capacity(a.len() + 1);
    prefix.push(0.0);
    for v in a {
        prefix.push(prefix[prefix.len() - 1] + v * v);
    }
    (0..=a.len() - b.len())
        .map(|lag| {
            let window = &a[lag..lag + b.len()];
            let dot: f64 = window.iter().zip(b).map(|(x, y)| x * y).sum();
            let ea = (prefix[lag + b.len()] - prefix[lag]).max(0.0).sqrt();
            dot / (ea.max(1e-9) * eb)
        })
        .fold(0.0, f64::max)
}

/// How well the recognizer's audio matches the phrase in `wav`: up to a
/// second of it, from 50 ms in (pjsua's silence detector sends no RTP in
/// silence and clips a word's first milliseconds) to its last sound.
pub fn phrase_match(heard: &[f64], wav: &Path) -> f64 {
    let phrase = wav_samples(wav);
    let end = phrase
        .iter()
        .rposition(|s| s.abs() > 100.0)
        .map_or(0, |i| i + 1);
    let start = 400.min(end);
    correlation(heard, &phrase[start..end.min(start + 8000)])
}

/// Frames crossline sent to the caller: (epoch seconds, samples).
pub fn frames_to_caller(file: &Path, sip_port: u16) -> Vec<(f64, Vec<f64>)> {
    let sip = vec![format!("udp.port=={sip_port},sip")];
    let caller_port: u16 = super::tshark_fields(
        file,
        &sip,
        &format!("sip.Method == \"INVITE\" && sdp && udp.dstport == {sip_port}"),
        &["sdp.media.port"],
    )
    .first()
    .and_then(|r| r.first())
    .and_then(|p| p.parse().ok())
    .expect("the caller's INVITE with SDP");
    super::tshark_fields(
        file,
        &[format!("udp.port=={caller_port},rtp")],
        &format!("udp.dstport == {caller_port} && rtp"),
        &["frame.time_epoch", "rtp.p_type", "rtp.payload"],
    )
    .iter()
    .filter(|r| r.len() >= 3)
    .map(|r| {
        (
            r[0].parse().unwrap(),
            super::audio::g711_hex_to_linear(&r[2], &r[1]),
        )
    })
    .collect()
}
