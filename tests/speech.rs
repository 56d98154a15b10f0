//! Speech input against the real binary: a pjsua2 caller says a phrase
//! (espeak-ng, 8 kHz) while a gather's prompt plays; crossline streams the
//! call's audio to a recognizer stand-in (tests/peers/stt_standin.py,
//! Deepgram's protocol or the generic one), whose transcript picks the
//! branch. The stand-in's audio is matched against the phrase by
//! correlation, barge-in is timed on the RTP (tshark), and a slow
//! recognizer, a dropped socket and a no-match each take their branch.

mod common;

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::audio::*;
use common::*;

struct Standin {
    child: Child,
    port: u16,
    summary: PathBuf,
    audio: PathBuf,
}

impl Standin {
    fn start(proto: &str, mode: &str, transcript: &str, dir: &Path) -> Standin {
        let port = free_port();
        let summary = dir.join(format!("stt-{proto}-{mode}.json"));
        let audio = dir.join(format!("stt-{proto}-{mode}.ulaw"));
        let mut child = Command::new(common::peers::python("websockets"))
            .arg(repo().join("tests/peers/stt_standin.py"))
            .args([&port.to_string(), proto, mode, transcript])
            .arg(&summary)
            .arg(&audio)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the STT stand-in");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "listening");
        Standin {
            child,
            port,
            summary,
            audio,
        }
    }

