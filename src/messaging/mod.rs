//! Outbound chat messages: SMS through Twilio, WhatsApp through Meta's
//! Cloud API, or either through a generic JSON webhook.
//!
//! Every adapter shares one [`RetryPolicy`]: 5xx answers, connection
//! errors and timeouts are retried with backoff, 4xx never (a 429 only when
//! it asks for a short wait). All attempts of one logical send carry the
//! caller's idempotency key; [`Deduped`] answers a repeated key that already
//! succeeded from memory, without a request.
//!
//! Numbers and bodies never reach the logs whole: numbers go through
//! [`crate::mask::phone`], provider error texts are scrubbed of the
//! recipient, and [`OutboundMessage`]'s `Debug` hides both.

pub mod config;
pub mod crypto;
pub mod dedupe;
pub mod form;
mod http;
pub mod inbound;
pub mod opt_out;
pub mod policy;
pub mod retry;
pub mod segments;
pub mod send_log;
pub mod twilio;
pub mod webhook;
pub mod whatsapp;
pub mod whatsapp_template;
pub mod window;

#[cfg(test)]
pub(crate) mod test_util;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use config::{
    build, validate, InboundKeys, MessagingConfig, Providers, Secret, SmsProviderConfig,
    SmsProviderKind, WebhookConfig, WhatsAppConfig,
};
pub use dedupe::{Deduped, IdempotencyGuard};
pub use retry::RetryPolicy;
pub use twilio::{TwilioProvider, TwilioSettings};
pub use webhook::{WebhookProvider, WebhookSettings};
pub use whatsapp::{WhatsAppProvider, WhatsAppSettings};

/// One message to one recipient.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// E.164, e.g. `+15551234567`.
    pub to: String,
    /// Sender override; `None` uses the provider's configured sender.
    pub from: Option<String>,
    pub kind: MessageKind,
    /// Same for every attempt of one logical send, and for a resend of it.
    pub idempotency_key: String,
}

// Numbers and bodies are personal data: Debug shows neither whole.
impl fmt::Debug for OutboundMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundMessage")
            .field("to", &crate::mask::phone(&self.to))
            .field("from", &self.from.as_deref().map(crate::mask::phone))
            .field("kind", &self.kind)
            .field("idempotency_key", &self.idempotency_key)
            .finish()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub enum MessageKind {
    /// Plain SMS text (sent as a WhatsApp text by the WhatsApp adapter).
    Text { body: String },
    /// An approved WhatsApp template; the only kind allowed outside the
    /// 24 h customer-service window.
    WhatsAppTemplate {
        name: String,
        /// Template language code, e.g. `en_US`.
        language: String,
        /// Header, body and button parameters, filled in.
        components: Vec<whatsapp_template::Component>,
    },
    /// Free-form WhatsApp text: only inside the 24 h window.
    WhatsAppText { body: String },
}

impl fmt::Debug for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chars = |s: &str| format!("<{} chars>", s.chars().count());
        match self {
            MessageKind::Text { body } => {
                f.debug_struct("Text").field("body", &chars(body)).finish()
            }
            MessageKind::WhatsAppText { body } => f
                .debug_struct("WhatsAppText")
                .field("body", &chars(body))
                .finish(),
            // Template names and languages are not personal; parameters may be.
            MessageKind::WhatsAppTemplate {
                name,
                language,
                components,
            } => f
                .debug_struct("WhatsAppTemplate")
                .field("name", name)
                .field("language", language)
                .field("components", &format!("<{}>", components.len()))
                .finish(),
        }
    }
}

/// What the provider said when it took the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReceipt {
    /// Twilio message SID, WhatsApp `wamid`, or the webhook's `id`.
    pub provider_id: String,
    /// The provider's status word, e.g. "queued" or "accepted".
    pub status: String,
    /// HTTP attempts this send took (1 when the first one worked).
    pub attempts: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Not a valid or reachable number (Twilio 21211/21612/21614, WhatsApp
    /// 131026, …). Also raised locally for a `to` that is not E.164.
    #[error("invalid recipient{}: {message}", code_suffix(.code))]
    InvalidRecipient { code: Option<i64>, message: String },
    /// The recipient unsubscribed (Twilio 21610, WhatsApp 131050).
    #[error("recipient opted out{}: {message}", code_suffix(.code))]
    OptedOut { code: Option<i64>, message: String },
    /// Free-form WhatsApp message outside the 24 h window (131047): send a
    /// template instead.
    #[error("outside the 24 h window{}: {message}", code_suffix(.code))]
    OutsideWindow { code: Option<i64>, message: String },
    /// Credentials refused (HTTP 401/403, Twilio 20003, Graph 190).
    #[error("authentication failed (HTTP {status}): {message}")]
    Auth { status: u16, message: String },
    /// The provider throttled us and did not ask for a short wait.
    #[error("rate limited{}: {message}", retry_after_suffix(.retry_after))]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    /// Not sent: the recipient texted us STOP on this channel (and not
    /// START since). No request was made ([`opt_out::OptOutGate`]).
    #[error("not sent: the recipient opted out (STOP)")]
    OptOutBlocked,
    /// Any other refusal; not worth retrying unchanged.
    #[error("rejected (HTTP {status}{}): {message}", code_suffix(.code))]
    Rejected {
        status: u16,
        code: Option<i64>,
        message: String,
    },
    /// 5xx, connection errors or timeouts, after every attempt.
    #[error("provider unavailable: {message}")]
    Unavailable { message: String },
    /// Unusable settings, or a message this provider cannot carry (wrong
    /// kind, bad idempotency key). Permanent.
    #[error("messaging configuration: {0}")]
    Config(String),
}

