//! Virtual hold, end to end: a SIPp caller waiting in a queue whose only
//! agent is paused hears the callback offer, presses 1 (RFC 2833) and
//! hangs up keeping their place. When the agent is free, crossline calls
//! them back through the trunk (a SIPp UAS checks the number) before the
//! caller who joined after is offered, and bridges them to the agent (a
//! SIPp agent that answers and talks). The place also survives a restart.

mod common;

use std::time::Duration;

use common::audio::*;
use common::phones::{sipp_agent, waiting_caller};
use common::*;

const OPERATOR: &str = "operator-secret-for-vhold-01";
/// The caller's number: a valid E.164 number, so the offer is made.
const CALLER: &str = "+34612345678";

struct Setup {
    gw: Gateway,
    _dir: tempfile::TempDir,
}

/// A gateway whose calls wait in queue "support" (agent `agent`), with
/// the callback offer after 1 s on a 2 s announcement timer and
/// `queue_extra` keys, and a trunk to `trunk_port` for the callbacks.
fn gateway(agent: &str, trunk_port: u16, queue_extra: &str) -> Setup {
    gateway_with_trunk(
        agent,
        trunk_port,
        queue_extra,
        "inbound_cidrs = [\"127.0.0.0/8\"]\n",
    )
}

/// [`gateway`] whose trunk takes inbound calls as `trunk_inbound` says
/// (empty: no inbound calls come from it, so callers are strangers).
fn gateway_with_trunk(
    agent: &str,
    trunk_port: u16,
    queue_extra: &str,
    trunk_inbound: &str,
) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    std::fs::write(
        flows.join("support.toml"),
        "name = \"support\"\n\n[[nodes]]\nid = \"wait\"\ntype = \"queue\"\nqueue = \"support\"\n",
    )
    .unwrap();
    let gw = Gateway::start(&format!(
        "[flows]\ndir = \"{flows}\"\n\n\
         [http]\noperator_token = \"{OPERATOR}\"\n\n\
         [callbacks]\nring_timeout_secs = 10\n\n\
         [[trunks]]\nname = \"carrier\"\noutbound_proxy = \"sip:127.0.0.1:{trunk_port}\"\ncaller_id = \"+15550100000\"\n{trunk_inbound}\n\
         [[queues]]\nname = \"support\"\nagents = [{{ target = \"{agent}\" }}]\n\
         offer_callback_after_secs = 1\nannounce_interval_secs = 2\nwrap_up_secs = 1\nring_timeout_secs = 10\n{queue_extra}\n\
         [[routes]]\nflow = \"support\"\n",
        flows = flows.display(),
    ));
    Setup { gw, _dir: dir }
}

/// The customer's phone behind the trunk (audio on `media_port`): one
/// call, to [`CALLER`].
fn customer(trunk_port: u16, media_port: u16) -> std::thread::JoinHandle<Sipp> {
    std::thread::spawn(move || {
        sipp_on(
            &["-sf", &scenario("uas_callback_customer.xml"), "-m", "1"],
            Duration::from_secs(90),
            trunk_port,
            media_port,
        )
    })
}

/// A caller from [`CALLER`] who waits 5 s, presses 1, and stays until
/// crossline hangs up (after the confirmation).
fn caller_pressing_1(gw: &Gateway) -> std::thread::JoinHandle<Sipp> {
    let text = std::fs::read_to_string(scenario("uac_dtmf.xml"))
        .unwrap()
        .replace("DIGIT", "1")
        .replace("+15551234567", CALLER);
    let file = gw.dir.path().join("press1.xml");
    std::fs::write(&file, text).unwrap();
    let addr = gw.sip_addr();
    std::thread::spawn(move || {
        sipp(
            &[
                "-sf",
                &path_str(&file),
                &addr,
                "-s",
                "support",
                "-m",
                "1",
                "-d",
                "5000",
            ],
            Duration::from_secs(40),
        )
    })
}

