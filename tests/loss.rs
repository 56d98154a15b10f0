//! Calls on a bad network: 5 % loss and reordering each way, on SIP and
//! RTP alike, between SIPp and the real binary.
//!
//! The issue asks for netem in a network namespace. This machine's kernel
//! is built without it (CONFIG_NET_SCH_NETEM unset: `tc qdisc add ... netem`
//! answers "Specified qdisc kind is unknown"), so the impairment is done in
//! userspace instead, by `common::lossy`: a seeded relay that drops and
//! reorders datagrams both ways and rewrites SDP so media crosses it too.
//! It needs no root and behaves the same on every kernel.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;

fn metric(gw: &Gateway, name: &str) -> f64 {
    let (status, body) = gw.http_get("/metrics");
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn calls_complete_through_loss_and_reordering() {
    let gw = Gateway::start("");
    let relay = lossy::start(gw.sip_addr().parse().unwrap(), 5, 10);
    let calls = 5;
    let run = sipp_with_media_port(
        &[
            "-sf",
            &scenario("uac_lossy.xml"),
            &format!("127.0.0.1:{}", relay.sip_port),
            "-m",
            &calls.to_string(),
            "-l",
            "1",
            "-r",
            "1",
        ],
        Duration::from_secs(120),
        free_port(),
    );
    let stats = &relay.stats;
    let (sip_lost, rtp_lost, reordered) = (
        stats.sip_dropped.load(Ordering::Relaxed),
        stats.rtp_dropped.load(Ordering::Relaxed),
        stats.reordered.load(Ordering::Relaxed),
    );
    let rtp_passed = stats.rtp_forwarded.load(Ordering::Relaxed);
    println!(
        "relay: SIP {} passed, {sip_lost} lost; RTP {rtp_passed} passed, {rtp_lost} lost; {reordered} reordered",
        stats.sip_forwarded.load(Ordering::Relaxed)
    );
    // Every call set up and torn down despite the losses.
    assert!(run.ok(), "{}", run.describe());
    assert_eq!(
        run.stat("SuccessfulCall(C)"),
        Some(calls),
        "{}",
        run.describe()
    );
    assert_eq!(run.stat("FailedCall(C)"), Some(0), "{}", run.describe());
    // The path really was bad: the first 200 and more went missing.
    assert!(sip_lost >= 1, "no SIP datagram was lost");
    assert!(rtp_passed > 500, "media must have crossed the relay");
    let loss = rtp_lost as f64 / (rtp_lost + rtp_passed) as f64;
    assert!((0.02..0.09).contains(&loss), "RTP loss {loss}");
    assert!(reordered > 20, "only {reordered} reordered");
    // The gateway saw the gaps in the caller's RTP (and counted them), and
    // retransmitted the 200 the relay lost until the ACK came.
    assert!(
        metric(&gw, "crossline_rtp_packets_lost_total") > 0.0,
        "{}",
        gw.http_get("/metrics").1
    );
    assert_eq!(gw.http_get("/healthz").0, 200);
}
