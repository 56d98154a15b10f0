//! Both store backends against the same expectations: every record type
//! written and read back, upserts replacing, the lookups restarts and
//! other nodes depend on, and (PostgreSQL) two stores on one database
//! seeing each other's writes, with the schema migrated once.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::postgres::Postgres;
use crossline::messaging::opt_out::OptOuts;
use crossline::store::*;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + secs * 1000)
}

fn conversation(id: &str, closed: Option<SystemTime>) -> ConversationRecord {
    ConversationRecord {
        id: id.into(),
        channel: "sms".into(),
        origin: "web".into(),
        flow: Some("support".into()),
        breakout_id: None,
        created_at: at(1),
        closed_at: closed,
        key_hash: Some("ab".repeat(32)),
        resume_node: Some("ask".into()),
        resume_vars: Some(r#"{"name":"Ana"}"#.into()),
    }
}

fn callback(id: &str, state: &str, secs: u64) -> CallbackRecord {
    CallbackRecord {
        id: id.into(),
        phone: "+34600111222".into(),
        phone_raw: "600 111 222".into(),
        flow: Some("callback".into()),
        target: None,
        context: "{}".into(),
        requested_by: "operator".into(),
        conversation_id: Some("c1".into()),
        bot: Some("support".into()),
        state: state.into(),
        sip_status: Some(486),
        reason: None,
        consent_id: None,
        created_at: at(secs),
        ringing_at: Some(at(secs + 1)),
        answered_at: None,
        ended_at: None,
        node: Some("node-a".into()),
    }
}

/// What every backend must do.
async fn conformance(store: &dyn Store) {
    let mut call = CallRecord::starting(
        "call-1@h".into(),
        "inbound",
        "2000".into(),
        "+15551234567".into(),
        Some("carrier".into()),
        Some("demo".into()),
    );
    call.started_at = at(0);
    call.ended_at = at(9);
    call.answered_at = Some(at(1));
    call.outcome = "remote_bye".into();
    call.sip_status = Some(200);
    call.vars.insert("email".into(), "a@b.example".into());
    store.record_call(call.clone()).unwrap();

    let send = SendRecord {
        idempotency_key: "k1".into(),
        channel: SendChannel::Sms,
        provider: "twilio".into(),
        recipient: "+15551234567".into(),
        call_id: Some("call-1@h".into()),
        flow: Some("demo".into()),
        node: Some("sms".into()),
        status: SendStatus::Sent,
        provider_id: Some("SM1".into()),
        error_kind: None,
        error_code: Some(21211),
        attempts: Some(2),
        segments: Some(2),
        created_at: at(2),
    };
    store.record_send(send.clone()).unwrap();
    let blocked = SendRecord {
        idempotency_key: "k2".into(),
        status: SendStatus::Blocked,
        provider_id: None,
        error_kind: Some("opted_out".into()),
        error_code: None,
        attempts: None,
        segments: None,
        created_at: at(3),
        ..send.clone()
    };
    store.record_send(blocked.clone()).unwrap();

    // Upserts: the second write of an id replaces the first.
    store.upsert_conversation(conversation("c1", None)).unwrap();
    let closed = conversation("c1", Some(at(30)));
    store.upsert_conversation(closed.clone()).unwrap();
    store.upsert_conversation(conversation("c2", None)).unwrap();
    for seq in 1..=3u64 {
        store
            .append_message(MessageRecord {
                conversation_id: "c2".into(),
                seq,
                role: "bot".into(),
                kind: if seq == 3 { "prompt" } else { "message" }.into(),
                text: format!("m{seq}"),
                detail: (seq == 3).then(|| r#"{"input":"text"}"#.to_string()),
                created_at: at(seq),
            })
            .unwrap();
    }
    let binding = |id: &str, seq: u32, ended: bool| BindingRecord {
        conversation_id: id.into(),
        seq,
        channel: "sms".into(),
        address: Some("+34600111222".into()),
        started_at: at(u64::from(seq)),
        ended_at: ended.then(|| at(50)),
    };
    store
        .upsert_bindings(vec![binding("c1", 1, false), binding("c2", 1, false)])
        .unwrap();
    store
        .upsert_bindings(vec![binding("c2", 1, true), binding("c2", 2, false)])
        .unwrap();

    let breakout = BreakoutRecord {
        id: "b1".into(),
        token_hash: "cd".repeat(32),
        call_id: "call-1@h".into(),
        flow: "collect".into(),
        recipient: "+15551234567".into(),
        state: "returned".into(),
        created_at: at(3),
        expires_at: at(120),
        opened_at: Some(at(4)),
        finished_at: Some(at(5)),
        conversation_id: Some("c2".into()),
        result: Some(r#"{"email":"a@b.example"}"#.into()),
        node: Some("node-a".into()),
        chat_node: Some("node-b".into()),
        notices: Some(r#"{"caller_left":"Bye","timed_out":"Late"}"#.into()),
    };
    store.upsert_breakout(breakout.clone()).unwrap();
    let lead = LeadRecord {
        id: "l1".into(),
        name: Some("Ana".into()),
        email: Some("a@b.example".into()),
        phone: None,
        conversation_id: Some("c2".into()),
        created_at: at(6),
        updated_at: at(7),
    };
    store.upsert_lead(lead.clone()).unwrap();
    let consent = ConsentRecord {
        id: "k1".into(),
        subject: "+34600111222".into(),
        purpose: "callback".into(),
        text: "We may call you.".into(),
        given: true,
        conversation_id: Some("c2".into()),
        created_at: at(8),
    };
    store.record_consent(consent.clone()).unwrap();
    store
        .mark_inbound("SM-in-1", "sms", "+34600111222")
        .unwrap();
    store
        .mark_inbound("SM-in-1", "sms", "+34600111222")
        .unwrap();
    store.set_opt_out("sms", "+34600999888", true).unwrap();
    store.set_opt_out("sms", "+34600777666", true).unwrap();
    store.set_opt_out("sms", "+34600777666", false).unwrap();
    for (id, state, secs) in [
        ("q", "queued", 1),
        ("r", "ringing", 2),
        ("done", "completed", 3),
    ] {
        store.upsert_callback(callback(id, state, secs)).unwrap();
    }
    store.flush().await.unwrap();

    assert_eq!(
        store.call_records("call-1@h").await.unwrap(),
        vec![call.clone()]
    );
    assert_eq!(store.recent_calls(5).await.unwrap(), vec![call]);
    assert_eq!(
        store.sends_for_call("call-1@h").await.unwrap(),
        vec![send, blocked]
    );
    assert_eq!(store.conversation("c1").await.unwrap(), Some(closed));
    assert_eq!(store.conversation("nope").await.unwrap(), None);
    assert_eq!(store.conversations(10).await.unwrap().len(), 2);
    let after1: Vec<String> = store
        .messages("c2", 1)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(after1, ["m2", "m3"]);
    assert_eq!(store.bindings("c2").await.unwrap().len(), 2);
    // c1 is closed, c2's first binding ended: its second one is the one.
    assert_eq!(
        store
            .open_conversation_for("sms", "+34600111222")
            .await
            .unwrap(),
        Some("c2".to_string())
    );
    assert_eq!(store.breakout("b1").await.unwrap(), Some(breakout.clone()));
    assert_eq!(
        store.breakouts(Some("call-1@h"), 5).await.unwrap(),
        vec![breakout.clone()]
    );
    assert_eq!(store.breakouts(None, 5).await.unwrap(), vec![breakout]);
    assert_eq!(store.lead("l1").await.unwrap(), Some(lead.clone()));
    assert_eq!(store.leads(5).await.unwrap(), vec![lead.clone()]);
    assert_eq!(store.lead_for_conversation("c2").await.unwrap(), Some(lead));
    assert_eq!(
        store.consents(Some("+34600111222"), 5).await.unwrap(),
        vec![consent.clone()]
    );
    assert_eq!(store.consents(None, 5).await.unwrap(), vec![consent]);
    assert!(store.inbound_known("SM-in-1").await.unwrap());
    assert!(!store.inbound_known("SM-other").await.unwrap());
    assert!(store
        .last_inbound("sms", "+34600111222")
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        store
            .last_inbound("whatsapp", "+34600111222")
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.opted_out("sms").await.unwrap(), ["+34600999888"]);
    assert!(store.is_opted_out("sms", "+34600999888").await.unwrap());
    assert!(!store.is_opted_out("sms", "+34600777666").await.unwrap());
    assert!(!store
        .is_opted_out("whatsapp", "+34600999888")
        .await
        .unwrap());
    assert_eq!(
        store.callback("q").await.unwrap(),
        Some(callback("q", "queued", 1))
    );
    let unfinished: Vec<String> = store
        .unfinished_callbacks()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(unfinished, ["q", "r"]);
    let by_bot = store
        .callbacks(&CallbackFilter {
            bot: Some("support".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_bot.len(), 3);
    let none = store
        .callbacks(&CallbackFilter {
            bot: Some("other".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());

    // A read sees every write queued before it, flushed or not.
    let mut c3 = conversation("c3", None);
    store.upsert_conversation(c3.clone()).unwrap();
    assert_eq!(store.conversation("c3").await.unwrap(), Some(c3.clone()));
    c3.closed_at = Some(at(60));
    store.upsert_conversation(c3.clone()).unwrap();
    store
        .record_call(CallRecord::starting(
            "call-2@h".into(),
            "outbound",
            "+34600111222".into(),
            "2000".into(),
            None,
            None,
        ))
        .unwrap();
    assert_eq!(store.conversation("c3").await.unwrap(), Some(c3));
    let newest = store.recent_calls(1).await.unwrap();
    assert_eq!(newest[0].call_id, "call-2@h");
    assert_eq!(newest[0].direction, "outbound");
    recordings(store).await;
    queue_callbacks(store).await;
}

/// Virtual-hold rows: each node reads back its own, in queue order; a
/// failed callback updates the row; a caller who left is deleted.
async fn queue_callbacks(store: &dyn Store) {
    let row = |id: &str, order_ms: u64, node: &str| QueueCallbackRecord {
        id: id.into(),
        queue: "support".into(),
        phone: "+34612345678".into(),
        skills: vec!["es".into()],
        order_ms,
        joined_at: at(order_ms),
        failures: 0,
        node: node.into(),
    };
    store.upsert_queue_callback(row("late", 20, "a")).unwrap();
    store.upsert_queue_callback(row("early", 10, "a")).unwrap();
    store
        .upsert_queue_callback(row("elsewhere", 5, "b"))
        .unwrap();
    let failed = QueueCallbackRecord {
        failures: 2,
        ..row("late", 20, "a")
    };
    store.upsert_queue_callback(failed.clone()).unwrap();
    let on_a = store.queue_callbacks("a").await.unwrap();
    assert_eq!(on_a, [row("early", 10, "a"), failed]);
    store.delete_queue_callback("early").unwrap();
    let ids: Vec<String> = store
        .queue_callbacks("a")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["late"]);
    assert_eq!(store.queue_callbacks("b").await.unwrap().len(), 1);
}

/// Recording rows: stored, paged newest first (by call, before a time),
/// oldest first for retention, updated on upsert, deleted.
async fn recordings(store: &dyn Store) {
    let row = |i: u64, call: &str| RecordingRecord {
        id: format!("r{i}"),
        call_id: call.into(),
        started_at: at(i + 1),
        duration_ms: 500,
        size_bytes: 100 + i,
        sha256: "ab".repeat(32),
        channels: "dual".into(),
        format: "wav".into(),
        complete: i != 1,
        storage: "local".into(),
        path: format!("r{i}.wav"),
    };
    for (i, call) in ["a", "b", "a"].iter().enumerate() {
        store.record_recording(row(i as u64, call)).unwrap();
    }
    let page = |call_id: Option<&str>, before: Option<SystemTime>, limit| RecordingFilter {
        call_id: call_id.map(str::to_string),
        before,
        limit,
    };
    let ids = |rows: Vec<RecordingRecord>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let newest = store.recordings(&page(None, None, 2)).await.unwrap();
    assert_eq!(ids(newest), ["r2", "r1"]);
    let next = store.recordings(&page(None, Some(at(2)), 2)).await.unwrap();
    assert_eq!(ids(next), ["r0"]);
    let of_a = store.recordings(&page(Some("a"), None, 9)).await.unwrap();
    assert_eq!(ids(of_a), ["r2", "r0"]);
    assert_eq!(store.recording("r1").await.unwrap(), Some(row(1, "b")));
    assert_eq!(ids(store.oldest_recordings(2).await.unwrap()), ["r0", "r1"]);
    // Uploaded: the same row now says where the object is.
    let uploaded = RecordingRecord {
        storage: "s3".into(),
        path: "calls/r1.wav".into(),
        ..row(1, "b")
    };
    store.record_recording(uploaded.clone()).unwrap();
    assert_eq!(store.recording("r1").await.unwrap(), Some(uploaded));
    store.delete_recording("r1").unwrap();
    assert_eq!(store.recording("r1").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_meets_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
    conformance(&store).await;
    // One node's own file: every chat is ours, nobody to hand texts to.
    assert!(!store.shared());
    assert_eq!(
        store
            .claim_conversation("c2", "node-a", Duration::from_secs(30))
            .await
            .unwrap(),
        None
    );
    assert!(store.post_input("c2", "node-b", "hi").await.is_err());
    assert!(store.take_inputs("node-a").await.unwrap().is_empty());
    // Nobody to hear from; breakouts are decided in memory, not here.
    assert!(!store.listen("node-a").is_listening());
    assert_eq!(
        store
            .breakout_by_token(&"cd".repeat(32))
            .await
            .unwrap()
            .map(|b| b.id),
        Some("b1".to_string())
    );
    assert!(store
        .claim_breakout(&"cd".repeat(32), "node-a", SystemTime::now())
        .await
        .is_err());
}

/// A session waiting on node A, as the breakout node writes it.
fn pending_breakout(id: &str) -> BreakoutRecord {
    let now = SystemTime::now();
    BreakoutRecord {
        id: id.into(),
        token_hash: format!("{id:0>64}"),
        call_id: format!("{id}@h"),
        flow: "collect".into(),
        recipient: "+15551234567".into(),
        state: "pending".into(),
        created_at: now,
        expires_at: now + Duration::from_secs(60),
        opened_at: None,
        finished_at: None,
        conversation_id: None,
        result: None,
        node: Some("node-a".into()),
        chat_node: None,
        notices: None,
    }
}

/// Wait (up to 5 s) until a node hears `want`; news of other breakouts,
/// from earlier steps, may come first.
async fn hears(news: &mut News, want: StoreEvent) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = tokio::time::timeout_at(deadline, news.next())
            .await
            .unwrap_or_else(|_| panic!("never heard {want:?}"));
        if got == want {
            return;
        }
        assert!(
            matches!(got, StoreEvent::Breakout(_)),
            "{got:?} before {want:?}"
        );
    }
}

/// Registrar users across two nodes: what A writes B reads, and B hears
/// of each change on the cluster channel; deleting one takes every node's
/// registrations of it.
async fn shared_users(a: &PostgresStore, b: &PostgresStore) {
    use crossline::registrar::users::UserRecord;
    let mut on_b = b.listen("node-b");
    let user = UserRecord::new("carol", "pbx.example", "carol-pw-123", at(1));
    a.put_sip_user(user.clone()).unwrap();
    a.flush().await.unwrap();
    hears(&mut on_b, StoreEvent::User("carol".into())).await;
    let read = b
        .sip_user("carol")
        .await
        .unwrap()
        .expect("B reads A's user");
    assert_eq!(read.ha1_sha256, user.ha1_sha256);
    assert_eq!(read.ha1_md5, user.ha1_md5);
    assert!(read.enabled);
    a.delete_sip_user("carol").unwrap();
    a.flush().await.unwrap();
    hears(&mut on_b, StoreEvent::User("carol".into())).await;
    assert!(b.sip_user("carol").await.unwrap().is_none());
}

/// Breakouts across two nodes: one winner for every race, decided in the
/// database, and the node each change is for hears of it (NOTIFY), also
/// after its listening connection was cut.
async fn shared_breakouts(pg: &Postgres, a: &PostgresStore, b: &PostgresStore) {
    let mut on_a = a.listen("node-a");
    let mut on_b = b.listen("node-b");
    assert!(on_a.is_listening() && on_b.is_listening());
    hears(&mut on_a, StoreEvent::Resync).await;
    hears(&mut on_b, StoreEvent::Resync).await;

    // The link lands on both nodes at once: one browser gets the chat.
    a.upsert_breakout(pending_breakout("r1")).unwrap();
    a.flush().await.unwrap();
    let hash = format!("{:0>64}", "r1");
    let now = SystemTime::now();
    let (x, y) = tokio::join!(
        a.claim_breakout(&hash, "node-a", now),
        b.claim_breakout(&hash, "node-b", now)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert!(x.is_some() != y.is_some(), "one claim wins: {x:?} {y:?}");
    let won = x.or(y).unwrap();
    assert_eq!(won.state, "opened");
    assert!(b
        .claim_breakout(&hash, "node-b", now)
        .await
        .unwrap()
        .is_none());
    // An expired or unknown link can't be claimed.
    let mut old = pending_breakout("r0");
    old.expires_at = now - Duration::from_secs(1);
    a.upsert_breakout(old).unwrap();
    a.flush().await.unwrap();
    assert!(b
        .claim_breakout(&format!("{:0>64}", "r0"), "node-b", now)
        .await
        .unwrap()
        .is_none());

    // B runs the chat; its Return wakes A, which reads it back.
    b.set_breakout_chat("r1", "conv-r1", "node-b").unwrap();
    let back = b
        .return_breakout("r1", r#"{"plate":"1234 ABC"}"#)
        .await
        .unwrap()
        .expect("the return wins");
    assert_eq!(back.state, "returned");
    assert_eq!(back.chat_node.as_deref(), Some("node-b"));
    assert_eq!(back.conversation_id.as_deref(), Some("conv-r1"));
    hears(&mut on_a, StoreEvent::Breakout("r1".into())).await;
    let read = a.breakouts_by_id(vec!["r1".into()]).await.unwrap();
    assert_eq!(read[0].result.as_deref(), Some(r#"{"plate":"1234 ABC"}"#));
    // Too late now: A's timeout loses.
    let late = a
        .move_breakout(
            "r1",
            &["pending", "opened"],
            "timed_out",
            Some(now),
            BreakoutSide::Chat,
        )
        .await
        .unwrap();
    assert!(late.is_none());

    // Return racing the timeout, many times over: exactly one wins each.
    for i in 0..20 {
        let id = format!("race{i}");
        a.upsert_breakout(pending_breakout(&id)).unwrap();
    }
    a.flush().await.unwrap();
    for i in 0..20 {
        let id = format!("race{i}");
        let (ret, out) = tokio::join!(
            b.return_breakout(&id, "{}"),
            a.move_breakout(
                &id,
                &["pending", "opened"],
                "timed_out",
                Some(now),
                BreakoutSide::Chat
            )
        );
        let (ret, out) = (ret.unwrap(), out.unwrap());
        let returned = ret.as_ref().is_some_and(|r| r.state == "returned");
        assert!(returned != out.is_some(), "{id}: {ret:?} {out:?}");
    }

    // The chat closes without a Return: the call's node hears it; after a
    // hang-up, the chat's node does.
    for id in ["c-close", "c-left"] {
        a.upsert_breakout(pending_breakout(id)).unwrap();
        a.flush().await.unwrap();
        b.claim_breakout(&format!("{id:0>64}"), "node-b", now)
            .await
            .unwrap()
            .unwrap();
    }
    let closed = b
        .move_breakout(
            "c-close",
            &["opened"],
            "closed",
            Some(now),
            BreakoutSide::Call,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed.state, "closed");
    hears(&mut on_a, StoreEvent::Breakout("c-close".into())).await;
    let left = a
        .move_breakout(
            "c-left",
            &["pending", "opened"],
            "caller_left",
            None,
            BreakoutSide::Chat,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (left.state.as_str(), left.finished_at),
        ("caller_left", None)
    );
    hears(&mut on_b, StoreEvent::Breakout("c-left".into())).await;
    // The answer after the hang-up is kept, and wakes nobody.
    let kept = b.return_breakout("c-left", "{}").await.unwrap().unwrap();
    assert_eq!(kept.state, "returned_after_caller_left");

    // A handed-over text wakes its owner at once.
    b.post_input("c2", "node-a", "are you there?")
        .await
        .unwrap();
    hears(&mut on_a, StoreEvent::Inbox).await;
    a.take_inputs("node-a").await.unwrap();

    // The listening connection is cut: A is back within its backoff, says
    // so (to re-read), and hears news again.
    let cut = pg.psql(
        "crossline_contract",
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = '{LISTENER_APPLICATION_NAME}'"
        ),
    );
    assert_eq!(cut, "2", "one listener per node");
    hears(&mut on_a, StoreEvent::Resync).await;
    hears(&mut on_b, StoreEvent::Resync).await;
    b.post_input("c2", "node-a", "still there?").await.unwrap();
    hears(&mut on_a, StoreEvent::Inbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_meets_the_store_contract_and_is_shared() {
    let pg = Postgres::start();
    let url = pg.database("crossline_contract");
    // Two nodes opening the same database at once: one migrates, the
    // other waits on the lock and finds the schema done.
    let (a, b) = tokio::join!(PostgresStore::open(&url), PostgresStore::open(&url));
    let (a, b) = (Arc::new(a.unwrap()), Arc::new(b.unwrap()));
    // One row, at this build's version: migrated once, not twice.
    assert_eq!(
        pg.psql("crossline_contract", "SELECT version FROM crossline_schema"),
        PostgresStore::SCHEMA_VERSION.to_string()
    );
    conformance(a.as_ref()).await;
    assert!(a.shared());
    // A STOP that reached node A blocks node B's sends at once, however
    // the number is written, and so does the START after it.
    let (list_a, list_b) = (OptOuts::new(a.clone()), OptOuts::new(b.clone()));
    assert!(!list_b.is_opted_out(SendChannel::Sms, "+34611222333").await);
    list_a.set(SendChannel::Sms, "+34611222333", true);
    a.flush().await.unwrap();
    assert!(
        list_b
            .is_opted_out(SendChannel::Sms, "34 611 222 333")
            .await
    );
    assert!(
        !list_b
            .is_opted_out(SendChannel::WhatsApp, "+34611222333")
            .await
    );
    list_a.set(SendChannel::Sms, "+34611222333", false);
    a.flush().await.unwrap();
    assert!(!list_b.is_opted_out(SendChannel::Sms, "+34611222333").await);
    // What node A wrote, node B reads.
    let on_b = b
        .conversation("c2")
        .await
        .unwrap()
        .expect("B sees A's chat");
    assert_eq!(on_b.resume_node.as_deref(), Some("ask"));
    b.upsert_callback(callback("from-b", "queued", 9)).unwrap();
    b.flush().await.unwrap();
    assert_eq!(
        a.callback("from-b").await.unwrap().map(|c| c.state),
        Some("queued".to_string())
    );
    // Leases: A takes c2, B is told it is A's until the lease runs out.
    let lease = Duration::from_secs(30);
    assert_eq!(
        a.claim_conversation("c2", "node-a", lease).await.unwrap(),
        None
    );
    assert_eq!(
        b.claim_conversation("c2", "node-b", lease).await.unwrap(),
        Some("node-a".to_string())
    );
    a.renew_leases("node-a", vec!["c2".into(), "c1".into()], lease)
        .unwrap();
    a.flush().await.unwrap();
    assert_eq!(
        b.claim_conversation("c2", "node-b", lease).await.unwrap(),
        Some("node-a".to_string())
    );
    // Not stored yet: nobody's, so ours.
    assert_eq!(
        b.claim_conversation("new", "node-b", lease).await.unwrap(),
        None
    );
    // B hands texts for c2 to A; A takes each once, in order.
    b.post_input("c2", "node-a", "first").await.unwrap();
    b.post_input("c2", "node-a", "second").await.unwrap();
    assert_eq!(
        a.take_inputs("node-a").await.unwrap(),
        [
            ("c2".to_string(), "first".to_string()),
            ("c2".to_string(), "second".to_string())
        ]
    );
    assert!(a.take_inputs("node-a").await.unwrap().is_empty());
    shared_breakouts(&pg, &a, &b).await;
    shared_users(&a, &b).await;
    // The connection string with a wrong database fails cleanly.
    let err = PostgresStore::open(&pg.url("no_such_db"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
}
