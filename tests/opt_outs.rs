//! STOP means stop, end to end against the real binary. The visitor texts
//! STOP through the providers' signed webhooks (SMS and WhatsApp); then
//! every kind of send we make to a phone is tried: a call's flow
//! (`send_sms`, `send_whatsapp`, the breakout link's SMS, with the number
//! written three ways), a chat welcome (an operator reconnecting with a
//! lead) and an operator's reply to the phone-side conversation. None may
//! reach the provider stand-ins; each is on record as blocked/opted_out
//! and takes its error path. START lets them all through again, and the
//! breakout SMS is recorded as one GSM-7 segment.

mod common;

use std::time::Duration;

use common::standin::*;
use common::*;
use serde_json::{json, Value};

const OPERATOR_TOKEN: &str = "operator-token-for-opt-out-tests";
const TWILIO_AUTH: &str = "twilio-auth-token-for-opt-out-tests";
const TWILIO_WEBHOOK_URL: &str = "https://chat.example.com/hooks/twilio/sms";
const APP_SECRET: &str = "meta-app-secret-for-opt-out-tests";
const OUR_NUMBER: &str = "+15550100000";
/// The visitor: the caller, the lead and the texter.
const VISITOR: &str = "+34612345678";
const WAIT: Duration = Duration::from_secs(15);

struct Setup {
    gw: Gateway,
    log: Log,
    _flows: tempfile::TempDir,
}