fn code_suffix(code: &Option<i64>) -> String {
    code.map(|c| format!(" [{c}]")).unwrap_or_default()
}

fn retry_after_suffix(after: &Option<Duration>) -> String {
    after
        .map(|d| format!(" (retry after {} s)", d.as_secs_f64()))
        .unwrap_or_default()
}

impl SendError {
    /// Short stable name for metrics and the send log.
    pub fn kind(&self) -> &'static str {
        match self {
            SendError::InvalidRecipient { .. } => "invalid_recipient",
            SendError::OptedOut { .. } | SendError::OptOutBlocked => "opted_out",
            SendError::OutsideWindow { .. } => "outside_window",
            SendError::Auth { .. } => "auth",
            SendError::RateLimited { .. } => "rate_limited",
            SendError::Rejected { .. } => "rejected",
            SendError::Unavailable { .. } => "unavailable",
            SendError::Config(_) => "config",
        }
    }

    /// Whether sending the same message later (same key) may work.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SendError::RateLimited { .. } | SendError::Unavailable { .. }
        )
    }

    /// Stopped here, before any request: the provider never saw it.
    pub fn never_sent(&self) -> bool {
        matches!(self, SendError::OptOutBlocked)
    }

    /// The provider's numeric error code, when it gave one.
    pub fn provider_code(&self) -> Option<i64> {
        match self {
            SendError::InvalidRecipient { code, .. }
            | SendError::OptedOut { code, .. }
            | SendError::OutsideWindow { code, .. }
            | SendError::Rejected { code, .. } => *code,
            _ => None,
        }
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait MessagingProvider: Send + Sync {
    /// "twilio", "whatsapp" or "webhook".
    fn name(&self) -> &'static str;
    fn send<'a>(
        &'a self,
        msg: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<SendReceipt, SendError>>;
}

/// `+` then 7 to 15 digits, the first not 0 (ITU-T E.164).
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Local checks shared by the adapters, before any request.
pub(crate) fn check_message(msg: &OutboundMessage) -> Result<(), SendError> {
    if !is_e164(&msg.to) {
        return Err(SendError::InvalidRecipient {
            code: None,
            message: format!("{} is not an E.164 number", crate::mask::phone(&msg.to)),
        });
    }
    let key = &msg.idempotency_key;
    // It travels in an HTTP header: visible ASCII only, and a sane length.
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SendError::Config(
            "idempotency key must be 1 to 255 visible ASCII characters".into(),
        ));
    }
    Ok(())
}

/// A provider's error text made safe to log: the recipient's number (with
/// or without `+`) masked, and cut to 200 characters.
pub(crate) fn scrub(text: &str, to: &str) -> String {
    let mut out = text.trim().to_owned();
    let digits = to.trim_start_matches('+');
    // The digits-only form is a substring of the `+` form; mask that first.
    for needle in [to, digits] {
        if needle.len() >= 5 && out.contains(needle) {
            out = out.replace(needle, &crate::mask::phone(needle));
        }
    }
    out.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164() {
        for ok in ["+15551234567", "+447700900123", "+4930123"] {
            assert!(is_e164(ok), "{ok}");
        }
        for bad in [
            "15551234567",
            "+1555",
            "+0123456789",
            "+1 555 123 4567",
            "+1234567890123456",
            "",
            "+",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn scrub_masks_both_forms_and_cuts() {
        let s = scrub(
            "The 'To' number +15551234567 is not valid (15551234567)",
            "+15551234567",
        );
        assert!(!s.contains("5551234567"), "{s}");
        assert!(s.contains("+155******67"), "{s}");
        assert_eq!(scrub(&"x".repeat(500), "+15551234567").len(), 200);
    }

    #[test]
    fn debug_hides_number_and_body() {
        let msg = OutboundMessage {
            to: "+15551234567".into(),
            from: Some("+15550100000".into()),
            kind: MessageKind::Text {
                body: "your code is 123456".into(),
            },
            idempotency_key: "k1".into(),
        };
        let s = format!("{msg:?}");
        assert!(!s.contains("5551234567"), "{s}");
        assert!(!s.contains("5550100000"), "{s}");
        assert!(!s.contains("123456"), "{s}");
        assert!(s.contains("<19 chars>"), "{s}");
    }

    #[test]
    fn local_checks() {
        let mut msg = OutboundMessage {
            to: "5551234567".into(),
            from: None,
            kind: MessageKind::Text { body: "hi".into() },
            idempotency_key: "k".into(),
        };
        match check_message(&msg) {
            Err(e @ SendError::InvalidRecipient { .. }) => {
                assert!(!e.to_string().contains("5551234567"), "{e}")
            }
            other => panic!("expected InvalidRecipient, got {other:?}"),
        }
        msg.to = "+15551234567".into();
        assert!(check_message(&msg).is_ok());
        for key in ["", "has space", "new\nline"] {
            msg.idempotency_key = key.into();
            assert!(matches!(check_message(&msg), Err(SendError::Config(_))));
        }
    }

    #[test]
    fn error_display_and_helpers() {
        let e = SendError::Rejected {
            status: 400,
            code: Some(21408),
            message: "no permission".into(),
        };
        assert_eq!(e.to_string(), "rejected (HTTP 400 [21408]): no permission");
        assert_eq!(e.provider_code(), Some(21408));
        assert!(!e.is_transient());
        let e = SendError::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
            message: "slow down".into(),
        };
        assert_eq!(e.to_string(), "rate limited (retry after 30 s): slow down");
        assert!(e.is_transient());
        assert_eq!(e.kind(), "rate_limited");
    }
}
