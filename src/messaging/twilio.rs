//! SMS through Twilio's Programmable Messaging REST API.
//!
//! `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`, form
//! encoded, HTTP Basic auth with the account SID and auth token. The
//! idempotency key goes in `I-Twilio-Idempotency-Token`, so a retry after a
//! lost answer does not send the SMS twice.

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;

use super::config::Secret;
use super::http::{self, Reply};
use super::retry::{self, Outcome, RetryPolicy};
use super::{
    check_message, crypto, form, scrub, BoxFuture, MessageKind, MessagingProvider, OutboundMessage,
    SendError, SendReceipt,
};

pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

const IDEMPOTENCY_HEADER: HeaderName = HeaderName::from_static("i-twilio-idempotency-token");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioSettings {
    pub base_url: String,
    /// `AC…`; part of the URL path and the Basic-auth user.
    pub account_sid: String,
    pub auth_token: Secret,
    /// Default sender (number, short code or alphanumeric ID).
    pub from: Option<String>,
    /// Used when neither the message nor `from` names a sender.
    pub messaging_service_sid: Option<String>,
    /// Per attempt, connect to last byte.
    pub timeout: Duration,
}

impl Default for TwilioSettings {
    fn default() -> Self {
        TwilioSettings {
            base_url: DEFAULT_BASE_URL.into(),
            account_sid: String::new(),
            auth_token: Secret::default(),
            from: None,
            messaging_service_sid: None,
            timeout: Duration::from_secs(10),
        }
    }
}

pub struct TwilioProvider {
    client: reqwest::Client,
    url: reqwest::Url,
    authorization: HeaderValue,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    policy: RetryPolicy,
    timeout: Duration,
}

impl std::fmt::Debug for TwilioProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioProvider")
            .field("url", &self.url.as_str())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl TwilioProvider {
    /// Checks the settings and builds the client; nothing is sent.
    pub fn new(settings: TwilioSettings, policy: RetryPolicy) -> Result<Self, SendError> {
        let sid = settings.account_sid.trim();
        // It is spliced into the URL path.
        if sid.is_empty() || !sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(SendError::Config(
                "twilio account_sid must be non-empty letters and digits".into(),
            ));
        }
        if settings.auth_token.expose().is_empty() {
            return Err(SendError::Config("twilio auth_token is empty".into()));
        }
        let base = settings.base_url.trim().trim_end_matches('/');
        let url = http::parse_url(&format!("{base}/2010-04-01/Accounts/{sid}/Messages.json"))
            .map_err(|e| SendError::Config(format!("twilio base_url: {e}")))?;
        let credentials =
            crypto::base64_encode(format!("{sid}:{}", settings.auth_token.expose()).as_bytes());
        let (_, authorization) = http::header("Authorization", &format!("Basic {credentials}"))
            .map_err(|_| SendError::Config("twilio auth_token is not valid in a header".into()))?;
        let nonblank = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
        Ok(TwilioProvider {
            client: http::client(settings.timeout)?,
            url,
            authorization,
            from: nonblank(settings.from),
            messaging_service_sid: nonblank(settings.messaging_service_sid),
            policy,
            timeout: settings.timeout,
        })
    }

    /// The form fields, in Twilio's documented names.
    fn fields<'a>(
        &'a self,
        msg: &'a OutboundMessage,
    ) -> Result<Vec<(&'a str, &'a str)>, SendError> {
        let body = match &msg.kind {
            MessageKind::Text { body } => body.as_str(),
            MessageKind::WhatsAppTemplate { .. } | MessageKind::WhatsAppText { .. } => {
                return Err(SendError::Config(
                    "the twilio adapter sends SMS text only, not WhatsApp messages".into(),
                ))
            }
        };
        let mut fields = vec![("To", msg.to.as_str())];
        // An explicit sender wins; else the service picks one from its pool.
        match (
            msg.from.as_deref().or(self.from.as_deref()),
            &self.messaging_service_sid,
        ) {
            (Some(from), _) => fields.push(("From", from)),
            (None, Some(service)) => fields.push(("MessagingServiceSid", service.as_str())),
            (None, None) => {
                return Err(SendError::Config(
                    "twilio needs a sender: set from or messaging_service_sid".into(),
                ))
            }
        }
        fields.push(("Body", body));
        Ok(fields)
    }

    async fn send_inner(&self, msg: &OutboundMessage) -> Result<SendReceipt, SendError> {
        check_message(msg)?;
        let body = form::encode(&self.fields(msg)?);
        let key = HeaderValue::from_str(&msg.idempotency_key)
            .map_err(|_| SendError::Config("idempotency key is not valid in a header".into()))?;
        let ((provider_id, status), attempts) = retry::run(&self.policy, "twilio", &msg.to, |_| {
            let req = self
                .client
                .post(self.url.clone())
                .header(AUTHORIZATION, self.authorization.clone())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
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
            provider = "twilio",
            to = %crate::mask::phone(&msg.to),
            sid = %provider_id,
            status = %status,
            attempts,
            "SMS accepted"
        );
        Ok(SendReceipt {
            provider_id,
            status,
            attempts,
        })
    }

    fn outcome(&self, reply: &Reply, to: &str) -> Outcome<(String, String)> {
        let json: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        let text = |k: &str| json.get(k).and_then(Value::as_str).map(str::to_owned);
        if reply.is_success() {
            return match text("sid").filter(|s| !s.is_empty()) {
                Some(sid) => {
                    Outcome::Done((sid, text("status").unwrap_or_else(|| "queued".into())))
                }
                // Twilio took it; a retry would be deduplicated, but there is
                // nothing to say which message it became.
                None => Outcome::Fatal(SendError::Unavailable {
                    message: format!(
                        "HTTP {} without a message sid; the SMS may have been sent",
                        reply.status
                    ),
                }),
            };
        }
        let code = json.get("code").and_then(Value::as_i64);
        let message = text("message")
            .map(|m| scrub(&m, to))
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| http::fallback_message(reply, to));
        if let Some(outcome) = http::transient(reply, &self.policy, &message) {
            return outcome;
        }
        Outcome::Fatal(map_error(reply.status, code, message, reply.retry_after))
    }
}

