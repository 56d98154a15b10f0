//! The web chat (PWA): the page for breakout links (`/b/<token>`), links
//! back to the web chat from a phone (`/w/<token>`), the standalone chat
//! (`/chat/`), its assets (built into the binary), and the WebSocket that
//! carries a conversation (`/chat/ws?c=<id>`).
//!
//! A browser proves it owns a conversation with an HttpOnly cookie set
//! when the page was first served; the key is never in a URL.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::HttpState;
use crate::breakout::Opened;
use crate::chat::{Accepted, ChannelKind, Conversation, Event, Live, VisitorInput};
use crate::telemetry::names;

const CHAT_HTML: &str = include_str!("../../web/chat/chat.html");
const NOT_FOUND_HTML: &str = include_str!("../../web/chat/notfound.html");
const OPEN_HTML: &str = include_str!("../../web/chat/open.html");

/// Static assets: path, content type, cache policy, bytes.
const ASSETS: &[(&str, &str, &str, &[u8])] = &[
    (
        "/chat/app.js",
        "text/javascript; charset=utf-8",
        "no-cache",
        include_bytes!("../../web/chat/app.js"),
    ),
    (
        "/chat/app.css",
        "text/css; charset=utf-8",
        "no-cache",
        include_bytes!("../../web/chat/app.css"),
    ),
    (
        "/chat/manifest.webmanifest",
        "application/manifest+json",
        "no-cache",
        include_bytes!("../../web/chat/manifest.webmanifest"),
    ),
    (
        "/chat/icon.svg",
        "image/svg+xml",
        "public, max-age=86400",
        include_bytes!("../../web/chat/icon.svg"),
    ),
    (
        "/chat/icon-192.png",
        "image/png",
        "public, max-age=86400",
        include_bytes!("../../web/chat/icon-192.png"),
    ),
    (
        "/chat/icon-512.png",
        "image/png",
        "public, max-age=86400",
        include_bytes!("../../web/chat/icon-512.png"),
    ),
    (
        "/chat/open.js",
        "text/javascript; charset=utf-8",
        "no-cache",
        include_bytes!("../../web/chat/open.js"),
    ),
    (
        "/sw.js",
        "text/javascript; charset=utf-8",
        "no-cache",
        include_bytes!("../../web/chat/sw.js"),
    ),
];

/// The cookie holding a conversation's access key.
fn key_cookie(conversation: &str) -> String {
    format!("crossline_chat_{conversation}")
}
/// The cookie naming the browser's standalone web chat.
const WEB_COOKIE: &str = "crossline_web";
/// Frames a visitor may send per 10 s before being told to slow down.
const INPUT_BURST: u32 = 20;

pub fn router() -> Router<HttpState> {
    let mut r = Router::new()
        .route("/b/{token}", get(breakout_page).post(claim_breakout))
        .route("/w/{token}", get(web_link_page).post(claim_web_link))
        .route("/chat/", get(web_chat_page))
        .route(
            "/chat",
            get(|| async { axum::response::Redirect::permanent("/chat/") }),
        )
        .route("/chat/ws", get(socket))
        .route("/chat/call", axum::routing::post(start_call))
        .route("/chat/call/{id}", axum::routing::delete(end_call));
    for &(path, content_type, cache, bytes) in ASSETS {
        r = r.route(
            path,
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, content_type),
                        (header::CACHE_CONTROL, cache),
                        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                    ],
                    bytes,
                )
            }),
        );
    }
    r
}

pub(super) fn cookies(headers: &HeaderMap) -> HashMap<String, String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Headers every chat page carries: no caching (it names a conversation),
/// no referrer (the URL is a capability), no framing, only our own code.
fn page_headers(r: &mut Response) {
    let h = r.headers_mut();
    for (k, v) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
}

