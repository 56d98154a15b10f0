//! A generic JSON webhook: for gateways we have no adapter for, or an
//! in-house relay.
//!
//! Contract: `POST <url>` with JSON
//! `{"to", "from"?, "channel": "sms"|"whatsapp", "type": "text"|"template",
//! "body"? , "template"?: {"name", "language", "components"}, "idempotency_key"}`
//! (`components` as the WhatsApp Cloud API writes them, `[]` for none),
//! header `Idempotency-Key` (same on every retry: the receiver should
//! deduplicate on it), and with a secret `X-Crossline-Signature:
//! sha256=<hex HMAC-SHA256 of the exact body>`. Any 2xx is success; the
//! answer's JSON `id` (and `status`) are used when present.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use serde_json::{json, Map, Value};

use super::config::Secret;
use super::http::{self, Reply};
use super::retry::{self, Outcome, RetryPolicy};
use super::{
    check_message, crypto, scrub, BoxFuture, MessageKind, MessagingProvider, OutboundMessage,
    SendError, SendReceipt,
};

pub const IDEMPOTENCY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    pub url: String,
    /// Extra request headers, e.g. `Authorization`.
    pub headers: BTreeMap<String, Secret>,
    /// Key for the body signature; `None` sends no signature.
    pub secret: Option<Secret>,
    /// Default sender put in `from` when the message names none.
    pub from: Option<String>,
    /// Per attempt, connect to last byte.
    pub timeout: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            url: String::new(),
            headers: BTreeMap::new(),
            secret: None,
            from: None,
            timeout: Duration::from_secs(10),
        }
    }
}

pub struct WebhookProvider {
    client: reqwest::Client,
    url: reqwest::Url,
    /// Configured headers plus our Content-Type and Accept.
    headers: HeaderMap,
    secret: Option<Secret>,
    from: Option<String>,
    policy: RetryPolicy,
    timeout: Duration,
}

impl std::fmt::Debug for WebhookProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookProvider")
            .field("url", &self.url.as_str())
            .field("signed", &self.secret.is_some())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl WebhookProvider {
    /// Checks the URL and headers and builds the client; nothing is sent.
    pub fn new(settings: WebhookSettings, policy: RetryPolicy) -> Result<Self, SendError> {
        let url = http::parse_url(&settings.url)
            .map_err(|e| SendError::Config(format!("webhook url: {e}")))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &settings.headers {
            let (name, value) = http::header(name, value.expose())
                .map_err(|e| SendError::Config(format!("webhook header: {e}")))?;
            headers.insert(name, value);
        }
        // Ours win over configured ones: the body is ours.
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        Ok(WebhookProvider {
            client: http::client(settings.timeout)?,
            url,
            headers,
            secret: settings.secret.filter(|s| !s.expose().is_empty()),
            from: settings.from.filter(|s| !s.trim().is_empty()),
            policy,
            timeout: settings.timeout,
        })
    }

    fn payload(&self, msg: &OutboundMessage) -> Value {
        let mut p = Map::new();
        p.insert("to".into(), json!(msg.to));
        if let Some(from) = msg.from.as_deref().or(self.from.as_deref()) {
            p.insert("from".into(), json!(from));
        }
        match &msg.kind {
            MessageKind::Text { body } => {
                p.insert("channel".into(), json!("sms"));
                p.insert("type".into(), json!("text"));
                p.insert("body".into(), json!(body));
            }
            MessageKind::WhatsAppText { body } => {
                p.insert("channel".into(), json!("whatsapp"));
                p.insert("type".into(), json!("text"));
                p.insert("body".into(), json!(body));
            }
            MessageKind::WhatsAppTemplate {
                name,
                language,
                components,
            } => {
                p.insert("channel".into(), json!("whatsapp"));
                p.insert("type".into(), json!("template"));
                let components =
                    super::whatsapp_template::components_json(components).unwrap_or(json!([]));
                p.insert(
                    "template".into(),
                    json!({ "name": name, "language": language, "components": components }),
                );
            }
        }
        p.insert("idempotency_key".into(), json!(msg.idempotency_key));
        Value::Object(p)
    }

    async fn send_inner(&self, msg: &OutboundMessage) -> Result<SendReceipt, SendError> {
        check_message(msg)?;
        let body = serde_json::to_vec(&self.payload(msg))
            .map_err(|e| SendError::Config(format!("cannot encode request: {e}")))?;
        let mut headers = self.headers.clone();
        let key = HeaderValue::from_str(&msg.idempotency_key)
            .map_err(|_| SendError::Config("idempotency key is not valid in a header".into()))?;
        headers.insert(IDEMPOTENCY_HEADER, key);
        if let Some(secret) = &self.secret {
            // Signed once: every attempt sends the same bytes and time.
            let now = crypto::unix_now();
            let sig = crypto::timed_signature(secret.expose().as_bytes(), now, &body);
            if let Ok(v) = HeaderValue::from_str(&sig) {
                headers.insert(HeaderName::from_static(crypto::SIGNATURE_HEADER), v);
            }
            headers.insert(
                HeaderName::from_static(crypto::TIMESTAMP_HEADER),
                HeaderValue::from(now),
            );
        }
        let ((provider_id, status), attempts) =
            retry::run(&self.policy, "webhook", &msg.to, |_| {
                let req = self
                    .client
                    .post(self.url.clone())
                    .headers(headers.clone())
                    .body(body.clone());
                async move {
                    match http::execute(req).await {
                        Ok(reply) => self.outcome(&reply, msg),
                        Err(e) => http::transport_failure(e, self.timeout),
                    }
                }
            })
            .await?;
        tracing::debug!(
            provider = "webhook",
            to = %crate::mask::phone(&msg.to),
            id = %provider_id,
            attempts,
            "message accepted by webhook"
        );
        Ok(SendReceipt {
            provider_id,
            status,
            attempts,
        })
    }

    fn outcome(&self, reply: &Reply, msg: &OutboundMessage) -> Outcome<(String, String)> {
        let json: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        let text = |k: &str| {
            json.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if reply.is_success() {
            let id = match json.get("id") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                // The receiver deduplicates on the key, so it names the send.
                _ => msg.idempotency_key.clone(),
            };
            let status = text("status").unwrap_or("accepted").to_owned();
            return Outcome::Done((id, status));
        }
        let message = text("message")
            .or_else(|| text("error"))
            .map(|m| scrub(m, &msg.to))
            .unwrap_or_else(|| http::fallback_message(reply, &msg.to));
        if let Some(outcome) = http::transient(reply, &self.policy, &message) {
            return outcome;
        }
        let status = reply.status;
        Outcome::Fatal(match status {
            401 | 403 => SendError::Auth { status, message },
            _ => SendError::Rejected {
                status,
                code: json.get("code").and_then(Value::as_i64),
                message,
            },
        })
    }
}

