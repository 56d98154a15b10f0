//! Local stand-ins for the services we can't reach from here (Twilio, the
//! WhatsApp Cloud API) and a webhook sink, speaking their wire formats.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
    /// When it arrived (wall clock, to compare with the store's times).
    pub at: std::time::SystemTime,
}

pub type Log = Arc<Mutex<Vec<Seen>>>;

pub fn form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

pub fn decode(s: &str) -> String {
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
        at: std::time::SystemTime::now(),
    });
}

/// What the Twilio stand-in answers instead of its 201: (status, JSON body).
pub type TwilioAnswer = Arc<Mutex<Option<(u16, String)>>>;

#[derive(Clone)]
struct StandIn {
    log: Log,
    twilio_answer: TwilioAnswer,
}

pub const TWILIO_SID: &str = "SM0123456789abcdef0123456789abcdef";
pub const WAMID: &str = "wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI";

/// Twilio's Messages resource and the WhatsApp Cloud API messages endpoint,
/// answering as they document, plus `/hook/...` for flows' http nodes
/// (records the POST, answers `{}`). Set the returned `TwilioAnswer` to
/// make Twilio refuse.
pub fn stand_in() -> (u16, Log, TwilioAnswer) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let twilio_answer: TwilioAnswer = Arc::new(Mutex::new(None));
    let app = Router::new()
        .route(
            "/2010-04-01/Accounts/{sid}/Messages.json",
            post(
                |State(s): State<StandIn>, Path(sid): Path<String>, headers: HeaderMap, body: Bytes| async move {
                    record(&s.log, format!("twilio/{sid}"), &headers, &body).await;
                    let canned = s.twilio_answer.lock().unwrap().clone();
                    let (status, body) = match canned {
                        Some((status, body)) => (StatusCode::from_u16(status).unwrap(), body),
                        None => (
                            StatusCode::CREATED,
                            format!(r#"{{"sid":"{TWILIO_SID}","status":"queued"}}"#),
                        ),
                    };
                    (status, [("content-type", "application/json")], body)
                },
            ),
        )
        .route(
            "/v21.0/{phone_id}/messages",
            post(
                |State(s): State<StandIn>, Path(id): Path<String>, headers: HeaderMap, body: Bytes| async move {
                    record(&s.log, format!("whatsapp/{id}"), &headers, &body).await;
                    (
                        StatusCode::OK,
                        [("content-type", "application/json")],
                        format!(
                            r#"{{"messaging_product":"whatsapp","contacts":[{{"input":"15551234567","wa_id":"15551234567"}}],"messages":[{{"id":"{WAMID}"}}]}}"#
                        ),
                    )
                },
            ),
        )
        // A CRM lookup: answers JSON a flow's http node maps into variables.
        .route(
            "/lookup/{*rest}",
            post(
                |State(s): State<StandIn>, Path(rest): Path<String>, headers: HeaderMap, body: Bytes| async move {
                    record(&s.log, format!("lookup/{rest}"), &headers, &body).await;
                    (
                        StatusCode::OK,
                        [("content-type", "application/json")],
                        r#"{"tier": "gold", "account": {"id": "A-17", "since": 2019}}"#,
                    )
                },
            ),
        )
        .route(
            "/hook/{*rest}",
            post(
                |State(s): State<StandIn>, Path(rest): Path<String>, headers: HeaderMap, body: Bytes| async move {
                    record(&s.log, format!("hook/{rest}"), &headers, &body).await;
                    (StatusCode::OK, [("content-type", "application/json")], "{}")
                },
            ),
        )
        .with_state(StandIn {
            log: log.clone(),
            twilio_answer: twilio_answer.clone(),
        });
    (serve(app), log, twilio_answer)
}

/// Serve `app` on a free loopback port, on a thread of its own; the port.
pub fn serve(app: Router) -> u16 {
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
    port
}

/// Whether the stand-in saw a request for `path` (e.g. "hook/returned").
pub fn seen(log: &Log, path: &str) -> bool {
    log.lock().unwrap().iter().any(|s| s.path == path)
}

