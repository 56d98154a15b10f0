//! Speech input for flows: `gather` with `input = "speech"` (or "dtmf
//! speech") streams the caller's audio to a recognizer while a voice
//! activity detector finds where speech starts (barge-in) and ends.
//!
//! - [`vad`]: the endpointer (WebRTC VAD), sans-IO.
//! - [`provider`]: the recognizers' wire formats: Deepgram's live
//!   transcription and a generic WebSocket protocol anyone can serve.
//! - [`recognize`]: one recognition on tokio, fed by the call's tap.
//! - [`grammar`]: what a transcript means for a menu.
//! - [`embedded`]: PocketSphinx on a worker pool (cargo feature
//!   `pocketsphinx`), its FFI in [`sphinx`].

pub mod embedded;
pub mod grammar;
pub mod provider;
pub mod recognize;
#[cfg(feature = "pocketsphinx")]
pub mod sphinx;
pub mod vad;

use serde::Deserialize;

use crate::secret::Secret;

/// `[asr]`: the recognizer `gather` uses for speech.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AsrConfig {
    /// "deepgram", "websocket" or "pocketsphinx"; unset: no speech input (a flow asking
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
    /// pocketsphinx: the acoustic model directory (16 kHz).
    pub model_dir: String,
    /// pocketsphinx: the pronouncing dictionary.
    pub dictionary: String,
    /// pocketsphinx: decoder threads.
    pub workers: usize,
    /// pocketsphinx: utterances that may wait for a worker.
    pub queue_len: usize,
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
            model_dir: embedded::DEBIAN_MODEL_DIR.into(),
            dictionary: embedded::DEBIAN_DICTIONARY.into(),
            workers: 2,
            queue_len: 64,
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
    /// The embedded engine's model is loaded here.
    pub fn recognizer(&self) -> Result<Option<Recognizer>, String> {
        let provider = match self.provider()? {
            Some(provider::Provider::PocketSphinx(engine)) => {
                Some(provider::Provider::PocketSphinx(engine.start()?))
            }
            other => other,
        };
        Ok(provider.map(|provider| Recognizer {
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
            Some("pocketsphinx") => {
                let settings = embedded::Settings {
                    model_dir: self.model_dir.clone().into(),
                    dictionary: self.dictionary.clone().into(),
                    workers: self.workers,
                    queue: self.queue_len,
                };
                settings.problems()?;
                Ok(Some(provider::Provider::PocketSphinx(
                    embedded::Engine::new(settings),
                )))
            }
            Some(other) => Err(format!(
                "unknown provider {other:?}; one of deepgram, websocket, pocketsphinx"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pocketsphinx_needs_the_feature_and_its_model() {
        let asr = AsrConfig {
            provider: Some("pocketsphinx".into()),
            ..AsrConfig::default()
        };
        let provider = asr.provider();
        if cfg!(feature = "pocketsphinx") {
            assert!(
                matches!(provider, Ok(Some(provider::Provider::PocketSphinx(_)))),
                "Debian's model is the default: {provider:?}"
            );
            let missing = AsrConfig {
                model_dir: "/nonexistent".into(),
                ..asr
            };
            let e = missing.provider().unwrap_err();
            assert!(e.contains("/nonexistent holds no acoustic model"), "{e}");
        } else {
            let e = provider.unwrap_err();
            assert!(e.contains("`pocketsphinx` cargo feature"), "{e}");
        }
    }
}
