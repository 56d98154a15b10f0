//! The real binary against real peers: SIPp as caller and registrar, tshark
//! to watch RTP, raw sockets for malformed input.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// (a) SIPp's built-in uac: 200 calls at 50 CPS, every one completes.
#[test]
fn sipp_uac_200_calls_at_50_cps_all_complete() {
    let gw = Gateway::start("");
    let run = sipp(
        &[
            "-sn",
            "uac",
            &gw.sip_addr(),
            "-r",
            "50",
            "-m",
            "200",
            "-l",
            "200",
            "-d",
            "500",
        ],
        Duration::from_secs(60),
    );
    assert!(run.ok(), "{}", run.describe());
    assert_eq!(
        run.stat("SuccessfulCall(C)"),
        Some(200),
        "{}",
        run.describe()
    );
    assert_eq!(run.stat("FailedCall(C)"), Some(0), "{}", run.describe());
}

/// The same over TCP (Content-Length framing on a stream).
#[test]
fn sipp_uac_over_tcp_completes() {
    let gw = Gateway::start("");
    let run = sipp(
        &[
            "-sn",
            "uac",
            &gw.sip_addr(),
            "-t",
            "t1",
            "-r",
            "20",
            "-m",
            "20",
            "-d",
            "200",
        ],
        Duration::from_secs(60),
    );
    assert!(run.ok(), "{}", run.describe());
    assert_eq!(
        run.stat("SuccessfulCall(C)"),
        Some(20),
        "{}",
        run.describe()
    );
}

/// (b) SIPp uac_pcap: read the caller's RTP port from its SDP, then check
/// the RTP crossline sends there: negotiated PT, continuous sequence and
/// timestamps, one SSRC, 20 ms pacing.
#[test]
fn uac_pcap_gets_continuous_paced_rtp_with_negotiated_pt() {
    let gw = Gateway::start("");
    let capture = capture_call(
        &gw,
        &["-sn", "uac_pcap", &gw.sip_addr(), "-m", "1", "-l", "1"],
        &[
            "frame.time_epoch",
            "rtp.p_type",
            "rtp.seq",
            "rtp.timestamp",
            "rtp.ssrc",
        ],
    );
    let (rows, run) = (&capture.rows, &capture.run);
    assert!(run.ok(), "{}", run.describe());
    // The pcap's RFC 4733 '1' reached the call once.
    gw.wait_for_log("DTMF digit", Duration::from_secs(2));
    assert_eq!(gw.log().matches("DTMF digit").count(), 1, "{}", gw.log());
    // Which digit is never logged (it may be a PIN); menus check values.
    assert!(!gw.log().contains("digit="), "{}", gw.log());
    // RTCP from our RTP port + 1 to the caller's: sender reports while the
    // call runs, BYE when it ends.
    let rtcp_decode = vec![format!("udp.port=={},rtcp", capture.caller_port + 1)];
    let rtcp = tshark_fields(
        &capture.file,
        &rtcp_decode,
        &format!(
            "udp.srcport == {} && udp.dstport == {} && rtcp",
            capture.our_port + 1,
            capture.caller_port + 1
        ),
        &["rtcp.pt"],
    );
    let types: Vec<String> = rtcp.iter().map(|r| r.join(",")).collect();
    assert!(types.iter().any(|t| t.contains("200")), "an SR: {types:?}");
    assert!(
        types.last().is_some_and(|t| t.contains("203")),
        "BYE last: {types:?}"
    );
    assert!(
        rows.len() >= 200,
        "only {} RTP packets from crossline",
        rows.len()
    );
    let parse = |r: &Vec<String>| -> (f64, u8, u16, u32, String) {
        (
            r[0].parse().unwrap(),
            r[1].parse().unwrap(),
            r[2].parse().unwrap(),
            r[3].parse().unwrap(),
            r[4].clone(),
        )
    };
    let pkts: Vec<_> = rows.iter().map(parse).collect();
    // uac_pcap offers "8 101": PCMA is the negotiated payload type.
    assert!(
        pkts.iter().all(|p| p.1 == 8),
        "payload types: {:?}",
        pkts.iter().map(|p| p.1).collect::<Vec<_>>()
    );
    assert!(
        pkts.iter().all(|p| p.4 == pkts[0].4),
        "one SSRC for the stream"
    );
    for w in pkts.windows(2) {
        assert_eq!(w[1].2, w[0].2.wrapping_add(1), "sequence continuous");
        assert_eq!(
            w[1].3,
            w[0].3.wrapping_add(160),
            "timestamp +160 per packet"
        );
    }
    let mut gaps: Vec<f64> = pkts
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * 1000.0)
        .collect();
    gaps.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = gaps[gaps.len() / 2];
    let p95 = gaps[gaps.len() * 95 / 100];
    assert!((18.0..=22.0).contains(&median), "median gap {median} ms");
    assert!(p95 < 30.0, "p95 gap {p95} ms");
    let span = pkts.last().unwrap().0 - pkts[0].0;
    let expected = (pkts.len() - 1) as f64 * 0.020;
    assert!(
        (span - expected).abs() < 0.1,
        "drift: {span}s for {} packets",
        pkts.len()
    );
}

