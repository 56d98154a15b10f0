//! Queues (ACD), end to end: SIPp callers wait in a `[[queues]]` queue
//! with music and spoken position announcements (espeak-ng), SIPp agents
//! are rung in longest-idle order and respected in wrap-up, and a caller
//! leaves for the fallback flow on pressing 0 or after max_wait_secs.

mod common;

use std::time::Duration;

use common::phones::*;
use common::standin::*;
use common::*;

/// A gateway whose calls all go to the `queue` node of queue "support",
/// with `queue_extra` lines in the queue, and a fallback flow that says
/// "fallback reached" and hangs up.
fn gateway(agents: &[String], queue_extra: &str) -> (Gateway, tempfile::TempDir) {
    gateway_with(agents, queue_extra, "")
}

/// [`gateway`], with `extra` sections in the config.
fn gateway_with(agents: &[String], queue_extra: &str, extra: &str) -> (Gateway, tempfile::TempDir) {
    gateway_needing(agents, queue_extra, extra, &[])
}

/// [`gateway_with`], its callers needing `skills`. An agent written as an
/// inline table (`{ target = ..., skills = [...] }`) goes in as it is.
fn gateway_needing(
    agents: &[String],
    queue_extra: &str,
    extra: &str,
    skills: &[&str],
) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    std::fs::write(
        flows.join("support.toml"),
        format!(
            r#"name = "support"

[[nodes]]
id = "wait"
type = "queue"
queue = "support"
skills = {skills:?}
next = "bye"

[[nodes]]
id = "bye"
type = "hangup"
"#
        ),
    )
    .unwrap();
    std::fs::write(
        flows.join("voicemail.toml"),
        r#"name = "voicemail"

[[nodes]]
id = "fallback-reached"
type = "hangup"
message = "Please call again later."
"#,
    )
    .unwrap();
    // A breakout to chat, for queues whose fallback_flow is "to-chat".
    std::fs::write(
        flows.join("to-chat.toml"),
        r#"name = "to-chat"

[[nodes]]
id = "to-chat"
type = "breakout"
sms_message = "Sorry for the wait. Leave us your email here:"
breakout_flow = "collect-email"
hold_message = ""
timeout_secs = 3
timeout_flow = "voicemail"
next = "thanks"

[[nodes]]
id = "thanks"
type = "hangup"
"#,
    )
    .unwrap();
    std::fs::copy(
        repo().join("tests/flows/breakout/chat.toml"),
        flows.join("collect-email.toml"),
    )
    .unwrap();
    let fallback = if queue_extra.contains("fallback_flow") {
        ""
    } else {
        "fallback_flow = \"voicemail\"\n"
    };
    let agents = agents
        .iter()
        .map(|a| match a.starts_with('{') {
            true => a.clone(),
            false => format!("{{ target = \"{a}\" }}"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let gw = Gateway::start(&format!(
        "{extra}\n[flows]\ndir = \"{}\"\n\n[[queues]]\nname = \"support\"\nagents = [{agents}]\n{fallback}{queue_extra}\n\n[[routes]]\nflow = \"support\"\n",
        flows.display()
    ));
    (gw, dir)
}

/// Log lines holding `needle`, in order.
fn lines_with(gw: &Gateway, needle: &str) -> Vec<String> {
    gw.log()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Three callers, two agents: the first two are bridged at once (to
/// different agents, in listed order when both idled alike), the third
/// hears "you are number 1" and gets the agent that became free first, only
/// after its wrap-up.
#[test]
fn three_callers_two_agents_the_third_hears_its_place_and_waits_for_wrap_up() {
    require("espeak-ng", "espeak-ng");
    let (a, agent_a) = sipp_agent(2, 3000);
    let (b, agent_b) = sipp_agent(1, 8000);
    std::thread::sleep(Duration::from_millis(400));
    let (gw, _dir) = gateway(
        &[a.clone(), b.clone()],
        "announce_interval_secs = 2\nwrap_up_secs = 2\nring_timeout_secs = 10\n",
    );
    let callers: Vec<_> = (0..3)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(if i == 0 { 0 } else { 300 }));
            waiting_caller(&gw, "support")
        })
        .collect();
    for (i, c) in callers.into_iter().enumerate() {
        let c = c.join().unwrap();
        assert!(c.ok(), "caller {i}: {}", c.describe());
    }
    for (name, a) in [("a", agent_a), ("b", agent_b)] {
        let a = a.join().unwrap();
        assert!(a.ok(), "agent {name}: {}", a.describe());
    }
    let log = gw.log();
    assert!(
        log.contains("You are number 1 in the queue."),
        "the third caller hears its place:\n{log}"
    );
    let bridged = lines_with(&gw, "queue: bridged");
    assert_eq!(bridged.len(), 3, "{log}");
    let to = |line: &str, agent: &str| line.contains(&format!("agent={agent}"));
    assert!(to(&bridged[0], &a) && to(&bridged[1], &b), "{bridged:#?}");
    // a hung up first: it had been idle longest when its wrap-up ended.
    assert!(to(&bridged[2], &a), "{bridged:#?}");
    let first_hangup = seconds_of_day(&lines_with(&gw, "queue: agent hung up")[0]);
    let third_ring = seconds_of_day(&lines_with(&gw, "transfer: ringing agent")[2]);
    assert!(
        third_ring - first_hangup >= 1.9,
        "wrap-up of 2 s respected: rang again {:.2} s after the hang-up",
        third_ring - first_hangup
    );
    let metrics = gw.http_get("/metrics").1;
    assert_eq!(
        metric_value(
            &metrics,
            "crossline_queue_answered_total{queue=\"support\"}"
        ),
        3.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            "crossline_queue_answered_within_sla_total{queue=\"support\"}"
        ),
        3.0
    );
    assert_eq!(
        metric_value(&metrics, "crossline_queue_waiting{queue=\"support\"}"),
        0.0
    );
}

