//! Flows end to end: the real binary runs the Spanish callbot from
//! deploy/flows, a SIPp caller picks a menu option with RFC 2833 DTMF, and
//! local stand-ins for Twilio and the WhatsApp Cloud API check each request
//! the way the real services would.

mod common;

use std::time::Duration;

use common::standin::*;
use common::*;

/// One row of the gateway's send log.
#[derive(Debug)]
struct SendRow {
    idempotency_key: String,
    channel: String,
    provider: String,
    recipient: String,
    call_id: Option<String>,
    flow: Option<String>,
    node: Option<String>,
    status: String,
    provider_id: Option<String>,
    error_kind: Option<String>,
    error_code: Option<i64>,
    attempts: Option<i64>,
}

/// Stop the gateway (its store flushes on the way out), then read what it
/// stored: the send log, and the Call-IDs of its call records.
fn stop_and_read_sends(gw: &mut Gateway) -> (Vec<SendRow>, Vec<String>) {
    gw.stop();
    let db = rusqlite::Connection::open(gw.db_path()).unwrap();
    let mut stmt = db
        .prepare(
            "SELECT idempotency_key, channel, provider, recipient, call_id, flow, node, status,
                    provider_id, error_kind, error_code, attempts FROM provider_sends ORDER BY id",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok(SendRow {
                idempotency_key: r.get(0)?,
                channel: r.get(1)?,
                provider: r.get(2)?,
                recipient: r.get(3)?,
                call_id: r.get(4)?,
                flow: r.get(5)?,
                node: r.get(6)?,
                status: r.get(7)?,
                provider_id: r.get(8)?,
                error_kind: r.get(9)?,
                error_code: r.get(10)?,
                attempts: r.get(11)?,
            })
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let mut stmt = db.prepare("SELECT call_id FROM calls ORDER BY id").unwrap();
    let calls = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<Vec<String>, _>>()
        .unwrap();
    (rows, calls)
}

/// The one send a menu choice made, checked against the one call record.
fn only_send(rows: &[SendRow], calls: &[String]) -> String {
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(calls.len(), 1, "{calls:?}");
    let row = &rows[0];
    assert_eq!(row.recipient, "+15551234567");
    assert_eq!(row.flow.as_deref(), Some("callbot-es"));
    assert_eq!(row.call_id.as_ref(), Some(&calls[0]));
    let node = row.node.clone().unwrap_or_default();
    assert_eq!(row.idempotency_key, format!("{}:{node}:1", calls[0]));
    node
}

/// The value of an unlabelled series, or of the one whose labels include
/// all of `labels` (`key="value"` strings).
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let matches = if labels.is_empty() {
            series == name
        } else {
            series.starts_with(&format!("{name}{{")) && labels.iter().all(|kv| series.contains(kv))
        };
        matches.then(|| value.parse().ok()).flatten()
    })
}

fn gateway(stand_in_port: u16) -> Gateway {
    Gateway::start(&format!(
        "[flows]\ndir = \"{flows}\"\n\n\
         [messaging.sms]\nprovider = \"twilio\"\nbase_url = \"http://127.0.0.1:{stand_in_port}\"\naccount_sid = \"AC0123456789abcdef\"\nauth_token = \"secret-token\"\nfrom = \"+15550100000\"\n\n\
         [messaging.whatsapp]\nbase_url = \"http://127.0.0.1:{stand_in_port}\"\napi_version = \"v21.0\"\nphone_number_id = \"106540352242922\"\naccess_token = \"wa-token\"\n\n\
         [[routes]]\ndid = \"2000\"\nflow = \"callbot-es\"\n",
        flows = repo().join("deploy/flows").display(),
    ))
}

fn press(gw: &Gateway, digit: &str) -> Sipp {
    // SIPp can't template the pcap file name: write the scenario for this key.
    let text = std::fs::read_to_string(scenario("uac_dtmf.xml")).unwrap();
    let file = gw.dir.path().join(format!("press{digit}.xml"));
    std::fs::write(&file, text.replace("DIGIT", digit)).unwrap();
    sipp(
        &[
            "-sf",
            &path_str(&file),
            &gw.sip_addr(),
            "-s",
            "2000",
            "-m",
            "1",
            "-d",
            "2500",
        ],
        Duration::from_secs(60),
    )
}

