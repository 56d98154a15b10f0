//! The outbound policy: every public path that makes us text or call a
//! phone (the web chat's switch, escalation, callbacks, breakout links)
//! asks here first. It stops toll fraud and harassment: numbers outside
//! the allowed countries, premium-rate numbers, and more than a budget per
//! client address, per number and in all per hour.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::callback::limits::RateWindow;
use crate::telemetry::names;

/// From `[messaging]` (see `MessagingConfig::outbound_policy`).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundPolicyConfig {
    /// ISO 3166 codes ("ES", "GB") of the countries we text and call;
    /// empty: any.
    pub allowed_countries: Vec<String>,
    /// Refuse premium-rate and shared-cost numbers.
    pub block_premium: bool,
    /// Texts or calls one client address may cause per hour.
    pub per_source_per_hour: u32,
    /// Texts or calls to one number per hour, from public paths.
    pub per_number_per_hour: u32,
    /// Texts or calls from public paths per hour, in all.
    pub global_per_hour: u32,
    /// Switch attempts (verification codes sent) per conversation.
    pub switch_attempts_per_conversation: u32,
}

impl Default for OutboundPolicyConfig {
    fn default() -> Self {
        OutboundPolicyConfig {
            allowed_countries: Vec::new(),
            block_premium: true,
            per_source_per_hour: 10,
            per_number_per_hour: 5,
            global_per_hour: 1000,
            switch_attempts_per_conversation: 3,
        }
    }
}

/// Why a send was refused; `as_str` names it in metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("that number can't be used")]
    NotAPhoneNumber,
    #[error("we don't send to that country")]
    Country,
    #[error("we don't send to premium-rate numbers")]
    Premium,
    #[error("too many messages from here; try again later")]
    SourceBudget,
    #[error("too many messages to that number; try again later")]
    NumberBudget,
    #[error("we are sending too many messages right now; try again later")]
    GlobalBudget,
    #[error("too many attempts in this conversation")]
    ConversationAttempts,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotAPhoneNumber => "not_a_number",
            Refusal::Country => "country",
            Refusal::Premium => "premium",
            Refusal::SourceBudget => "source_budget",
            Refusal::NumberBudget => "number_budget",
            Refusal::GlobalBudget => "global_budget",
            Refusal::ConversationAttempts => "conversation_attempts",
        }
    }
}

/// Who is asking: the client address for web paths, none for calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct Requester<'a> {
    pub source: Option<IpAddr>,
    /// A conversation's id, for the per-conversation attempt count.
    pub conversation: Option<&'a str>,
}

/// Hears each refusal's description.
pub type AlertHook = Box<dyn Fn(&str) + Send + Sync>;

pub struct OutboundPolicy {
    config: OutboundPolicyConfig,
    windows: Mutex<Windows>,
    /// Told of every refusal (the operator console's alert feed).
    alert: std::sync::OnceLock<AlertHook>,
}

struct Windows {
    source: RateWindow,
    number: RateWindow,
    global: RateWindow,
    conversation: RateWindow,
}

const HOUR: Duration = Duration::from_secs(3600);

impl OutboundPolicy {
    pub fn new(config: OutboundPolicyConfig) -> OutboundPolicy {
        let windows = Windows {
            source: RateWindow::new(config.per_source_per_hour, HOUR),
            number: RateWindow::new(config.per_number_per_hour, HOUR),
            global: RateWindow::new(config.global_per_hour, HOUR),
            // A conversation lives far less than a day; a day is "ever".
            conversation: RateWindow::new(
                config.switch_attempts_per_conversation,
                Duration::from_secs(24 * 3600),
            ),
        };
        OutboundPolicy {
            config,
            windows: Mutex::new(windows),
            alert: std::sync::OnceLock::new(),
        }
    }

    /// Where refusals are reported for operators (set once at start).
    pub fn on_refusal(&self, alert: AlertHook) {
        let _ = self.alert.set(alert);
    }

