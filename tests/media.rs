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

/// A caller asking for 40 ms packets gets them: the answer says
/// a=ptime:40 (SIPp checks), and each RTP packet carries 320 samples,
/// timestamps 320 apart, one every 40 ms. The audio loops sleep in 500 us
/// naps here (`loop_max_sleep_us`): the pacing holds, and
/// crossline_audio_naps_total counts them.
#[test]
fn the_callers_ptime_sets_our_packet_size() {
    let gw = Gateway::start("[media]\nloop_max_sleep_us = 500\n\n[[routes]]\nflow = \"hold\"\n");
    let (rows, run) = call_rtp_to_caller(
        &gw,
        &[
            "-sf",
            &scenario("uac_ptime40.xml"),
            &gw.sip_addr(),
            "-m",
            "1",
            "-d",
            "3000",
        ],
        &[
            "frame.time_epoch",
            "rtp.timestamp",
            "rtp.seq",
            "rtp.payload",
        ],
    );
    assert!(run.ok(), "{}", run.describe());
    assert!(rows.len() > 50, "only {} packets", rows.len());
    for w in rows.windows(2) {
        let ts = |r: &[String]| r[1].parse::<u32>().unwrap();
        let seq = |r: &[String]| r[2].parse::<u16>().unwrap();
        assert_eq!(
            ts(&w[1]),
            ts(&w[0]).wrapping_add(320),
            "40 ms of timestamps a packet"
        );
        assert_eq!(seq(&w[1]), seq(&w[0]).wrapping_add(1));
        assert_eq!(
            pcmu_hex_to_linear(&w[1][3]).len(),
            320,
            "320 samples a packet"
        );
    }
    let t = |r: &[String]| r[0].parse::<f64>().unwrap();
    let mut gaps: Vec<f64> = rows.windows(2).map(|w| t(&w[1]) - t(&w[0])).collect();
    gaps.sort_by(f64::total_cmp);
    let median = gaps[gaps.len() / 2];
    assert!(
        (0.035..0.045).contains(&median),
        "a packet every {median:.4} s"
    );
    // Each 5 ms sleep is about ten naps: 3 s of them are thousands.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let naps = loop {
        let naps = metric_value(&gw.http_get("/metrics").1, "crossline_audio_naps_total");
        if naps > 1000.0 || std::time::Instant::now() > deadline {
            break naps;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(naps > 1000.0, "naps counted: {naps}");
}

/// "Load the hold music" on the built-in hold: a route with its own music
/// (600 Hz) and message (1 kHz, every 2 s) plays them instead of
/// `[media]`'s (400 Hz, 1.4 kHz every 3 s), which another route keeps.
#[test]
fn a_route_plays_its_own_hold_music_and_message() {
    let audio = tempfile::tempdir().unwrap();
    let file = |name: &str| audio.path().join(name).display().to_string();
    write_tone(&audio.path().join("music.wav"), 400.0, 5.0, 8000.0, 8000);
    write_tone(&audio.path().join("own.wav"), 600.0, 5.0, 8000.0, 8000);
    write_tone(&audio.path().join("msg.wav"), 1400.0, 0.6, 8000.0, 8000);
    write_tone(&audio.path().join("own-msg.wav"), 1000.0, 0.6, 8000.0, 8000);
    let gw = Gateway::start(&format!(
        "[media]\nhold_music = [\"{}\"]\nhold_message = \"{}\"\nhold_repeat_secs = 3\n\n\
         [[routes]]\ndid = \"1000\"\nflow = \"hold\"\nhold_music = [\"{}\"]\nhold_message = \"{}\"\nhold_repeat_secs = 2\n\n\
         [[routes]]\nflow = \"hold\"\n",
        file("music.wav"),
        file("msg.wav"),
        file("own.wav"),
        file("own-msg.wav"),
    ));
    // (own music, default music, own message, default message) per frame.
    let heard = |did: &str| -> Vec<[f64; 4]> {
        let (rows, run) = call_rtp_to_caller(
            &gw,
            &[
                "-sn",
                "uac",
                "-s",
                did,
                &gw.sip_addr(),
                "-m",
                "1",
                "-d",
                "5000",
            ],
            &["rtp.payload"],
        );
        assert!(run.ok(), "{}", run.describe());
        rows.iter()
            .map(|r| {
                let s = pcmu_hex_to_linear(&r[0]);
                [600.0, 400.0, 1000.0, 1400.0].map(|f| tone_level(&s, f))
            })
            .collect()
    };
    let starts = |frames: &[[f64; 4]], tone: usize| -> Vec<usize> {
        let on: Vec<bool> = frames.iter().map(|f| f[tone] > 2000.0).collect();
        (0..on.len())
            .filter(|&i| on[i] && (i == 0 || !on[i - 1]))
            .collect()
    };
    let own = heard("1000");
    assert!(own.len() > 200, "only {} packets", own.len());
    let full =
        |frames: &[[f64; 4]], tone: usize| frames.iter().filter(|f| f[tone] > 5000.0).count();
    assert!(
        full(&own, 0) * 2 > own.len(),
        "the route's 600 Hz music plays"
    );
    assert_eq!(full(&own, 1), 0, "[media]'s music does not");
    assert!(starts(&own, 3).is_empty(), "nor [media]'s message");
    let msgs = starts(&own, 2);
    assert!(msgs.len() >= 2, "the route's message repeats: {msgs:?}");
    assert!(msgs[0] <= 2, "from the start of hold: {msgs:?}");
    let gap = msgs[1] - msgs[0];
    assert!((99..=101).contains(&gap), "every 2 s: {gap} frames");

    let default = heard("2000");
    assert!(
        full(&default, 1) * 2 > default.len(),
        "[media]'s music on the other route"
    );
    assert_eq!(full(&default, 0), 0);
    let msgs = starts(&default, 3);
    assert!(
        msgs.len() >= 2 && (149..=151).contains(&(msgs[1] - msgs[0])),
        "{msgs:?}"
    );
    assert!(starts(&default, 2).is_empty());
}

/// A route's hold keys only fit the built-in hold and demo flows.
#[test]
fn check_refuses_a_route_hold_on_a_flow_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("f.toml"),
        "name = \"f\"\n\n[[nodes]]\nid = \"bye\"\ntype = \"hangup\"\n",
    )
    .unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[flows]\ndir = \"{}\"\n\n[[routes]]\nflow = \"f\"\nhold_music = [\"x.wav\"]\n\n[[routes]]\nflow = \"hold\"\nhold_repeat_secs = 0\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crossline"))
        .args(["check", config.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("routes[0].hold_music: only the built-in"),
        "{text}"
    );
    assert!(
        text.contains("routes[1].hold_repeat_secs: must be 1..=86400"),
        "{text}"
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