/// (c) CANCEL before answer: 200 for the CANCEL, 487 for the INVITE.
#[test]
fn cancel_before_answer_gets_487() {
    let gw = Gateway::start("[[routes]]\nflow = \"demo\"\nring_ms = 10000\n");
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_cancel.xml"),
            &gw.sip_addr(),
            "-m",
            "3",
            "-l",
            "1",
        ],
        Duration::from_secs(30),
    );
    assert!(run.ok(), "{}", run.describe());
    assert_eq!(run.stat("SuccessfulCall(C)"), Some(3), "{}", run.describe());
    gw.wait_for_log("Cancelled", Duration::from_secs(5));
}

/// (d) Registration to a SIPp registrar that challenges with 401, then a
/// refresh, then Expires: 0 on shutdown.
#[test]
fn registers_with_digest_refreshes_and_unregisters() {
    let registrar_port = free_port();
    let registrar = std::thread::spawn(move || sipp_registrar(registrar_port));
    std::thread::sleep(Duration::from_millis(500));
    let mut gw = Gateway::start(&format!(
        "[[registrations]]\nregistrar = \"sip:127.0.0.1:{registrar_port}\"\naor = \"sip:crossline@sipp.test\"\nusername = \"crossline\"\npassword = \"s3cret\"\nexpires = 600\n"
    ));
    gw.wait_for_log("Registered { expires: 4 }", Duration::from_secs(10));
    // The refresh comes about 2 s later (half of a short grant).
    let deadline = Instant::now() + Duration::from_secs(8);
    while gw.log().matches("Registered { expires: 4 }").count() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Each state is logged twice (endpoint and gateway): two grants = 4 lines.
    assert!(
        gw.log().matches("Registered { expires: 4 }").count() >= 3,
        "{}",
        gw.log()
    );
    // ...and shows in the metrics (exported once a second).
    let up = format!("crossline_registration_up{{registrar=\"sip:127.0.0.1:{registrar_port}\"}} 1");
    let deadline = Instant::now() + Duration::from_secs(3);
    while !gw.http_get("/metrics").1.contains(&up) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        gw.http_get("/metrics").1.contains(&up),
        "{}",
        gw.http_get("/metrics").1
    );
    gw.signal(libc::SIGTERM);
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("exits after drain");
    assert!(status.success());
    let run = registrar.join().unwrap();
    assert!(run.ok(), "{}", run.describe());
    assert_eq!(run.stat("SuccessfulCall(C)"), Some(1), "{}", run.describe());
}

