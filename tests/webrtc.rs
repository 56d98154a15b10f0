//! Web-to-voice against the real binary: headless Chromium, its microphone
//! a 1 kHz tone file, presses "Call us" in the web chat. crossline answers
//! the WebRTC call (ICE, DTLS-SRTP, Opus 48 kHz), places it as a SIP call to
//! itself, and the routed flow plays a 400 Hz tone (which the browser must
//! receive) and then transfers to a SIPp agent, where the browser's tone
//! must arrive as G.711 8 kHz.

mod common;

use std::time::{Duration, Instant};

use common::audio::*;
use common::browser::{artifacts_dir, Browser};
use common::*;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn a_browser_call_reaches_a_flow_and_a_sip_agent() {
    let dir = tempfile::tempdir().unwrap();
    // The browser's microphone: a 1 kHz tone, 48 kHz like a real capture.
    let mic = dir.path().join("mic.wav");
    write_tone(&mic, 1000.0, 20.0, 8000.0, 48_000);
    let tone = dir.path().join("tone400.wav");
    write_tone(&tone, 400.0, 3.0, 8000.0, 8000);
    let agent_port = free_port();
    let agent_media = free_port();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    std::fs::write(
        flows.join("web-agent.toml"),
        format!(
            r#"name = "web-agent"

[[nodes]]
id = "hello"
type = "play"
file = "{tone}"
next = "agent"

[[nodes]]
id = "agent"
type = "transfer"
targets = ["sip:agent@127.0.0.1:{agent_port}"]
ring_timeout_secs = 10
next = "bye"
on_failure = "bye"

[[nodes]]
id = "bye"
type = "hangup"
"#,
            tone = tone.display()
        ),
    )
    .unwrap();
    std::fs::write(
        flows.join("web-chat.toml"),
        "name = \"web-chat\"\nchannel = \"chat\"\n\n[[nodes]]\nid = \"hi\"\ntype = \"handoff\"\ntext = \"Hi! Press Call us to talk to us.\"\n",
    )
    .unwrap();
    let gw = Gateway::start(&format!(
        // A carrier trunk that only takes calls from its own network: web
        // calls (from loopback) must still get in, on their own trunk.
        "[flows]\ndir = \"{}\"\n\n[chat]\nweb_flow = \"web-chat\"\n\n[[trunks]]\nname = \"carrier\"\ninbound_cidrs = [\"10.0.0.0/8\"]\n\n[[routes]]\ndid = \"webrtc\"\nflow = \"web-agent\"\n",
        flows.display()
    ));
    let agent = std::thread::spawn(move || {
        sipp_on(
            &["-sf", &scenario("uas_answer.xml"), "-m", "1"],
            Duration::from_secs(90),
            agent_port,
            agent_media,
        )
    });
    let cap = start_capture(&format!("udp dst port {agent_media}"));

    let b = Browser::phone_with(&[
        "--use-fake-ui-for-media-stream".into(),
        "--use-fake-device-for-media-stream".into(),
        format!("--use-file-for-fake-audio-capture={}", mic.display()),
        "--allow-loopback-in-peer-connection".into(),
        "--disable-features=WebRtcHideLocalIpsWithMdns".into(),
        "--autoplay-policy=no-user-gesture-required".into(),
    ]);
    let shots = artifacts_dir("webrtc");
    b.goto(&format!("http://127.0.0.1:{}/chat/", gw.http_port));
    b.wait_js(
        "document.body.innerText.includes('Press Call us')",
        WAIT,
        "the chat",
    );
    b.wait_js(
        "(() => { const e = document.querySelector('#call-us'); return !!e && !e.hidden; })()",
        WAIT,
        "the Call us button",
    );
    b.click("#call-us");
    b.wait_js(
        "document.body.dataset.call === 'connected'",
        WAIT,
        "the call connected",
    );
    gw.wait_for_log("node=hello", WAIT);

    // The flow's tone reaches the browser: audio bytes and a real level.
    let deadline = Instant::now() + WAIT;
    let (bytes, level) = loop {
        let stats = b.js("return (async () => {
               const pc = window.crosslineCall && window.crosslineCall.pc;
               if (!pc) return null;
               let bytes = 0, level = 0;
               (await pc.getStats()).forEach(s => {
                 if (s.type === 'inbound-rtp' && s.kind === 'audio') {
                   bytes = s.bytesReceived || 0;
                   level = s.audioLevel || 0;
                 }
               });
               return [bytes, level];
             })()");
        let bytes = stats[0].as_f64().unwrap_or(0.0);
        let level = stats[1].as_f64().unwrap_or(0.0);
        if bytes > 4000.0 && level > 0.05 {
            break (bytes, level);
        }
        assert!(Instant::now() < deadline, "browser stats: {stats}");
        std::thread::sleep(Duration::from_millis(200));
    };
    b.screenshot(&shots, "in-call");

    // Then the agent rings (the browser hears the wait music everyone on
    // hold shares: one Opus encode for all), answers, and the browser's
    // tone must arrive there.
    gw.wait_for_log("transfer: bridged", Duration::from_secs(30));
    let metrics = gw.http_get("/metrics").1;
    let shared: f64 = metrics
        .lines()
        .find(|l| l.starts_with("crossline_webrtc_shared_hold_frames_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(
        shared >= 20.0,
        "shared hold frames while the agent rang: {shared}"
    );
    std::thread::sleep(Duration::from_secs(3));
    b.click("#call-hangup");
    b.wait_js(
        "document.body.dataset.call === 'ended'",
        WAIT,
        "the call ended",
    );
    let agent = agent.join().unwrap();
    assert!(agent.ok(), "agent: {}", agent.describe());
    std::thread::sleep(Duration::from_millis(300));
    let (file, _keep) = cap.stop();
    let rtp = vec![format!("udp.port=={agent_media},rtp")];
    let rows = tshark_fields(&file, &rtp, "rtp", &["rtp.p_type", "rtp.payload"]);
    let levels: Vec<f64> = rows
        .iter()
        .filter(|r| r[0] == "0")
        .map(|r| tone_level(&pcmu_hex_to_linear(&r[1]), 1000.0))
        .collect();
    let loud = levels.iter().filter(|l| **l > 2000.0).count();
    let m = gw.http_get("/metrics").1;
    let up: Vec<&str> = m.lines().filter(|l| l.contains("webrtc")).collect();
    assert!(
        loud >= 50,
        "{up:?}\n{}",
        gw.log()
            .lines()
            .filter(|l| l.contains("transfer")
                || l.contains("web")
                || l.contains("RTP")
                || l.contains("Opus"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        loud >= 50,
        "browser tone in {loud} of {} frames at the agent (browser got {bytes} bytes, level {level})",
        levels.len()
    );
    eprintln!(
        "browser got {bytes} bytes at level {level}; agent heard the tone in {loud} of {} frames",
        levels.len()
    );
    gw.wait_for_log("web call ending", WAIT);
}

/// Bad offers get a clear refusal; a stranger can't call from someone
/// else's chat or hang up someone else's call; the gateway carries on.
#[test]
fn bad_offers_and_strangers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("web-chat.toml"),
        "name = \"web-chat\"\nchannel = \"chat\"\n\n[[nodes]]\nid = \"hi\"\ntype = \"handoff\"\n",
    )
    .unwrap();
    let gw = Gateway::start(&format!(
        "[flows]\ndir = \"{}\"\n\n[chat]\nweb_flow = \"web-chat\"\n",
        dir.path().display()
    ));
    let page = gw.http("GET", "/chat/", &[], None);
    assert!(page
        .body
        .contains("name=\"crossline-webrtc\" content=\"on\""));
    let id = page.conversation_id();
    let cookie = page.cookie_header();
    let path = format!("/chat/call?c={id}");
    let sdp = [
        ("Content-Type", "application/sdp"),
        ("Cookie", cookie.as_str()),
    ];
    for garbage in [
        "",
        "hello",
        "v=0\r\nm=audio x RTP/AVP\r\n",
        &"a".repeat(70_000),
    ] {
        let r = gw.http("POST", &path, &sdp, Some(garbage));
        assert!(
            [400, 413].contains(&r.status),
            "{} for {:?}: {}",
            r.status,
            &garbage[..garbage.len().min(20)],
            r.body
        );
    }
    let stranger = gw.http(
        "POST",
        &path,
        &[("Content-Type", "application/sdp")],
        Some("v=0\r\n"),
    );
    assert_eq!(stranger.status, 403);
    let cross_site = gw.http(
        "POST",
        &path,
        &[
            ("Content-Type", "application/sdp"),
            ("Cookie", cookie.as_str()),
            ("Origin", "https://evil.example"),
        ],
        Some("v=0\r\n"),
    );
    assert_eq!(cross_site.status, 403);
    assert_eq!(
        gw.http("DELETE", "/chat/call/nosuchcall", &[], None).status,
        404
    );
    assert_eq!(gw.http_get("/healthz").0, 200);
}
