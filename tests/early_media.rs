//! Reliable provisionals (RFC 3262) and early media against the real
//! binary: a SIPp caller requiring 100rel, a SIPp caller checked for RTP
//! (ringback) before the 200 OK, and PJSIP (pjsua2) requiring 100rel and
//! recording what it hears. The calls we place PRACK too: see
//! tests/transfer.rs, where an agent's reliable early media is relayed.

mod common;

use std::path::Path;
use std::time::Duration;

use common::audio::*;
use common::*;

/// A gateway whose route rings for `ring_ms` with US ringback as early
/// media, then answers into hold music of a 600 Hz tone.
fn early_media_gateway(ring_ms: u64, dir: &Path) -> Gateway {
    let music = dir.join("music.wav");
    write_tone(&music, 600.0, 6.0, 8000.0, 8000);
    Gateway::start(&format!(
        "[media]\nhold_music = [\"{}\"]\nhold_message = \"\"\nringback_tone = \"us\"\n\n\
         [[routes]]\nflow = \"hold\"\nring_ms = {ring_ms}\nearly_media = \"ringback\"\n",
        music.display()
    ))
}

/// The caller requires 100rel: our 180 carries Require: 100rel and an
/// RSeq and is retransmitted (same RSeq) until the PRACK; a PRACK with a
/// RAck that names nothing of ours gets 481 (SIPp checks), counted.
#[test]
fn reliable_ringing_is_retransmitted_until_pracked() {
    let gw = Gateway::start("[[routes]]\nflow = \"hold\"\nring_ms = 3000\n");
    let cap = start_capture(&format!("udp port {}", gw.sip_port));
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_100rel.xml"),
            &gw.sip_addr(),
            "-m",
            "1",
        ],
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_millis(300));
    let (file, _dir) = cap.stop();
    assert!(run.ok(), "{}\n{}", run.describe(), gw.log());
    let decode = vec![format!("udp.port=={},sip", gw.sip_port)];
    let time = |r: &Vec<String>| r[0].parse::<f64>().unwrap();
    let ringing = tshark_fields(
        &file,
        &decode,
        &format!("sip.Status-Code == 180 && udp.srcport == {}", gw.sip_port),
        &["frame.time_epoch", "sip.RSeq"],
    );
    let pracks = tshark_fields(
        &file,
        &decode,
        "sip.Method == \"PRACK\"",
        &["frame.time_epoch", "sip.RAck"],
    );
    assert_eq!(pracks.len(), 2, "{pracks:?}");
    let before_prack: Vec<_> = ringing
        .iter()
        .filter(|r| time(r) < time(&pracks[0]))
        .collect();
    assert!(
        before_prack.len() >= 2,
        "the 180 is retransmitted until PRACKed: {ringing:?}"
    );
    assert!(
        ringing.iter().all(|r| r[1] == ringing[0][1]),
        "one RSeq: {ringing:?}"
    );
    let after_ok = ringing
        .iter()
        .filter(|r| time(r) > time(&pracks[1]) + 0.1)
        .count();
    assert_eq!(after_ok, 0, "no 180 after its PRACK: {ringing:?}");
    assert_metric_at_least(
        &gw,
        "crossline_sip_pracks_total{direction=\"received\"}",
        1.0,
    );
    assert_metric_at_least(&gw, "crossline_sip_pracks_refused_total", 1.0);
    assert_metric_at_least(&gw, "crossline_sip_reliable_provisionals_sent_total", 1.0);
}