/// Twilio's documented error codes to our kinds.
fn map_error(
    status: u16,
    code: Option<i64>,
    message: String,
    retry_after: Option<Duration>,
) -> SendError {
    match code {
        // Invalid 'To', cannot route to it, not a mobile number.
        Some(21211 | 21612 | 21614) => SendError::InvalidRecipient { code, message },
        // The recipient replied STOP.
        Some(21610) => SendError::OptedOut { code, message },
        Some(20429) => SendError::RateLimited {
            retry_after,
            message,
        },
        Some(20003) => SendError::Auth { status, message },
        _ if status == 401 || status == 403 => SendError::Auth { status, message },
        _ => SendError::Rejected {
            status,
            code,
            message,
        },
    }
}

impl MessagingProvider for TwilioProvider {
    fn name(&self) -> &'static str {
        "twilio"
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
    use crate::messaging::test_util::{dead_address, text_message, Answer, Seen, StandIn};
    use std::sync::Arc;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    const TOKEN: &str = "s3cr3t-token";
    // base64("AC0123456789abcdef0123456789abcdef:s3cr3t-token"), computed
    // with coreutils `base64`.
    const BASIC: &str = "Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjpzM2NyM3QtdG9rZW4=";
    const TO: &str = "+15551234567";

    fn twilio_error(status: u16, code: i64, message: &str) -> Answer {
        Answer::json(
            status,
            serde_json::json!({
                "code": code,
                "message": message,
                "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
                "status": status
            }),
        )
    }

    /// What Twilio checks before looking at the message itself.
    fn check_request(seen: &Seen) -> Option<Answer> {
        let path = format!("/2010-04-01/Accounts/{SID}/Messages.json");
        if seen.method != axum::http::Method::POST || seen.path != path {
            return Some(twilio_error(
                404,
                20404,
                "The requested resource was not found",
            ));
        }
        if seen.header("authorization") != Some(BASIC) {
            return Some(twilio_error(401, 20003, "Authenticate"));
        }
        if seen.header("content-type") != Some("application/x-www-form-urlencoded") {
            return Some(twilio_error(400, 20001, "Unsupported content type"));
        }
        let form = seen.form();
        let has = |k: &str| crate::messaging::form::get(&form, k).is_some();
        if !has("To") {
            return Some(twilio_error(400, 21604, "A 'To' phone number is required."));
        }
        if !has("From") && !has("MessagingServiceSid") {
            return Some(twilio_error(
                400,
                21603,
                "A 'From' phone number is required.",
            ));
        }
        None
    }

