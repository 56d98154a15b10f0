//! Flood protection against the real binary: an INVITE flood from one
//! loopback address (127.0.0.2) is dropped by the per-source token bucket
//! while calls from another source (127.0.0.1) all complete; a scanner's
//! User-Agent gets no answer at all.

mod common;

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn a_flood_from_one_source_does_not_stop_another_sources_calls() {
    require("sipp", "sip-tester");
    let gw = Gateway::start(
        "[sip]\nrate_limit_per_source = 20.0\nrate_limit_burst = 20.0\nexempt_sources = [\"127.0.0.1/32\"]\n",
    );
    // The flood: 300 new calls a second from 127.0.0.2 for a few seconds.
    let flood_port = free_port().to_string();
    let flood_media = free_port().to_string();
    let flood = Command::new("timeout")
        .args(["-s", "KILL", "20", "sipp", "-sn", "uac", &gw.sip_addr()])
        .args(["-i", "127.0.0.2", "-p", &flood_port, "-mp", &flood_media])
        .args([
            "-r", "300", "-m", "1500", "-d", "200", "-timeout", "12", "-nostdin",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the flood");
    std::thread::sleep(Duration::from_secs(1));

    // Meanwhile, ordinary calls from 127.0.0.1.
    let calls = sipp(
        &[
            "-sn",
            "uac",
            &gw.sip_addr(),
            "-r",
            "5",
            "-m",
            "20",
            "-d",
            "200",
        ],
        Duration::from_secs(60),
    );
    assert!(calls.ok(), "the other source's calls: {}", calls.describe());
    assert_eq!(
        calls.stat("SuccessfulCall(C)"),
        Some(20),
        "{}",
        calls.describe()
    );
    let _ = flood.wait_with_output();

    // The flood was cut, and counted.
    std::thread::sleep(Duration::from_millis(1200));
    let metrics = gw.http_get("/metrics").1;
    let dropped: f64 = metrics
        .lines()
        .find(|l| l.starts_with("crossline_sip_dropped_total{reason=\"rate_limited\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(
        dropped > 100.0,
        "rate-limited requests: {dropped}\n{metrics}"
    );
    assert_eq!(gw.http_get("/healthz").0, 200);
}

#[test]
fn a_scanner_gets_no_answer() {
    let gw = Gateway::start("");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let me = sock.local_addr().unwrap();
    let options = |ua: &str, branch: &str| {
        format!(
            "OPTIONS sip:100@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\nFrom: <sip:scan@{me}>;tag=s1\r\nTo: <sip:100@{gw}>\r\nCall-ID: {branch}@scan\r\nCSeq: 1 OPTIONS\r\nUser-Agent: {ua}\r\nContent-Length: 0\r\n\r\n",
            gw = gw.sip_addr()
        )
    };
    let mut buf = [0u8; 4096];
    sock.send_to(
        options("friendly-scanner", "scan1").as_bytes(),
        gw.sip_addr(),
    )
    .unwrap();
    assert!(sock.recv_from(&mut buf).is_err(), "a scanner was answered");
    // The same request from a real phone is answered.
    sock.send_to(
        options("Yealink SIP-T46U", "phone1").as_bytes(),
        gw.sip_addr(),
    )
    .unwrap();
    let (n, _) = sock.recv_from(&mut buf).expect("an answer to OPTIONS");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200"));
}
