//! Speech input for flows: `gather` with `input = "speech"` (or "dtmf
//! speech") streams the caller's audio to a recognizer while a voice
//! activity detector finds where speech starts (barge-in) and ends.
//!
//! - [`vad`]: the endpointer (WebRTC VAD), sans-IO.
//! - [`provider`]: the recognizers' wire formats: Deepgram's live
//!   transcription and a generic WebSocket protocol anyone can serve.
//! - [`recognize`]: one recognition on tokio, fed by the call's tap.
//! - [`grammar`]: what a transcript means for a menu.

pub mod grammar;
pub mod provider;
pub mod recognize;
pub mod vad;

use serde::Deserialize;

use crate::secret::Secret;

/// `[asr]`: the recognizer `gather` uses for speech.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AsrConfig {
    /// "deepgram" or "websocket"; unset: no speech input (a flow asking
    /// for it fails `check`).
    pub provider: Option<String>,
    /// The recognizer's WebSocket URL. Deepgram: its live endpoint unless
    /// set; websocket: required.
    pub url: Option<String>,
    /// Deepgram's API key (`Authorization: Token`), or the generic
    /// server's bearer token.
    pub api_key: Option<Secret>,
    pub api_key_env: Option<String>,
    /// Deepgram's model, e.g. "nova-2-phonecall".
    pub model: Option<String>,
    /// Give up on a recognizer that doesn't accept the connection by then.
    pub connect_timeout_ms: u64,
    /// After the caller stops speaking, how long to wait for the final
    /// transcript before `gather` fails over to `on_failure`.
    pub result_timeout_ms: u64,
}

impl Default for AsrConfig {
    fn default() -> Self {
        AsrConfig {
            provider: None,
            url: None,
            api_key: None,
            api_key_env: None,
            model: None,
            connect_timeout_ms: 3_000,
            result_timeout_ms: 3_000,
        }
    }
}

/// The recognizer and its timeouts, ready for flows.
#[derive(Debug, Clone)]
pub struct Recognizer {
    pub provider: provider::Provider,
    pub connect_timeout: std::time::Duration,
    pub result_timeout: std::time::Duration,
}

impl AsrConfig {
    /// What flows use, if a provider is configured.
    pub fn recognizer(&self) -> Result<Option<Recognizer>, String> {
        Ok(self.provider()?.map(|provider| Recognizer {
            provider,
            connect_timeout: std::time::Duration::from_millis(self.connect_timeout_ms),
            result_timeout: std::time::Duration::from_millis(self.result_timeout_ms),
        }))
    }

    /// The recognizer to use, if any; Err: a setting that can't work.
    pub fn provider(&self) -> Result<Option<provider::Provider>, String> {
        let key = match (&self.api_key, &self.api_key_env) {
            (Some(_), Some(_)) => return Err("set api_key or api_key_env, not both".into()),
            (Some(k), None) => Some(k.expose().to_string()),
            (None, Some(name)) => Some(
                std::env::var(name)
                    .map_err(|_| format!("environment variable {name:?} is not set"))?,
            ),
            (None, None) => None,
        };
        let url_ok = |u: &str| u.starts_with("ws://") || u.starts_with("wss://");
        match self.provider.as_deref() {
            None => Ok(None),
            Some("deepgram") => {
                let url = self
                    .url
                    .clone()
                    .unwrap_or_else(|| provider::DEEPGRAM_URL.to_string());
                if !url_ok(&url) {
                    return Err(format!("url must be ws:// or wss://: {url:?}"));
                }
                let key = key.ok_or("deepgram needs api_key or api_key_env")?;
                Ok(Some(provider::Provider::Deepgram {
                    url,
                    key,
                    model: self.model.clone(),
                }))
            }
            Some("websocket") => {
                let url = self.url.clone().ok_or("websocket needs url")?;
                if !url_ok(&url) {
                    return Err(format!("url must be ws:// or wss://: {url:?}"));
                }
                Ok(Some(provider::Provider::WebSocket { url, token: key }))
            }
            Some(other) => Err(format!(
                "unknown provider {other:?}; one of deepgram, websocket"
            )),
        }
    }
}
