//! Scale-out on existing engines: two crossline nodes on loopback sharing
//! one PostgreSQL (a throwaway cluster of Debian's `postgresql`), behind
//! Kamailio's dispatcher (`deploy/kamailio/kamailio.cfg`, driven by
//! `deploy/kamailio/smoke.sh`).
//!
//! - An SMS chat started on node A continues when its webhooks land on
//!   node B: B hands each text to A, which runs the chat.
//! - Calls through Kamailio spread over both nodes; when A is killed, new
//!   calls fail over to B.
//! - Once A's lease on the chat runs out, B takes the chat over and its
//!   flow carries on from where A left it, with its variables.
//! - Breakout links across nodes: a call waits on A, the phone's browser
//!   lands on B; B's chat hands the answer back to A's call (the store
//!   decides, NOTIFY wakes A), and a chat closed on B lets A's call go on,
//!   also after the listening connections were cut.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::chat::{claim_breakout, connect, next, next_prompt, send};
use common::postgres::Postgres;
use common::standin::*;
use common::*;
use serde_json::json;

const TWILIO_AUTH: &str = "twilio-auth-token-for-cluster";
const WEBHOOK_URL: &str = "https://chat.example.com/hooks/twilio/sms";
const OUR_NUMBER: &str = "+15550100000";
const VISITOR: &str = "+34600111222";
const WAIT: Duration = Duration::from_secs(15);

fn node(name: &str, url: &str, twilio_port: u16) -> Gateway {
    node_with(
        name,
        url,
        twilio_port,
        &repo().join("tests/flows/cluster"),
        "\n[chat]\nsms_flow = \"sms-intake\"\n",
    )
}

fn node_with(
    name: &str,
    url: &str,
    twilio_port: u16,
    flows: &std::path::Path,
    extra: &str,
) -> Gateway {
    Gateway::start(&format!(
        "[flows]\ndir = \"{flows}\"\n\n\
         [store]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\nnode_id = \"{name}\"\nlease_secs = 3\n\n\
         [messaging.sms]\nprovider = \"twilio\"\nbase_url = \"http://127.0.0.1:{twilio_port}\"\naccount_sid = \"AC0123456789abcdef\"\nauth_token = \"{TWILIO_AUTH}\"\nfrom = \"{OUR_NUMBER}\"\nwebhook_url = \"{WEBHOOK_URL}\"\n{extra}",
        flows = flows.display(),
    ))
}

fn text_in(gw: &Gateway, sid: &str, text: &str) {
    let r = post_twilio_sms(gw, WEBHOOK_URL, TWILIO_AUTH, sid, VISITOR, OUR_NUMBER, text);
    assert_eq!(r.status, 200, "{}", r.body);
}

fn metric(gw: &Gateway, name: &str) -> f64 {
    gw.http_get("/metrics")
        .1
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn two_nodes_share_chats_and_calls_fail_over() {
    require("kamailio", "kamailio");
    require("sipp", "sip-tester");
    let pg = Postgres::start();
    let url = pg.database("crossline_cluster");
    let (twilio_port, sent, _) = stand_in();
    let a = node("node-a", &url, twilio_port);
    let b = node("node-b", &url, twilio_port);

    // The visitor texts node A: a new conversation, A runs its flow.
    text_in(&a, "SM000000000000000000000000000000c1", "hello");
    wait_sms_to(&sent, VISITOR, "What's your name?", WAIT);
    // The answer lands on B: B hands it to A, whose flow asks the next one.
    text_in(&b, "SM000000000000000000000000000000c2", "Ana");
    wait_sms_to(&sent, VISITOR, "Thanks Ana. Which city", WAIT);
    assert_eq!(
        metric(
            &b,
            "crossline_inbound_messages_total{channel=\"sms\",result=\"handed_over\"}"
        ),
        1.0
    );
    assert_eq!(metric(&a, "crossline_chat_inputs_handed_over_total"), 1.0);
    let owner = pg.psql(
        "crossline_cluster",
        "SELECT owner FROM conversations WHERE closed_at_ms IS NULL",
    );
    assert_eq!(owner, "node-a", "A runs the chat");

    // Calls through Kamailio: spread over both, then A dies and new calls
    // go to B. The smoke script checks each step and exits non-zero on any
    // failure.
    let smoke = Command::new("bash")
        .arg(repo().join("deploy/kamailio/smoke.sh"))
        .env("START_BACKENDS", "0")
        .env("BACKEND_A_PORT", b.sip_port.to_string())
        .env("BACKEND_B_PORT", a.sip_port.to_string())
        .env("KILL_PID", a.pid().to_string())
        .env("LB_PORT", free_port().to_string())
        .env("UAC_PORT", free_port().to_string())
        .env("UAC_MEDIA_PORT", free_port().to_string())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&smoke.stdout);
    println!("{report}");
    assert!(
        smoke.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&smoke.stderr)
    );
    assert!(report.contains("RESULT: PASS"), "{report}");
    assert!(report.contains("spread:"), "{report}");
    assert!(report.contains("after detection"), "{report}");

    // A is gone; once its lease lapses, B takes the chat over and the flow
    // carries on at the question A last asked, remembering the name.
    std::thread::sleep(Duration::from_secs(4));
    text_in(&b, "SM000000000000000000000000000000c3", "Madrid");
    wait_sms_to(&sent, VISITOR, "How many people, Ana?", WAIT);
    text_in(&b, "SM000000000000000000000000000000c4", "4");
    wait_sms_to(&sent, VISITOR, "Got it: Ana from Madrid, 4 people.", WAIT);
    let owner = pg.psql(
        "crossline_cluster",
        "SELECT owner FROM conversations ORDER BY created_at_ms DESC LIMIT 1",
    );
    assert_eq!(owner, "node-b", "B took the chat over");
    // Each question went out once: no node ran the flow twice.
    let asked = |q: &str| {
        sms_to(&sent, VISITOR)
            .iter()
            .filter(|f| f.get("Body").is_some_and(|t| t.contains(q)))
            .count()
    };
    assert_eq!(asked("What's your name?"), 1);
    assert_eq!(asked("Which city"), 1);
    assert_eq!(asked("How many people"), 1);
}