/// Nobody answers (the agent's port is closed): after max_wait_secs the
/// caller leaves for the fallback flow, and is counted abandoned.
#[test]
fn max_wait_sends_the_caller_to_the_fallback_flow() {
    let closed = format!("sip:agent@127.0.0.1:{}", free_port());
    let (gw, _dir) = gateway(&[closed], "max_wait_secs = 3\nannounce_interval_secs = 0\n");
    let caller = caller_waiting(&gw, "support");
    assert!(caller.ok(), "{}", caller.describe());
    let log = gw.log();
    assert!(
        log.contains("queue: caller left for the fallback") && log.contains("why=max_wait"),
        "{log}"
    );
    assert!(log.contains("node=fallback-reached"), "{log}");
    let left = seconds_of_day(&lines_with(&gw, "queue: caller left")[0]);
    let joined = seconds_of_day(&lines_with(&gw, "queue: caller waiting")[0]);
    assert!(
        (2.9..5.0).contains(&(left - joined)),
        "left after {:.2} s",
        left - joined
    );
    wait_metric(
        &gw,
        "crossline_queue_abandoned_total{queue=\"support\"}",
        1.0,
        Duration::from_secs(3),
    );
}

/// Pressing 0 leaves for the fallback at once.
#[test]
fn pressing_zero_leaves_for_the_fallback() {
    let closed = format!("sip:agent@127.0.0.1:{}", free_port());
    let (gw, _dir) = gateway(
        &[closed],
        "max_wait_secs = 60\nannounce_interval_secs = 0\n",
    );
    let text = std::fs::read_to_string(scenario("uac_dtmf.xml")).unwrap();
    let press = gw.dir.path().join("press0.xml");
    std::fs::write(&press, text.replace("DIGIT", "0")).unwrap();
    let caller = sipp(
        &[
            "-sf",
            &path_str(&press),
            &gw.sip_addr(),
            "-s",
            "support",
            "-m",
            "1",
            "-d",
            "1000",
        ],
        Duration::from_secs(30),
    );
    assert!(caller.ok(), "{}", caller.describe());
    let log = gw.log();
    assert!(log.contains("why=pressed_0"), "{log}");
    assert!(log.contains("node=fallback-reached"), "{log}");
}

