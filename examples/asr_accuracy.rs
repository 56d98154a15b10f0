//! Word accuracy and real-time factor of the embedded PocketSphinx
//! recognizer on telephone audio, through the gateway's own path (the
//! worker pool, 8 → 16 kHz upsampling, the JSGF grammar).
//!
//! espeak-ng speaks every phrase in several voices and speeds; each WAV
//! goes to 8 kHz (the gateway's prompt loader) and through μ-law, as a
//! phone call would carry it, with 0.3 s of silence either side. Prints
//! the markdown tables published in benches/README.md.
//!
//! ```sh
//! cargo run --release --features pocketsphinx --example asr_accuracy
//! ```

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crossline::media::g711::linear_to_ulaw;
use crossline::speech::embedded::{Engine, Settings, DEBIAN_DICTIONARY, DEBIAN_MODEL_DIR};

/// espeak-ng voices (a US and a British male, a US female variant, a
/// Scottish male) and speeds (words per minute).
const VOICES: [&str; 4] = ["en-us", "en-us+f3", "en", "en-gb-scotland"];
const SPEEDS: [u32; 2] = [130, 175];

/// The grammars measured: the callbot's spoken menu (deploy/flows) and a
/// larger IVR menu of single words.
const GRAMMARS: [(&str, &[&str]); 2] = [
    ("callbot", &["agent", "text me", "whatsapp", "goodbye"]),
    (
        "ivr words",
        &[
            "agent",
            "operator",
            "representative",
            "sales",
            "support",
            "billing",
            "yes",
            "no",
            "help",
            "one",
            "two",
            "three",
            "goodbye",
        ],
    ),
];

fn main() -> Result<(), String> {
    let engine = Engine::new(Settings {
        model_dir: DEBIAN_MODEL_DIR.into(),
        dictionary: DEBIAN_DICTIONARY.into(),
        workers: 1,
        queue: 4,
    })
    .start()?;
    let dir = std::env::temp_dir().join(format!("asr-accuracy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut decode_time = Duration::ZERO;
    let mut audio_secs = 0.0;
    for (name, phrases) in GRAMMARS {
        let grammar: Vec<String> = phrases.iter().map(|p| p.to_string()).collect();
        let mut right: BTreeMap<&str, (u32, u32, Vec<String>)> = BTreeMap::new();
        for phrase in phrases {
            for voice in VOICES {
                for speed in SPEEDS {
                    let ulaw = telephone(&dir, phrase, voice, speed)?;
                    audio_secs += ulaw.len() as f64 / 8000.0;
                    let mut utterance = engine.link(&grammar)?;
                    utterance.speech_started();
                    for frame in ulaw.chunks(160) {
                        utterance.audio(frame);
                    }
                    let started = Instant::now();
                    let heard = utterance
                        .finish()?
                        .blocking_recv()
                        .map_err(|_| "the worker died".to_string())??;
                    decode_time += started.elapsed();
                    let entry = right.entry(phrase).or_default();
                    entry.1 += 1;
                    if heard.text == *phrase {
                        entry.0 += 1;
                    } else {
                        let said = if heard.text.is_empty() {
                            "(nothing)".to_string()
                        } else {
                            heard.text.clone()
                        };
                        entry.2.push(format!("{voice}@{speed}: {said}"));
                    }
                }
            }
        }
        println!(
            "\n### Grammar \"{name}\" ({} phrases)\n\n| phrase | right | misheard as |\n|---|---|---|",
            phrases.len()
        );
        let (mut total_right, mut total) = (0, 0);
        for (phrase, (ok, n, wrong)) in &right {
            total_right += ok;
            total += n;
            println!("| {phrase} | {ok}/{n} | {} |", wrong.join(", "));
        }
        println!(
            "| **all** | **{total_right}/{total} ({:.0} %)** | |",
            100.0 * f64::from(total_right) / f64::from(total.max(1))
        );
    }
    println!(
        "\nreal-time factor: {:.3} ({:.1} s of audio decoded in {:.2} s, one worker)",
        decode_time.as_secs_f64() / audio_secs,
        audio_secs,
        decode_time.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `phrase` as a phone call carries it: 8 kHz μ-law, 0.3 s of silence
/// either side.
fn telephone(
    dir: &std::path::Path,
    phrase: &str,
    voice: &str,
    speed: u32,
) -> Result<Vec<u8>, String> {
    let wav = dir.join("phrase.wav");
    let ok = Command::new("espeak-ng")
        .args(["-v", voice, "-s", &speed.to_string(), "-w"])
        .arg(&wav)
        .arg(phrase)
        .status()
        .map_err(|e| format!("espeak-ng (apt-get install espeak-ng): {e}"))?
        .success();
    if !ok {
        return Err(format!("espeak-ng failed on {phrase:?}"));
    }
    let clip = crossline::media::audio_file::load_wav(&wav).map_err(|e| e.to_string())?;
    let silence = std::iter::repeat_n(0i16, 2400);
    Ok(silence
        .clone()
        .chain(clip.samples.iter().copied())
        .chain(silence)
        .map(linear_to_ulaw)
        .collect())
}
