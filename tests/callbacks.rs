//! Callbacks and messaging-to-call escalation against the real binary:
//! POST /v1/callbacks dials a SIPp "visitor" through the outbound trunk and
//! the flow's audio reaches it; a chat's escalate_to_call node (in headless
//! Chromium) hears a carrier's 484 and asks for the number again; consent,
//! number and rate checks refuse before any INVITE; every status change is
//! POSTed, signed, to the webhook; the escalation report filters and
//! exports CSV.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::audio::*;
use common::browser::{artifacts_dir, Browser};
use common::standin::*;
use common::*;
use serde_json::{json, Value};

const OPERATOR_TOKEN: &str = "operator-token-for-callback-tests";
const ADMIN_TOKEN: &str = "admin-token-for-callback-tests-0";
const WEBHOOK_SECRET: &str = "callback-webhook-secret";
const CALLER_ID: &str = "+15550100000";
const LEGAL: &str =
    "By giving your number you agree that Example Co. calls you about this conversation.";
const WAIT: Duration = Duration::from_secs(20);

struct Setup {
    gw: Gateway,
    log: Log,
    _dir: tempfile::TempDir,
}

/// A gateway whose trunk sends calls to `trunk_port`; the voice flow
/// "callback-tone" plays a 1 kHz tone for 2 s, then hangs up.
fn setup(trunk_port: u16, limits: &str) -> Setup {
    let (hook_port, log, _) = stand_in();
    let dir = tempfile::tempdir().unwrap();
    let tone = dir.path().join("tone.wav");
    write_tone(&tone, 1000.0, 2.0, 8000.0, 8000);
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    std::fs::write(
        flows.join("callback-tone.toml"),
        format!(
            "name = \"callback-tone\"\n\n[[nodes]]\nid = \"tone\"\ntype = \"play\"\nfile = \"{}\"\nnext = \"bye\"\n\n[[nodes]]\nid = \"bye\"\ntype = \"hangup\"\n",
            tone.display()
        ),
    )
    .unwrap();
    std::fs::write(
        flows.join("escalate-test.toml"),
        format!(
            r#"name = "escalate-test"
channel = "chat"

[[nodes]]
id = "hello"
type = "message"
text = "Hi! This is Example Co."
next = "escalate"

[[nodes]]
id = "escalate"
type = "escalate_to_call"
text = "How would you like to continue?"
legal_notice = "{LEGAL}"
flow = "callback-tone"
next = "done"
on_chat = "chat"
on_failure = "sorry"

[[nodes]]
id = "done"
type = "message"
text = "Call outcome: {{{{escalate.outcome}}}}"

[[nodes]]
id = "chat"
type = "handoff"
text = "OK, let's keep chatting."

[[nodes]]
id = "sorry"
type = "message"
text = "Sorry, that didn't work ({{{{escalate.outcome}}}})."
"#
        ),
    )
    .unwrap();
    let gw = Gateway::start(&format!(
        "[flows]\ndir = \"{flows}\"\n\n\
         [http]\noperator_token = \"{OPERATOR_TOKEN}\"\nadmin_token = \"{ADMIN_TOKEN}\"\n\n\
         [chat]\nweb_flow = \"escalate-test\"\n\n\
         [callbacks]\nring_timeout_secs = 5\nwebhook_url = \"http://127.0.0.1:{hook_port}/hook/callbacks\"\nwebhook_secret = \"{WEBHOOK_SECRET}\"\n{limits}\n\n\
         [[trunks]]\nname = \"carrier\"\noutbound_proxy = \"sip:127.0.0.1:{trunk_port}\"\ncaller_id = \"{CALLER_ID}\"\n",
        flows = flows.display(),
    ));
    Setup { gw, log, _dir: dir }
}

/// A SIPp UAS on `port` running `scenario` for one call, in the background.
fn answer_once(
    scenario_file: &'static str,
    port: u16,
    media: u16,
) -> std::thread::JoinHandle<Sipp> {
    std::thread::spawn(move || {
        sipp_on(
            &["-sf", &scenario(scenario_file), "-m", "1"],
            Duration::from_secs(60),
            port,
            media,
        )
    })
}

fn post(gw: &Gateway, token: &str, body: &Value) -> HttpReply {
    let auth = format!("Bearer {token}");
    gw.http(
        "POST",
        "/v1/callbacks",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(&body.to_string()),
    )
}

fn get(gw: &Gateway, path: &str) -> HttpReply {
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    gw.http("GET", path, &[("Authorization", &auth)], None)
}

