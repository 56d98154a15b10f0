//! Text to speech: providers that render text to 8 kHz mono audio, and a
//! content-addressed cache so each phrase is rendered once.
//!
//! Providers: [`EspeakProvider`] runs the local `espeak-ng` binary,
//! [`HttpProvider`] posts to a TTS service. [`TtsCache`] sits in front of
//! either; [`config`] holds the `[tts]` and `[[prompts]]` sections.

pub mod cache;
pub mod config;
pub mod espeak;
pub mod http;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use cache::TtsCache;
pub use config::{
    build_cache, build_provider, render_prompts, validate, validate_prompts, EspeakConfig,
    HttpFormatKind, HttpTtsConfig, PromptConfig, ProviderKind, TtsConfig,
};
pub use espeak::{EspeakProvider, EspeakSettings};
pub use http::{HttpAudioFormat, HttpProvider, HttpSettings};

/// What to say and how.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TtsRequest {
    pub text: String,
    /// Language tag such as "en", "es" or "en-us".
    pub language: String,
    /// Provider-specific voice; overrides the one chosen from `language`.
    pub voice: Option<String>,
    /// Speaking rate in words per minute; `None` uses the provider default.
    pub rate_wpm: Option<u32>,
}

impl TtsRequest {
    /// A request in `language` with the provider's default voice and rate.
    pub fn new(text: impl Into<String>, language: impl Into<String>) -> Self {
        TtsRequest {
            text: text.into(),
            language: language.into(),
            voice: None,
            rate_wpm: None,
        }
    }

    /// The voice override, treating an empty string as none.
    pub(crate) fn voice_override(&self) -> Option<&str> {
        self.voice.as_deref().filter(|v| !v.trim().is_empty())
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait TtsProvider: Send + Sync {
    /// Stable identity of the provider and its settings that change the audio (for cache keys).
    fn cache_identity(&self) -> String;
    /// Render to 8 kHz mono i16.
    fn render<'a>(&'a self, req: &'a TtsRequest) -> BoxFuture<'a, Result<Arc<[i16]>, TtsError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    /// The engine binary is not installed; the message names the package.
    #[error("{0}")]
    MissingEngine(String),
    #[error("TTS engine failed: {0}")]
    Engine(String),
    #[error("TTS HTTP request failed: {0}")]
    Http(String),
    #[error("TTS produced unusable audio: {0}")]
    BadAudio(String),
    #[error("TTS cache: {0}")]
    Cache(String),
    #[error("TTS text is empty")]
    EmptyText,
    /// Settings that cannot work (e.g. HTTP provider without a URL).
    #[error("TTS configuration: {0}")]
    Config(String),
}

/// A process-unique suffix for temporary file names.
pub(crate) fn unique_suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// At most `max` characters of `s`, trimmed: keeps error messages short
/// without splitting a UTF-8 character.
pub(crate) fn excerpt(s: &str, max: usize) -> String {
    s.trim().chars().take(max).collect()
}

/// Rejects text that no engine can speak, before any work is done.
pub(crate) fn check_text(text: &str) -> Result<(), TtsError> {
    if text.trim().is_empty() {
        return Err(TtsError::EmptyText);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_util {
    /// Root-mean-square level in full-scale units (0.0..=1.0).
    pub fn rms(samples: &[i16]) -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let sum: f64 = samples
            .iter()
            .map(|&s| (f64::from(s) / 32768.0).powi(2))
            .sum();
        (sum / samples.len() as f64).sqrt()
    }
}