/// Wait until `pred` matches something the stand-in saw.
pub fn wait_seen(
    log: &Log,
    timeout: std::time::Duration,
    pred: impl Fn(&Seen) -> bool,
) -> Option<Seen> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(s) = log.lock().unwrap().iter().find(|s| pred(s)) {
            return Some(s.clone());
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The breakout link in the first SMS the Twilio stand-in got, and the
/// SMS's form fields.
pub fn sms_link(gw: &super::Gateway, log: &Log) -> (String, HashMap<String, String>) {
    let sms = wait_seen(log, std::time::Duration::from_secs(20), |s| {
        s.path.starts_with("twilio/")
    })
    .unwrap_or_else(|| {
        panic!(
            "no SMS reached the Twilio stand-in; gateway log:\n{}",
            gw.log()
        )
    });
    let fields = form(&sms.body);
    let body = fields.get("Body").cloned().unwrap_or_default();
    let link = body
        .split_whitespace()
        .find(|w| w.contains("/b/"))
        .unwrap_or_else(|| panic!("no link in the SMS: {body:?}"))
        .to_string();
    (link, fields)
}

/// A link's path on the gateway: `/b/<token>`.
pub fn link_path(link: &str) -> String {
    let (_, token) = link
        .split_once("/b/")
        .unwrap_or_else(|| panic!("not a breakout link: {link}"));
    format!("/b/{token}")
}

/// HMAC-SHA1, as Twilio signs its webhooks; computed here, apart from the
/// gateway's code, so a test signs and checks independently.
pub fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Lowercase hex HMAC-SHA256, as Meta and our own webhooks sign.
pub fn hmac_sha256_hex(key: &[u8], data: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Twilio's inbound SMS webhook, as Twilio sends it: its form fields, and
/// `X-Twilio-Signature` = base64(HMAC-SHA1(auth token, URL + sorted
/// name/value pairs)) over `webhook_url`. `key`: what to sign with (the
/// wrong one forges).
pub fn post_twilio_sms(
    gw: &super::Gateway,
    webhook_url: &str,
    key: &str,
    sid: &str,
    from: &str,
    to: &str,
    text: &str,
) -> super::HttpReply {
    use base64::Engine;
    let params: Vec<(&str, &str)> = vec![
        ("ToCountry", "US"),
        ("SmsMessageSid", sid),
        ("NumMedia", "0"),
        ("SmsSid", sid),
        ("SmsStatus", "received"),
        ("Body", text),
        ("FromCountry", "ES"),
        ("To", to),
        ("NumSegments", "1"),
        ("MessageSid", sid),
        ("AccountSid", "AC0123456789abcdef"),
        ("From", from),
        ("ApiVersion", "2010-04-01"),
    ];
    let mut sorted = params.clone();
    sorted.sort();
    let mut data = webhook_url.to_string();
    for (k, v) in &sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let signature = base64::engine::general_purpose::STANDARD
        .encode(hmac_sha1(key.as_bytes(), data.as_bytes()));
    let body = params
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    gw.http(
        "POST",
        "/hooks/twilio/sms",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-Twilio-Signature", &signature),
            ("I-Twilio-Idempotency-Token", sid),
        ],
        Some(&body),
    )
}

/// The WhatsApp Cloud API's message notification, signed as Meta signs it:
/// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, body)>`.
pub fn post_whatsapp(
    gw: &super::Gateway,
    key: &str,
    wamid: &str,
    from: &str,
    text: &str,
) -> super::HttpReply {
    let wa_id = from.trim_start_matches('+');
    let body = serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": { "display_phone_number": "15550100000", "phone_number_id": "106540352242922" },
                    "contacts": [{ "profile": { "name": "Ana" }, "wa_id": wa_id }],
                    "messages": [{
                        "from": wa_id, "id": wamid, "timestamp": "1764300000",
                        "type": "text", "text": { "body": text }
                    }]
                }
            }]
        }]
    })
    .to_string();
    let signature = format!(
        "sha256={}",
        hmac_sha256_hex(key.as_bytes(), body.as_bytes())
    );
    gw.http(
        "POST",
        "/hooks/whatsapp",
        &[
            ("Content-Type", "application/json"),
            ("X-Hub-Signature-256", &signature),
        ],
        Some(&body),
    )
}

/// SMS the gateway asked Twilio to send to `to`, in order.
pub fn sms_to(log: &Log, to: &str) -> Vec<HashMap<String, String>> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.path.starts_with("twilio/"))
        .map(|s| form(&s.body))
        .filter(|f| f.get("To").map(String::as_str) == Some(to))
        .collect()
}

pub fn wait_sms_to(
    log: &Log,
    to: &str,
    containing: &str,
    wait: std::time::Duration,
) -> HashMap<String, String> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        if let Some(f) = sms_to(log, to)
            .into_iter()
            .find(|f| f.get("Body").is_some_and(|b| b.contains(containing)))
        {
            return f;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no SMS to {to} containing {containing:?}; sent: {:?}",
            sms_to(log, to)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
