//! TwiML's voice-AI verbs end to end: a Python app built on the official
//! `twilio` library (tests/peers/voice_ai_app.py: VoiceResponse writes
//! `<Connect><Stream>`, `<Start>`/`<Stop>` and `<Gather input="speech">`,
//! RequestValidator checks every request) runs calls a pjsua2 caller
//! places. The stream agent (tests/peers/stream_agent.py) checks the
//! Media Streams messages and talks back; the recognizer stand-in
//! (tests/peers/stt_standin.py) answers the speech gather.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::audio::*;
use common::voice::{
    errors, frames_to_caller, phrase_match, spoken, start_peer, Agent, Reaped, Standin,
};
use common::*;
use serde_json::Value;

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "twiml-test-auth-token-0123456789";

/// The Python app on its own port, logging each request it gets.
struct App {
    _child: Reaped,
    port: u16,
    log: PathBuf,
}

impl App {
    fn start(dir: &Path) -> App {
        // 1 kHz for 1 s: what the documents <Play>.
        let tone = dir.join("tone.wav");
        write_tone(&tone, 1000.0, 1.0, 8000.0, 8000);
        let log = dir.join("requests.jsonl");
        std::fs::write(&log, "").unwrap();
        let port = free_port();
        let child = start_peer(
            "twilio",
            "voice_ai_app.py",
            &[
                &port.to_string(),
                &path_str(&log),
                AUTH_TOKEN,
                &path_str(&tone),
            ],
            "ready",
        );
        App {
            _child: Reaped(child),
            port,
            log,
        }
    }

    /// The requests made to `path`, each checked by RequestValidator.
    fn requests_to(&self, path: &str) -> Vec<Value> {
        let all: Vec<Value> = std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        for r in &all {
            assert_eq!(r["valid"], true, "RequestValidator refused {r}");
        }
        all.into_iter().filter(|r| r["path"] == path).collect()
    }
}

/// A gateway whose calls to `did` go to the app's `path` (with `query`),
/// and `asr` as its `[asr]` table.
fn gateway(app: &App, did: &str, path_and_query: &str, asr: &str) -> Gateway {
    Gateway::start(&format!(
        "[twiml]\naccount_sid = \"{ACCOUNT_SID}\"\nauth_token = \"{AUTH_TOKEN}\"\ntimeout_ms = 2000\n\n\
         {asr}\n\n\
         [[routes]]\ndid = \"{did}\"\napp = {{ url = \"http://127.0.0.1:{}{path_and_query}\" }}\n",
        app.port
    ))
}

/// A pjsua2 caller dialling `did` for up to `secs`, with `extra` options;
/// its event lines.
fn call(gw: &Gateway, did: &str, secs: u32, extra: &[&str]) -> String {
    let target = format!("sip:{did}@{}", gw.sip_addr());
    let secs = secs.to_string();
    let mut args = vec![target.as_str(), secs.as_str()];
    args.extend_from_slice(extra);
    let out = peers::run_script("pjsua2", "pjsua_call.py", &args, Duration::from_secs(60));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `<Connect><Stream>` with `<Parameter>`s: the agent gets a signed
/// connection and a start message with the app's CallSid, the account
/// and the customParameters; it hears the caller's 1 kHz and talks back
/// 400 Hz, which the caller hears; when it closes the socket the
/// Connect's action is asked (the verb after it never runs).
#[test]
fn connect_stream_reaches_the_agent_and_its_close_asks_the_action() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(dir.path());
    let agent = Agent::start("talk", AUTH_TOKEN, dir.path());
    let gw = gateway(
        &app,
        "connect",
        &format!("/connect?agent={}", agent.port),
        "",
    );
    let tone = dir.path().join("caller-1k.wav");
    write_tone(&tone, 1000.0, 30.0, 8000.0, 8000);
    let cap = start_capture(&format!(
        "udp port {} or udp src portrange {}-{}",
        gw.sip_port, gw.rtp_range.0, gw.rtp_range.1
    ));
    let lines = call(&gw, "connect", 25, &["--play", &path_str(&tone)]);
    std::thread::sleep(Duration::from_millis(300));
    let (file, _cap_dir) = cap.stop();
    let summary = agent.summary(Duration::from_secs(10));
    assert!(errors(&summary).is_empty(), "{summary}");
    assert_eq!(summary["signature_ok"], true, "{summary}");
    let start = &summary["start"];
    let first = &app.requests_to("/connect")[0]["params"];
    assert_eq!(start["callSid"], first["CallSid"], "the app's CallSid");
    assert_eq!(start["accountSid"], ACCOUNT_SID);
    assert_eq!(start["tracks"], serde_json::json!(["inbound"]));
    assert_eq!(start["customParameters"]["lang"], "es");
    assert_eq!(start["customParameters"]["caller"], first["From"]);
    assert!(summary["tone_heard_at"].is_f64(), "{summary}");
    let talk = frames_to_caller(&file, gw.sip_port)
        .iter()
        .filter(|(_, s)| tone_level(s, 400.0) > 2000.0)
        .count();
    assert!(talk >= 140, "the agent's 3 s of 400 Hz: {talk} frames");
    let after = app.requests_to("/after-stream");
    assert_eq!(after.len(), 1, "the action, once");
    assert_eq!(after[0]["params"]["CallSid"], first["CallSid"]);
    assert!(
        gw.log().contains("outcome=\"closed\"") || gw.log().contains("outcome=closed"),
        "the agent closed the stream"
    );
    assert!(lines.contains("state DISCONNECTED"), "{lines}");
    assert!(!lines.contains("hangup"), "the app hung up: {lines}");
    assert_metric_at_least(
        &gw,
        "crossline_media_streams_total{outcome=\"closed\"}",
        1.0,
    );
}

