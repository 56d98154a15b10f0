//! WhatsApp through Meta's Cloud API (Graph API `/{phone-number-id}/messages`).
//!
//! Templates may be sent any time; free-form text only inside the 24 h
//! customer-service window (else error 131047, [`SendError::OutsideWindow`]).
//!
//! The Cloud API has no idempotency header. Our key travels in
//! `X-Crossline-Idempotency-Key` (Meta ignores it; a proxy or stand-in may
//! use it), and double sends are prevented by [`super::Deduped`] for keys
//! that already succeeded. A retry after a timeout can still deliver twice
//! if Meta did take the first attempt: there is no way to ask.

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde_json::{json, Value};

use super::config::Secret;
use super::http::{self, Reply};
use super::retry::{self, Outcome, RetryPolicy};
use super::whatsapp_template;
use super::{
    check_message, scrub, BoxFuture, MessageKind, MessagingProvider, OutboundMessage, SendError,
    SendReceipt,
};

pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com";
pub const DEFAULT_API_VERSION: &str = "v21.0";

/// Our own header: Meta has no idempotency support.
pub const IDEMPOTENCY_HEADER: HeaderName = HeaderName::from_static("x-crossline-idempotency-key");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhatsAppSettings {
    pub base_url: String,
    /// Graph API version path segment, e.g. `v21.0`.
    pub api_version: String,
    /// The business number's id (not the number itself).
    pub phone_number_id: String,
    pub access_token: Secret,
    /// Per attempt, connect to last byte.
    pub timeout: Duration,
}

