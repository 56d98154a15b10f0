//! TLS against the real binary, with OpenSSL on the other end (a different
//! TLS stack from our rustls): SIP over TLS from `openssl s_client` (an
//! OPTIONS ping and a whole sips: call), HTTPS checked by curl, and a
//! callback dialled out over TLS to a second gateway that verifies
//! nothing but the test's own CA.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const OPERATOR_TOKEN: &str = "operator-token-for-tls-tests";

/// A test CA and a server certificate it signed for 127.0.0.1, localhost
/// and carrier.test (P-256),
/// made by openssl: (server cert, server key, CA cert).
fn certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    require("openssl", "openssl");
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-days",
            "2",
            "-subj",
            "/CN=crossline test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:carrier.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    ]);
    (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    )
}

fn tls_gateway(cert: &Path, key: &Path, ca: &Path, extra: &str) -> (Gateway, u16) {
    tls_gateway_with(cert, key, ca, "", extra)
}

/// `sip_extra` goes into `[sip]`.
fn tls_gateway_with(
    cert: &Path,
    key: &Path,
    ca: &Path,
    sip_extra: &str,
    extra: &str,
) -> (Gateway, u16) {
    let tls_port = free_port();
    let gw = Gateway::start(&format!(
        "[sip]\ntls = [\"127.0.0.1:{tls_port}\"]\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\ntls_ca = \"{ca}\"\n{sip_extra}\n\
         [http]\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\noperator_token = \"{OPERATOR_TOKEN}\"\n\n{extra}",
        cert = cert.display(),
        key = key.display(),
        ca = ca.display(),
    ));
    gw.wait_for_log("SIP listening on TLS", Duration::from_secs(2));
    (gw, tls_port)
}

/// `openssl s_client` as a SIP UA over TLS: what we write goes out
/// encrypted; what comes back is read as SIP messages.
struct OpensslPeer {
    child: Child,
    input: ChildStdin,
    messages: mpsc::Receiver<String>,
}

impl OpensslPeer {
    fn connect(port: u16, ca: &Path) -> OpensslPeer {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-verify_return_error", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-CAfile")
            .arg(ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let (tx, messages) = mpsc::channel();
        // Split the decrypted stream into messages by Content-Length.
        std::thread::spawn(move || loop {
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if out.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line == "\r\n" && head.is_empty() {
                    continue;
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.eq_ignore_ascii_case("content-length") || k == "l")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            if out.read_exact(&mut body).is_err() {
                return;
            }
            let _ = tx.send(head + &String::from_utf8_lossy(&body));
        });
        OpensslPeer {
            child,
            input,
            messages,
        }
    }

    fn send(&mut self, msg: &str) {
        self.input.write_all(msg.as_bytes()).unwrap();
        self.input.flush().unwrap();
    }

    /// The next message whose first line starts with `start`.
    fn expect(&self, start: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self
                .messages
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {start:?} over TLS"));
            if msg.starts_with(start) {
                return msg;
            }
        }
    }
}

impl Drop for OpensslPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .unwrap_or_else(|| panic!("no {name} in:\n{msg}"))
}