    /// A 201 the way Twilio answers it, echoing the request.
    fn created(seen: &Seen, sid: &str) -> Answer {
        let form = seen.form();
        let get = |k: &str| {
            crate::messaging::form::get(&form, k)
                .unwrap_or_default()
                .to_owned()
        };
        Answer::json(
            201,
            serde_json::json!({
                "account_sid": SID,
                "api_version": "2010-04-01",
                "body": get("Body"),
                "direction": "outbound-api",
                "from": get("From"),
                "messaging_service_sid": null,
                "num_segments": "1",
                "sid": sid,
                "status": "queued",
                "to": get("To"),
                "uri": format!("/2010-04-01/Accounts/{SID}/Messages/{sid}.json")
            }),
        )
    }

    /// Runs the checks, then answers from `script`; `None` in the script
    /// means "201 Created".
    async fn stand_in(script: Vec<Option<Answer>>) -> StandIn {
        StandIn::start(Arc::new(move |seen: &Seen, i: usize| {
            if let Some(refusal) = check_request(seen) {
                return refusal;
            }
            let step = script.get(i).or(script.last()).cloned().flatten();
            step.unwrap_or_else(|| created(seen, "SM0123456789abcdef0123456789abcdef"))
        }))
        .await
    }

    fn settings(base: &str) -> TwilioSettings {
        TwilioSettings {
            base_url: base.into(),
            account_sid: SID.into(),
            auth_token: TOKEN.into(),
            from: Some("+15550100000".into()),
            messaging_service_sid: None,
            timeout: Duration::from_secs(5),
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base_backoff: Duration::from_millis(10),
            ..RetryPolicy::default()
        }
    }

    fn provider(base: &str) -> TwilioProvider {
        TwilioProvider::new(settings(base), policy()).expect("provider")
    }