fn set_agent(gw: &Gateway, target: &str, state: &str) {
    let r = gw.api(
        OPERATOR,
        "POST",
        "/v1/agents/state",
        Some(&serde_json::json!({ "target": target, "state": state })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

fn lines_with(log: &str, needle: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// A field of a log line's event (`on=call-3` for "on"): the last one of
/// that name, after the span's.
fn field(line: &str, name: &str) -> String {
    let prefix = format!("{name}=");
    line.split_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix(&prefix))
        .unwrap_or_default()
        .to_string()
}

/// The queue's callers as /v1/queues shows them: (line, waited secs).
fn callers(gw: &Gateway) -> Vec<(String, u64)> {
    let queues = gw.api(OPERATOR, "GET", "/v1/queues", None).json();
    queues["queues"][0]["callers"]
        .as_array()
        .unwrap_or_else(|| panic!("{queues}"))
        .iter()
        .map(|c| {
            (
                c["line"].as_str().unwrap_or_default().to_string(),
                c["waited_secs"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// Press 1, hang up, keep the place: the callback comes before the caller
/// who joined later is offered, and is bridged to the agent, whose audio
/// (not the queue's 400 Hz music) reaches the customer's phone.
#[test]
fn a_virtual_hold_caller_is_called_back_first_and_bridged_to_the_agent() {
    require("espeak-ng", "espeak-ng");
    let trunk_port = free_port();
    let media_port = free_port();
    let (a, agent_a) = sipp_agent(2, 2000);
    let phone = customer(trunk_port, media_port);
    std::thread::sleep(Duration::from_millis(400));
    let music = tempfile::tempdir().unwrap();
    let tone = music.path().join("music.wav");
    write_tone(&tone, 400.0, 2.0, 8000.0, 8000);
    let s = gateway(
        &a,
        trunk_port,
        &format!("hold_music = [\"{}\"]\n", tone.display()),
    );
    let gw = &s.gw;
    set_agent(gw, &a, "paused");

    let first = caller_pressing_1(gw).join().unwrap();
    assert!(first.ok(), "first caller: {}", first.describe());
    let log = gw.log();
    assert!(
        log.contains("To be called back without losing your place, press 1."),
        "the offer was said:\n{log}"
    );
    assert!(
        log.contains("queue: caller chose a callback; their place is kept"),
        "{log}"
    );
    assert_no_pii(&log, &[CALLER]);

    let second = waiting_caller(gw, "support");
    std::thread::sleep(Duration::from_millis(1500));
    let waiting = callers(gw);
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    assert_eq!(waiting[0].0, "virtual", "the first keeps their place");
    assert!(waiting[0].1 >= 5, "time waited kept: {waiting:?}");
    assert_eq!(waiting[1].0, "on_line");

    let capture = start_capture(&format!("udp dst port {media_port}"));
    set_agent(gw, &a, "available");
    let phone = phone.join().unwrap();
    assert!(phone.ok(), "the customer's phone: {}", phone.describe());
    let (file, _keep) = capture.stop();
    let second = second.join().unwrap();
    assert!(second.ok(), "second caller: {}", second.describe());
    let agent_a = agent_a.join().unwrap();
    assert!(agent_a.ok(), "agent: {}", agent_a.describe());

    let log = gw.log();
    let back = lines_with(&log, "queue: called-back caller is on the line");
    assert_eq!(back.len(), 1, "{log}");
    let callback_call = field(&back[0], "on");
    // The agent was rung first for the called-back customer, and only
    // then for the second caller.
    let rung: Vec<String> = lines_with(&log, "transfer: ringing agent")
        .iter()
        .map(|l| field(l, "caller"))
        .collect();
    assert_eq!(rung.len(), 2, "{log}");
    assert_eq!(rung[0], callback_call, "{log}");
    assert_ne!(rung[1], callback_call, "{log}");
    let bridged = lines_with(&log, "queue: bridged");
    assert_eq!(bridged.len(), 2, "{log}");
    assert_eq!(field(&bridged[0], "on"), callback_call, "{log}");
    assert!(log.contains("queue: called-back caller reached an agent"));
    // What the customer heard: the music while the agent rang, then the
    // agent's audio through the bridge.
    let ringing = lines_with(&log, "transfer: ringing agent");
    let t_ring = seconds_of_day(&ringing[0]);
    let t_bridge = seconds_of_day(&lines_with(&log, "transfer: bridged")[0]);
    let frames: Vec<(f64, f64, f64)> = tshark_fields(
        &file,
        &[format!("udp.port=={media_port},rtp")],
        &format!("udp.dstport == {media_port} && rtp"),
        &["frame.time_epoch", "rtp.payload"],
    )
    .iter()
    .map(|r| {
        let t = r[0].parse::<f64>().unwrap() % 86_400.0;
        let samples = pcmu_hex_to_linear(&r[1]);
        let rms = (samples.iter().map(|x| x * x).sum::<f64>() / samples.len().max(1) as f64).sqrt();
        (t, tone_level(&samples, 400.0), rms)
    })
    .collect();
    let window = |from: f64, to: f64| -> Vec<(f64, f64, f64)> {
        frames
            .iter()
            .copied()
            .filter(|f| f.0 > from && f.0 < to)
            .collect()
    };
    let while_ringing = window(t_ring + 0.3, t_bridge - 0.2);
    let music_frames = while_ringing.iter().filter(|f| f.1 > 5000.0).count();
    assert!(
        while_ringing.len() > 50 && music_frames * 10 >= while_ringing.len() * 9,
        "the queue's music while the agent rang: {music_frames}/{}",
        while_ringing.len()
    );
    let bridged_audio = window(t_bridge + 0.4, t_bridge + 1.6);
    let agent_frames = bridged_audio
        .iter()
        .filter(|f| f.1 < 1000.0 && f.2 > 100.0)
        .count();
    assert!(
        bridged_audio.len() > 40 && agent_frames * 2 >= bridged_audio.len(),
        "the agent's audio after the bridge: {agent_frames}/{}",
        bridged_audio.len()
    );

    let metrics = gw.http_get("/metrics").1;
    let q = "{queue=\"support\"}";
    assert!(
        metric_value(
            &metrics,
            &format!("crossline_queue_callbacks_offered_total{q}")
        ) >= 1.0
    );
    for name in ["accepted", "placed", "connected"] {
        assert_eq!(
            metric_value(
                &metrics,
                &format!("crossline_queue_callbacks_{name}_total{q}")
            ),
            1.0,
            "{name}"
        );
    }
    assert_eq!(
        metric_value(&metrics, &format!("crossline_queue_answered_total{q}")),
        2.0
    );
    assert!(callers(gw).is_empty());
}

/// The virtual-hold caller's place is in the store: stopped (SIGTERM, by
/// PID) and started again on the same SQLite file, crossline calls them
/// back and bridges them to the agent.
#[test]
fn a_virtual_hold_place_survives_a_restart() {
    require("espeak-ng", "espeak-ng");
    let trunk_port = free_port();
    let (a, agent_a) = sipp_agent(1, 1000);
    let phone = customer(trunk_port, free_port());
    std::thread::sleep(Duration::from_millis(400));
    let mut s = gateway(&a, trunk_port, "");
    set_agent(&s.gw, &a, "paused");
    let first = caller_pressing_1(&s.gw).join().unwrap();
    assert!(first.ok(), "caller: {}", first.describe());
    let waiting = callers(&s.gw);
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0].0, "virtual");

    // Started again the agent is available (pauses aren't kept): the
    // restored caller is first, and called back at once.
    s.gw.stop_and_restart();
    let phone = phone.join().unwrap();
    assert!(phone.ok(), "the customer's phone: {}", phone.describe());
    let agent_a = agent_a.join().unwrap();
    assert!(agent_a.ok(), "agent: {}", agent_a.describe());
    let log = s.gw.log();
    let after = &log[log.find("starting again").unwrap()..];
    assert!(after.contains("virtual_hold_restored=1"), "{after}");
    assert!(
        after.contains("queue: calling back a virtual-hold caller"),
        "{after}"
    );
    assert!(
        after.contains("queue: called-back caller reached an agent"),
        "{after}"
    );
    let metrics = s.gw.http_get("/metrics").1;
    assert_eq!(
        metric_value(
            &metrics,
            "crossline_queue_callbacks_connected_total{queue=\"support\"}"
        ),
        1.0
    );
    // Reached an agent: the row is gone, so another restart calls nobody.
    s.gw.stop_and_restart();
    let log = s.gw.log();
    let last = &log[log.rfind("starting again").unwrap()..];
    assert!(last.contains("virtual_hold_restored=0"), "{last}");
}

/// The customer's phone is busy every time: the callback is tried again
/// after callback_retry_secs, and after callback_attempts the caller is
/// dropped, counted, and their row is gone.
#[test]
fn a_callback_that_is_never_answered_is_retried_then_dropped() {
    require("espeak-ng", "espeak-ng");
    let trunk_port = free_port();
    // Nobody is rung: the only caller is virtual.
    let agent = format!("sip:agent@127.0.0.1:{}", free_port());
    let busy = std::thread::spawn(move || {
        sipp_on(
            &["-sf", &scenario("uas_busy.xml"), "-m", "2"],
            Duration::from_secs(60),
            trunk_port,
            free_port(),
        )
    });
    std::thread::sleep(Duration::from_millis(400));
    let s = gateway(
        &agent,
        trunk_port,
        "callback_attempts = 2\ncallback_retry_secs = 2\n",
    );
    let gw = &s.gw;
    set_agent(gw, &agent, "paused");
    let first = caller_pressing_1(gw).join().unwrap();
    assert!(first.ok(), "caller: {}", first.describe());
    set_agent(gw, &agent, "available");
    let busy = busy.join().unwrap();
    assert!(busy.ok(), "two INVITEs, both 486: {}", busy.describe());
    gw.wait_for_log(
        "queue: virtual-hold caller dropped",
        Duration::from_secs(10),
    );
    let log = gw.log();
    let placed: Vec<f64> = lines_with(&log, "queue: calling back a virtual-hold caller")
        .iter()
        .map(|l| seconds_of_day(l))
        .collect();
    assert_eq!(placed.len(), 2, "{log}");
    assert!(
        placed[1] - placed[0] >= 1.9,
        "retried after callback_retry_secs: {:.2} s",
        placed[1] - placed[0]
    );
    let metrics = gw.http_get("/metrics").1;
    let failed = |dropped: &str| {
        metric_value(
            &metrics,
            &format!(
                "crossline_queue_callbacks_failed_total{{queue=\"support\",dropped=\"{dropped}\"}}"
            ),
        )
    };
    assert_eq!((failed("false"), failed("true")), (1.0, 1.0), "{metrics}");
    assert_eq!(
        metric_value(
            &metrics,
            "crossline_queue_callbacks_placed_total{queue=\"support\"}"
        ),
        2.0
    );
    // Dropped callers count as abandoned (exported every second).
    wait_metric(
        gw,
        "crossline_queue_abandoned_total{queue=\"support\"}",
        1.0,
        Duration::from_secs(3),
    );
    assert!(callers(gw).is_empty());
    // Each try was a callback of its own, failed with the phone's 486.
    let busy_ends = lines_with(&log, "state=failed sip_status=Some(486)");
    assert_eq!(busy_ends.len(), 2, "{log}");
}

/// A caller with a good number who didn't come in over a trunk (a From
/// anyone on the internet could have written) waits past
/// offer_callback_after_secs, hears their place, and is never offered a
/// callback: crossline won't dial a number for a stranger.
#[test]
fn a_caller_not_from_a_trunk_is_never_offered_a_callback() {
    require("espeak-ng", "espeak-ng");
    let agent = "sip:agent@127.0.0.1:9";
    let s = gateway_with_trunk(agent, free_port(), "", "");
    let gw = &s.gw;
    set_agent(gw, agent, "paused");
    let text = std::fs::read_to_string(scenario("uac_wait_bye.xml"))
        .unwrap()
        .replace("+15551234567", CALLER);
    let file = gw.dir.path().join("stranger.xml");
    std::fs::write(&file, text).unwrap();
    let addr = gw.sip_addr();
    let caller = std::thread::spawn(move || {
        sipp(
            &["-sf", &path_str(&file), &addr, "-s", "support", "-m", "1"],
            Duration::from_secs(40),
        )
    });
    // Offers would start after 1 s and come with every announcement (2 s).
    std::thread::sleep(Duration::from_secs(6));
    let log = gw.log();
    assert!(
        lines_with(&log, "announcing the place").len() >= 2,
        "the caller waited and heard their place:\n{log}"
    );
    assert!(!log.contains("To be called back"), "{log}");
    let metrics = gw.http_get("/metrics").1;
    assert_eq!(
        metric_value(
            &metrics,
            "crossline_queue_callbacks_offered_total{queue=\"support\"}"
        ),
        0.0
    );
    drop(s);
    let _ = caller.join();
}