#[test]
fn sip_over_tls_and_https_with_openssl_and_curl() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = certificate(dir.path());
    let (gw, tls_port) = tls_gateway(&cert, &key, &ca, "");

    // HTTPS: curl (OpenSSL) trusts it with our CA, and refuses without.
    require("curl", "curl");
    let url = format!("https://127.0.0.1:{}/healthz", gw.http_port);
    let ok = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&ca)
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "ok\n");
    // Over HTTPS, and only there, HSTS.
    let head = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-D", "-", "--cacert"])
        .arg(&ca)
        .arg(&url)
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
    assert!(
        head.contains("strict-transport-security: max-age=31536000"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    let untrusted = Command::new("curl").args(["-sS", &url]).output().unwrap();
    assert!(
        !untrusted.status.success(),
        "a self-signed cert must not pass"
    );
    let plain = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{}/healthz", gw.http_port))
        .output()
        .unwrap();
    assert_ne!(
        String::from_utf8_lossy(&plain.stdout),
        "ok\n",
        "no plain HTTP"
    );

    // SIP over TLS: an OPTIONS ping...
    let mut ua = OpensslPeer::connect(tls_port, &ca);
    let here = format!("127.0.0.1:{tls_port}");
    ua.send(&format!(
        "OPTIONS sips:ping@{here} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKtls1\r\n\
         Max-Forwards: 70\r\nFrom: <sips:alice@127.0.0.1>;tag=t1\r\nTo: <sips:ping@{here}>\r\n\
         Call-ID: tls-options-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ));
    let pong = ua.expect("SIP/2.0 ");
    assert!(pong.starts_with("SIP/2.0 200"), "{pong}");
    assert!(header(&pong, "Via").starts_with("SIP/2.0/TLS"), "{pong}");

    // ...and a whole sips: call on the same connection: INVITE with an
    // offer, the demo flow answers, ACK, then our BYE.
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    ua.send(&format!(
        "INVITE sips:2000@{here} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKtls2\r\n\
         Max-Forwards: 70\r\nFrom: <sips:alice@127.0.0.1>;tag=t2\r\nTo: <sips:2000@{here}>\r\n\
         Call-ID: tls-call-1\r\nCSeq: 1 INVITE\r\nContact: <sips:alice@127.0.0.1:5999>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    ));
    let ok = ua.expect("SIP/2.0 200");
    assert!(header(&ok, "Contact").contains("sips:"), "{ok}");
    assert!(ok.contains("m=audio "), "the answer carries SDP: {ok}");
    let to = header(&ok, "To").to_string();
    let ack_bye = |method: &str, cseq: u32, branch: &str| {
        format!(
            "{method} sips:2000@{here} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch={branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sips:alice@127.0.0.1>;tag=t2\r\nTo: {to}\r\n\
             Call-ID: tls-call-1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    ua.send(&ack_bye("ACK", 1, "z9hG4bKtls3"));
    gw.wait_for_log("incoming call", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    ua.send(&ack_bye("BYE", 2, "z9hG4bKtls4"));
    let bye_ok = ua.expect("SIP/2.0 ");
    assert!(bye_ok.starts_with("SIP/2.0 200"), "{bye_ok}");
    assert!(header(&bye_ok, "CSeq").ends_with("BYE"), "{bye_ok}");
    gw.wait_for_log("cause=RemoteBye", Duration::from_secs(5));

    // A client that can't finish a handshake is dropped and counted.
    let mut junk = std::net::TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    junk.write_all(b"OPTIONS sip:x SIP/2.0\r\n\r\n").unwrap();
    let _ = junk.set_read_timeout(Some(Duration::from_secs(5)));
    let mut answer = Vec::new();
    // A TLS alert at most, then the close; never SIP.
    assert!(
        junk.read_to_end(&mut answer).is_ok(),
        "the server closes it"
    );
    assert!(!String::from_utf8_lossy(&answer).contains("SIP/2.0"));
    let failures = wait_metric_over_https(&gw, &ca, "crossline_tls_handshake_failures_total", 1.0);
    assert_eq!(failures, 1.0, "the failed handshake is counted");
    assert_eq!(gw.http_get_tls_status(&ca), 200, "still serving");
}

#[test]
fn a_callback_goes_out_over_tls_to_a_gateway_that_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = certificate(dir.path());
    // B: the "carrier", TLS only for this; its demo flow answers.
    let (_b, b_tls) = tls_gateway(&cert, &key, &ca, "");
    // A: dials B over TLS, trusting only the test's CA.
    let flows = repo().join("tests/flows/restart");
    let (a, _) = tls_gateway(
        &cert,
        &key,
        &ca,
        &format!(
            "[flows]\ndir = \"{}\"\n\n\
             [[trunks]]\nname = \"carrier\"\noutbound_proxy = \"sip:127.0.0.1:{b_tls}\"\noutbound_transport = \"tls\"\ncaller_id = \"+15550100000\"\n",
            flows.display()
        ),
    );
    let done = callback_over_https(&a, &ca);
    assert_eq!(done["state"], "completed", "{done}");
    assert!(done["answered_at"].is_number(), "{done}");
}

/// A trunk by DNS name over TLS (RFC 5922): the carrier's certificate
/// must name the domain of the proxy URI. `sips:carrier.test` resolves
/// (SRV `_sips._tcp`) to the second gateway, whose certificate carries
/// that name: the callback completes. `sips:other.test` resolves to the
/// same gateway, but its certificate doesn't carry that name: the
/// handshake fails, which fails the call at once with 503.
#[test]
fn a_trunk_by_name_over_tls_checks_the_certificate_for_that_name() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = certificate(dir.path());
    let (_b, b_tls) = tls_gateway(&cert, &key, &ca, "");
    let dns = common::dns::Dnsmasq::start(
        &[
            format!("--srv-host=_sips._tcp.carrier.test,sbc.carrier.test,{b_tls},0,0"),
            format!("--srv-host=_sips._tcp.other.test,sbc.carrier.test,{b_tls},0,0"),
            "--host-record=sbc.carrier.test,127.0.0.1".into(),
        ],
        300,
    );
    let flows = repo().join("tests/flows/restart");
    for (proxy, state, status) in [
        ("sips:carrier.test", "completed", None),
        ("sips:other.test", "failed", Some(503)),
    ] {
        let (a, _) = tls_gateway(
            &cert,
            &key,
            &ca,
            &format!(
                "[sip]\ndns_servers = [\"{}\"]\n\n[flows]\ndir = \"{}\"\n\n\
                 [[trunks]]\nname = \"carrier\"\noutbound_proxy = \"{proxy}\"\ncaller_id = \"+15550100000\"\n",
                dns.server(),
                flows.display()
            ),
        );
        let done = callback_over_https(&a, &ca);
        assert_eq!(done["state"], state, "{proxy}: {done}");
        if let Some(status) = status {
            assert_eq!(done["sip_status"], status, "{proxy}: {done}");
            assert!(a.log().contains("TLS connection failed"), "{}", a.log());
        }
    }
}

trait Https {
    fn http_get_tls_status(&self, ca: &Path) -> u16;
    fn https_json(
        &self,
        ca: &Path,
        method: &str,
        path: &str,
        auth: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value;
}

impl Https for Gateway {
    fn http_get_tls_status(&self, ca: &Path) -> u16 {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(ca)
            .arg(format!("https://127.0.0.1:{}/healthz", self.http_port))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
    }

    fn https_json(
        &self,
        ca: &Path,
        method: &str,
        path: &str,
        auth: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-X", method, "--cacert"])
            .arg(ca)
            .args(["-H", &format!("Authorization: {auth}")]);
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "-d", &b.to_string()]);
        }
        let out = cmd
            .arg(format!("https://127.0.0.1:{}{path}", self.http_port))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&out.stdout)))
    }
}

/// A TLS connection that goes quiet after its handshake is closed after
/// `tcp_idle_secs`, as a TCP one is, and counted.
#[test]
fn a_silent_tls_connection_is_closed_after_the_idle_timeout() {
    require("openssl", "openssl");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = certificate(dir.path());
    let (gw, tls_port) = tls_gateway_with(&cert, &key, &ca, "tcp_idle_secs = 2\n", "");
    let started = std::time::Instant::now();
    let mut peer = OpensslPeer::connect(tls_port, &ca);
    // Nothing is sent; s_client exits when the gateway closes the socket.
    let deadline = started + Duration::from_secs(10);
    let closed = loop {
        if let Some(status) = peer.child.try_wait().unwrap() {
            break Some((status, started.elapsed()));
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = peer.child.kill();
    let (_, after) = closed.expect("the silent TLS connection was never closed");
    assert!(
        after >= Duration::from_millis(1_900) && after <= Duration::from_secs(6),
        "closed after {after:?}; tcp_idle_secs is 2"
    );
    let closed = wait_metric_over_https(&gw, &ca, "crossline_tcp_idle_closed_total", 1.0);
    assert_eq!(closed, 1.0, "the idle close is counted");
}

/// A metric read over HTTPS (metrics are exported every second): once it
/// reaches `at_least`, or its value after 5 s.
fn wait_metric_over_https(gw: &Gateway, ca: &Path, name: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(ca)
            .arg(format!("https://127.0.0.1:{}/metrics", gw.http_port))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let n = text
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        if n >= at_least || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A callback placed through the API over HTTPS, until it completes or
/// fails (20 s at most): its final state.
fn callback_over_https(gw: &Gateway, ca: &Path) -> serde_json::Value {
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let created = gw.https_json(
        ca,
        "POST",
        "/v1/callbacks",
        &auth,
        Some(json!({
            "phone": "+34612345678",
            "flow": "restart-callback",
            "consent": { "given": true, "text": "We may call you back." },
        })),
    );
    let id = created["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = gw.https_json(ca, "GET", &format!("/v1/callbacks/{id}"), &auth, None);
        if v["state"] == "completed" || v["state"] == "failed" {
            return v;
        }
        assert!(Instant::now() < deadline, "callback stuck: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