/// (e) OPTIONS gets 200 with Allow and Accept.
#[test]
fn options_ping_gets_200() {
    let gw = Gateway::start("");
    let run = sipp(
        &["-sf", &scenario("options.xml"), &gw.sip_addr(), "-m", "5"],
        Duration::from_secs(20),
    );
    assert!(run.ok(), "{}", run.describe());
    assert_eq!(run.stat("SuccessfulCall(C)"), Some(5), "{}", run.describe());
}

fn fixtures_rejected() -> Vec<Vec<u8>> {
    let dir = repo().join("sip-fixtures/rfc4475");
    let manifest = std::fs::read_to_string(dir.join("MANIFEST.tsv")).unwrap();
    manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("file\t"))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            let class = cols.get(3)?;
            (class.starts_with("3.1.2") || class.starts_with("NOT"))
                .then(|| std::fs::read(dir.join(cols[0])).unwrap())
        })
        .collect()
}

/// (f) Malformed messages over UDP and TCP, then a good call still completes.
#[test]
fn malformed_input_over_udp_and_tcp_then_a_good_call() {
    let gw = Gateway::start("");
    let bad = fixtures_rejected();
    assert!(bad.len() >= 20);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut junk: Vec<Vec<u8>> = bad.clone();
    junk.push(b"\x00\x01\x02\xff\xfe garbage".to_vec());
    junk.push(vec![b'A'; 70_000]);
    junk.push(b"INVITE sip:x SIP/2.0\r\nContent-Length: 99999999999999999999\r\n\r\n".to_vec());
    let mut answered_400 = 0;
    for msg in &junk {
        let _ = sock.send_to(&msg[..msg.len().min(65_000)], gw.sip_addr());
        let mut buf = [0u8; 4096];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(
                text.starts_with("SIP/2.0 400"),
                "bad input must get 400 or nothing, got: {text}"
            );
            answered_400 += 1;
        }
    }
    assert!(
        answered_400 > 0,
        "some of the invalid fixtures carry enough headers for a 400"
    );
    // TCP: each bad message on its own connection; the server closes or
    // answers 400, and never hangs the listener.
    for msg in bad.iter().take(10) {
        let mut s = TcpStream::connect(gw.sip_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let _ = s.write_all(msg);
        let mut buf = [0u8; 2048];
        if let Ok(n) = s.read(&mut buf) {
            if n > 0 {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(text.starts_with("SIP/2.0 400"), "{text}");
            }
        }
    }
    // A stream that breaks framing is closed by the server.
    let mut s = TcpStream::connect(gw.sip_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        matches!(s.read(&mut buf), Ok(0)),
        "framing error closes the connection"
    );

    let run = sipp(
        &["-sn", "uac", &gw.sip_addr(), "-m", "3", "-d", "100"],
        Duration::from_secs(30),
    );
    assert!(run.ok(), "{}", run.describe());
    let run = sipp(
        &[
            "-sn",
            "uac",
            &gw.sip_addr(),
            "-t",
            "t1",
            "-m",
            "3",
            "-d",
            "100",
        ],
        Duration::from_secs(30),
    );
    assert!(run.ok(), "{}", run.describe());
}

fn raw_invite(port: u16, call_id: &str, branch: &str) -> String {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\n";
    format!("INVITE sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=t1\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:t@127.0.0.1:{port}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len())
}

fn recv_until(sock: &UdpSocket, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if pred(&text) {
                return Some(text);
            }
        }
    }
    None
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .map(|l| l[name.len() + 1..].trim())
        .unwrap_or("")
}