impl Default for WhatsAppSettings {
    fn default() -> Self {
        WhatsAppSettings {
            base_url: DEFAULT_BASE_URL.into(),
            api_version: DEFAULT_API_VERSION.into(),
            phone_number_id: String::new(),
            access_token: Secret::default(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// `v` then digits, optionally `.digits`: what Graph version segments look like.
pub(crate) fn is_api_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let (major, minor) = rest.split_once('.').unwrap_or((rest, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(major) && digits(minor)
}

pub struct WhatsAppProvider {
    client: reqwest::Client,
    url: reqwest::Url,
    authorization: HeaderValue,
    policy: RetryPolicy,
    timeout: Duration,
}

impl std::fmt::Debug for WhatsAppProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhatsAppProvider")
            .field("url", &self.url.as_str())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl WhatsAppProvider {
    /// Checks the settings and builds the client; nothing is sent.
    pub fn new(settings: WhatsAppSettings, policy: RetryPolicy) -> Result<Self, SendError> {
        let id = settings.phone_number_id.trim();
        // Spliced into the URL path.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SendError::Config(
                "whatsapp phone_number_id must be digits".into(),
            ));
        }
        let version = settings.api_version.trim();
        if !is_api_version(version) {
            return Err(SendError::Config(format!(
                "whatsapp api_version {version:?} is not like \"v21.0\""
            )));
        }
        if settings.access_token.expose().is_empty() {
            return Err(SendError::Config("whatsapp access_token is empty".into()));
        }
        let base = settings.base_url.trim().trim_end_matches('/');
        let url = http::parse_url(&format!("{base}/{version}/{id}/messages"))
            .map_err(|e| SendError::Config(format!("whatsapp base_url: {e}")))?;
        let (_, authorization) = http::header(
            "Authorization",
            &format!("Bearer {}", settings.access_token.expose()),
        )
        .map_err(|_| SendError::Config("whatsapp access_token is not valid in a header".into()))?;
        Ok(WhatsAppProvider {
            client: http::client(settings.timeout)?,
            url,
            authorization,
            policy,
            timeout: settings.timeout,
        })
    }

    async fn send_inner(&self, msg: &OutboundMessage) -> Result<SendReceipt, SendError> {
        check_message(msg)?;
        let body = serde_json::to_vec(&payload(msg))
            .map_err(|e| SendError::Config(format!("cannot encode request: {e}")))?;
        let key = HeaderValue::from_str(&msg.idempotency_key)
            .map_err(|_| SendError::Config("idempotency key is not valid in a header".into()))?;
        let ((provider_id, status), attempts) =
            retry::run(&self.policy, "whatsapp", &msg.to, |_| {
                let req = self
                    .client
                    .post(self.url.clone())
                    .header(AUTHORIZATION, self.authorization.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .header(ACCEPT, "application/json")
                    .header(IDEMPOTENCY_HEADER, key.clone())
                    .body(body.clone());
                async move {
                    match http::execute(req).await {
                        Ok(reply) => self.outcome(&reply, &msg.to),
                        Err(e) => http::transport_failure(e, self.timeout),
                    }
                }
            })
            .await?;
        tracing::debug!(
            provider = "whatsapp",
            to = %crate::mask::phone(&msg.to),
            wamid = %provider_id,
            attempts,
            "WhatsApp message accepted"
        );
        Ok(SendReceipt {
            provider_id,
            status,
            attempts,
        })
    }

    fn outcome(&self, reply: &Reply, to: &str) -> Outcome<(String, String)> {
        let json: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        if reply.is_success() {
            let first = json.get("messages").and_then(|m| m.get(0));
            let field = |k: &str| first.and_then(|m| m.get(k)).and_then(Value::as_str);
            return match field("id").filter(|id| !id.is_empty()) {
                Some(id) => Outcome::Done((
                    id.to_owned(),
                    field("message_status").unwrap_or("accepted").to_owned(),
                )),
                None => Outcome::Fatal(SendError::Unavailable {
                    message: format!(
                        "HTTP {} without a message id; the message may have been sent",
                        reply.status
                    ),
                }),
            };
        }
        let error = json.get("error");
        let text = |k: &str| {
            error
                .and_then(|e| e.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let code = error.and_then(|e| e.get("code")).and_then(Value::as_i64);
        let details = error
            .and_then(|e| e.get("error_data"))
            .and_then(|d| d.get("details"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let summary = match (text("message"), details) {
            ("", "") => String::new(),
            (m, "") => m.to_owned(),
            ("", d) => d.to_owned(),
            (m, d) => format!("{m}: {d}"),
        };
        let message = Some(scrub(&summary, to))
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| http::fallback_message(reply, to));
        if let Some(outcome) = http::transient(reply, &self.policy, &message) {
            return outcome;
        }
        Outcome::Fatal(map_error(
            reply.status,
            code,
            &summary,
            message,
            reply.retry_after,
        ))
    }
}

/// The Cloud API request body for `msg`.
fn payload(msg: &OutboundMessage) -> Value {
    // The API wants the number without its `+`.
    let to = msg.to.trim_start_matches('+');
    match &msg.kind {
        MessageKind::Text { body } | MessageKind::WhatsAppText { body } => json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": { "body": body }
        }),
        MessageKind::WhatsAppTemplate {
            name,
            language,
            components,
        } => {
            let mut template = json!({ "name": name, "language": { "code": language } });
            if let (Some(c), Some(t)) = (
                whatsapp_template::components_json(components),
                template.as_object_mut(),
            ) {
                t.insert("components".into(), c);
            }
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": to,
                "type": "template",
                "template": template
            })
        }
    }
}

/// Meta's documented error codes to our kinds. `raw` is the unscrubbed
/// text, only inspected to tell which parameter a code 100 is about.
fn map_error(
    status: u16,
    code: Option<i64>,
    raw: &str,
    message: String,
    retry_after: Option<Duration>,
) -> SendError {
    match code {
        // Access token expired or invalid; permission errors.
        Some(0 | 10 | 190 | 200..=299) => SendError::Auth { status, message },
        // Undeliverable / not on WhatsApp, not in the allowed list (test
        // numbers), recipient is the sender.
        Some(131026 | 131030 | 131021) => SendError::InvalidRecipient { code, message },
        Some(100) if names_recipient(raw) => SendError::InvalidRecipient { code, message },
        Some(131047) => SendError::OutsideWindow { code, message },
        // The user stopped marketing messages from this business.
        Some(131050) => SendError::OptedOut { code, message },
        // App, account, throughput, spam and pair rate limits.
        Some(4 | 80007 | 130429 | 131048 | 131056) => SendError::RateLimited {
            retry_after,
            message,
        },
        _ if status == 401 || status == 403 => SendError::Auth { status, message },
        _ => SendError::Rejected {
            status,
            code,
            message,
        },
    }
}

/// Whether an "invalid parameter" text is about the `to` field.
fn names_recipient(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "'to'",
        "\"to\"",
        "`to`",
        "parameter to",
        "param to",
        "to parameter",
        "recipient",
    ]
    .iter()
    .any(|needle| t.contains(needle))
}

impl MessagingProvider for WhatsAppProvider {
    fn name(&self) -> &'static str {
        "whatsapp"
    }

