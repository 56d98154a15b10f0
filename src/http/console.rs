//! The operator console: its page and assets (built in), its login (the
//! operator token, exchanged for an HttpOnly session cookie so the token
//! never sits in page storage), and its live feed over a WebSocket.

use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::auth::Role;
use super::HttpState;
use crate::chat::Feed;
use crate::telemetry::names;

pub const SESSION_COOKIE: &str = "crossline_console";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/console/",
        "text/html; charset=utf-8",
        include_str!("../../web/console/index.html"),
    ),
    (
        "/console/console.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/console/console.js"),
    ),
    (
        "/console/console.css",
        "text/css; charset=utf-8",
        include_str!("../../web/console/console.css"),
    ),
];

pub fn router() -> Router<HttpState> {
    let mut r = Router::new()
        .route(
            "/console",
            get(|| async { axum::response::Redirect::permanent("/console/") }),
        )
        .route(
            "/v1/console/session",
            post(login)
                .delete(logout)
                .layer(axum::extract::DefaultBodyLimit::max(4 * 1024)),
        )
        .route("/v1/console/ws", get(feed));
    for &(path, content_type, body) in ASSETS {
        r = r.route(
            path,
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, content_type),
                        (header::CACHE_CONTROL, "no-cache"),
                        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                        (header::X_FRAME_OPTIONS, "DENY"),
                        (
                            header::CONTENT_SECURITY_POLICY,
                            "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                        ),
                    ],
                    body,
                )
            }),
        );
    }
    r
}

/// The role of the live console session this request carries, if any.
pub fn session_role(state: &HttpState, headers: &HeaderMap) -> Option<Role> {
    let value = super::chat::cookies(headers).remove(SESSION_COOKIE)?;
    let key = crate::chat::secret_hash(&value);
    match state.console_sessions.get(&key).map(|e| *e) {
        Some((expires, role)) if Instant::now() < expires => Some(role),
        Some(_) => {
            state.console_sessions.remove(&key);
            None
        }
        None => None,
    }
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

/// Exchange the operator (or viewer) token for a session cookie. Wrong
/// tokens are throttled per client by `guard::sign_in_layer` (this answers
/// 401).
async fn login(
    State(s): State<HttpState>,
    body: Result<Json<Login>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let login = match body {
        Ok(Json(login)) => login,
        // Over the body limit is 413, not a malformed sign-in.
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return super::api::error(e.status(), "request body too large");
        }
        Err(_) => {
            return super::api::error(StatusCode::BAD_REQUEST, "expected {\"token\": \"...\"}")
        }
    };
    let mut headers = HeaderMap::new();
    let bearer = format!("Bearer {}", login.token);
    if let Ok(v) = HeaderValue::from_str(&bearer) {
        headers.insert(header::AUTHORIZATION, v);
    }
    // A viewer signs in too, to a console without buttons.
    let role = match super::auth::role_of(&s, &login.token) {
        Some(Role::Viewer) => Role::Viewer,
        _ => match super::auth::check(&s, &headers, Role::Operator) {
            Ok(()) => Role::Operator,
            Err(refusal) => return refusal,
        },
    };
    // Forget expired sessions while we're here.
    let now = Instant::now();
    s.console_sessions.retain(|_, (expires, _)| *expires > now);
    let session = crate::chat::random_token(32);
    s.console_sessions.insert(
        crate::chat::secret_hash(&session),
        (now + SESSION_TTL, role),
    );
    let secure = if s.services.public_base_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_TTL.as_secs()
    );
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    if let Some(value) = super::chat::cookies(&headers).remove(SESSION_COOKIE) {
        s.console_sessions.remove(&crate::chat::secret_hash(&value));
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "crossline_console=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    r
}

async fn feed(
    State(s): State<HttpState>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if !super::same_origin(&headers, &s.services.public_base_url) {
        metrics::counter!(names::HTTP_AUTH_FAILURES, "reason" => "origin").increment(1);
        return (StatusCode::FORBIDDEN, "cross-site WebSocket refused").into_response();
    }
    if let Err(r) = super::auth::check(&s, &headers, super::auth::Role::Operator) {
        return r;
    }
    match ws {
        Ok(ws) => ws
            .max_message_size(4096)
            .on_upgrade(move |socket| serve_feed(socket, s)),
        Err(rejection) => rejection.into_response(),
    }
}

async fn serve_feed(mut socket: WebSocket, s: HttpState) {
    let mut feed = s.services.chat.feed();
    loop {
        tokio::select! {
            item = feed.recv() => {
                let frame = match item {
                    Ok(Feed::Conversation(id)) => match s.services.chat.get(&id) {
                        Some(c) => serde_json::json!({
                            "type": "conversation",
                            "conversation": super::api::live_conversation_json(&s, &c).await,
                        }),
                        None => continue,
                    },
                    Ok(Feed::Event(id, event)) => serde_json::json!({
                        "type": "event", "conversation": id, "event": event.as_ref(),
                    }),
                    Ok(Feed::Alert(text)) => serde_json::json!({ "type": "alert", "text": text }),
                    // Behind: the console re-fetches after a reconnect.
                    Err(_) => return,
                };
                if socket.send(Message::Text(frame.to_string().into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
