//! Cancellation safety end to end: a caller who hangs up while a flow is
//! waiting (on an API, a provider, a menu timeout or a pause) leaves
//! nothing behind. The flow stops at once, its in-flight request is
//! dropped, and the gauges return to idle with every RTP port free.

mod common;

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the slow stand-in saw of its one request.
#[derive(Default)]
struct Held {
    started: AtomicBool,
    /// Requests seen (retries included).
    requests: AtomicUsize,
    answered: AtomicBool,
    /// When the handler went away without answering.
    dropped_at: Mutex<Option<Instant>>,
}

/// Marks the request dropped unless it was answered first.
struct DropGuard(Arc<Held>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.0.answered.load(Ordering::SeqCst) {
            *self.0.dropped_at.lock().unwrap() = Some(Instant::now());
        }
    }
}

/// An HTTP server that takes any request and answers only after 30 s. Raw
/// TCP, so "the client went away" is the socket's EOF, not a guess about
/// when a framework drops handlers.
fn slow_stand_in() -> (u16, Arc<Held>) {
    let held = Arc::new(Held::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let h = held.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((sock, _)) = l.accept().await {
                tokio::spawn(hold(sock, h.clone()));
            }
        });
    });
    (port, held)
}

async fn hold(mut sock: tokio::net::TcpStream, held: Arc<Held>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    held.started.store(true, Ordering::SeqCst);
    held.requests.fetch_add(1, Ordering::SeqCst);
    let _guard = DropGuard(held.clone());
    // Bodies are small and ignored; only EOF matters from here on.
    let closed = async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(30)) => {
            held.answered.store(true, Ordering::SeqCst);
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
                .await;
        }
        _ = closed => {}
    }
}

/// Start a gateway routing every call to `flow` (a flow file's text, with
/// `name = "cancel-test"`), plus any extra config.
fn gateway_with_flow(flow: &str, extra: &str) -> (Gateway, tempfile::TempDir) {
    let flows = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(flows.path().join("cancel-test.toml")).unwrap();
    f.write_all(flow.as_bytes()).unwrap();
    let gw = Gateway::start(&format!(
        "[flows]\ndir = \"{}\"\n\n{extra}\n[[routes]]\nflow = \"cancel-test\"\n",
        flows.path().display()
    ));
    (gw, flows)
}

/// A caller who hangs up 1 s after the answer.
fn call_and_hang_up(gw: &Gateway) -> Sipp {
    let run = sipp(
        &["-sn", "uac", &gw.sip_addr(), "-m", "1", "-d", "1000"],
        Duration::from_secs(30),
    );
    assert!(run.ok(), "{}\n{}", run.describe(), gw.log());
    run
}

/// The value of an unlabelled series in the Prometheus text.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        (series == name).then(|| value.parse().ok()).flatten()
    })
}

/// RTP port pairs in the harness's range: even ports whose odd neighbour
/// is in range too.
fn all_pairs(gw: &Gateway) -> f64 {
    let (min, max) = gw.rtp_range;
    (min + min % 2..max).step_by(2).count() as f64
}

/// Poll /metrics (exported once a second) until `ok` holds, for up to 5 s.
fn wait_metrics(gw: &Gateway, what: &str, ok: impl Fn(&str) -> bool) -> Duration {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(5) {
        let (status, body) = gw.http_get("/metrics");
        if status == 200 && ok(&body) {
            return start.elapsed();
        }
        last = body;
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{what} not reached within 5 s:\n{last}\n---- log ----\n{}",
        gw.log()
    );
}

/// Flows, calls and streams at zero and every RTP port pair free again.
fn assert_idle(gw: &Gateway) -> Duration {
    let pairs = all_pairs(gw);
    wait_metrics(gw, "idle gauges", |m| {
        gauge(m, "crossline_flows_active") == Some(0.0)
            && gauge(m, "crossline_calls_active") == Some(0.0)
            && gauge(m, "crossline_rtp_streams") == Some(0.0)
            && gauge(m, "crossline_rtp_ports_free") == Some(pairs)
    })
}