/// SIGTERM drains: new INVITEs get 503 + Retry-After, the call in progress
/// gets BYE after the grace period, then the process exits cleanly.
#[test]
fn sigterm_drains_with_503_then_byes_calls() {
    let mut gw = Gateway::start("");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    sock.send_to(
        raw_invite(port, "drain1", "z9hG4bKd1").as_bytes(),
        gw.sip_addr(),
    )
    .unwrap();
    let ok = recv_until(
        &sock,
        |m| m.starts_with("SIP/2.0 200"),
        Duration::from_secs(5),
    )
    .expect("200 OK");
    let to = header(&ok, "To");
    let ack = format!("ACK sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKd1ack\r\nMax-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=t1\r\nTo: {to}\r\nCall-ID: drain1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n");
    sock.send_to(ack.as_bytes(), gw.sip_addr()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t_signal = Instant::now();
    gw.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    sock.send_to(
        raw_invite(port, "drain2", "z9hG4bKd2").as_bytes(),
        gw.sip_addr(),
    )
    .unwrap();
    let busy = recv_until(
        &sock,
        |m| m.starts_with("SIP/2.0 503"),
        Duration::from_secs(3),
    )
    .expect("503 while draining");
    assert_eq!(header(&busy, "Retry-After"), "60");
    let bye = recv_until(&sock, |m| m.starts_with("BYE "), Duration::from_secs(6))
        .expect("BYE after grace");
    let waited = t_signal.elapsed();
    assert!(
        waited >= Duration::from_millis(1800),
        "BYE came before the 2 s grace: {waited:?}"
    );
    assert_eq!(header(&bye, "Call-ID"), "drain1");
    // Answer the BYE so the process can leave at once.
    let reply = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: drain1\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        header(&bye, "Via"),
        header(&bye, "From"),
        header(&bye, "To"),
        header(&bye, "CSeq")
    );
    sock.send_to(reply.as_bytes(), gw.sip_addr()).unwrap();
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("exit after drain");
    assert!(status.success());
}