/// A SIPp caller to the queue who hangs up `talk_ms` after the gateway
/// answers (it answers at once, into the queue).
fn caller(gw: &Gateway, talk_ms: u32) -> std::thread::JoinHandle<Sipp> {
    let addr = gw.sip_addr();
    std::thread::spawn(move || {
        sipp(
            &[
                "-sn",
                "uac",
                "-s",
                "support",
                &addr,
                "-m",
                "1",
                "-d",
                &talk_ms.to_string(),
            ],
            Duration::from_secs(40),
        )
    })
}

/// Agents on real phones: alice on pjsua2 and bob on baresip register as
/// `[[users]]` and are the queue's `user:` agents. Two callers go to alice
/// then bob (equally idle: in listed order); the third hears it is number
/// 1, and gets alice, free the longest once both are wrapped up.
#[test]
fn registered_agents_on_pjsua2_and_baresip_answer_in_longest_idle_order() {
    require("espeak-ng", "espeak-ng");
    let (gw, _dir) = gateway_with(
        &["user:alice".into(), "user:bob".into()],
        "announce_interval_secs = 2\nwrap_up_secs = 1\nring_timeout_secs = 10\n",
        "[registrar]\nenabled = true\ndomain = \"crossline.test\"\ndigest_algorithms = [\"MD5\"]\n\n\
         [[users]]\nname = \"alice\"\npassword = \"alice-pw-1\"\n\n\
         [[users]]\nname = \"bob\"\npassword = \"bob-pw-2\"\n",
    );
    let alice = pjsua_agent(&gw, "alice", "alice-pw-1", &[]);
    let (bob, _conf) = baresip_agent(&gw, "bob", "bob-pw-2");
    alice.wait_for("reg 200", Duration::from_secs(15));
    gw.wait_for_log("registered user=bob", Duration::from_secs(15));
    let first = caller(&gw, 3000);
    std::thread::sleep(Duration::from_millis(300));
    let second = caller(&gw, 3000);
    std::thread::sleep(Duration::from_millis(300));
    let third = caller(&gw, 10000);
    for (name, c) in [("first", first), ("second", second), ("third", third)] {
        let c = c.join().unwrap();
        assert!(c.ok(), "{name} caller: {}\n{}", c.describe(), gw.log());
    }
    let bridged = lines_with(&gw, "queue: bridged");
    assert_eq!(bridged.len(), 3, "{bridged:#?}\n{}", bob.output());
    let to = |i: usize, agent: &str| bridged[i].contains(&format!("agent=user:{agent}"));
    assert!(
        to(0, "alice") && to(1, "bob") && to(2, "alice"),
        "{bridged:#?}"
    );
    assert!(gw.log().contains("You are number 1 in the queue."));
    assert!(
        bob.output().contains("Call established"),
        "{}",
        bob.output()
    );
    alice.wait_for("state CONFIRMED 200", Duration::from_secs(1));
}

const OPERATOR: &str = "operator-secret-0123456";

/// POST /v1/agents/state as the operator.
fn set_agent(gw: &Gateway, state: &str, target: &str) -> HttpReply {
    gw.api(
        OPERATOR,
        "POST",
        "/v1/agents/state",
        Some(&serde_json::json!({ "target": target, "state": state })),
    )
}

