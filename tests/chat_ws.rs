//! The web chat's WebSocket against the running binary, as a raw client:
//! resume from the last event id after a reconnect, answers echoed and fed
//! to the flow, choices by value, and bad frames answered without harm.

mod common;

use std::time::Duration;

use common::chat::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn gateway() -> Gateway {
    Gateway::start(&format!(
        "[flows]\ndir = \"{}\"\n\n[chat]\nweb_flow = \"ws-test\"\n",
        repo().join("tests/flows/chat").display()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_answers_choices_and_bad_frames() {
    let gw = gateway();
    let (id, cookies) = open_chat(&gw);

    // First connection: everything from the start, up to the prompt.
    let mut ws = connect(&gw, &id, &cookies).await;
    send(&mut ws, json!({"type": "resume", "after": 0})).await;
    let one = next(&mut ws).await;
    assert_eq!(
        (one["id"].as_u64(), one["text"].as_str()),
        (Some(1), Some("one"))
    );
    assert_eq!(one["role"], "bot");
    assert!(one["at"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(next(&mut ws).await["text"], "two");
    let prompt = next(&mut ws).await;
    assert_eq!(prompt["type"], "prompt");
    assert_eq!(prompt["input"], "text");
    assert!(
        prompt["at"].as_u64().unwrap() > 1_700_000_000_000,
        "{prompt}"
    );
    let prompt_id = prompt["id"].as_u64().unwrap();
    drop(ws);

    // Reconnect having seen only event 1: events from 2 on, none repeated.
    let mut ws = connect(&gw, &id, &cookies).await;
    send(&mut ws, json!({"type": "resume", "after": 1})).await;
    let again = next(&mut ws).await;
    assert_eq!(again["id"].as_u64(), Some(2), "{again}");
    assert_eq!(next(&mut ws).await["id"].as_u64(), Some(prompt_id));

    // Bad frames get an error frame; the socket and the chat carry on.
    ws.send(Message::Text("not json at all".into()))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await["type"], "error");
    send(
        &mut ws,
        json!({"type": "answer", "prompt": 999, "value": "x"}),
    )
    .await;
    assert_eq!(next(&mut ws).await["type"], "error", "not the open prompt");

    send(
        &mut ws,
        json!({"type": "answer", "prompt": prompt_id, "value": "  Ana  "}),
    )
    .await;
    let echo = next(&mut ws).await;
    assert_eq!(
        (echo["role"].as_str(), echo["text"].as_str()),
        (Some("visitor"), Some("Ana"))
    );
    assert_eq!(next(&mut ws).await["text"], "Hello Ana");
    let choice = next(&mut ws).await;
    send(
        &mut ws,
        json!({"type": "answer", "prompt": prompt_id, "value": "twice"}),
    )
    .await;
    assert_eq!(
        next(&mut ws).await["type"],
        "error",
        "an answer counts once"
    );

    assert_eq!(choice["input"], "choice");
    assert_eq!(
        choice["choices"][1],
        json!({"label": "Call me", "value": "phone"})
    );
    send(
        &mut ws,
        json!({"type": "answer", "prompt": choice["id"], "value": "phone"}),
    )
    .await;
    assert_eq!(next(&mut ws).await["text"], "Call me", "the label is shown");
    assert_eq!(
        next(&mut ws).await["text"],
        "phone it is (phone)",
        "the choice's own branch"
    );
    let closed = next(&mut ws).await;
    assert_eq!(closed["type"], "closed");
    assert!(
        tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .is_none_or(|m| matches!(m, Ok(Message::Close(_)) | Err(_))),
        "the server closes after `closed`"
    );

    // A frame over 16 KiB ends that socket only; the server is fine.
    let (id2, cookies2) = open_chat(&gw);
    let mut big = connect(&gw, &id2, &cookies2).await;
    send(&mut big, json!({"type": "resume", "after": 0})).await;
    let _ = next(&mut big).await;
    let _ = big.send(Message::Text("x".repeat(64 * 1024).into())).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = big.next().await {
            if let Message::Close(_) = m {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "oversized frame closes the socket");
    let mut fresh = connect(&gw, &id2, &cookies2).await;
    send(&mut fresh, json!({"type": "resume", "after": 0})).await;
    assert_eq!(next(&mut fresh).await["text"], "one");

    // The first frame must be resume.
    let (id3, cookies3) = open_chat(&gw);
    let mut rude = connect(&gw, &id3, &cookies3).await;
    send(&mut rude, json!({"type": "text", "text": "hi"})).await;
    assert_eq!(next(&mut rude).await["type"], "error");
    assert_eq!(gw.http_get("/healthz").0, 200);
}

/// A page on another site can't open the chat's socket with the visitor's
/// cookie (cross-site WebSocket hijacking); the same site can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_from_another_site_is_refused() {
    let gw = gateway();
    let (id, cookies) = open_chat(&gw);
    let request = |origin: &str| {
        let mut req = format!("ws://127.0.0.1:{}/chat/ws?c={id}", gw.http_port)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("Cookie", cookies.parse().unwrap());
        req.headers_mut().insert("Origin", origin.parse().unwrap());
        req
    };
    match tokio_tungstenite::connect_async(request("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("cross-site handshake not refused: {:?}", other.map(|_| ())),
    }
    let own = format!("http://127.0.0.1:{}", gw.http_port);
    let (mut ws, _) = tokio_tungstenite::connect_async(request(&own))
        .await
        .unwrap();
    send(&mut ws, json!({"type": "resume", "after": 0})).await;
    assert_eq!(next(&mut ws).await["text"], "one");
}

/// The chat-switch example flow (deploy/flows/web-support-en.toml) as a
/// visitor meets it: a name, a mobile number kept as a lead, then the
/// hand-off to an agent (the chat stays open for the console).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_support_flow_keeps_a_lead_and_hands_off() {
    let token = "operator-token-for-example-flows";
    let gw = Gateway::start(&format!(
        "[flows]\ndir = \"{}\"\n\n[chat]\nweb_flow = \"web-support-en\"\n\n[http]\noperator_token = \"{token}\"\n",
        repo().join("deploy/flows").display()
    ));
    let (id, cookies) = open_chat(&gw);
    let mut ws = connect(&gw, &id, &cookies).await;
    send(&mut ws, json!({"type": "resume", "after": 0})).await;
    assert_eq!(
        next(&mut ws).await["text"],
        "Hi! This is Example Co. support."
    );
    let name = next(&mut ws).await;
    send(
        &mut ws,
        json!({"type": "answer", "prompt": name["id"], "value": "Ana"}),
    )
    .await;
    assert_eq!(next(&mut ws).await["text"], "Ana");
    let phone = next(&mut ws).await;
    assert_eq!(phone["input"], "phone", "{phone}");
    send(
        &mut ws,
        json!({"type": "answer", "prompt": phone["id"], "value": "+34 612 345 678"}),
    )
    .await;
    let mut texts = Vec::new();
    while !texts
        .iter()
        .any(|t: &String| t.starts_with("An agent will be with you"))
    {
        let v = next(&mut ws).await;
        assert_ne!(v["type"], "closed", "a hand-off keeps the chat open");
        texts.push(v["text"].as_str().unwrap_or_default().to_string());
    }
    let auth = format!("Bearer {token}");
    let leads = gw
        .http("GET", "/v1/leads", &[("Authorization", &auth)], None)
        .json();
    let lead = &leads["leads"][0];
    assert_eq!(lead["name"], "Ana", "{leads}");
    assert_eq!(lead["conversation_id"], id.as_str(), "{leads}");
    assert!(
        lead["phone"].as_str().is_some_and(|p| p.ends_with("78")),
        "{leads}"
    );
}