/// Menu option 2: an SMS to the caller through the Twilio stand-in, a
/// confirmation, the goodbye played in full, then BYE.
#[test]
fn callbot_sends_sms_to_the_caller_then_says_goodbye_and_hangs_up() {
    require("espeak-ng", "espeak-ng");
    let (port, log, _) = stand_in();
    let mut gw = gateway(port);
    let run = press(&gw, "2");
    assert!(run.ok(), "{}", run.describe());
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "exactly one SMS: {seen:?}");
    let sms = &seen[0];
    assert_eq!(sms.path, "twilio/AC0123456789abcdef");
    assert_eq!(
        sms.headers.get("content-type").map(String::as_str),
        Some("application/x-www-form-urlencoded")
    );
    // Basic base64("AC0123456789abcdef:secret-token").
    assert_eq!(
        sms.headers.get("authorization").map(String::as_str),
        Some("Basic QUMwMTIzNDU2Nzg5YWJjZGVmOnNlY3JldC10b2tlbg==")
    );
    let f = form(&sms.body);
    assert_eq!(
        f.get("To").map(String::as_str),
        Some("+15551234567"),
        "the caller's number"
    );
    assert_eq!(f.get("From").map(String::as_str), Some("+15550100000"));
    assert!(
        f.get("Body").is_some_and(|b| b.contains("SMS que pidió")),
        "{f:?}"
    );

    let log = gw.log();
    let order: Vec<&str> = [
        "node=bienvenida",
        "node=menu",
        "node=sms",
        "node=sms_ok",
        "node=despedida",
    ]
    .into_iter()
    .collect();
    let mut at = 0;
    for n in order {
        let pos = log[at..]
            .find(n)
            .unwrap_or_else(|| panic!("{n} after {at}:\n{log}"));
        at += pos;
    }
    // The goodbye plays in full before the BYE: seconds, not milliseconds.
    let goodbye = line_time(&log, "node=despedida");
    let ended = line_time(&log, "call ended");
    assert!(
        ended - goodbye > 1.5,
        "BYE {:.2}s after the goodbye began",
        ended - goodbye
    );
    // Phone numbers never appear whole in the logs.
    assert!(!log.contains("15551234567"), "unmasked number in logs");

    let (_, metrics) = gw.http_get("/metrics");
    assert_eq!(
        metric(
            &metrics,
            "crossline_provider_sends_total",
            &[
                r#"channel="sms""#,
                r#"provider="twilio""#,
                r#"status="sent""#
            ]
        ),
        Some(1.0),
        "{metrics}"
    );
    // The send is on record, with the whole number (the logs mask it).
    let (rows, calls) = stop_and_read_sends(&mut gw);
    assert_eq!(only_send(&rows, &calls), "sms");
    let row = &rows[0];
    assert_eq!(row.status, "sent");
    assert_eq!(
        (row.channel.as_str(), row.provider.as_str()),
        ("sms", "twilio")
    );
    assert_eq!(row.provider_id.as_deref(), Some(TWILIO_SID));
    assert_eq!(row.attempts, Some(1));
    assert_eq!((row.error_kind.as_deref(), row.error_code), (None, None));
}

/// Twilio refuses the number (400, error 21211): the flow takes `on_error`,
/// the 4xx is not retried, and the failure is on record with its code.
#[test]
fn callbot_records_a_refused_sms_and_takes_on_error() {
    require("espeak-ng", "espeak-ng");
    let (port, log, twilio_answer) = stand_in();
    *twilio_answer.lock().unwrap() = Some((
        400,
        r#"{"code": 21211, "message": "The 'To' number +15551234567 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#
            .to_string(),
    ));
    let mut gw = gateway(port);
    let run = press(&gw, "2");
    assert!(run.ok(), "{}", run.describe());
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "a 4xx is never retried: {seen:?}");
    let text = gw.log();
    let sms = text.find("node=sms ").unwrap_or_else(|| panic!("{text}"));
    assert!(text[sms..].contains("node=error"), "{text}");
    assert!(!text.contains("node=sms_ok"), "{text}");
    // Twilio's message names the number: the log shows it masked only.
    assert!(!text.contains("15551234567"), "unmasked number in logs");

    let (_, metrics) = gw.http_get("/metrics");
    assert_eq!(
        metric(
            &metrics,
            "crossline_provider_sends_total",
            &[
                r#"channel="sms""#,
                r#"provider="twilio""#,
                r#"status="failed""#
            ]
        ),
        Some(1.0),
        "{metrics}"
    );
    let (rows, calls) = stop_and_read_sends(&mut gw);
    assert_eq!(only_send(&rows, &calls), "sms");
    let row = &rows[0];
    assert_eq!(row.status, "failed");
    assert_eq!(row.error_code, Some(21211));
    assert_eq!(row.error_kind.as_deref(), Some("invalid_recipient"));
    assert_eq!(row.provider_id, None);
}

/// Menu option 3: a WhatsApp template through the Cloud API stand-in, its
/// header, named body parameters and buttons filled from the call's
/// variables, exactly as the Cloud API documents the request.
#[test]
fn callbot_sends_whatsapp_template_to_the_caller() {
    require("espeak-ng", "espeak-ng");
    let (port, log, _) = stand_in();
    let mut gw = gateway(port);
    let run = press(&gw, "3");
    assert!(run.ok(), "{}", run.describe());
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let wa = &seen[0];
    assert_eq!(wa.path, "whatsapp/106540352242922");
    assert_eq!(
        wa.headers.get("authorization").map(String::as_str),
        Some("Bearer wa-token")
    );
    assert!(gw.log().contains("node=whatsapp_ok"));

    let (rows, calls) = stop_and_read_sends(&mut gw);
    assert_eq!(only_send(&rows, &calls), "whatsapp");
    let call_id = &calls[0];
    let body: serde_json::Value = serde_json::from_str(&wa.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "15551234567",
            "type": "template",
            "template": {
                "name": "seguimiento_llamada",
                "language": { "code": "es" },
                "components": [
                    {
                        "type": "header",
                        "parameters": [{
                            "type": "document",
                            "document": {
                                "link": "https://example.com/guias/atencion.pdf",
                                "filename": "guia.pdf"
                            }
                        }]
                    },
                    {
                        "type": "body",
                        "parameters": [
                            { "type": "text", "parameter_name": "numero", "text": "+15551234567" },
                            { "type": "text", "parameter_name": "referencia", "text": call_id }
                        ]
                    },
                    {
                        "type": "button",
                        "sub_type": "quick_reply",
                        "index": "0",
                        "parameters": [{ "type": "payload", "payload": format!("llamar-{call_id}") }]
                    },
                    {
                        "type": "button",
                        "sub_type": "url",
                        "index": "1",
                        "parameters": [{ "type": "text", "text": call_id }]
                    }
                ]
            }
        })
    );
    let row = &rows[0];
    assert_eq!(row.status, "sent");
    assert_eq!(
        (row.channel.as_str(), row.provider.as_str()),
        ("whatsapp", "whatsapp")
    );
    assert_eq!(row.provider_id.as_deref(), Some(WAMID));
    assert_eq!(row.attempts, Some(1));
}