/// An operator pauses the only agent over the API: a caller waits (the
/// queue shows them and the agent paused, nobody rings); made available
/// again, the agent is rung and bridged at once.
#[test]
fn a_paused_agent_takes_no_calls_until_made_available() {
    let (a, agent_a) = sipp_agent(1, 1000);
    let (gw, _dir) = gateway_with(
        std::slice::from_ref(&a),
        "announce_interval_secs = 0\n",
        &format!("[http]\noperator_token = \"{OPERATOR}\"\n"),
    );
    let set = |state: &str, target: &str| set_agent(&gw, state, target);
    let r = set("paused", &a);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["agent"]["state"], "paused");
    assert_eq!(set("paused", "sip:nobody@127.0.0.1").status, 404);
    assert_eq!(set("asleep", &a).status, 422);
    let waiting = waiting_caller(&gw, "support");
    gw.wait_for_log("queue: caller waiting", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(1500));
    let queues = gw.api(OPERATOR, "GET", "/v1/queues", None).json();
    let support = &queues["queues"][0];
    assert_eq!(support["name"], "support");
    assert_eq!(support["waiting"], 1, "{queues}");
    assert!(support["longest_wait_secs"].as_u64() >= Some(1), "{queues}");
    assert_eq!(support["agents"][0]["state"], "paused", "{queues}");
    assert!(!gw.log().contains("transfer: ringing agent"));
    assert_eq!(set("available", &a).status, 200);
    let caller = waiting.join().unwrap();
    assert!(caller.ok(), "{}", caller.describe());
    let agent = agent_a.join().unwrap();
    assert!(agent.ok(), "{}", agent.describe());
    assert_eq!(lines_with(&gw, "queue: bridged").len(), 1);
    let agents = gw.api(OPERATOR, "GET", "/v1/agents", None).json();
    assert_eq!(agents["agents"][0]["answered"], 1, "{agents}");
}

/// The seeds combined: after max_wait_secs the queue's fallback is a
/// breakout to chat, which texts the caller a link (the Twilio stand-in
/// checks the request) while the call holds.
#[test]
fn max_wait_falls_back_to_a_breakout_to_chat() {
    require("espeak-ng", "espeak-ng");
    let (port, log, _twilio) = stand_in();
    let closed = format!("sip:agent@127.0.0.1:{}", free_port());
    let (gw, _dir) = gateway_with(
        &[closed],
        "max_wait_secs = 2\nannounce_interval_secs = 0\nfallback_flow = \"to-chat\"\n",
        &format!(
            "[messaging.sms]\nprovider = \"twilio\"\nbase_url = \"http://127.0.0.1:{port}\"\n\
             account_sid = \"AC0123456789abcdef\"\nauth_token = \"secret-token\"\nfrom = \"+15550100000\"\n"
        ),
    );
    let caller = waiting_caller(&gw, "support");
    let (link, sms) = sms_link(&gw, &log);
    assert_eq!(sms.get("To").map(String::as_str), Some("+15551234567"));
    assert!(link.contains("/b/"), "{link}");
    let caller = caller.join().unwrap();
    assert!(caller.ok(), "{}", caller.describe());
    let log = gw.log();
    assert!(log.contains("why=max_wait"), "{log}");
    assert!(log.contains("node=to-chat"), "{log}");
    // Nobody opened the link: the breakout timed out to the voicemail flow.
    assert!(log.contains("node=fallback-reached"), "{log}");
}

/// A queue of one place whose agent never answers, with `queue_extra`, and
/// a first caller waiting in it (until max_wait_secs).
fn full_queue(queue_extra: &str) -> (Gateway, tempfile::TempDir, std::thread::JoinHandle<Sipp>) {
    let closed = format!("sip:agent@127.0.0.1:{}", free_port());
    let (gw, dir) = gateway(
        &[closed],
        &format!("max_callers = 1\nannounce_interval_secs = 0\n{queue_extra}"),
    );
    let first = waiting_caller(&gw, "support");
    gw.wait_for_log("queue: caller waiting", Duration::from_secs(5));
    (gw, dir, first)
}

/// One caller was turned away, and it never waited.
fn assert_turned_away_once(gw: &Gateway) {
    assert!(gw.log().contains("queue: full, caller turned away"));
    assert_eq!(lines_with(gw, "queue: caller waiting").len(), 1);
    wait_metric(
        gw,
        "crossline_queue_full_total{queue=\"support\"}",
        1.0,
        Duration::from_secs(3),
    );
}

