//! Speech input against the real binary: a pjsua2 caller says a phrase
//! (espeak-ng, 8 kHz) while a gather's prompt plays; crossline streams the
//! call's audio to a recognizer stand-in (tests/peers/stt_standin.py,
//! Deepgram's protocol or the generic one), whose transcript picks the
//! branch. The stand-in's audio is matched against the phrase by
//! correlation, barge-in is timed on the RTP (tshark), and a slow
//! recognizer, a dropped socket and a no-match each take their branch.

mod common;

use std::path::Path;
use std::time::Duration;

use common::audio::*;
use common::voice::{phrase_match, spoken, Standin};
use common::*;

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
    let said = spoken(dir.path(), "en", "I want an agent");
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
    let r = phrase_match(&stt.heard(), &said);
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
    let said = spoken(dir.path(), "en", "text me please");
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
    let said = spoken(dir.path(), "en", "I want an agent");
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
        let said = common::voice::spoken_at(dir.path(), "en-us", word, 130);
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
