//! Flows end to end: the real binary runs the Spanish callbot from
//! deploy/flows, a SIPp caller picks a menu option with RFC 2833 DTMF, and
//! local stand-ins for Twilio and the WhatsApp Cloud API check each request
//! the way the real services would.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::*;

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

async fn record(log: &Log, path: String, headers: &HeaderMap, body: &Bytes) {
    log.lock().unwrap().push(Seen {
        path,
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: String::from_utf8_lossy(body).to_string(),
    });
}

/// Twilio's Messages resource and the WhatsApp Cloud API messages endpoint,
/// answering as they document.
fn stand_in() -> (u16, Log) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route(
            "/2010-04-01/Accounts/{sid}/Messages.json",
            post(
                |State(log): State<Log>, Path(sid): Path<String>, headers: HeaderMap, body: Bytes| async move {
                    record(&log, format!("twilio/{sid}"), &headers, &body).await;
                    (
                        StatusCode::CREATED,
                        [("content-type", "application/json")],
                        r#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued"}"#,
                    )
                },
            ),
        )
        .route(
            "/v21.0/{phone_id}/messages",
            post(
                |State(log): State<Log>, Path(id): Path<String>, headers: HeaderMap, body: Bytes| async move {
                    record(&log, format!("whatsapp/{id}"), &headers, &body).await;
                    (
                        StatusCode::OK,
                        [("content-type", "application/json")],
                        r#"{"messaging_product":"whatsapp","contacts":[{"input":"15551234567","wa_id":"15551234567"}],"messages":[{"id":"wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI"}]}"#,
                    )
                },
            ),
        )
        .with_state(log.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = axum::serve(l, app).await;
        });
    });
    (port, log)
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
    let (port, log) = stand_in();
    let gw = gateway(port);
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
}

/// Menu option 3: a WhatsApp template through the Cloud API stand-in.
#[test]
fn callbot_sends_whatsapp_template_to_the_caller() {
    require("espeak-ng", "espeak-ng");
    let (port, log) = stand_in();
    let gw = gateway(port);
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
    let body: serde_json::Value = serde_json::from_str(&wa.body).unwrap();
    assert_eq!(body["messaging_product"], "whatsapp");
    assert_eq!(body["to"], "15551234567");
    assert_eq!(body["type"], "template");
    assert_eq!(body["template"]["name"], "seguimiento_llamada");
    assert_eq!(body["template"]["language"]["code"], "es");
    assert_eq!(
        body["template"]["components"][0]["parameters"][0]["text"],
        "+15551234567"
    );
    assert!(gw.log().contains("node=whatsapp_ok"));
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

/// `crossline check` rejects broken flows with exact messages: file, line,
/// node id and what is wrong.
#[test]
fn check_rejects_broken_flows_with_exact_messages() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    std::fs::write(
        flows.join("bad.toml"),
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
"#,
    )
    .unwrap();
    let config = dir.path().join("crossline.toml");
    std::fs::write(
        &config,
        format!(
            "[media]\naudio_dir = \"{}\"\n\n[flows]\ndir = \"{}\"\n",
            repo().join("audio").display(),
            flows.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crossline"))
        .arg("check")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let f = flows.join("bad.toml").display().to_string();
    let audio = repo().join("audio").display().to_string();
    let expected = format!(
        "{f}:3:1: node \"start\".next: no node \"nowhere\" in this flow\n\
         {f}:12:14: node \"menu\".max_digits: invalid type: string \"two\", expected u32\n\
         {f}:14:1: node \"lost\".file: audio file not found: {audio}/missing.wav\n\
         {f}:14:1: node \"lost\": unreachable from the start node \"start\"\n\
         {f}:21:8: node \"x\".type: unknown node type \"teleport\"; one of say, play, pause, gather, branch, set, http, send_sms, send_whatsapp, hangup\n\
         {f}:26:1: node \"typo\".txet: unknown field `txet`, expected one of `id`, `type`, `text`, `language`, `voice`, `rate_wpm`, `next`\n\
         {config}: 6 error(s)\n",
        config = config.display()
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), expected);
}