const APP_SECRET: &str = "meta-app-secret-for-flow-tests";
const WRITER: &str = "+34612345678";
const STRANGER: &str = "+34600000002";

/// WhatsApp requests the stand-in saw for `to` (E.164), as JSON.
fn whatsapp_to(log: &Log, to: &str) -> Vec<serde_json::Value> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.path.starts_with("whatsapp/"))
        .map(|s| serde_json::from_str::<serde_json::Value>(&s.body).unwrap())
        .filter(|b| b["to"] == to.trim_start_matches('+'))
        .collect()
}

fn wait_whatsapp_to(log: &Log, to: &str, count: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let sent = whatsapp_to(log, to);
        if sent.len() >= count {
            return sent;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count} WhatsApp message(s) to {to} expected; sent: {sent:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the bot of a new web chat says, read over its WebSocket.
fn web_chat_says(gw: &Gateway) -> String {
    let (id, cookies) = common::chat::open_chat(gw);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut ws = common::chat::connect(gw, &id, &cookies).await;
        common::chat::send(&mut ws, serde_json::json!({"type": "resume", "after": 0})).await;
        let said = common::chat::next(&mut ws).await;
        said["text"].as_str().unwrap_or_default().to_string()
    })
}

/// Free-form WhatsApp text goes out only inside the 24 h window: a web
/// chat's follow-up is held back (on_error, `outside_window`, no request)
/// until the number writes to us through the signed webhook; the reply to
/// that message goes out, a text to a number that never wrote falls back
/// to a template; and the window is still open after a restart.
#[test]
fn whatsapp_text_only_inside_the_24_hour_window() {
    let (port, log, _) = stand_in();
    let mut gw = Gateway::start(&format!(
        "[flows]\ndir = \"{flows}\"\n\n\
         [chat]\nweb_flow = \"wa-web\"\nwhatsapp_flow = \"wa-reply\"\n\n\
         [messaging.whatsapp]\nbase_url = \"http://127.0.0.1:{port}\"\napi_version = \"v21.0\"\nphone_number_id = \"106540352242922\"\naccess_token = \"wa-token\"\napp_secret = \"{APP_SECRET}\"\n",
        flows = repo().join("tests/flows/whatsapp").display(),
    ));
    let text_to = |to: &str, body: &str| {
        serde_json::json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to.trim_start_matches('+'),
            "type": "text",
            "text": { "body": body }
        })
    };

    // Nobody wrote yet: held back, and the provider never asked.
    assert_eq!(web_chat_says(&gw), "not sent: outside_window");
    assert_eq!(whatsapp_to(&log, WRITER), Vec::<serde_json::Value>::new());

    // The number writes; the flow it starts replies with free text.
    let hello = post_whatsapp(
        &gw,
        APP_SECRET,
        "wamid.HBgLMzQ2MTIzNDU2NzgVAgASGBQ",
        WRITER,
        "hola",
    );
    assert_eq!(hello.status, 200, "{}", hello.body);
    assert_eq!(
        wait_whatsapp_to(&log, WRITER, 1),
        [text_to(WRITER, "Gracias por escribir: hola")]
    );
    // The stranger gets the fallback template, never the text.
    let fallback = wait_whatsapp_to(&log, STRANGER, 1);
    assert_eq!(
        fallback,
        [serde_json::json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "34600000002",
            "type": "template",
            "template": {
                "name": "retomar_conversacion",
                "language": { "code": "es" },
                "components": [{
                    "type": "body",
                    "parameters": [{ "type": "text", "text": "outside_window" }]
                }]
            }
        })]
    );

    // Now the web chat's follow-up goes out.
    assert_eq!(web_chat_says(&gw), "sent");
    let follow_up = text_to(WRITER, "Seguimos por WhatsApp.");
    assert_eq!(wait_whatsapp_to(&log, WRITER, 2)[1], follow_up);
    let (_, metrics) = gw.http_get("/metrics");
    assert_eq!(
        metric(&metrics, "crossline_whatsapp_outside_window_total", &[]),
        Some(2.0),
        "{metrics}"
    );

    // After a restart the window is read back from the store.
    gw.stop_and_restart();
    assert_eq!(web_chat_says(&gw), "sent");
    assert_eq!(wait_whatsapp_to(&log, WRITER, 3)[2], follow_up);
    assert_eq!(whatsapp_to(&log, STRANGER).len(), 1);

    // Every send is on record, the held-back ones with their reason.
    let (rows, _) = stop_and_read_sends(&mut gw);
    let summary: Vec<(String, String, String, Option<String>)> = rows
        .iter()
        .map(|r| {
            (
                r.node.clone().unwrap_or_default(),
                r.recipient.clone(),
                r.status.clone(),
                r.error_kind.clone(),
            )
        })
        .collect();
    let row = |node: &str, to: &str, status: &str, kind: Option<&str>| {
        (
            node.to_string(),
            to.to_string(),
            status.to_string(),
            kind.map(str::to_string),
        )
    };
    assert_eq!(
        summary,
        [
            row("follow_up", WRITER, "failed", Some("outside_window")),
            row("reply", WRITER, "sent", None),
            row("stranger", STRANGER, "failed", Some("outside_window")),
            row("fallback", STRANGER, "sent", None),
            row("follow_up", WRITER, "sent", None),
            row("follow_up", WRITER, "sent", None),
        ]
    );
    assert!(rows
        .iter()
        .filter(|r| r.status == "failed")
        .all(|r| r.provider_id.is_none() && r.error_code.is_none()));
    assert_no_pii(&gw.log(), &[WRITER, STRANGER]);
}

