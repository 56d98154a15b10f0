//! The `[messaging]` config section and building providers from it.
//!
//! ```toml
//! [messaging]
//! max_attempts = 4
//! backoff_ms = 200
//! [messaging.sms]
//! provider = "twilio"            # or "webhook": uses [messaging.webhook]
//! account_sid = "AC…"
//! auth_token_env = "TWILIO_AUTH_TOKEN"   # or auth_token = "…"
//! from = "+15550100000"          # or messaging_service_sid = "MG…"
//! [messaging.whatsapp]
//! phone_number_id = "1234567890"
//! access_token_env = "WHATSAPP_TOKEN"
//! ```
//!
//! Secrets come from the file or from the environment (`*_env`, read when
//! validating and building, i.e. at start), never both.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::dedupe::{Deduped, IdempotencyGuard, DEFAULT_CAPACITY};
use super::retry::RetryPolicy;
use super::{
    http, is_e164, twilio, whatsapp, MessagingProvider, SendError, TwilioProvider, TwilioSettings,
    WebhookProvider, WebhookSettings, WhatsAppProvider, WhatsAppSettings,
};

const DEFAULT_TIMEOUT_MS: u64 = 10_000;
const MAX_ATTEMPTS: std::ops::RangeInclusive<u32> = 1..=10;
const MAX_BACKOFF_MS: u64 = 60_000;

pub use crate::secret::Secret;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MessagingConfig {
    /// Attempts per send, the first included.
    pub max_attempts: u32,
    /// First retry wait; doubled per retry, with jitter.
    pub backoff_ms: u64,
    /// Successful sends remembered per provider for idempotency.
    pub dedupe_capacity: usize,
    pub sms: Option<SmsProviderConfig>,
    pub whatsapp: Option<WhatsAppConfig>,
    /// The target of `sms.provider = "webhook"`.
    pub webhook: Option<WebhookConfig>,
    /// The outbound policy for texts and calls caused from public paths
    /// (web chat switch, escalation, callbacks, breakout links): see
    /// `messaging::policy`.
    pub allowed_countries: Vec<String>,
    pub block_premium: bool,
    pub per_source_per_hour: u32,
    pub per_number_per_hour: u32,
    pub global_per_hour: u32,
    pub switch_attempts_per_conversation: u32,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        let policy = super::policy::OutboundPolicyConfig::default();
        MessagingConfig {
            max_attempts: 4,
            backoff_ms: 200,
            dedupe_capacity: DEFAULT_CAPACITY,
            sms: None,
            whatsapp: None,
            webhook: None,
            allowed_countries: policy.allowed_countries,
            block_premium: policy.block_premium,
            per_source_per_hour: policy.per_source_per_hour,
            per_number_per_hour: policy.per_number_per_hour,
            global_per_hour: policy.global_per_hour,
            switch_attempts_per_conversation: policy.switch_attempts_per_conversation,
        }
    }
}

