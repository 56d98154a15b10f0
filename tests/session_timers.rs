//! Session timers (RFC 4028) and UPDATE (RFC 3311) against the real
//! binary: SIPp callers that make crossline refresh, refresh themselves,
//! never refresh, or ask for intervals out of bounds; one that holds and
//! resumes by UPDATE; and PJSIP (pjsua2), which does timers natively.
//! `[sip] min_se_secs = 10` (the test override) keeps intervals short.

mod common;

use std::time::Duration;

use common::*;

/// A gateway granting 10 s session timers, answering into the hold program.
fn gateway() -> Gateway {
    Gateway::start(
        "[sip]\nmin_se_secs = 10\nsession_expires_secs = 10\n\n[[routes]]\nflow = \"hold\"\n",
    )
}

fn run(gw: &Gateway, name: &str, limit: u64) -> Sipp {
    let run = sipp(
        &["-sf", &scenario(name), &gw.sip_addr(), "-m", "1"],
        Duration::from_secs(limit),
    );
    assert!(run.ok(), "{name}: {}\n{}", run.describe(), gw.log());
    run
}

/// Seconds of the day at which the log first shows `needle`, and each
/// later time it does.
fn log_times(gw: &Gateway, needle: &str) -> Vec<f64> {
    gw.log()
        .lines()
        .filter(|l| l.contains(needle))
        .map(seconds_of_day)
        .collect()
}

/// The caller asks crossline to refresh (refresher=uas) and allows UPDATE:
/// an UPDATE comes at half the interval, twice in a row (SIPp checks each
/// carries Session-Expires: 10;refresher=uac).
#[test]
fn we_refresh_by_update_at_half_the_interval() {
    let gw = gateway();
    run(&gw, "uac_timer_we_refresh.xml", 40);
    let answered = log_times(&gw, "incoming call")[0];
    let refreshes = log_times(&gw, "session refresh sent");
    assert_eq!(refreshes.len(), 2, "{}", gw.log());
    within("first refresh", refreshes[0] - answered, 4.6..5.9);
    within("second refresh", refreshes[1] - refreshes[0], 4.6..5.9);
    assert_metric_at_least(
        &gw,
        "crossline_sip_session_refreshes_total{direction=\"sent\"}",
        2.0,
    );
}

/// Without UPDATE in the caller's Allow, the refresh is a re-INVITE that
/// offers the SDP of our 200 OK again, version and all.
#[test]
fn we_refresh_by_reinvite_offering_the_same_sdp() {
    let gw = gateway();
    let cap = start_capture(&format!("udp port {}", gw.sip_port));
    run(&gw, "uac_timer_we_reinvite.xml", 40);
    std::thread::sleep(Duration::from_millis(300));
    let (file, _dir) = cap.stop();
    let decode = vec![format!("udp.port=={},sip", gw.sip_port)];
    let ours = |filter: &str| -> Vec<String> {
        tshark_fields(
            &file,
            &decode,
            &format!("udp.srcport == {} && sdp && {filter}", gw.sip_port),
            &["sdp.owner"],
        )
        .into_iter()
        .map(|r| r.join(","))
        .collect()
    };
    let answer = ours("sip.Status-Code == 200");
    let refresh = ours("sip.Method == \"INVITE\"");
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert!(!refresh.is_empty(), "no re-INVITE captured");
    assert!(
        refresh.iter().all(|o| *o == answer[0]),
        "the refresh offers o= {refresh:?}, the 200 OK said {answer:?}"
    );
}

/// The caller refreshes (UPDATE, re-INVITE, UPDATE, 4 s apart) for 16 s of
/// a 10 s session: crossline answers each and keeps the call.
#[test]
fn the_peer_refreshes_and_the_call_stays_up() {
    let gw = gateway();
    run(&gw, "uac_timer_peer_refreshes.xml", 40);
    assert!(!gw.log().contains("session timer expired"), "{}", gw.log());
    assert_metric_at_least(
        &gw,
        "crossline_sip_session_refreshes_total{direction=\"received\"}",
        3.0,
    );
    assert_metric_at_least(&gw, "crossline_calls_total{outcome=\"remote_bye\"}", 1.0);
}

/// A caller that should refresh but never does: crossline sends BYE at
/// 10 - min(32, 10/3) = 6.7 s.
#[test]
fn an_unrefreshed_session_ends_with_our_bye() {
    let gw = gateway();
    run(&gw, "uac_timer_expires.xml", 30);
    let answered = log_times(&gw, "incoming call")[0];
    let expired = log_times(&gw, "session timer expired");
    assert_eq!(expired.len(), 1, "{}", gw.log());
    within("BYE", expired[0] - answered, 6.3..7.6);
    assert_metric_at_least(&gw, "crossline_sip_sessions_expired_total", 1.0);
    assert_metric_at_least(
        &gw,
        "crossline_calls_total{outcome=\"session_expired\"}",
        1.0,
    );
}

/// Session-Expires below our Min-SE gets 422 with it, garbage gets 400,
/// both counted; the same caller then gets through.
#[test]
fn timer_values_out_of_bounds_get_422_or_400() {
    let gw = gateway();
    run(&gw, "uac_timer_bad.xml", 30);
    assert_metric_at_least(
        &gw,
        "crossline_sip_session_timer_refused_total{reason=\"too_small\"}",
        1.0,
    );
    assert_metric_at_least(
        &gw,
        "crossline_sip_session_timer_refused_total{reason=\"malformed\"}",
        1.0,
    );
    assert!(!gw.log().contains("panicked"));
}

