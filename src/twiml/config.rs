//! `[twiml]` (the account webhook apps sign with, limits, the error
//! prompt) and a route's or node's `app`.

use serde::Deserialize;

use crate::secret::Secret;

/// What every webhook app shares.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TwimlConfig {
    /// The `AccountSid` apps are sent: "AC" and 32 hex digits.
    pub account_sid: String,
    /// Keys `X-Twilio-Signature` on every request to an app.
    pub auth_token: Option<Secret>,
    pub auth_token_env: Option<String>,
    /// An app that hasn't answered in full after this long has failed.
    pub timeout_ms: u64,
    /// Largest TwiML document accepted.
    pub max_document_bytes: usize,
    /// Largest audio file a `<Play>` may fetch.
    pub max_play_bytes: usize,
    /// HTTP redirects followed per request.
    pub max_redirects: usize,
    /// Said (then the call hangs up) when an app fails with no fallback.
    pub error_message: String,
    pub error_language: String,
    /// Hosts a Calls API `To` may name as `sip:user@host` (`host` any
    /// port, `host:port` that one); numbers go out through the trunk.
    pub api_sip_hosts: Vec<String>,
}

impl Default for TwimlConfig {
    fn default() -> Self {
        TwimlConfig {
            account_sid: String::new(),
            auth_token: None,
            auth_token_env: None,
            timeout_ms: 5_000,
            max_document_bytes: 1_000_000,
            max_play_bytes: 10_000_000,
            max_redirects: 10,
            error_message: "We are sorry, an application error has occurred. Goodbye.".into(),
            error_language: "en".into(),
            api_sip_hosts: Vec::new(),
        }
    }
}

impl TwimlConfig {
    pub fn auth_token(&self) -> Result<Option<String>, String> {
        crate::config::secret("auth_token", &self.auth_token, &self.auth_token_env)
    }

    /// Every problem with the section, as (key, message), for a config
    /// that runs apps.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !is_account_sid(&self.account_sid) {
            out.push((
                "account_sid",
                "webhook apps need an account SID: \"AC\" and 32 hex digits".into(),
            ));
        }
        match self.auth_token() {
            Ok(Some(_)) => {}
            Ok(None) => out.push((
                "auth_token",
                "webhook apps need an auth_token (or auth_token_env) to sign requests".into(),
            )),
            Err(e) => out.push(("auth_token", e)),
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            out.push(("timeout_ms", "must be 100..=60000".into()));
        }
        if !(1_000..=10_000_000).contains(&self.max_document_bytes) {
            out.push(("max_document_bytes", "must be 1000..=10000000".into()));
        }
        if !(1_000..=100_000_000).contains(&self.max_play_bytes) {
            out.push(("max_play_bytes", "must be 1000..=100000000".into()));
        }
        if self.max_redirects > 20 {
            out.push(("max_redirects", "must be 0..=20".into()));
        }
        if self.error_message.trim().is_empty() {
            out.push((
                "error_message",
                "must not be empty: a failed app is never silence".into(),
            ));
        }
        out
    }
}

impl TwimlConfig {
    /// `api_sip_hosts` entries that aren't a plain host or host:port.
    pub fn api_problems(&self) -> Vec<(&'static str, String)> {
        self.api_sip_hosts
            .iter()
            .filter(|h| {
                let host = h.rsplit_once(':').map_or(h.as_str(), |(host, port)| {
                    match port.parse::<u16>() {
                        Ok(_) => host,
                        Err(_) => "",
                    }
                });
                host.is_empty()
                    || !host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
            })
            .map(|h| {
                (
                    "api_sip_hosts",
                    format!("{h:?}: a host name or address, optionally :port"),
                )
            })
            .collect()
    }
}

/// "AC" followed by 32 hex digits.
pub fn is_account_sid(s: &str) -> bool {
    s.len() == 34 && s.starts_with("AC") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn post() -> String {
    "POST".into()
}

/// A webhook app: where the call's TwiML comes from.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub url: String,
    #[serde(default = "post")]
    pub method: String,
    /// Asked when `url` fails (unreachable, slow, an error or bad TwiML).
    #[serde(default)]
    pub fallback_url: Option<String>,
    #[serde(default = "post")]
    pub fallback_method: String,
    /// Where the call's status events are sent (a route's app only).
    #[serde(default)]
    pub status_callback: Option<String>,
    #[serde(default = "post")]
    pub status_callback_method: String,
    /// Which events: initiated, ringing, answered, completed.
    #[serde(default = "every_event")]
    pub status_callback_event: Vec<String>,
    /// The first document itself (a Calls API `Twiml`), not in config.
    #[serde(skip)]
    pub twiml: Option<String>,
}

fn every_event() -> Vec<String> {
    super::status::EVENTS
        .iter()
        .map(|e| e.to_string())
        .collect()
}

impl AppConfig {
    /// Every problem, as (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Err(e) = check_url(&self.url) {
            out.push(("url", e));
        }
        if let Some(Err(e)) = self.fallback_url.as_deref().map(check_url) {
            out.push(("fallback_url", e));
        }
        if let Some(Err(e)) = self.status_callback.as_deref().map(check_url) {
            out.push(("status_callback", e));
        }
        for event in &self.status_callback_event {
            if !super::status::EVENTS.contains(&event.as_str()) {
                out.push((
                    "status_callback_event",
                    format!("{event:?}: use {}", super::status::EVENTS.join(", ")),
                ));
            }
        }
        for (key, method) in [
            ("method", &self.method),
            ("fallback_method", &self.fallback_method),
            ("status_callback_method", &self.status_callback_method),
        ] {
            if super::Method::parse(method).is_none() {
                out.push((key, format!("{method:?}: use \"GET\" or \"POST\"")));
            }
        }
        out
    }
}

/// An absolute http(s) URL.
pub fn check_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(()),
        Ok(u) => Err(format!(
            "{url:?}: scheme {:?} is not http or https",
            u.scheme()
        )),
        Err(e) => Err(format!("{url:?} is not a URL: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_sip_hosts_are_plain_hosts() {
        let mut t = TwimlConfig {
            api_sip_hosts: vec!["pbx.example.com".into(), "10.0.0.5:5070".into()],
            ..Default::default()
        };
        assert!(t.api_problems().is_empty());
        for bad in [
            "",
            "pbx.example.com;transport=tcp",
            "a b",
            "x@pbx",
            "pbx:99999",
            "sip:pbx",
        ] {
            t.api_sip_hosts = vec![bad.into()];
            assert_eq!(t.api_problems().len(), 1, "{bad}");
        }
    }
}