/// `crossline check` on the shipped example passes; on a broken file it
/// names file:line and key for every error and exits non-zero.
#[test]
fn check_command_reports_every_error() {
    let bin = env!("CARGO_BIN_EXE_crossline");
    let ok = Command::new(bin)
        .args(["check", "deploy/crossline.example.toml"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[sip]\nt1_ms = \"soon\"\n\n[media]\nbogus = 1\n\n[[routes]]\nflow = \"nowhere\"\n",
    )
    .unwrap();
    let out = Command::new(bin).arg("check").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = bad.display().to_string();
    assert!(err.contains(&format!("{file}:2:")), "{err}");
    assert!(
        err.contains(&format!("{file}:5:1: media.bogus: unknown field `bogus`")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:8:1: routes[0].flow: unknown flow \"nowhere\""
        )),
        "{err}"
    );
    assert!(err.contains("3 error(s)"), "{err}");
    // `run` with a bad config refuses to start.
    let out = Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// Bad input and calls are counted at /metrics; health and readiness answer;
/// every call leaves a record in SQLite.
#[test]
fn metrics_health_and_call_records() {
    let mut gw = Gateway::start("");
    assert_eq!(gw.http_get("/healthz").0, 200);
    assert_eq!(gw.http_get("/readyz").0, 200);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for junk in [&b"garbage"[..], b"INVITE x", b"\xff\xfe\x00"] {
        sock.send_to(junk, gw.sip_addr()).unwrap();
    }
    let run = sipp(
        &["-sn", "uac", &gw.sip_addr(), "-m", "5", "-d", "100"],
        Duration::from_secs(30),
    );
    assert!(run.ok(), "{}", run.describe());
    std::thread::sleep(Duration::from_millis(1500)); // one export tick
    let (status, metrics) = gw.http_get("/metrics");
    assert_eq!(status, 200);
    let value = |name: &str| -> Option<f64> {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(
        value("crossline_sip_parse_errors_total"),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        value("crossline_calls_total{outcome=\"remote_bye\"}"),
        Some(5.0),
        "{metrics}"
    );
    assert_eq!(
        value("crossline_calls_started_total"),
        Some(5.0),
        "{metrics}"
    );
    assert_eq!(value("crossline_calls_active"), Some(0.0), "{metrics}");
    assert!(
        value("crossline_sip_responses_sent_total{code=\"200\"}").unwrap_or(0.0) >= 10.0,
        "{metrics}"
    );
    assert!(
        value("crossline_rtp_packets_sent_total").unwrap_or(0.0) > 0.0,
        "{metrics}"
    );

    gw.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(gw.http_get("/readyz").0, 503, "not ready while draining");
    assert!(gw
        .wait_exit(Duration::from_secs(10))
        .expect("exits")
        .success());

    let db = rusqlite::Connection::open(gw.db_path()).unwrap();
    let rows: Vec<(String, String, Option<i64>, i64, i64)> = db
        .prepare("SELECT did, outcome, answered_at_ms, started_at_ms, ended_at_ms FROM calls")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 5);
    for (did, outcome, answered, started, ended) in rows {
        assert_eq!(did, "service");
        assert_eq!(outcome, "remote_bye");
        let answered = answered.expect("answered_at");
        assert!(started <= answered && answered <= ended && ended - started >= 100);
    }
}

/// A trunk with inbound credentials: SIPp must answer our 407 challenge;
/// without credentials it gets nowhere; sources outside every trunk get 403.
#[test]
fn inbound_trunk_digest_challenge_with_sipp() {
    // SIPp reads only the first challenge and only knows MD5.
    let gw = Gateway::start(
        "[[trunks]]\nname = \"pbx\"\ninbound_username = \"trunkuser\"\ninbound_password = \"trunkpass\"\ninbound_digest_algorithms = [\"MD5\"]\n",
    );
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_auth.xml"),
            &gw.sip_addr(),
            "-m",
            "3",
            "-l",
            "1",
        ],
        Duration::from_secs(30),
    );
    assert!(run.ok(), "{}", run.describe());
    assert_eq!(run.stat("SuccessfulCall(C)"), Some(3), "{}", run.describe());
    // The plain uac scenario can't authenticate: every call fails on the 407.
    let run = sipp(
        &[
            "-sn",
            "uac",
            &gw.sip_addr(),
            "-m",
            "2",
            "-recv_timeout",
            "3000",
        ],
        Duration::from_secs(30),
    );
    assert!(!run.ok());
    assert_eq!(run.stat("SuccessfulCall(C)"), Some(0), "{}", run.describe());

    // A trunk limited to other networks: loopback callers get 403.
    let gw = Gateway::start("[[trunks]]\nname = \"carrier\"\ninbound_cidrs = [\"192.0.2.0/24\"]\n");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    sock.send_to(
        raw_invite(port, "cidr1", "z9hG4bKc1").as_bytes(),
        gw.sip_addr(),
    )
    .unwrap();
    assert!(recv_until(
        &sock,
        |m| m.starts_with("SIP/2.0 403"),
        Duration::from_secs(3)
    )
    .is_some());
}

/// SIGHUP re-reads the config: a new route takes effect for new calls, a
/// call in progress is not dropped, and a broken file changes nothing.
#[test]
fn sighup_reloads_routes_without_dropping_calls() {
    let gw = Gateway::start("[[routes]]\ndid = \"1000\"\nflow = \"demo\"\n");
    let config = gw.dir.path().join("crossline.toml");
    // SIPp's uac dials "service": no route yet, so 404.
    let run = sipp(
        &["-sn", "uac", &gw.sip_addr(), "-m", "1"],
        Duration::from_secs(20),
    );
    assert!(!run.ok());
    // A long call to 1000 stays up across the reloads.
    let addr = gw.sip_addr();
    let long_call = std::thread::spawn(move || {
        sipp(
            &["-sn", "uac", &addr, "-s", "1000", "-m", "1", "-d", "4000"],
            Duration::from_secs(30),
        )
    });
    std::thread::sleep(Duration::from_millis(800));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, "[[routes]]\nflow = oops\n").unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_for_log("reload refused", Duration::from_secs(5));
    std::fs::write(&config, text.replace("did = \"1000\"", "did = \"*\"")).unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_for_log("config reloaded", Duration::from_secs(5));
    let run = sipp(
        &["-sn", "uac", &gw.sip_addr(), "-m", "2"],
        Duration::from_secs(20),
    );
    assert!(run.ok(), "{}", run.describe());
    let long = long_call.join().unwrap();
    assert!(
        long.ok(),
        "the call in progress survived: {}",
        long.describe()
    );
}