/// max_callers = 1: while one caller waits (nobody answers), the next goes
/// straight to the fallback flow, and is counted.
#[test]
fn a_full_queue_sends_the_next_caller_to_the_fallback() {
    let (gw, _dir, first) = full_queue("max_wait_secs = 6\n");
    let second = waiting_caller(&gw, "support").join().unwrap();
    assert!(second.ok(), "{}", second.describe());
    let log = gw.log();
    assert_turned_away_once(&gw);
    let turned_away = seconds_of_day(&lines_with(&gw, "queue: full")[0]);
    let joined = seconds_of_day(&lines_with(&gw, "queue: caller waiting")[0]);
    // In the fallback long before the first caller's max_wait_secs.
    assert!(turned_away - joined < 3.0, "{log}");
    assert!(log.contains("node=fallback-reached"), "{log}");
    let first = first.join().unwrap();
    assert!(first.ok(), "{}", first.describe());
    assert!(gw.log().contains("why=max_wait"));
}

/// A full queue with no fallback flow: the caller (answered, a TOML flow)
/// hears the busy tone (480 + 620 Hz, half a second on, half off; read
/// from the RTP it was sent) for 3 s, then the gateway hangs up.
#[test]
fn a_full_queue_without_a_fallback_is_busy() {
    use common::audio::{pcmu_hex_to_linear, tone_level};
    let (gw, _dir, first) = full_queue("max_wait_secs = 8\n# no fallback_flow: busy\n");
    let media = free_port();
    // SIPp's [auto_media_port] is a little above -mp.
    let cap = start_capture(&format!("udp dst portrange {media}-{}", media + 40));
    let started = std::time::Instant::now();
    let second = sipp_with_media_port(
        &[
            "-sf",
            &scenario("uac_wait_bye.xml"),
            &gw.sip_addr(),
            "-s",
            "support",
            "-m",
            "1",
        ],
        Duration::from_secs(30),
        media,
    );
    let took = started.elapsed();
    let (file, _keep) = cap.stop();
    assert!(second.ok(), "{}", second.describe());
    assert!(
        (Duration::from_millis(2900)..Duration::from_secs(8)).contains(&took),
        "hung up after {took:?}"
    );
    // Another test's RTP may fall in the range too: the caller's stream is
    // the one with the most busy-tone frames.
    let mut ports: Vec<String> = tshark_fields(&file, &[], "udp", &["udp.dstport"])
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .collect();
    ports.sort();
    ports.dedup();
    let decode: Vec<String> = ports.iter().map(|p| format!("udp.port=={p},rtp")).collect();
    let rows = tshark_fields(&file, &decode, "rtp", &["udp.dstport", "rtp.payload"]);
    // Both components strong, and nearly all the frame's power (music is
    // not).
    let is_tone = |f: &(f64, f64, f64)| {
        f.0 > 1000.0 && f.1 > 1000.0 && (f.0 * f.0 + f.1 * f.1) / 2.0 > 0.8 * f.2 * f.2
    };
    // (480 Hz level, 620 Hz level, RMS) of each frame, of one port.
    let frames_to = |port: &str| -> Vec<(f64, f64, f64)> {
        rows.iter()
            .filter(|r| r[0] == port)
            .map(|r| {
                let s = pcmu_hex_to_linear(&r[1]);
                let rms = (s.iter().map(|x| x * x).sum::<f64>() / s.len().max(1) as f64).sqrt();
                (tone_level(&s, 480.0), tone_level(&s, 620.0), rms)
            })
            .collect()
    };
    let frames = ports
        .iter()
        .map(|p| frames_to(p))
        .max_by_key(|f| f.iter().filter(|f| is_tone(f)).count())
        .expect("the caller was sent RTP");
    let on = frames.iter().filter(|f| is_tone(f)).count();
    let quiet = frames.iter().filter(|f| f.2 < 100.0).count();
    // About 150 frames in 3 s, half of them tone, half silence.
    assert!(frames.len() >= 120, "{} frames", frames.len());
    assert!(
        on >= frames.len() / 3 && quiet >= frames.len() / 3,
        "{on} tone and {quiet} silent frames of {}: {:?}",
        frames.len(),
        frames
            .iter()
            .map(|f| (f.0 as i64, f.1 as i64, f.2 as i64))
            .collect::<Vec<_>>()
    );
    assert_turned_away_once(&gw);
    assert!(!gw.log().contains("node=fallback-reached"));
    // The first leaves at max_wait_secs: no fallback, the call ends.
    let first = first.join().unwrap();
    assert!(first.ok(), "{}", first.describe());
}