    fn summary(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(&self.summary).expect("the stand-in saw a connection");
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` spoken by espeak-ng as an 8 kHz mono WAV, with 0.3 s of
/// silence after it.
fn spoken(dir: &Path, text: &str) -> PathBuf {
    spoken_as(dir, text, "en", 150)
}

/// `text` in espeak-ng's `voice` at `wpm` words per minute.
fn spoken_as(dir: &Path, text: &str, voice: &str, wpm: u32) -> PathBuf {
    require("espeak-ng", "espeak-ng");
    require("sox", "sox");
    let raw = dir.join("raw.wav");
    let out = dir.join("said.wav");
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

/// A gateway whose calls run a speech gather: prompt a 3 s 400 Hz tone,
/// grammar agent/sms/whatsapp/goodbye, on_failure "failed".
fn gateway(dir: &Path, asr: &str) -> Gateway {
    let flows = dir.join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    let prompt = dir.join("prompt.wav");
    write_tone(&prompt, 400.0, 3.0, 8000.0, 8000);
    std::fs::write(
        flows.join("menu.toml"),
        format!(
            "name = \"menu\"\n\n\
             [[nodes]]\nid = \"menu\"\ntype = \"gather\"\ninput = \"speech\"\nprompt_file = \"{}\"\ntimeout_secs = 6\nspeech_timeout_secs = 0.8\nretries = 0\n\
             grammar = {{ agent = [\"agent\", \"operator\"], sms = [\"text me\"], whatsapp = [\"whatsapp\"], goodbye = [\"goodbye\"] }}\n\
             branches = {{ agent = \"to_agent\", sms = \"to_sms\", whatsapp = \"to_whatsapp\", goodbye = \"to_goodbye\" }}\non_failure = \"failed\"\n\n\
             [[nodes]]\nid = \"to_agent\"\ntype = \"pause\"\nsecs = 0.3\nnext = \"bye\"\n\n\
             [[nodes]]\nid = \"to_whatsapp\"\ntype = \"pause\"\nsecs = 0.3\nnext = \"bye\"\n\n\
             [[nodes]]\nid = \"to_goodbye\"\ntype = \"pause\"\nsecs = 0.3\nnext = \"bye\"\n\n\
             [[nodes]]\nid = \"to_sms\"\ntype = \"pause\"\nsecs = 0.3\nnext = \"bye\"\n\n\
             [[nodes]]\nid = \"failed\"\ntype = \"pause\"\nsecs = 0.3\nnext = \"bye\"\n\n\
             [[nodes]]\nid = \"bye\"\ntype = \"hangup\"\n",
            prompt.display()
        ),
    )
    .unwrap();
    Gateway::start(&format!(
        "[asr]\n{asr}\napi_key = \"test-key\"\nresult_timeout_ms = 2000\n\n[flows]\ndir = \"{}\"\n\n[[routes]]\nflow = \"menu\"\n",
        flows.display()
    ))
}

/// A pjsua2 caller saying `wav` once, `at` seconds after the answer.
fn say_into_call(gw: &Gateway, wav: &Path, at: &str) -> String {
    let target = format!("sip:menu@{}", gw.sip_addr());
    let wav = path_str(wav);
    let out = common::peers::run_script(
        "pjsua2",
        "pjsua_call.py",
        &[
            &target,
            "20",
            "--play",
            &wav,
            "--play-once",
            "--play-at",
            at,
        ],
        Duration::from_secs(60),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Best normalised cross-correlation of `b` against `a` over lags.
fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let energy = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>().sqrt();
    let (ea, eb) = (energy(a), energy(b));
    if ea == 0.0 || eb == 0.0 || b.len() > a.len() {
        return 0.0;
    }
    let at = |lag: usize| {
        let window = &a[lag..lag + b.len()];
        let dot: f64 = window.iter().zip(b).map(|(x, y)| x * y).sum();
        dot / (energy(window).max(1e-9) * eb)
    };
    // Coarse (every 8th lag, on the envelope of the match), then exact
    // around the best.
    let last = a.len() - b.len();
    let coarse = (0..=last)
        .step_by(8)
        .max_by(|x, y| at(*x).abs().total_cmp(&at(*y).abs()))
        .unwrap_or(0);
    (coarse.saturating_sub(8)..=(coarse + 8).min(last))
        .map(at)
        .fold(0.0, f64::max)
}

/// The generic protocol: the caller says "I want an agent" over the
/// prompt; the prompt stops within 300 ms of the speech (barge-in), the
/// recognizer gets the caller's audio (it matches the phrase), and its
/// transcript takes the agent branch.
#[test]
fn speech_barges_in_reaches_the_recognizer_and_picks_the_branch() {
    let dir = tempfile::tempdir().unwrap();
    let stt = Standin::start("generic", "normal", "I want an agent", dir.path());
    let gw = gateway(
        dir.path(),
        &format!(
            "provider = \"websocket\"\nurl = \"ws://127.0.0.1:{}/asr\"",
            stt.port
        ),
    );
    let said = spoken(dir.path(), "I want an agent");
    let cap = start_capture(&format!(
        "udp port {} or udp portrange {}-{}",
        gw.sip_port, gw.rtp_range.0, gw.rtp_range.1
    ));
    let lines = say_into_call(&gw, &said, "1.0");
    std::thread::sleep(Duration::from_millis(300));
    let (file, _cap_dir) = cap.stop();
    let log = gw.log();
    assert!(log.contains("node=to_agent"), "the agent branch: {log}");
    assert!(log.contains("barge-in by speech"), "{log}");
    assert!(lines.contains("state DISCONNECTED"), "{lines}");
    let summary = stt.summary();
    let conn = &summary["connections"][0];
    assert_eq!(conn["errors"], serde_json::json!([]), "{summary}");
    assert_eq!(conn["start"]["language"], "en");
    // What reached the recognizer is the caller's phrase.
    let heard: Vec<f64> = std::fs::read(&stt.audio)
        .unwrap()
        .into_iter()
        .map(ulaw_to_linear)
        .collect();
    let phrase: Vec<f64> = hound::WavReader::open(&said)
        .unwrap()
        .into_samples::<i16>()
        .map(|s| f64::from(s.unwrap()))
        .collect();
    let spoken_part: Vec<f64> = phrase
        .iter()
        .copied()
        .take(phrase.len().min(8000))
        .collect();
    let r = correlation(&heard, &spoken_part);
    assert!(
        r > 0.6,
        "the recognizer's audio matches the phrase: r = {r:.2}"
    );
    // Barge-in: the prompt (400 Hz) stops within 300 ms of the speech.
    let sip = vec![format!("udp.port=={},sip", gw.sip_port)];
    let caller_port: u16 = tshark_fields(
        &file,
        &sip,
        &format!(
            "sip.Method == \"INVITE\" && sdp && udp.dstport == {}",
            gw.sip_port
        ),
        &["sdp.media.port"],
    )[0][0]
        .parse()
        .unwrap();
    let rtp = |filter: String| -> Vec<(f64, Vec<f64>)> {
        tshark_fields(
            &file,
            &[format!("udp.port=={caller_port},rtp")],
            &filter,
            &["frame.time_epoch", "rtp.p_type", "rtp.payload"],
        )
        .iter()
        .filter(|r| r.len() >= 3)
        .map(|r| (r[0].parse().unwrap(), g711_hex_to_linear(&r[2], &r[1])))
        .collect()
    };
    let from_caller = rtp(format!("udp.srcport == {caller_port} && rtp"));
    let onset = from_caller
        .iter()
        .find(|(_, s)| s.iter().map(|v| v.abs()).fold(0.0, f64::max) > 1500.0)
        .map(|(t, _)| *t)
        .expect("the caller's speech in the capture");
    let to_caller = rtp(format!("udp.dstport == {caller_port} && rtp"));
    let prompt_end = to_caller
        .iter()
        .filter(|(_, s)| tone_level(s, 400.0) > 2000.0)
        .map(|(t, _)| *t)
        .fold(0.0, f64::max);
    assert!(
        prompt_end > onset - 0.5,
        "the prompt was still playing when the caller spoke"
    );
    assert!(
        prompt_end - onset <= 0.3,
        "the prompt stopped {:.0} ms after the speech began",
        (prompt_end - onset) * 1000.0
    );
    assert_metric_at_least(
        &gw,
        "crossline_asr_recognitions_total{provider=\"websocket\",result=\"recognized\"}",
        1.0,
    );
}

/// Deepgram's protocol: settings in the query, `Token` auth, Results
/// messages; "text me please" takes the sms branch.
#[test]
fn deepgrams_protocol_picks_the_branch() {
    let dir = tempfile::tempdir().unwrap();
    let stt = Standin::start("deepgram", "normal", "text me please", dir.path());
    let gw = gateway(
        dir.path(),
        &format!(
            "provider = \"deepgram\"\nurl = \"ws://127.0.0.1:{}/v1/listen\"\nmodel = \"nova-2-phonecall\"",
            stt.port
        ),
    );
    let said = spoken(dir.path(), "text me please");
    let lines = say_into_call(&gw, &said, "0.5");
    let log = gw.log();
    assert!(
        log.contains("node=to_sms"),
        "the sms branch: {log}\n{lines}"
    );
    let summary = stt.summary();
    let conn = &summary["connections"][0];
    assert_eq!(conn["errors"], serde_json::json!([]), "{summary}");
    assert_eq!(
        conn["query"]["model"],
        serde_json::json!(["nova-2-phonecall"])
    );
    assert_eq!(conn["query"]["language"], serde_json::json!(["en"]));
    assert!(conn["frames"].as_u64().unwrap() > 50, "{summary}");
}

/// A recognizer too slow to answer, one that drops the socket, and a
/// transcript that matches nothing each send the flow to on_failure, the
/// call going on to its end.
#[test]
fn a_slow_or_dropped_recognizer_and_a_no_match_take_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let said = spoken(dir.path(), "I want an agent");
    for (mode, transcript, result) in [
        ("slow", "I want an agent", "recognizer"),
        ("drop", "I want an agent", "recognizer"),
        ("normal", "banana split", "recognized"),
    ] {
        let sub = dir.path().join(mode);
        std::fs::create_dir_all(&sub).unwrap();
        let stt = Standin::start("generic", mode, transcript, &sub);
        let gw = gateway(
            &sub,
            &format!(
                "provider = \"websocket\"\nurl = \"ws://127.0.0.1:{}/asr\"",
                stt.port
            ),
        );
        let lines = say_into_call(&gw, &said, "0.5");
        let log = gw.log();
        assert!(log.contains("node=failed"), "{mode}: on_failure: {log}");
        assert!(!log.contains("node=to_agent"), "{mode}: {log}");
        assert!(lines.contains("state DISCONNECTED"), "{mode}: {lines}");
        assert!(
            !lines.contains("hangup"),
            "{mode}: the flow ended the call: {lines}"
        );
        assert_metric_at_least(
            &gw,
            &format!(
                "crossline_asr_recognitions_total{{provider=\"websocket\",result=\"{result}\"}}"
            ),
            1.0,
        );
        if mode == "normal" {
            assert_metric_at_least(&gw, "crossline_asr_no_match_total", 1.0);
        } else {
            assert_metric_at_least(
                &gw,
                "crossline_asr_provider_errors_total{provider=\"websocket\"}",
                1.0,
            );
        }
    }
}

/// The embedded recognizer (cargo feature `pocketsphinx`) on what
/// benches/README.md measures it to recognize every time, in every voice
/// and speed: "agent" and "goodbye", said by espeak-ng's en-us voice at
/// 130 wpm into a real call, each take their branch.
#[cfg(feature = "pocketsphinx")]
#[test]
fn pocketsphinx_recognizes_menu_words_in_a_call() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        Path::new("/usr/share/pocketsphinx/model/en-us/en-us/mdef").is_file(),
        "the model is missing: apt-get install -y libpocketsphinx-dev pocketsphinx-en-us"
    );
    let gw = gateway(dir.path(), "provider = \"pocketsphinx\"\nworkers = 1");
    for (word, node) in [("agent", "to_agent"), ("goodbye", "to_goodbye")] {
        let said = spoken_as(dir.path(), word, "en-us", 130);
        let lines = say_into_call(&gw, &said, "0.5");
        let log = gw.log();
        let branch = log
            .lines()
            .rfind(|l| l.contains("node=to_") || l.contains("node=failed"))
            .unwrap_or_default()
            .to_string();
        assert!(
            branch.contains(&format!("node={node}")),
            "{word}: {branch}\n{log}\n{lines}"
        );
        assert!(lines.contains("state DISCONNECTED"), "{word}: {lines}");
    }
    assert_metric_at_least(
        &gw,
        "crossline_asr_recognitions_total{provider=\"pocketsphinx\",result=\"recognized\"}",
        2.0,
    );
}