const OPERATOR_TOKEN: &str = "operator-token-for-the-cluster-0123";
/// The call's node must go on within this of the Return on the other node.
const RESUME_BOUND: Duration = Duration::from_millis(200);

fn breakout_node(name: &str, url: &str, twilio_port: u16, flows: &std::path::Path) -> Gateway {
    node_with(
        name,
        url,
        twilio_port,
        flows,
        &format!(
            "\n[http]\noperator_token = \"{OPERATOR_TOKEN}\"\n\n\
             [[routes]]\ndid = \"3000\"\nflow = \"cluster-breakout\"\n"
        ),
    )
}

/// A call to A's breakout flow, on its own thread; the link's path
/// (`/b/<token>`) from the SMS it sends.
fn call_and_get_link(a: &Gateway, log: &Log) -> (std::thread::JoinHandle<Sipp>, String) {
    log.lock().unwrap().clear();
    let args: Vec<String> = [
        "-sf",
        &scenario("uac_wait_bye.xml"),
        &a.sip_addr(),
        "-s",
        "3000",
        "-m",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let call = std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sipp(&args, Duration::from_secs(60))
    });
    let (link, _) = sms_link(a, log);
    assert!(
        link.contains(&format!(":{}/b/", a.http_port)),
        "the link names the call's node: {link}"
    );
    let path = link_path(&link);
    (call, path)
}

fn ms_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// How a breakout that ended on B reaches A's call.
struct Ended<'a> {
    pg: &'a Postgres,
    db: &'a str,
    log: &'a Log,
    nodes: [&'a Gateway; 2],
}

impl Ended<'_> {
    /// A's call went on at its next node with status `state` within
    /// [`RESUME_BOUND`] of the breakout ending on B (both as the store and
    /// the stand-in saw them, on the same clock): what that node posted,
    /// and when (ms since the epoch).
    fn call_went_on(&self, path: &str, state: &str) -> (serde_json::Value, i64) {
        let hook = wait_seen(self.log, Duration::from_secs(10), |s| {
            s.path == "hook/after-breakout"
        })
        .unwrap_or_else(|| {
            panic!(
                "A's call never went on:\nA:\n{}\nB:\n{}",
                self.nodes[0].log(),
                self.nodes[1].log()
            )
        });
        let posted: serde_json::Value = serde_json::from_str(&hook.body).unwrap();
        assert_eq!(posted["status"], state);
        let (stored, ended_at, nodes) = stored_breakout(self.pg, self.db, path);
        assert_eq!(stored, state);
        assert_eq!(nodes, "node-a>node-b", "the call on A, the chat on B");
        let at = ms_since_epoch(hook.at);
        let resumed = at - ended_at;
        println!("breakout {state} on B → A's next node in {resumed} ms");
        assert!(
            (0..RESUME_BOUND.as_millis() as i64).contains(&resumed),
            "A's call went on {resumed} ms after the breakout was {state} on B"
        );
        (posted, at)
    }
}

