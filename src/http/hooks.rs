//! Provider webhooks for inbound messages: Twilio SMS and the WhatsApp
//! Cloud API. A request whose signature doesn't check out gets 403 and
//! changes nothing; a channel with no secret configured isn't served.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::HttpState;
use crate::messaging::inbound;

pub const TWILIO_SMS_PATH: &str = "/hooks/twilio/sms";
pub const WHATSAPP_PATH: &str = "/hooks/whatsapp";

pub fn router() -> Router<HttpState> {
    Router::new()
        .route(TWILIO_SMS_PATH, post(twilio_sms))
        .route(WHATSAPP_PATH, get(whatsapp_verify).post(whatsapp_events))
}

fn refuse(channel: &'static str, reason: &'static str) -> Response {
    metrics::counter!("crossline_webhooks_refused_total", "channel" => channel, "reason" => reason)
        .increment(1);
    tracing::warn!(channel, reason, "inbound webhook refused");
    let status = match reason {
        "signature" => StatusCode::FORBIDDEN,
        "disabled" => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    (status, reason).into_response()
}

async fn twilio_sms(State(s): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(token) = &s.services.inbound.twilio_auth_token else {
        return refuse("sms", "disabled");
    };
    let url = s
        .services
        .inbound
        .twilio_webhook_url
        .clone()
        .unwrap_or_else(|| format!("{}{TWILIO_SMS_PATH}", s.services.public_base_url));
    let Ok(text) = std::str::from_utf8(&body) else {
        return refuse("sms", "malformed");
    };
    let params = crate::messaging::form::decode(text);
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !inbound::twilio_signature_ok(token.expose(), &url, &params, signature) {
        return refuse("sms", "signature");
    }
    let msg = match inbound::parse_twilio(&params) {
        Ok(m) => m,
        Err(_) => return refuse("sms", "malformed"),
    };
    tracing::info!(?msg, "inbound SMS");
    if !deliver(&s, vec![msg]).await {
        // Twilio retries what isn't acknowledged.
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/xml")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
    )
        .into_response()
}

#[derive(Deserialize)]
struct Verify {
    #[serde(rename = "hub.mode", default)]
    mode: String,
    #[serde(rename = "hub.verify_token", default)]
    token: String,
    #[serde(rename = "hub.challenge", default)]
    challenge: String,
}

/// Meta's subscription handshake: echo the challenge for the right token.
async fn whatsapp_verify(State(s): State<HttpState>, Query(q): Query<Verify>) -> Response {
    let Some(want) = &s.services.inbound.whatsapp_verify_token else {
        return refuse("whatsapp", "disabled");
    };
    let ok = q.mode == "subscribe"
        && crate::messaging::crypto::same_bytes(q.token.as_bytes(), want.expose().as_bytes());
    if !ok {
        return refuse("whatsapp", "signature");
    }
    // Only what Meta sends: digits (bounded), never markup.
    if q.challenge.is_empty()
        || q.challenge.len() > 64
        || !q.challenge.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return refuse("whatsapp", "malformed");
    }
    ([(header::CONTENT_TYPE, "text/plain")], q.challenge).into_response()
}

async fn whatsapp_events(State(s): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &s.services.inbound.whatsapp_app_secret else {
        return refuse("whatsapp", "disabled");
    };
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !inbound::whatsapp_signature_ok(secret.expose(), &body, signature) {
        return refuse("whatsapp", "signature");
    }
    let messages = match inbound::parse_whatsapp(&body) {
        Ok(m) => m,
        Err(_) => return refuse("whatsapp", "malformed"),
    };
    for msg in &messages {
        tracing::info!(?msg, "inbound WhatsApp");
    }
    if !deliver(&s, messages).await {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    "ok".into_response()
}

/// Route texts to their conversations off the async threads (routing may
/// wait on the store); false if one couldn't be handed over.
async fn deliver(s: &HttpState, messages: Vec<crate::messaging::inbound::InboundMessage>) -> bool {
    let board = s.services.switchboard.clone();
    tokio::task::spawn_blocking(move || {
        messages
            .into_iter()
            .map(|m| board.inbound(m))
            .all(|o| o != crate::chat::InboundOutcome::Failed)
    })
    .await
    .unwrap_or(false)
}
