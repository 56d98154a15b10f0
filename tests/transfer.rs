//! Transfer to an agent, end to end: a SIPp caller picks "agent" with RFC
//! 2833 DTMF, crossline rings a SIPp agent while the caller hears hold music,
//! bridges the legs when the agent answers, and takes the fallback when
//! nobody answers.

mod common;

use std::time::Duration;

use common::audio::*;
use common::*;

/// A gateway whose "support" flow offers an agent on key 1.
fn gateway(agent_port: u16, ring_timeout: f64) -> (Gateway, tempfile::TempDir) {
    gateway_ringing(&[agent_port], "sequential", ring_timeout)
}

/// The same, ringing agents on `ports` in `ring` order.
fn gateway_ringing(ports: &[u16], ring: &str, ring_timeout: f64) -> (Gateway, tempfile::TempDir) {
    gateway_with(ports, ring, ring_timeout, "")
}

/// The same, with `extra` lines in the transfer node (`MUSIC` in them
/// names a 600 Hz tone next to the default 400 Hz music).
fn gateway_with(
    ports: &[u16],
    ring: &str,
    ring_timeout: f64,
    extra: &str,
) -> (Gateway, tempfile::TempDir) {
    let targets = ports
        .iter()
        .map(|p| format!("\"sip:agent@127.0.0.1:{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let dir = tempfile::tempdir().unwrap();
    write_tone(&dir.path().join("music.wav"), 400.0, 4.0, 8000.0, 8000);
    let own = dir.path().join("own-music.wav");
    write_tone(&own, 600.0, 4.0, 8000.0, 8000);
    let extra = extra.replace("MUSIC", &own.display().to_string());
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    std::fs::write(
        flows.join("support.toml"),
        format!(
            r#"name = "support"

[[nodes]]
id = "menu"
type = "gather"
prompt = "Press 1 for an agent."
timeout_secs = 10
branches = {{ "1" = "agent" }}
on_failure = "bye"

[[nodes]]
id = "agent"
type = "transfer"
targets = [{targets}]
ring = "{ring}"
ring_timeout_secs = {ring_timeout}
{extra}
next = "after"
on_failure = "sorry"

[[nodes]]
id = "after"
type = "hangup"
message = "The agent has left. Goodbye."

[[nodes]]
id = "sorry"
type = "hangup"
message = "Nobody is available. Goodbye."

[[nodes]]
id = "bye"
type = "hangup"
"#
        ),
    )
    .unwrap();
    let gw = Gateway::start(&format!(
        "[media]\nhold_music = [\"{}\"]\nhold_message = \"\"\n\n[flows]\ndir = \"{}\"\n\n[[routes]]\nflow = \"support\"\n",
        dir.path().join("music.wav").display(),
        flows.display()
    ));
    (gw, dir)
}

/// Per RTP packet to the caller (rows of time, seq, ssrc, payload): the
/// seconds of the day, the level of the 400 Hz hold music and the RMS.
fn music_and_level(rows: &[Vec<String>]) -> Vec<(f64, f64, f64)> {
    rows.iter()
        .map(|r| {
            let t = r[0].parse::<f64>().unwrap() % 86_400.0;
            let s = pcmu_hex_to_linear(&r[3]);
            let rms = (s.iter().map(|x| x * x).sum::<f64>() / s.len().max(1) as f64).sqrt();
            (t, tone_level(&s, 400.0), rms)
        })
        .collect()
}

/// Seconds of the day of the first log line holding `needle`.
fn logged_at(gw: &Gateway, needle: &str) -> f64 {
    let log = gw.log();
    seconds_of_day(
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in the log:\n{log}")),
    )
}

/// A SIPp agent playing `agent_scenario` on a free port, a gateway made
/// for that port by `make`, and a SIPp caller pressing 1, captured; both
/// SIPp runs must pass.
fn caller_to_agent(
    agent_scenario: &str,
    make: impl FnOnce(u16) -> (Gateway, tempfile::TempDir),
) -> (Gateway, tempfile::TempDir, CallCapture) {
    let agent_port = free_port();
    let agent_scenario = scenario(agent_scenario);
    let agent = std::thread::spawn(move || {
        sipp_on(
            &["-sf", &agent_scenario, "-m", "1"],
            Duration::from_secs(60),
            agent_port,
            free_port(),
        )
    });
    std::thread::sleep(Duration::from_millis(400));
    let (gw, dir) = make(agent_port);
    let caller = press_one(&gw);
    let capture = capture_call(
        &gw,
        &["-sf", &caller, &gw.sip_addr(), "-m", "1", "-d", "2500"],
        &["frame.time_epoch", "rtp.seq", "rtp.ssrc", "rtp.payload"],
    );
    assert!(capture.run.ok(), "caller: {}", capture.run.describe());
    let agent = agent.join().unwrap();
    assert!(agent.ok(), "agent: {}", agent.describe());
    (gw, dir, capture)
}

fn press_one(gw: &Gateway) -> String {
    let text = std::fs::read_to_string(scenario("uac_dtmf.xml")).unwrap();
    let file = gw.dir.path().join("press1.xml");
    std::fs::write(&file, text.replace("DIGIT", "1")).unwrap();
    path_str(&file)
}

/// Key 1 → the agent rings (caller hears the hold music) → answers → the
/// agent's audio reaches the caller over the same RTP stream → the agent
/// hangs up → the flow's next node says goodbye and hangs up.
#[test]
fn transfer_rings_with_hold_music_then_bridges_the_agent() {
    let (gw, _dir, capture) = caller_to_agent("uas_agent.xml", |port| gateway(port, 10.0));
    let log = gw.log();
    for n in [
        "node=menu",
        "node=agent",
        "transfer: ringing agent",
        "transfer: bridged",
        "node=after",
    ] {
        assert!(log.contains(n), "{n} missing:\n{log}");
    }
    // Wall-clock seconds of the bridge, to split the caller's audio.
    let (t_ring, t_bridge) = (
        logged_at(&gw, "transfer: ringing agent"),
        logged_at(&gw, "transfer: bridged"),
    );
    let frames = music_and_level(&capture.rows);
    assert!(
        capture.rows.iter().all(|r| r[2] == capture.rows[0][2]),
        "one SSRC to the caller throughout"
    );
    let during_ring: Vec<_> = frames
        .iter()
        .filter(|f| f.0 > t_ring + 0.3 && f.0 < t_bridge - 0.2)
        .collect();
    let after_bridge: Vec<_> = frames
        .iter()
        .filter(|f| f.0 > t_bridge + 0.4 && f.0 < t_bridge + 2.4)
        .collect();
    assert!(
        during_ring.len() > 50,
        "{} frames while ringing",
        during_ring.len()
    );
    let music = during_ring.iter().filter(|f| f.1 > 5000.0).count();
    assert!(
        music * 10 >= during_ring.len() * 9,
        "hold music while ringing: {music}/{}",
        during_ring.len()
    );
    assert!(after_bridge.len() > 50);
    let agent_audio = after_bridge
        .iter()
        .filter(|f| f.1 < 1000.0 && f.2 > 100.0)
        .count();
    assert!(
        agent_audio * 2 >= after_bridge.len(),
        "agent audio (not music) after the bridge: {agent_audio}/{}",
        after_bridge.len()
    );
}

/// Early media from a carrier during a transfer: the agent's reliable 180
/// and 183 are PRACKed (SIPp checks each RAck, and that our INVITE offers
/// 100rel and a session timer); while it rings the caller hears the hold
/// music, from its 183 the agent's own audio (its announcement) through
/// the bridge, and after its 200 OK still the agent.
#[test]
fn transfer_relays_the_agents_early_media_and_pracks_it() {
    let (gw, _dir, capture) = caller_to_agent("uas_agent_early.xml", |port| gateway(port, 15.0));
    let ringing = logged_at(&gw, "transfer: ringing agent");
    let early = logged_at(&gw, "transfer: early media from the agent");
    let bridged = logged_at(&gw, "transfer: bridged");
    assert!(ringing < early && early < bridged);
    let frames = music_and_level(&capture.rows);
    let between = |from: f64, to: f64| -> Vec<&(f64, f64, f64)> {
        frames.iter().filter(|f| f.0 > from && f.0 < to).collect()
    };
    let music = |fs: &[&(f64, f64, f64)]| fs.iter().filter(|f| f.1 > 5000.0).count();
    let agent_audio =
        |fs: &[&(f64, f64, f64)]| fs.iter().filter(|f| f.1 < 1000.0 && f.2 > 100.0).count();
    let ring = between(ringing + 0.3, early - 0.2);
    assert!(ring.len() > 40, "{} frames while ringing", ring.len());
    assert!(
        music(&ring) * 10 >= ring.len() * 9,
        "hold music before the 183: {}/{}",
        music(&ring),
        ring.len()
    );
    let announcement = between(early + 0.4, bridged - 0.2);
    assert!(
        announcement.len() > 50,
        "{} early frames",
        announcement.len()
    );
    assert!(
        agent_audio(&announcement) * 2 >= announcement.len(),
        "the agent's early media, not music, before its answer: {}/{}",
        agent_audio(&announcement),
        announcement.len()
    );
    assert_eq!(music(&announcement), 0, "no hold music under early media");
    assert!(
        capture.rows.iter().all(|r| r[2] == capture.rows[0][2]),
        "one SSRC to the caller throughout"
    );
    assert_metric_at_least(&gw, "crossline_sip_pracks_total{direction=\"sent\"}", 2.0);
    assert_metric_at_least(
        &gw,
        "crossline_sip_early_media_total{direction=\"received\"}",
        1.0,
    );
}

/// "Load the hold music": a transfer plays its own music (600 Hz, not the
/// configured 400 Hz) while the agent rings, with its own message spoken
/// over it on repeat (the music ducks under each one).
#[test]
fn transfer_plays_its_own_music_with_its_own_message_on_repeat() {
    require("espeak-ng", "espeak-ng");
    let (gw, _dir, capture) = caller_to_agent("uas_ring_cancel.xml", |port| {
        gateway_with(
            &[port],
            "sequential",
            8.0,
            "hold_music = [\"MUSIC\"]\nhold_message = \"Please hold.\"\nrepeat_interval_secs = 3",
        )
    });
    let ringing = logged_at(&gw, "transfer: ringing agent");
    let given_up = logged_at(&gw, "transfer: no answer in time");
    // (time, own music level, default music level) per 20 ms frame.
    let frames: Vec<(f64, f64, f64)> = capture
        .rows
        .iter()
        .map(|r| {
            let t = r[0].parse::<f64>().unwrap() % 86_400.0;
            let s = pcmu_hex_to_linear(&r[3]);
            (t, tone_level(&s, 600.0), tone_level(&s, 400.0))
        })
        .filter(|f| f.0 > ringing + 0.2 && f.0 < given_up - 0.2)
        .collect();
    assert!(frames.len() > 300, "{} frames while ringing", frames.len());
    // Speech has some energy near 400 Hz; the default music would fill
    // nearly every frame at full level.
    let default_music = frames.iter().filter(|f| f.2 > 5000.0).count();
    assert!(
        default_music * 20 < frames.len(),
        "the configured 400 Hz music must not play during this transfer: {default_music}/{}",
        frames.len()
    );
    let full = frames.iter().filter(|f| f.1 > 5000.0).count();
    assert!(
        full * 2 >= frames.len(),
        "the transfer's own music plays at full level most of the time: {full}/{}",
        frames.len()
    );
    // Ducked stretches (music down, message over it): at least two, about
    // repeat_interval_secs apart, each starting a while after the last.
    let mut starts = Vec::new();
    let mut ducked_run = 0;
    for f in &frames {
        let ducked = f.1 > 300.0 && f.1 < 3500.0;
        ducked_run = if ducked { ducked_run + 1 } else { 0 };
        if ducked_run == 10 && starts.last().is_none_or(|s: &f64| f.0 - s > 1.5) {
            starts.push(f.0);
        }
    }
    assert!(
        starts.len() >= 2,
        "the message repeats over the music: ducked stretches at {starts:?}"
    );
    let gap = starts[1] - starts[0];
    assert!(
        (2.0..=4.5).contains(&gap),
        "messages {gap:.2} s apart; repeat_interval_secs is 3"
    );
}

/// Nobody answers within ring_timeout_secs: the leg is cancelled and the
/// flow takes on_failure.
#[test]
fn transfer_without_answer_takes_the_fallback() {
    let agent_port = free_port();
    let agent = std::thread::spawn(move || {
        sipp_on(
            &["-sf", &scenario("uas_ring_cancel.xml"), "-m", "1"],
            Duration::from_secs(60),
            agent_port,
            free_port(),
        )
    });
    std::thread::sleep(Duration::from_millis(400));
    let (gw, _dir) = gateway(agent_port, 2.0);
    let caller = press_one(&gw);
    let run = sipp(
        &["-sf", &caller, &gw.sip_addr(), "-m", "1", "-d", "2500"],
        Duration::from_secs(60),
    );
    assert!(run.ok(), "caller: {}", run.describe());
    let agent = agent.join().unwrap();
    assert!(
        agent.ok(),
        "the agent leg was cancelled: {}",
        agent.describe()
    );
    let log = gw.log();
    assert!(log.contains("transfer: no answer in time"), "{log}");
    assert!(log.contains("status=408"), "{log}");
    assert!(log.contains("node=sorry"), "{log}");
    assert!(!log.contains("node=after"));
}

fn refer_gateway() -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    std::fs::write(
        flows.join("blind.toml"),
        r#"name = "blind"

[[nodes]]
id = "send_on"
type = "transfer"
refer = true
targets = ["sip:sales@127.0.0.1:5099"]
on_failure = "sorry"

[[nodes]]
id = "sorry"
type = "hangup"
message = "The transfer failed. Goodbye."
"#,
    )
    .unwrap();
    let gw = Gateway::start(&format!(
        "[flows]\ndir = \"{}\"\n\n[[routes]]\nflow = \"blind\"\n",
        flows.display()
    ));
    (gw, dir)
}

fn refer_scenario(gw: &Gateway, final_status: &str) -> String {
    let text = std::fs::read_to_string(scenario("uac_refer.xml")).unwrap();
    let file = gw.dir.path().join("refer.xml");
    std::fs::write(&file, text.replace("FINAL_STATUS", final_status)).unwrap();
    path_str(&file)
}

/// Blind transfer by REFER (RFC 3515): 202, NOTIFY sipfrag progress, and our
/// BYE once the new call is answered.
#[test]
fn blind_transfer_by_refer_completes_on_sipfrag_200() {
    let (gw, _dir) = refer_gateway();
    let sc = refer_scenario(&gw, "200 OK");
    let run = sipp(
        &["-sf", &sc, &gw.sip_addr(), "-m", "1"],
        Duration::from_secs(40),
    );
    assert!(run.ok(), "{}", run.describe());
    let log = gw.log();
    assert!(
        log.contains("transfer: REFER sent") && log.contains("transfer: REFER completed"),
        "{log}"
    );
    assert!(!log.contains("node=sorry"));
}

/// The new call fails (sipfrag 486): the flow takes on_failure and hangs up.
#[test]
fn blind_transfer_failure_takes_on_failure() {
    let (gw, _dir) = refer_gateway();
    let sc = refer_scenario(&gw, "486 Busy Here");
    let run = sipp(
        &["-sf", &sc, &gw.sip_addr(), "-m", "1"],
        Duration::from_secs(40),
    );
    assert!(run.ok(), "{}", run.describe());
    let log = gw.log();
    assert!(
        log.contains("transfer: REFER failed") && log.contains("status=486"),
        "{log}"
    );
    assert!(log.contains("node=sorry"), "{log}");
}

/// Agents rung together: one is busy (486), the other answers and is
/// bridged. Rung one at a time with only a busy agent, the flow takes
/// on_failure at once, without waiting for the ring timeout.
#[test]
fn parallel_ringing_passes_a_busy_agent_and_busy_alone_falls_back() {
    let (busy_port, agent_port) = (free_port(), free_port());
    let uas = |file: &'static str, port: u16| {
        std::thread::spawn(move || {
            sipp_on(
                &["-sf", &scenario(file), "-m", "1"],
                Duration::from_secs(60),
                port,
                free_port(),
            )
        })
    };
    let busy = uas("uas_busy.xml", busy_port);
    let agent = uas("uas_agent.xml", agent_port);
    std::thread::sleep(Duration::from_millis(400));
    let (gw, _dir) = gateway_ringing(&[busy_port, agent_port], "parallel", 10.0);
    let caller = press_one(&gw);
    let run = sipp(
        &["-sf", &caller, &gw.sip_addr(), "-m", "1", "-d", "2500"],
        Duration::from_secs(60),
    );
    assert!(run.ok(), "caller: {}", run.describe());
    let (busy, agent) = (busy.join().unwrap(), agent.join().unwrap());
    assert!(
        busy.ok(),
        "the busy agent was rung too: {}",
        busy.describe()
    );
    assert!(agent.ok(), "agent: {}", agent.describe());
    let log = gw.log();
    for n in ["transfer: bridged", "node=after"] {
        assert!(log.contains(n), "{n} missing:\n{log}");
    }
    assert!(!log.contains("node=sorry"), "{log}");

    let busy_port = free_port();
    let busy = uas("uas_busy.xml", busy_port);
    std::thread::sleep(Duration::from_millis(400));
    let (gw, _dir) = gateway_ringing(&[busy_port], "sequential", 30.0);
    let caller = press_one(&gw);
    let started = std::time::Instant::now();
    let run = sipp(
        &["-sf", &caller, &gw.sip_addr(), "-m", "1", "-d", "2500"],
        Duration::from_secs(60),
    );
    assert!(run.ok(), "caller: {}", run.describe());
    assert!(busy.join().unwrap().ok());
    let log = gw.log();
    assert!(log.contains("node=sorry"), "busy takes on_failure:\n{log}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "busy must not wait out the 30 s ring timeout"
    );
}