impl MessagingConfig {
    pub fn outbound_policy(&self) -> super::policy::OutboundPolicyConfig {
        super::policy::OutboundPolicyConfig {
            allowed_countries: self.allowed_countries.clone(),
            block_premium: self.block_premium,
            per_source_per_hour: self.per_source_per_hour,
            per_number_per_hour: self.per_number_per_hour,
            global_per_hour: self.global_per_hour,
            switch_attempts_per_conversation: self.switch_attempts_per_conversation,
        }
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            base_backoff: Duration::from_millis(self.backoff_ms),
            ..RetryPolicy::default()
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmsProviderKind {
    #[default]
    Twilio,
    Webhook,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SmsProviderConfig {
    pub provider: SmsProviderKind,
    /// Twilio only; defaults to `https://api.twilio.com`.
    pub base_url: Option<String>,
    pub account_sid: Option<String>,
    pub auth_token: Option<Secret>,
    /// Name of the environment variable holding the auth token.
    pub auth_token_env: Option<String>,
    /// Default sender, for either provider.
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub timeout_ms: u64,
    /// The URL Twilio posts inbound SMS to, exactly as set in its console
    /// (the signature covers it). Default: `<public_base_url>/hooks/twilio/sms`.
    pub webhook_url: Option<String>,
}

impl Default for SmsProviderConfig {
    fn default() -> Self {
        SmsProviderConfig {
            provider: SmsProviderKind::Twilio,
            base_url: None,
            account_sid: None,
            auth_token: None,
            auth_token_env: None,
            from: None,
            messaging_service_sid: None,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            webhook_url: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WhatsAppConfig {
    pub base_url: String,
    pub api_version: String,
    pub phone_number_id: String,
    pub access_token: Option<Secret>,
    pub access_token_env: Option<String>,
    pub timeout_ms: u64,
    /// The Meta app secret: inbound webhooks are signed with it
    /// (`X-Hub-Signature-256`). Unset: inbound WhatsApp is refused.
    pub app_secret: Option<Secret>,
    pub app_secret_env: Option<String>,
    /// What Meta sends in the GET verification handshake.
    pub verify_token: Option<Secret>,
    pub verify_token_env: Option<String>,
    /// The approved template sent when a chat moves to WhatsApp (outside
    /// the 24 h window only templates may be sent); its body may take one
    /// parameter, the chat's title.
    pub welcome_template: Option<String>,
    pub welcome_template_language: String,
    /// The approved authentication template that carries the code a web
    /// visitor types back before their chat moves to WhatsApp (its body
    /// takes one parameter, the code); unset: visitors can't switch to
    /// WhatsApp from the web chat.
    pub code_template: Option<String>,
}

impl Default for WhatsAppConfig {
    fn default() -> Self {
        WhatsAppConfig {
            base_url: whatsapp::DEFAULT_BASE_URL.into(),
            api_version: whatsapp::DEFAULT_API_VERSION.into(),
            phone_number_id: String::new(),
            access_token: None,
            access_token_env: None,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            app_secret: None,
            app_secret_env: None,
            verify_token: None,
            verify_token_env: None,
            welcome_template: None,
            welcome_template_language: "en".into(),
            code_template: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    pub url: String,
    /// Sent with every request, e.g. `Authorization`.
    pub headers: BTreeMap<String, Secret>,
    /// HMAC key for `X-Crossline-Signature` (required).
    pub secret: Option<Secret>,
    pub secret_env: Option<String>,
    pub timeout_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: String::new(),
            headers: BTreeMap::new(),
            secret: None,
            secret_env: None,
            timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }
}

/// The configured channels, each behind its own [`IdempotencyGuard`].
#[derive(Clone, Default)]
pub struct Providers {
    pub sms: Option<Arc<dyn MessagingProvider>>,
    pub whatsapp: Option<Arc<dyn MessagingProvider>>,
    /// The guards, to seed from the send log at start.
    pub sms_guard: Option<Arc<IdempotencyGuard>>,
    pub whatsapp_guard: Option<Arc<IdempotencyGuard>>,
    /// What inbound webhooks are checked against.
    pub inbound: InboundKeys,
}

/// Secrets and settings for receiving messages.
#[derive(Clone, Default)]
pub struct InboundKeys {
    /// Twilio signs with the account's auth token.
    pub twilio_auth_token: Option<Secret>,
    pub twilio_webhook_url: Option<String>,
    pub whatsapp_app_secret: Option<Secret>,
    pub whatsapp_verify_token: Option<Secret>,
    pub whatsapp_welcome_template: Option<(String, String)>,
    pub whatsapp_code_template: Option<(String, String)>,
}

impl fmt::Debug for Providers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Providers")
            .field("sms", &self.sms.as_ref().map(|p| p.name()))
            .field("whatsapp", &self.whatsapp.as_ref().map(|p| p.name()))
            .finish()
    }
}

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A secret from the file or the environment. `Err` is (key, message).
fn resolve_secret(
    prefix: &str,
    field: &str,
    value: &Option<Secret>,
    env_name: &Option<String>,
    env: Env<'_>,
) -> Result<Option<Secret>, (String, String)> {
    let key = format!("{prefix}.{field}");
    match (value, env_name) {
        (Some(_), Some(_)) => Err((key, format!("set {field} or {field}_env, not both"))),
        (Some(v), None) if v.expose().is_empty() => Err((key, "must not be empty".into())),
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(name)) => match env(name).filter(|v| !v.is_empty()) {
            Some(v) => Ok(Some(Secret::from(v))),
            None => Err((
                format!("{key}_env"),
                format!("environment variable {name:?} is not set or empty"),
            )),
        },
        (None, None) => Ok(None),
    }
}

fn required_secret(
    prefix: &str,
    field: &str,
    value: &Option<Secret>,
    env_name: &Option<String>,
    env: Env<'_>,
) -> Result<Secret, (String, String)> {
    resolve_secret(prefix, field, value, env_name, env)?.ok_or_else(|| {
        (
            format!("{prefix}.{field}"),
            format!("required (or {field}_env naming an environment variable)"),
        )
    })
}

fn alphanumeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Problems as (key path, message), e.g. ("messaging.sms.account_sid",
/// "required"). Empty when the section is usable. Reads `*_env` variables.
pub fn validate(cfg: &MessagingConfig) -> Vec<(String, String)> {
    validate_with(cfg, &process_env)
}

fn validate_with(cfg: &MessagingConfig, env: Env<'_>) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    let mut err = |key: &str, msg: String| errors.push((key.to_owned(), msg));

    if !MAX_ATTEMPTS.contains(&cfg.max_attempts) {
        err(
            "messaging.max_attempts",
            format!("must be {}..={}", MAX_ATTEMPTS.start(), MAX_ATTEMPTS.end()),
        );
    }
    if cfg.backoff_ms > MAX_BACKOFF_MS {
        err(
            "messaging.backoff_ms",
            format!("must be at most {MAX_BACKOFF_MS}"),
        );
    }
    if cfg.dedupe_capacity == 0 {
        err("messaging.dedupe_capacity", "must be greater than 0".into());
    }
    for (i, c) in cfg.allowed_countries.iter().enumerate() {
        if c.to_ascii_uppercase()
            .parse::<phonenumber::country::Id>()
            .is_err()
        {
            err(
                &format!("messaging.allowed_countries[{i}]"),
                format!("{c:?} is not an ISO 3166 country code like \"ES\""),
            );
        }
    }
    for (key, v) in [
        ("per_source_per_hour", cfg.per_source_per_hour),
        ("per_number_per_hour", cfg.per_number_per_hour),
        ("global_per_hour", cfg.global_per_hour),
        (
            "switch_attempts_per_conversation",
            cfg.switch_attempts_per_conversation,
        ),
    ] {
        if v == 0 {
            err(&format!("messaging.{key}"), "must be at least 1".into());
        }
    }

    let sms_is_webhook = cfg
        .sms
        .as_ref()
        .is_some_and(|s| s.provider == SmsProviderKind::Webhook);
    if let Some(sms) = &cfg.sms {
        let p = "messaging.sms";
        if let Some(from) = sms.from.as_deref() {
            // Alphanumeric sender IDs and short codes are fine; a number must be E.164.
            if from.trim().is_empty() || (from.starts_with('+') && !is_e164(from)) {
                err(
                    &format!("{p}.from"),
                    "must be an E.164 number or a sender ID".into(),
                );
            }
        }
        if sms.timeout_ms == 0 {
            err(&format!("{p}.timeout_ms"), "must be greater than 0".into());
        }
        match sms.provider {
            SmsProviderKind::Twilio => {
                if let Some(url) = &sms.base_url {
                    if let Err(e) = http::parse_url(url) {
                        err(&format!("{p}.base_url"), e);
                    }
                }
                match sms.account_sid.as_deref() {
                    Some(sid) if alphanumeric(sid) => {}
                    Some(_) => err(
                        &format!("{p}.account_sid"),
                        "must be letters and digits (AC…)".into(),
                    ),
                    None => err(&format!("{p}.account_sid"), "required".into()),
                }
                if let Err((k, m)) =
                    required_secret(p, "auth_token", &sms.auth_token, &sms.auth_token_env, env)
                {
                    err(&k, m);
                }
                match sms.messaging_service_sid.as_deref() {
                    Some(mss) if !alphanumeric(mss) => err(
                        &format!("{p}.messaging_service_sid"),
                        "must be letters and digits (MG…)".into(),
                    ),
                    None if sms.from.is_none() => err(
                        &format!("{p}.from"),
                        "set from or messaging_service_sid".into(),
                    ),
                    _ => {}
                }
            }
            SmsProviderKind::Webhook => {
                let twilio_only = [
                    ("base_url", sms.base_url.is_some()),
                    ("account_sid", sms.account_sid.is_some()),
                    ("auth_token", sms.auth_token.is_some()),
                    ("auth_token_env", sms.auth_token_env.is_some()),
                    ("messaging_service_sid", sms.messaging_service_sid.is_some()),
                ];
                for (field, set) in twilio_only {
                    if set {
                        err(
                            &format!("{p}.{field}"),
                            "only used with provider = \"twilio\"".into(),
                        );
                    }
                }
                if cfg.webhook.is_none() {
                    err(
                        "messaging.webhook",
                        "required when messaging.sms.provider = \"webhook\"".into(),
                    );
                }
            }
        }
    }

    if let Some(wa) = &cfg.whatsapp {
        let p = "messaging.whatsapp";
        if let Err(e) = http::parse_url(&wa.base_url) {
            err(&format!("{p}.base_url"), e);
        }
        if !whatsapp::is_api_version(wa.api_version.trim()) {
            err(
                &format!("{p}.api_version"),
                "must look like \"v21.0\"".into(),
            );
        }
        let id = wa.phone_number_id.trim();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            err(
                &format!("{p}.phone_number_id"),
                "required: the numeric phone number ID, not the number".into(),
            );
        }
        if let Err((k, m)) = required_secret(
            p,
            "access_token",
            &wa.access_token,
            &wa.access_token_env,
            env,
        ) {
            err(&k, m);
        }
        if wa.timeout_ms == 0 {
            err(&format!("{p}.timeout_ms"), "must be greater than 0".into());
        }
    }

    if let Some(hook) = &cfg.webhook {
        let p = "messaging.webhook";
        if !sms_is_webhook {
            err(
                p,
                "not used: set messaging.sms.provider = \"webhook\"".into(),
            );
        }
        if let Err(e) = http::parse_url(&hook.url) {
            err(&format!("{p}.url"), e);
        }
        for (name, value) in &hook.headers {
            if let Err(e) = http::header(name, value.expose()) {
                err(&format!("{p}.headers.{name}"), e);
            }
        }
        // Its requests carry message texts and numbers: always signed.
        if let Err((k, m)) = required_secret(p, "secret", &hook.secret, &hook.secret_env, env) {
            err(&k, m);
        }
        if hook.timeout_ms == 0 {
            err(&format!("{p}.timeout_ms"), "must be greater than 0".into());
        }
    }
    errors
}

/// Builds the configured providers, each wrapped in [`Deduped`]. Fails on
/// anything [`validate`] reports. Nothing is sent.
pub fn build(cfg: &MessagingConfig) -> Result<Providers, SendError> {
    build_with(cfg, &process_env)
}

fn build_with(cfg: &MessagingConfig, env: Env<'_>) -> Result<Providers, SendError> {
    let errors = validate_with(cfg, env);
    if !errors.is_empty() {
        let list: Vec<String> = errors.iter().map(|(k, m)| format!("{k}: {m}")).collect();
        return Err(SendError::Config(list.join("; ")));
    }
    let config_err = |(k, m): (String, String)| SendError::Config(format!("{k}: {m}"));
    let policy = cfg.retry_policy();
    let mut out = Providers::default();

    if let Some(sms) = &cfg.sms {
        let guard = Arc::new(IdempotencyGuard::new(cfg.dedupe_capacity));
        let timeout = Duration::from_millis(sms.timeout_ms);
        let provider: Arc<dyn MessagingProvider> = match sms.provider {
            SmsProviderKind::Twilio => {
                let settings = TwilioSettings {
                    base_url: sms
                        .base_url
                        .clone()
                        .unwrap_or_else(|| twilio::DEFAULT_BASE_URL.into()),
                    account_sid: sms.account_sid.clone().unwrap_or_default(),
                    auth_token: required_secret(
                        "messaging.sms",
                        "auth_token",
                        &sms.auth_token,
                        &sms.auth_token_env,
                        env,
                    )
                    .map_err(config_err)?,
                    from: sms.from.clone(),
                    messaging_service_sid: sms.messaging_service_sid.clone(),
                    timeout,
                };
                out.inbound.twilio_auth_token = Some(settings.auth_token.clone());
                out.inbound.twilio_webhook_url = sms.webhook_url.clone();
                let p = TwilioProvider::new(settings, policy)?;
                Arc::new(Deduped::with_guard(p, guard.clone()))
            }
            SmsProviderKind::Webhook => {
                let hook = cfg.webhook.as_ref().ok_or_else(|| {
                    SendError::Config("messaging.webhook: required for the webhook provider".into())
                })?;
                let p = webhook_provider(hook, sms.from.clone(), policy, env)?;
                Arc::new(Deduped::with_guard(p, guard.clone()))
            }
        };
        out.sms = Some(provider);
        out.sms_guard = Some(guard);
    }

    if let Some(wa) = &cfg.whatsapp {
        let guard = Arc::new(IdempotencyGuard::new(cfg.dedupe_capacity));
        let settings = WhatsAppSettings {
            base_url: wa.base_url.clone(),
            api_version: wa.api_version.trim().to_owned(),
            phone_number_id: wa.phone_number_id.trim().to_owned(),
            access_token: required_secret(
                "messaging.whatsapp",
                "access_token",
                &wa.access_token,
                &wa.access_token_env,
                env,
            )
            .map_err(config_err)?,
            timeout: Duration::from_millis(wa.timeout_ms),
        };
        out.inbound.whatsapp_app_secret = resolve_secret(
            "messaging.whatsapp",
            "app_secret",
            &wa.app_secret,
            &wa.app_secret_env,
            env,
        )
        .map_err(config_err)?;
        out.inbound.whatsapp_verify_token = resolve_secret(
            "messaging.whatsapp",
            "verify_token",
            &wa.verify_token,
            &wa.verify_token_env,
            env,
        )
        .map_err(config_err)?;
        out.inbound.whatsapp_welcome_template = wa
            .welcome_template
            .clone()
            .map(|t| (t, wa.welcome_template_language.clone()));
        out.inbound.whatsapp_code_template = wa
            .code_template
            .clone()
            .map(|t| (t, wa.welcome_template_language.clone()));
        let p = WhatsAppProvider::new(settings, policy)?;
        out.whatsapp = Some(Arc::new(Deduped::with_guard(p, guard.clone())));
        out.whatsapp_guard = Some(guard);
    }
    Ok(out)
}

fn webhook_provider(
    hook: &WebhookConfig,
    from: Option<String>,
    policy: RetryPolicy,
    env: Env<'_>,
) -> Result<WebhookProvider, SendError> {
    let secret = resolve_secret(
        "messaging.webhook",
        "secret",
        &hook.secret,
        &hook.secret_env,
        env,
    )
    .map_err(|(k, m)| SendError::Config(format!("{k}: {m}")))?;
    let settings = WebhookSettings {
        url: hook.url.clone(),
        headers: hook.headers.clone(),
        secret,
        from,
        timeout: Duration::from_millis(hook.timeout_ms),
    };
    WebhookProvider::new(settings, policy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::test_util::{text_message, Answer, Seen, StandIn};
    use crate::messaging::{MessageKind, OutboundMessage};

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default)]
        messaging: MessagingConfig,
    }

    fn parse(text: &str) -> Result<MessagingConfig, toml::de::Error> {
        toml::from_str::<Doc>(text).map(|d| d.messaging)
    }

    fn keys(errors: &[(String, String)]) -> Vec<&str> {
        errors.iter().map(|(k, _)| k.as_str()).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const SID: &str = "AC0123456789abcdef0123456789abcdef";

    #[test]
    fn example_section_parses_with_env_token() {
        // Unique per process so parallel test binaries cannot collide.
        let var = format!("CROSSLINE_TEST_MESSAGING_WA_TOKEN_{}", std::process::id());
        std::env::set_var(&var, "EAAG-env-token-value");
        let text = format!(
            r#"
            [messaging]
            max_attempts = 4
            backoff_ms = 200
            [messaging.sms]
            provider = "twilio"
            base_url = "https://api.twilio.com"
            account_sid = "{SID}"
            auth_token = "twilio-file-token"
            from = "+15550100000"
            [messaging.whatsapp]
            base_url = "https://graph.facebook.com"
            api_version = "v21.0"
            phone_number_id = "1234567890"
            access_token_env = "{var}"
            "#
        );
        let cfg = parse(&text).expect("parse");
        assert_eq!(cfg.max_attempts, 4);
        assert_eq!(cfg.backoff_ms, 200);
        let sms = cfg.sms.as_ref().expect("sms");
        assert_eq!(sms.provider, SmsProviderKind::Twilio);
        assert_eq!(sms.account_sid.as_deref(), Some(SID));
        assert_eq!(sms.auth_token, Some(Secret::from("twilio-file-token")));
        assert_eq!(sms.from.as_deref(), Some("+15550100000"));
        assert_eq!(sms.timeout_ms, 10_000);
        let wa = cfg.whatsapp.as_ref().expect("whatsapp");
        assert_eq!(wa.access_token_env.as_deref(), Some(var.as_str()));
        assert!(validate(&cfg).is_empty(), "{:?}", validate(&cfg));

        let providers = build(&cfg).expect("build");
        assert_eq!(providers.sms.as_ref().map(|p| p.name()), Some("twilio"));
        assert_eq!(
            providers.whatsapp.as_ref().map(|p| p.name()),
            Some("whatsapp")
        );
        assert!(providers.sms_guard.is_some() && providers.whatsapp_guard.is_some());
        assert_eq!(
            format!("{providers:?}"),
            "Providers { sms: Some(\"twilio\"), whatsapp: Some(\"whatsapp\") }"
        );

        let debug = format!("{cfg:?}");
        assert!(!debug.contains("twilio-file-token"), "{debug}");
        assert!(!debug.contains("EAAG-env-token-value"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        std::env::remove_var(&var);
    }

    #[test]
    fn the_brief_example_parses_verbatim() {
        let cfg = parse(
            r#"
            [messaging]
            max_attempts = 4
            backoff_ms = 200
            [messaging.sms]
            provider = "twilio"
            base_url = "https://api.twilio.com"
            account_sid = "AC..."
            auth_token = "..."          # or auth_token_env = "TWILIO_AUTH_TOKEN"
            from = "+15550100000"
            [messaging.whatsapp]
            base_url = "https://graph.facebook.com"
            api_version = "v21.0"
            phone_number_id = "1234567890"
            access_token_env = "WHATSAPP_TOKEN"
            "#,
        )
        .expect("parse");
        // Placeholders are caught by validation, by key.
        let errors = validate_with(&cfg, &no_env);
        assert_eq!(
            keys(&errors),
            [
                "messaging.sms.account_sid",
                "messaging.whatsapp.access_token_env"
            ]
        );
    }

    #[test]
    fn defaults() {
        let cfg = parse("").expect("empty");
        assert_eq!(cfg, MessagingConfig::default());
        assert!(validate(&cfg).is_empty());
        let p = build(&cfg).expect("build");
        assert!(p.sms.is_none() && p.whatsapp.is_none());
        assert_eq!(cfg.retry_policy(), RetryPolicy::default());
        let wa = parse("[messaging.whatsapp]\nphone_number_id = \"1\"\naccess_token = \"t\"")
            .expect("parse")
            .whatsapp
            .expect("whatsapp");
        assert_eq!(wa.base_url, "https://graph.facebook.com");
        assert_eq!(wa.api_version, "v21.0");
    }

    #[test]
    fn unknown_keys_rejected() {
        for text in [
            "[messaging]\nretries = 3",
            "[messaging.sms]\nprovider = \"twilio\"\ntoken = \"x\"",
            "[messaging.sms]\nprovider = \"nexmo\"",
            "[messaging.whatsapp]\nphone = \"+1555\"",
            "[messaging.webhook]\nurl = \"http://x\"\nsign = true",
            "[messaging.telegram]\ntoken = \"x\"",
        ] {
            assert!(parse(text).is_err(), "accepted: {text}");
        }
    }

    #[test]
    fn problems_are_reported_by_key() {
        let cfg = parse(
            r#"
            [messaging]
            max_attempts = 0
            backoff_ms = 100000
            dedupe_capacity = 0
            [messaging.sms]
            base_url = "api.twilio.com"
            account_sid = "AC/x"
            auth_token = "a"
            auth_token_env = "B"
            timeout_ms = 0
            [messaging.whatsapp]
            api_version = "latest"
            phone_number_id = "+15550100000"
            [messaging.webhook]
            url = "http://127.0.0.1:9/hook"
            headers = { "Bad Name" = "x" }
            secret_env = "CROSSLINE_TEST_SURELY_UNSET_VAR"
            "#,
        )
        .expect("parse");
        assert_eq!(
            keys(&validate_with(&cfg, &no_env)),
            [
                "messaging.max_attempts",
                "messaging.backoff_ms",
                "messaging.dedupe_capacity",
                "messaging.sms.timeout_ms",
                "messaging.sms.base_url",
                "messaging.sms.account_sid",
                "messaging.sms.auth_token",
                "messaging.sms.from",
                "messaging.whatsapp.api_version",
                "messaging.whatsapp.phone_number_id",
                "messaging.whatsapp.access_token",
                "messaging.webhook",
                "messaging.webhook.headers.Bad Name",
                "messaging.webhook.secret_env",
            ]
        );
        match build_with(&cfg, &no_env) {
            Err(SendError::Config(msg)) => {
                assert!(msg.contains("messaging.sms.account_sid"), "{msg}")
            }
            other => panic!("expected Config, got {other:?}"),
        }
    }

    #[test]
    fn webhook_provider_rules() {
        let cfg = parse(
            r#"
            [messaging.sms]
            provider = "webhook"
            account_sid = "AC1"
            "#,
        )
        .expect("parse");
        assert_eq!(
            keys(&validate_with(&cfg, &no_env)),
            ["messaging.sms.account_sid", "messaging.webhook"]
        );
        let bad_from = parse("[messaging.sms]\nprovider = \"webhook\"\nfrom = \"+1\"\n[messaging.webhook]\nurl = \"http://x\"")
            .expect("parse");
        // A webhook with no secret is refused too: what it posts is signed.
        assert_eq!(
            keys(&validate_with(&bad_from, &no_env)),
            ["messaging.sms.from", "messaging.webhook.secret"]
        );
    }

    #[tokio::test]
    async fn webhook_sms_end_to_end_with_env_secret() {
        let env = |name: &str| (name == "HOOK_SECRET").then(|| "s3cret".to_owned());
        let server = StandIn::start(Arc::new(|seen: &Seen, _| {
            let sig = seen.header("x-crossline-signature").unwrap_or_default();
            let ts = seen.header("x-crossline-timestamp").unwrap_or_default();
            let now = crate::messaging::crypto::unix_now();
            if crate::messaging::crypto::verify_timed_signature(b"s3cret", &seen.body, ts, sig, now)
            {
                Answer::json(200, serde_json::json!({"id": "hook-1"}))
            } else {
                Answer::empty(401)
            }
        }))
        .await;
        let cfg = parse(&format!(
            r#"
            [messaging]
            backoff_ms = 10
            [messaging.sms]
            provider = "webhook"
            from = "CROSSLINE"
            [messaging.webhook]
            url = "{}/sms"
            secret_env = "HOOK_SECRET"
            "#,
            server.base
        ))
        .expect("parse");
        assert!(validate_with(&cfg, &env).is_empty());
        let providers = build_with(&cfg, &env).expect("build");
        let sms = providers.sms.expect("sms");
        assert_eq!(sms.name(), "webhook");
        let msg = text_message("+15551234567", "hi", "cfg-key");
        let first = sms.send(&msg).await.expect("send");
        assert_eq!(first.provider_id, "hook-1");
        assert_eq!(server.requests()[0].json()["from"], "CROSSLINE");
        // Deduped: the second send of the key makes no request.
        let second = sms.send(&msg).await.expect("send");
        assert_eq!(first, second);
        assert_eq!(server.count(), 1);
        assert_eq!(
            providers.sms_guard.and_then(|g| g.get("cfg-key")),
            Some(first)
        );
    }

    #[tokio::test]
    async fn built_providers_dedupe_and_do_not_cache_failures() {
        // A Cloud API stand-in: fails the first time, then accepts.
        let server = StandIn::start(Arc::new(|_: &Seen, i: usize| {
            if i == 0 {
                Answer::json(
                    400,
                    serde_json::json!({"error": {"message": "(#132001) Template name does not exist in the translation", "type": "OAuthException", "code": 132001}}),
                )
            } else {
                Answer::json(
                    200,
                    serde_json::json!({"messaging_product": "whatsapp", "contacts": [], "messages": [{"id": "wamid.1"}]}),
                )
            }
        }))
        .await;
        let cfg = MessagingConfig {
            backoff_ms: 10,
            whatsapp: Some(WhatsAppConfig {
                base_url: server.base.clone(),
                phone_number_id: "42".into(),
                access_token: Some("tok".into()),
                ..WhatsAppConfig::default()
            }),
            ..MessagingConfig::default()
        };
        let wa = build(&cfg).expect("build").whatsapp.expect("whatsapp");
        let msg = OutboundMessage {
            to: "+15551234567".into(),
            from: None,
            kind: MessageKind::WhatsAppTemplate {
                name: "hello_world".into(),
                language: "en_US".into(),
                components: Vec::new(),
            },
            idempotency_key: "dedupe-key".into(),
        };
        let e = wa.send(&msg).await;
        assert!(
            matches!(
                e,
                Err(SendError::Rejected {
                    code: Some(132001),
                    ..
                })
            ),
            "{e:?}"
        );
        let ok = wa.send(&msg).await.expect("second try goes out");
        let again = wa.send(&msg).await.expect("cached");
        assert_eq!(ok, again);
        assert_eq!(ok.provider_id, "wamid.1");
        assert_eq!(server.count(), 2, "failure not cached, success cached");
    }
}