/// Early media: a 183 with SDP at once, the ringback (440 + 480 Hz)
/// flowing as RTP for the 2.5 s before the 200 OK, which repeats the 183's
/// SDP; after it the same stream carries the hold music.
#[test]
fn early_media_183_carries_ringback_before_the_200() {
    let dir = tempfile::tempdir().unwrap();
    let gw = early_media_gateway(2_500, dir.path());
    let c = capture_call(
        &gw,
        &[
            "-sf",
            &scenario("uac_early_media.xml"),
            &gw.sip_addr(),
            "-m",
            "1",
            "-d",
            "2000",
        ],
        &["frame.time_epoch", "rtp.ssrc", "rtp.payload"],
    );
    assert!(c.run.ok(), "{}\n{}", c.run.describe(), gw.log());
    let decode = vec![format!("udp.port=={},sip", gw.sip_port)];
    let ours = |status: u16| -> (f64, String) {
        let rows = tshark_fields(
            &c.file,
            &decode,
            &format!(
                "sip.Status-Code == {status} && sdp && udp.srcport == {}",
                gw.sip_port
            ),
            &["frame.time_epoch", "sdp.owner"],
        );
        let r = rows
            .first()
            .unwrap_or_else(|| panic!("no {status} with SDP"));
        (r[0].parse().unwrap(), r[1..].join(","))
    };
    let (t183, o183) = ours(183);
    let (t200, o200) = ours(200);
    assert_eq!(o183, o200, "the 200 repeats the 183's SDP");
    within("ring_ms", t200 - t183, 2.3..3.0);
    let frames: Vec<(f64, Vec<f64>)> = c
        .rows
        .iter()
        .map(|r| (r[0].parse().unwrap(), pcmu_hex_to_linear(&r[2])))
        .collect();
    let first = frames.first().expect("RTP to the caller").0;
    assert!(
        first < t183 + 0.3,
        "RTP starts with the 183 ({:.2} s after it)",
        first - t183
    );
    let ring: Vec<_> = frames
        .iter()
        .filter(|f| f.0 > t183 + 0.2 && f.0 < t183 + 1.8)
        .collect();
    assert!(ring.len() > 60, "{} packets of ringback", ring.len());
    let ringback = ring
        .iter()
        .filter(|f| tone_level(&f.1, 440.0) > 1500.0 && tone_level(&f.1, 480.0) > 1500.0)
        .count();
    assert!(
        ringback * 10 >= ring.len() * 9,
        "440 + 480 Hz before the answer: {ringback}/{}",
        ring.len()
    );
    let held: Vec<_> = frames.iter().filter(|f| f.0 > t200 + 0.5).collect();
    let music = held
        .iter()
        .filter(|f| tone_level(&f.1, 600.0) > 4000.0)
        .count();
    assert!(
        held.len() > 40 && music * 10 >= held.len() * 9,
        "the hold music after the 200: {music}/{}",
        held.len()
    );
    assert!(
        c.rows.iter().all(|r| r[1] == c.rows[0][1]),
        "one stream (one SSRC) from the 183 on"
    );
    assert_metric_at_least(
        &gw,
        "crossline_sip_early_media_total{direction=\"sent\"}",
        1.0,
    );
}

/// PJSIP requiring 100rel: our 183 comes reliably and PJSIP PRACKs it, its
/// early media plays the ringback, and the answer follows the PRACK; what
/// PJSIP recorded holds the ringback, then the hold music.
#[test]
fn pjsua2_requiring_100rel_pracks_our_183_and_hears_the_ringback() {
    let dir = tempfile::tempdir().unwrap();
    let gw = early_media_gateway(2_500, dir.path());
    let wav = dir.path().join("heard.wav");
    let target = format!("sip:1000@{}", gw.sip_addr());
    let out = peers::run_script(
        "pjsua2",
        "pjsua_call.py",
        &[
            &target,
            "6",
            "--100rel",
            "--record",
            &wav.display().to_string(),
        ],
        Duration::from_secs(40),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let at = |prefix: &str| -> f64 {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix:?}:\n{stdout}\n{}", gw.log()))
    };
    let (early, media, prack, confirmed) = (
        at("state EARLY 183"),
        at("media"),
        at("tsx PRACK 200 uac"),
        at("state CONFIRMED"),
    );
    assert!(early <= prack && prack <= confirmed, "{stdout}");
    within("answer after the 183", confirmed - early, 2.2..3.2);
    assert_metric_at_least(
        &gw,
        "crossline_sip_pracks_total{direction=\"received\"}",
        1.0,
    );
    // What PJSIP heard, from the moment its media came up (the 183).
    let mut reader = hound::WavReader::open(&wav).expect("pjsua2 recorded a WAV");
    let rate = f64::from(reader.spec().sample_rate);
    let samples: Vec<f64> = reader
        .samples::<i16>()
        .map(|s| f64::from(s.unwrap()))
        .collect();
    let window = |from: f64, to: f64| -> Vec<f64> {
        let (a, b) = ((from * rate) as usize, (to * rate) as usize);
        samples.get(a..b.min(samples.len())).unwrap_or(&[]).to_vec()
    };
    let level = |s: &[f64], f: f64| tone_level_at(s, f, rate);
    let ring = window(0.3, 1.5);
    assert!(
        level(&ring, 440.0) > 1000.0 && level(&ring, 480.0) > 1000.0,
        "ringback early: 440 Hz {:.0}, 480 Hz {:.0}",
        level(&ring, 440.0),
        level(&ring, 480.0)
    );
    let answered = confirmed - media;
    let music = window(answered + 0.8, answered + 2.5);
    assert!(
        level(&music, 600.0) > 2000.0 && level(&music, 440.0) < 300.0,
        "hold music after the answer: 600 Hz {:.0}, 440 Hz {:.0}",
        level(&music, 600.0),
        level(&music, 440.0)
    );
}