fn wait_state(gw: &Gateway, id: &str, states: &[&str]) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = get(gw, &format!("/v1/callbacks/{id}"));
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        if states.iter().any(|s| v["state"] == *s) {
            return v;
        }
        assert!(Instant::now() < deadline, "callback stuck: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The API places the call through the trunk; the visitor's phone (a SIPp
/// UAS) rings, answers, and hears the flow's tone; each state reaches the
/// webhook, signed.
#[test]
fn a_callback_rings_the_visitor_and_plays_the_flow() {
    let trunk_port = free_port();
    let media_port = free_port();
    let cap = start_capture(&format!(
        "udp port {trunk_port} or udp dst port {media_port}"
    ));
    let visitor = answer_once("uas_answer.xml", trunk_port, media_port);
    std::thread::sleep(Duration::from_millis(400));
    let s = setup(trunk_port, "");
    let r = post(
        &s.gw,
        OPERATOR_TOKEN,
        &json!({
            "phone": "+34 612 345 678",
            "flow": "callback-tone",
            "consent": { "given": true, "text": LEGAL },
            "context": { "order": "A-1042" }
        }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["state"], "queued");
    assert_eq!(created["phone"], "+34612345678");

    let done = wait_state(&s.gw, &id, &["completed", "failed"]);
    let visitor = visitor.join().unwrap();
    assert!(visitor.ok(), "visitor: {}", visitor.describe());
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["outcome"], "completed");
    assert!(done["ringing_at"].as_u64().is_some(), "180 seen: {done}");
    assert!(done["talk_secs"].as_f64().unwrap() >= 1.5, "{done}");
    assert!(
        done["wait_secs"].as_f64().unwrap() >= 0.9,
        "rang 1 s: {done}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let (file, _keep) = cap.stop();

    // The INVITE went to the number at the trunk, from the configured ID.
    let sip = vec![format!("udp.port=={trunk_port},sip")];
    let invite = tshark_fields(
        &file,
        &sip,
        "sip.Method == \"INVITE\"",
        &["sip.r-uri.user", "sip.from.user"],
    );
    assert_eq!(
        invite.first().map(|r| r[0].as_str()),
        Some("+34612345678"),
        "{invite:?}"
    );
    assert_eq!(invite.first().map(|r| r[1].as_str()), Some(CALLER_ID));

    // The tone reached the visitor's phone.
    let rtp = vec![format!("udp.port=={media_port},rtp")];
    let rows = tshark_fields(&file, &rtp, "rtp", &["rtp.payload"]);
    let levels: Vec<f64> = rows
        .iter()
        .map(|r| {
            let s = pcmu_hex_to_linear(&r[0]);
            tone_level(&s, 1000.0)
        })
        .collect();
    let loud = levels.iter().filter(|l| **l > 4000.0).count();
    assert!(loud >= 50, "1 kHz in {loud} of {} frames", levels.len());

    // The webhook heard every state, each signed.
    let deadline = Instant::now() + WAIT;
    loop {
        let seen: Vec<Seen> = s
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|x| x.path == "hook/callbacks")
            .cloned()
            .collect();
        let states: Vec<String> = seen
            .iter()
            .map(|x| {
                serde_json::from_str::<Value>(&x.body).unwrap()["state"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        if states.last().map(String::as_str) == Some("completed") {
            assert_eq!(states, ["queued", "ringing", "answered", "completed"]);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            for x in &seen {
                // Signed over "<timestamp>.<body>"; the time is current.
                let ts = x.headers.get("x-crossline-timestamp").expect("a timestamp");
                assert!(ts.parse::<u64>().unwrap().abs_diff(now) < 60, "{ts}");
                let want = format!(
                    "sha256={}",
                    hmac_sha256_hex(
                        WEBHOOK_SECRET.as_bytes(),
                        format!("{ts}.{}", x.body).as_bytes()
                    )
                );
                assert_eq!(x.headers.get("x-crossline-signature"), Some(&want));
            }
            let last: Value = serde_json::from_str(&seen[3].body).unwrap();
            assert_eq!(last["context"]["order"], "A-1042");
            break;
        }
        assert!(Instant::now() < deadline, "webhook states: {states:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The consent is kept with its text.
    let consents = get(&s.gw, "/v1/consents?subject=%2B34612345678").json();
    assert_eq!(consents["consents"][0]["text"], LEGAL, "{consents}");
    // The number the visitor gave never reached the log in any form.
    assert_no_pii(&s.gw.log(), &["+34612345678", "+34 612 345 678"]);
}

/// Consent, number and rate checks refuse before anything is dialled.
#[test]
fn refusals_place_no_call() {
    let trunk = UdpSocket::bind("127.0.0.1:0").unwrap();
    trunk
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let trunk_port = trunk.local_addr().unwrap().port();
    let s = setup(
        trunk_port,
        "max_per_phone_per_hour = 2\nmax_per_key_per_minute = 4",
    );
    let body =
        |phone: &str, consent: Value| json!({ "phone": phone, "flow": "hold", "consent": consent });
    let given = json!({ "given": true, "text": LEGAL });
    let missing = post(
        &s.gw,
        OPERATOR_TOKEN,
        &json!({ "phone": "+34612345678", "flow": "hold" }),
    );
    assert_eq!(missing.status, 422, "{}", missing.body);
    assert_eq!(missing.json()["code"], "consent_required");
    let refused = post(
        &s.gw,
        OPERATOR_TOKEN,
        &body("+34612345678", json!({ "given": false, "text": LEGAL })),
    );
    assert_eq!(refused.status, 422);
    let no_text = post(
        &s.gw,
        OPERATOR_TOKEN,
        &body("+34612345678", json!({ "given": true, "text": " " })),
    );
    assert_eq!(no_text.status, 422);
    let bad = post(&s.gw, OPERATOR_TOKEN, &body("12", given.clone()));
    assert_eq!(
        (bad.status, bad.json()["code"].clone()),
        (422, json!("invalid_number"))
    );
    let unknown = post(
        &s.gw,
        OPERATOR_TOKEN,
        &json!({ "phone": "+34612345678", "flow": "nope", "consent": given }),
    );
    assert_eq!(unknown.status, 422, "{}", unknown.body);
    let both = post(
        &s.gw,
        OPERATOR_TOKEN,
        &json!({ "phone": "+34612345678", "flow": "hold", "target": "sip:q@127.0.0.1", "consent": given }),
    );
    assert_eq!(both.status, 422);
    let unauth = s.gw.http(
        "POST",
        "/v1/callbacks",
        &[("Content-Type", "application/json")],
        Some(&body("+34612345678", given.clone()).to_string()),
    );
    assert_eq!(unauth.status, 401);
    // None of that reached the trunk.
    let mut buf = [0u8; 2048];
    assert!(
        trunk.recv_from(&mut buf).is_err(),
        "an INVITE was sent for a refused callback"
    );

    // Two per number per hour: the third is refused.
    for _ in 0..2 {
        assert_eq!(
            post(&s.gw, OPERATOR_TOKEN, &body("+34612345678", given.clone())).status,
            201
        );
    }
    let third = post(
        &s.gw,
        OPERATOR_TOKEN,
        &body("+34 612 345 678", given.clone()),
    );
    assert_eq!(third.status, 429, "{}", third.body);
    assert!(
        third.headers.contains("retry-after"),
        "{}",
        third.raw_headers
    );
    // Four per key per minute: two more numbers pass, the next is refused,
    // but the other key still has its own budget.
    assert_eq!(
        post(&s.gw, OPERATOR_TOKEN, &body("+34622000111", given.clone())).status,
        201
    );
    assert_eq!(
        post(&s.gw, OPERATOR_TOKEN, &body("+34622000222", given.clone())).status,
        201
    );
    let fifth = post(&s.gw, OPERATOR_TOKEN, &body("+34622000333", given.clone()));
    assert_eq!(
        (fifth.status, fifth.json()["code"].clone()),
        (429, json!("rate_limited"))
    );
    assert_eq!(
        post(&s.gw, ADMIN_TOKEN, &body("+34622000333", given.clone())).status,
        201
    );
    // The accepted ones did reach the trunk.
    let (n, _) = trunk
        .recv_from(&mut buf)
        .expect("an INVITE for an accepted callback");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("INVITE sip:+34"));
}

/// The chat's escalate_to_call node in a real browser: Phone, the legal
/// notice, a number the carrier answers 484 to, "correct your number"; a
/// second number that is busy, "try again"; the retry is answered. Then
/// the report, its filters and CSV, and the console's Escalations tab.
#[test]
fn escalation_from_the_chat_corrects_a_refused_number() {
    let trunk_port = free_port();
    let first = answer_once("uas_484.xml", trunk_port, free_port());
    std::thread::sleep(Duration::from_millis(400));
    let s = setup(trunk_port, "");
    let b = Browser::phone();
    let shots = artifacts_dir("callbacks");
    b.goto(&format!("http://127.0.0.1:{}/chat/", s.gw.http_port));
    b.wait_js(
        "!!document.querySelector('#choices button[data-value=\"phone\"]')",
        WAIT,
        "the Chat / Phone choice",
    );
    b.click("#choices button[data-value=\"phone\"]");
    b.wait_js(
        &format!(
            "document.body.innerText.includes({})",
            serde_json::to_string(LEGAL).unwrap()
        ),
        WAIT,
        "the legal notice",
    );
    b.wait_js(
        "document.body.innerText.includes('What number should we call you on?')",
        WAIT,
        "the phone prompt",
    );
    b.type_into("#composer-input", "+34 612 345 678");
    b.click("#composer-send");
    b.wait_js(
        "document.body.innerText.includes('check it and type it again')",
        WAIT,
        "the correct-your-number message",
    );
    let first = first.join().unwrap();
    assert!(first.ok(), "484 UAS: {}", first.describe());
    b.screenshot(&shots, "correct-your-number");

    // The visitor corrects it; the line is busy: the chat offers a retry.
    let busy = answer_once("uas_busy.xml", trunk_port, free_port());
    std::thread::sleep(Duration::from_millis(400));
    b.wait_js(
        "!document.querySelector('#composer-input').disabled",
        WAIT,
        "the phone prompt again",
    );
    b.type_into("#composer-input", "+34 622 000 111");
    b.click("#composer-send");
    b.wait_js(
        "document.body.innerText.includes(\"We couldn't reach you\")",
        WAIT,
        "the unreachable message",
    );
    let busy = busy.join().unwrap();
    assert!(busy.ok(), "busy UAS: {}", busy.describe());
    b.wait_js(
        "!!document.querySelector('#choices button[data-value=\"retry\"]')",
        WAIT,
        "the Try again button",
    );

    // Try again: the same number is dialled, and this time it answers.
    let second = answer_once("uas_answer.xml", trunk_port, free_port());
    std::thread::sleep(Duration::from_millis(400));
    b.click("#choices button[data-value=\"retry\"]");
    b.wait_js(
        "document.body.innerText.includes(\"You're connected\")",
        WAIT,
        "connected",
    );
    b.wait_js(
        "document.body.innerText.includes('Call outcome: answered')",
        WAIT,
        "the flow going on",
    );
    let second = second.join().unwrap();
    assert!(second.ok(), "answering UAS: {}", second.describe());
    b.screenshot(&shots, "connected");

    // The report: both attempts, by bot, with outcomes; filters; CSV.
    let deadline = Instant::now() + WAIT;
    let rows = loop {
        let report = get(&s.gw, "/v1/reports/escalations?bot=escalate-test").json();
        let rows = report["escalations"].as_array().unwrap().clone();
        if rows.len() == 3 && rows[0]["outcome"] == "completed" {
            break rows;
        }
        assert!(Instant::now() < deadline, "report: {report}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(rows[1]["outcome"], "busy");
    assert_eq!(rows[1]["sip_status"], 486);
    assert_eq!(rows[2]["outcome"], "invalid_number");
    assert_eq!(rows[2]["sip_status"], 484);
    assert_eq!(rows[0]["flow"], "callback-tone");
    assert!(rows[0]["conversation_id"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));
    assert_eq!(
        rows[0]["phone"], "+346******11",
        "numbers masked in reports"
    );
    let only = get(&s.gw, "/v1/reports/escalations?outcome=invalid_number").json();
    assert_eq!(only["escalations"].as_array().unwrap().len(), 1);
    let other_bot = get(&s.gw, "/v1/reports/escalations?bot=someone-else").json();
    assert_eq!(other_bot["escalations"].as_array().unwrap().len(), 0);
    let future = get(&s.gw, "/v1/reports/escalations?from=2099-01-01").json();
    assert_eq!(future["escalations"].as_array().unwrap().len(), 0);
    let today = get(
        &s.gw,
        "/v1/reports/escalations?from=2020-01-01&to=2099-12-31",
    )
    .json();
    assert_eq!(today["escalations"].as_array().unwrap().len(), 3);
    assert_eq!(
        get(&s.gw, "/v1/reports/escalations?from=yesterday").status,
        400
    );
    let csv = get(
        &s.gw,
        "/v1/reports/escalations?format=csv&bot=escalate-test",
    );
    assert_eq!(csv.status, 200);
    assert!(csv.headers.contains("text/csv"), "{}", csv.raw_headers);
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines.len(), 4, "{}", csv.body);
    assert!(lines[0].starts_with("id,created_at,bot,flow"));
    assert!(
        lines[1].contains(",\"completed\",")
            && lines[2].contains(",\"busy\",\"486\",")
            && lines[3].contains(",\"invalid_number\",\"484\","),
        "{}",
        csv.body
    );

    // The operator console shows the same report.
    drop(b);
    let op = Browser::desktop();
    op.sign_in_to_console(s.gw.http_port, OPERATOR_TOKEN);
    op.click("#tab-escalations");
    op.wait_js(
        "document.querySelectorAll('#escalations tr.escalation').length === 3",
        WAIT,
        "three escalations in the console",
    );
    let table = op.text("#escalations");
    assert!(
        table.contains("escalate-test") && table.contains("484"),
        "{table}"
    );
    op.screenshot(&shots, "console-escalations");
}

/// A callback with a SIP target instead of a flow: once the visitor
/// answers, the agent rings (the visitor hears the hold music, a 400 Hz
/// tone here), then the two are bridged (the visitor hears the agent's
/// audio, not the music); the agent hanging up ends the call, and the
/// callback completes.
#[test]
fn a_callback_to_a_target_bridges_an_agent() {
    let trunk_port = free_port();
    let agent_port = free_port();
    let visitor_media = free_port();
    let cap = start_capture(&format!("udp dst port {visitor_media}"));
    let visitor = answer_once("uas_answer.xml", trunk_port, visitor_media);
    let agent = answer_once("uas_agent.xml", agent_port, free_port());
    std::thread::sleep(Duration::from_millis(400));
    let music = tempfile::tempdir().unwrap();
    let music_file = music.path().join("music.wav");
    write_tone(&music_file, 400.0, 4.0, 8000.0, 8000);
    let s = setup(
        trunk_port,
        &format!(
            "\n[media]\nhold_music = [\"{}\"]\nhold_message = \"\"\n",
            music_file.display()
        ),
    );
    let r = post(
        &s.gw,
        OPERATOR_TOKEN,
        &json!({
            "phone": "+34612345678",
            "target": format!("sip:queue@127.0.0.1:{agent_port}"),
            "consent": { "given": true, "text": LEGAL }
        }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let done = wait_state(&s.gw, &id, &["completed", "failed"]);
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["target"], format!("sip:queue@127.0.0.1:{agent_port}"));
    let agent = agent.join().unwrap();
    assert!(agent.ok(), "agent: {}", agent.describe());
    let visitor = visitor.join().unwrap();
    assert!(visitor.ok(), "visitor: {}", visitor.describe());
    let log = s.gw.log();
    let bridged = seconds_of_day(
        log.lines()
            .find(|l| l.contains("transfer: bridged"))
            .unwrap_or_else(|| panic!("never bridged:\n{log}")),
    );
    std::thread::sleep(Duration::from_millis(300));
    let (file, _keep) = cap.stop();
    let rtp = vec![format!("udp.port=={visitor_media},rtp")];
    // (second of the day, 400 Hz level, RMS) per frame the visitor heard.
    let frames: Vec<(f64, f64, f64)> =
        tshark_fields(&file, &rtp, "rtp", &["frame.time_epoch", "rtp.payload"])
            .iter()
            .map(|r| {
                let s = pcmu_hex_to_linear(&r[1]);
                let rms = (s.iter().map(|x| x * x).sum::<f64>() / s.len().max(1) as f64).sqrt();
                (
                    r[0].parse::<f64>().unwrap() % 86_400.0,
                    tone_level(&s, 400.0),
                    rms,
                )
            })
            .collect();
    let before: Vec<_> = frames.iter().filter(|f| f.0 < bridged - 0.2).collect();
    let after: Vec<_> = frames
        .iter()
        .filter(|f| f.0 > bridged + 0.4 && f.0 < bridged + 2.4)
        .collect();
    // The agent rings for 2 s after the visitor answers.
    assert!(
        before.len() > 60,
        "{} frames before the bridge",
        before.len()
    );
    let music = before.iter().filter(|f| f.1 > 5000.0).count();
    assert!(
        music * 10 >= before.len() * 9,
        "hold music while the agent rings: {music}/{}",
        before.len()
    );
    assert!(after.len() > 50, "{} frames after the bridge", after.len());
    let agent_audio = after.iter().filter(|f| f.1 < 1000.0 && f.2 > 100.0).count();
    assert!(
        agent_audio * 2 >= after.len(),
        "the agent's audio, not the music, after the bridge: {agent_audio}/{}",
        after.len()
    );
}