/// Seconds since midnight of the first log line containing `needle`.
fn line_time(log: &str, needle: &str) -> f64 {
    let line = log
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle}"));
    // 2026-11-22T05:04:28.427386Z ...
    let t = line
        .split('T')
        .nth(1)
        .and_then(|r| r.split('Z').next())
        .unwrap();
    let mut parts = t.split(':');
    let h: f64 = parts.next().unwrap().parse().unwrap();
    let m: f64 = parts.next().unwrap().parse().unwrap();
    let s: f64 = parts.next().unwrap().parse().unwrap();
    h * 3600.0 + m * 60.0 + s
}

/// What `crossline check` said about some flow files.
struct Checked {
    _dir: tempfile::TempDir,
    flows: std::path::PathBuf,
    config: std::path::PathBuf,
    code: Option<i32>,
    stderr: String,
}

impl Checked {
    /// A flow file's path as `check` names it.
    fn file(&self, name: &str) -> String {
        self.flows.join(name).display().to_string()
    }
}

/// `crossline check` on a config whose `[flows] dir` holds `files`;
/// `extra` follows that line in the config.
fn check_flows(files: &[(&str, &str)], extra: &str) -> Checked {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    for (name, text) in files {
        std::fs::write(flows.join(name), text).unwrap();
    }
    let config = dir.path().join("crossline.toml");
    std::fs::write(
        &config,
        format!("[flows]\ndir = \"{}\"\n{extra}", flows.display()),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crossline"))
        .arg("check")
        .arg(&config)
        .output()
        .unwrap();
    Checked {
        _dir: dir,
        flows,
        config,
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `crossline check` rejects broken flows with exact messages: file, line,
/// node id and what is wrong.
#[test]
fn check_rejects_broken_flows_with_exact_messages() {
    let checked = check_flows(
        &[(
            "bad.toml",
            r#"name = "bad"

[[nodes]]
id = "start"
type = "say"
text = "Hello"
next = "nowhere"

[[nodes]]
id = "menu"
type = "gather"
max_digits = "two"

[[nodes]]
id = "lost"
type = "play"
file = "missing.wav"

[[nodes]]
id = "x"
type = "teleport"

[[nodes]]
id = "typo"
type = "say"
txet = "oops"

[[nodes]]
id = "nap"
type = "pause"
secs = true
"#,
        )],
        &format!(
            "\n[media]\naudio_dir = \"{}\"\n",
            repo().join("audio").display()
        ),
    );
    assert_eq!(checked.code, Some(1));
    let f = checked.file("bad.toml");
    let audio = repo().join("audio").display().to_string();
    let expected = format!(
        "{f}:3:1: node \"start\".next: no node \"nowhere\" in this flow\n\
         {f}:12:14: node \"menu\".max_digits: invalid type: string \"two\", expected u32\n\
         {f}:14:1: node \"lost\".file: audio file not found: {audio}/missing.wav\n\
         {f}:14:1: node \"lost\": unreachable from the start node \"start\"\n\
         {f}:21:8: node \"x\".type: unknown node type \"teleport\"; one of say, play, pause, gather, branch, set, http, send_sms, send_whatsapp, transfer, hangup, breakout, message, ask, choice, breakout_return, handoff, save_lead, escalate_to_call, send_digits, stream, record, webhook_app, queue\n\
         {f}:26:1: node \"typo\".txet: unknown field `txet`, expected one of `id`, `type`, `text`, `language`, `voice`, `rate_wpm`, `next`\n\
         {f}:31:8: node \"nap\".secs: invalid type: boolean `true`, expected f64\n\
         {config}: 7 error(s)\n",
        config = checked.config.display()
    );
    assert_eq!(checked.stderr, expected);
}

/// `crossline check` refuses WhatsApp messages the Cloud API would refuse,
/// at their file and line: template and text together or neither, a bad
/// template name, no language, mixed named and positional parameters,
/// unknown component and parameter types, media without a link, currency
/// without a code, a button without its index or with the other sub_type's
/// parameter, more than 10 buttons.
#[test]
fn check_rejects_whatsapp_messages_the_cloud_api_would_refuse() {
    let checked = check_flows(
        &[(
            "bad.toml",
            r#"name = "bad-whatsapp"

[[nodes]]
id = "both"
type = "send_whatsapp"
template = "pedido"
language = "es"
text = "hola"
next = "neither"

[[nodes]]
id = "neither"
type = "send_whatsapp"
next = "name"

[[nodes]]
id = "name"
type = "send_whatsapp"
template = "Pedido-Listo"
next = "text_extras"

[[nodes]]
id = "text_extras"
type = "send_whatsapp"
text = "hola"
language = "es"
next = "mixed"

[[nodes]]
id = "mixed"
type = "send_whatsapp"
template = "pedido"
language = "es_es"
parameters = ["{{caller}}"]
next = "eleven"

[[nodes.components]]
type = "body"
parameters = [{ type = "text", parameter_name = "nombre", text = "Ana" }]

[[nodes.components]]
type = "header"
parameters = [{ type = "text", text = "Pedido" }]

[[nodes]]
id = "eleven"
type = "send_whatsapp"
template = "pedido"
language = "es"
components = [
  { type = "button", sub_type = "quick_reply", index = 0, parameters = [{ type = "payload", payload = "a" }] },
  { type = "button", sub_type = "quick_reply", index = 1, parameters = [{ type = "payload", payload = "b" }] },
  { type = "button", sub_type = "quick_reply", index = 2, parameters = [{ type = "payload", payload = "c" }] },
  { type = "button", sub_type = "quick_reply", index = 3, parameters = [{ type = "payload", payload = "d" }] },
  { type = "button", sub_type = "quick_reply", index = 4, parameters = [{ type = "payload", payload = "e" }] },
  { type = "button", sub_type = "quick_reply", index = 5, parameters = [{ type = "payload", payload = "f" }] },
  { type = "button", sub_type = "url", index = 6, parameters = [{ type = "text", text = "g" }] },
  { type = "button", sub_type = "url", index = 7, parameters = [{ type = "text", text = "h" }] },
  { type = "button", sub_type = "url", index = 8, parameters = [{ type = "text", text = "i" }] },
  { type = "button", sub_type = "url", index = 9, parameters = [{ type = "text", text = "j" }] },
  { type = "button", sub_type = "url", index = "9", parameters = [{ type = "text", text = "k" }] },
]

[[nodes]]
id = "footer"
type = "send_whatsapp"
template = "pedido"
language = "es"

[[nodes.components]]
type = "footer"

[[nodes]]
id = "no_link"
type = "send_whatsapp"
template = "pedido"
language = "es"
components = [
  { type = "header", parameters = [{ type = "document", document = { filename = "f.pdf" } }] },
]

[[nodes]]
id = "no_code"
type = "send_whatsapp"
template = "pedido"
language = "es"
components = [
  { type = "body", parameters = [
      { type = "currency", currency = { fallback_value = "12,50 €", amount_1000 = 12500 } },
  ] },
]

[[nodes]]
id = "location"
type = "send_whatsapp"
template = "pedido"
language = "es"
components = [
  { type = "header", parameters = [{ type = "location" }] },
]

[[nodes]]
id = "no_index"
type = "send_whatsapp"
template = "pedido"
language = "es"
components = [
  { type = "button", sub_type = "quick_reply", parameters = [{ type = "payload", payload = "si" }] },
]

[[nodes]]
id = "wrong_fields"
type = "send_whatsapp"
template = "pedido"
language = "es"
components = [
  { type = "button", sub_type = "url", index = 0, parameters = [{ type = "payload", payload = "si" }] },
]
"#,
        )],
        "",
    );
    assert_eq!(checked.code, Some(1));
    let f = checked.file("bad.toml");
    let expected = format!(
        "{f}:3:1: node \"both\".template: give exactly one of template (any time) and text (inside the 24 h window)\n\
         {f}:11:1: node \"neither\".template: give exactly one of template (any time) and text (inside the 24 h window)\n\
         {f}:16:1: node \"name\".template: \"Pedido-Listo\" is not a template name: lowercase letters, digits and _ only (at most 512)\n\
         {f}:16:1: node \"name\".language: a template needs its language code, e.g. \"es\" or \"en_US\"\n\
         {f}:22:1: node \"text_extras\".text: a text message takes no language, parameters or components\n\
         {f}:29:1: node \"mixed\".parameters: body parameters go either in `parameters` or in a body component, not both\n\
         {f}:29:1: node \"mixed\".language: \"es_es\" is not a template language code like \"es\" or \"en_US\"\n\
         {f}:29:1: node \"mixed\".components: header and body parameters must be all named (parameter_name) or all positional\n\
         {f}:45:1: node \"eleven\".components: 11 buttons; a template has at most 10\n\
         {f}:45:1: node \"eleven\".components: two buttons with index 9\n\
         {f}:70:1: node \"footer\": unknown component type \"footer\"; header, body or button\n\
         {f}:78:14: node \"no_link\".components: parameters[0]: document header without a link\n\
         {f}:87:14: node \"no_code\".components: parameters[0]: currency needs a code (ISO 4217, e.g. \"EUR\")\n\
         {f}:98:14: node \"location\".components: parameters[0]: unknown parameter type \"location\"; one of text, currency, date_time, image, video, document or payload\n\
         {f}:107:14: node \"no_index\".components: a button needs its index (0 to 9)\n\
         {f}:116:14: node \"wrong_fields\".components: parameters[0]: a url button takes a text parameter (the URL's suffix), not payload\n\
         {config}: 16 error(s)\n",
        config = checked.config.display()
    );
    assert_eq!(checked.stderr, expected);
}

/// Voice and chat don't mix: a chat node in a voice flow, a breakout whose
/// chat flow is missing or is a voice flow, a route to a chat flow, and
/// `[chat] web_flow` naming a voice flow are all refused by `check`.
#[test]
fn check_rejects_voice_and_chat_mixups() {
    let files = [
        (
            "voice.toml",
            r#"name = "voice"

[[nodes]]
id = "out"
type = "breakout"
sms_message = "Here:"
breakout_flow = "nope"
timeout_flow = "chatty"
"#,
        ),
        (
            "chatty.toml",
            r#"name = "chatty"
channel = "chat"

[[nodes]]
id = "hi"
type = "message"
text = "Hello"
"#,
        ),
        (
            "mixed.toml",
            r#"name = "mixed"
channel = "chat"

[[nodes]]
id = "hi"
type = "say"
text = "Hello"
next = "ask"

[[nodes]]
id = "ask"
type = "ask"
text = "Email?"
"#,
        ),
        (
            "mixed-voice.toml",
            r#"name = "mixed-voice"

[[nodes]]
id = "ask"
type = "ask"
text = "Email?"
"#,
        ),
    ];
    let checked = check_flows(
        &files,
        "\n[chat]\nweb_flow = \"voice\"\n\n[[routes]]\nflow = \"chatty\"\n",
    );
    assert_eq!(checked.code, Some(1));
    let stderr = &checked.stderr;
    let f = |name: &str| checked.file(name);
    let c = checked.config.display().to_string();
    for want in [
        format!("{}:4:1: node \"hi\".type: say nodes can't run in a chat flow (set channel = \"voice\" at the top?)", f("mixed.toml")),
        format!("{}:3:1: node \"ask\".type: ask nodes can't run in a voice flow (set channel = \"chat\" at the top?)", f("mixed-voice.toml")),
        format!("{}:3:1: node \"out\".breakout_flow: no flow named \"nope\"", f("voice.toml")),
        format!("{}:3:1: node \"out\".timeout_flow: flow \"chatty\" is a chat flow; this needs a voice flow", f("voice.toml")),
        format!("{c}:5:1: chat.web_flow: flow \"voice\" is a voice flow; chats need channel = \"chat\""),
        format!("{c}:8:1: routes[0].flow: flow \"chatty\" is a chat flow; calls need a voice flow"),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
    assert!(
        !stderr.contains("node \"ask\".type: ask nodes")
            || stderr.matches("ask nodes").count() == 1
    );
}

/// "You need the Breakout flow to end with Breakout: Return": `check`
/// refuses a breakout whose chat flow can end without returning (at the
/// breakout node's line, naming the chat flow and the node where it ends),
/// including a breakout inside a flow reached by `timeout_flow`, and a
/// breakout node inside a chat flow.
#[test]
fn check_requires_breakout_flows_to_return() {
    let files = [
        (
            "voice.toml",
            r#"name = "voice"

[[nodes]]
id = "out"
type = "breakout"
sms_message = "Here:"
breakout_flow = "gives-up"
timeout_flow = "later"
"#,
        ),
        (
            "later.toml",
            r#"name = "later"

[[nodes]]
id = "again"
type = "breakout"
sms_message = "One more time:"
breakout_flow = "hands-off"
"#,
        ),
        (
            "gives-up.toml",
            r#"name = "gives-up"
channel = "chat"

[[nodes]]
id = "email"
type = "ask"
input = "email"
var = "email"
text = "Email?"
next = "ret"
on_failure = "sorry"

[[nodes]]
id = "ret"
type = "breakout_return"
vars = ["email"]

[[nodes]]
id = "sorry"
type = "message"
text = "Sorry, we could not read that."
"#,
        ),
        (
            "hands-off.toml",
            r#"name = "hands-off"
channel = "chat"

[[nodes]]
id = "pick"
type = "choice"
text = "Return or talk to someone?"
choices = [{ label = "Return", value = "r", next = "ret" }, { label = "Human", value = "h", next = "human" }]
on_failure = "ret"

[[nodes]]
id = "ret"
type = "breakout_return"
vars = ["pick"]

[[nodes]]
id = "human"
type = "handoff"
"#,
        ),
        (
            "returns.toml",
            r#"name = "returns"
channel = "chat"

[[nodes]]
id = "ret"
type = "breakout_return"
vars = ["x"]
"#,
        ),
        (
            "nested.toml",
            r#"name = "nested"
channel = "chat"

[[nodes]]
id = "inner"
type = "breakout"
sms_message = "Chat in a chat:"
breakout_flow = "returns"
"#,
        ),
        (
            "fine.toml",
            r#"name = "fine"

[[nodes]]
id = "ok"
type = "breakout"
sms_message = "Here:"
breakout_flow = "returns"
"#,
        ),
    ];
    let checked = check_flows(&files, "");
    assert_eq!(checked.code, Some(1));
    let stderr = &checked.stderr;
    let f = |name: &str| checked.file(name);
    for want in [
        format!("{}:3:1: node \"out\".breakout_flow: chat flow \"gives-up\" can end at node \"sorry\" without reaching breakout_return", f("voice.toml")),
        format!("{}:3:1: node \"again\".breakout_flow: chat flow \"hands-off\" can end at node \"human\" without reaching breakout_return", f("later.toml")),
        format!("{}:4:1: node \"inner\".type: breakout nodes can't run in a chat flow", f("nested.toml")),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
    assert!(
        !stderr.contains("node \"ok\""),
        "a chat flow that always returns passes:\n{stderr}"
    );
    assert_eq!(
        stderr.matches("without reaching breakout_return").count(),
        2
    );
}

/// `send_digits` reaches the caller's side: RFC 4733 events when the
/// caller offered telephone-event (decoded from the capture, in order, with
/// the `,` pause between `#` and `2`), SIP INFO `application/dtmf-relay`
/// when it didn't (the SIPp scenario checks each digit).
#[test]
fn send_digits_reach_the_caller_by_rfc4733_or_info() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dial.toml"),
        r#"name = "dial"

[[nodes]]
id = "ext"
type = "send_digits"
digits = "1#,2"
next = "bye"

[[nodes]]
id = "bye"
type = "hangup"
"#,
    )
    .unwrap();
    let gw = Gateway::start(&format!(
        "[flows]\ndir = \"{}\"\n\n[[routes]]\nflow = \"dial\"\n",
        dir.path().display()
    ));
    let capture = capture_call(
        &gw,
        &[
            "-sf",
            &scenario("uac_wait_bye.xml"),
            &gw.sip_addr(),
            "-m",
            "1",
        ],
        &[
            "frame.time_epoch",
            "rtp.p_type",
            "rtpevent.event_id",
            "rtpevent.end_of_event",
        ],
    );
    assert!(capture.run.ok(), "{}", capture.run.describe());
    // (event, first packet time, last packet time), in order.
    let mut events: Vec<(String, f64, f64)> = Vec::new();
    for r in capture.rows.iter().filter(|r| r[1] == "101") {
        let t: f64 = r[0].parse().unwrap();
        match events.last_mut() {
            Some(e) if e.0 == r[2] => e.2 = t,
            _ => events.push((r[2].clone(), t, t)),
        }
    }
    let ids: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(ids, ["1", "11", "2"], "1, # (11), 2 as RFC 4733 events");
    let pause = events[2].1 - events[1].2;
    assert!(
        (0.35..1.5).contains(&pause),
        "the comma pauses about half a second: {pause:.3} s"
    );
    assert!(
        capture.rows.iter().any(|r| r[1] == "101" && r[3] == "1"),
        "events carry their end bit"
    );
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_info_digits.xml"),
            &gw.sip_addr(),
            "-m",
            "1",
        ],
        Duration::from_secs(60),
    );
    assert!(run.ok(), "INFO digits: {}", run.describe());
}

/// The same digits heard by PJSIP (pjsua2), the SIP stack inside many
/// softphones and PBXs: once as RFC 4733 events, and once, with
/// telephone-event stripped from its offer, as SIP INFO.
#[test]
fn send_digits_reach_pjsua2_by_rfc4733_or_info() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dial.toml"),
        "name = \"dial\"\n\n[[nodes]]\nid = \"ext\"\ntype = \"send_digits\"\ndigits = \"1#,2\"\nnext = \"bye\"\n\n[[nodes]]\nid = \"bye\"\ntype = \"hangup\"\n",
    )
    .unwrap();
    let gw = Gateway::start(&format!(
        "[flows]\ndir = \"{}\"\n\n[[routes]]\nflow = \"dial\"\n",
        dir.path().display()
    ));
    let target = format!("sip:1000@{}", gw.sip_addr());
    for method in ["rfc4733", "info"] {
        let out = peers::run_script(
            "pjsua2",
            "pjsua_digits.py",
            &[&target, method, "20"],
            Duration::from_secs(40),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        // `digit <d> <method> <seconds>`, in arrival order.
        let digits: Vec<(String, String, f64)> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("digit "))
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f[0].to_string(), f[1].to_string(), f[2].parse().unwrap())
            })
            .collect();
        let heard: Vec<&str> = digits.iter().map(|d| d.0.as_str()).collect();
        assert_eq!(
            heard,
            ["1", "#", "2"],
            "{method}: pjsua2 printed:\n{stdout}"
        );
        assert!(
            digits.iter().all(|d| d.1 == method),
            "every digit came by {method}: {digits:?}"
        );
        let pause = digits[2].2 - digits[1].2;
        assert!(
            (0.5..1.6).contains(&pause),
            "{method}: the comma adds about half a second: {pause:.3} s"
        );
        assert!(
            stdout.contains("state DISCONNECTED 200"),
            "{method}: the flow hangs up after the digits:\n{stdout}"
        );
    }
}

