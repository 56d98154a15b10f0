//! Overload control against the real binary: calls from SIPp load the one
//! audio loop past a (test-low) threshold; then new INVITEs get 503 with
//! Retry-After and OPTIONS gets 503, while a call already up keeps getting
//! its RTP every 20 ms; when the load calls end, calls are taken again.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

/// A caller speaking raw SIP over UDP, with an RTP socket of its own.
struct Caller {
    sip: UdpSocket,
    rtp: UdpSocket,
    gw: SocketAddr,
}

impl Caller {
    fn new(gw: &Gateway) -> Caller {
        let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
        sip.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Caller {
            sip,
            rtp: UdpSocket::bind("127.0.0.1:0").unwrap(),
            gw: gw.sip_addr().parse().unwrap(),
        }
    }

    fn me(&self) -> SocketAddr {
        self.sip.local_addr().unwrap()
    }

    fn request(&self, method: &str, call_id: &str, branch: &str, to: &str, body: &str) -> String {
        let content_type = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{method} sip:service@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:caller@{me}>;tag=t-{call_id}\r\nTo: {to}\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContact: <sip:caller@{me}>\r\n\
             {content_type}Content-Length: {len}\r\n\r\n{body}",
            gw = self.gw,
            me = self.me(),
            len = body.len(),
        )
    }

    /// Send an INVITE with an offer for our RTP socket; the final answer.
    fn invite(&self, call_id: &str) -> String {
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
            self.rtp.local_addr().unwrap().port()
        );
        let to = format!("<sip:service@{}>", self.gw);
        self.exchange(&self.request("INVITE", call_id, call_id, &to, &sdp))
    }

    fn options(&self, branch: &str) -> String {
        let to = format!("<sip:service@{}>", self.gw);
        self.exchange(&self.request("OPTIONS", branch, branch, &to, ""))
    }

    /// Send and wait for the final answer (provisionals skipped).
    fn exchange(&self, msg: &str) -> String {
        self.sip.send_to(msg.as_bytes(), self.gw).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 65_535];
        while Instant::now() < deadline {
            if let Ok(n) = self.sip.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if !text.starts_with("SIP/2.0 1") {
                    return text;
                }
            }
        }
        panic!("no final answer to:\n{msg}");
    }

    /// ACK a final answer to our INVITE (2xx: a new transaction).
    fn ack(&self, call_id: &str, answer: &str) {
        let to = header(answer, "To").unwrap();
        let branch = if answer.starts_with("SIP/2.0 2") {
            format!("{call_id}-ack")
        } else {
            call_id.to_string()
        };
        let ack = self.request("ACK", call_id, &branch, to, "");
        self.sip.send_to(ack.as_bytes(), self.gw).unwrap();
    }

    /// RTP packets over `span`: the kernel's receive time (ns, so this
    /// thread's own scheduling doesn't count) and the sequence number.
    fn rtp_arrivals(&self, span: Duration) -> Vec<(u64, u16)> {
        use std::os::fd::AsRawFd;
        let fd = self.rtp.as_raw_fd();
        let on: libc::c_int = 1;
        // SAFETY: a socket option on a socket we own.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        // Whatever queued before counts for nothing.
        self.rtp.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2048];
        while self.rtp.recv(&mut buf).is_ok() {}
        self.rtp.set_nonblocking(false).unwrap();
        self.rtp
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let end = Instant::now() + span;
        let mut got = Vec::new();
        while Instant::now() < end {
            let mut control = [0u64; 16];
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: a zeroed msghdr pointing at buffers that outlive the call.
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_iov = &mut iov;
            hdr.msg_iovlen = 1;
            hdr.msg_control = control.as_mut_ptr().cast();
            hdr.msg_controllen = std::mem::size_of_val(&control);
            // SAFETY: as above.
            let n = unsafe { libc::recvmsg(fd, &mut hdr, 0) };
            if n > 12 {
                let seq = u16::from_be_bytes([buf[2], buf[3]]);
                got.push((kernel_timestamp(&hdr).expect("SO_TIMESTAMPNS"), seq));
            }
        }
        got
    }
}

