//! Breakout: To chat end to end. A SIPp caller reaches a flow that texts
//! them a link (through the Twilio stand-in) and holds them with music and
//! a spoken message on repeat; a real headless Chromium opens the link,
//! answers the chat flow's email prompt, and Breakout: Return hands the
//! address back to the call, which posts it to a webhook and keeps it in
//! the call record. Also: the timeout flow, an SMS that can't be sent, and
//! links that must reveal nothing.

mod common;

use std::time::{Duration, Instant};

use common::audio::*;
use common::browser::{artifacts_dir, png_size, Browser};
use common::chat::{claim_breakout, connect, next_prompt, send};
use common::standin::*;
use common::*;
use serde_json::json;

const OPERATOR_TOKEN: &str = "operator-token-for-tests-0123";

/// The test flows with the stand-in's URL filled in, in a fresh folder.
fn flows_dir(hook: &str) -> tempfile::TempDir {
    flows_with_hook("tests/flows/breakout", hook)
}

struct Setup {
    gw: Gateway,
    log: Log,
    twilio: TwilioAnswer,
    _flows: tempfile::TempDir,
    _audio: tempfile::TempDir,
}

fn setup() -> Setup {
    setup_with("")
}

/// `setup` with more config (whole sections).
fn setup_with(extra: &str) -> Setup {
    require("espeak-ng", "espeak-ng");
    let (port, log, twilio) = stand_in();
    let flows = flows_dir(&format!("http://127.0.0.1:{port}/hook"));
    // Music: a steady 400 Hz tone, so the message over it can be measured.
    let audio = tempfile::tempdir().unwrap();
    let music = audio.path().join("music.wav");
    write_tone(&music, 400.0, 5.0, 8000.0, 8000);
    let gw = Gateway::start(&format!(
        "[flows]\ndir = \"{flows}\"\n\n\
         [http]\noperator_token = \"{OPERATOR_TOKEN}\"\n\n\
         [media]\nhold_music = [\"{music}\"]\nhold_duck_db = -12.0\n\n\
         [messaging.sms]\nprovider = \"twilio\"\nbase_url = \"http://127.0.0.1:{port}\"\naccount_sid = \"AC0123456789abcdef\"\nauth_token = \"secret-token\"\nfrom = \"+15550100000\"\n\n\
         [[routes]]\ndid = \"3000\"\nflow = \"breakout-test\"\n\n\
         [[routes]]\ndid = \"3001\"\nflow = \"breakout-short\"\n\n{extra}",
        flows = flows.path().display(),
        music = music.display(),
    ));
    Setup {
        gw,
        log,
        twilio,
        _flows: flows,
        _audio: audio,
    }
}

