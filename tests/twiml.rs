//! TwiML webhook apps, end to end: a Python app built on the official
//! `twilio` library (tests/peers/twiml_app.py: VoiceResponse writes its
//! documents, RequestValidator checks every request crossline signs)
//! drives calls that SIPp places; what the caller hears is captured with
//! tshark and analysed as tests/media.rs does.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::audio::*;
use common::twiml_app::{App, Stopped, ACCOUNT_SID, AUTH_TOKEN};
use common::*;
use serde_json::Value;

const OPERATOR_TOKEN: &str = "operator-token-for-tests-0123";

/// A gateway with the test account and `routes`.
fn gateway(routes: &str) -> Gateway {
    Gateway::start(&format!(
        "[twiml]\naccount_sid = \"{ACCOUNT_SID}\"\nauth_token = \"{AUTH_TOKEN}\"\ntimeout_ms = 2000\n\n\
         [http]\noperator_token = \"{OPERATOR_TOKEN}\"\n\n{routes}"
    ))
}

/// `[[routes]]` sending `did` to the app at `url` (with `extra` keys in
/// its `app` table).
fn app_route(did: &str, url: &str, extra: &str) -> String {
    format!("[[routes]]\ndid = \"{did}\"\napp = {{ url = \"{url}\"{extra} }}\n\n")
}

/// The uac_dtmf scenario for `digit`, written out (SIPp can't template it).
fn pressing(gw: &Gateway, digit: &str) -> String {
    let text = std::fs::read_to_string(scenario("uac_dtmf.xml")).unwrap();
    let file = gw.dir.path().join(format!("press{digit}.xml"));
    std::fs::write(&file, text.replace("DIGIT", digit)).unwrap();
    path_str(&file)
}

/// Per RTP packet to the caller (time, payload): seconds of the day, the
/// 1 kHz tone's level and the RMS.
fn frames(rows: &[Vec<String>]) -> Vec<(f64, f64, f64)> {
    rows.iter()
        .map(|r| {
            let t = r[0].parse::<f64>().unwrap() % 86_400.0;
            let s = pcmu_hex_to_linear(&r[1]);
            let rms = (s.iter().map(|x| x * x).sum::<f64>() / s.len().max(1) as f64).sqrt();
            (t, tone_level(&s, 1000.0), rms)
        })
        .collect()
}

const FIELDS: &[&str] = &["frame.time_epoch", "rtp.payload"];

/// Frames of the tone, and frames of other sound (speech) before it.
fn tone_and_speech_before(rows: &[Vec<String>]) -> (usize, usize) {
    let f = frames(rows);
    let tone: Vec<usize> = (0..f.len()).filter(|&i| f[i].1 > 4000.0).collect();
    let first_tone = tone.first().copied().unwrap_or(f.len());
    let speech = f[..first_tone]
        .iter()
        .filter(|x| x.2 > 300.0 && x.1 < 2000.0)
        .count();
    (tone.len(), speech)
}

