//! Media streams against the real binary: a pjsua2 caller talks to a
//! voice agent (tests/peers/stream_agent.py, Python `websockets`) through
//! crossline in the Twilio Media Streams format. The agent checks the
//! signature and every message, hears the caller's tone, talks back, and
//! its mark, clear and close are checked on the RTP the caller gets
//! (tshark). A one-way fork carries both tracks while the flow goes on,
//! and an agent that misbehaves in every way costs only its own stream.
//! A real agent framework, pipecat with its Twilio serializer, echoes the
//! caller's tone back (tests/peers/pipecat_echo.py).

mod common;

use std::path::Path;
use std::time::Duration;

use common::audio::*;
use common::voice::{errors, frames_to_caller, start_peer, Agent, Reaped};
use common::*;

const TOKEN: &str = "stream-token-0123456789";

/// A gateway whose every call runs `nodes` (a flow starting at "start").
fn gateway(dir: &Path, nodes: &str) -> Gateway {
    let flows = dir.join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::write(
        flows.join("agent.toml"),
        format!("name = \"agent\"\n\n{nodes}"),
    )
    .unwrap();
    Gateway::start(&format!(
        "[media_streams]\nauth_token = \"{TOKEN}\"\n\n[flows]\ndir = \"{}\"\n\n[[routes]]\nflow = \"agent\"\n",
        flows.display()
    ))
}