/// The SO_TIMESTAMPNS control message, in nanoseconds.
fn kernel_timestamp(hdr: &libc::msghdr) -> Option<u64> {
    // SAFETY: walking control messages the kernel filled in for this msghdr.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::timespec);
                return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}

fn status(msg: &str) -> u16 {
    msg.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// The loop's load gauge, in percent.
fn load(gw: &Gateway) -> f64 {
    metric_value(
        &gw.http_get("/metrics").1,
        "crossline_audio_load_percent{loop=\"0\"}",
    )
}

#[test]
fn overload_refuses_new_calls_and_pings_while_calls_in_progress_keep_their_rtp() {
    require("sipp", "sip-tester");
    // One audio loop; a threshold low enough for a debug build's few
    // dozen calls to pass it, far above an idle loop's load (which reads
    // about 1 % when the box is busy with other tests: the release point,
    // 90 % of the threshold, must stay above that).
    let gw = Gateway::start(
        "[media]\naudio_threads = 1\noverload_threshold_percent = 2.0\noverload_retry_after_secs = 7\n",
    );
    let caller = Caller::new(&gw);
    assert_eq!(status(&caller.options("idle-ping")), 200);

    // The call in progress: answered by the demo flow, which plays to it.
    let ok = caller.invite("kept-call");
    assert_eq!(status(&ok), 200, "{ok}");
    caller.ack("kept-call", &ok);
    let idle_load = load(&gw);

    // Load: 120 calls held for 12 s.
    let addr = gw.sip_addr();
    let load_calls = std::thread::spawn(move || {
        sipp(
            &[
                "-sn", "uac", &addr, "-m", "120", "-l", "120", "-r", "60", "-d", "12000",
            ],
            Duration::from_secs(60),
        )
    });
    let on = wait_metric(&gw, "crossline_overloaded", 1.0, Duration::from_secs(10));
    let loaded = load(&gw);
    assert_eq!(
        on,
        1.0,
        "never overloaded: load {loaded} % (idle {idle_load} %)\n{}",
        gw.http_get("/metrics").1
    );
    assert!(idle_load < 1.0, "idle loop already at {idle_load} %");

    // New calls: 503 with our Retry-After; pings: 503.
    let refused = caller.invite("refused-call");
    assert_eq!(status(&refused), 503, "{refused}");
    assert_eq!(header(&refused, "Retry-After"), Some("7"));
    caller.ack("refused-call", &refused);
    let ping = caller.options("busy-ping");
    assert_eq!(status(&ping), 503, "{ping}");
    assert_metric_at_least(
        &gw,
        "crossline_calls_refused_total{reason=\"overload\"}",
        1.0,
    );
    assert_metric_at_least(&gw, "crossline_overload_options_refused_total", 1.0);

    // The call in progress keeps its pacing: 50 packets a second, in
    // sequence, none more than a frame late.
    let arrivals = caller.rtp_arrivals(Duration::from_secs(2));
    assert!(
        (95..=105).contains(&arrivals.len()),
        "{} RTP packets in 2 s",
        arrivals.len()
    );
    for w in arrivals.windows(2) {
        let ((t0, seq0), (t1, seq1)) = (w[0], w[1]);
        assert_eq!(
            seq1,
            seq0.wrapping_add(1),
            "RTP lost between {seq0} and {seq1}"
        );
        let gap_ms = (t1 - t0) as f64 / 1e6;
        assert!(
            gap_ms < 40.0,
            "{gap_ms:.1} ms between RTP {seq0} and {seq1}"
        );
    }

    // The load calls end (those past the threshold were refused); after
    // the calm period, calls are taken again.
    let run = load_calls.join().unwrap();
    let admitted = run.stat("SuccessfulCall(C)").unwrap_or(0);
    eprintln!("load {loaded} % with {admitted} of 120 calls admitted (idle {idle_load} %)");
    assert!(admitted >= 1, "{}", run.describe());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answer = 0;
    for ping in 0.. {
        if Instant::now() > deadline {
            break;
        }
        answer = status(&caller.options(&format!("later-ping-{ping}")));
        if answer == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(answer, 200, "still refusing at load {} %", load(&gw));
    let ok = caller.invite("later-call");
    assert_eq!(status(&ok), 200, "{ok}");
}