fn chat_page(state: &HttpState, conversation: &str, set_cookies: &[String]) -> Response {
    let channels: Vec<&str> = state
        .services
        .switchboard
        .channels()
        .iter()
        .map(|c| c.as_str())
        .collect();
    let html = CHAT_HTML
        .replace("__CONVERSATION_ID__", conversation)
        .replace("__CHANNELS__", &channels.join(","))
        .replace(
            "__WEBRTC__",
            if state.services.webcalls.is_some() {
                "on"
            } else {
                "off"
            },
        )
        .replace("__TITLE__", &html_escape(&state.chat_title));
    let mut r = html.into_response();
    page_headers(&mut r);
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; connect-src 'self'; \
             script-src 'self'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    for c in set_cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// The same page for unknown, expired, used and guessed links.
fn not_found() -> Response {
    let mut r = (StatusCode::NOT_FOUND, NOT_FOUND_HTML).into_response();
    page_headers(&mut r);
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    r
}

fn set_cookie(state: &HttpState, name: &str, value: &str) -> String {
    let secure = if state.services.public_base_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=86400{secure}")
}

/// The page a link shows before it is claimed: a form the page's script
/// posts at once (previews fetch links but run no scripts).
fn landing_page() -> Response {
    let mut r = OPEN_HTML.into_response();
    page_headers(&mut r);
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    r
}

/// A link back to the web chat, texted to a visitor on a phone. A GET
/// (a preview, or the browser's first visit) only shows the landing page.
async fn web_link_page(State(state): State<HttpState>, Path(token): Path<String>) -> Response {
    if state.services.switchboard.web_link_claimable(&token) {
        return landing_page();
    }
    metrics::counter!(names::CHAT_WEB_LINKS, "event" => "refused").increment(1);
    not_found()
}

/// The claim: the first browser to post gets the conversation (a new
/// key, as cookies; it moves to the web chat) and is sent to `/chat/`,
/// which opens it with the whole transcript. The link is then used up.
async fn claim_web_link(State(state): State<HttpState>, Path(token): Path<String>) -> Response {
    let Some((conv, key)) = state.services.switchboard.claim_web_link(&token).await else {
        return not_found();
    };
    tracing::info!(conversation = %conv.id, "web chat link opened");
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/chat/"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in [
        set_cookie(&state, &key_cookie(&conv.id), &key),
        set_cookie(&state, WEB_COOKIE, &conv.id),
    ] {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            h.append(header::SET_COOKIE, v);
        }
    }
    r
}

/// A breakout link. Its first visit only shows a page that claims the
/// chat by POST (a script does it at once): SMS and chat apps fetch links
/// to draw previews, and a GET must not use the link up. The browser that
/// claimed it (its cookie) gets the chat from then on.
async fn breakout_page(
    State(state): State<HttpState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    if state.services.breakouts.claimable(&token).await {
        return landing_page();
    }
    let jar = cookies(&headers);
    let key_for = |conv: &str| jar.get(&key_cookie(conv)).cloned();
    match state.services.breakouts.resume(&token, &key_for).await {
        Some(conv) => chat_page(&state, &conv.id, &[]),
        None => {
            metrics::counter!(names::BREAKOUT_LINKS_REFUSED).increment(1);
            not_found()
        }
    }
}