/// Before a call: the pool is full (so "back to full" means something).
fn assert_full_pool(gw: &Gateway) {
    let pairs = all_pairs(gw);
    assert_eq!(pairs, 150.0, "the harness configures 300 ports");
    wait_metrics(gw, "a full port pool", |m| {
        gauge(m, "crossline_rtp_ports_free") == Some(pairs)
    });
}

/// The flow got as far as `node` and no further.
fn assert_stopped_at(gw: &Gateway, node: &str) {
    let log = gw.log();
    assert!(log.contains(&format!("node={node} ")), "{log}");
    assert!(!log.contains("node=after"), "the flow went on:\n{log}");
    assert!(log.contains("call ended"), "{log}");
}

/// Hang up during an `http` node: the request to the API is dropped (its
/// connection closed), not left to run its 30 s, and nothing leaks.
#[test]
fn hangup_during_http_node_cancels_the_request() {
    let (port, held) = slow_stand_in();
    let (gw, _flows) = gateway_with_flow(
        &format!(
            r#"name = "cancel-test"
start = "lookup"

[[nodes]]
id = "lookup"
type = "http"
method = "POST"
url = "http://127.0.0.1:{port}/slow"
body = '{{"caller": "{{{{caller}}}}"}}'
timeout_ms = 60000
next = "after"
on_error = "after"

[[nodes]]
id = "after"
type = "set"
vars = {{ done = "yes" }}
"#
        ),
        "",
    );
    assert_full_pool(&gw);
    call_and_hang_up(&gw);
    let hung_up = Instant::now();
    assert!(
        held.started.load(Ordering::SeqCst),
        "the API never saw the request:\n{}",
        gw.log()
    );
    while held.dropped_at.lock().unwrap().is_none() && hung_up.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let dropped = *held.dropped_at.lock().unwrap();
    assert!(
        dropped.is_some(),
        "the request was still open 3 s after the hang-up:\n{}",
        gw.log()
    );
    assert!(!held.answered.load(Ordering::SeqCst));
    assert_idle(&gw);
    assert_eq!(
        held.requests.load(Ordering::SeqCst),
        1,
        "no retry after a hang-up"
    );
    assert_stopped_at(&gw, "lookup");
    // Cancelled, not failed: the node's error path never ran.
    assert!(!gw.log().contains("http node failed"), "{}", gw.log());
}

/// Hang up during `send_sms`: the provider request is dropped too, and no
/// retry follows it.
#[test]
fn hangup_during_send_sms_cancels_the_provider_request() {
    let (port, held) = slow_stand_in();
    let (gw, _flows) = gateway_with_flow(
        r#"name = "cancel-test"
start = "sms"

[[nodes]]
id = "sms"
type = "send_sms"
to = "+15551234567"
body = "hello"
next = "after"
on_error = "after"

[[nodes]]
id = "after"
type = "set"
vars = { done = "yes" }
"#,
        &format!(
            "[messaging.sms]\nprovider = \"twilio\"\nbase_url = \"http://127.0.0.1:{port}\"\n\
             account_sid = \"AC0123456789abcdef\"\nauth_token = \"secret-token\"\n\
             from = \"+15550100000\"\n"
        ),
    );
    assert_full_pool(&gw);
    call_and_hang_up(&gw);
    let hung_up = Instant::now();
    assert!(held.started.load(Ordering::SeqCst), "{}", gw.log());
    while held.dropped_at.lock().unwrap().is_none() && hung_up.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        held.dropped_at.lock().unwrap().is_some(),
        "the provider request was still open 3 s after the hang-up:\n{}",
        gw.log()
    );
    assert_idle(&gw);
    assert_eq!(
        held.requests.load(Ordering::SeqCst),
        1,
        "no retry after a hang-up"
    );
    assert_stopped_at(&gw, "sms");
    assert!(!gw.log().contains("SMS failed"), "{}", gw.log());
}