/// The stored breakout of a link (`/b/<token>`): its state, when it ended
/// (ms since the epoch; 0 if it hasn't) and "<call's node>><chat's node>".
fn stored_breakout(pg: &Postgres, db: &str, token_path: &str) -> (String, i64, String) {
    let hash = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(&token_path.as_bytes()[3..]);
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let row = pg.psql(
        db,
        &format!(
            "SELECT state, finished_at_ms, node || '>' || chat_node FROM breakouts
             WHERE token_hash = '{hash}'"
        ),
    );
    let mut cols = row.split('|');
    let state = cols.next().unwrap_or_default().to_string();
    let at = cols.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    (state, at, cols.next().unwrap_or_default().to_string())
}

#[test]
fn a_breakout_link_opened_on_another_node_returns_to_the_call() {
    require("sipp", "sip-tester");
    let pg = Postgres::start();
    let db = "crossline_breakout";
    let url = pg.database(db);
    let (port, log, _) = stand_in();
    let flows = flows_with_hook(
        "tests/flows/cluster-breakout",
        &format!("http://127.0.0.1:{port}/hook"),
    );
    let a = breakout_node("node-a", &url, port, flows.path());
    let b = breakout_node("node-b", &url, port, flows.path());
    let rt = tokio::runtime::Runtime::new().unwrap();

    // The call rings on A; the SMS carries A's link, the phone opens it
    // on B (behind one load balancer, any node may get it).
    let (call, path) = call_and_get_link(&a, &log);
    for gw in [&b, &a, &b] {
        let preview = gw.http("GET", &path, &[], None);
        assert_eq!(preview.status, 200, "{}", preview.body);
        assert!(preview.body.contains("Open the chat"), "{}", preview.body);
        assert!(!preview.headers.contains("set-cookie"));
    }
    let (state, _, _) = stored_breakout(&pg, db, &path);
    assert_eq!(state, "pending", "previews on either node use nothing up");
    let (conversation, cookies) = claim_breakout(&b, &path);
    // Claimed: another browser gets nothing, on either node.
    assert_eq!(a.http("POST", &path, &[], None).status, 404);
    assert_eq!(b.http_get(&path).0, 404);

    let answered = rt.block_on(async {
        let mut ws = connect(&b, &conversation, &cookies).await;
        send(&mut ws, json!({"type": "resume", "after": 0})).await;
        let prompt = next_prompt(&mut ws).await;
        assert_eq!(prompt["text"], "Which licence plate is it?");
        let answered = SystemTime::now();
        send(
            &mut ws,
            json!({"type": "answer", "prompt": prompt["id"], "value": "1234 BCD"}),
        )
        .await;
        assert_eq!(next(&mut ws).await["text"], "1234 BCD");
        assert_eq!(next(&mut ws).await["text"], "Thanks! Back to your call.");
        answered
    });

    // A's call went on with B's answer.
    let ended = Ended {
        pg: &pg,
        db,
        log: &log,
        nodes: [&a, &b],
    };
    let (posted, at) = ended.call_went_on(&path, "returned");
    assert_eq!(posted["plate"], "1234 BCD");
    println!(
        "  (answer sent on B → A's next node: {} ms)",
        at - ms_since_epoch(answered)
    );
    let run = call.join().unwrap();
    assert!(run.ok(), "{}", run.describe());
    assert!(metric(&a, "crossline_store_notifications_total{kind=\"breakout\"}") >= 1.0);
    assert_eq!(
        pg.psql(
            db,
            "SELECT owner FROM conversations WHERE origin = 'breakout'"
        ),
        "node-b",
        "B runs the chat"
    );

    // The listening connections are cut: each node is back within its
    // backoff and catches up.
    let cut = pg.psql(
        db,
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = '{}'",
            crossline::store::LISTENER_APPLICATION_NAME
        ),
    );
    assert_eq!(cut, "2", "one listener per node");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&a, "crossline_store_listener_drops_total") < 1.0
        || metric(&a, "crossline_store_listener_up") < 1.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "A's listener never came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The chat on B closes without a Return (an operator closes it): A's
    // call goes on at once with status "closed", not at its 60 s timeout.
    let (call, path) = call_and_get_link(&a, &log);
    let (conversation, _) = claim_breakout(&b, &path);
    let close = b.http(
        "POST",
        &format!("/v1/conversations/{conversation}/close"),
        &[("Authorization", &format!("Bearer {OPERATOR_TOKEN}"))],
        Some(r#"{"text": "An agent closed this chat."}"#),
    );
    assert_eq!(close.status, 200, "{}", close.body);
    let (posted, _) = ended.call_went_on(&path, "closed");
    assert_eq!(posted["plate"], "");
    let run = call.join().unwrap();
    assert!(run.ok(), "{}", run.describe());
    assert_no_pii(&a.log(), &["+15551234567", "1234 BCD", &path[3..]]);
    assert_no_pii(&b.log(), &["+15551234567", "1234 BCD", &path[3..]]);
}