/// Registered users' tags are skills: a caller needing "es" goes to bob
/// (tagged "es", on baresip), not alice (listed first, untagged, pjsua2).
#[test]
fn a_user_tagged_with_the_skill_gets_the_call() {
    let (gw, _dir) = gateway_needing(
        &["user:alice".into(), "user:bob".into()],
        "strategy = \"skills\"\nannounce_interval_secs = 0\nring_timeout_secs = 10\n",
        &format!(
            "[http]\noperator_token = \"{OPERATOR}\"\n\n\
             [registrar]\nenabled = true\ndomain = \"crossline.test\"\ndigest_algorithms = [\"MD5\"]\n\n\
             [[users]]\nname = \"alice\"\npassword = \"alice-pw-1\"\n\n\
             [[users]]\nname = \"bob\"\npassword = \"bob-pw-2\"\ntags = [\"es\", \"billing\"]\n"
        ),
        &["es"],
    );
    let alice = pjsua_agent(&gw, "alice", "alice-pw-1", &[]);
    let (bob, _conf) = baresip_agent(&gw, "bob", "bob-pw-2");
    alice.wait_for("reg 200", Duration::from_secs(15));
    gw.wait_for_log("registered user=bob", Duration::from_secs(15));
    let agents = gw.api(OPERATOR, "GET", "/v1/agents", None).json();
    assert_eq!(agents["agents"][1]["target"], "user:bob", "{agents}");
    assert_eq!(
        agents["agents"][1]["skills"],
        serde_json::json!(["es", "billing"]),
        "{agents}"
    );
    let c = caller(&gw, 3000).join().unwrap();
    assert!(c.ok(), "{}\n{}", c.describe(), gw.log());
    let bridged = lines_with(&gw, "queue: bridged");
    assert_eq!(bridged.len(), 1, "{bridged:#?}");
    assert!(bridged[0].contains("agent=user:bob"), "{bridged:#?}");
    let rung = lines_with(&gw, "transfer: ringing agent");
    assert!(
        rung.iter().all(|l| !l.contains("alice")),
        "alice has no \"es\": {rung:#?}"
    );
    assert!(
        bob.output().contains("Call established"),
        "{}",
        bob.output()
    );
}

const VIEWER: &str = "viewer-secret-01234567";
/// A display name that would be markup if the console used innerHTML.
const ANA: &str = r#"<img src=x onerror="window.pwned=1"><b>Ana</b> & co"#;

