//! The Twilio-compatible Calls API, end to end, driven by the official
//! `twilio` library's REST client (tests/peers/calls_api_client.py, its
//! API domain pointed at crossline): calls it places end at SIPp UASes
//! with the given From and run the app (tests/peers/twiml_app.py), live
//! calls are redirected (the audio cut checked with tshark), hung up and
//! cancelled, lists page as Twilio pages, status callbacks arrive in order
//! and pass RequestValidator, and bad credentials and crafted `To`s are
//! refused without anything being dialled.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::twiml_app::{App, ACCOUNT_SID, AUTH_TOKEN};
use common::*;
use serde_json::{json, Value};

const OPERATOR_TOKEN: &str = "operator-token-for-tests-0123";

/// A gateway with the test account, SIP calls allowed to 127.0.0.1, a
/// trunk to `trunk_port` (if any) and `routes`.
fn gateway(trunk_port: Option<u16>, routes: &str) -> Gateway {
    let trunk = trunk_port.map_or(String::new(), |p| {
        format!("[[trunks]]\nname = \"carrier\"\noutbound_proxy = \"sip:127.0.0.1:{p}\"\n\n")
    });
    Gateway::start(&format!(
        "[twiml]\naccount_sid = \"{ACCOUNT_SID}\"\nauth_token = \"{AUTH_TOKEN}\"\ntimeout_ms = 2000\n\
         api_sip_hosts = [\"127.0.0.1\"]\n\n\
         [http]\noperator_token = \"{OPERATOR_TOKEN}\"\n\n{trunk}{routes}"
    ))
}