/// The claim: the first browser to post opens the chat (its cookie is
/// set, the flow starts) and is sent back to the link.
async fn claim_breakout(
    State(state): State<HttpState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let jar = cookies(&headers);
    let key_for = |conv: &str| jar.get(&key_cookie(conv)).cloned();
    let back = || {
        let mut r = StatusCode::SEE_OTHER.into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("/b/{token}")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    };
    match state.services.breakouts.open(&token, &key_for).await {
        Some(Opened::New { session, flow, new }) => {
            let Some(flow) = state.services.flow(&flow) else {
                tracing::error!(%flow, "breakout flow is gone (reload?)");
                new.conversation.close("Sorry, this chat is not available.");
                return not_found();
            };
            let id = new.conversation.id.clone();
            let cookie = set_cookie(&state, &key_cookie(&id), &new.access_key);
            tracing::info!(conversation = %id, breakout = %session.id, "breakout link opened");
            let mut vars = HashMap::new();
            vars.insert("breakout_id".to_string(), session.id.clone());
            crate::flow::interp::spawn_chat(state.services.clone(), flow, new, Some(session), vars);
            let mut r = back();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        Some(Opened::Resume(_)) => back(),
        None => {
            metrics::counter!(names::BREAKOUT_LINKS_REFUSED).increment(1);
            not_found()
        }
    }
}

async fn web_chat_page(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let jar = cookies(&headers);
    // The same browser comes back to its open conversation.
    let known = match jar
        .get(WEB_COOKIE)
        .and_then(|id| Some((id, jar.get(&key_cookie(id))?)))
    {
        Some((id, key)) => super::conversation(&state, id, Some(key)).await,
        None => None,
    };
    if let Some(conv) = known.filter(|c| !c.is_closed()) {
        return chat_page(&state, &conv.id, &[]);
    }
    // A page this browser was given before, whose chat isn't made yet.
    if let Some(id) = jar.get(WEB_COOKIE).filter(|id| {
        state.services.chat.get(id).is_none()
            && jar
                .get(&key_cookie(id))
                .is_some_and(|k| state.services.chat.pending_key_matches(id, k))
    }) {
        if state.services.chat_texts.web_flow.is_some() {
            return chat_page(&state, id, &[]);
        }
    }
    if state
        .services
        .chat_texts
        .web_flow
        .as_deref()
        .and_then(|name| state.services.flow(name))
        .is_none()
    {
        return not_found();
    }
    // Nothing is made for a page load: the browser gets an id and its
    // key, and the chat starts when its socket opens.
    let id = crate::chat::random_token(12);
    let key = state.services.chat.pending_key(&id);
    let cookies = [
        set_cookie(&state, &key_cookie(&id), &key),
        set_cookie(&state, WEB_COOKIE, &id),
    ];
    chat_page(&state, &id, &cookies)
}

/// The socket of a page whose chat isn't made yet: check the key that
/// came with the page, then start the web flow on an anonymous chat.
fn start_pending(
    state: &HttpState,
    id: &str,
    key: &str,
    source: std::net::IpAddr,
) -> Result<Option<std::sync::Arc<Conversation>>, crate::chat::NoRoom> {
    let chat = &state.services.chat;
    if !chat.pending_key_matches(id, key) {
        return Ok(None);
    }
    let Some(flow) = state
        .services
        .chat_texts
        .web_flow
        .as_deref()
        .and_then(|name| state.services.flow(name))
    else {
        return Ok(None);
    };
    match chat.create_anonymous(id, key, Some(flow.name.clone()), source) {
        Ok(new) => {
            let conv = new.conversation.clone();
            crate::flow::interp::spawn_chat(
                state.services.clone(),
                flow,
                new,
                None,
                HashMap::new(),
            );
            Ok(Some(conv))
        }
        Err(e) => Err(e),
    }
}

#[derive(Deserialize)]
struct SocketQuery {
    c: String,
}

async fn socket(
    State(state): State<HttpState>,
    Query(q): Query<SocketQuery>,
    client: Option<axum::Extension<super::guard::ClientIp>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if !super::same_origin(&headers, &state.services.public_base_url) {
        metrics::counter!(names::HTTP_AUTH_FAILURES, "reason" => "origin").increment(1);
        return (StatusCode::FORBIDDEN, "cross-site WebSocket refused").into_response();
    }
    // Whose conversation first, the same answer for unknown and not yours.
    let jar = cookies(&headers);
    let source = client.as_ref().map(|c| c.0 .0);
    let conv = match jar.get(&key_cookie(&q.c)) {
        Some(key) => match super::conversation(&state, &q.c, Some(key)).await {
            Some(conv) => Some(conv),
            None => match start_pending(
                &state,
                &q.c,
                key,
                source.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
            ) {
                Ok(conv) => conv,
                Err(_) => {
                    return (StatusCode::SERVICE_UNAVAILABLE, "busy; try again").into_response()
                }
            },
        },
        None => None,
    };
    let Some(conv) = conv else {
        metrics::counter!(names::HTTP_AUTH_FAILURES, "reason" => "chat_key").increment(1);
        return (StatusCode::FORBIDDEN, "not your conversation").into_response();
    };
    match ws {
        Ok(ws) => {
            if let Some(ip) = source {
                conv.note_source(ip);
            }
            ws.max_message_size(16 * 1024)
                .on_upgrade(move |socket| async move {
                    // A breakout's visitor is there while a socket is open.
                    let _present = state.services.breakouts.visitor_socket(&conv);
                    serve_socket(socket, conv, state.services.switchboard.clone(), source).await
                })
        }
        Err(rejection) => rejection.into_response(),
    }
}

/// A browser's call (WHIP-style): the SDP offer in, the answer out. Only
/// the browser that owns the conversation may call from it.
async fn start_call(
    State(state): State<HttpState>,
    Query(q): Query<SocketQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !super::same_origin(&headers, &state.services.public_base_url) {
        return (StatusCode::FORBIDDEN, "cross-site call refused").into_response();
    }
    let Some(calls) = state.services.webcalls.clone() else {
        return (StatusCode::NOT_FOUND, "web calls are turned off").into_response();
    };
    let jar = cookies(&headers);
    // A page whose chat isn't made yet (no socket so far) owns its id too.
    let owned = match jar.get(&key_cookie(&q.c)) {
        Some(key) => {
            super::conversation(&state, &q.c, Some(key)).await.is_some()
                || state.services.chat.pending_key_matches(&q.c, key)
        }
        None => false,
    };
    if !owned {
        metrics::counter!(names::HTTP_AUTH_FAILURES, "reason" => "chat_key").increment(1);
        return (StatusCode::FORBIDDEN, "not your conversation").into_response();
    }
    let Ok(offer) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "the offer must be SDP text").into_response();
    };
    if offer.len() > 64 * 1024 {
        return (StatusCode::PAYLOAD_TOO_LARGE, "offer too large").into_response();
    }
    match calls.answer(offer, Some(q.c.clone())).await {
        Ok((id, answer)) => {
            let mut r = (StatusCode::CREATED, answer).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Ok(v) = HeaderValue::from_str(&format!("/chat/call/{id}")) {
                h.insert(header::LOCATION, v);
            }
            r
        }
        Err(crate::webrtc::WebRtcError::BadOffer(e)) => (
            StatusCode::BAD_REQUEST,
            format!("not a usable SDP offer: {e}"),
        )
            .into_response(),
        Err(crate::webrtc::WebRtcError::Busy) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many calls right now; please try again later",
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "web call refused");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the call could not be started",
            )
                .into_response()
        }
    }
}