fn setup() -> Setup {
    let (port, log, _) = stand_in();
    let flows = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo().join("tests/flows/optouts")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("HOOK", &format!("http://127.0.0.1:{port}/hook"));
        std::fs::write(flows.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let gw = Gateway::start(&format!(
        "[flows]\ndir = \"{flows}\"\n\n\
         [http]\noperator_token = \"{OPERATOR_TOKEN}\"\n\n\
         [chat]\ntitle = \"Example Co.\"\ndefault_country = \"ES\"\n\n\
         [messaging.sms]\nprovider = \"twilio\"\nbase_url = \"http://127.0.0.1:{port}\"\naccount_sid = \"AC0123456789abcdef\"\nauth_token = \"{TWILIO_AUTH}\"\nfrom = \"{OUR_NUMBER}\"\nwebhook_url = \"{TWILIO_WEBHOOK_URL}\"\n\n\
         [messaging.whatsapp]\nbase_url = \"http://127.0.0.1:{port}\"\napi_version = \"v21.0\"\nphone_number_id = \"106540352242922\"\naccess_token = \"wa-token\"\napp_secret = \"{APP_SECRET}\"\nverify_token = \"verify-token\"\nwelcome_template = \"conversation_moved\"\nwelcome_template_language = \"es\"\n\n\
         [[routes]]\ndid = \"4000\"\nflow = \"optout-sends\"\n",
        flows = flows.path().display(),
    ));
    Setup {
        gw,
        log,
        _flows: flows,
    }
}

// ---- the providers' side -------------------------------------------------

fn text_by_sms(gw: &Gateway, sid: &str, text: &str) {
    let r = post_twilio_sms(
        gw,
        TWILIO_WEBHOOK_URL,
        TWILIO_AUTH,
        sid,
        VISITOR,
        OUR_NUMBER,
        text,
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

fn text_by_whatsapp(gw: &Gateway, wamid: &str, text: &str) {
    let r = post_whatsapp(gw, APP_SECRET, wamid, VISITOR, text);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Requests that reached Twilio or the Cloud API (not the flow's hooks).
fn provider_requests(log: &Log) -> Vec<Seen> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.path.starts_with("twilio/") || s.path.starts_with("whatsapp/"))
        .cloned()
        .collect()
}

/// The hooks the flow's send nodes posted from entry `from` of the log
/// on: (`<node>/next` or `<node>/on_error`, the JSON body), in order.
fn hooks_from(log: &Log, from: usize) -> Vec<(String, Value)> {
    log.lock().unwrap()[from..]
        .iter()
        .filter_map(|s| {
            let path = s.path.strip_prefix("hook/")?;
            Some((path.to_string(), serde_json::from_str(&s.body).unwrap()))
        })
        .collect()
}

fn paths(hooks: &[(String, Value)]) -> Vec<&str> {
    hooks.iter().map(|(p, _)| p.as_str()).collect()
}

// ---- our side ------------------------------------------------------------

fn api(gw: &Gateway, method: &str, path: &str, body: Option<&Value>) -> HttpReply {
    gw.api(OPERATOR_TOKEN, method, path, body)
}

/// The operator reconnects with `lead` on `channel` (PH-2B): a welcome.
fn reconnect(gw: &Gateway, lead: &str, channel: &str) -> HttpReply {
    let path = format!("/v1/leads/{lead}/reconnect");
    api(gw, "POST", &path, Some(&json!({ "channel": channel })))
}

/// Call number `n` (from 1) from the visitor's number runs the flow to
/// its BYE: its SIP Call-ID, and the hooks its send nodes posted.
fn call(s: &Setup, n: usize) -> (String, Vec<(String, Value)>) {
    let gw = &s.gw;
    let hooks_before = s.log.lock().unwrap().len();
    let text = std::fs::read_to_string(scenario("uac_wait_bye.xml"))
        .unwrap()
        .replace("+15551234567", VISITOR);
    let file = gw.dir.path().join("uac_visitor.xml");
    std::fs::write(&file, text).unwrap();
    let run = sipp(
        &[
            "-sf",
            &path_str(&file),
            &gw.sip_addr(),
            "-s",
            "4000",
            "-m",
            "1",
        ],
        Duration::from_secs(60),
    );
    assert!(run.ok(), "{}\n{}", run.describe(), gw.log());
    (call_id(gw, n), hooks_from(&s.log, hooks_before))
}

/// The SIP Call-ID of call number `n` (from 1), once its record is in.
fn call_id(gw: &Gateway, n: usize) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let calls = api(gw, "GET", "/v1/calls", None).json();
        let ids: Vec<&str> = calls["calls"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .map(|c| c["call_id"].as_str().unwrap())
            .collect();
        if let Some(id) = ids.get(n - 1) {
            return id.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no call {n}: {ids:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sends_of_call(gw: &Gateway, call_id: &str) -> Vec<Value> {
    let r = api(gw, "GET", &format!("/v1/calls/{call_id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["sends"].as_array().unwrap().clone()
}

/// The open conversation on `channel` the visitor's texts started.
fn phone_conversation(gw: &Gateway, channel: &str) -> String {
    let list = api(gw, "GET", "/v1/conversations", None).json();
    list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == channel && c["live"] == true)
        .unwrap_or_else(|| panic!("no live {channel} conversation: {list}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn transcript(gw: &Gateway, id: &str) -> Vec<String> {
    let r = api(gw, "GET", &format!("/v1/conversations/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The value of the series of `name` whose labels include all of `labels`.
fn metric(gw: &Gateway, name: &str, labels: &[&str]) -> Option<f64> {
    let (_, text) = gw.http_get("/metrics");
    text.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let ours =
            series.starts_with(&format!("{name}{{")) && labels.iter().all(|kv| series.contains(kv));
        ours.then(|| value.parse().ok()).flatten()
    })
}

/// One row of the send log, read from the SQLite file.
#[derive(Debug, Clone, PartialEq)]
struct SendRow {
    channel: String,
    recipient: String,
    call_id: Option<String>,
    node: Option<String>,
    status: String,
    error_kind: Option<String>,
    segments: Option<i64>,
}

fn stop_and_read_sends(gw: &mut Gateway) -> Vec<SendRow> {
    gw.signal(libc::SIGTERM);
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let db = rusqlite::Connection::open(gw.db_path()).unwrap();
    let mut stmt = db
        .prepare(
            "SELECT channel, recipient, call_id, node, status, error_kind, segments
             FROM provider_sends ORDER BY id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok(SendRow {
            channel: r.get(0)?,
            recipient: r.get(1)?,
            call_id: r.get(2)?,
            node: r.get(3)?,
            status: r.get(4)?,
            error_kind: r.get(5)?,
            segments: r.get(6)?,
        })
    })
    .unwrap()
    .collect::<Result<Vec<_>, _>>()
    .unwrap()
}

// ---- the test ------------------------------------------------------------

#[test]
fn stop_blocks_every_send_path_until_start() {
    let mut s = setup();
    let gw = &s.gw;

    // The visitor texts STOP on both channels. Nobody is answered: no
    // conversation starts, and no provider is asked anything.
    text_by_sms(gw, "SM00000000000000000000000000000a01", "STOP");
    text_by_whatsapp(gw, "wamid.optout-stop-1", "Stop");

    // 1. A chat welcome: the operator reconnects with the visitor as a
    // lead, by SMS and by WhatsApp.
    let lead = api(
        gw,
        "POST",
        "/v1/leads",
        Some(&json!({ "name": "Ana", "phone": "612 34 56 78" })),
    );
    assert_eq!(lead.status, 201, "{}", lead.body);
    let lead = lead.json()["id"].as_str().unwrap().to_string();
    for channel in ["sms", "whatsapp"] {
        let r = reconnect(gw, &lead, channel);
        assert_eq!(r.status, 409, "{channel}: {}", r.body);
        assert_eq!(r.json()["error_kind"], "opted_out", "{}", r.body);
    }

    // 2. An operator's reply: the visitor may still write to us (a new
    // phone-side conversation), but we may not write back.
    text_by_sms(
        gw,
        "SM00000000000000000000000000000a02",
        "Hola, una pregunta",
    );
    let conv = phone_conversation(gw, "sms");
    let r = api(
        gw,
        "POST",
        &format!("/v1/conversations/{conv}/messages"),
        Some(&json!({ "text": "Hola Ana, ¿en qué te ayudo?" })),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.json()["error_kind"], "opted_out");
    assert!(r.json()["error"].as_str().unwrap().contains("STOP"));
    let said = transcript(gw, &conv);
    assert!(
        !said.iter().any(|t| t.contains("en qué te ayudo")),
        "{said:?}"
    );
    assert!(
        said.iter().any(|t| t == "Not delivered by SMS: opted out"),
        "the transcript says nothing was delivered: {said:?}"
    );

    // 3. A call's flow: send_sms (caller, and the number without +),
    // send_whatsapp (caller, and the WhatsApp id) and the breakout link.
    let (blocked_call, hooks) = call(&s, 1);
    assert_eq!(
        paths(&hooks),
        [
            "sms/on_error",
            "sms_spelled/on_error",
            "wa/on_error",
            "wa_id/on_error",
            "link/on_error"
        ],
        "every send took on_error"
    );
    for (path, body) in &hooks {
        assert_eq!(body["error_kind"], "opted_out", "{path}: {body}");
    }

    // (a) Not one request reached Twilio or the Cloud API.
    let reached = provider_requests(&s.log);
    assert!(
        reached.is_empty(),
        "nothing may reach a provider: {reached:?}"
    );
    // (b) Each is on the call's record (the API), blocked as opted_out.
    let sends = sends_of_call(gw, &blocked_call);
    let nodes: Vec<&str> = sends.iter().map(|s| s["node"].as_str().unwrap()).collect();
    assert_eq!(nodes, ["sms", "sms_spelled", "wa", "wa_id", "link"]);
    for send in &sends {
        assert_eq!(
            (&send["status"], &send["error_kind"], &send["provider_id"]),
            (&json!("blocked"), &json!("opted_out"), &Value::Null),
            "{send}"
        );
    }
    assert_eq!(
        metric(
            gw,
            "crossline_sends_blocked_total",
            &[r#"channel="sms""#, r#"reason="opted_out""#]
        ),
        Some(5.0),
        "reconnect, reply, two send_sms and the link"
    );
    assert_eq!(
        metric(
            gw,
            "crossline_sends_blocked_total",
            &[r#"channel="whatsapp""#, r#"reason="opted_out""#]
        ),
        Some(3.0),
        "reconnect and two send_whatsapp"
    );

    // START on both channels: everything goes out again.
    text_by_sms(gw, "SM00000000000000000000000000000a03", "START");
    text_by_whatsapp(gw, "wamid.optout-start-1", "START");
    let r = api(
        gw,
        "POST",
        &format!("/v1/conversations/{conv}/messages"),
        Some(&json!({ "text": "Hola Ana, ¿en qué te ayudo?" })),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    wait_sms_to(&s.log, VISITOR, "en qué te ayudo", WAIT);
    let r = api(
        gw,
        "POST",
        &format!("/v1/conversations/{conv}/close"),
        Some(&json!({})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    for channel in ["sms", "whatsapp"] {
        let r = reconnect(gw, &lead, channel);
        assert_eq!(r.status, 201, "{channel}: {}", r.body);
    }
    wait_sms_to(&s.log, VISITOR, "You left us your number", WAIT);
    let (sent_call, hooks) = call(&s, 2);
    // The spellings without + pass the opt-out check now, and the
    // providers' own E.164 check stops them before any request.
    assert_eq!(
        paths(&hooks),
        [
            "sms/next",
            "sms_spelled/on_error",
            "wa/next",
            "wa_id/on_error",
            "link/next"
        ]
    );
    assert_eq!(hooks[1].1["error_kind"], "invalid_recipient");
    assert_eq!(hooks[3].1["error_kind"], "invalid_recipient");
    let sms_out: Vec<String> = sms_to(&s.log, VISITOR)
        .into_iter()
        .map(|f| f["Body"].clone())
        .collect();
    assert_eq!(
        sms_out.len(),
        4,
        "reply, welcome, send_sms, link: {sms_out:?}"
    );
    assert!(sms_out[2].contains("appointment is confirmed"));
    assert!(sms_out[3].contains("/b/"), "{sms_out:?}");
    let whatsapp_out = provider_requests(&s.log)
        .into_iter()
        .filter(|r| r.path.starts_with("whatsapp/"))
        .count();
    assert_eq!(whatsapp_out, 2, "the welcome template and send_whatsapp");

    // The link's SMS fits one GSM-7 segment: the API says so.
    let sends = sends_of_call(gw, &sent_call);
    let link = sends.iter().find(|s| s["node"] == "link").unwrap();
    assert_eq!(
        (&link["status"], &link["segments"]),
        (&json!("sent"), &json!(1))
    );
    let wa = sends.iter().find(|s| s["node"] == "wa").unwrap();
    assert_eq!(wa["segments"], Value::Null, "WhatsApp has no segments");

    // The SQLite file holds every attempt: the blocked ones first.
    let rows = stop_and_read_sends(&mut s.gw);
    let blocked: Vec<&SendRow> = rows.iter().filter(|r| r.status == "blocked").collect();
    assert_eq!(blocked.len(), 8, "{rows:#?}");
    for row in &blocked {
        assert_eq!(row.error_kind.as_deref(), Some("opted_out"), "{row:?}");
    }
    let chat_blocked: Vec<(&str, &str)> = blocked
        .iter()
        .filter(|r| r.call_id.is_none())
        .map(|r| (r.channel.as_str(), r.recipient.as_str()))
        .collect();
    assert_eq!(
        chat_blocked,
        [("sms", VISITOR), ("whatsapp", VISITOR), ("sms", VISITOR)],
        "the two welcomes, then the reply"
    );
    assert!(blocked
        .iter()
        .filter(|r| r.call_id.is_none())
        .all(|r| r.node.as_deref().is_some_and(|n| n.starts_with("chat:"))));
    assert_eq!(
        blocked
            .iter()
            .filter(|r| r.call_id.as_deref() == Some(blocked_call.as_str()))
            .count(),
        5
    );
    let link_sent = rows
        .iter()
        .find(|r| {
            r.call_id.as_deref() == Some(sent_call.as_str()) && r.node.as_deref() == Some("link")
        })
        .unwrap();
    assert_eq!(
        (link_sent.status.as_str(), link_sent.segments),
        ("sent", Some(1))
    );
}