    /// Is `number` (E.164) one we would ever send to? Country and premium
    /// checks only; no budget is used.
    pub fn number_allowed(&self, number: &str) -> Result<(), Refusal> {
        let parsed = phonenumber::parse(None, number).map_err(|_| Refusal::NotAPhoneNumber)?;
        if !phonenumber::is_valid(&parsed) {
            return Err(Refusal::NotAPhoneNumber);
        }
        if !self.config.allowed_countries.is_empty() {
            let country = parsed.country().id().map(|id| id.as_ref().to_string());
            let allowed = country.is_some_and(|c| {
                self.config
                    .allowed_countries
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&c))
            });
            if !allowed {
                return Err(Refusal::Country);
            }
        }
        if self.config.block_premium {
            let kind = parsed.number_type(&phonenumber::metadata::DATABASE);
            if matches!(
                kind,
                phonenumber::Type::PremiumRate | phonenumber::Type::SharedCost
            ) {
                return Err(Refusal::Premium);
            }
        }
        Ok(())
    }

    /// Check and count one text or call to `number` caused by `who` over
    /// `channel` ("sms", "whatsapp", "call"). Nothing is counted when it is
    /// refused.
    pub fn admit(
        &self,
        now: Instant,
        channel: &'static str,
        number: &str,
        who: Requester<'_>,
    ) -> Result<(), Refusal> {
        self.admit_inner(now, channel, number, who, true)
    }

    /// As `admit`, for numbers a flow author chose (a caller's number as
    /// the carrier sent it): one we can't read is left to the provider
    /// (country and premium checks need a valid number); budgets apply.
    pub fn admit_any(
        &self,
        now: Instant,
        channel: &'static str,
        number: &str,
        who: Requester<'_>,
    ) -> Result<(), Refusal> {
        self.admit_inner(now, channel, number, who, false)
    }

    fn admit_inner(
        &self,
        now: Instant,
        channel: &'static str,
        number: &str,
        who: Requester<'_>,
        strict: bool,
    ) -> Result<(), Refusal> {
        let checked = match self.number_allowed(number) {
            Err(Refusal::NotAPhoneNumber) if !strict => Ok(()),
            other => other,
        };
        let result = checked.and_then(|()| {
            let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            let source = who.source.map(|ip| crate::net::source_key(ip).to_string());
            if let Some(c) = who.conversation {
                if !w.conversation.allows(c, now) {
                    return Err(Refusal::ConversationAttempts);
                }
            }
            if let Some(s) = &source {
                if !w.source.allows(s, now) {
                    return Err(Refusal::SourceBudget);
                }
            }
            if !w.number.allows(number, now) {
                return Err(Refusal::NumberBudget);
            }
            if !w.global.allows("all", now) {
                return Err(Refusal::GlobalBudget);
            }
            if let Some(c) = who.conversation {
                w.conversation.record(c, now);
            }
            if let Some(s) = &source {
                w.source.record(s, now);
            }
            w.number.record(number, now);
            w.global.record("all", now);
            Ok(())
        });
        match &result {
            Ok(()) => {
                metrics::counter!(names::OUTBOUND_ADMITTED, "channel" => channel).increment(1);
            }
            Err(refusal) => {
                metrics::counter!(
                    names::OUTBOUND_REFUSED,
                    "channel" => channel,
                    "reason" => refusal.as_str()
                )
                .increment(1);
                tracing::warn!(
                    channel,
                    to = %crate::mask::phone(number),
                    reason = refusal.as_str(),
                    "outbound policy refused a send"
                );
                if let Some(alert) = self.alert.get() {
                    alert(&format!(
                        "Outbound {channel} to {} refused: {}",
                        crate::mask::phone(number),
                        refusal.as_str()
                    ));
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(cfg: OutboundPolicyConfig) -> OutboundPolicy {
        OutboundPolicy::new(cfg)
    }

    #[test]
    fn countries_and_premium_numbers() {
        let p = policy(OutboundPolicyConfig {
            allowed_countries: vec!["ES".into(), "gb".into()],
            ..Default::default()
        });
        assert_eq!(p.number_allowed("+34600123456"), Ok(()));
        assert_eq!(p.number_allowed("+442071838750"), Ok(()));
        assert_eq!(p.number_allowed("+12025550123"), Err(Refusal::Country));
        assert_eq!(p.number_allowed("+34 nope"), Err(Refusal::NotAPhoneNumber));
        // Spain's 803/806/807 and the UK's 09 ranges are premium rate.
        assert_eq!(p.number_allowed("+34806123456"), Err(Refusal::Premium));
        assert_eq!(p.number_allowed("+449098790123"), Err(Refusal::Premium));
        let open = policy(OutboundPolicyConfig {
            block_premium: false,
            ..Default::default()
        });
        assert_eq!(open.number_allowed("+34806123456"), Ok(()));
        assert_eq!(open.number_allowed("+12025550123"), Ok(()));
    }

    #[test]
    fn budgets_per_conversation_source_number_and_in_all() {
        let t0 = Instant::now();
        let p = policy(OutboundPolicyConfig {
            per_source_per_hour: 4,
            per_number_per_hour: 2,
            global_per_hour: 6,
            switch_attempts_per_conversation: 3,
            ..Default::default()
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let who = |c| Requester {
            source: Some(a),
            conversation: Some(c),
        };
        assert_eq!(p.admit(t0, "sms", "+34600000001", who("c1")), Ok(()));
        assert_eq!(p.admit(t0, "sms", "+34600000002", who("c1")), Ok(()));
        assert_eq!(p.admit(t0, "sms", "+34600000003", who("c1")), Ok(()));
        assert_eq!(
            p.admit(t0, "sms", "+34600000004", who("c1")),
            Err(Refusal::ConversationAttempts)
        );
        // A new conversation from the same client: its address's budget.
        assert_eq!(p.admit(t0, "sms", "+34600000004", who("c2")), Ok(()));
        assert_eq!(
            p.admit(t0, "sms", "+34600000005", who("c3")),
            Err(Refusal::SourceBudget)
        );
        // Per number, whoever asks.
        let other = |ip: &str| Requester {
            source: Some(ip.parse().unwrap()),
            conversation: None,
        };
        assert_eq!(
            p.admit(t0, "sms", "+34600000001", other("192.0.2.2")),
            Ok(())
        );
        assert_eq!(
            p.admit(t0, "sms", "+34600000001", other("192.0.2.3")),
            Err(Refusal::NumberBudget)
        );
        // And in all.
        assert_eq!(
            p.admit(t0, "call", "+34600000009", Requester::default()),
            Ok(())
        );
        assert_eq!(
            p.admit(t0, "call", "+34600000010", Requester::default()),
            Err(Refusal::GlobalBudget)
        );
        // An hour later the windows have slid.
        let later = t0 + HOUR + Duration::from_secs(1);
        assert_eq!(p.admit(later, "sms", "+34600000005", who("c3")), Ok(()));
    }

    #[test]
    fn numbers_a_flow_chose_are_left_to_the_provider_when_unreadable() {
        let p = policy(OutboundPolicyConfig {
            allowed_countries: vec!["ES".into()],
            per_number_per_hour: 1,
            ..Default::default()
        });
        let now = Instant::now();
        let who = Requester::default();
        assert_eq!(p.admit_any(now, "sms", "+1555", who), Ok(()));
        assert_eq!(
            p.admit(now, "sms", "+1556", who),
            Err(Refusal::NotAPhoneNumber)
        );
        // Readable ones are still held to the countries and budgets.
        assert_eq!(
            p.admit_any(now, "sms", "+12025550123", who),
            Err(Refusal::Country)
        );
        assert_eq!(
            p.admit_any(now, "sms", "+1555", who),
            Err(Refusal::NumberBudget)
        );
    }

    #[test]
    fn refusals_reach_the_alert_hook() {
        let p = policy(OutboundPolicyConfig {
            allowed_countries: vec!["ES".into()],
            ..Default::default()
        });
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        p.on_refusal(Box::new(move |text| {
            sink.lock().unwrap().push(text.to_string())
        }));
        assert!(p
            .admit(Instant::now(), "sms", "+12025550123", Requester::default())
            .is_err());
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].contains("country"), "{seen:?}");
        assert!(!seen[0].contains("5550123"), "masked: {seen:?}");
    }
}