/// A carrier REFERs its caller to a target (RFC 3515): crossline answers
/// 202, places the call, reports 100, 180 and 200 in sipfrag NOTIFYs, and
/// the target takes the old leg's place: the carrier hangs its leg up and
/// the target hears the hold music (a 600 Hz tone) the caller was hearing,
/// until it hangs up itself.
#[test]
fn an_incoming_refer_moves_the_call_to_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let music = dir.path().join("music.wav");
    write_tone(&music, 600.0, 6.0, 8000.0, 8000);
    let gw = Gateway::start(&format!(
        "[media]\nhold_music = [\"{}\"]\nhold_message = \"\"\n\n\
         [[trunks]]\nname = \"carrier\"\ninbound_cidrs = [\"127.0.0.1/32\"]\naccept_refer = true\n\n\
         [[routes]]\nflow = \"hold\"\n",
        music.display()
    ));
    let target_port = free_port();
    let target = common::dns::Uas::start("uas_referred.xml", target_port, &[]);
    let text = std::fs::read_to_string(scenario("uac_refers_us.xml")).unwrap();
    let sc = dir.path().join("refers_us.xml");
    std::fs::write(&sc, text.replace("TARGET_PORT", &target_port.to_string())).unwrap();
    let cap = start_capture(&format!(
        "udp port {target_port} or udp src portrange {}-{}",
        gw.rtp_range.0, gw.rtp_range.1
    ));
    let run = sipp(
        &["-sf", &path_str(&sc), &gw.sip_addr(), "-m", "1"],
        Duration::from_secs(30),
    );
    assert!(run.ok(), "{}\n{}", run.describe(), gw.log());
    let carrier_gone = std::time::Instant::now();
    let deadline = carrier_gone + Duration::from_secs(15);
    while target.completed() != Some(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the target never finished: {}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (file, _cap_dir) = cap.stop();
    // The target's RTP port, from its 200 OK; what we sent there.
    let sip = vec![format!("udp.port=={target_port},sip")];
    let media_port: u16 = tshark_fields(
        &file,
        &sip,
        &format!("sip.Status-Code == 200 && sdp && udp.srcport == {target_port}"),
        &["sdp.media.port"],
    )
    .first()
    .and_then(|r| r.first())
    .and_then(|p| p.parse().ok())
    .expect("the target's 200 OK with SDP");
    let rows = tshark_fields(
        &file,
        &[format!("udp.port=={media_port},rtp")],
        &format!("udp.dstport == {media_port} && rtp"),
        &["rtp.payload"],
    );
    let frames: Vec<Vec<f64>> = rows.iter().map(|r| pcmu_hex_to_linear(&r[0])).collect();
    assert!(frames.len() > 100, "{} packets to the target", frames.len());
    let music = frames
        .iter()
        .filter(|f| tone_level(f, 600.0) > 4000.0)
        .count();
    assert!(
        music * 10 >= frames.len() * 9,
        "the hold music goes on for the target: {music}/{}",
        frames.len()
    );
    let log = gw.log();
    assert!(
        log.contains("REFER: the new call answered and takes over"),
        "{log}"
    );
    assert_metric_at_least(&gw, "crossline_refer_calls_total{result=\"answered\"}", 1.0);
    assert_metric_at_least(
        &gw,
        "crossline_sip_refers_received_total{outcome=\"accepted\"}",
        1.0,
    );
}