    #[tokio::test]
    async fn sends_form_with_basic_auth_and_key() {
        let server = stand_in(vec![None]).await;
        let p = provider(&server.base);
        let msg = text_message(TO, "Your code is 1234 & more", "key-1");
        let receipt = p.send(&msg).await.expect("send");
        assert_eq!(
            receipt,
            SendReceipt {
                provider_id: "SM0123456789abcdef0123456789abcdef".into(),
                status: "queued".into(),
                attempts: 1,
            }
        );
        let seen = server.requests();
        assert_eq!(seen.len(), 1);
        let s = &seen[0];
        assert_eq!(s.header("authorization"), Some(BASIC));
        assert_eq!(
            s.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(s.header("i-twilio-idempotency-token"), Some("key-1"));
        let expected: Vec<(String, String)> = [
            ("To", TO),
            ("From", "+15550100000"),
            ("Body", "Your code is 1234 & more"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(s.form(), expected);
    }

    #[tokio::test]
    async fn message_from_and_service_sid() {
        let server = stand_in(vec![None]).await;
        let mut s = settings(&server.base);
        s.from = None;
        s.messaging_service_sid = Some("MG0123".into());
        let p = TwilioProvider::new(s, policy()).expect("provider");
        p.send(&text_message(TO, "a", "k1")).await.expect("send");
        let mut msg = text_message(TO, "b", "k2");
        msg.from = Some("+15550109999".into());
        p.send(&msg).await.expect("send");
        let seen = server.requests();
        let form0 = seen[0].form();
        let form1 = seen[1].form();
        assert_eq!(form::get(&form0, "MessagingServiceSid"), Some("MG0123"));
        assert_eq!(form::get(&form0, "From"), None);
        assert_eq!(form::get(&form1, "From"), Some("+15550109999"));
        assert_eq!(form::get(&form1, "MessagingServiceSid"), None);
    }

    #[tokio::test]
    async fn invalid_number_is_not_retried() {
        let server = stand_in(vec![Some(twilio_error(
            400,
            21211,
            "The 'To' number +15551234567 is not a valid phone number.",
        ))])
        .await;
        let err = provider(&server.base)
            .send(&text_message(TO, "hi", "k"))
            .await
            .expect_err("must fail");
        match &err {
            SendError::InvalidRecipient { code, message } => {
                assert_eq!(*code, Some(21211));
                assert!(!message.contains("5551234567"), "{message}");
                assert!(message.contains("is not a valid phone number"), "{message}");
            }
            other => panic!("expected InvalidRecipient, got {other:?}"),
        }
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn opted_out_and_not_mobile() {
        let server = stand_in(vec![
            Some(twilio_error(
                400,
                21610,
                "Attempt to send to unsubscribed recipient",
            )),
            Some(twilio_error(
                400,
                21614,
                "'To' number is not a valid mobile number",
            )),
            Some(twilio_error(
                400,
                21408,
                "Permission to send an SMS has not been enabled",
            )),
        ])
        .await;
        let p = provider(&server.base);
        let e = p.send(&text_message(TO, "a", "k1")).await;
        assert!(
            matches!(
                e,
                Err(SendError::OptedOut {
                    code: Some(21610),
                    ..
                })
            ),
            "{e:?}"
        );
        let e = p.send(&text_message(TO, "a", "k2")).await;
        assert!(
            matches!(
                e,
                Err(SendError::InvalidRecipient {
                    code: Some(21614),
                    ..
                })
            ),
            "{e:?}"
        );
        let e = p.send(&text_message(TO, "a", "k3")).await;
        assert!(
            matches!(
                e,
                Err(SendError::Rejected {
                    status: 400,
                    code: Some(21408),
                    ..
                })
            ),
            "{e:?}"
        );
        assert_eq!(server.count(), 3);
    }

    #[tokio::test]
    async fn server_errors_are_retried_with_the_same_key() {
        let server = stand_in(vec![
            Some(twilio_error(500, 20500, "Internal Server Error")),
            Some(twilio_error(500, 20500, "Internal Server Error")),
            None,
        ])
        .await;
        let receipt = provider(&server.base)
            .send(&text_message(TO, "hi", "retry-key"))
            .await
            .expect("send");
        assert_eq!(receipt.attempts, 3);
        assert_eq!(receipt.status, "queued");
        let seen = server.requests();
        assert_eq!(seen.len(), 3);
        for s in &seen {
            assert_eq!(s.header("i-twilio-idempotency-token"), Some("retry-key"));
            assert_eq!(s.body, seen[0].body);
        }
    }

    #[tokio::test]
    async fn always_unavailable_gives_up_after_max_attempts() {
        let server = stand_in(vec![Some(Answer::empty(503))]).await;
        let err = provider(&server.base)
            .send(&text_message(TO, "hi", "k"))
            .await
            .expect_err("must fail");
        match err {
            SendError::Unavailable { message } => {
                assert!(message.contains("HTTP 503"), "{message}");
                assert!(message.contains("after 4 attempts"), "{message}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert_eq!(server.count(), 4);
    }

    #[tokio::test]
    async fn wrong_token_is_auth_error() {
        let server = stand_in(vec![None]).await;
        let mut s = settings(&server.base);
        s.auth_token = "wrong".into();
        let p = TwilioProvider::new(s, policy()).expect("provider");
        let e = p.send(&text_message(TO, "hi", "k")).await;
        assert!(
            matches!(e, Err(SendError::Auth { status: 401, .. })),
            "{e:?}"
        );
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn rate_limit_retried_only_with_short_retry_after() {
        let short = twilio_error(429, 20429, "Too Many Requests").header("retry-after", "0");
        let server = stand_in(vec![Some(short), None]).await;
        let r = provider(&server.base)
            .send(&text_message(TO, "hi", "k"))
            .await;
        assert_eq!(r.expect("send").attempts, 2);

        let long = twilio_error(429, 20429, "Too Many Requests").header("retry-after", "60");
        let server = stand_in(vec![Some(long)]).await;
        match provider(&server.base)
            .send(&text_message(TO, "hi", "k"))
            .await
        {
            Err(SendError::RateLimited { retry_after, .. }) => {
                assert_eq!(retry_after, Some(Duration::from_secs(60)))
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
        assert_eq!(server.count(), 1);

        let bare = twilio_error(429, 20429, "Too Many Requests");
        let server = stand_in(vec![Some(bare)]).await;
        let e = provider(&server.base)
            .send(&text_message(TO, "hi", "k"))
            .await;
        assert!(
            matches!(
                e,
                Err(SendError::RateLimited {
                    retry_after: None,
                    ..
                })
            ),
            "{e:?}"
        );
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn timeouts_and_refused_connections_are_retried() {
        let slow = Answer::empty(201).delayed(Duration::from_secs(2));
        let server = stand_in(vec![Some(slow)]).await;
        let mut s = settings(&server.base);
        s.timeout = Duration::from_millis(200);
        let p = TwilioProvider::new(
            s,
            RetryPolicy {
                max_attempts: 2,
                ..policy()
            },
        )
        .expect("provider");
        match p.send(&text_message(TO, "hi", "k")).await {
            Err(SendError::Unavailable { message }) => {
                assert!(message.contains("no answer within"), "{message}")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert_eq!(server.count(), 2);

        let p = provider(&dead_address());
        let e = p.send(&text_message(TO, "hi", "k")).await;
        assert!(matches!(e, Err(SendError::Unavailable { .. })), "{e:?}");
    }

    #[tokio::test]
    async fn success_without_sid_is_not_retried() {
        let server = stand_in(vec![Some(Answer::json(
            201,
            serde_json::json!({"status": "queued"}),
        ))])
        .await;
        let e = provider(&server.base)
            .send(&text_message(TO, "hi", "k"))
            .await;
        assert!(matches!(e, Err(SendError::Unavailable { .. })), "{e:?}");
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn local_refusals_send_nothing() {
        let server = stand_in(vec![None]).await;
        let p = provider(&server.base);
        let e = p.send(&text_message("5551234567", "hi", "k")).await;
        assert!(
            matches!(e, Err(SendError::InvalidRecipient { code: None, .. })),
            "{e:?}"
        );
        let mut msg = text_message(TO, "hi", "k");
        msg.kind = MessageKind::WhatsAppText { body: "hi".into() };
        assert!(matches!(p.send(&msg).await, Err(SendError::Config(_))));
        let mut s = settings(&server.base);
        s.from = None;
        let p = TwilioProvider::new(s, policy()).expect("provider");
        assert!(matches!(
            p.send(&text_message(TO, "hi", "k")).await,
            Err(SendError::Config(_))
        ));
        assert_eq!(server.count(), 0);
    }

    #[test]
    fn bad_settings_are_config_errors() {
        for (sid, token, url) in [
            ("", TOKEN, "http://x"),
            ("AC/../x", TOKEN, "http://x"),
            (SID, "", "http://x"),
            (SID, TOKEN, "ftp://x"),
        ] {
            let s = TwilioSettings {
                account_sid: sid.into(),
                auth_token: token.into(),
                base_url: url.into(),
                ..TwilioSettings::default()
            };
            match TwilioProvider::new(s, policy()) {
                Err(SendError::Config(_)) => {}
                other => panic!("expected Config for {sid:?}/{url:?}, got {other:?}"),
            }
        }
        let s = settings("http://127.0.0.1:1");
        assert!(!format!("{s:?}").contains(TOKEN));
        let p = TwilioProvider::new(s, policy()).expect("provider");
        assert!(!format!("{p:?}").contains(TOKEN));
        assert!(!format!("{p:?}").contains("QUMw"));
    }

    #[test]
    fn default_base_url() {
        let s = TwilioSettings {
            account_sid: SID.into(),
            auth_token: TOKEN.into(),
            ..TwilioSettings::default()
        };
        let p = TwilioProvider::new(s, policy()).expect("provider");
        assert_eq!(
            p.url.as_str(),
            format!("https://api.twilio.com/2010-04-01/Accounts/{SID}/Messages.json")
        );
    }
}