/// A pjsua2 caller playing `wav` at the gateway for up to `secs`; its
/// event lines.
fn pjsua_call(gw: &Gateway, secs: u32, extra: &[&str]) -> String {
    let target = format!("sip:agent@{}", gw.sip_addr());
    let mut args = vec![target.as_str(), ""];
    let secs = secs.to_string();
    args[1] = &secs;
    args.extend_from_slice(extra);
    let out = common::peers::run_script("pjsua2", "pjsua_call.py", &args, Duration::from_secs(60));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Bidirectional (`connect`): the agent hears the caller's 1 kHz tone in
/// signed, well-formed messages, talks back 400 Hz that the caller gets,
/// its mark returns once that audio has played, the caller's digit
/// reaches it, its clear silences 600 Hz within 100 ms, and its close
/// sends the flow on to `next`.
#[test]
fn a_connected_agent_hears_the_caller_and_talks_back() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start("talk", TOKEN, dir.path());
    let gw = gateway(
        dir.path(),
        &format!(
            "[[nodes]]\nid = \"start\"\ntype = \"stream\"\nurl = \"ws://127.0.0.1:{}/media\"\nparameters = {{ caller = \"{{{{caller}}}}\", lang = \"es\" }}\nnext = \"after\"\non_error = \"failed\"\n\n\
             [[nodes]]\nid = \"after\"\ntype = \"pause\"\nsecs = 0.5\nnext = \"bye\"\n\n\
             [[nodes]]\nid = \"bye\"\ntype = \"hangup\"\n\n\
             [[nodes]]\nid = \"failed\"\ntype = \"hangup\"\n",
            agent.port
        ),
    );
    let tone = dir.path().join("caller-1k.wav");
    write_tone(&tone, 1000.0, 30.0, 8000.0, 8000);
    let cap = start_capture(&format!(
        "udp port {} or udp src portrange {}-{}",
        gw.sip_port, gw.rtp_range.0, gw.rtp_range.1
    ));
    let lines = pjsua_call(
        &gw,
        25,
        &["--play", &path_str(&tone), "--dtmf-at", "1.5", "5"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let (file, _cap_dir) = cap.stop();
    let summary = agent.summary(Duration::from_secs(10));
    let log = gw.log();
    assert!(errors(&summary).is_empty(), "{summary}");
    assert_eq!(summary["signature_ok"], true, "{summary}");
    assert_eq!(summary["path"], "/media");
    let events: Vec<&str> = summary["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert_eq!(&events[..3], ["connected", "start", "media"], "{events:?}");
    let start = &summary["start"];
    assert_eq!(start["accountSid"], "AC00000000000000000000000000000000");
    assert!(start["callSid"].as_str().unwrap().starts_with("CA"));
    assert_eq!(start["callSid"].as_str().unwrap().len(), 34);
    assert!(start["streamSid"].as_str().unwrap().starts_with("MZ"));
    assert_eq!(start["tracks"], serde_json::json!(["inbound"]));
    assert_eq!(start["customParameters"]["lang"], "es");
    assert_eq!(start["customParameters"]["caller"], "pjsua");
    // The caller's tone arrived as μ-law the agent could decode.
    assert!(summary["tone_heard_at"].is_f64(), "{summary}");
    // The mark came back once the 3 s of 400 Hz had played.
    let mark_after = summary["mark"]["after"].as_f64().unwrap();
    assert!(
        (2.5..4.5).contains(&mark_after),
        "mark after {mark_after:.2} s"
    );
    assert_eq!(
        summary["dtmf"],
        serde_json::json!([{"track": "inbound_track", "digit": "5"}])
    );
    let frames = frames_to_caller(&file, gw.sip_port);
    let with = |freq: f64| -> Vec<f64> {
        frames
            .iter()
            .filter(|(_, s)| tone_level(s, freq) > 2000.0)
            .map(|(t, _)| *t)
            .collect()
    };
    let talk = with(400.0);
    assert!(
        talk.len() >= 140,
        "the agent's 3 s of 400 Hz reached the caller: {} frames",
        talk.len()
    );
    let clear_at = summary["clear_at"].as_f64().unwrap();
    let long = with(600.0);
    assert!(
        long.iter().filter(|t| **t < clear_at).count() >= 40,
        "600 Hz before the clear"
    );
    let last = long.last().copied().unwrap_or(0.0);
    assert!(
        last < clear_at + 0.1,
        "600 Hz went on {:.0} ms after the clear",
        (last - clear_at) * 1000.0
    );
    // The agent closed: the flow went on at next and hung up.
    assert!(
        log.contains("outcome=\"closed\"") || log.contains("outcome=closed"),
        "{log}"
    );
    assert!(lines.contains("state DISCONNECTED"), "{lines}");
    assert!(
        !lines.contains("hangup"),
        "crossline hung up, not the caller: {lines}"
    );
    assert_metric_at_least(
        &gw,
        "crossline_media_streams_total{outcome=\"closed\"}",
        1.0,
    );
}

/// One-way (`start`, both tracks): the flow goes on at once (a looped
/// 400 Hz prompt) while the agent gets the caller's 1 kHz as the inbound
/// track and the prompt as the outbound one, until the call ends and
/// crossline sends `stop`.
#[test]
fn a_forked_stream_carries_both_tracks_while_the_flow_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start("fork", TOKEN, dir.path());
    let prompt = dir.path().join("prompt-400.wav");
    write_tone(&prompt, 400.0, 2.0, 8000.0, 8000);
    let gw = gateway(
        dir.path(),
        &format!(
            "[[nodes]]\nid = \"start\"\ntype = \"stream\"\nmode = \"start\"\ntrack = \"both_tracks\"\nurl = \"ws://127.0.0.1:{}/media\"\nnext = \"music\"\n\n\
             [[nodes]]\nid = \"music\"\ntype = \"play\"\nfile = \"{}\"\nloop = true\nduration_secs = 4.0\nnext = \"bye\"\n\n\
             [[nodes]]\nid = \"bye\"\ntype = \"hangup\"\n",
            agent.port,
            prompt.display()
        ),
    );
    let tone = dir.path().join("caller-1k.wav");
    write_tone(&tone, 1000.0, 30.0, 8000.0, 8000);
    let lines = pjsua_call(&gw, 20, &["--play", &path_str(&tone)]);
    assert!(lines.contains("state DISCONNECTED"), "{lines}");
    let summary = agent.summary(Duration::from_secs(10));
    assert!(errors(&summary).is_empty(), "{summary}");
    assert_eq!(
        summary["start"]["tracks"],
        serde_json::json!(["inbound", "outbound"])
    );
    for track in ["inbound", "outbound"] {
        let chunks = summary["tracks"][track]["chunks"].as_u64().unwrap_or(0);
        assert!(chunks >= 150, "{track}: {chunks} chunks in ~4 s");
    }
    let levels = &summary["levels"];
    assert!(
        levels["inbound"]["1000"].as_f64().unwrap() > 2000.0,
        "{levels}"
    );
    assert!(
        levels["outbound"]["400"].as_f64().unwrap() > 2000.0,
        "{levels}"
    );
    assert!(
        levels["outbound"]["1000"].as_f64().unwrap() < 500.0,
        "{levels}"
    );
    let call_sid = summary["start"]["callSid"].clone();
    assert_eq!(
        summary["stop"]["callSid"], call_sid,
        "stop when the call ended"
    );
}

/// An agent that sends a binary frame, invalid JSON, an unknown event,
/// base64 garbage and 60 s of audio at once: each is refused and
/// counted, the flood is cut to the playout buffer (oldest dropped,
/// counted) and the call goes on; a message over `max_message_kb` ends
/// the stream and the flow takes `on_error`, the call still up.
#[test]
fn a_misbehaving_agent_costs_only_its_own_stream() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start("abuse", TOKEN, dir.path());
    let gw = gateway(
        dir.path(),
        &format!(
            "[[nodes]]\nid = \"start\"\ntype = \"stream\"\nurl = \"ws://127.0.0.1:{}/media\"\nnext = \"bye\"\non_error = \"failed\"\n\n\
             [[nodes]]\nid = \"failed\"\ntype = \"pause\"\nsecs = 1.5\nnext = \"bye\"\n\n\
             [[nodes]]\nid = \"bye\"\ntype = \"hangup\"\n",
            agent.port
        ),
    );
    let lines = pjsua_call(&gw, 20, &[]);
    let summary = agent.summary(Duration::from_secs(10));
    let log = gw.log();
    assert!(lines.contains("state CONFIRMED"), "{lines}");
    assert!(lines.contains("state DISCONNECTED"), "{lines}");
    assert!(
        !lines.contains("hangup"),
        "the flow ended the call, not a crash: {lines}"
    );
    assert!(log.contains("media stream failed"), "{log}");
    assert!(log.contains("node=failed"), "the flow took on_error: {log}");
    for reason in ["binary", "invalid_json", "unknown", "bad_payload"] {
        assert_metric_at_least(
            &gw,
            &format!("crossline_media_stream_messages_refused_total{{reason=\"{reason}\"}}"),
            1.0,
        );
    }
    // 60 s sent into a 10 s buffer played at 50 frames a second.
    assert_metric_at_least(
        &gw,
        "crossline_media_stream_frames_dropped_total{direction=\"from_agent\"}",
        1500.0,
    );
    assert_metric_at_least(
        &gw,
        "crossline_media_streams_total{outcome=\"failed\"}",
        1.0,
    );
    assert!(summary["oversize_at"].is_f64(), "{summary}");
    let (status, _) = gw.http_get("/healthz");
    assert_eq!(status, 200);
}

/// A real agent framework: pipecat (PyPI `pipecat-ai`, its Twilio
/// serializer and FastAPI WebSocket transport) in an echo pipeline. It
/// recognises the connection as Twilio's (`parse_telephony_websocket`),
/// reads the stream and call ids and the custom parameters, and the
/// caller's 1 kHz tone comes back to the caller through it.
/// Installing `pipecat-ai[websocket]` and uvicorn into a fresh venv took
/// 48 s here (527 MB, onnxruntime and numba included); it starts in ~4 s.
#[test]
fn pipecat_echoes_the_callers_tone_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let summary_file = dir.path().join("pipecat.json");
    let agent = Reaped(start_peer(
        "pipecat",
        "pipecat_echo.py",
        &[&port.to_string(), &path_str(&summary_file)],
        "listening",
    ));
    let gw = gateway(
        dir.path(),
        &format!(
            "[[nodes]]\nid = \"start\"\ntype = \"stream\"\nurl = \"ws://127.0.0.1:{port}/media\"\nparameters = {{ lang = \"en\" }}\nnext = \"bye\"\non_error = \"bye\"\n\n\
             [[nodes]]\nid = \"bye\"\ntype = \"hangup\"\n"
        ),
    );
    let tone = dir.path().join("caller-1k.wav");
    write_tone(&tone, 1000.0, 30.0, 8000.0, 8000);
    let cap = start_capture(&format!(
        "udp port {} or udp src portrange {}-{}",
        gw.sip_port, gw.rtp_range.0, gw.rtp_range.1
    ));
    let lines = pjsua_call(&gw, 8, &["--play", &path_str(&tone)]);
    std::thread::sleep(Duration::from_millis(300));
    let (file, _cap_dir) = cap.stop();
    assert!(lines.contains("state CONFIRMED"), "{lines}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !summary_file.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(agent);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_file).expect("pipecat's summary"))
            .unwrap();
    assert!(errors(&summary).is_empty(), "{summary}");
    assert_eq!(summary["transport_type"], "twilio", "{summary}");
    assert!(summary["stream_id"].as_str().unwrap().starts_with("MZ"));
    assert!(summary["call_id"].as_str().unwrap().starts_with("CA"));
    assert_eq!(summary["body"]["lang"], "en");
    let echoed = frames_to_caller(&file, gw.sip_port)
        .iter()
        .filter(|(_, s)| tone_level(s, 1000.0) > 2000.0)
        .count();
    // About 7 s of the call's 8 carry the echo.
    assert!(
        echoed >= 200,
        "the caller heard its tone back in {echoed} frames"
    );
}

/// An agent that takes the TCP connection and never answers the
/// WebSocket upgrade: after `connect_timeout_ms` the stream fails, the
/// flow takes `on_error`, and the call stays up until the flow ends it.
#[test]
fn an_agent_that_never_answers_times_out_to_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    // Hold every connection open, unanswered, for the test's life.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming().flatten() {
            held.push(conn);
        }
    });
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::write(
        flows.join("agent.toml"),
        format!(
            "name = \"agent\"\n\n[[nodes]]\nid = \"start\"\ntype = \"stream\"\nurl = \"ws://127.0.0.1:{port}/media\"\n\
             next = \"bye\"\non_error = \"failed\"\n\n\
             [[nodes]]\nid = \"failed\"\ntype = \"pause\"\nsecs = 1.5\nnext = \"bye\"\n\n\
             [[nodes]]\nid = \"bye\"\ntype = \"hangup\"\n"
        ),
    )
    .unwrap();
    let gw = Gateway::start(&format!(
        "[media_streams]\nauth_token = \"{TOKEN}\"\nconnect_timeout_ms = 1000\n\n[flows]\ndir = \"{}\"\n\n[[routes]]\nflow = \"agent\"\n",
        flows.display()
    ));
    let started = std::time::Instant::now();
    let lines = pjsua_call(&gw, 20, &[]);
    let took = started.elapsed();
    let log = gw.log();
    assert!(lines.contains("state CONFIRMED"), "{lines}");
    assert!(lines.contains("state DISCONNECTED"), "{lines}");
    assert!(log.contains("node=failed"), "the flow took on_error: {log}");
    // 1 s of connect timeout and 1.5 s of pause before our hang-up; not
    // the caller's 20 s.
    assert!(
        took >= Duration::from_millis(2_400) && took < Duration::from_secs(15),
        "the call lasted {took:?}"
    );
    assert_metric_at_least(
        &gw,
        "crossline_media_streams_total{outcome=\"failed\"}",
        1.0,
    );
    let (status, _) = gw.http_get("/healthz");
    assert_eq!(status, 200);
}