/// UPDATE without SDP gets a bodiless 200; with a=sendonly it puts
/// crossline on hold (answer a=recvonly, and our RTP stops), and a=sendrecv
/// brings it back (SIPp checks the answers; the capture the RTP).
#[test]
fn update_without_sdp_then_hold_and_resume_by_update() {
    let gw = Gateway::start("[[routes]]\nflow = \"hold\"\n");
    let c = capture_call(
        &gw,
        &[
            "-sf",
            &scenario("uac_update.xml"),
            &gw.sip_addr(),
            "-m",
            "1",
        ],
        &["frame.time_epoch"],
    );
    assert!(c.run.ok(), "{}", c.run.describe());
    let times: Vec<f64> = c.rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(times.len() > 100, "{} RTP packets", times.len());
    let (gap_at, gap) = times
        .windows(2)
        .map(|w| (w[0], w[1] - w[0]))
        .fold((0.0, 0.0), |best, g| if g.1 > best.1 { g } else { best });
    within("silence on hold", gap, 1.6..2.6);
    let after = times.iter().filter(|t| **t > gap_at + gap).count();
    assert!(after > 40, "RTP resumed: {after} packets after the hold");
    assert_metric_at_least(&gw, "crossline_sip_updates_received_total", 3.0);
}

/// PJSIP requiring session timers (Require: timer; its floor is 90 s):
/// crossline grants 90 s with PJSIP refreshing. PJSIP's refresh comes at
/// 45 s and the call is still up at 62 s, past the 60 s at which crossline
/// would hang up an unrefreshed session.
#[test]
fn pjsua2_requiring_session_timers_refreshes_and_stays_up() {
    let gw = Gateway::start("[sip]\nsession_expires_secs = 90\n\n[[routes]]\nflow = \"hold\"\n");
    let target = format!("sip:1000@{}", gw.sip_addr());
    let out = peers::run_script(
        "pjsua2",
        "pjsua_call.py",
        &[&target, "62", "--timer", "90"],
        Duration::from_secs(90),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let at = |prefix: &str| -> Option<f64> {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let confirmed = at("state CONFIRMED").unwrap_or_else(|| panic!("never answered:\n{stdout}"));
    let refreshed = stdout
        .lines()
        .filter(|l| l.starts_with("tsx UPDATE 200") || l.starts_with("tsx INVITE 200"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .find(|t| *t > confirmed + 1.0)
        .unwrap_or_else(|| panic!("no refresh:\n{stdout}"));
    within("PJSIP's refresh", refreshed - confirmed, 40.0..50.0);
    let hangup = at("hangup").unwrap_or_else(|| panic!("the call ended early:\n{stdout}"));
    assert!(
        hangup - confirmed > 61.0,
        "pjsua2 hung up at {:.1} s:\n{stdout}",
        hangup - confirmed
    );
    assert!(!gw.log().contains("session timer expired"), "{}", gw.log());
    assert_metric_at_least(
        &gw,
        "crossline_sip_session_refreshes_total{direction=\"received\"}",
        1.0,
    );
}

/// Kamailio (deploy/kamailio/kamailio.cfg) record-routes in front of
/// crossline: the caller asks crossline to refresh, and both refreshes
/// follow the route set through Kamailio (Route header, to its port), as
/// do the caller's ACK and BYE.
#[test]
fn refreshes_follow_the_route_set_through_kamailio() {
    require("kamailio", "kamailio");
    let gw = gateway();
    let dir = tempfile::tempdir().unwrap();
    let lb_port = free_port();
    std::fs::write(
        dir.path().join("dispatcher.list"),
        format!("1 sip:{} 0 0 duid=node-a\n", gw.sip_addr()),
    )
    .unwrap();
    let tmp = dir.path().display().to_string();
    let kamailio = std::process::Command::new("kamailio")
        .arg("-f")
        .arg(repo().join("deploy/kamailio/kamailio.cfg"))
        .args(["-Y", &tmp, "-w", &tmp, "-m", "64", "-M", "8", "-DD", "-E"])
        .args(["-A", "LISTEN_IP=127.0.0.1"])
        .args(["-A", &format!("LISTEN_PORT={lb_port}")])
        .args(["-A", &format!("DS_LIST=\"{tmp}/dispatcher.list\"")])
        .args(["-A", &format!("CTL_SOCK=\"unixs:{tmp}/ctl\"")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start kamailio");
    let kamailio = KillOnDrop(kamailio);
    std::thread::sleep(Duration::from_secs(2));
    let cap = start_capture(&format!("udp port {}", gw.sip_port));
    let lb = format!("127.0.0.1:{lb_port}");
    let run = sipp(
        &["-sf", &scenario("uac_timer_we_refresh.xml"), &lb, "-m", "1"],
        Duration::from_secs(40),
    );
    std::thread::sleep(Duration::from_millis(300));
    let (file, _capdir) = cap.stop();
    drop(kamailio);
    assert!(run.ok(), "{}\n{}", run.describe(), gw.log());
    let updates = tshark_fields(
        &file,
        &[format!("udp.port=={},sip", gw.sip_port)],
        &format!("sip.Method == \"UPDATE\" && udp.srcport == {}", gw.sip_port),
        &["udp.dstport", "sip.Route"],
    );
    assert_eq!(updates.len(), 2, "{updates:?}");
    for u in &updates {
        assert_eq!(u[0], lb_port.to_string(), "to Kamailio: {u:?}");
        assert!(
            u[1].contains(&format!("127.0.0.1:{lb_port}")),
            "its Route: {u:?}"
        );
    }
    assert_metric_at_least(
        &gw,
        "crossline_sip_session_refreshes_total{direction=\"sent\"}",
        2.0,
    );
}

/// A child process that dies with the test, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
