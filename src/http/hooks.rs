//! Provider webhooks for inbound messages: Twilio SMS and the WhatsApp
//! Cloud API. A request whose signature doesn't check out gets 403 and
//! changes nothing; a channel with no secret configured isn't served.
//! A request with no signature header is refused before its body is read,
//! and bodies over `MAX_BODY` are refused unread (413).

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::HttpState;
use crate::messaging::inbound;
use crate::telemetry::names;

pub const TWILIO_SMS_PATH: &str = "/hooks/twilio/sms";
pub const WHATSAPP_PATH: &str = "/hooks/whatsapp";
/// Providers send a form or a small JSON event; far below this.
pub const MAX_BODY: usize = 64 * 1024;
const TWILIO_SIGNATURE: &str = "x-twilio-signature";
const WHATSAPP_SIGNATURE: &str = "x-hub-signature-256";

pub fn router() -> Router<HttpState> {
    Router::new()
        .route(TWILIO_SMS_PATH, post(twilio_sms))
        .route(WHATSAPP_PATH, get(whatsapp_verify).post(whatsapp_events))
}

fn refuse(channel: &'static str, reason: &'static str) -> Response {
    metrics::counter!(names::WEBHOOKS_REFUSED, "channel" => channel, "reason" => reason)
        .increment(1);
    tracing::warn!(channel, reason, "inbound webhook refused");
    let status = match reason {
        "signature" => StatusCode::FORBIDDEN,
        "disabled" => StatusCode::NOT_FOUND,
        "too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    (status, reason).into_response()
}

/// The signature header and the body, read only when that header is there
/// and only up to `MAX_BODY`: an unsigned request costs no reading or
/// parsing before its 403.
async fn signed_body(
    channel: &'static str,
    headers: &HeaderMap,
    signature_header: &str,
    body: Body,
) -> Result<(String, Bytes), Response> {
    let signature = headers
        .get(signature_header)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| refuse(channel, "signature"))?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(refuse(channel, "too_large"));
    }
    // Also stops chunked bodies at the limit.
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| refuse(channel, "too_large"))?;
    Ok((signature.to_string(), bytes))
}

async fn twilio_sms(State(s): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    let Some(token) = &s.services.inbound.twilio_auth_token else {
        return refuse("sms", "disabled");
    };
    let url = s
        .services
        .inbound
        .twilio_webhook_url
        .clone()
        .unwrap_or_else(|| format!("{}{TWILIO_SMS_PATH}", s.services.public_base_url));
    let (signature, body) = tri!(signed_body("sms", &headers, TWILIO_SIGNATURE, body).await);
    let Ok(text) = std::str::from_utf8(&body) else {
        return refuse("sms", "malformed");
    };
    // Twilio signs the decoded fields, so they are decoded first.
    let params = crate::messaging::form::decode(text);
    if !inbound::twilio_signature_ok(token.expose(), &url, &params, &signature) {
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

async fn whatsapp_events(State(s): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    let Some(secret) = &s.services.inbound.whatsapp_app_secret else {
        return refuse("whatsapp", "disabled");
    };
    let (signature, body) = tri!(signed_body("whatsapp", &headers, WHATSAPP_SIGNATURE, body).await);
    if !inbound::whatsapp_signature_ok(secret.expose(), &body, &signature) {
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

/// Route texts to their conversations, in order; false (and the rest left
/// for the provider's retry) once one couldn't be handed over.
async fn deliver(s: &HttpState, messages: Vec<crate::messaging::inbound::InboundMessage>) -> bool {
    for m in messages {
        if s.services.switchboard.inbound(m).await == crate::chat::InboundOutcome::Failed {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A body that notes being read, and would go on forever.
    fn watched_body() -> (Body, Arc<AtomicBool>) {
        let read = Arc::new(AtomicBool::new(false));
        let flag = read.clone();
        let stream = futures_util::stream::poll_fn(move |_| {
            flag.store(true, Ordering::SeqCst);
            std::task::Poll::Ready(Some(Ok::<_, std::io::Error>(Bytes::from_static(
                &[0xff; 1024],
            ))))
        });
        (Body::from_stream(stream), read)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn status(r: Result<(String, Bytes), Response>) -> StatusCode {
        match r {
            Ok(_) => StatusCode::OK,
            Err(resp) => resp.status(),
        }
    }

    #[tokio::test]
    async fn unsigned_requests_are_refused_before_the_body_is_read() {
        for (name, h) in [
            (TWILIO_SIGNATURE, headers(&[])),
            (TWILIO_SIGNATURE, headers(&[(TWILIO_SIGNATURE, "  ")])),
            // The other provider's header doesn't count.
            (WHATSAPP_SIGNATURE, headers(&[(TWILIO_SIGNATURE, "x")])),
            // Announcing 2 MB changes nothing: still 403, not 413.
            (
                WHATSAPP_SIGNATURE,
                headers(&[("content-length", "2097152")]),
            ),
        ] {
            let (body, read) = watched_body();
            assert_eq!(
                status(signed_body("sms", &h, name, body).await),
                StatusCode::FORBIDDEN
            );
            assert!(!read.load(Ordering::SeqCst), "{name} {h:?}: body was read");
        }
    }

    #[tokio::test]
    async fn signed_bodies_over_the_cap_get_413() {
        let signed = |len: &str| headers(&[(TWILIO_SIGNATURE, "sig"), ("content-length", len)]);
        // Declared too big: refused unread.
        let (body, read) = watched_body();
        let r = signed_body("sms", &signed("2097152"), TWILIO_SIGNATURE, body).await;
        assert_eq!(status(r), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(!read.load(Ordering::SeqCst));
        // No length given (chunked): read up to the cap, then refused.
        let (body, _) = watched_body();
        let h = headers(&[(TWILIO_SIGNATURE, "sig")]);
        let r = signed_body("sms", &h, TWILIO_SIGNATURE, body).await;
        assert_eq!(status(r), StatusCode::PAYLOAD_TOO_LARGE);
        // At the cap and under it: read.
        for len in [MAX_BODY, 10] {
            let body = Body::from(vec![b'a'; len]);
            let h = signed(&len.to_string());
            let (sig, bytes) = signed_body("sms", &h, TWILIO_SIGNATURE, body)
                .await
                .unwrap();
            assert_eq!((sig.as_str(), bytes.len()), ("sig", len));
        }
        let body = Body::from(vec![b'a'; MAX_BODY + 1]);
        let h = headers(&[(WHATSAPP_SIGNATURE, "sha256=00")]);
        let r = signed_body("whatsapp", &h, WHATSAPP_SIGNATURE, body).await;
        assert_eq!(status(r), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