/// The console's Queues tab in a real Chromium: a SIPp caller waits (it
/// needs "fr", which no agent has, so nobody rings), the tab shows it and
/// the agents' states, and the operator's Pause and Resume buttons change
/// an agent's state through the API. A user's display name with markup in
/// it is shown as text. A viewer sees the same tab, and no button.
#[test]
fn console_queues_tab_shows_the_queue_and_pauses_agents() {
    use common::browser::{artifacts_dir, Browser};
    let en = format!("sip:en-agent@127.0.0.1:{}", free_port());
    let es = format!("sip:es-agent@127.0.0.1:{}", free_port());
    let (gw, _dir) = gateway_needing(
        &[
            format!("{{ target = \"{en}\", skills = [\"en\"] }}"),
            format!("{{ target = \"{es}\", skills = [\"es\"] }}"),
            "{ target = \"user:ana\", skills = [\"de\"] }".into(),
        ],
        "strategy = \"skills\"\nannounce_interval_secs = 0\nsla_secs = 15\nmax_callers = 5\nmax_wait_secs = 30\n",
        &format!(
            "[http]\noperator_token = \"{OPERATOR}\"\nviewer_token = \"{VIEWER}\"\n\n\
             [registrar]\nenabled = true\ndomain = \"crossline.test\"\n\n\
             [[users]]\nname = \"ana\"\npassword = \"ana-pw-1\"\ndisplay_name = '{ANA}'\n"
        ),
        &["fr"],
    );
    let set = |state: &str, target: &str| set_agent(&gw, state, target);
    assert_eq!(set("paused", &es).status, 200);
    let waiting = waiting_caller(&gw, "support");
    gw.wait_for_log("queue: caller waiting", Duration::from_secs(5));
    let shots = artifacts_dir("console_queues_tab");
    let wait = Duration::from_secs(10);
    let state_of = |target: &str| -> String {
        let agents = gw.api(VIEWER, "GET", "/v1/agents", None).json();
        agents["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["target"] == target)
            .map(|a| a["state"].as_str().unwrap().to_string())
            .unwrap()
    };
    let row = |target: &str| {
        format!("document.querySelector('#queues tr.agent[data-target=\"{target}\"]')")
    };

    // Click an agent's button, then wait until the tab shows the new state.
    let click = |b: &Browser, target: &str, action: &str, state: &str| {
        b.js(&format!(
            "{}.querySelector('button[data-action=\"{action}\"]').click(); return true",
            row(target)
        ));
        b.wait_js(
            &format!("{}.dataset.state === '{state}'", row(target)),
            wait,
            &format!("{target} {state} in the tab"),
        );
    };

    let op = Browser::desktop();
    op.sign_in_to_console(gw.http_port, OPERATOR);
    op.click("#tab-queues");
    op.wait_js(
        "(document.querySelector('#queues [data-queue=\"support\"] [data-stat=\"waiting\"] dd') || {}).textContent === '1 of 5'",
        wait,
        "one caller waiting",
    );
    let card = op.text("#queues");
    assert!(card.contains("Answered within 15 s"), "{card}");
    assert_eq!(
        op.js(&format!("return {}.dataset.state", row(&en))),
        "available"
    );
    assert_eq!(
        op.js(&format!("return {}.dataset.state", row(&es))),
        "paused"
    );
    assert_eq!(op.text("#waiting-count"), "1");
    // Live: time in state moves on without a reload.
    let secs = |target: &str| -> String {
        op.js(&format!(
            "return {}.querySelector('.agent-time').textContent",
            row(target)
        ))
        .as_str()
        .unwrap()
        .to_string()
    };
    let before = secs(&en);
    op.wait_js(
        &format!(
            "{}.querySelector('.agent-time').textContent !== '{before}'",
            row(&en)
        ),
        wait,
        "the time in state to move on",
    );
    // Markup in a name is text: no element made of it, nothing run.
    let ana = row("user:ana");
    assert_eq!(
        op.js(&format!(
            "return {ana}.querySelector('.agent-display').textContent"
        )),
        ANA
    );
    assert_eq!(
        op.js(&format!("return {ana}.querySelectorAll('img, b').length")),
        0
    );
    assert_eq!(op.js("return window.pwned === undefined"), true);
    op.screenshot(&shots, "operator");

    click(&op, &en, "pause", "paused");
    assert_eq!(state_of(&en), "paused");
    click(&op, &es, "resume", "available");
    assert_eq!(state_of(&es), "available");
    drop(op);

    // A viewer: the same numbers, no buttons, no other tabs, and the API
    // refuses it a change.
    let viewer = Browser::desktop();
    viewer.sign_in_to_console(gw.http_port, VIEWER);
    viewer.wait_js(
        "document.body.dataset.role === 'viewer' && document.querySelectorAll('#queues tr.agent').length === 3",
        wait,
        "the viewer's queues tab",
    );
    assert_eq!(
        viewer.js("return document.querySelectorAll('#queues button').length"),
        0
    );
    assert_eq!(
        viewer.js("return document.getElementById('tab-conversations').hidden"),
        true
    );
    assert_eq!(
        viewer
            .js("return document.querySelector('#queues [data-stat=\"waiting\"] dd').textContent"),
        "1 of 5"
    );
    viewer.screenshot(&shots, "viewer");
    let refused = gw.api(
        VIEWER,
        "POST",
        "/v1/agents/state",
        Some(&serde_json::json!({ "target": en, "state": "available" })),
    );
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(state_of(&en), "paused");
    drop(viewer);
    // The caller leaves at max_wait_secs, for the fallback.
    let caller = waiting.join().unwrap();
    assert!(caller.ok(), "{}", caller.describe());
}