async fn end_call(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !super::same_origin(&headers, &state.services.public_base_url) {
        return (StatusCode::FORBIDDEN, "cross-site hang-up refused").into_response();
    }
    match state.services.webcalls.as_ref().map(|c| c.hang_up(&id)) {
        Some(true) => StatusCode::NO_CONTENT.into_response(),
        _ => (StatusCode::NOT_FOUND, "no such call").into_response(),
    }
}

/// What the browser sends.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Resume {
        after: u64,
    },
    Answer {
        prompt: u64,
        value: String,
    },
    Text {
        text: String,
    },
    /// Move the chat: to "sms"/"whatsapp" with `phone` (a code is sent
    /// there), then again with the `code` typed back; or back to "web".
    Switch {
        channel: String,
        #[serde(default)]
        phone: String,
        #[serde(default)]
        code: Option<String>,
    },
    /// Undo the last switch (within the revert window).
    Revert,
}

fn frame(v: &impl serde::Serialize) -> Message {
    Message::Text(serde_json::to_string(v).unwrap_or_default().into())
}

fn error_frame(text: &str) -> Message {
    frame(&serde_json::json!({ "type": "error", "text": text }))
}

async fn serve_socket(
    mut socket: WebSocket,
    conv: std::sync::Arc<Conversation>,
    board: std::sync::Arc<crate::chat::Switchboard>,
    source: Option<std::net::IpAddr>,
) {
    metrics::gauge!(names::CHAT_SOCKETS).increment(1.0);
    serve_socket_inner(&mut socket, &conv, &board, source).await;
    metrics::gauge!(names::CHAT_SOCKETS).decrement(1.0);
}

fn switch_failed(text: &str) -> Message {
    frame(&serde_json::json!({ "type": "switch_failed", "text": text }))
}

/// A code went to the phone: the visitor types it back to finish.
fn switch_code(channel: ChannelKind, masked: &str) -> Message {
    frame(&serde_json::json!({
        "type": "switch_code",
        "channel": channel.as_str(),
        "text": format!(
            "We sent a code to {masked}. Type it here to continue on {}.",
            channel.label()
        ),
    }))
}

/// Ask for a code (no `code`), or finish with it.
async fn visitor_switch(
    board: &crate::chat::Switchboard,
    conv: &Conversation,
    channel: ChannelKind,
    phone: &str,
    code: Option<&str>,
    source: Option<std::net::IpAddr>,
) -> Result<Option<Message>, crate::chat::SwitchError> {
    match code {
        Some(code) => board.confirm_switch(conv, channel, code).map(|_| None),
        None => board
            .request_switch(conv, channel, phone, source)
            .await
            .map(|masked| Some(switch_code(channel, &masked))),
    }
}