/// A transfer whose target is crossline itself: each time round the new
/// leg carries one Max-Forwards less than the call it serves, so a caller
/// who sends 5 makes exactly five calls here; the sixth INVITE, with none
/// left, gets 483 Too Many Hops, and the chain unwinds back to the caller
/// (before, every leg went out with 70 and the loop ran until a limit).
#[test]
fn a_transfer_back_to_ourselves_runs_out_of_hops() {
    require("sipp", "sip-tester");
    let sip_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    std::fs::write(
        flows.join("loop.toml"),
        format!(
            r#"name = "loop"

[[nodes]]
id = "agent"
type = "transfer"
targets = ["sip:loop@127.0.0.1:{sip_port}"]
ring_timeout_secs = 10
next = "after"
on_failure = "after"

[[nodes]]
id = "after"
type = "hangup"
"#
        ),
    )
    .unwrap();
    let gw = Gateway::start(&format!(
        "[sip]\nudp = [\"127.0.0.1:{sip_port}\"]\ntcp = [\"127.0.0.1:{sip_port}\"]\n\n\
         [flows]\ndir = \"{}\"\n\n[[routes]]\nflow = \"loop\"\n",
        flows.display()
    ));
    let text = std::fs::read_to_string(scenario("uac_wait_bye.xml")).unwrap();
    let five_hops = dir.path().join("five_hops.xml");
    std::fs::write(
        &five_hops,
        text.replacen("Max-Forwards: 70", "Max-Forwards: 5", 1),
    )
    .unwrap();
    let caller = sipp(
        &[
            "-sf",
            &path_str(&five_hops),
            // Our own port: the harness's `sip_addr` names the one replaced.
            &format!("127.0.0.1:{sip_port}"),
            "-s",
            "loop",
            "-m",
            "1",
        ],
        Duration::from_secs(60),
    );
    assert!(
        caller.ok(),
        "the caller is hung up on: {}",
        caller.describe()
    );
    let log = gw.log();
    let calls_in = log.matches("incoming call").count();
    assert_eq!(calls_in, 5, "one call here per hop the caller gave:\n{log}");
    // Every leg of the chain has ended.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut active = f64::NAN;
    while std::time::Instant::now() < deadline {
        active = metric_value(&gw.http_get("/metrics").1, "crossline_calls_active");
        if active == 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(active, 0.0, "calls left up:\n{}", gw.log());
}