impl MessagingProvider for WebhookProvider {
    fn name(&self) -> &'static str {
        "webhook"
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

    const SECRET: &str = "whsec-test";
    const TO: &str = "+15551234567";

    /// A receiver that verifies the signature and the contract first.
    async fn stand_in(script: Vec<Answer>, secret: Option<&'static str>) -> StandIn {
        StandIn::start(Arc::new(move |seen: &Seen, i: usize| {
            if seen.path != "/hooks/sms" || seen.header("content-type") != Some("application/json")
            {
                return Answer::json(400, json!({"message": "bad request"}));
            }
            if let Some(secret) = secret {
                let sig = seen.header("x-crossline-signature").unwrap_or_default();
                let ts = seen.header("x-crossline-timestamp").unwrap_or_default();
                if !crypto::verify_timed_signature(
                    secret.as_bytes(),
                    &seen.body,
                    ts,
                    sig,
                    crypto::unix_now(),
                ) {
                    return Answer::json(401, json!({"error": "bad signature"}));
                }
            }
            if seen.header("idempotency-key").is_none() {
                return Answer::json(400, json!({"message": "Idempotency-Key required"}));
            }
            scripted(&script, i)
        }))
        .await
    }

    fn provider(base: &str, secret: Option<&str>) -> WebhookProvider {
        WebhookProvider::new(
            WebhookSettings {
                url: format!("{base}/hooks/sms"),
                headers: BTreeMap::from([("X-Api-Key".to_owned(), Secret::from("api-key-1"))]),
                secret: secret.map(Secret::from),
                from: Some("+15550100000".into()),
                timeout: Duration::from_secs(5),
            },
            RetryPolicy {
                base_backoff: Duration::from_millis(10),
                ..RetryPolicy::default()
            },
        )
        .expect("provider")
    }