    fn send<'a>(
        &'a self,
        msg: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<SendReceipt, SendError>> {
        Box::pin(self.send_inner(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::test_util::{scripted, text_message, Answer, Seen, StandIn};
    use std::sync::Arc;

    const PHONE_ID: &str = "1234567890";
    const TOKEN: &str = "EAAG-test-token";
    const TO: &str = "+15551234567";

    fn graph_error(status: u16, code: i64, message: &str, details: &str) -> Answer {
        Answer::json(
            status,
            json!({
                "error": {
                    "message": message,
                    "type": "OAuthException",
                    "code": code,
                    "error_data": { "messaging_product": "whatsapp", "details": details },
                    "fbtrace_id": "AbCdEf123"
                }
            }),
        )
    }

    fn accepted(seen: &Seen) -> Answer {
        let to = seen.json()["to"].as_str().unwrap_or_default().to_owned();
        Answer::json(
            200,
            json!({
                "messaging_product": "whatsapp",
                "contacts": [{ "input": to, "wa_id": to }],
                "messages": [{ "id": "wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA" }]
            }),
        )
    }

    /// Checks what Graph checks first; then answers from `script` (`None`:
    /// accept).
    async fn stand_in(script: Vec<Option<Answer>>) -> StandIn {
        StandIn::start(Arc::new(move |seen: &Seen, i: usize| {
            if seen.path != format!("/v21.0/{PHONE_ID}/messages") {
                return graph_error(400, 100, "Unsupported post request.", "");
            }
            if seen.header("authorization") != Some(format!("Bearer {TOKEN}").as_str()) {
                return graph_error(
                    401,
                    190,
                    "Invalid OAuth access token - Cannot parse access token",
                    "",
                );
            }
            if seen.header("content-type") != Some("application/json") {
                return graph_error(400, 100, "(#100) Invalid parameter", "content type");
            }
            let body = seen.json();
            if body["messaging_product"] != "whatsapp" {
                return graph_error(
                    400,
                    100,
                    "(#100) The parameter messaging_product is required.",
                    "",
                );
            }
            let to = body["to"].as_str().unwrap_or_default();
            if to.is_empty() || !to.bytes().all(|b| b.is_ascii_digit()) {
                return graph_error(
                    400,
                    100,
                    "(#100) Invalid parameter",
                    "Invalid parameter 'to'",
                );
            }
            let steps: Vec<Answer> = script
                .iter()
                .map(|s| s.clone().unwrap_or_else(|| accepted(seen)))
                .collect();
            scripted(&steps, i)
        }))
        .await
    }

    fn provider(base: &str) -> WhatsAppProvider {
        WhatsAppProvider::new(
            WhatsAppSettings {
                base_url: base.into(),
                phone_number_id: PHONE_ID.into(),
                access_token: TOKEN.into(),
                ..WhatsAppSettings::default()
            },
            RetryPolicy {
                base_backoff: Duration::from_millis(10),
                ..RetryPolicy::default()
            },
        )
        .expect("provider")
    }

    fn template(parameters: &[&str]) -> OutboundMessage {
        OutboundMessage {
            to: TO.into(),
            from: None,
            kind: MessageKind::WhatsAppTemplate {
                name: "appointment_reminder".into(),
                language: "en_US".into(),
                components: if parameters.is_empty() {
                    Vec::new()
                } else {
                    vec![whatsapp_template::Component::body_texts(
                        parameters.iter().map(|s| s.to_string()),
                    )]
                },
            },
            idempotency_key: "wa-key-1".into(),
        }
    }

    #[tokio::test]
    async fn template_with_parameters() {
        let server = stand_in(vec![None]).await;
        let receipt = provider(&server.base)
            .send(&template(&["Alice", "3 PM"]))
            .await
            .expect("send");
        assert_eq!(
            receipt,
            SendReceipt {
                provider_id: "wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA".into(),
                status: "accepted".into(),
                attempts: 1,
            }
        );
        let seen = server.requests();
        assert_eq!(seen.len(), 1);
        let s = &seen[0];
        assert_eq!(s.method, axum::http::Method::POST);
        assert_eq!(s.header("x-crossline-idempotency-key"), Some("wa-key-1"));
        assert_eq!(
            s.json(),
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "15551234567",
                "type": "template",
                "template": {
                    "name": "appointment_reminder",
                    "language": { "code": "en_US" },
                    "components": [{
                        "type": "body",
                        "parameters": [
                            { "type": "text", "text": "Alice" },
                            { "type": "text", "text": "3 PM" }
                        ]
                    }]
                }
            })
        );
    }

    #[tokio::test]
    async fn template_without_parameters_and_text() {
        let server = stand_in(vec![None]).await;
        let p = provider(&server.base);
        p.send(&template(&[])).await.expect("template");
        let mut text = text_message(TO, "See you soon", "wa-key-2");
        text.kind = MessageKind::WhatsAppText {
            body: "See you soon".into(),
        };
        p.send(&text).await.expect("text");
        let seen = server.requests();
        assert_eq!(
            seen[0].json(),
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "15551234567",
                "type": "template",
                "template": { "name": "appointment_reminder", "language": { "code": "en_US" } }
            })
        );
        assert_eq!(
            seen[1].json(),
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "15551234567",
                "type": "text",
                "text": { "body": "See you soon" }
            })
        );
    }

    #[tokio::test]
    async fn outside_window() {
        let server = stand_in(vec![Some(graph_error(
            400,
            131047,
            "Re-engagement message",
            "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
        ))])
        .await;
        let mut msg = template(&[]);
        msg.kind = MessageKind::WhatsAppText { body: "hi".into() };
        let e = provider(&server.base).send(&msg).await;
        match e {
            Err(SendError::OutsideWindow { code, message }) => {
                assert_eq!(code, Some(131047));
                assert!(message.starts_with("Re-engagement message: "), "{message}");
            }
            other => panic!("expected OutsideWindow, got {other:?}"),
        }
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn bad_token_is_auth() {
        let server = stand_in(vec![None]).await;
        let p = WhatsAppProvider::new(
            WhatsAppSettings {
                base_url: server.base.clone(),
                phone_number_id: PHONE_ID.into(),
                access_token: "expired".into(),
                ..WhatsAppSettings::default()
            },
            RetryPolicy::default(),
        )
        .expect("provider");
        let e = p.send(&template(&[])).await;
        assert!(
            matches!(e, Err(SendError::Auth { status: 401, .. })),
            "{e:?}"
        );
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn server_errors_are_retried() {
        let down = graph_error(500, 2, "Service temporarily unavailable", "");
        let server = stand_in(vec![Some(down.clone()), Some(Answer::empty(502)), None]).await;
        let r = provider(&server.base).send(&template(&["x"])).await;
        assert_eq!(r.expect("send").attempts, 3);
        let seen = server.requests();
        assert!(seen
            .iter()
            .all(|s| s.header("x-crossline-idempotency-key") == Some("wa-key-1")));
    }

    #[tokio::test]
    async fn recipient_and_rate_limit_codes() {
        let server = stand_in(vec![
            Some(graph_error(400, 131026, "Message undeliverable", "")),
            Some(graph_error(
                400,
                100,
                "(#100) Invalid parameter",
                "Invalid parameter 'to'",
            )),
            Some(graph_error(
                400,
                100,
                "(#100) Invalid parameter",
                "Invalid template name",
            )),
            Some(graph_error(400, 130429, "Rate limit hit", "")),
            Some(graph_error(
                400,
                131050,
                "Unable to deliver",
                "user stopped marketing",
            )),
        ])
        .await;
        let p = provider(&server.base);
        let mut results = Vec::new();
        for i in 0..5 {
            let mut msg = template(&[]);
            msg.idempotency_key = format!("k{i}");
            results.push(p.send(&msg).await);
        }
        assert!(matches!(
            results[0],
            Err(SendError::InvalidRecipient {
                code: Some(131026),
                ..
            })
        ));
        assert!(matches!(
            results[1],
            Err(SendError::InvalidRecipient {
                code: Some(100),
                ..
            })
        ));
        assert!(matches!(
            results[2],
            Err(SendError::Rejected {
                status: 400,
                code: Some(100),
                ..
            })
        ));
        assert!(matches!(results[3], Err(SendError::RateLimited { .. })));
        assert!(matches!(
            results[4],
            Err(SendError::OptedOut {
                code: Some(131050),
                ..
            })
        ));
        assert_eq!(server.count(), 5, "no 4xx is retried");
    }

    #[tokio::test]
    async fn success_without_id_is_not_retried() {
        let server = stand_in(vec![Some(Answer::json(200, json!({"messages": []})))]).await;
        let e = provider(&server.base).send(&template(&[])).await;
        assert!(matches!(e, Err(SendError::Unavailable { .. })), "{e:?}");
        assert_eq!(server.count(), 1);
    }

    #[test]
    fn settings_checks() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ok = WhatsAppSettings {
            phone_number_id: PHONE_ID.into(),
            access_token: TOKEN.into(),
            ..WhatsAppSettings::default()
        };
        let p = WhatsAppProvider::new(ok.clone(), RetryPolicy::default()).expect("provider");
        assert_eq!(
            p.url.as_str(),
            "https://graph.facebook.com/v21.0/1234567890/messages"
        );
        assert!(!format!("{ok:?}").contains(TOKEN));
        assert!(!format!("{p:?}").contains(TOKEN));
        for bad in [
            WhatsAppSettings {
                phone_number_id: "12/../34".into(),
                ..ok.clone()
            },
            WhatsAppSettings {
                api_version: "21".into(),
                ..ok.clone()
            },
            WhatsAppSettings {
                access_token: "".into(),
                ..ok.clone()
            },
            WhatsAppSettings {
                base_url: "graph.facebook.com".into(),
                ..ok.clone()
            },
        ] {
            assert!(matches!(
                WhatsAppProvider::new(bad, RetryPolicy::default()),
                Err(SendError::Config(_))
            ));
        }
        assert!(is_api_version("v21.0") && is_api_version("v9"));
        assert!(!is_api_version("v21.") && !is_api_version("21.0") && !is_api_version("v"));
    }
}
