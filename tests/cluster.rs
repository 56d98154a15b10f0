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

mod common;

use std::process::Command;
use std::time::Duration;

use common::postgres::Postgres;
use common::standin::*;
use common::*;

const TWILIO_AUTH: &str = "twilio-auth-token-for-cluster";
const WEBHOOK_URL: &str = "https://chat.example.com/hooks/twilio/sms";
const OUR_NUMBER: &str = "+15550100000";
const VISITOR: &str = "+34600111222";
const WAIT: Duration = Duration::from_secs(15);

fn node(name: &str, url: &str, twilio_port: u16) -> Gateway {
    Gateway::start(&format!(
        "[flows]\ndir = \"{flows}\"\n\n\
         [store]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\nnode_id = \"{name}\"\nlease_secs = 3\n\n\
         [chat]\nsms_flow = \"sms-intake\"\n\n\
         [messaging.sms]\nprovider = \"twilio\"\nbase_url = \"http://127.0.0.1:{twilio_port}\"\naccount_sid = \"AC0123456789abcdef\"\nauth_token = \"{TWILIO_AUTH}\"\nfrom = \"{OUR_NUMBER}\"\nwebhook_url = \"{WEBHOOK_URL}\"\n",
        flows = repo().join("tests/flows/cluster").display(),
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
