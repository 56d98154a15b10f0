//! Trunk health against the real binary: SIPp trunks answer (or stop
//! answering) its OPTIONS keep-alives, and `GET /v1/trunks` and /metrics
//! say what it made of them; a callback through a trunk group passes over
//! the trunk that is down and lands on the next one's SIPp UAS; a trunk
//! that answers garbage counts as failing and harms nothing.

mod common;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::dns::Uas;
use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "operator-token-for-trunk-tests";

fn trunks(gw: &Gateway) -> Vec<Value> {
    let auth = format!("Bearer {TOKEN}");
    let r = gw.http("GET", "/v1/trunks", &[("Authorization", &auth)], None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["trunks"].as_array().cloned().unwrap_or_default()
}

fn trunk(gw: &Gateway, name: &str) -> Value {
    trunks(gw)
        .into_iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no trunk {name} in /v1/trunks"))
}

/// Wait until `name` is in `state`; its entry then.
fn wait_state(gw: &Gateway, name: &str, state: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let t = trunk(gw, name);
        if t["state"] == state {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never {state}: {t}\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Answers every datagram with bytes that are no SIP at all, or a
/// response that does not parse, until `stop`.
fn garbage_trunk(stop: Arc<AtomicBool>) -> (u16, std::thread::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = socket.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut n = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let Ok((_, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            n += 1;
            let reply: &[u8] = if n % 2 == 0 {
                b"SIP/2.0 2OO \xff\xfe\r\nVia: ;;;\r\nCSeq: x\r\n\r\n"
            } else {
                b"\x00\x01\x02 not SIP\r\n\r\n"
            };
            let _ = socket.send_to(reply, from);
        }
    });
    (port, handle)
}

#[test]
fn trunks_go_down_when_they_stop_answering_options_and_calls_skip_them() {
    let trunk_a = free_port();
    let trunk_b = free_port();
    let visitor_media = free_port();
    let stop = Arc::new(AtomicBool::new(false));
    let (garbage, garbage_thread) = garbage_trunk(stop.clone());
    let options = Uas::start("uas_options.xml", trunk_a, &[]);
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(
        flows.path().join("bye.toml"),
        "name = \"bye\"\n\n[[nodes]]\nid = \"start\"\ntype = \"hangup\"\n",
    )
    .unwrap();
    let gw = Gateway::start(&format!(
        "[http]\noperator_token = \"{TOKEN}\"\n\n\
         [flows]\ndir = \"{flows}\"\n\n\
         [callbacks]\ntrunk = \"pstn\"\nring_timeout_secs = 10\n\n\
         [[trunks]]\nname = \"a\"\noutbound_proxy = \"sip:127.0.0.1:{trunk_a}\"\n\
         options_interval_secs = 1\noptions_failures_down = 2\noptions_successes_up = 1\n\n\
         [[trunks]]\nname = \"b\"\noutbound_proxy = \"sip:127.0.0.1:{trunk_b}\"\ncaller_id = \"+15550100002\"\n\n\
         [[trunks]]\nname = \"garbage\"\noutbound_proxy = \"sip:127.0.0.1:{garbage}\"\n\
         options_interval_secs = 1\noptions_failures_down = 2\n\n\
         [[trunk_groups]]\nname = \"pstn\"\ntrunks = [\"a\", \"b\"]\n",
        flows = flows.path().display(),
    ));

    // A trunk that answers stays up.
    let a = wait_state(&gw, "a", "up", Duration::from_secs(5));
    assert_eq!(a["last_status"], 200, "{a}");
    assert_eq!(a["consecutive_failures"], 0, "{a}");
    assert_eq!(a["groups"], json!(["pstn"]), "{a}");
    assert!(a["last_probe_at"].as_u64().is_some(), "{a}");
    let b = trunk(&gw, "b");
    assert_eq!(b["state"], "unmonitored", "{b}");
    assert_eq!(b["last_probe_at"], Value::Null, "{b}");
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(trunk(&gw, "a")["state"], "up", "still up after more probes");
    assert!(
        options.started() >= 2,
        "SIPp saw its OPTIONS again and again"
    );
    assert_metric_at_least(&gw, "crossline_trunk_up{trunk=\"a\"}", 1.0);
    assert_metric_at_least(&gw, "crossline_trunk_options_sent_total{trunk=\"a\"}", 3.0);

    // A trunk that answers garbage is down, and nothing else suffered.
    let g = wait_state(&gw, "garbage", "down", Duration::from_secs(6));
    assert_eq!(g["last_status"], Value::Null, "{g}");
    assert!(g["consecutive_failures"].as_u64().unwrap() >= 2, "{g}");
    assert_metric_at_least(&gw, "crossline_sip_parse_errors_total", 1.0);
    assert_metric_at_least(
        &gw,
        "crossline_trunk_options_failed_total{trunk=\"garbage\",reason=\"timeout\"}",
        2.0,
    );

    // The trunk stops answering (its SIPp is killed): down after two
    // intervals without an answer.
    drop(options);
    let stopped = Instant::now();
    let a = wait_state(&gw, "a", "down", Duration::from_secs(6));
    // Two probes must go unanswered: at least one whole interval.
    assert!(
        stopped.elapsed() >= Duration::from_millis(900),
        "two failures, not one"
    );
    assert!(a["consecutive_failures"].as_u64().unwrap() >= 2, "{a}");
    assert_metric_at_least(
        &gw,
        "crossline_trunk_transitions_total{trunk=\"a\",to=\"down\"}",
        1.0,
    );
    let v = wait_metric(
        &gw,
        "crossline_trunk_up{trunk=\"a\"}",
        0.0,
        Duration::from_secs(3),
    );
    assert_eq!(v, 0.0, "the gauge shows it down");

    // A callback through the group passes over trunk a, straight to b.
    let visitor = std::thread::spawn(move || {
        sipp_on(
            &["-sf", &scenario("uas_answer.xml"), "-m", "1"],
            Duration::from_secs(30),
            trunk_b,
            visitor_media,
        )
    });
    std::thread::sleep(Duration::from_millis(400));
    let r = gw.http(
        "POST",
        "/v1/callbacks",
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("Content-Type", "application/json"),
        ],
        Some(
            &json!({
                "phone": "+34 612 345 678",
                "flow": "bye",
                "consent": { "given": true, "text": "We may call you." }
            })
            .to_string(),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    let done = loop {
        let r = gw.http(
            "GET",
            &format!("/v1/callbacks/{id}"),
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            None,
        );
        let v = r.json();
        if v["state"] == "completed" || v["state"] == "failed" {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "callback stuck: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let visitor = visitor.join().unwrap();
    assert!(visitor.ok(), "trunk b's UAS: {}", visitor.describe());
    assert_eq!(done["state"], "completed", "{done}");
    assert_metric_at_least(&gw, "crossline_trunk_skipped_total{trunk=\"a\"}", 1.0);
    assert!(gw.log().contains("trunk down: passed over"), "{}", gw.log());

    // The trunk comes back: up at its first answer.
    let _options = Uas::start("uas_options.xml", trunk_a, &[]);
    let a = wait_state(&gw, "a", "up", Duration::from_secs(5));
    assert_eq!(a["last_status"], 200, "{a}");
    assert_metric_at_least(
        &gw,
        "crossline_trunk_transitions_total{trunk=\"a\",to=\"up\"}",
        2.0,
    );

    assert!(!gw.log().contains("panicked"), "{}", gw.log());
    drop(gw);
    stop.store(true, Ordering::Relaxed);
    garbage_thread.join().unwrap();
}

/// `crossline check` names the file, line and key of each bad group.
#[test]
fn check_refuses_groups_of_unknown_or_inbound_trunks_and_name_clashes() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("groups.toml");
    std::fs::write(
        &bad,
        "[[trunks]]\nname = \"a\"\noutbound_proxy = \"sip:192.0.2.1\"\n\n\
         [[trunks]]\nname = \"in\"\ninbound_cidrs = [\"192.0.2.0/24\"]\n\n\
         [[trunk_groups]]\nname = \"a\"\ntrunks = [\"nowhere\", \"in\"]\n\n\
         [[trunk_groups]]\nname = \"empty\"\ntrunks = []\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crossline"))
        .arg("check")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = bad.display().to_string();
    for expected in [
        "trunk_groups[0].name: \"a\" is already a trunk's name",
        "trunk_groups[0].trunks[0]: no trunk named \"nowhere\"",
        "trunk_groups[0].trunks[1]: trunk \"in\" has no outbound_proxy",
        "trunk_groups[1].trunks: list at least one [[trunks]] name",
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("{file}:")) && l.contains(expected)),
            "{expected}: {err}"
        );
    }
}