/// A call whose RTP stops is hung up after `rtp_timeout_secs`: BYE to the
/// caller, and the call record says so.
#[test]
fn dead_calls_are_hung_up_after_the_rtp_timeout() {
    let mut gw = Gateway::start("[media]\nrtp_timeout_secs = 1\n");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    sock.send_to(
        raw_invite(port, "dead1", "z9hG4bKdead1").as_bytes(),
        gw.sip_addr(),
    )
    .unwrap();
    let ok = recv_until(
        &sock,
        |m| m.starts_with("SIP/2.0 200"),
        Duration::from_secs(5),
    )
    .expect("200");
    let to = header(&ok, "To");
    let ack = format!("ACK sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKdead1ack\r\nMax-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=t1\r\nTo: {to}\r\nCall-ID: dead1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n");
    sock.send_to(ack.as_bytes(), gw.sip_addr()).unwrap();
    let t0 = Instant::now();
    // We never send RTP: crossline hangs up about a second later.
    let bye = recv_until(&sock, |m| m.starts_with("BYE "), Duration::from_secs(5)).expect("BYE");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(header(&bye, "Call-ID"), "dead1");
    gw.wait_for_log("RTP timeout", Duration::from_secs(1));
    gw.signal(libc::SIGTERM);
    assert!(gw.wait_exit(Duration::from_secs(10)).is_some());
    let db = rusqlite::Connection::open(gw.db_path()).unwrap();
    let outcome: String = db
        .query_row(
            "SELECT outcome FROM calls WHERE call_id = 'dead1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(outcome, "local_hangup");
}

/// A Call-ID carrying an escape sequence and a NUL: the call goes through,
/// and its record keeps the Call-ID without them.
#[test]
fn control_characters_in_the_call_id_never_reach_the_cdr() {
    let mut gw = Gateway::start("");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let call_id = "cdr\u{1b}[2J\0esc@host";
    sock.send_to(
        raw_invite(port, call_id, "z9hG4bKcdr1").as_bytes(),
        gw.sip_addr(),
    )
    .unwrap();
    let ok = recv_until(
        &sock,
        |m| m.starts_with("SIP/2.0 200"),
        Duration::from_secs(5),
    )
    .expect("200");
    let to = header(&ok, "To");
    let ack = format!("ACK sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKcdr1ack\r\nMax-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=t1\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n");
    sock.send_to(ack.as_bytes(), gw.sip_addr()).unwrap();
    let bye = format!("BYE sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKcdr1bye\r\nMax-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=t1\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n");
    sock.send_to(bye.as_bytes(), gw.sip_addr()).unwrap();
    recv_until(
        &sock,
        |m| m.starts_with("SIP/2.0 200") && m.contains("CSeq: 2 BYE"),
        Duration::from_secs(5),
    )
    .expect("200 for the BYE");
    gw.signal(libc::SIGTERM);
    assert!(gw.wait_exit(Duration::from_secs(10)).is_some());
    let db = rusqlite::Connection::open(gw.db_path()).unwrap();
    let ids: Vec<String> = db
        .prepare("SELECT call_id FROM calls")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ids, vec!["cdr[2Jesc@host".to_string()]);
}