    #[tokio::test]
    async fn signed_request_and_receipt_from_answer() {
        let server = stand_in(
            vec![Answer::json(
                200,
                json!({"id": "msg-77", "status": "queued"}),
            )],
            Some(SECRET),
        )
        .await;
        let r = provider(&server.base, Some(SECRET))
            .send(&text_message(TO, "hello", "hook-key"))
            .await
            .expect("send");
        assert_eq!(
            r,
            SendReceipt {
                provider_id: "msg-77".into(),
                status: "queued".into(),
                attempts: 1
            }
        );
        let seen = server.requests();
        let s = &seen[0];
        assert_eq!(s.header("x-api-key"), Some("api-key-1"));
        assert_eq!(s.header("idempotency-key"), Some("hook-key"));
        assert_eq!(
            s.json(),
            json!({
                "to": TO,
                "from": "+15550100000",
                "channel": "sms",
                "type": "text",
                "body": "hello",
                "idempotency_key": "hook-key"
            })
        );
    }

    #[tokio::test]
    async fn wrong_secret_is_refused_by_receiver() {
        let server = stand_in(vec![Answer::empty(204)], Some(SECRET)).await;
        let e = provider(&server.base, Some("other"))
            .send(&text_message(TO, "hello", "k"))
            .await;
        assert!(
            matches!(e, Err(SendError::Auth { status: 401, .. })),
            "{e:?}"
        );
        let e = provider(&server.base, None)
            .send(&text_message(TO, "hello", "k"))
            .await;
        assert!(
            matches!(e, Err(SendError::Auth { status: 401, .. })),
            "{e:?}"
        );
        assert_eq!(server.count(), 2);
    }

    #[tokio::test]
    async fn empty_2xx_uses_key_and_template_payload() {
        let server = stand_in(vec![Answer::empty(202)], None).await;
        let msg = OutboundMessage {
            to: TO.into(),
            from: Some("+15550109999".into()),
            kind: MessageKind::WhatsAppTemplate {
                name: "otp".into(),
                language: "es".into(),
                components: vec![crate::messaging::whatsapp_template::Component::body_texts(
                    ["1234".to_string()],
                )],
            },
            idempotency_key: "tmpl-key".into(),
        };
        let r = provider(&server.base, None).send(&msg).await.expect("send");
        assert_eq!(r.provider_id, "tmpl-key");
        assert_eq!(r.status, "accepted");
        let seen = server.requests();
        assert!(seen[0].header("x-crossline-signature").is_none());
        assert_eq!(
            seen[0].json(),
            json!({
                "to": TO,
                "from": "+15550109999",
                "channel": "whatsapp",
                "type": "template",
                "template": {
                    "name": "otp",
                    "language": "es",
                    "components": [{
                        "type": "body",
                        "parameters": [{ "type": "text", "text": "1234" }]
                    }]
                },
                "idempotency_key": "tmpl-key"
            })
        );
    }

    #[tokio::test]
    async fn client_errors_not_retried_server_errors_are() {
        let server = stand_in(
            vec![Answer::json(
                422,
                json!({"message": "unknown number +15551234567", "code": 7}),
            )],
            None,
        )
        .await;
        match provider(&server.base, None)
            .send(&text_message(TO, "x", "k"))
            .await
        {
            Err(SendError::Rejected {
                status: 422,
                code: Some(7),
                message,
            }) => assert!(!message.contains("5551234567"), "{message}"),
            other => panic!("expected Rejected, got {other:?}"),
        }
        assert_eq!(server.count(), 1);

        let server = stand_in(
            vec![Answer::empty(503), Answer::json(201, json!({"id": 42}))],
            None,
        )
        .await;
        let r = provider(&server.base, None)
            .send(&text_message(TO, "x", "k"))
            .await
            .expect("send");
        assert_eq!((r.provider_id.as_str(), r.attempts), ("42", 2));
    }

    #[test]
    fn bad_settings_and_debug() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        for (url, header) in [("", "X-A"), ("ftp://x", "X-A"), ("http://x", "Bad Name")] {
            let s = WebhookSettings {
                url: url.into(),
                headers: BTreeMap::from([(header.to_owned(), Secret::from("v"))]),
                ..WebhookSettings::default()
            };
            assert!(matches!(
                WebhookProvider::new(s, RetryPolicy::default()),
                Err(SendError::Config(_))
            ));
        }
        let p = provider("http://127.0.0.1:1", Some(SECRET));
        assert!(!format!("{p:?}").contains(SECRET));
        assert!(!format!("{p:?}").contains("api-key-1"));
    }
}
