//! Chat switch end to end against the real binary: a visitor in headless
//! Chromium moves a live web chat to SMS or WhatsApp and back while an
//! operator watches and answers in the console (a second Chromium). The
//! provider stand-in records what we send; the tests post the providers'
//! signed webhooks (signatures computed here, independently of the
//! gateway's code) for the visitor's replies.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::browser::{artifacts_dir, Browser};
use common::standin::*;
use common::*;
use serde_json::{json, Value};

const OPERATOR_TOKEN: &str = "operator-token-for-switch-tests";
const TWILIO_AUTH: &str = "twilio-auth-token-for-tests";
/// The URL configured at Twilio: behind a proxy, not the local address.
const TWILIO_WEBHOOK_URL: &str = "https://chat.example.com/hooks/twilio/sms";
const APP_SECRET: &str = "meta-app-secret-for-tests";
const VERIFY_TOKEN: &str = "verify-token-for-tests";
const OUR_NUMBER: &str = "+15550100000";
/// The visitor's mobile, E.164; typed in national format in places
/// (`[chat] default_country = "ES"`).
const VISITOR: &str = "+34612345678";
const WAIT: Duration = Duration::from_secs(15);

struct Setup {
    gw: Gateway,
    log: Log,
    twilio: TwilioAnswer,
}

fn setup() -> Setup {
    let (port, log, twilio) = stand_in();
    let flows = repo().join("tests/flows/switch");
    let gw = Gateway::start(&format!(
        "[flows]\ndir = \"{flows}\"\n\n\
         [http]\noperator_token = \"{OPERATOR_TOKEN}\"\n\n\
         [chat]\ntitle = \"Example Co.\"\nweb_flow = \"support\"\ndefault_country = \"ES\"\n\n\
         [messaging.sms]\nprovider = \"twilio\"\nbase_url = \"http://127.0.0.1:{port}\"\naccount_sid = \"AC0123456789abcdef\"\nauth_token = \"{TWILIO_AUTH}\"\nfrom = \"{OUR_NUMBER}\"\nwebhook_url = \"{TWILIO_WEBHOOK_URL}\"\n\n\
         [messaging.whatsapp]\nbase_url = \"http://127.0.0.1:{port}\"\napi_version = \"v21.0\"\nphone_number_id = \"106540352242922\"\naccess_token = \"wa-token\"\napp_secret = \"{APP_SECRET}\"\nverify_token = \"{VERIFY_TOKEN}\"\nwelcome_template = \"conversation_moved\"\nwelcome_template_language = \"es\"\ncode_template = \"switch_code\"\n",
        flows = flows.display(),
    ));
    Setup { gw, log, twilio }
}

// ---- the providers' side -------------------------------------------------

/// Twilio's inbound SMS webhook to our number, signed with `key`.
fn post_sms(gw: &Gateway, key: &str, sid: &str, from: &str, text: &str) -> HttpReply {
    post_twilio_sms(gw, TWILIO_WEBHOOK_URL, key, sid, from, OUR_NUMBER, text)
}

fn wait_sms(log: &Log, to: &str, containing: &str) -> HashMap<String, String> {
    wait_sms_to(log, to, containing, WAIT)
}

/// The six-digit code in a text.
fn code_in(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap_or_else(|| panic!("no code in {text:?}"))
        .to_string()
}

/// The visitor proves they hold the phone: the code panel opens, and
/// the code that reached the phone is typed back.
fn visitor_types_code(visitor: &Browser, code: &str) {
    visitor.wait_js(
        "document.querySelector('#switch-error').textContent.includes('We sent a code')",
        WAIT,
        "the code panel",
    );
    visitor.type_into("#switch-phone", code);
    visitor.click("#switch-go");
}

/// WhatsApp messages the gateway sent, as the JSON bodies.
fn whatsapp_sent(log: &Log) -> Vec<Value> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.path.starts_with("whatsapp/"))
        .map(|s| serde_json::from_str(&s.body).unwrap())
        .collect()
}