fn call_args(gw: &Gateway, did: &str) -> Vec<String> {
    [
        "-sf",
        &scenario("uac_wait_bye.xml"),
        &gw.sip_addr(),
        "-s",
        did,
        "-m",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Per 20 ms frame: (music level at 400 Hz, RMS of everything else).
fn frames(rows: &[Vec<String>]) -> Vec<(f64, f64)> {
    rows.iter()
        .map(|r| {
            let pcm = pcmu_hex_to_linear(&r[0]);
            let music = tone_level(&pcm, 400.0);
            let total = pcm.iter().map(|x| x * x).sum::<f64>() / pcm.len().max(1) as f64;
            let rest = (total - music * music / 2.0).max(0.0).sqrt();
            (music, rest)
        })
        .collect()
}

#[test]
fn breakout_to_chat_in_a_real_browser_returns_the_email_to_the_call() {
    let s = setup();
    let gw = &s.gw;
    let shots = artifacts_dir("breakout");
    let email = "ana.lopez@example.com";
    let args = call_args(gw, "3000");
    let (capture, link) = std::thread::scope(|scope| {
        let call = scope.spawn(|| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            capture_call(gw, &args, &["rtp.payload"])
        });
        let (link, sms) = sms_link(gw, &s.log);
        let sent_at = Instant::now();
        assert_eq!(
            sms.get("To").map(String::as_str),
            Some("+15551234567"),
            "blank phone number: the caller"
        );
        assert!(
            sms["Body"].starts_with(
                "Hello from crossline. Please type your email address here: http://127.0.0.1:"
            ),
            "{:?}",
            sms["Body"]
        );
        let token = link.rsplit('/').next().unwrap();
        assert!(token.len() >= 22, "at least 128 bits: {token}");

        // The phone's messaging app fetches the link for a preview first:
        // that shows the landing page and uses nothing up.
        for _ in 0..2 {
            let preview = gw.http("GET", &format!("/b/{token}"), &[], None);
            assert_eq!(preview.status, 200);
            assert!(preview.body.contains("Open the chat"), "{}", preview.body);
            assert!(
                !preview.headers.contains("set-cookie"),
                "a preview gets no key"
            );
        }
        assert!(
            !gw.http_get("/metrics")
                .1
                .contains("crossline_breakouts_total{event=\"opened\"}"),
            "a preview must not open the chat"
        );

        let browser = Browser::phone();
        browser.goto(&link);
        browser.wait_js(
            "return document.body.dataset.state === 'open' && document.querySelector('#composer').dataset.input === 'email'",
            Duration::from_secs(20),
            "the email prompt",
        );
        assert!(browser
            .text("#log")
            .contains("You are still on the line with us."));
        let first = browser.screenshot(&shots, "1-email-prompt");
        assert_eq!(png_size(&first), (390 * 3, 844 * 3), "phone viewport");
        let overflow =
            browser.js("return document.documentElement.scrollWidth > window.innerWidth");
        assert_eq!(
            overflow,
            serde_json::Value::Bool(false),
            "no sideways scrolling on a phone"
        );

        // A wrong address is stopped in the browser, before it is sent.
        browser.type_into("#composer-input", "ana.lopez@");
        browser.click("#composer-send");
        browser.wait_js(
            "return document.querySelector('#composer-error').textContent.trim().length > 0",
            Duration::from_secs(5),
            "the inline error",
        );
        browser.screenshot(&shots, "2-invalid-email");
        assert!(!browser.text("#log").contains("ana.lopez@"), "nothing sent");

        // Let the hold message come round at least twice (4 s repeat).
        if let Some(rest) = Duration::from_secs(10).checked_sub(sent_at.elapsed()) {
            std::thread::sleep(rest);
        }
        browser.type_into("#composer-input", email);
        browser.click("#composer-send");
        browser.wait_js(
            "return [...document.querySelectorAll('.msg.bot')].some(m => m.textContent.includes('go back to your call'))",
            Duration::from_secs(20),
            "the thank-you",
        );
        browser.wait_js(
            "return document.body.dataset.state === 'closed'",
            Duration::from_secs(10),
            "the chat to close",
        );
        assert!(browser.text("#log").contains(email));
        browser.screenshot(&shots, "3-returned");
        drop(browser);
        (call.join().unwrap(), link)
    });
    assert!(capture.run.ok(), "{}", capture.run.describe());

    // The call went on at its next node with the returned variable.
    let hook = wait_seen(&s.log, Duration::from_secs(5), |x| {
        x.path == "hook/returned"
    })
    .expect("the http node after the breakout never posted");
    let posted: serde_json::Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(posted["email"], email);
    assert_eq!(posted["status"], "returned");
    let call_id = posted["call_id"].as_str().unwrap().to_string();

    // The call record keeps it; the API shows the breakout and the send.
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let call = gw.http(
        "GET",
        &format!("/v1/calls/{call_id}"),
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(call.status, 200, "{}", call.body);
    let call = call.json();
    assert_eq!(call["records"][0]["vars"]["email"], email, "{call}");
    assert_eq!(call["breakouts"][0]["state"], "returned");
    assert_eq!(call["breakouts"][0]["result"]["email"], email);
    assert_eq!(call["sends"][0]["status"], "sent");
    let conversation = call["breakouts"][0]["conversation_id"].as_str().unwrap();
    let transcript = gw.http(
        "GET",
        &format!("/v1/conversations/{conversation}"),
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(transcript.status, 200);
    let transcript = transcript.json();
    let texts: Vec<&str> = transcript["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert!(texts.contains(&email), "{texts:?}");
    assert_eq!(transcript["conversation"]["origin"], "breakout");

    // During the wait the caller heard the music, ducked under a spoken
    // message that came back every 4 s.
    let f = frames(&capture.rows);
    let music_frames: Vec<usize> = (0..f.len()).filter(|&i| f[i].0 > 1000.0).collect();
    assert!(
        music_frames.len() > 300,
        "music frames: {}",
        music_frames.len()
    );
    let full = f[music_frames[0]..]
        .iter()
        .map(|x| x.0)
        .fold(0.0f64, f64::max);
    assert!((full - 8000.0).abs() < 1000.0, "music level {full}");
    // Ducked by 12 dB (×0.25) with speech on top.
    let talking: Vec<bool> = f
        .iter()
        .map(|(music, rest)| *music > 1000.0 && *music < full * 0.4 && *rest > 300.0)
        .collect();
    let mut starts = Vec::new();
    let mut run = 0;
    for (i, t) in talking.iter().enumerate() {
        if *t {
            run += 1;
            // A message: ducking with speech for at least half a second.
            if run == 25 {
                starts.push(i - 24);
            }
        } else if run > 0
            && !talking
                .get(i + 1..i + 10)
                .is_some_and(|w| w.iter().any(|t| *t))
        {
            // Pauses between words keep the music ducked; ten clear frames end it.
            run = 0;
        }
    }
    assert!(starts.len() >= 2, "hold message heard at frames {starts:?}");
    let gap = starts[1] - starts[0];
    assert!(
        (150..=260).contains(&gap),
        "message repeated every {gap} frames, want about 200 (4 s)"
    );

    // The link is used up: a second visit, or a guess, reveals nothing.
    let path = link_path(&link);
    let reused = gw.http_get(&path);
    let guessed = gw.http_get("/b/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(reused.0, 404);
    assert_eq!(guessed.0, 404);
    assert_eq!(reused.1, guessed.1, "the same page whatever the reason");
    assert!(reused.1.contains("no longer available"), "{}", reused.1);
    assert!(!reused.1.contains(&path[3..]));
    let metrics = gw.http_get("/metrics").1;
    assert!(
        metrics.contains("crossline_breakouts_total{event=\"returned\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("crossline_chat_sessions_total"));
    // Nothing personal or secret reached the log of the whole run.
    assert_no_pii(&gw.log(), &["+15551234567", email, &path[3..]]);
}

#[test]
fn breakout_timeout_continues_in_the_timeout_flow_and_expires_the_link() {
    let s = setup();
    let gw = &s.gw;
    let args = call_args(gw, "3001");
    let (run, link, hook, waited) = std::thread::scope(|scope| {
        let call = scope.spawn(|| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            sipp(&args, Duration::from_secs(60))
        });
        // The SMS goes out as the breakout starts its 3 s clock.
        let (link, _) = sms_link(gw, &s.log);
        let sent = Instant::now();
        let hook = wait_seen(&s.log, Duration::from_secs(10), |x| {
            x.path == "hook/timed-out"
        });
        let waited = sent.elapsed();
        (call.join().unwrap(), link, hook, waited)
    });
    assert!(run.ok(), "{}", run.describe());
    let hook = hook.expect("the timeout flow never ran");
    // timeout_secs = 3: the timeout flow runs within 2 s of it (the stand-in
    // is polled every 50 ms; the SMS reached it just after the clock began).
    assert!(
        (Duration::from_millis(2_800)..=Duration::from_secs(5)).contains(&waited),
        "the timeout flow ran {waited:?} after the breakout's SMS; timeout_secs is 3"
    );
    let posted: serde_json::Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(posted["status"], "timeout");
    assert!(
        !seen(&s.log, "hook/returned"),
        "the next node must not run after a timeout"
    );
    let path = link_path(&link);
    let (status, body) = gw.http_get(&path);
    assert_eq!(status, 404, "an expired link");
    assert!(body.contains("no longer available"));
    let metrics = gw.http_get("/metrics").1;
    assert!(
        metrics.contains("crossline_breakouts_total{event=\"timed_out\"} 1"),
        "{metrics}"
    );
}

#[test]
fn breakout_sms_failure_takes_the_error_branch_at_once() {
    let s = setup();
    let gw = &s.gw;
    // Twilio: 21211, the 'To' number is not valid.
    *s.twilio.lock().unwrap() = Some((
        400,
        r#"{"code": 21211, "message": "The 'To' number +15551234567 is not a valid phone number.", "status": 400}"#.into(),
    ));
    let args = call_args(gw, "3000");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let run = sipp(&args, Duration::from_secs(60));
    assert!(run.ok(), "{}", run.describe());
    let hook = wait_seen(&s.log, Duration::from_secs(5), |x| {
        x.path == "hook/send-failed"
    })
    .expect("the error branch never ran");
    let posted: serde_json::Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(posted["error_kind"], "invalid_recipient");
    assert_eq!(posted["status"], "send_failed");
    // No waiting for a link nobody got (the timeout is 90 s).
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// The caller hangs up while the visitor is in the chat: the chat says so
/// politely, the visitor can still answer, and the answer is stored.
#[test]
fn caller_hangs_up_first_the_chat_says_so_and_the_answer_is_kept() {
    let s = setup();
    let gw = &s.gw;
    let shots = artifacts_dir("breakout");
    let sip = gw.sip_addr();
    let hang_up = scenario("uac_hang_up.xml");
    let link = std::thread::scope(|scope| {
        let call = scope.spawn(|| {
            sipp(
                &["-sf", &hang_up, &sip, "-s", "3000", "-m", "1", "-d", "8000"],
                Duration::from_secs(60),
            )
        });
        let (link, _) = sms_link(gw, &s.log);
        let browser = Browser::phone();
        browser.goto(&link);
        browser.wait_js(
            "return document.querySelector('#composer').dataset.input === 'email'",
            Duration::from_secs(20),
            "the email prompt",
        );
        browser.wait_js(
            "return [...document.querySelectorAll('.msg.system')].some(m => m.textContent.includes('The phone call has ended'))",
            Duration::from_secs(30),
            "the hang-up notice",
        );
        browser.screenshot(&shots, "4-caller-left");
        browser.type_into("#composer-input", "late@example.com");
        browser.click("#composer-send");
        browser.wait_js(
            "return [...document.querySelectorAll('.msg.bot')].some(m => m.textContent.includes('saved your answers'))",
            Duration::from_secs(20),
            "the saved-anyway message",
        );
        let run = call.join().unwrap();
        assert!(run.ok(), "{}", run.describe());
        link
    });
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let list = gw
        .http("GET", "/v1/breakouts", &[("Authorization", &auth)], None)
        .json();
    let b = &list["breakouts"][0];
    assert_eq!(b["state"], "returned_after_caller_left", "{list}");
    assert_eq!(b["result"]["email"], "late@example.com");
    assert!(
        !seen(&s.log, "hook/returned"),
        "the call is gone: its next node must not run"
    );
    let path = link_path(&link);
    assert_eq!(gw.http_get(&path).0, 404, "another browser can't reopen it");
}

/// The chat closes without a Return (an operator closes it): the call
/// must not wait out `timeout_secs` (90 s here) but go on at once at
/// `next`, with `<id>.status = "closed"`.
#[test]
fn breakout_chat_closed_without_return_lets_the_call_go_on_at_once() {
    let s = setup();
    let gw = &s.gw;
    let args = call_args(gw, "3000");
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let (run, closed_at) = std::thread::scope(|scope| {
        let call = scope.spawn(|| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            sipp(&args, Duration::from_secs(60))
        });
        let (link, sms) = sms_link(gw, &s.log);
        let path = link_path(&link);
        // Short links: 22 base62 characters, so message and link share one
        // GSM-7 segment (160 characters).
        let token = &path[3..];
        assert_eq!(token.len(), 22, "{link}");
        assert!(token.bytes().all(|c| c.is_ascii_alphanumeric()), "{link}");
        assert!(sms["Body"].chars().count() <= 160, "{:?}", sms["Body"]);
        // Claim the link as a phone's browser would (its script POSTs).
        let claim = gw.http("POST", &path, &[], None);
        assert_eq!(claim.status, 303, "{}", claim.body);
        let deadline = Instant::now() + Duration::from_secs(10);
        let conversation = loop {
            let list = gw
                .http("GET", "/v1/breakouts", &[("Authorization", &auth)], None)
                .json();
            if let Some(id) = list["breakouts"][0]["conversation_id"].as_str() {
                break id.to_string();
            }
            assert!(Instant::now() < deadline, "the link never opened: {list}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let close = gw.http(
            "POST",
            &format!("/v1/conversations/{conversation}/close"),
            &[("Authorization", &auth)],
            Some(r#"{"text": "An agent closed this chat."}"#),
        );
        assert_eq!(close.status, 200, "{}", close.body);
        let closed_at = Instant::now();
        let again = gw.http(
            "POST",
            &format!("/v1/conversations/{conversation}/close"),
            &[("Authorization", &auth)],
            None,
        );
        assert_eq!(again.status, 409, "closing twice: {}", again.body);
        let run = call.join().unwrap();
        (run, closed_at.elapsed())
    });
    assert!(run.ok(), "{}", run.describe());
    // Posting, the goodbye and the BYE take a few seconds; the timeout is 90.
    assert!(
        closed_at < Duration::from_secs(20),
        "the call ended {closed_at:?} after the close, not at once"
    );
    went_on_closed(&s, Duration::from_secs(5));
}

/// The call went on at `next` (within `wait`) with status "closed", not to
/// the timeout flow, and the breakout is stored and counted as closed.
/// What the next node posted.
fn went_on_closed(s: &Setup, wait: Duration) -> serde_json::Value {
    let gw = &s.gw;
    let hook = wait_seen(&s.log, wait, |x| x.path == "hook/returned")
        .unwrap_or_else(|| panic!("the call never went on at next:\n{}", gw.log()));
    let posted: serde_json::Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(posted["status"], "closed");
    assert!(
        !seen(&s.log, "hook/timed-out"),
        "a closed chat is not a timeout"
    );
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let list = gw
        .http("GET", "/v1/breakouts", &[("Authorization", &auth)], None)
        .json();
    assert_eq!(list["breakouts"][0]["state"], "closed", "{list}");
    let metrics = gw.http_get("/metrics").1;
    assert!(
        metrics.contains("crossline_breakouts_total{event=\"closed\"} 1"),
        "{metrics}"
    );
    posted
}

/// The visitor walks away: the page's WebSocket goes and none comes back.
/// Once `[chat] breakout_left_secs` has passed, the chat closes and the
/// call goes on at once with status "closed", instead of holding the
/// caller for its 90 s timeout. A socket back within the grace (a reload)
/// keeps the chat.
#[test]
fn a_visitor_who_leaves_the_chat_lets_the_call_go_on() {
    let s = setup_with("[chat]\nbreakout_left_secs = 2\n");
    let gw = &s.gw;
    let args = call_args(gw, "3000");
    let call = std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sipp(&args, Duration::from_secs(60))
    });
    let (link, _) = sms_link(gw, &s.log);
    let path = link_path(&link);
    let (conversation, cookies) = claim_breakout(gw, &path);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let left = rt.block_on(async {
        let mut ws = connect(gw, &conversation, &cookies).await;
        send(&mut ws, json!({"type": "resume", "after": 0})).await;
        assert_eq!(next_prompt(&mut ws).await["input"], "email");
        // A reload: the socket drops, the page is back half a second later
        // and stays past the grace counted from the drop.
        drop(ws);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut ws = connect(gw, &conversation, &cookies).await;
        send(&mut ws, json!({"type": "resume", "after": 0})).await;
        assert_eq!(next_prompt(&mut ws).await["input"], "email");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            !seen(&s.log, "hook/returned"),
            "a visitor who came back has not left"
        );
        // The tab is closed.
        drop(ws);
        Instant::now()
    });
    let posted = went_on_closed(&s, Duration::from_secs(15));
    let waited = left.elapsed();
    assert_eq!(posted["email"], "");
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(8)).contains(&waited),
        "the call went on {waited:?} after the visitor left (grace 2 s)"
    );
    let run = call.join().unwrap();
    assert!(run.ok(), "{}", run.describe());

    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let transcript = gw
        .http(
            "GET",
            &format!("/v1/conversations/{conversation}"),
            &[("Authorization", &auth)],
            None,
        )
        .json();
    let last = transcript["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["kind"], "closed", "{transcript}");
    assert_eq!(
        last["text"], "You left the chat, so your call has carried on without it.",
        "{transcript}"
    );
    let metrics = gw.http_get("/metrics").1;
    assert!(
        metrics.contains("crossline_breakouts_total{event=\"visitor_left\"} 1"),
        "{metrics}"
    );
}

/// `/chat/` starts a conversation with `[chat] web_flow` and sets the
/// cookies; the same browser comes back to the same conversation, and the
/// WebSocket refuses anyone without the key.
#[test]
fn web_chat_entry_point_resumes_for_the_same_browser_only() {
    let flows = flows_dir("http://127.0.0.1:9/hook");
    let gw = Gateway::start(&format!(
        "[flows]\ndir = \"{}\"\n\n[chat]\nweb_flow = \"collect-email\"\ntitle = \"Acme <Support>\"\n",
        flows.path().display()
    ));
    let first = gw.http("GET", "/chat/", &[], None);
    assert_eq!(first.status, 200);
    assert!(first.headers.contains("cache-control: no-store"));
    assert!(first
        .headers
        .contains("content-security-policy: default-src 'self'"));
    assert!(
        first.body.contains("<title>Acme &lt;Support&gt;</title>"),
        "the title is escaped"
    );
    let conv = first.conversation_id();
    let cookies: Vec<String> = first
        .headers
        .lines()
        .filter_map(|l| l.strip_prefix("set-cookie: "))
        .map(|c| {
            assert!(c.contains("httponly") && c.contains("samesite=lax"), "{c}");
            c.split(';').next().unwrap().to_string()
        })
        .collect();
    assert_eq!(cookies.len(), 2, "{}", first.headers);
    let again = gw.http("GET", "/chat/", &[("Cookie", &first.cookie_header())], None);
    assert!(again.body.contains(&conv), "same conversation again");
    let stranger = gw.http(
        "GET",
        &format!("/chat/ws?c={conv}"),
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        None,
    );
    assert_eq!(stranger.status, 403, "no key, no conversation");
    let (status, body) = gw.http_get("/chat/app.js");
    assert_eq!(status, 200);
    assert!(body.contains("resume"));
}