/// Every control node on one real call: `set`, `http` (custom header, JSON
/// body template, response fields mapped), `branch`, an `http` failure
/// retried then taken to `on_error`, a `gather` that hears nothing, asks
/// again and gives up (`on_failure`), `send_sms` with what the flow
/// learnt, a looped `play` cut at `duration_secs`, and the end of the flow
/// hanging up.
#[test]
fn a_call_tours_the_control_nodes() {
    let (port, log, _) = stand_in();
    let dir = tempfile::tempdir().unwrap();
    let flow = std::fs::read_to_string(repo().join("tests/flows/tour/tour.toml"))
        .unwrap()
        .replace("HOOK", &format!("http://127.0.0.1:{port}"));
    std::fs::write(dir.path().join("tour.toml"), flow).unwrap();
    let mut gw = Gateway::start(&format!(
        "[flows]\ndir = \"{flows}\"\n\n\
         [messaging.sms]\nprovider = \"twilio\"\nbase_url = \"http://127.0.0.1:{port}\"\naccount_sid = \"AC0123456789abcdef\"\nauth_token = \"secret-token\"\nfrom = \"+15550100000\"\n\n\
         [[routes]]\nflow = \"node-tour\"\n",
        flows = dir.path().display(),
    ));
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_wait_bye.xml"),
            &gw.sip_addr(),
            "-s",
            "4000",
            "-m",
            "1",
        ],
        Duration::from_secs(60),
    );
    assert!(run.ok(), "the flow's end hangs up: {}", run.describe());
    let seen = log.lock().unwrap().clone();
    let lookup = seen
        .iter()
        .find(|x| x.path == "lookup/tier")
        .expect("the http node called the lookup");
    assert_eq!(
        lookup.headers.get("x-api-key").map(String::as_str),
        Some("tour-key-123")
    );
    let body: serde_json::Value = serde_json::from_str(&lookup.body).unwrap();
    assert_eq!(body["caller"], "+15551234567");
    assert_eq!(body["greeting"], "hi +15551234567", "set ran before http");
    let sms = seen
        .iter()
        .find(|x| x.path.starts_with("twilio/"))
        .expect("the report SMS");
    let text = form(&sms.body).get("Body").cloned().unwrap_or_default();
    assert!(
        text.starts_with("tier=gold account=A-17 plan=tour down_failed="),
        "{text}"
    );
    assert!(
        text.len() > "tier=gold account=A-17 plan=tour down_failed=".len(),
        "the error is kept: {text}"
    );

    let log = gw.log();
    assert!(
        !log.contains("node=wrong_turn"),
        "a wrong branch ran:\n{log}"
    );
    let mut at = 0;
    for n in [
        "node=start",
        "node=lookup",
        "node=route",
        "node=down",
        "node=menu",
        "node=report",
        "node=music",
    ] {
        at += log[at..]
            .find(n)
            .unwrap_or_else(|| panic!("{n} missing or out of order:\n{log}"));
    }
    // The failing http node tried twice; the gather asked twice (1 s each)
    // before giving up; the looped music lasted its 1.5 s, then BYE.
    assert!(log.contains("http node failed"), "{log}");
    let menu = line_time(&log, "node=menu");
    let report = line_time(&log, "node=report");
    assert!(
        (1.8..6.0).contains(&(report - menu)),
        "gather gave up after {:.2}s",
        report - menu
    );
    let music = line_time(&log, "node=music");
    let ended = line_time(&log, "call ended");
    assert!(
        (1.3..4.0).contains(&(ended - music)),
        "music for {:.2}s",
        ended - music
    );
    let metrics = gw.http_get("/metrics").1;
    assert_eq!(
        metric(
            &metrics,
            "crossline_flow_nodes_total",
            &["flow=\"node-tour\"", "type=\"branch\""]
        ),
        Some(1.0),
        "each transition is counted"
    );
    gw.signal(libc::SIGTERM);
    let _ = gw.wait_exit(Duration::from_secs(10));
}