/// The drivers' bounds, on the real binary: TCP connections over
/// `max_tcp_connections` are closed at accept, a datagram over
/// `max_message_size` is dropped, a TCP message over it closes only its
/// own connection; all counted, and the connections within the limits
/// keep working.
#[test]
fn transport_limits_refuse_and_count_without_harming_others() {
    use std::io::{Read, Write};
    let gw = Gateway::start("[sip]\nmax_tcp_connections = 2\nmax_message_size = 1500\n");
    let options = |branch: &str| {
        format!(
            "OPTIONS sip:{addr} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK{branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:{addr}>\r\n\
             Call-ID: limits-{branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            addr = gw.sip_addr()
        )
    };
    let connect = || {
        let s = std::net::TcpStream::connect(gw.sip_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s
    };
    let answer = |s: &mut std::net::TcpStream| {
        let mut buf = [0u8; 2048];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let (mut a, mut b) = (connect(), connect());
    a.write_all(options("a1").as_bytes()).unwrap();
    assert!(answer(&mut a).starts_with("SIP/2.0 200"));
    b.write_all(options("b1").as_bytes()).unwrap();
    assert!(answer(&mut b).starts_with("SIP/2.0 200"));
    // A third connection is closed at once.
    let mut c = connect();
    let _ = c.write_all(options("c1").as_bytes());
    assert_eq!(answer(&mut c), "", "over the connection cap");
    // An oversize datagram gets nothing back.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let big = options("u1").replace(
        "Content-Length: 0",
        &format!("X-Pad: {}\r\nContent-Length: 0", "x".repeat(2000)),
    );
    udp.send_to(big.as_bytes(), gw.sip_addr()).unwrap();
    assert!(
        udp.recv_from(&mut [0u8; 2048]).is_err(),
        "oversize datagram dropped"
    );
    // An oversize message on TCP closes that connection only.
    let _ = b.write_all(big.as_bytes());
    assert_eq!(answer(&mut b), "", "the oversize stream is closed");
    a.write_all(options("a2").as_bytes()).unwrap();
    assert!(
        answer(&mut a).starts_with("SIP/2.0 200"),
        "the other one still works"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let counted = |m: &str, name: &str| {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    loop {
        let m = gw.http_get("/metrics").1;
        if counted(&m, "crossline_tcp_rejected_total") >= 1.0
            && counted(&m, "crossline_sip_oversize_total") >= 1.0
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not counted:\n{m}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// RFC 8760 §2.4: an inbound trunk's 407 carries a SHA-256 challenge and
/// then an MD5 one. PJSIP (pjsua2) answers the one it supports (MD5 in this
/// build), its call goes through, and the capture shows both challenges.
#[test]
fn inbound_trunks_are_challenged_with_sha256_and_md5() {
    let gw = Gateway::start(
        "[[trunks]]\nname = \"pbx\"\ninbound_username = \"pbxuser\"\ninbound_password = \"pbxpass\"\n\n[[routes]]\nflow = \"hold\"\n",
    );
    let cap = start_capture(&format!("udp port {}", gw.sip_port));
    let out = peers::run_script(
        "pjsua2",
        "pjsua_auth_call.py",
        &[
            &format!("sip:1000@{}", gw.sip_addr()),
            "pbxuser",
            "pbxpass",
            "1",
        ],
        Duration::from_secs(40),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("state CONFIRMED"), "pjsua2:\n{stdout}");
    std::thread::sleep(Duration::from_millis(300));
    let (file, _dir) = cap.stop();
    let sip = vec![format!("udp.port=={},sip", gw.sip_port)];
    let challenge = tshark_fields(
        &file,
        &sip,
        "sip.Status-Code == 407",
        &["sip.Proxy-Authenticate"],
    );
    // tshark_fields splits values at commas: join them back.
    let text = challenge.first().map(|r| r.join(",")).unwrap_or_default();
    let sha = text.find("algorithm=SHA-256");
    let md5 = text.find("algorithm=MD5");
    assert!(
        matches!((sha, md5), (Some(s), Some(m)) if s < m),
        "SHA-256 then MD5: {text}"
    );
    let answer = tshark_fields(
        &file,
        &sip,
        "sip.Proxy-Authorization",
        &["sip.Proxy-Authorization"],
    );
    let answer = answer.first().map(|r| r.join(",")).unwrap_or_default();
    assert!(answer.contains("username=\"pbxuser\""), "{answer}");
    assert!(gw.log().contains("incoming call"), "{}", gw.log());
}