/// `<Start><Stream name track="both_tracks">` forks the call while the
/// document plays a tone; `<Stop><Stream name>` ends it (the agent gets
/// `stop`) while the call is still up.
#[test]
fn start_forks_both_tracks_and_stop_ends_the_fork_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(dir.path());
    let agent = Agent::start("fork", AUTH_TOKEN, dir.path());
    let gw = gateway(&app, "fork", &format!("/fork?agent={}", agent.port), "");
    let voice = dir.path().join("caller-400.wav");
    write_tone(&voice, 400.0, 30.0, 8000.0, 8000);
    let lines = call(&gw, "fork", 20, &["--play", &path_str(&voice)]);
    let summary = agent.summary(Duration::from_secs(10));
    assert!(errors(&summary).is_empty(), "{summary}");
    assert_eq!(summary["signature_ok"], true, "{summary}");
    assert_eq!(
        summary["start"]["tracks"],
        serde_json::json!(["inbound", "outbound"])
    );
    let first = &app.requests_to("/fork")[0]["params"];
    assert_eq!(summary["stop"]["callSid"], first["CallSid"], "{summary}");
    let levels = &summary["levels"];
    assert!(
        levels["inbound"]["400"].as_f64().unwrap() > 2000.0,
        "{levels}"
    );
    assert!(
        levels["outbound"]["1000"].as_f64().unwrap() > 2000.0,
        "{levels}"
    );
    assert!(
        levels["outbound"]["400"].as_f64().unwrap() < 500.0,
        "{levels}"
    );
    let log = gw.log();
    let line_at = |needle: &str| {
        let line = log
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle}:\n{log}"));
        seconds_of_day(line)
    };
    assert!(log.contains("stopped=1"), "{log}");
    // The fork stopped with the call still up: the <Pause length=2> after it.
    let up_after_stop = line_at("call ended") - line_at("<Stop><Stream>");
    assert!(
        up_after_stop > 1.5,
        "the call ended {up_after_stop:.2} s after the stop"
    );
    assert!(lines.contains("state DISCONNECTED"), "{lines}");
    assert!(!lines.contains("hangup"), "the app hung up: {lines}");
}

/// `<Gather input="speech">`: the caller speaks over the prompt (barge-in
/// stops it), the recognizer stand-in gets the caller's phrase (matched
/// by correlation) with the Gather's language, and the action gets its
/// transcript as SpeechResult with its Confidence, signed.
#[test]
fn speech_gather_posts_the_transcript_to_its_action() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(dir.path());
    let stt = Standin::start("generic", "normal", "I want an agent", dir.path());
    let asr = format!(
        "[asr]\nprovider = \"websocket\"\nurl = \"ws://127.0.0.1:{}/asr\"\napi_key = \"test-key\"\nresult_timeout_ms = 2000",
        stt.port
    );
    let gw = gateway(&app, "speech", "/speech", &asr);
    let said = spoken(dir.path(), "en", "I want an agent");
    let lines = call(
        &gw,
        "speech",
        20,
        &[
            "--play",
            &path_str(&said),
            "--play-once",
            "--play-at",
            "1.0",
        ],
    );
    let heard = app.requests_to("/heard");
    assert_eq!(heard.len(), 1, "{lines}\n{}", gw.log());
    let p = &heard[0]["params"];
    assert_eq!(p["SpeechResult"], "I want an agent");
    assert_eq!(p["Confidence"], "0.87");
    assert!(p.get("Digits").is_none(), "{p}");
    assert!(gw.log().contains("barge-in by speech"), "{}", gw.log());
    let summary = stt.summary();
    let conn = &summary["connections"][0];
    assert_eq!(conn["errors"], serde_json::json!([]), "{summary}");
    assert_eq!(conn["start"]["language"], "en-US");
    assert_eq!(
        conn["start"]["hints"],
        serde_json::json!(["agent", "text me"])
    );
    let r = phrase_match(&stt.heard(), &said);
    assert!(
        r > 0.6,
        "the recognizer's audio matches the phrase: r = {r:.2}"
    );
    assert!(lines.contains("state DISCONNECTED"), "{lines}");
    assert!(!lines.contains("hangup"), "the app hung up: {lines}");
}