async fn serve_socket_inner(
    socket: &mut WebSocket,
    conv: &Conversation,
    board: &crate::chat::Switchboard,
    source: Option<std::net::IpAddr>,
) {
    // The first frame says where the client is; anything else is refused.
    let after = match tokio::time::timeout(Duration::from_secs(10), socket.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<ClientFrame>(&t) {
            Ok(ClientFrame::Resume { after }) => after,
            _ => {
                let _ = socket.send(error_frame("expected resume first")).await;
                return;
            }
        },
        _ => return,
    };
    let (replay, mut live) = conv.subscribe(after);
    for event in replay {
        let closed = matches!(event.as_ref(), Event::Closed { .. });
        if socket.send(frame(event.as_ref())).await.is_err() {
            return;
        }
        if closed {
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    }
    loop {
        tokio::select! {
            update = live.recv() => match update {
                Ok(Live::Event(event)) => {
                    let closed = matches!(event.as_ref(), Event::Closed { .. });
                    if socket.send(frame(event.as_ref())).await.is_err() {
                        return;
                    }
                    if closed {
                        let _ = socket.send(Message::Close(None)).await;
                        return;
                    }
                }
                Ok(Live::Typing(on)) => {
                    let typing = serde_json::json!({ "type": "typing", "on": on });
                    if socket.send(frame(&typing)).await.is_err() {
                        return;
                    }
                }
                // Too far behind: drop the socket; the client resumes from
                // its last id and misses nothing.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                // Counted per conversation, so reconnecting doesn't reset it.
                if !conv.allow_frame(INPUT_BURST, Duration::from_secs(10)) {
                    metrics::counter!(names::CHAT_FRAMES_REFUSED, "reason" => "rate").increment(1);
                    let _ = socket.send(error_frame("Too many messages; please wait a moment.")).await;
                    continue;
                }
                let input = match serde_json::from_str::<ClientFrame>(&text) {
                    Ok(ClientFrame::Answer { prompt, value }) => VisitorInput::Answer { prompt, value },
                    Ok(ClientFrame::Text { text }) => VisitorInput::Text(text),
                    Ok(ClientFrame::Resume { .. }) => continue,
                    Ok(ClientFrame::Switch { channel, phone, code }) => {
                        let result = match ChannelKind::parse(&channel) {
                            Some(ChannelKind::Web) => board.to_web(conv, false).await.map(|_| None),
                            Some(kind) => {
                                visitor_switch(board, conv, kind, &phone, code.as_deref(), source).await
                            }
                            None => Err(crate::chat::SwitchError::Unavailable("that channel")),
                        };
                        let reply = match result {
                            Ok(reply) => reply,
                            Err(e) => Some(switch_failed(&e.to_string())),
                        };
                        if let Some(reply) = reply {
                            let _ = socket.send(reply).await;
                        }
                        continue;
                    }
                    Ok(ClientFrame::Revert) => {
                        if let Err(e) = board.to_web(conv, true).await {
                            let _ = socket.send(switch_failed(&e.to_string())).await;
                        }
                        continue;
                    }
                    Err(_) => {
                        metrics::counter!(names::CHAT_FRAMES_REFUSED, "reason" => "malformed").increment(1);
                        let _ = socket.send(error_frame("Sorry, that message could not be read.")).await;
                        continue;
                    }
                };
                match conv.visitor_input(input) {
                    Accepted::Flow => {}
                    // A stale or repeated answer: let the client re-enable.
                    Accepted::Refused => {
                        let _ = socket.send(error_frame("That question was already answered.")).await;
                    }
                    // The visitor action command's phone number.
                    Accepted::Switch { channel, phone } => {
                        match visitor_switch(board, conv, channel, &phone, None, source).await {
                            Ok(reply) => {
                                if let Some(reply) = reply {
                                    let _ = socket.send(reply).await;
                                }
                            }
                            Err(e) => {
                                let _ = socket.send(switch_failed(&e.to_string())).await;
                                // Ask again, with the reason, so the visitor can correct it.
                                conv.ask_phone(channel, &e.to_string());
                            }
                        }
                    }
                }
            }
        }
    }
}