/// The first WhatsApp message sent that `wanted` accepts, waiting for it.
fn wait_whatsapp(log: &Log, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(m) = whatsapp_sent(log).into_iter().find(|m| wanted(m)) {
            return m;
        }
        assert!(Instant::now() < deadline, "no WhatsApp message: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A WhatsApp free-text message with exactly this body.
fn whatsapp_text(body: &str) -> impl Fn(&Value) -> bool + '_ {
    move |m| m["type"] == "text" && m["text"]["body"] == body
}

/// The path of the web chat link in a text: `/w/<token>`.
fn link_path(text: &str) -> String {
    let token: String = text
        .split("/w/")
        .nth(1)
        .unwrap_or_else(|| panic!("no link in {text:?}"))
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    assert_eq!(token.len(), 22, "{text}");
    format!("/w/{token}")
}

// ---- the API -------------------------------------------------------------

fn api(gw: &Gateway, method: &str, path: &str, body: Option<&Value>) -> HttpReply {
    gw.api(OPERATOR_TOKEN, method, path, body)
}

fn conversation(gw: &Gateway, id: &str) -> Value {
    let r = api(gw, "GET", &format!("/v1/conversations/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// How many transcript entries carry exactly `text`.
fn count_text(gw: &Gateway, id: &str, text: &str) -> usize {
    conversation(gw, id)["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["text"] == text)
        .count()
}

/// Every transcript entry's text, in order.
fn transcript_texts(gw: &Gateway, id: &str) -> Vec<String> {
    conversation(gw, id)["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Each of `wanted` is in some entry of `entries`, one after another.
fn assert_in_order(entries: &[String], wanted: &[&str]) {
    let mut rest = entries.iter();
    for w in wanted {
        assert!(
            rest.any(|e| e.contains(w)),
            "{w:?} missing or out of order in {entries:#?}"
        );
    }
}

fn channels_of(gw: &Gateway, id: &str) -> Vec<String> {
    conversation(gw, id)["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["channel"].as_str().unwrap().to_string())
        .collect()
}

// ---- the two browsers ----------------------------------------------------

/// A JavaScript string literal.
fn js_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn visible(css: &str) -> String {
    format!(
        "(() => {{ const e = document.querySelector({}); return !!e && !e.closest('[hidden]') && e.getClientRects().length > 0; }})()",
        js_str(css)
    )
}

fn page_has(text: &str) -> String {
    format!("document.body.innerText.includes({})", js_str(text))
}

/// The visitor opens `/chat/`, gives a name and a phone number (kept as a
/// lead), and picks `choice` ("agent" or "done"). Returns the conversation id.
fn visitor_chats(b: &Browser, gw: &Gateway, choice: &str) -> String {
    b.goto(&format!("http://127.0.0.1:{}/chat/", gw.http_port));
    b.wait_js(&page_has("What's your name?"), WAIT, "the name prompt");
    b.type_into("#composer-input", "Ana");
    b.click("#composer-send");
    b.wait_js(
        &page_has("in case we get cut off"),
        WAIT,
        "the phone prompt",
    );
    b.type_into("#composer-input", "612 34 56 78");
    b.click("#composer-send");
    b.wait_js(
        &page_has("Shall I put you through"),
        WAIT,
        "the agent choice",
    );
    b.wait_js(
        &format!("!!document.querySelector('#choices button[data-value=\"{choice}\"]')"),
        WAIT,
        "the choice buttons",
    );
    b.click(&format!("#choices button[data-value=\"{choice}\"]"));
    let id = b.js("return document.querySelector('meta[name=crossline-conversation]').content");
    id.as_str().unwrap().to_string()
}

/// A visitor in a phone's browser who asked for an agent, and their
/// conversation's id.
fn visitor_waits_for_agent(gw: &Gateway) -> (Browser, String) {
    let visitor = Browser::phone();
    let id = visitor_chats(&visitor, gw, "agent");
    visitor.wait_js(&page_has("an agent will be with you"), WAIT, "the handoff");
    (visitor, id)
}

/// The visitor clicks "Switch to SMS/WhatsApp" and sends a number.
fn visitor_switches(visitor: &Browser, channel: &str, phone: &str) {
    let button = format!("#switch-{channel}");
    visitor.wait_js(&visible(&button), WAIT, "the switch button");
    visitor.click(&button);
    visitor.wait_js(&visible("#switch-panel"), WAIT, "the phone panel");
    visitor.type_into("#switch-phone", phone);
    visitor.click("#switch-go");
}

fn operator_logs_in(b: &Browser, gw: &Gateway) {
    b.sign_in_to_console(gw.http_port, OPERATOR_TOKEN);
}

fn badge_is(id: &str, channel: &str) -> String {
    format!("!!document.querySelector('#conversations li.conv[data-id=\"{id}\"] .badge[data-channel=\"{channel}\"]')")
}

fn operator_opens(b: &Browser, id: &str) {
    let row = format!("#conversations li.conv[data-id=\"{id}\"]");
    b.wait_js(
        &format!("!!document.querySelector({})", js_str(&row)),
        WAIT,
        "the conversation in the list",
    );
    b.click(&format!("{row} button"));
    b.wait_js(&page_has("What's your name?"), WAIT, "the transcript");
}

fn transcript_has(text: &str) -> String {
    format!(
        "document.querySelector('#transcript').innerText.includes({})",
        js_str(text)
    )
}

fn operator_replies(b: &Browser, text: &str) {
    b.type_into("#reply-text", text);
    b.click("#reply-send");
}

// ---- the tests -----------------------------------------------------------

/// Web → SMS with the default 10 s revert window, the visitor's SMS reply
/// in the console, duplicate and forged webhooks, the operator's answer by
/// SMS, then back to the web chat with the transcript running on.
#[test]
fn web_to_sms_reply_in_console_and_back_to_web() {
    let s = setup();
    let (visitor, id) = visitor_waits_for_agent(&s.gw);
    let operator = Browser::desktop();
    let shots = artifacts_dir("chat_switch");
    operator_logs_in(&operator, &s.gw);
    operator.wait_js(&badge_is(&id, "web"), WAIT, "a web badge");
    operator_opens(&operator, &id);
    operator.wait_js(&transcript_has("Ana"), WAIT, "the visitor's answers");
    operator.wait_js(
        "document.querySelector('#conn').dataset.state === 'open'",
        WAIT,
        "live updates",
    );

    // The visitor moves to SMS, typing the number in national format.
    visitor.wait_js(&visible("#switch-sms"), WAIT, "the SMS button");
    visitor.click("#switch-sms");
    visitor.wait_js(&visible("#switch-panel"), WAIT, "the phone panel");
    assert_eq!(
        visitor.js("return document.querySelector('#composer-input').disabled"),
        true,
        "the text area is blocked while the phone panel is open"
    );
    visitor.type_into("#switch-phone", "612 345 678");
    visitor.click("#switch-go");
    // One SMS, carrying the code: nothing moves until it is typed back.
    let welcome = wait_sms(&s.log, VISITOR, "Example Co.: your code is");
    assert_eq!(welcome["From"], OUR_NUMBER);
    assert_eq!(
        visitor.js("return document.body.dataset.channel"),
        "web",
        "no switch before the code"
    );
    visitor_types_code(&visitor, &code_in(&welcome["Body"]));
    let switched = Instant::now();
    visitor.wait_js("document.body.dataset.channel === 'sms'", WAIT, "SMS mode");
    visitor.wait_js(&visible("#switch-revert"), WAIT, "the Revert button");
    visitor.screenshot(&shots, "visitor-revert-offered");

    // The operator sees the badge change on the same live connection.
    operator.wait_js(&badge_is(&id, "sms"), WAIT, "an SMS badge");
    assert_eq!(
        operator.js("return document.querySelector('#conn').dataset.state"),
        "open"
    );

    // After the window: the chat says it moved, and Revert is gone.
    visitor.wait_js(
        &visible("#moved"),
        Duration::from_secs(20),
        "the moved notice",
    );
    let window = switched.elapsed();
    assert!(
        (Duration::from_secs(9)..=Duration::from_secs(11)).contains(&window),
        "Revert offered for {window:?}; switch_revert_secs is 10"
    );
    assert_eq!(
        visitor.js(&format!("return {}", visible("#switch-revert"))),
        false
    );
    assert!(
        visitor.text("#moved").contains("SMS"),
        "{}",
        visitor.text("#moved")
    );
    visitor.screenshot(&shots, "visitor-moved");

    // The visitor answers by SMS; Twilio posts the signed webhook.
    let reply = post_sms(
        &s.gw,
        TWILIO_AUTH,
        "SM00000000000000000000000000000001",
        VISITOR,
        "Hola, sigo por SMS",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.headers.contains("text/xml"),
        "TwiML answer: {}",
        reply.raw_headers
    );
    operator.wait_js(
        &transcript_has("Hola, sigo por SMS"),
        WAIT,
        "the SMS in the console",
    );

    // Twilio retries the same message: still one message.
    let again = post_sms(
        &s.gw,
        TWILIO_AUTH,
        "SM00000000000000000000000000000001",
        VISITOR,
        "Hola, sigo por SMS",
    );
    assert_eq!(again.status, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        count_text(&s.gw, &id, "Hola, sigo por SMS"),
        1,
        "a retried webhook is one message"
    );

    // Forged: signed with the wrong key, or not signed. Refused, not kept,
    // and its id not burnt: the genuine message with that id still lands.
    let forged_sid = "SM00000000000000000000000000000002";
    let forged = post_sms(
        &s.gw,
        "not-the-auth-token",
        forged_sid,
        VISITOR,
        "forged text",
    );
    assert_eq!(forged.status, 403, "{}", forged.body);
    let unsigned = s.gw.http(
        "POST",
        "/hooks/twilio/sms",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(&format!(
            "MessageSid={forged_sid}&From=%2B34612345678&Body=unsigned"
        )),
    );
    assert_eq!(unsigned.status, 403);
    assert_eq!(count_text(&s.gw, &id, "forged text"), 0);
    assert_eq!(count_text(&s.gw, &id, "unsigned"), 0);
    let genuine = post_sms(&s.gw, TWILIO_AUTH, forged_sid, VISITOR, "second SMS");
    assert_eq!(genuine.status, 200);
    operator.wait_js(&transcript_has("second SMS"), WAIT, "the genuine message");

    // The operator answers: it goes out by SMS.
    operator_replies(&operator, "Gracias Ana, te ayudo por aquí");
    let out = wait_sms(&s.log, VISITOR, "te ayudo por aquí");
    assert_eq!(out["Body"], "Gracias Ana, te ayudo por aquí");
    operator.wait_js(
        &transcript_has("te ayudo por aquí"),
        WAIT,
        "the reply in the transcript",
    );
    operator.screenshot(&shots, "console-sms");

    // Back to the web chat: the phone is told, the console follows.
    visitor.click("#continue-here");
    visitor.wait_js(
        "document.body.dataset.channel === 'web'",
        WAIT,
        "web mode again",
    );
    wait_sms(&s.log, VISITOR, "continues in the web chat");
    operator.wait_js(&badge_is(&id, "web"), WAIT, "the web badge again");
    assert_eq!(
        visitor.js("return document.querySelector('#composer-input').disabled"),
        false,
        "the text area is back"
    );
    // The transcript ran on: the SMS exchange is in the web chat too.
    visitor.wait_js(
        &page_has("Hola, sigo por SMS"),
        WAIT,
        "the SMS in the web chat",
    );
    visitor.wait_js(
        &page_has("te ayudo por aquí"),
        WAIT,
        "the agent's SMS in the web chat",
    );

    // Now the operator's words reach the web chat, and no SMS goes out.
    let texts_before = sms_to(&s.log, VISITOR).len();
    operator_replies(&operator, "¿Algo más?");
    visitor.wait_js(
        "[...document.querySelectorAll('.msg.agent')].some(m => m.textContent.includes('¿Algo más?'))",
        WAIT,
        "the agent's message in the web chat",
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        sms_to(&s.log, VISITOR).len(),
        texts_before,
        "no SMS while on the web"
    );
    assert_eq!(channels_of(&s.gw, &id), ["web", "sms", "web"]);
    visitor.screenshot(&shots, "visitor-back-on-web");
    // The visitor's number went out to the provider, never to the log.
    assert_no_pii(&s.gw.log(), &[VISITOR]);
}

/// A send that fails switches nothing; a bad number is refused with the
/// reason; Revert inside the window keeps the chat on the web and tells
/// the phone.
#[test]
fn failed_switch_then_revert_within_the_window() {
    let s = setup();
    let (visitor, id) = visitor_waits_for_agent(&s.gw);

    // Not a number anywhere: the server's numbering plan check says so.
    visitor.click("#switch-sms");
    visitor.wait_js(&visible("#switch-panel"), WAIT, "the phone panel");
    visitor.type_into("#switch-phone", "+34 000 000 000");
    visitor.click("#switch-go");
    visitor.wait_js(
        "document.querySelector('#switch-error').textContent.includes('country code')",
        WAIT,
        "the bad-number error",
    );

    // Twilio refuses the number: an error, and the chat stays on the web.
    *s.twilio.lock().unwrap() = Some((
        400,
        r#"{"code": 21211, "message": "The 'To' number +34612345678 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#.into(),
    ));
    visitor.type_into("#switch-phone", "+34 612 345 678");
    visitor.click("#switch-go");
    visitor.wait_js(
        "document.querySelector('#switch-error').textContent.includes('could not send')",
        WAIT,
        "the send error",
    );
    assert_eq!(visitor.js("return document.body.dataset.channel"), "web");
    assert_eq!(channels_of(&s.gw, &id), ["web"]);
    // Cancel unblocks the text area.
    visitor.click("#switch-cancel");
    visitor.wait_js(
        "!document.querySelector('#composer-input').disabled",
        WAIT,
        "the text area",
    );
    assert_eq!(
        visitor.js(&format!("return {}", visible("#switch-panel"))),
        false
    );

    // Now it goes through, and the visitor reverts at once.
    *s.twilio.lock().unwrap() = None;
    let texts_before = sms_to(&s.log, VISITOR).len();
    visitor.click("#switch-sms");
    visitor.type_into("#switch-phone", "+34 612 345 678");
    visitor.click("#switch-go");
    // The new code: the refused attempt's text reached the stand-in too.
    let deadline = Instant::now() + WAIT;
    while sms_to(&s.log, VISITOR).len() <= texts_before {
        assert!(Instant::now() < deadline, "no new code sent");
        std::thread::sleep(Duration::from_millis(50));
    }
    let code = sms_to(&s.log, VISITOR).pop().unwrap();
    visitor_types_code(&visitor, &code_in(&code["Body"]));
    visitor.wait_js(&visible("#switch-revert"), WAIT, "the Revert button");
    visitor.click("#switch-revert");
    visitor.wait_js(
        "document.body.dataset.channel === 'web'",
        WAIT,
        "back on the web",
    );
    visitor.wait_js(&page_has("Switch undone"), WAIT, "the undo notice");
    wait_sms(&s.log, VISITOR, "continues in the web chat");
    assert_eq!(channels_of(&s.gw, &id), ["web", "sms", "web"]);
    assert_eq!(visitor.js(&format!("return {}", visible("#moved"))), false);
}

/// The operator's visitor action command moves the chat to WhatsApp: the
/// visitor gives a number in the chat, the approved template goes out,
/// free text waits for the 24-hour window, which the visitor's reply opens.
#[test]
fn visitor_action_command_moves_the_chat_to_whatsapp() {
    let s = setup();
    let (visitor, id) = visitor_waits_for_agent(&s.gw);
    let operator = Browser::desktop();
    let shots = artifacts_dir("chat_switch");
    operator_logs_in(&operator, &s.gw);
    operator_opens(&operator, &id);

    operator.wait_js(
        "!document.querySelector('#ask-phone-whatsapp').disabled",
        WAIT,
        "the WhatsApp action",
    );
    operator.click("#ask-phone-whatsapp");
    visitor.wait_js(
        &page_has("continue by WhatsApp"),
        WAIT,
        "the operator's question",
    );
    visitor.type_into("#composer-input", "+34 612 345 678");
    visitor.click("#composer-send");

    // The first WhatsApp message is the approved authentication template
    // carrying the code, which the visitor types back.
    let template = wait_whatsapp(&s.log, "the code template", |m| m["type"] == "template");
    assert_eq!(template["to"], "34612345678");
    assert_eq!(template["template"]["name"], "switch_code");
    assert_eq!(template["template"]["language"]["code"], "es");
    let code = template["template"]["components"][0]["parameters"][0]["text"]
        .as_str()
        .expect("the code parameter")
        .to_string();
    visitor_types_code(&visitor, &code_in(&code));
    visitor.wait_js(
        "document.body.dataset.channel === 'whatsapp'",
        WAIT,
        "WhatsApp mode",
    );
    operator.wait_js(&badge_is(&id, "whatsapp"), WAIT, "a WhatsApp badge");
    // The number the visitor typed is masked in the transcript.
    assert_eq!(count_text(&s.gw, &id, "+34 612 345 678"), 0);

    // Free text before the visitor writes: outside the 24 h window.
    operator_replies(&operator, "Hola por WhatsApp");
    operator.wait_js(
        "document.querySelector('#reply-error').textContent.includes('24 hours')",
        WAIT,
        "the window error",
    );
    assert!(!whatsapp_sent(&s.log).iter().any(|m| m["type"] == "text"));

    // A forged notification is refused and changes nothing.
    let forged = post_whatsapp(
        &s.gw,
        "wrong-secret",
        "wamid.FORGED1",
        VISITOR,
        "forged hola",
    );
    assert_eq!(forged.status, 403);
    assert_eq!(count_text(&s.gw, &id, "forged hola"), 0);

    // The visitor writes on WhatsApp: into the same conversation, and the
    // window opens.
    let hello = post_whatsapp(
        &s.gw,
        APP_SECRET,
        "wamid.HBgLMzQ2MTIzNDU2NzgVAgASGBQ",
        VISITOR,
        "Hola, aquí estoy",
    );
    assert_eq!(hello.status, 200, "{}", hello.body);
    operator.wait_js(
        &transcript_has("Hola, aquí estoy"),
        WAIT,
        "the WhatsApp message",
    );
    operator_replies(&operator, "Perfecto, seguimos por WhatsApp");
    wait_whatsapp(
        &s.log,
        "the operator's text",
        whatsapp_text("Perfecto, seguimos por WhatsApp"),
    );
    operator.screenshot(&shots, "console-whatsapp");

    // Meta's subscription handshake.
    let ok = s.gw.http(
        "GET",
        &format!("/hooks/whatsapp?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"),
        &[],
        None,
    );
    assert_eq!((ok.status, ok.body.as_str()), (200, "1158201444"));
    let bad = s.gw.http(
        "GET",
        "/hooks/whatsapp?hub.mode=subscribe&hub.verify_token=guess&hub.challenge=1158201444",
        &[],
        None,
    );
    assert_eq!(bad.status, 403);
}

/// Reconnect over SMS: a finished web chat whose lead holds a phone number
/// (PH-2A), after a failed send that changes nothing; an offline lead
/// (PH-2B); a lead with no phone, whose button is off with the reason.
#[test]
fn reconnect_a_finished_web_chat_and_an_offline_lead() {
    let s = setup();
    let visitor = Browser::phone();
    let operator = Browser::desktop();
    let id = visitor_chats(&visitor, &s.gw, "done");
    visitor.wait_js(&page_has("Goodbye, Ana!"), WAIT, "the goodbye");
    let deadline = Instant::now() + WAIT;
    while conversation(&s.gw, &id)["conversation"]["live"] != false {
        assert!(Instant::now() < deadline, "the chat never finished");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        conversation(&s.gw, &id)["conversation"]["lead"]["phone"],
        VISITOR
    );

    let marta = api(
        &s.gw,
        "POST",
        "/v1/leads",
        Some(&json!({"name": "Marta", "phone": "622 000 111"})),
    );
    assert_eq!(marta.status, 201, "{}", marta.body);
    let marta = marta.json()["id"].as_str().unwrap().to_string();
    let luis = api(
        &s.gw,
        "POST",
        "/v1/leads",
        Some(&json!({"name": "Luis", "email": "luis@example.com"})),
    );
    assert_eq!(luis.status, 201, "{}", luis.body);
    let luis = luis.json()["id"].as_str().unwrap().to_string();

    operator_logs_in(&operator, &s.gw);
    operator_opens(&operator, &id);
    operator.wait_js(
        "!document.querySelector('#reconnect-sms').disabled",
        WAIT,
        "the reconnect button",
    );

    // The SMS can't be sent: an error, and the chat stays finished.
    *s.twilio.lock().unwrap() = Some((
        400,
        r#"{"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400}"#
            .into(),
    ));
    operator.click("#reconnect-sms");
    operator.wait_js(
        "!document.querySelector('#console-error').hidden",
        WAIT,
        "the send error",
    );
    assert_eq!(conversation(&s.gw, &id)["conversation"]["live"], false);
    assert_eq!(channels_of(&s.gw, &id), ["web"]);

    // PH-2A: it goes through; the same conversation carries on by SMS.
    *s.twilio.lock().unwrap() = None;
    operator.click("#console-error-close");
    operator.wait_js(
        "!document.querySelector('#reconnect-sms').disabled",
        WAIT,
        "the reconnect button",
    );
    operator.click("#reconnect-sms");
    wait_sms(&s.log, VISITOR, "hello again");
    operator.wait_js(&badge_is(&id, "sms"), WAIT, "the SMS badge");
    assert_eq!(conversation(&s.gw, &id)["conversation"]["live"], true);
    let back = post_sms(
        &s.gw,
        TWILIO_AUTH,
        "SM00000000000000000000000000000010",
        VISITOR,
        "Sí, aquí sigo",
    );
    assert_eq!(back.status, 200);
    operator.wait_js(
        &transcript_has("Sí, aquí sigo"),
        WAIT,
        "the reply in the same conversation",
    );
    assert_eq!(count_text(&s.gw, &id, "Sí, aquí sigo"), 1);

    // Leads: Luis has no phone (button off, reason shown); Marta is offline.
    operator.click("#tab-leads");
    let luis_row = format!("#leads li.lead[data-id=\"{luis}\"]");
    operator.wait_js(
        &format!("!!document.querySelector({})", js_str(&luis_row)),
        WAIT,
        "Luis's lead",
    );
    assert_eq!(
        operator.js(&format!(
            "return document.querySelector({}).disabled",
            js_str(&format!("{luis_row} button.reconnect"))
        )),
        true
    );
    assert!(operator
        .text(&format!("{luis_row} .reason"))
        .contains("No phone"));
    let marta_row = format!("#leads li.lead[data-id=\"{marta}\"]");
    operator.click(&format!("{marta_row} button.reconnect"));
    wait_sms(&s.log, "+34622000111", "You left us your number");
    // Her reply lands in the conversation the reconnect opened.
    let r = post_sms(
        &s.gw,
        TWILIO_AUTH,
        "SM00000000000000000000000000000011",
        "+34622000111",
        "Hola, soy Marta",
    );
    assert_eq!(r.status, 200);
    let list = api(&s.gw, "GET", "/v1/conversations", None).json();
    let theirs: Vec<&Value> = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["origin"] == "reconnect")
        .collect();
    assert_eq!(theirs.len(), 1, "{list}");
    let new_id = theirs[0]["id"].as_str().unwrap();
    assert_eq!(theirs[0]["channel"], "sms");
    let deadline = Instant::now() + WAIT;
    while count_text(&s.gw, new_id, "Hola, soy Marta") != 1 {
        assert!(
            Instant::now() < deadline,
            "Marta's reply not in her conversation"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A second reconnect while she is live is refused, pointing at it.
    let again = api(
        &s.gw,
        "POST",
        &format!("/v1/leads/{marta}/reconnect"),
        Some(&json!({"channel": "sms"})),
    );
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.json()["conversation_id"], new_id);
    assert_no_pii(&s.gw.log(), &["+34622000111", "luis@example.com"]);
}

/// Texts from phones with no browser involved: a new number starts a
/// conversation; STOP blocks what we send (and the operator is told),
/// START lifts it; "Yes" from someone who never sent STOP is a message.
#[test]
fn stop_and_start_from_a_phone() {
    let s = setup();
    let from = "+34633000111";
    let r = post_sms(
        &s.gw,
        TWILIO_AUTH,
        "SM00000000000000000000000000000020",
        from,
        "Yes",
    );
    assert_eq!(r.status, 200);
    let list = api(&s.gw, "GET", "/v1/conversations", None).json();
    let conv = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["origin"] == "sms")
        .unwrap_or_else(|| panic!("no conversation for the SMS: {list}"))
        .clone();
    let id = conv["id"].as_str().unwrap();
    assert_eq!(
        count_text(&s.gw, id, "Yes"),
        1,
        "Yes from an opted-in number is a message"
    );

    let say = |text: &str| {
        api(
            &s.gw,
            "POST",
            &format!("/v1/conversations/{id}/messages"),
            Some(&json!({ "text": text })),
        )
    };
    assert_eq!(say("Hello from the desk").status, 201);
    wait_sms(&s.log, from, "Hello from the desk");

    let stop = post_sms(
        &s.gw,
        TWILIO_AUTH,
        "SM00000000000000000000000000000021",
        from,
        "STOP",
    );
    assert_eq!(stop.status, 200);
    let refused = say("Are you there?");
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused.body.contains("STOP"), "{}", refused.body);
    assert_eq!(refused.json()["error_kind"], "opted_out");
    assert!(sms_to(&s.log, from)
        .iter()
        .all(|f| f["Body"] != "Are you there?"));
    assert_eq!(
        count_text(&s.gw, id, "Are you there?"),
        0,
        "a failed send is not a message"
    );

    let start = post_sms(
        &s.gw,
        TWILIO_AUTH,
        "SM00000000000000000000000000000022",
        from,
        "start",
    );
    assert_eq!(start.status, 200);
    assert_eq!(say("Welcome back").status, 201);
    wait_sms(&s.log, from, "Welcome back");
    let texts: Vec<String> = conversation(&s.gw, id)["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(texts.iter().any(|t| t.contains("opted out")), "{texts:?}");
    assert!(
        texts.iter().any(|t| t.contains("opted back in")),
        "{texts:?}"
    );
}

/// Any to any in one conversation: web → SMS (the visitor's button and
/// code), SMS → WhatsApp (the operator's console), WhatsApp → web (the
/// visitor texts WEB and opens the link in a browser that never had the
/// chat). Every message of every leg is in one transcript, in order, in
/// the API and in the browser that carries on.
#[test]
fn web_to_sms_to_whatsapp_and_back_to_web_in_one_transcript() {
    let s = setup();
    let (visitor, id) = visitor_waits_for_agent(&s.gw);
    let operator = Browser::desktop();
    let shots = artifacts_dir("chat_switch");
    visitor.type_into("#composer-input", "Escribo desde la web");
    visitor.click("#composer-send");
    operator_logs_in(&operator, &s.gw);
    operator_opens(&operator, &id);
    operator.wait_js(
        &transcript_has("Escribo desde la web"),
        WAIT,
        "the web message",
    );

    // Web → SMS: the visitor's button, and the code typed back.
    visitor_switches(&visitor, "sms", "612 345 678");
    let code = wait_sms(&s.log, VISITOR, "your code is");
    visitor_types_code(&visitor, &code_in(&code["Body"]));
    operator.wait_js(&badge_is(&id, "sms"), WAIT, "the SMS badge");

    // On SMS. A keyword inside a sentence is a message, not a command.
    let sms = |sid: &str, text: &str| {
        let r = post_sms(&s.gw, TWILIO_AUTH, sid, VISITOR, text);
        assert_eq!(r.status, 200, "{}", r.body);
    };
    sms("SM00000000000000000000000000000101", "Hola desde el SMS");
    sms(
        "SM00000000000000000000000000000102",
        "Can we use WhatsApp instead?",
    );
    operator.wait_js(
        &transcript_has("Can we use WhatsApp instead?"),
        WAIT,
        "the SMS with the keyword in it",
    );
    assert_eq!(channels_of(&s.gw, &id), ["web", "sms"]);
    operator_replies(&operator, "Claro, te paso a WhatsApp");
    wait_sms(&s.log, VISITOR, "te paso a WhatsApp");

    // SMS → WhatsApp from the console. Outside the 24-hour window the
    // welcome is the approved template; the SMS side is told.
    operator.wait_js(
        "!document.querySelector('#move-whatsapp').disabled",
        WAIT,
        "the move button",
    );
    assert_eq!(
        operator.js("return document.querySelector('#move-sms').disabled"),
        true,
        "already on SMS"
    );
    operator.click("#move-whatsapp");
    let welcome = wait_whatsapp(&s.log, "the welcome template", |m| {
        m["type"] == "template" && m["template"]["name"] == "conversation_moved"
    });
    assert_eq!(welcome["to"], "34612345678");
    wait_sms(&s.log, VISITOR, "This conversation continues on WhatsApp.");
    operator.wait_js(&badge_is(&id, "whatsapp"), WAIT, "the WhatsApp badge");

    // The visitor writes on WhatsApp (the window opens); so does the operator.
    let wa = |wamid: &str, text: &str| {
        let r = post_whatsapp(&s.gw, APP_SECRET, wamid, VISITOR, text);
        assert_eq!(r.status, 200, "{}", r.body);
    };
    wa("wamid.LEG3000000000000000001", "Hola desde WhatsApp");
    operator.wait_js(
        &transcript_has("Hola desde WhatsApp"),
        WAIT,
        "the WhatsApp message",
    );
    operator_replies(&operator, "Te leo por WhatsApp");
    wait_whatsapp(
        &s.log,
        "the operator's text",
        whatsapp_text("Te leo por WhatsApp"),
    );

    // WhatsApp → web: the visitor texts the keyword (any case, spaces
    // round it) and gets a link. The chat stays on WhatsApp until the link
    // is opened, and a preview's GET uses nothing.
    wa("wamid.LEG3000000000000000002", " web ");
    let sent = wait_whatsapp(&s.log, "the link", |m| {
        m["type"] == "text" && m["text"]["body"].as_str().unwrap_or("").contains("/w/")
    });
    let path = link_path(sent["text"]["body"].as_str().unwrap());
    assert_eq!(channels_of(&s.gw, &id), ["web", "sms", "whatsapp"]);
    for _ in 0..2 {
        let preview = s.gw.http("GET", &path, &[], None);
        assert_eq!(preview.status, 200, "{}", preview.body);
        assert!(preview.body.contains("Opening your chat"));
    }
    assert_eq!(channels_of(&s.gw, &id), ["web", "sms", "whatsapp"]);

    // Opened on the phone's browser: the whole transcript, on the web.
    let phone = Browser::phone();
    phone.goto(&format!("http://127.0.0.1:{}{path}", s.gw.http_port));
    phone.wait_js(
        "document.body.dataset.channel === 'web' && !!document.querySelector('.msg')",
        WAIT,
        "the web chat",
    );
    assert_eq!(
        phone.js("return document.querySelector('meta[name=crossline-conversation]').content"),
        id.as_str()
    );
    operator.wait_js(&badge_is(&id, "web"), WAIT, "the web badge again");
    phone.wait_js(&page_has("Te leo por WhatsApp"), WAIT, "the transcript");
    phone.type_into("#composer-input", "De vuelta en la web");
    phone.click("#composer-send");
    operator.wait_js(
        &transcript_has("De vuelta en la web"),
        WAIT,
        "the visitor back on the web",
    );
    let whatsapp_before = whatsapp_sent(&s.log).len();
    let sms_before = sms_to(&s.log, VISITOR).len();
    operator_replies(&operator, "Perfecto, seguimos aquí");
    phone.wait_js(
        &page_has("Perfecto, seguimos aquí"),
        WAIT,
        "the operator's answer on the web",
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(whatsapp_sent(&s.log).len(), whatsapp_before, "web only");
    assert_eq!(sms_to(&s.log, VISITOR).len(), sms_before, "web only");
    phone.screenshot(&shots, "visitor-back-from-whatsapp");

    // One transcript, in order, in the API and in the browser.
    let legs = [
        "Escribo desde la web",
        "Hola desde el SMS",
        "Can we use WhatsApp instead?",
        "Claro, te paso a WhatsApp",
        "Hola desde WhatsApp",
        "Te leo por WhatsApp",
        "De vuelta en la web",
        "Perfecto, seguimos aquí",
    ];
    assert_in_order(&transcript_texts(&s.gw, &id), &legs);
    let shown: Vec<String> = phone
        .js("return [...document.querySelectorAll('.msg')].map(m => m.innerText)")
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap_or("").to_string())
        .collect();
    assert_in_order(&shown, &legs);
    assert_eq!(channels_of(&s.gw, &id), ["web", "sms", "whatsapp", "web"]);
    assert_eq!(
        count_text(&s.gw, &id, " web "),
        0,
        "a command, not a message"
    );
    assert_eq!(count_text(&s.gw, &id, "web"), 0, "a command, not a message");

    // The link is used up.
    assert_eq!(s.gw.http("POST", &path, &[], None).status, 404);
    assert_eq!(s.gw.http("GET", &path, &[], None).status, 404);
    assert_no_pii(&s.gw.log(), &[VISITOR]);
}

/// A conversation that began as a text, moved between SMS and WhatsApp by
/// keyword and by the operator's API: the WhatsApp welcome is the template
/// outside the 24-hour window and free text inside it; a number that sent
/// STOP on WhatsApp isn't moved there and is told why not on SMS; the
/// operator's web link is single-use and opens the same conversation.
#[test]
fn keywords_and_the_operator_move_a_phone_chat_between_sms_and_whatsapp() {
    let s = setup();
    let from = "+34633000222";
    let sms = |sid: &str, text: &str| {
        let r = post_sms(&s.gw, TWILIO_AUTH, sid, from, text);
        assert_eq!(r.status, 200, "{}", r.body);
    };
    let wa = |wamid: &str, text: &str| {
        let r = post_whatsapp(&s.gw, APP_SECRET, wamid, from, text);
        assert_eq!(r.status, 200, "{}", r.body);
    };
    sms("SM00000000000000000000000000000201", "Hola");
    let list = api(&s.gw, "GET", "/v1/conversations", None).json();
    let id = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["origin"] == "sms")
        .and_then(|c| c["id"].as_str())
        .unwrap_or_else(|| panic!("no conversation for the SMS: {list}"))
        .to_string();
    let switch = |channel: &str| {
        api(
            &s.gw,
            "POST",
            &format!("/v1/conversations/{id}/switch"),
            Some(&json!({ "channel": channel })),
        )
    };

    // A keyword in a sentence is text; alone, in any case, a command.
    sms(
        "SM00000000000000000000000000000202",
        "Can we move to WHATSAPP?",
    );
    assert_eq!(count_text(&s.gw, &id, "Can we move to WHATSAPP?"), 1);
    assert_eq!(channels_of(&s.gw, &id), ["sms"]);
    sms("SM00000000000000000000000000000203", "  WhatsApp ");
    let welcome = wait_whatsapp(&s.log, "the welcome template", |m| {
        m["type"] == "template" && m["to"] == "34633000222"
    });
    assert_eq!(welcome["template"]["name"], "conversation_moved");
    assert_eq!(welcome["template"]["language"]["code"], "es");
    assert_eq!(channels_of(&s.gw, &id), ["sms", "whatsapp"]);
    wa("wamid.KW00000000000000000001", "Hola por WhatsApp");
    assert_eq!(count_text(&s.gw, &id, "Hola por WhatsApp"), 1);

    // The operator moves it back to SMS; WhatsApp is told (inside the window).
    let r = switch("sms");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["conversation"]["channel"], "sms");
    wait_sms(&s.log, from, "moved from WhatsApp");
    wait_whatsapp(
        &s.log,
        "the note on WhatsApp",
        whatsapp_text("This conversation continues on SMS."),
    );
    assert_eq!(switch("sms").status, 409, "already on SMS");
    assert_eq!(switch("fax").status, 422);
    // And to WhatsApp again: the window is open, so the welcome is text.
    let templates = whatsapp_sent(&s.log)
        .iter()
        .filter(|m| m["type"] == "template")
        .count();
    assert_eq!(switch("whatsapp").status, 200);
    wait_whatsapp(&s.log, "the free-text welcome", |m| {
        m["type"] == "text"
            && m["text"]["body"]
                .as_str()
                .unwrap_or("")
                .contains("moved from SMS")
    });
    assert_eq!(
        whatsapp_sent(&s.log)
            .iter()
            .filter(|m| m["type"] == "template")
            .count(),
        templates,
        "no template inside the window"
    );

    // STOP on WhatsApp: the keyword can't move the chat there, and the
    // visitor is told on SMS; the operator gets the reason.
    wa("wamid.KW00000000000000000002", "STOP");
    assert_eq!(switch("sms").status, 200);
    sms("SM00000000000000000000000000000204", "whatsapp");
    wait_sms(
        &s.log,
        from,
        "Sorry, we could not move this conversation to WhatsApp.",
    );
    assert_eq!(channels_of(&s.gw, &id).last().unwrap(), "sms");
    let refused = switch("whatsapp");
    assert_eq!(refused.status, 502, "{}", refused.body);
    assert!(refused.body.contains("STOP"), "{}", refused.body);
    assert!(transcript_texts(&s.gw, &id)
        .iter()
        .any(|t| t.contains("that failed")));

    // The operator's web link: GETs only look; the POST claims it once
    // and hands this browser the conversation, which moves to the web.
    let r = switch("web");
    assert_eq!(r.status, 202, "{}", r.body);
    let sent = wait_sms(&s.log, from, "/w/");
    let path = link_path(&sent["Body"]);
    assert_eq!(channels_of(&s.gw, &id).last().unwrap(), "sms");
    assert_eq!(s.gw.http("GET", &path, &[], None).status, 200);
    let claimed = s.gw.http("POST", &path, &[], None);
    assert_eq!(claimed.status, 303, "{}", claimed.raw_headers);
    assert!(claimed.headers.contains("location: /chat/"));
    assert_eq!(channels_of(&s.gw, &id).last().unwrap(), "web");
    let cookies = claimed.cookie_header();
    let page = s.gw.http("GET", "/chat/", &[("Cookie", &cookies)], None);
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.conversation_id(), id);
    assert_eq!(
        s.gw.http("POST", &path, &[], None).status,
        404,
        "single use"
    );
    assert_eq!(s.gw.http("GET", &path, &[], None).status, 404);
    assert_eq!(switch("sms").status, 409, "in the web chat now");
    assert_no_pii(&s.gw.log(), &[from]);
}

/// The visitor's own "Switch to WhatsApp" button, clicked in Chromium:
/// the code comes in the authentication template, and once it is typed
/// back the chat is on WhatsApp and the welcome template follows.
#[test]
fn the_visitors_whatsapp_button_moves_the_chat_to_whatsapp() {
    let s = setup();
    let (visitor, id) = visitor_waits_for_agent(&s.gw);
    visitor_switches(&visitor, "whatsapp", "612 345 678");
    let code = wait_whatsapp(&s.log, "the code template", |m| {
        m["type"] == "template" && m["template"]["name"] == "switch_code"
    });
    assert_eq!(code["to"], "34612345678");
    assert_eq!(visitor.js("return document.body.dataset.channel"), "web");
    let digits = code["template"]["components"][0]["parameters"][0]["text"]
        .as_str()
        .expect("the code parameter")
        .to_string();
    visitor_types_code(&visitor, &code_in(&digits));
    visitor.wait_js(
        "document.body.dataset.channel === 'whatsapp'",
        WAIT,
        "WhatsApp mode",
    );
    let welcome = wait_whatsapp(&s.log, "the welcome template", |m| {
        m["type"] == "template" && m["template"]["name"] == "conversation_moved"
    });
    assert_eq!(welcome["to"], "34612345678");
    assert_eq!(channels_of(&s.gw, &id), ["web", "whatsapp"]);
}