/// A speech `<Gather>` that can't listen: without `[asr]` it is an app
/// error (counted, the spoken error, our hang-up); with a recognizer that
/// can't be reached it hears nothing, so the next verb runs, as on
/// Twilio. With `input="dtmf speech"` a key wins: the action gets
/// `Digits` and no `SpeechResult`.
#[test]
fn speech_gather_without_a_recognizer_a_broken_one_and_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(dir.path());
    let ended_by_us = |lines: &str| {
        assert!(lines.contains("state DISCONNECTED"), "{lines}");
        assert!(!lines.contains("hangup"), "the caller hung up: {lines}");
    };

    let gw = gateway(&app, "speech", "/speech", "");
    ended_by_us(&call(&gw, "speech", 20, &[]));
    assert_metric_at_least(
        &gw,
        "crossline_twiml_app_errors_total{kind=\"no_asr\"}",
        1.0,
    );
    assert!(gw.log().contains("needs a recognizer"), "{}", gw.log());
    drop(gw);

    let dead = free_port();
    let gw = gateway(
        &app,
        "speech",
        "/speech",
        &format!("[asr]\nprovider = \"websocket\"\nurl = \"ws://127.0.0.1:{dead}/asr\"\nconnect_timeout_ms = 500"),
    );
    ended_by_us(&call(&gw, "speech", 20, &[]));
    let log = gw.log();
    assert!(log.contains("<Gather>: recognizer failed"), "{log}");
    assert!(!log.contains("webhook app error"), "{log}");
    assert_metric_at_least(
        &gw,
        "crossline_asr_provider_errors_total{provider=\"websocket\"}",
        1.0,
    );
    drop(gw);
    assert!(app.requests_to("/heard").is_empty(), "nothing was heard");

    let stt = Standin::start("generic", "normal", "agent", dir.path());
    let gw = gateway(
        &app,
        "speech",
        "/speech?keys=1",
        &format!(
            "[asr]\nprovider = \"websocket\"\nurl = \"ws://127.0.0.1:{}/asr\"\napi_key = \"test-key\"",
            stt.port
        ),
    );
    ended_by_us(&call(&gw, "speech", 20, &["--dtmf-at", "1.5", "5"]));
    let heard = app.requests_to("/heard");
    assert_eq!(heard.len(), 1, "{}", gw.log());
    assert_eq!(heard[0]["params"]["Digits"], "5");
    assert!(
        heard[0]["params"].get("SpeechResult").is_none(),
        "{heard:?}"
    );
}

/// A fork hears on while a speech `<Gather>` listens: the call's one tap
/// is relayed to the fork and the recognizer, so the fork's inbound
/// chunks run without a gap from `<Start>` to `<Stop>`, and the
/// recognizer still gets the caller's phrase.
#[test]
fn a_fork_hears_on_while_a_speech_gather_listens() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(dir.path());
    let agent = Agent::start("fork", AUTH_TOKEN, dir.path());
    let stt = Standin::start("generic", "normal", "I want an agent", dir.path());
    let asr = format!(
        "[asr]\nprovider = \"websocket\"\nurl = \"ws://127.0.0.1:{}/asr\"\napi_key = \"test-key\"\nresult_timeout_ms = 2000",
        stt.port
    );
    let gw = gateway(
        &app,
        "fork",
        &format!("/fork-gather?agent={}", agent.port),
        &asr,
    );
    let said = spoken(dir.path(), "en", "I want an agent");
    let lines = call(
        &gw,
        "fork",
        20,
        &[
            "--no-vad",
            "--play",
            &path_str(&said),
            "--play-once",
            "--play-at",
            "1.0",
        ],
    );
    assert!(lines.contains("state DISCONNECTED"), "{lines}");
    let summary = agent.summary(Duration::from_secs(10));
    assert!(errors(&summary).is_empty(), "{summary}");
    assert!(summary["stop"].is_object(), "stopped by <Stop>: {summary}");
    let heard = app.requests_to("/fork-heard");
    assert_eq!(heard.len(), 1, "{}", gw.log());
    assert_eq!(heard[0]["params"]["SpeechResult"], "I want an agent");
    let secs = summary["closed_at"].as_f64().unwrap() - summary["started_at"].as_f64().unwrap();
    let chunks = summary["tracks"]["inbound"]["chunks"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(secs > 3.0, "the fork ran {secs:.1} s");
    assert!(
        chunks >= (secs - 0.5) * 50.0 * 0.9,
        "{chunks} inbound chunks in {secs:.1} s: the fork went deaf while the gather listened"
    );
    let r = phrase_match(&stt.heard(), &said);
    assert!(
        r > 0.6,
        "the recognizer's audio matches the phrase: r = {r:.2}"
    );
}