/// One Calls API operation through the twilio library, as `token`.
fn api_as(gw: &Gateway, token: &str, command: &str, args: Value) -> Value {
    let python = peers::python("twilio");
    let out = Command::new(python)
        .arg(repo().join("tests/peers/calls_api_client.py"))
        .arg(format!("http://127.0.0.1:{}", gw.http_port))
        .arg(ACCOUNT_SID)
        .arg(token)
        .arg(command)
        .arg(args.to_string())
        .output()
        .expect("run tests/peers/calls_api_client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "calls_api_client.py {command}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn api(gw: &Gateway, command: &str, args: Value) -> Value {
    api_as(gw, AUTH_TOKEN, command, args)
}

fn is_sid(s: &Value) -> bool {
    s.as_str().is_some_and(|s| {
        s.len() == 34 && s.starts_with("CA") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// A SIPp UAS running `scenario_text` on a free port, in the background.
fn uas(scenario_text: String, dir: &std::path::Path) -> (u16, std::thread::JoinHandle<Sipp>) {
    let port = free_port();
    let file = dir.join(format!("uas{port}.xml"));
    std::fs::write(&file, scenario_text).unwrap();
    let handle = std::thread::spawn(move || {
        sipp_on(
            &["-sf", &path_str(&file), "-m", "1"],
            Duration::from_secs(60),
            port,
            free_port(),
        )
    });
    std::thread::sleep(Duration::from_millis(400));
    (port, handle)
}

/// uas_answer.xml checking the INVITE's Request-URI user and From user.
fn answering(ruri_user: &str, from_user: &str) -> String {
    let text = std::fs::read_to_string(scenario("uas_answer.xml"))
        .unwrap()
        .replace(
            r#"<recv request="INVITE"/>"#,
            &format!(
                r#"<recv request="INVITE"><action>
                <ereg regexp="^INVITE sip:{ruri_user}@" search_in="msg" check_it="true" assign_to="ruri"/>
                <ereg regexp=":{from_user}@" search_in="hdr" header="From:" check_it="true" assign_to="from"/>
                <log message="[$ruri] [$from]"/></action></recv>"#,
                ruri_user = ruri_user.replace('+', r"\+"),
                from_user = from_user.replace('+', r"\+"),
            ),
        );
    assert!(text.contains("check_it"));
    text
}

/// Wait until `check` holds (polling), or fail with `what`.
fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The status callbacks of `sid`: (CallStatus, SequenceNumber).
fn statuses(app: &App, sid: &Value) -> Vec<(String, String)> {
    app.requests_to("/status")
        .iter()
        .filter(|e| e["params"]["CallSid"] == *sid)
        .map(|e| {
            let p = &e["params"];
            (
                p["CallStatus"].as_str().unwrap_or("").to_string(),
                p["SequenceNumber"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// A call placed through the API goes out through the trunk to a SIPp
/// UAS, which sees the number dialled and our `From`; once answered, the
/// app is asked with the API's CallSid and Direction=outbound-api; the
/// status callbacks (initiated, ringing, answered, completed) arrive in
/// order, the answered one retried after a 500, all signed. A second call
/// to a SIP URI on an allowed host runs inline TwiML. Fetch and list
/// (page by page through next_page_uri, and filtered) show both.
#[test]
fn calls_placed_through_the_api_reach_the_uas_and_run_the_app() {
    let app = App::start();
    let dir = tempfile::tempdir().unwrap();
    let (trunk_port, carrier) = uas(answering("+12015550123", "+15550001111"), dir.path());
    let gw = gateway(Some(trunk_port), "");
    let created = api(
        &gw,
        "create",
        json!({
            "to": "+1 201 555 0123", "from_": "+15550001111", "url": app.url("/say-play"),
            "status_callback": app.url("/status"),
            "status_callback_event": ["initiated", "ringing", "answered", "completed"],
        }),
    );
    assert!(is_sid(&created["sid"]), "{created}");
    assert_eq!(created["status"], "queued");
    assert_eq!(created["direction"], "outbound-api");
    assert_eq!(created["to"], "+12015550123");
    assert_eq!(created["account_sid"], ACCOUNT_SID);
    let sid = created["sid"].clone();
    let run = carrier.join().unwrap();
    assert!(run.ok(), "the carrier UAS: {}", run.describe());

    let asked = app.requests_to("/say-play");
    assert_eq!(asked.len(), 1, "{:?}", app.requests());
    let p = &asked[0]["params"];
    assert_eq!(p["CallSid"], sid);
    assert_eq!(p["Direction"], "outbound-api");
    assert_eq!(p["From"], "+15550001111");
    assert_eq!(p["To"], "+12015550123");
    assert_eq!(p["CallStatus"], "in-progress");
    wait_until(
        "the completed status callback",
        Duration::from_secs(15),
        || statuses(&app, &sid).iter().any(|(s, _)| s == "completed"),
    );
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        statuses(&app, &sid),
        pairs(&[
            ("initiated", "0"),
            ("ringing", "1"),
            ("in-progress", "2"),
            ("in-progress", "2"),
            ("completed", "3"),
        ])
    );
    let done = app.requests_to("/status").last().unwrap()["params"].clone();
    assert_eq!(done["Direction"], "outbound-api");
    assert_eq!(done["SipResponseCode"], "200");

    // A SIP URI on an allowed host, with its first document inline,
    // placed by the example script (standard library only).
    let (bob_port, bob) = uas(answering("bob", "crossline-bot"), dir.path());
    let out = Command::new("python3")
        .arg(repo().join("examples/twiml-app/call.py"))
        .arg(format!("http://127.0.0.1:{}", gw.http_port))
        .arg(format!("sip:bob@127.0.0.1:{bob_port}"))
        .arg("crossline-bot")
        .arg("<Response><Say>Hello from the Calls API.</Say><Hangup/></Response>")
        .env("ACCOUNT_SID", ACCOUNT_SID)
        .env("AUTH_TOKEN", AUTH_TOKEN)
        .output()
        .expect("run examples/twiml-app/call.py");
    assert!(out.status.success(), "{out:?}");
    let second: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(is_sid(&second["sid"]), "{second}");
    assert_eq!(second["status"], "queued");
    let run = bob.join().unwrap();
    assert!(run.ok(), "bob's UAS: {}", run.describe());

    // Both over: fetched and listed from their records.
    wait_until("both calls in the list", Duration::from_secs(10), || {
        api(&gw, "list", json!({})).as_array().map(Vec::len) == Some(2)
    });
    let fetched = api(&gw, "fetch", json!({ "sid": sid }));
    assert_eq!(fetched["status"], "completed", "{fetched}");
    assert_eq!(fetched["direction"], "outbound-api");
    assert_eq!(fetched["from"], "+15550001111");
    assert!(!fetched["start_time"].is_null() && !fetched["end_time"].is_null());
    let secs: u64 = fetched["duration"].as_str().unwrap().parse().unwrap();
    assert!((1..=8).contains(&secs), "{fetched}");
    let pages = api(&gw, "pages", json!({ "page_size": 1 }));
    assert_eq!(
        pages,
        json!([[second["sid"]], [sid]]),
        "newest first, one per page"
    );
    let to_number = api(&gw, "list", json!({ "to": "+12015550123" }));
    assert_eq!(to_number.as_array().map(Vec::len), Some(1), "{to_number}");
    assert_eq!(to_number[0]["sid"], sid);
    let completed = api(&gw, "list", json!({ "status": "completed", "limit": 5 }));
    assert_eq!(completed.as_array().map(Vec::len), Some(2), "{completed}");

    // Our own API names the call by its CallSid too.
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let path = format!("/v1/calls/{}", sid.as_str().unwrap());
    let ours = gw.http("GET", &path, &[("Authorization", &auth)], None);
    assert_eq!(ours.status, 200, "{}", ours.body);
    assert_eq!(
        ours.json()["records"][0]["vars"]["twilio_call_sid"],
        sid,
        "the record keeps the CallSid"
    );
    app.assert_all_signed();
}

/// Per RTP packet to the caller: (epoch seconds, 1 kHz tone level).
fn tone_frames(rows: &[Vec<String>]) -> Vec<(f64, f64)> {
    rows.iter()
        .map(|r| {
            let s = audio::pcmu_hex_to_linear(&r[1]);
            (r[0].parse::<f64>().unwrap(), audio::tone_level(&s, 1000.0))
        })
        .collect()
}

/// A live call playing a tone for ever: the API's redirect cuts the tone
/// within 200 ms and the new document (a pause, then hang up) runs;
/// `Status=completed` hangs a call up; `Status=canceled` cancels a call
/// still ringing (the UAS gets CANCEL).
#[test]
fn live_calls_are_redirected_mid_play_hung_up_and_cancelled() {
    let app = App::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(
        None,
        &format!(
            "[[routes]]\ndid = \"long\"\napp = {{ url = \"{}\" }}\n",
            app.url("/long-play")
        ),
    );
    let sip = gw.sip_addr();
    let started = Instant::now();
    let capture = std::thread::scope(|scope| {
        let caller = scope.spawn(|| {
            capture_call(
                &gw,
                &[
                    "-sf",
                    &scenario("uac_wait_bye.xml"),
                    &sip,
                    "-s",
                    "long",
                    "-m",
                    "1",
                ],
                &["frame.time_epoch", "rtp.payload"],
            )
        });
        wait_until("the app's first request", Duration::from_secs(10), || {
            !app.requests_to("/long-play").is_empty()
        });
        std::thread::sleep(Duration::from_millis(2500));
        let sid = app.requests_to("/long-play")[0]["params"]["CallSid"].clone();
        let moved = api(
            &gw,
            "update",
            json!({ "sid": sid, "url": app.url("/after-redirect"), "method": "POST" }),
        );
        assert_eq!(moved["sid"], sid, "{moved}");
        assert_eq!(moved["status"], "in-progress");
        (
            caller.join().unwrap(),
            moved["sent_at"].as_f64().unwrap(),
            sid,
        )
    });
    let (capture, sent_at, sid) = capture;
    assert!(capture.run.ok(), "{}", capture.run.describe());
    let frames = tone_frames(&capture.rows);
    let before = frames
        .iter()
        .filter(|(t, level)| *t < sent_at && *level > 4000.0)
        .count();
    assert!(before >= 75, "the tone played before: {before} frames");
    let last_tone = frames
        .iter()
        .filter(|(_, level)| *level > 4000.0)
        .map(|(t, _)| *t)
        .fold(0.0, f64::max);
    let cut = last_tone - sent_at;
    println!(
        "the tone stopped {:.0} ms after the redirect was sent",
        cut * 1000.0
    );
    assert!(
        cut < 0.2,
        "the tone went on {cut:.3} s after the redirect was sent"
    );
    assert!(
        cut > -0.1,
        "the tone had stopped {cut:.3} s before the redirect"
    );
    let after = app.requests_to("/after-redirect");
    assert_eq!(after.len(), 1, "{:?}", app.requests());
    assert_eq!(after[0]["params"]["CallSid"], sid);
    // The redirect's pause, then our BYE.
    assert!(started.elapsed() > Duration::from_secs(3));

    // Status=completed: our BYE now.
    let hung_up = std::thread::scope(|scope| {
        let caller = scope.spawn(|| caller_waiting(&gw, "long"));
        wait_until("the second call's request", Duration::from_secs(10), || {
            app.requests_to("/long-play").len() == 2
        });
        let sid = app.requests_to("/long-play")[1]["params"]["CallSid"].clone();
        let ended = api(&gw, "update", json!({ "sid": sid, "status": "completed" }));
        assert_eq!(ended["status"], "completed", "{ended}");
        let at = Instant::now();
        let run = caller.join().unwrap();
        assert!(run.ok(), "{}", run.describe());
        assert!(at.elapsed() < Duration::from_secs(3), "BYE too late");
        sid
    });

    // Status=canceled while it rings: CANCEL at the UAS.
    let (ring_port, ringing) = uas(
        std::fs::read_to_string(scenario("uas_ring_cancel.xml")).unwrap(),
        dir.path(),
    );
    let placed = api(
        &gw,
        "create",
        json!({
            "to": format!("sip:agent@127.0.0.1:{ring_port}"), "from_": "+15550001111",
            "url": app.url("/say-play"),
        }),
    );
    std::thread::sleep(Duration::from_millis(1000));
    let fetched = api(&gw, "fetch", json!({ "sid": placed["sid"] }));
    assert_eq!(fetched["status"], "ringing", "{fetched}");
    let cancelled = api(
        &gw,
        "update",
        json!({ "sid": placed["sid"], "status": "canceled" }),
    );
    assert_eq!(cancelled["status"], "canceled", "{cancelled}");
    let run = ringing.join().unwrap();
    assert!(
        run.ok(),
        "the ringing UAS got no CANCEL: {}",
        run.describe()
    );
    assert!(app.requests_to("/say-play").is_empty(), "never answered");
    wait_until(
        "the cancelled call's record",
        Duration::from_secs(10),
        || api(&gw, "fetch", json!({ "sid": placed["sid"] }))["status"] == "canceled",
    );
    assert_eq!(
        api(&gw, "fetch", json!({ "sid": hung_up }))["status"],
        "completed"
    );
    // A call that is over can't be redirected.
    let late = api(
        &gw,
        "update",
        json!({ "sid": sid, "url": app.url("/after-redirect") }),
    );
    assert_eq!(late["error"]["code"], 21220, "{late}");
    assert!(
        wait_metric(
            &gw,
            "crossline_twiml_api_redirects_total",
            1.0,
            Duration::from_secs(5)
        ) >= 1.0
    );
    app.assert_all_signed();
}

/// Wrong credentials get 401 (Twilio's 20003), counted, and a client
/// guessing on is throttled (429); a crafted `To` (URI parameters or
/// headers, a header's end, a host not on the list) is 400 and nothing is
/// dialled; our /v1 mirror refuses the same way.
#[test]
fn bad_credentials_and_crafted_targets_are_refused() {
    // Nothing listens there: nothing may be sent there either.
    let gw = gateway(Some(free_port()), "");
    let wrong = api_as(&gw, "not-the-token", "list", json!({}));
    assert_eq!(wrong["error"]["status"], 401, "{wrong}");
    assert_eq!(wrong["error"]["code"], 20003);
    for to in [
        "sip:x@evil.example;transport=tcp",
        "sip:x@127.0.0.1;transport=tcp",
        "sip:x@127.0.0.1?Route=%3Csip:evil.example%3E",
        "+1234>;foo",
        "+12015550123@evil.example",
        "sip:x@evil.example",
        "sip:x@127.0.0.1>\r\nVia: SIP/2.0/UDP evil.example",
    ] {
        let refused = api(
            &gw,
            "create",
            json!({ "to": to, "from_": "+15550001111", "url": "http://127.0.0.1:9/x" }),
        );
        assert_eq!(refused["error"]["status"], 400, "{to}: {refused}");
        let code = refused["error"]["code"].as_u64().unwrap_or(0);
        assert!([21211, 13223].contains(&code), "{to}: {refused}");
    }
    let from = api(
        &gw,
        "create",
        json!({ "to": "+12015550123", "from_": "x>;tag=1", "url": "http://127.0.0.1:9/x" }),
    );
    assert_eq!(from["error"]["code"], 21212, "{from}");
    assert_eq!(api(&gw, "list", json!({})), json!([]), "nothing placed");
    assert!(!gw.log().contains("Calls API: dialling"));

    // Our API: the operator token, the same checks.
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let h = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let body = r#"{"to": "sip:x@evil.example;transport=tcp", "from": "+15550001111", "url": "http://127.0.0.1:9/x"}"#;
    let ours = gw.http("POST", "/v1/calls", &h, Some(body));
    assert_eq!(ours.status, 400, "{}", ours.body);
    assert_eq!(ours.json()["code"], 13223);
    let gone = gw.http(
        "POST",
        "/v1/calls/CA00000000000000000000000000000000",
        &h,
        Some(r#"{"status": "completed"}"#),
    );
    assert_eq!(gone.status, 404, "{}", gone.body);
    let no_token = gw.http("POST", "/v1/calls", &[], Some(body));
    assert_eq!(no_token.status, 401);

    // Guessing the token: after the free failures, 429 without a check.
    let guess = format!("Basic {}", base64_encode(&format!("{ACCOUNT_SID}:guess")));
    let path = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json");
    let statuses: Vec<u16> = (0..8)
        .map(|_| {
            gw.http("GET", &path, &[("Authorization", &guess)], None)
                .status
        })
        .collect();
    assert_eq!(statuses[0], 401);
    assert_eq!(statuses[7], 429, "{statuses:?}");
    let (_, metrics) = gw.http_get("/metrics");
    assert!(
        metric_value(
            &metrics,
            "crossline_http_auth_failures_total{reason=\"wrong\"}"
        ) >= 6.0,
        "{metrics}"
    );
    assert!(
        metric_value(
            &metrics,
            "crossline_calls_api_requests_total{op=\"create\",outcome=\"refused\"}"
        ) >= 8.0,
        "{metrics}"
    );
}

/// Standard base64, for a Basic header.
fn base64_encode(s: &str) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The Queues API through the twilio library. A queue made by create
/// (MaxSize 2) takes two app callers and turns the third away
/// (QueueResult=queue-full); Members lists the two in their places with
/// their CallSids; dequeuing Front (Url, POST) redirects the first: its
/// Enqueue action hears QueueResult=redirected, the call runs the Url's
/// document and ends; the second is dequeued by CallSid with GET. Then the
/// empty queue's MaxSize changes, a rename and a duplicate are refused, it
/// is deleted, and bad credentials get nothing.
#[test]
fn queues_and_members_are_driven_through_the_rest_api() {
    let app = App::start();
    let gw = gateway(
        None,
        &format!(
            "[[routes]]\ndid = \"enq\"\napp = {{ url = \"{}\" }}\n",
            app.url("/enqueue?q=sales")
        ),
    );
    let made = api(
        &gw,
        "queue_create",
        json!({ "friendly_name": "sales", "max_size": 2 }),
    );
    let queue = made["sid"].as_str().unwrap_or_default().to_string();
    assert!(
        queue.len() == 34 && queue.starts_with("QU"),
        "the made queue: {made}"
    );
    assert_eq!(made["friendly_name"], "sales");
    assert_eq!(made["max_size"], 2);
    assert_eq!(made["current_size"], 0);
    assert_eq!(made["account_sid"], ACCOUNT_SID);
    let dup = api(&gw, "queue_create", json!({ "friendly_name": "sales" }));
    assert_eq!(dup["error"]["status"], 409, "{dup}");
    let too_big = api(
        &gw,
        "queue_create",
        json!({ "friendly_name": "big", "max_size": 5001 }),
    );
    assert_eq!(too_big["error"]["code"], 20001, "{too_big}");

    let wait_sids = || -> Vec<Value> {
        let mut sids: Vec<Value> = Vec::new();
        for r in app.requests_to("/wait") {
            if !sids.contains(&r["params"]["CallSid"]) {
                sids.push(r["params"]["CallSid"].clone());
            }
        }
        sids
    };
    std::thread::scope(|scope| {
        let first = scope.spawn(|| caller_waiting(&gw, "enq"));
        wait_until("the first caller waiting", Duration::from_secs(15), || {
            wait_sids().len() == 1
        });
        let second = scope.spawn(|| caller_waiting(&gw, "enq"));
        wait_until("the second caller waiting", Duration::from_secs(15), || {
            wait_sids().len() == 2
        });
        // The third finds the queue full: its action, then hung up.
        let third = caller_waiting(&gw, "enq");
        assert!(third.ok(), "third caller: {}", third.describe());
        let left = app.requests_to("/enqueue-left");
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0]["params"]["QueueResult"], "queue-full");
        let sids = wait_sids();
        assert_eq!(sids.len(), 2, "the third never waited");

        let fetched = api(&gw, "queue_fetch", json!({ "sid": queue }));
        assert_eq!(fetched["current_size"], 2, "{fetched}");
        let members = api(&gw, "members", json!({ "queue": queue }));
        let listed: Vec<(Value, Value)> = members
            .as_array()
            .unwrap_or_else(|| panic!("members: {members}"))
            .iter()
            .map(|m| (m["call_sid"].clone(), m["position"].clone()))
            .collect();
        assert_eq!(
            listed,
            vec![(sids[0].clone(), json!(1)), (sids[1].clone(), json!(2))],
            "{members}"
        );
        assert_eq!(members[0]["queue_sid"], queue.as_str());
        assert!(members[0]["date_enqueued"].is_string(), "{members}");
        let front = api(
            &gw,
            "member_fetch",
            json!({ "queue": queue, "call_sid": "Front" }),
        );
        assert_eq!(front["call_sid"], sids[0], "{front}");
        assert!(front["wait_time"].as_u64().is_some(), "{front}");

        // Dequeue the front one: it runs /after-redirect (pause, hang up).
        let out = api(
            &gw,
            "dequeue",
            json!({ "queue": queue, "call_sid": "Front", "url": app.url("/after-redirect"), "method": "POST" }),
        );
        assert_eq!(out["call_sid"], sids[0], "{out}");
        let first = first.join().unwrap();
        assert!(first.ok(), "first caller: {}", first.describe());
        let moved = app.requests_to("/after-redirect");
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert_eq!(moved[0]["params"]["CallSid"], sids[0]);
        assert_eq!(moved[0]["method"], "POST");
        wait_until("the first's Enqueue action", Duration::from_secs(5), || {
            app.requests_to("/enqueue-left").len() == 2
        });
        let left = &app.requests_to("/enqueue-left")[1]["params"];
        assert_eq!(left["QueueResult"], "redirected", "{left}");
        assert_eq!(left["CallSid"], sids[0]);

        let members = api(&gw, "members", json!({ "queue": queue }));
        assert_eq!(members.as_array().map(Vec::len), Some(1), "{members}");
        assert_eq!(members[0]["call_sid"], sids[1]);
        assert_eq!(members[0]["position"], 1, "moved up");

        let out = api(
            &gw,
            "dequeue",
            json!({ "queue": queue, "call_sid": sids[1], "url": app.url("/after-redirect"), "method": "GET" }),
        );
        assert_eq!(out["call_sid"], sids[1], "{out}");
        let second = second.join().unwrap();
        assert!(second.ok(), "second caller: {}", second.describe());
        let moved = app.requests_to("/after-redirect");
        assert_eq!(moved.len(), 2);
        assert_eq!(moved[1]["method"], "GET");
        assert_eq!(moved[1]["params"]["CallSid"], sids[1]);
        // Not in the queue any more.
        let again = api(
            &gw,
            "dequeue",
            json!({ "queue": queue, "call_sid": sids[1], "url": app.url("/after-redirect") }),
        );
        assert_eq!(again["error"]["status"], 404, "{again}");
    });

    wait_until("an empty queue", Duration::from_secs(10), || {
        api(&gw, "queue_fetch", json!({ "sid": queue }))["current_size"] == 0
    });
    let changed = api(&gw, "queue_update", json!({ "sid": queue, "max_size": 5 }));
    assert_eq!(changed["max_size"], 5, "{changed}");
    let renamed = api(
        &gw,
        "queue_update",
        json!({ "sid": queue, "friendly_name": "other" }),
    );
    assert_eq!(renamed["error"]["status"], 400, "{renamed}");
    let all = api(&gw, "queue_list", json!({}));
    assert!(
        all.as_array()
            .is_some_and(|l| l.iter().any(|q| q["sid"] == queue.as_str())),
        "{all}"
    );
    let unknown = api(
        &gw,
        "member_fetch",
        json!({ "queue": queue, "call_sid": "Front" }),
    );
    assert_eq!(unknown["error"]["status"], 404, "nobody waits: {unknown}");
    let wrong = api_as(&gw, "not-the-token", "queue_list", json!({}));
    assert_eq!(wrong["error"]["status"], 401, "{wrong}");

    let deleted = api(&gw, "queue_delete", json!({ "sid": queue }));
    assert_eq!(deleted["deleted"], true, "{deleted}");
    let gone = api(&gw, "queue_fetch", json!({ "sid": queue }));
    assert_eq!(gone["error"]["status"], 404, "{gone}");
    let metrics = gw.http_get("/metrics").1;
    assert!(
        metrics.contains(r#"crossline_calls_api_requests_total{op="dequeue",outcome="ok"} 2"#),
        "{metrics}"
    );
    app.assert_all_signed();
}
