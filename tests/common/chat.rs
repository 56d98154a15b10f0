//! The web chat as a raw client: its page (the conversation id and the
//! cookies it sets) and its WebSocket, frame by frame.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::Gateway;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `/chat/` as a browser: the conversation id and the cookies it set (or
/// none when it set none).
pub fn chat_page(gw: &Gateway, cookies: Option<&str>) -> (String, String) {
    let headers: Vec<(&str, &str)> = cookies.map(|c| vec![("Cookie", c)]).unwrap_or_default();
    let page = gw.http("GET", "/chat/", &headers, None);
    assert_eq!(page.status, 200, "{}", page.body);
    (page.conversation_id(), page.cookie_header())
}

pub async fn try_connect(gw: &Gateway, id: &str, cookies: &str) -> Result<Socket, String> {
    let mut req = format!("ws://127.0.0.1:{}/chat/ws?c={id}", gw.http_port)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("Cookie", cookies.parse().unwrap());
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

pub async fn send(ws: &mut Socket, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next JSON frame that isn't a typing indicator.
pub async fn next(ws: &mut Socket) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no frame within 10 s")
            .expect("socket ended")
            .unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] != "typing" {
                return v;
            }
        }
    }
}

/// A new conversation from `/chat/`: its id and the browser's cookies.
pub fn open_chat(gw: &Gateway) -> (String, String) {
    chat_page(gw, None)
}

pub async fn connect(gw: &Gateway, id: &str, cookies: &str) -> Socket {
    try_connect(gw, id, cookies).await.unwrap()
}

/// Claim a breakout link (`/b/<token>`) as a phone's landing page does
/// (its script POSTs), then load the chat with the cookie it set: the
/// conversation id and the browser's cookies.
pub fn claim_breakout(gw: &Gateway, path: &str) -> (String, String) {
    let claim = gw.http("POST", path, &[], None);
    assert_eq!(claim.status, 303, "{}", claim.body);
    let cookies = claim.cookie_header();
    assert!(!cookies.is_empty(), "the claim sets the chat's key");
    let page = gw.http("GET", path, &[("Cookie", &cookies)], None);
    assert_eq!(page.status, 200, "{}", page.body);
    (page.conversation_id(), cookies)
}

/// Frames up to the next prompt; the prompt.
pub async fn next_prompt(ws: &mut Socket) -> Value {
    loop {
        let frame = next(ws).await;
        if frame["type"] == "prompt" {
            return frame;
        }
    }
}
