//! Restarts against the real binary: the gateway is killed outright
//! (SIGKILL, no drain) and started again on the same database. A web chat
//! carries on where its flow was, with its variables, for the browser that
//! holds its key (and nobody else); a callback still queued when the
//! gateway died is dialled once it is back.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::chat::*;
use common::*;
use serde_json::json;

const OPERATOR_TOKEN: &str = "operator-token-for-restart-tests";
const LEGAL: &str = "We may call you back about this conversation.";

fn config(trunk: &str) -> String {
    format!(
        "[flows]\ndir = \"{}\"\n\n[chat]\nweb_flow = \"restart-test\"\n\n\
         [http]\noperator_token = \"{OPERATOR_TOKEN}\"\n\n{trunk}",
        repo().join("tests/flows/restart").display()
    )
}

/// Poll the database (read-only, beside the gateway's writer) until
/// `sql` returns `want` as its one text value.
fn wait_db(gw: &Gateway, sql: &str, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = None;
    while Instant::now() < deadline {
        let conn = rusqlite::Connection::open_with_flags(
            gw.db_path(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        last = conn
            .query_row(sql, [id], |r| r.get::<_, Option<String>>(0))
            .ok()
            .flatten();
        if last.as_deref() == Some(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{sql} for {id}: wanted {want:?}, last saw {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_carries_on_after_the_gateway_is_killed() {
    let mut gw = Gateway::start(&config(""));
    let (id, cookies) = chat_page(&gw, None);

    let mut ws = connect(&gw, &id, &cookies).await;
    send(&mut ws, json!({"type": "resume", "after": 0})).await;
    let ask = next(&mut ws).await;
    assert_eq!(ask["text"], "Your name?", "{ask}");
    send(
        &mut ws,
        json!({"type": "answer", "prompt": ask["id"], "value": "Ana"}),
    )
    .await;
    assert_eq!(next(&mut ws).await["text"], "Ana");
    let pick = next(&mut ws).await;
    assert_eq!(pick["text"], "Chat or phone, Ana?", "{pick}");
    let pick_id = pick["id"].as_u64().unwrap();
    drop(ws);
    // The flow's place is on disk before the kill (writes are batched).
    wait_db(
        &gw,
        "SELECT resume_node FROM conversations WHERE id = ?1",
        &id,
        "pick",
    );
    std::thread::sleep(Duration::from_millis(200));

    gw.kill_and_restart();

    // Someone without the key gets nothing, and restores nothing.
    let stranger = try_connect(&gw, &id, &format!("crossline_chat_{id}=not-the-key")).await;
    assert!(
        stranger.is_err(),
        "a socket without the key must be refused"
    );
    assert!(
        !gw.log()
            .split("=== killed; starting again ===")
            .nth(1)
            .unwrap()
            .contains("chat restored from the store"),
        "a refused socket must not restore the chat"
    );

    // The same browser: the page opens the same conversation...
    let (again, set) = chat_page(&gw, Some(&cookies));
    assert_eq!(again, id, "the browser's chat survives the restart");
    assert!(set.is_empty(), "no new cookies for the same chat: {set}");
    gw.wait_for_log("how=\"resumed\"", Duration::from_secs(5));

    // ...and its socket replays the open question once, not twice.
    let mut ws = connect(&gw, &id, &cookies).await;
    send(&mut ws, json!({"type": "resume", "after": pick_id - 1})).await;
    let replayed = next(&mut ws).await;
    assert_eq!(
        (replayed["id"].as_u64(), replayed["text"].as_str()),
        (Some(pick_id), Some("Chat or phone, Ana?")),
        "{replayed}"
    );
    send(
        &mut ws,
        json!({"type": "answer", "prompt": pick_id, "value": "phone"}),
    )
    .await;
    let echo = next(&mut ws).await;
    assert_eq!(
        (echo["id"].as_u64(), echo["text"].as_str()),
        (Some(pick_id + 1), Some("Call me")),
        "the answer follows the prompt directly: {echo}"
    );
    // The resumed flow kept `name` from before the kill.
    assert_eq!(next(&mut ws).await["text"], "Thanks Ana, phone it is.");
    assert_eq!(next(&mut ws).await["type"], "closed");

    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let detail = gw.http(
        "GET",
        &format!("/v1/conversations/{id}"),
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(detail.status, 200, "{}", detail.body);
    let prompts = detail.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "prompt")
        .count();
    assert_eq!(prompts, 2, "each question asked once: {}", detail.body);
}

#[test]
fn a_queued_callback_is_dialled_after_a_restart() {
    let trunk_port = free_port();
    // Nothing answers yet: the INVITE goes into a socket that never replies,
    // so the callback stays queued.
    let hole = UdpSocket::bind(("127.0.0.1", trunk_port)).unwrap();
    let trunk = format!(
        "[callbacks]\nring_timeout_secs = 60\n\n\
         [[trunks]]\nname = \"carrier\"\noutbound_proxy = \"sip:127.0.0.1:{trunk_port}\"\ncaller_id = \"+15550100000\"\n"
    );
    let mut gw = Gateway::start(&config(&trunk));
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let r = gw.http(
        "POST",
        "/v1/callbacks",
        &[("Authorization", &auth)],
        Some(
            &json!({
                "phone": "+34 612 345 678",
                "flow": "restart-callback",
                "consent": { "given": true, "text": LEGAL },
            })
            .to_string(),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let mut buf = [0u8; 4096];
    hole.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (n, _) = hole.recv_from(&mut buf).expect("the first INVITE");
    assert!(buf[..n].starts_with(b"INVITE "), "{:?}", &buf[..n.min(60)]);
    wait_db(
        &gw,
        "SELECT state FROM callbacks WHERE id = ?1",
        &id,
        "queued",
    );
    drop(hole);

    // The visitor's phone is reachable now; the gateway comes back.
    let media = free_port();
    let visitor = std::thread::spawn(move || {
        sipp_on(
            &["-sf", &scenario("uas_answer.xml"), "-m", "1"],
            Duration::from_secs(60),
            trunk_port,
            media,
        )
    });
    std::thread::sleep(Duration::from_millis(400));
    gw.kill_and_restart();
    gw.wait_for_log("dialling again after a restart", Duration::from_secs(5));

    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let r = gw.http(
            "GET",
            &format!("/v1/callbacks/{id}"),
            &[("Authorization", &auth)],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        if v["state"] == "completed" || v["state"] == "failed" {
            break v;
        }
        assert!(Instant::now() < deadline, "callback stuck: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(done["state"], "completed", "{done}");
    let visitor = visitor.join().unwrap();
    assert!(visitor.ok(), "{}", visitor.describe());
}