/// SIGHUP reloads flows without dropping calls: a call in progress keeps
/// the version it started with, the next call gets the new one.
#[test]
fn a_reload_changes_new_calls_and_leaves_running_ones_alone() {
    let (port, log, _) = stand_in();
    let dir = tempfile::tempdir().unwrap();
    let write = |version: &str| {
        std::fs::write(
            dir.path().join("versioned.toml"),
            format!(
                "name = \"versioned\"\n\n[[nodes]]\nid = \"wait\"\ntype = \"pause\"\nsecs = 3.0\nnext = \"tell\"\n\n\
                 [[nodes]]\nid = \"tell\"\ntype = \"http\"\nmethod = \"POST\"\nurl = \"http://127.0.0.1:{port}/hook/{version}\"\nnext = \"bye\"\n\n\
                 [[nodes]]\nid = \"bye\"\ntype = \"hangup\"\n"
            ),
        )
        .unwrap();
    };
    write("v1");
    let config = format!(
        "[flows]\ndir = \"{}\"\n\n[[routes]]\nflow = \"versioned\"\n",
        dir.path().display()
    );
    let gw = Gateway::start(&config);
    let call = |gw: &Gateway| {
        let addr = gw.sip_addr();
        std::thread::spawn(move || {
            sipp(
                &["-sf", &scenario("uac_wait_bye.xml"), &addr, "-m", "1"],
                Duration::from_secs(30),
            )
        })
    };
    let first = call(&gw);
    gw.wait_for_log("node=wait", Duration::from_secs(5));
    write("v2");
    gw.signal(libc::SIGHUP);
    gw.wait_for_log("config reloaded", Duration::from_secs(5));
    let second = call(&gw);
    let (first, second) = (first.join().unwrap(), second.join().unwrap());
    assert!(
        first.ok(),
        "the running call survived the reload: {}",
        first.describe()
    );
    assert!(second.ok(), "{}", second.describe());
    let paths: Vec<String> = log.lock().unwrap().iter().map(|x| x.path.clone()).collect();
    assert_eq!(
        paths,
        ["hook/v1", "hook/v2"],
        "old flow for the old call, new for the new"
    );
}
