//! Media engine, heard from the caller's side: RTP captured with tshark
//! while SIPp holds a call, decoded and analysed frame by frame.

mod common;

use std::time::Duration;

use common::audio::*;
use common::*;

/// Hold heard by a SIPp caller: the message (a 1 kHz tone here) at the
/// start and again every repeat interval, the music (400 Hz) in between at
/// full level and ducked by 12 dB under the message; SSRC, sequence and
/// timestamps continuous throughout, marker bit where the message starts.
#[test]
fn hold_music_with_message_on_repeat_heard_by_the_caller() {
    let audio = tempfile::tempdir().unwrap();
    write_tone(&audio.path().join("music.wav"), 400.0, 5.0, 8000.0, 44_100);
    write_tone(
        &audio.path().join("message.wav"),
        1000.0,
        0.6,
        8000.0,
        16_000,
    );
    let gw = Gateway::start(&format!(
        "[media]\nhold_music = [\"{}\"]\nhold_message = \"{}\"\nhold_repeat_secs = 3\nhold_duck_db = -12.0\n\n[[routes]]\nflow = \"hold\"\n",
        audio.path().join("music.wav").display(),
        audio.path().join("message.wav").display()
    ));
    let (rows, run) = call_rtp_to_caller(
        &gw,
        &["-sn", "uac", &gw.sip_addr(), "-m", "1", "-d", "7500"],
        &[
            "rtp.seq",
            "rtp.timestamp",
            "rtp.ssrc",
            "rtp.marker",
            "rtp.p_type",
            "rtp.payload",
        ],
    );
    assert!(run.ok(), "{}", run.describe());
    assert!(rows.len() > 300, "only {} packets", rows.len());

    let mut frames = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[4], "0", "PCMU");
        assert_eq!(r[2], rows[0][2], "one SSRC");
        if i > 0 {
            let seq: u16 = r[0].parse().unwrap();
            let prev: u16 = rows[i - 1][0].parse().unwrap();
            assert_eq!(seq, prev.wrapping_add(1), "continuous sequence");
            let ts: u32 = r[1].parse().unwrap();
            let prev_ts: u32 = rows[i - 1][1].parse().unwrap();
            assert_eq!(ts, prev_ts.wrapping_add(160), "continuous timestamps");
        }
        // tshark prints payload hex with or without ':' separators.
        let hex: String = r[5].chars().filter(|c| c.is_ascii_hexdigit()).collect();
        let payload: Vec<f64> = (0..hex.len() / 2)
            .map(|i| ulaw_to_linear(u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()))
            .collect();
        assert_eq!(payload.len(), 160);
        frames.push((
            r[3] == "1" || r[3] == "True",
            tone_level(&payload, 400.0),
            tone_level(&payload, 1000.0),
        ));
    }
    // Which frames carry the message (1 kHz well above the noise floor)?
    let speaking: Vec<bool> = frames.iter().map(|f| f.2 > 2000.0).collect();
    let starts: Vec<usize> = (0..speaking.len())
        .filter(|&i| speaking[i] && (i == 0 || !speaking[i - 1]))
        .collect();
    assert!(starts.len() >= 2, "message starts at frames {starts:?}");
    assert!(starts[0] <= 2, "message at the start of hold: {starts:?}");
    // 3 s repeat = 150 frames between message starts.
    let gap = starts[1] - starts[0];
    assert!((149..=151).contains(&gap), "repeat gap {gap} frames");
    // Each message lasts its 0.6 s (30 frames).
    let len = speaking[starts[0]..].iter().take_while(|s| **s).count();
    assert!((29..=31).contains(&len), "message length {len} frames");
    // Markers where the message starts (talk starts).
    for &s in &starts {
        assert!(frames[s].0, "marker at frame {s}");
    }
    // Music: full level between messages, ducked by 12 dB under them.
    let music_alone = frames[starts[0] + 60].1;
    let music_ducked = frames[starts[1] + 10].1;
    assert!(
        (music_alone - 8000.0).abs() < 800.0,
        "music level {music_alone}"
    );
    let duck_db = 20.0 * (music_ducked / music_alone).log10();
    assert!((duck_db + 12.0).abs() < 1.5, "ducked by {duck_db:.1} dB");
    // And the music is back after the message.
    let after = frames[starts[1] + 45].1;
    assert!(
        (after - music_alone).abs() < 800.0,
        "music after message {after}"
    );
}

/// The hold message rendered by espeak-ng from a `[[prompts]]` entry, in
/// Spanish: speech energy at the start and again after the repeat interval,
/// silence in between (the music is a silent file here).
#[test]
fn hold_message_from_a_spanish_tts_prompt() {
    require("espeak-ng", "espeak-ng");
    let audio = tempfile::tempdir().unwrap();
    write_tone(&audio.path().join("silence.wav"), 400.0, 2.0, 0.0, 8000);
    let gw = Gateway::start(&format!(
        "[media]\nhold_music = [\"{}\"]\nhold_message = \"espera\"\nhold_repeat_secs = 3\n\n\
         [tts]\ncache_dir = \"{}\"\n\n\
         [[prompts]]\nname = \"espera\"\ntext = \"Gracias por esperar.\"\nlanguage = \"es\"\n\n\
         [[prompts]]\nname = \"welcome\"\ntext = \"Welcome.\"\n\n\
         [[routes]]\nflow = \"hold\"\n",
        audio.path().join("silence.wav").display(),
        audio.path().join("tts").display(),
    ));
    gw.wait_for_log("prompts rendered", Duration::from_secs(5));
    let (rows, run) = call_rtp_to_caller(
        &gw,
        &["-sn", "uac", &gw.sip_addr(), "-m", "1", "-d", "5000"],
        &["rtp.payload"],
    );
    assert!(run.ok(), "{}", run.describe());
    let energy: Vec<f64> = rows
        .iter()
        .map(|r| {
            let hex: String = r[0].chars().filter(|c| c.is_ascii_hexdigit()).collect();
            let s: Vec<f64> = (0..hex.len() / 2)
                .map(|i| ulaw_to_linear(u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()))
                .collect();
            (s.iter().map(|x| x * x).sum::<f64>() / s.len().max(1) as f64).sqrt()
        })
        .collect();
    let voiced =
        |range: std::ops::Range<usize>| energy[range].iter().filter(|e| **e > 300.0).count();
    // Speech in the first 1.5 s, silence from 2.5 s to 3 s, speech again after 3 s.
    assert!(
        voiced(0..75) > 20,
        "speech at the start: {:?}",
        &energy[..75]
    );
    assert_eq!(voiced(125..148), 0, "silence before the repeat");
    assert!(voiced(150..225) > 20, "speech again after 3 s");
    // Both prompts were cached on disk for the next start.
    let cached = std::fs::read_dir(audio.path().join("tts")).unwrap().count();
    assert_eq!(cached, 2);
}