const ADMIN: &str = "admin-secret-0123456789";
const OPERATOR: &str = "operator-secret-0123456";

/// A node of a registrar cluster: users at crossline.test, calls for a
/// user registered on the other node handed there (both on loopback).
fn registrar_node(name: &str, url: &str) -> Gateway {
    Gateway::start(&format!(
        "[http]\nadmin_token = \"{ADMIN}\"\noperator_token = \"{OPERATOR}\"\n\n\
         [store]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\nnode_id = \"{name}\"\n\n\
         [sip]\nauth_failures_before_ban = 20\n\n\
         [registrar]\nenabled = true\ndomain = \"crossline.test\"\ncluster_nodes = [\"127.0.0.1/32\"]\n"
    ))
}

/// Two nodes sharing PostgreSQL: a user made over node B's API registers
/// its phone (pjsua2) on node A; a call for it arriving on B is handed to
/// A (the node holding the phone's flow), which rings the phone: answered,
/// bridged end to end. A row naming a node outside `cluster_nodes` is
/// never called (counted), and a user deleted on A is gone on B.
#[test]
fn a_call_on_one_node_reaches_a_phone_registered_on_the_other() {
    require("sipp", "sip-tester");
    let pg = Postgres::start();
    let url = pg.database("crossline_registrar");
    let a = registrar_node("node-a", &url);
    let b = registrar_node("node-b", &url);

    let made = b.api(
        ADMIN,
        "POST",
        "/v1/users",
        Some(&json!({ "name": "carol", "password": "carol-cluster-pw" })),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    // A hears of the user from the store and takes its REGISTER.
    a.wait_for_log("a user from the store changed user=carol", WAIT);
    let phone = common::phones::pjsua_agent(&a, "carol", "carol-cluster-pw", &[]);
    phone.wait_for("reg 200", WAIT);
    let node_addr = pg.psql(
        "crossline_registrar",
        "SELECT node || ' ' || node_addr FROM registrations WHERE user_name = 'carol'",
    );
    assert_eq!(node_addr, format!("node-a {}", a.sip_addr()));
    // B reads the registration when A's NOTIFY comes (a few ms).
    std::thread::sleep(Duration::from_millis(500));

    let call = common::phones::call_user(&b, "carol");
    assert!(
        call.ok(),
        "{}\nB:\n{}\nA:\n{}",
        call.describe(),
        b.log(),
        a.log()
    );
    phone.wait_for("state CONFIRMED 200", Duration::from_secs(5));
    phone.wait_for("media", Duration::from_secs(5));
    assert_eq!(
        metric(&b, "crossline_user_handoffs_total{outcome=\"handed\""),
        1.0
    );
    assert!(b
        .log()
        .contains("a call for a user handed to the node holding its registration"));
    assert!(
        a.log().contains("handed_by=Some(\"node-b\")"),
        "A rang its own devices for B's call:\n{}",
        a.log()
    );
    assert!(a.log().contains("transfer: bridged"), "{}", a.log());

    // A row that names an address outside the cluster (a tampered store,
    // a stale node) is never called: the call fails, the refusal counted.
    let made = b.api(
        ADMIN,
        "POST",
        "/v1/users",
        Some(&json!({ "name": "mallory", "password": "mallory-cluster-pw" })),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    let far = SystemTime::now() + Duration::from_secs(600);
    pg.psql(
        "crossline_registrar",
        &format!(
            "INSERT INTO registrations (user_name, contact, q_milli, call_id, cseq, expires_at_ms,
             transport, local_addr, source, node, node_addr) VALUES ('mallory',
             'sip:mallory@192.0.2.9', 1000, 'x', 1, {}, 'udp', '192.0.2.9:5060',
             '192.0.2.9:5060', 'node-x', '192.0.2.9:5060');
             SELECT pg_notify('crossline_cluster', 'registrations mallory');",
            ms_since_epoch(far)
        ),
    );
    std::thread::sleep(Duration::from_millis(500));
    let refused = common::phones::call_user(&b, "mallory");
    assert!(!refused.ok(), "{}", refused.describe());
    assert!(
        refused.error_log().contains("480"),
        "{}",
        refused.describe()
    );
    assert_eq!(
        metric(
            &b,
            "crossline_user_handoffs_total{outcome=\"refused\",reason=\"not_cluster_node\"}"
        ),
        1.0
    );

    // Deleted on A: gone from the store, and B no longer knows the user
    // (the DID is then an ordinary one: no route, 404).
    let gone = a.api(ADMIN, "DELETE", "/v1/users/carol", None);
    assert_eq!(gone.status, 204, "{}", gone.body);
    b.wait_for_log(
        "a user from the store changed user=carol present=false",
        WAIT,
    );
    assert_eq!(
        pg.psql(
            "crossline_registrar",
            "SELECT count(*) FROM registrations WHERE user_name = 'carol'"
        ),
        "0"
    );
}

/// Kamailio (deploy/kamailio/kamailio.cfg) on a free loopback port in
/// front of `nodes`, stopped (by its PID) when dropped.
fn kamailio_before(nodes: &[&Gateway]) -> (common::phones::Peer, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let list: String = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("1 sip:{} 0 0 duid=node-{i}\n", n.sip_addr()))
        .collect();
    std::fs::write(dir.path().join("dispatcher.list"), list).unwrap();
    let port = free_port();
    let mut cmd = Command::new("kamailio");
    cmd.arg("-f")
        .arg(repo().join("deploy/kamailio/kamailio.cfg"))
        .arg("-Y")
        .arg(dir.path())
        .arg("-w")
        .arg(dir.path())
        .args(["-m", "64", "-M", "8", "-DD", "-E"])
        .args(["-A", "LISTEN_IP=127.0.0.1", "-A"])
        .arg(format!("LISTEN_PORT={port}"))
        .arg("-A")
        .arg(format!(
            "DS_LIST=\"{}\"",
            dir.path().join("dispatcher.list").display()
        ))
        .arg("-A")
        .arg(format!(
            "CTL_SOCK=\"unixs:{}\"",
            dir.path().join("ctl").display()
        ))
        .args(["-A", "DS_PING_INTERVAL=1"]);
    let kamailio = common::phones::spawn_peer(cmd);
    // Up once it answers OPTIONS with 200 (a node is active behind it).
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let me = socket.local_addr().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let mut buf = [0u8; 2048];
    for n in 0.. {
        assert!(
            std::time::Instant::now() < deadline,
            "kamailio never answered OPTIONS:\n{}",
            kamailio.output()
        );
        let options = format!(
            "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKup{n}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p{n}\r\nTo: <sip:127.0.0.1:{port}>\r\n\
             Call-ID: kamailio-up-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        let _ = socket.send_to(options.as_bytes(), ("127.0.0.1", port));
        if let Ok(len) = socket.recv(&mut buf) {
            if buf[..len].starts_with(b"SIP/2.0 200") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (kamailio, port, dir)
}

/// The Path recipe of deploy/README.md with a real Kamailio: a pjsua2
/// phone registers through Kamailio, which adds its Path (with the phone's
/// address) and hands the REGISTER to the node its user hashes to; a call
/// for the user on the other node is handed to that node, which calls the
/// phone through Kamailio by the Path (Route), and Kamailio delivers it to
/// the phone's own address. Answered and bridged.
#[test]
fn a_phone_registered_through_kamailio_is_reached_by_its_path() {
    require("kamailio", "kamailio");
    require("sipp", "sip-tester");
    let pg = Postgres::start();
    let url = pg.database("crossline_path");
    let a = registrar_node("node-a", &url);
    let b = registrar_node("node-b", &url);
    let made = a.api(
        ADMIN,
        "POST",
        "/v1/users",
        Some(&json!({ "name": "dora", "password": "dora-path-pw-1" })),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    b.wait_for_log("a user from the store changed user=dora", WAIT);
    let (kamailio, port, _dir) = kamailio_before(&[&a, &b]);

    let phone = common::phones::pjsua_agent_via(
        &format!("127.0.0.1:{port}"),
        "dora",
        "dora-path-pw-1",
        &[],
    );
    phone.wait_for("reg 200", WAIT);
    let row = pg.psql(
        "crossline_path",
        "SELECT node || ' ' || source || ' ' || path FROM registrations WHERE user_name = 'dora'",
    );
    let mut parts = row.splitn(3, ' ');
    let (node, source, path) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    // The REGISTER came from Kamailio, with Kamailio's Path naming the
    // phone's address.
    assert_eq!(source, format!("127.0.0.1:{port}"), "{row}");
    assert!(
        path.contains(&format!("127.0.0.1:{port}")) && path.contains("received="),
        "{row}"
    );
    let other = if node == "node-a" { &b } else { &a };
    std::thread::sleep(Duration::from_millis(500));

    let call = common::phones::call_user(other, "dora");
    assert!(
        call.ok(),
        "{}\nother:\n{}\nkamailio:\n{}",
        call.describe(),
        other.log(),
        kamailio.output()
    );
    phone.wait_for("state CONFIRMED 200", Duration::from_secs(5));
    phone.wait_for("media", Duration::from_secs(5));
    assert_eq!(
        metric(other, "crossline_user_handoffs_total{outcome=\"handed\""),
        1.0
    );
}

/// SIPp registering alice through `proxy` from the loopback address
/// `from`, `times` times with `password`, expecting 401 then `final_code`
/// each time. True if every one went so.
fn register_from(from: &str, proxy: u16, password: &str, times: u32, final_code: u16) -> bool {
    require("sipp", "sip-tester");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(scenario("register_guess.xml")).unwrap();
    let file = dir.path().join("register.xml");
    // The Request-URI names the proxy, as a phone set up with it would.
    let text = text
        .replace(
            "REGISTER sip:crossline.test SIP/2.0",
            "REGISTER sip:[remote_ip]:[remote_port] SIP/2.0",
        )
        .replace(
            "<recv response=\"403\"/>",
            &format!("<recv response=\"{final_code}\"/>"),
        );
    std::fs::write(&file, text).unwrap();
    let out = Command::new("timeout")
        .args(["-s", "KILL", "30", "sipp", "-sf"])
        .arg(&file)
        .args(["-s", "alice", "-au", "alice", "-ap", password])
        .arg(format!("127.0.0.1:{proxy}"))
        .args(["-m", &times.to_string(), "-recv_timeout", "3000"])
        .args(["-i", from, "-p", &free_port().to_string()])
        .args(["-nostdin", "-trace_err"])
        .current_dir(dir.path())
        .output()
        .expect("run sipp");
    out.status.success()
}

/// Behind Kamailio every REGISTER comes from Kamailio's address. With it
/// in `[sip] trusted_proxies`, the address Kamailio appends as
/// X-Forwarded-For is the client: a scanner at 127.0.0.2 guessing alice's
/// password is banned, and alice's phone at 127.0.0.3, through the same
/// Kamailio, still registers.
#[test]
fn guesses_through_kamailio_ban_the_guesser_not_kamailio() {
    require("kamailio", "kamailio");
    let gw = Gateway::start(
        "[sip]\nauth_failures_before_ban = 3\nauth_ban_secs = 60\n\
         trusted_proxies = [\"127.0.0.1/32\"]\n\n\
         [registrar]\nenabled = true\ndomain = \"crossline.test\"\n\
         digest_algorithms = [\"MD5\"]\n\n\
         [[users]]\nname = \"alice\"\npassword = \"alice-pw-1\"\n",
    );
    let (kamailio, port, _dir) = kamailio_before(&[&gw]);
    // Alice's phone signs in through Kamailio.
    assert!(
        register_from("127.0.0.3", port, "alice-pw-1", 1, 200),
        "alice's phone:\n{}\nkamailio:\n{}",
        gw.log(),
        kamailio.output()
    );
    // A scanner's three wrong answers: 403 each, then its ban.
    assert!(
        register_from("127.0.0.2", port, "wrong-guess", 3, 403),
        "{}",
        gw.log()
    );
    assert_metric_at_least(&gw, "crossline_sip_bans_total{kind=\"source\"}", 1.0);
    let log = gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains("SIP source banned") && l.contains("127.0.0.2")),
        "the scanner's own address is banned:\n{log}"
    );
    // The scanner's next REGISTER goes unanswered...
    assert!(!register_from("127.0.0.2", port, "alice-pw-1", 1, 200));
    assert_metric_at_least(&gw, "crossline_sip_dropped_total{reason=\"banned\"}", 1.0);
    // ...while alice's phone, through the same Kamailio, still registers.
    assert!(
        register_from("127.0.0.3", port, "alice-pw-1", 1, 200),
        "alice's phone after the ban:\n{}",
        gw.log()
    );
}