/// Hang up while a `gather` waits 60 s for a digit: the timer goes with
/// the flow.
#[test]
fn hangup_during_gather_stops_the_flow() {
    let (gw, _flows) = gateway_with_flow(
        r#"name = "cancel-test"
start = "menu"

[[nodes]]
id = "menu"
type = "gather"
max_digits = 1
timeout_secs = 60
inter_digit_timeout_secs = 60
retries = 0
next = "after"
on_failure = "after"

[[nodes]]
id = "after"
type = "set"
vars = { done = "yes" }
"#,
        "",
    );
    assert_full_pool(&gw);
    call_and_hang_up(&gw);
    let took = assert_idle(&gw);
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_stopped_at(&gw, "menu");
}

/// Hang up during a 60 s `pause`.
#[test]
fn hangup_during_pause_stops_the_flow() {
    let (gw, _flows) = gateway_with_flow(
        r#"name = "cancel-test"
start = "wait"

[[nodes]]
id = "wait"
type = "pause"
secs = 60
next = "after"

[[nodes]]
id = "after"
type = "set"
vars = { done = "yes" }
"#,
        "",
    );
    assert_full_pool(&gw);
    call_and_hang_up(&gw);
    let took = assert_idle(&gw);
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_stopped_at(&gw, "wait");
}

/// A short pause outlived by the test: had its timer survived the hang-up,
/// the next node would run (and log) once it fired.
#[test]
fn a_pause_timer_does_not_fire_after_the_hangup() {
    let (gw, _flows) = gateway_with_flow(
        r#"name = "cancel-test"
start = "wait"

[[nodes]]
id = "wait"
type = "pause"
secs = 3
next = "after"

[[nodes]]
id = "after"
type = "set"
vars = { done = "yes" }
"#,
        "",
    );
    call_and_hang_up(&gw);
    let hung_up = Instant::now();
    assert_idle(&gw);
    // The pause began about 1 s before the hang-up; give it 2 s past its end.
    std::thread::sleep(Duration::from_secs(4).saturating_sub(hung_up.elapsed()));
    assert_stopped_at(&gw, "wait");
}

/// The stand-in itself: an open request is not reported dropped, a closed
/// one is, promptly.
#[test]
fn slow_stand_in_tells_a_dropped_request_from_an_open_one() {
    use std::io::Write;
    let (port, held) = slow_stand_in();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(held.started.load(Ordering::SeqCst));
    assert!(held.dropped_at.lock().unwrap().is_none());
    let closed = Instant::now();
    drop(s);
    while held.dropped_at.lock().unwrap().is_none() && closed.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(held.dropped_at.lock().unwrap().is_some());
}

/// Hang up while a transfer rings the agent: the agent's leg is cancelled
/// (the SIPp agent sees CANCEL and answers 487), the hold music stops, and
/// both legs' media and the flow are gone.
#[test]
fn hangup_while_a_transfer_rings_cancels_the_agent_leg() {
    let agent_port = free_port();
    let agent = std::thread::spawn(move || {
        sipp_on(
            &["-sf", &scenario("uas_ring_cancel.xml"), "-m", "1"],
            Duration::from_secs(30),
            agent_port,
            free_port(),
        )
    });
    std::thread::sleep(Duration::from_millis(400));
    let (gw, _flows) = gateway_with_flow(
        &format!(
            r#"name = "cancel-test"
start = "agent"

[[nodes]]
id = "agent"
type = "transfer"
targets = ["sip:agent@127.0.0.1:{agent_port}"]
ring_timeout_secs = 30
next = "after"
on_failure = "after"

[[nodes]]
id = "after"
type = "hangup"
"#
        ),
        "",
    );
    assert_full_pool(&gw);
    call_and_hang_up(&gw);
    let agent = agent.join().unwrap();
    assert!(
        agent.ok(),
        "the agent leg was cancelled: {}",
        agent.describe()
    );
    let took = assert_idle(&gw);
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_stopped_at(&gw, "agent");
}