fn is_sid(s: &Value) -> bool {
    s.as_str().is_some_and(|s| {
        s.len() == 34 && s.starts_with("CA") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// The call records crossline kept, newest first, once `n` are there.
fn call_records(gw: &Gateway, n: usize) -> Vec<Value> {
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = gw.http("GET", "/v1/calls", &[("Authorization", &auth)], None);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let calls = reply.json()["calls"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if calls.len() >= n || Instant::now() > deadline {
            return calls;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Say then Play, heard in that order; the request carries Twilio's voice
/// parameters, signed so that RequestValidator accepts it; a second call
/// (through a Redirect, by GET) gets its own CallSid and the audio again
/// from the cache, revalidated by ETag (304).
#[test]
fn say_and_play_are_heard_and_every_request_is_signed() {
    let app = App::start();
    let gw = gateway(&format!(
        "{}{}",
        app_route("say", &app.url("/say-play"), ""),
        app_route("redirect", &app.url("/redirect"), "")
    ));
    let capture = capture_call(
        &gw,
        &[
            "-sf",
            &scenario("uac_wait_bye.xml"),
            &gw.sip_addr(),
            "-s",
            "say",
            "-m",
            "1",
        ],
        FIELDS,
    );
    assert!(capture.run.ok(), "{}", capture.run.describe());
    let (tone, speech) = tone_and_speech_before(&capture.rows);
    assert!(speech >= 25, "the <Say> before the tone: {speech} frames");
    assert!((45..=55).contains(&tone), "the 1 s <Play>: {tone} frames");

    let first = &app.requests_to("/say-play")[0];
    assert_eq!(first["method"], "POST");
    let p = &first["params"];
    assert!(is_sid(&p["CallSid"]), "{p}");
    assert_eq!(p["AccountSid"], ACCOUNT_SID);
    assert_eq!(p["From"], "+15551234567");
    assert_eq!(p["To"], "say");
    assert_eq!(p["CallStatus"], "ringing", "asked before the answer");
    assert_eq!(p["Direction"], "inbound");
    assert_eq!(p["ApiVersion"], "2010-04-01");
    assert_eq!(app.requests_to("/audio/tone.wav")[0]["status"], 200);

    let run = caller_waiting(&gw, "redirect");
    assert!(run.ok(), "{}", run.describe());
    let redirect = &app.requests_to("/redirect")[0];
    let again = &app.requests_to("/say-play")[1];
    assert_eq!(again["method"], "GET", "<Redirect method=\"GET\">");
    assert_eq!(again["params"]["CallSid"], redirect["params"]["CallSid"]);
    assert_ne!(
        again["params"]["CallSid"], p["CallSid"],
        "one CallSid per call"
    );
    let audio = app.requests_to("/audio/tone.wav");
    assert_eq!(audio.len(), 2, "{audio:?}");
    assert_eq!(audio[1]["if_none_match"], "\"tone-v1\"");
    assert_eq!(audio[1]["status"], 304);
    app.assert_all_signed();

    let records = call_records(&gw, 2);
    assert!(
        records
            .iter()
            .all(|r| r["flow"] == "twiml-app" && is_sid(&r["vars"]["twilio_call_sid"])),
        "{records:?}"
    );
}

/// `<Gather numDigits="1">` with a nested `<Say>`: SIPp's RFC 4733 digit
/// interrupts it, the action gets `Digits`, and its `<Play>` is heard.
#[test]
fn gather_reports_the_callers_digit_to_its_action() {
    let app = App::start();
    let gw = gateway(&app_route("gather", &app.url("/gather"), ""));
    let caller = pressing(&gw, "7");
    let capture = capture_call(
        &gw,
        &[
            "-sf",
            &caller,
            &gw.sip_addr(),
            "-s",
            "gather",
            "-m",
            "1",
            "-d",
            "1500",
        ],
        FIELDS,
    );
    assert!(capture.run.ok(), "{}", capture.run.describe());
    let gathered = app.requests_to("/gathered");
    assert_eq!(gathered.len(), 1, "{:?}", app.requests());
    let p = &gathered[0]["params"];
    assert_eq!(p["Digits"], "7");
    assert_eq!(p["CallStatus"], "in-progress");
    assert_eq!(
        p["CallSid"],
        app.requests_to("/gather")[0]["params"]["CallSid"]
    );
    let (tone, speech) = tone_and_speech_before(&capture.rows);
    assert!(speech >= 10, "the prompt: {speech} frames");
    assert!(
        (45..=55).contains(&tone),
        "the action's <Play>: {tone} frames"
    );
    app.assert_all_signed();
}

/// `<Reject>` refuses the call before any answer: 486 for busy, 603 for
/// rejected, and after a first `<Pause>` (which delays, not answers).
#[test]
fn reject_refuses_the_call_unanswered() {
    let app = App::start();
    let gw = gateway(&format!(
        "{}{}{}",
        app_route("busy", &app.url("/reject?reason=busy"), ""),
        app_route("rejected", &app.url("/reject"), ""),
        app_route("paused", &app.url("/reject?pause=1"), "")
    ));
    let text = std::fs::read_to_string(scenario("uac_rejected.xml")).unwrap();
    for (did, status) in [("busy", "486"), ("rejected", "603"), ("paused", "603")] {
        let file = gw.dir.path().join(format!("rejected{did}.xml"));
        std::fs::write(&file, text.replace("STATUS", status)).unwrap();
        let started = Instant::now();
        let run = sipp(
            &[
                "-sf",
                &path_str(&file),
                &gw.sip_addr(),
                "-s",
                did,
                "-m",
                "1",
            ],
            Duration::from_secs(30),
        );
        assert!(run.ok(), "{did}: {}", run.describe());
        if did == "paused" {
            assert!(
                started.elapsed() >= Duration::from_secs(1),
                "the <Pause> ran first"
            );
        }
    }
    let records = call_records(&gw, 3);
    let mut statuses: Vec<_> = records.iter().map(|r| r["sip_status"].clone()).collect();
    statuses.sort_by_key(|s| s.as_u64());
    assert_eq!(statuses, [486, 603, 603]);
    assert!(
        records.iter().all(|r| r["answered_at"].is_null()),
        "{records:?}"
    );
    app.assert_all_signed();
}

/// A SIPp UAS running `scenario_text` on a free port, in the background.
fn uas(scenario_text: String, dir: &std::path::Path) -> (u16, std::thread::JoinHandle<Sipp>) {
    uas_calls(scenario_text, dir, 1)
}

/// [`uas`] for `calls` calls.
fn uas_calls(
    scenario_text: String,
    dir: &std::path::Path,
    calls: u32,
) -> (u16, std::thread::JoinHandle<Sipp>) {
    let port = free_port();
    let file = dir.join(format!("uas{port}.xml"));
    std::fs::write(&file, scenario_text).unwrap();
    let handle = std::thread::spawn(move || {
        sipp_on(
            &["-sf", &path_str(&file), "-m", &calls.to_string()],
            Duration::from_secs(60),
            port,
            free_port(),
        )
    });
    std::thread::sleep(Duration::from_millis(400));
    (port, handle)
}

/// `<Dial>` bridges to a SIPp agent (who sees our callerId): the action
/// gets DialCallStatus=completed with the talk's duration; a busy number
/// through the outbound trunk gives busy; an agent who never answers
/// within `timeout` gives no-answer.
#[test]
fn dial_bridges_and_reports_completed_busy_and_no_answer() {
    let app = App::start();
    let dir = tempfile::tempdir().unwrap();
    let agent_text = std::fs::read_to_string(scenario("uas_agent.xml")).unwrap().replace(
        r#"<ereg regexp=".*" search_in="hdr" header="From:" assign_to="from_hdr"/>"#,
        r#"<ereg regexp=".*\+15550001111@.*" search_in="hdr" header="From:" check_it="true" assign_to="from_hdr"/>"#,
    );
    assert!(agent_text.contains("check_it"));
    let busy_text = std::fs::read_to_string(scenario("uas_busy.xml")).unwrap().replace(
        r#"<recv request="INVITE"/>"#,
        r#"<recv request="INVITE"><action><ereg regexp="^INVITE sip:\+15557654321@" search_in="msg" check_it="true" assign_to="ruri"/><log message="[$ruri]"/></action></recv>"#,
    );
    assert!(busy_text.contains("check_it"));
    let (agent_port, agent) = uas(agent_text, dir.path());
    let (busy_port, busy) = uas(busy_text, dir.path());
    let (ring_port, ring) = uas(
        std::fs::read_to_string(scenario("uas_ring_cancel.xml")).unwrap(),
        dir.path(),
    );
    // Answers and stays until our BYE: `timeLimit` must send it.
    let (limited_port, limited) = uas(
        std::fs::read_to_string(scenario("uas_answer.xml")).unwrap(),
        dir.path(),
    );
    let gw = gateway(&format!(
        "[[trunks]]\nname = \"carrier\"\noutbound_proxy = \"sip:127.0.0.1:{busy_port}\"\n\n{}{}{}{}",
        app_route(
            "agent",
            &app.url(&format!("/dial?uri=sip:agent@127.0.0.1:{agent_port}")),
            ""
        ),
        app_route("number", &app.url("/dial?number=%2B1%20555%20765-4321"), ""),
        app_route(
            "nobody",
            &app.url(&format!(
                "/dial?uri=sip:agent@127.0.0.1:{ring_port}&timeout=5"
            )),
            ""
        ),
        app_route(
            "limited",
            &app.url(&format!(
                "/dial?uri=sip:agent@127.0.0.1:{limited_port}&limit=2"
            )),
            ""
        ),
    ));
    for did in ["agent", "number", "nobody", "limited"] {
        let run = caller_waiting(&gw, did);
        assert!(run.ok(), "{did}: {}", run.describe());
    }
    for (name, h) in [
        ("agent", agent),
        ("busy", busy),
        ("ringing", ring),
        ("limited", limited),
    ] {
        let run = h.join().unwrap();
        assert!(run.ok(), "{name} UAS: {}", run.describe());
    }
    let dialed = app.requests_to("/dialed");
    assert_eq!(dialed.len(), 4, "{dialed:?}");
    let p = &dialed[0]["params"];
    assert_eq!(p["DialCallStatus"], "completed");
    assert!(is_sid(&p["DialCallSid"]));
    assert_ne!(p["DialCallSid"], p["CallSid"]);
    let talk: u64 = p["DialCallDuration"].as_str().unwrap().parse().unwrap();
    assert!((2..=4).contains(&talk), "the agent talks 3 s: {talk}");
    assert_eq!(dialed[1]["params"]["DialCallStatus"], "busy");
    assert_eq!(dialed[2]["params"]["DialCallStatus"], "no-answer");
    assert!(dialed[2]["params"].get("DialCallDuration").is_none());
    // timeLimit="2": we hung the agent up after two seconds of talk.
    let limited = &dialed[3]["params"];
    assert_eq!(limited["DialCallStatus"], "completed");
    assert_eq!(limited["DialCallDuration"], "2");
    app.assert_all_signed();
}

/// Every kind of bad app ends the same way: a clear, counted app error,
/// the spoken error prompt (heard, for the first), then our BYE, and the
/// call record says why.
#[test]
fn bad_apps_get_the_spoken_error_and_a_hang_up() {
    let app = App::start();
    let cases = [
        ("malformed", "/bad/malformed", "bad_twiml", "malformed XML"),
        ("bomb", "/bad/bomb", "bad_twiml", "DOCTYPE is not allowed"),
        (
            "unknown",
            "/bad/unknown",
            "bad_twiml",
            "line 3: unknown verb <Shout>",
        ),
        ("huge", "/bad/huge", "too_large", "over 1000000 bytes"),
        ("loop", "/bad/loop", "too_many_redirects", ""),
        (
            "twimlloop",
            "/bad/twiml-loop",
            "redirect_loop",
            "10 documents in a row played nothing",
        ),
        ("notaudio", "/bad/notaudio", "play_not_audio", "not audio"),
        (
            "endless",
            "/bad/endless",
            "play_too_large",
            "over 10000000 bytes",
        ),
        ("fivehundred", "/bad/500", "http_status", "answered 500"),
    ];
    let routes: String = cases
        .iter()
        .map(|(did, path, ..)| app_route(did, &app.url(path), ""))
        .collect();
    let gw = gateway(&routes);
    let capture = capture_call(
        &gw,
        &[
            "-sf",
            &scenario("uac_wait_bye.xml"),
            &gw.sip_addr(),
            "-s",
            "malformed",
            "-m",
            "1",
        ],
        FIELDS,
    );
    assert!(capture.run.ok(), "{}", capture.run.describe());
    let spoken = frames(&capture.rows).iter().filter(|f| f.2 > 300.0).count();
    assert!(spoken >= 75, "the error prompt: {spoken} frames of speech");
    for (did, ..) in &cases[1..] {
        let started = Instant::now();
        let run = caller_waiting(&gw, did);
        assert!(run.ok(), "{did}: {}", run.describe());
        // The prompt is played in full before the BYE.
        assert!(
            started.elapsed() > Duration::from_millis(1500),
            "{did}: BYE too soon"
        );
    }
    let records = call_records(&gw, cases.len());
    let (_, metrics) = gw.http_get("/metrics");
    for (did, _, kind, why) in cases {
        let record = records
            .iter()
            .find(|r| r["did"] == did)
            .unwrap_or_else(|| panic!("no record for {did}: {records:?}"));
        let error = record["vars"]["app_error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with(kind) && error.contains(why),
            "{did}: {error:?}"
        );
        assert_eq!(record["outcome"], "local_hangup", "{did}");
        assert!(
            metric_value(
                &metrics,
                &format!("crossline_twiml_app_errors_total{{kind=\"{kind}\"}}")
            ) >= 1.0,
            "{kind} not counted:\n{metrics}"
        );
    }
    assert!(gw.log().contains("webhook app error"));
    // The <Redirect> loop: bounded at 10 documents, then the error prompt.
    assert_eq!(app.requests_to("/bad/twiml-loop").len(), 10);
    app.assert_all_signed();
}

/// The app failing mid-call (its Gather action's server is gone), or
/// answering 500, or too slowly: the fallback URL is asked, with Twilio's
/// ErrorCode and ErrorUrl, and its TwiML runs the call.
#[test]
fn a_failing_app_goes_to_its_fallback() {
    let app = App::start();
    let dead = free_port();
    let fallback = format!(", fallback_url = \"{}\"", app.url("/fallback"));
    let gw = gateway(&format!(
        "{}{}{}",
        app_route(
            "dead",
            &app.url(&format!("/gather-dead?dead={dead}")),
            &fallback
        ),
        app_route("fivehundred", &app.url("/bad/500"), &fallback),
        app_route("slow", &app.url("/slow?secs=6"), &fallback),
    ));
    let caller = pressing(&gw, "1");
    let capture = capture_call(
        &gw,
        &[
            "-sf",
            &caller,
            &gw.sip_addr(),
            "-s",
            "dead",
            "-m",
            "1",
            "-d",
            "1500",
        ],
        FIELDS,
    );
    assert!(capture.run.ok(), "{}", capture.run.describe());
    let (tone, _) = tone_and_speech_before(&capture.rows);
    assert!(
        (45..=55).contains(&tone),
        "the fallback's <Play>: {tone} frames"
    );
    for did in ["fivehundred", "slow"] {
        let started = Instant::now();
        let run = caller_waiting(&gw, did);
        assert!(run.ok(), "{did}: {}", run.describe());
        if did == "slow" {
            // timeout_ms = 2000, then the fallback's 1 s tone.
            assert!(
                started.elapsed() >= Duration::from_secs(3),
                "{:?}",
                started.elapsed()
            );
        }
    }
    let fallbacks = app.requests_to("/fallback");
    assert_eq!(fallbacks.len(), 3, "{fallbacks:?}");
    assert_eq!(fallbacks[0]["params"]["ErrorCode"], "11200");
    assert!(fallbacks[0]["params"]["ErrorUrl"]
        .as_str()
        .unwrap()
        .contains(&format!("127.0.0.1:{dead}/gone")));
    assert_eq!(fallbacks[0]["params"]["CallStatus"], "in-progress");
    assert_eq!(fallbacks[1]["params"]["ErrorCode"], "11200");
    assert_eq!(
        fallbacks[1]["params"]["CallStatus"], "ringing",
        "500 before any answer"
    );
    assert_eq!(fallbacks[2]["params"]["ErrorCode"], "11205", "a timeout");
    app.assert_all_signed();
}

/// A flow hands its call to an app mid-way with a `webhook_app` node: the
/// app is asked with the call already in progress.
#[test]
fn a_flow_hands_the_call_to_an_app() {
    let app = App::start();
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(
        flows.path().join("handover.toml"),
        format!(
            "name = \"handover\"\n\n[[nodes]]\nid = \"hello\"\ntype = \"say\"\ntext = \"Hello.\"\nnext = \"app\"\n\n\
             [[nodes]]\nid = \"app\"\ntype = \"webhook_app\"\napp = {{ url = \"{}\" }}\n",
            app.url("/say-play")
        ),
    )
    .unwrap();
    let gw = gateway(&format!(
        "[flows]\ndir = \"{}\"\n\n[[routes]]\nflow = \"handover\"\n",
        flows.path().display()
    ));
    let run = caller_waiting(&gw, "100");
    assert!(run.ok(), "{}", run.describe());
    let asked = app.requests_to("/say-play");
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0]["params"]["CallStatus"], "in-progress");
    assert_eq!(asked[0]["params"]["To"], "100");
    assert!(gw.log().contains("node=app"));
    app.assert_all_signed();
}

/// Status callbacks: each call's initiated, ringing, answered and
/// completed arrive in order, signed (RequestValidator), with Twilio's
/// parameters and the call's CallSid; the answered event, refused once
/// with 500, is retried, and nothing is sent twice; a call the app rejects
/// ends busy with its SIP status.
#[test]
fn status_callbacks_arrive_in_order_signed_and_once() {
    let app = App::start();
    let status = format!(", status_callback = \"{}\"", app.url("/status"));
    let gw = gateway(&format!(
        "{}{}",
        app_route("answered", &app.url("/say-play"), &status),
        app_route("busy", &app.url("/reject?reason=busy"), &status),
    ));
    let run = caller_waiting(&gw, "answered");
    assert!(run.ok(), "{}", run.describe());
    let text = std::fs::read_to_string(scenario("uac_rejected.xml")).unwrap();
    let file = gw.dir.path().join("busy.xml");
    std::fs::write(&file, text.replace("STATUS", "486")).unwrap();
    let run = sipp(
        &[
            "-sf",
            &path_str(&file),
            &gw.sip_addr(),
            "-s",
            "busy",
            "-m",
            "1",
        ],
        Duration::from_secs(30),
    );
    assert!(run.ok(), "{}", run.describe());

    let deadline = Instant::now() + Duration::from_secs(15);
    let finals = |all: &[Value]| {
        all.iter()
            .filter(|r| {
                ["completed", "busy"].contains(&r["params"]["CallStatus"].as_str().unwrap_or(""))
            })
            .count()
    };
    let mut events = app.requests_to("/status");
    while finals(&events) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        events = app.requests_to("/status");
    }
    let answered_sid = app.requests_to("/say-play")[0]["params"]["CallSid"].clone();
    let busy_sid = app.requests_to("/reject")[0]["params"]["CallSid"].clone();
    let of = |sid: &Value| -> Vec<(String, String)> {
        events
            .iter()
            .filter(|e| e["params"]["CallSid"] == *sid)
            .map(|e| {
                let p = &e["params"];
                (
                    p["CallStatus"].as_str().unwrap().to_string(),
                    p["SequenceNumber"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        of(&answered_sid),
        pairs(&[
            ("initiated", "0"),
            ("ringing", "1"),
            ("in-progress", "2"),
            ("in-progress", "2"),
            ("completed", "3"),
        ]),
        "the answered event once more after its 500, nothing else twice"
    );
    assert_eq!(
        of(&busy_sid),
        pairs(&[("initiated", "0"), ("ringing", "1"), ("busy", "2")])
    );
    let last = |sid: &Value| {
        events
            .iter()
            .rfind(|e| e["params"]["CallSid"] == *sid)
            .unwrap()["params"]
            .clone()
    };
    let done = last(&answered_sid);
    assert_eq!(done["SipResponseCode"], "200");
    assert_eq!(done["AccountSid"], ACCOUNT_SID);
    assert_eq!(done["From"], "+15551234567");
    assert_eq!(done["To"], "answered");
    assert_eq!(done["Direction"], "inbound");
    assert_eq!(done["CallbackSource"], "call-progress-events");
    let secs: u64 = done["CallDuration"].as_str().unwrap().parse().unwrap();
    assert!((1..=6).contains(&secs), "the call lasted {secs} s");
    let busy = last(&busy_sid);
    assert_eq!(busy["SipResponseCode"], "486");
    assert_eq!(busy["CallDuration"], "0");
    app.assert_all_signed();
    assert!(
        wait_metric(
            &gw,
            "crossline_twiml_status_callbacks_total{outcome=\"retried\"}",
            1.0,
            Duration::from_secs(5)
        ) >= 1.0
    );
}

/// The example app (examples/twiml-app/app.py, standard library only) runs
/// against crossline as documented: its own signature check accepts our
/// requests, key 3 takes the caller to its goodbye and our BYE, and its
/// status callback hears the call complete.
#[test]
fn the_example_app_runs_a_call() {
    require("espeak-ng", "espeak-ng");
    require("python3", "python3");
    let port = free_port();
    let mut child = Command::new("python3")
        .arg(repo().join("examples/twiml-app/app.py"))
        .arg(port.to_string())
        .env("AUTH_TOKEN", AUTH_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the example app");
    let out = child.stdout.take().unwrap();
    // Stopped (by its handle) however the test ends.
    let _app = Stopped(child);
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            seen.lock().unwrap().push(line);
        }
    });
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !lines.lock().unwrap().iter().any(|l| l.contains(needle)) {
            assert!(
                Instant::now() < deadline,
                "the example app never printed {needle:?}: {:?}",
                lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("listening");
    let base = format!("http://127.0.0.1:{port}");
    let gw = gateway(&app_route(
        "4000",
        &format!("{base}/voice"),
        &format!(", status_callback = \"{base}/status\""),
    ));
    let caller = pressing(&gw, "3");
    let run = sipp(
        &[
            "-sf",
            &caller,
            &gw.sip_addr(),
            "-s",
            "4000",
            "-m",
            "1",
            "-d",
            "5000",
        ],
        Duration::from_secs(60),
    );
    assert!(run.ok(), "{}", run.describe());
    wait_for("completed");
    assert!(
        !gw.log().contains("webhook app error"),
        "the example app refused a request:\n{}",
        gw.log()
    );
}

/// The app's requests to `path`, once there are `n` (waiting up to 20 s).
fn wait_for_requests(app: &App, path: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = app.requests_to(path);
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `<Enqueue>` into a queue no config names (made on the fly): the wait
/// document is asked with QueuePosition=1; a second call's
/// `<Dial><Queue>` plays the `url` document to the waiting caller, then
/// bridges the two (the caller hears the agent's 1 kHz tone), until the
/// Dial's timeLimit. Then the Enqueue action gets QueueResult=bridged and
/// the Dial action DialCallStatus=completed with the caller's CallSid.
/// Another caller's wait document says `<Leave/>`: QueueResult=leave; one
/// who hangs up while waiting: QueueResult=hangup; a wait document with
/// a verb it may not hold: QueueResult=error. A
/// `<Dial><Queue>` on the empty queue ends no-answer after its timeout, and
/// on a queue that never existed, failed.
#[test]
fn enqueue_and_dial_queue_bridge_two_calls() {
    let app = App::start();
    let dir = tempfile::tempdir().unwrap();
    let tone = ulaw_tone(dir.path(), 1000, 10);
    let agent_scenario = dir.path().join("agent.xml");
    let text = std::fs::read_to_string(scenario("uac_record.xml"))
        .unwrap()
        .replace("TONE_FILE", &path_str(&tone))
        .replace("DTMF_AFTER_MS", "500");
    std::fs::write(&agent_scenario, text).unwrap();
    // Two audio loops: the caller's stream and the agent's start on
    // different ones, so the bridge must move one.
    let gw = gateway(&format!(
        "[media]\naudio_threads = 2\n\n{}{}{}{}{}{}",
        app_route("enq", &app.url("/enqueue"), ""),
        app_route("agent", &app.url("/dequeue?limit=3"), ""),
        app_route("leave", &app.url("/enqueue?leave=1"), ""),
        app_route("empty", &app.url("/dequeue?timeout=5"), ""),
        app_route("nowhere", &app.url("/dequeue?q=nowhere"), ""),
        app_route("badwait", &app.url("/enqueue?bad=1"), ""),
    ));
    let caller = {
        let args: Vec<String> = ["-sf", &scenario("uac_wait_bye.xml"), &gw.sip_addr()]
            .iter()
            .map(|s| s.to_string())
            .chain(["-s", "enq", "-m", "1"].map(String::from))
            .collect();
        let gw_ref = &gw;
        std::thread::scope(|s| {
            let caller = s.spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                capture_call(gw_ref, &args, FIELDS)
            });
            let waits = wait_for_requests(&app, "/wait", 1);
            assert!(!waits.is_empty(), "the wait document was never asked");
            let run = sipp(
                &[
                    "-sf",
                    &path_str(&agent_scenario),
                    &gw.sip_addr(),
                    "-s",
                    "agent",
                    "-m",
                    "1",
                ],
                Duration::from_secs(60),
            );
            assert!(run.ok(), "agent: {}", run.describe());
            caller.join().unwrap()
        })
    };
    assert!(caller.run.ok(), "caller: {}", caller.run.describe());
    assert!(
        gw.log().contains("the stream moves to its partner's loop"),
        "the two calls started on different audio loops"
    );

    let wait = &app.requests_to("/wait")[0]["params"];
    assert_eq!(wait["QueuePosition"], "1", "{wait}");
    assert_eq!(wait["CurrentQueueSize"], "1");
    let queue_sid = wait["QueueSid"].as_str().unwrap().to_string();
    assert!(
        queue_sid.starts_with("QU") && queue_sid.len() == 34,
        "{queue_sid}"
    );
    assert!(wait["QueueTime"].is_string() && wait["AvgQueueTime"].is_string());
    let caller_sid = wait["CallSid"].clone();
    assert!(is_sid(&caller_sid));
    let agent_sid = app.requests_to("/dequeue")[0]["params"]["CallSid"].clone();

    let about = &app.requests_to("/about-to-connect")[0]["params"];
    assert_eq!(about["CallSid"], caller_sid, "played on the caller's side");
    assert_eq!(about["DequeingCallSid"], agent_sid);
    assert_eq!(about["QueueSid"], queue_sid.as_str());

    let left = &app.requests_to("/enqueue-left")[0]["params"];
    assert_eq!(left["QueueResult"], "bridged", "{left}");
    assert_eq!(left["QueueSid"], queue_sid.as_str());
    assert_eq!(left["CallSid"], caller_sid);
    let dequeued = &app.requests_to("/dequeued")[0]["params"];
    assert_eq!(dequeued["DialCallStatus"], "completed", "{dequeued}");
    assert_eq!(dequeued["DialCallSid"], caller_sid);
    assert_eq!(dequeued["DialCallDuration"], "3", "timeLimit=3");
    // Through the bridge the caller heard the agent's tone, about 3 s of
    // it (nothing else it heard was 1 kHz).
    let tone_frames = frames(&caller.rows).iter().filter(|f| f.1 > 4000.0).count();
    assert!(
        (100..=200).contains(&tone_frames),
        "the agent's tone through the bridge: {tone_frames} frames"
    );

    // <Leave/> in the wait document: out of the queue, to the action.
    let run = caller_waiting(&gw, "leave");
    assert!(run.ok(), "leave: {}", run.describe());
    let left = wait_for_requests(&app, "/enqueue-left", 2);
    assert_eq!(left[1]["params"]["QueueResult"], "leave", "{left:?}");

    // A caller hanging up while waiting: the action still hears it.
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_hang_up.xml"),
            &gw.sip_addr(),
            "-s",
            "enq",
            "-m",
            "1",
            "-d",
            "3000",
        ],
        Duration::from_secs(30),
    );
    assert!(run.ok(), "hang-up: {}", run.describe());
    let left = wait_for_requests(&app, "/enqueue-left", 3);
    let p = &left[2]["params"];
    assert_eq!(p["QueueResult"], "hangup", "{p}");
    assert_eq!(p["CallStatus"], "completed");
    let waited: u64 = p["QueueTime"].as_str().unwrap().parse().unwrap();
    assert!((2..=4).contains(&waited), "waited {waited} s");

    // A wait document holding a <Dial>: an app error, QueueResult=error.
    let run = caller_waiting(&gw, "badwait");
    assert!(run.ok(), "bad wait document: {}", run.describe());
    let left = wait_for_requests(&app, "/enqueue-left", 4);
    assert_eq!(left[3]["params"]["QueueResult"], "error", "{left:?}");

    // Nobody waits now: no-answer after the Dial's timeout; a queue that
    // was never made: failed, at once.
    let started = Instant::now();
    let run = caller_waiting(&gw, "empty");
    assert!(run.ok(), "empty: {}", run.describe());
    within(
        "an empty queue's Dial",
        started.elapsed().as_secs_f64(),
        4.5..9.0,
    );
    let run = caller_waiting(&gw, "nowhere");
    assert!(run.ok(), "nowhere: {}", run.describe());
    let dequeued = wait_for_requests(&app, "/dequeued", 3);
    assert_eq!(dequeued[1]["params"]["DialCallStatus"], "no-answer");
    assert_eq!(dequeued[2]["params"]["DialCallStatus"], "failed");
    assert!(dequeued[2]["params"].get("DialCallSid").is_none());
    // The made queue is in the metrics: one answered, three abandoned
    // (leave, hang-up, bad wait document), nobody waiting.
    let metrics = gw.http_get("/metrics").1;
    let series = |name: &str| metric_value(&metrics, &format!("{name}{{queue=\"support\"}}"));
    assert_eq!(series("crossline_queue_answered_total"), 1.0, "{metrics}");
    assert_eq!(series("crossline_queue_abandoned_total"), 3.0);
    assert_eq!(series("crossline_queue_waiting"), 0.0);
    app.assert_all_signed();
}

/// `<Enqueue>` without a waitUrl into a configured queue: its SIPp agent
/// rings for the callers in turn; the second hears its place announced
/// while the first talks, and both actions get QueueResult=bridged.
#[test]
fn enqueue_into_a_configured_queue_rings_its_agents() {
    let app = App::start();
    let dir = tempfile::tempdir().unwrap();
    // Answers two calls (rings 2 s, talks 3 s, hangs up).
    let (agent_port, agent) = uas_calls(
        std::fs::read_to_string(scenario("uas_agent.xml")).unwrap(),
        dir.path(),
        2,
    );
    let sipp_agent = agent_port.to_string();
    let gw = gateway(&format!(
        "[[queues]]\nname = \"sales\"\nagents = [{{ target = \"sip:agent@127.0.0.1:{agent_port}\" }}]\n\
         announce_interval_secs = 2\nwrap_up_secs = 1\n\n{}",
        app_route("sales", &app.url("/enqueue?q=sales&nowait=1"), ""),
    ));
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let gw_addr = gw.sip_addr();
            let caller = std::thread::spawn(move || {
                sipp(
                    &[
                        "-sf",
                        &scenario("uac_wait_bye.xml"),
                        &gw_addr,
                        "-s",
                        "sales",
                        "-m",
                        "1",
                    ],
                    Duration::from_secs(60),
                )
            });
            std::thread::sleep(Duration::from_millis(500));
            caller
        })
        .collect();
    for (i, c) in callers.into_iter().enumerate() {
        let run = c.join().unwrap();
        assert!(run.ok(), "caller {i}: {}", run.describe());
    }
    let run = agent.join().unwrap();
    assert!(run.ok(), "agent {sipp_agent}: {}", run.describe());
    let log = gw.log();
    assert!(
        log.contains("<Enqueue>: announcing the place")
            && log.contains("You are number 1 in the queue."),
        "the second caller hears its place:\n{log}"
    );
    let left = wait_for_requests(&app, "/enqueue-left", 2);
    for l in &left {
        assert_eq!(l["params"]["QueueResult"], "bridged", "{l}");
    }
    assert_eq!(app.requests_to("/wait").len(), 0, "no waitUrl");
    app.assert_all_signed();
}
