//! The `[tts]` and `[[prompts]]` config sections, and building the
//! provider, cache and start-up prompts from them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::http::{parse_header, parse_url, RedactedHeaders};
use super::{
    EspeakProvider, EspeakSettings, HttpAudioFormat, HttpProvider, HttpSettings, TtsCache,
    TtsError, TtsProvider, TtsRequest,
};

/// espeak-ng's accepted speaking rates; outside them it clamps silently.
const ESPEAK_RATES: std::ops::RangeInclusive<u32> = 80..=450;
/// Sample rates the resampler accepts.
const PCM_RATES: std::ops::RangeInclusive<u32> = 1_000..=768_000;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    #[default]
    Espeak,
    Http,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TtsConfig {
    pub provider: ProviderKind,
    /// Content-addressed WAV cache; empty disables the disk cache.
    pub cache_dir: PathBuf,
    /// Renders kept in memory, at most this many MB (oldest out first).
    pub memory_cache_mb: u64,
    pub espeak: EspeakConfig,
    pub http: HttpTtsConfig,
}

impl Default for TtsConfig {
    fn default() -> Self {
        TtsConfig {
            provider: ProviderKind::Espeak,
            cache_dir: PathBuf::from("./tts-cache"),
            memory_cache_mb: 64,
            espeak: EspeakConfig::default(),
            http: HttpTtsConfig::default(),
        }
    }
}

impl TtsConfig {
    /// The disk cache directory, or `None` when disabled.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        if self.cache_dir.as_os_str().is_empty() {
            None
        } else {
            Some(self.cache_dir.clone())
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EspeakConfig {
    pub binary: PathBuf,
    pub rate_wpm: u32,
    /// Language → espeak voice; unlisted languages are used as the voice.
    pub voices: BTreeMap<String, String>,
}

impl Default for EspeakConfig {
    fn default() -> Self {
        let d = EspeakSettings::default();
        EspeakConfig {
            binary: d.binary,
            rate_wpm: d.default_rate_wpm,
            voices: d.voices,
        }
    }
}

impl EspeakConfig {
    pub fn settings(&self) -> EspeakSettings {
        EspeakSettings {
            binary: self.binary.clone(),
            default_rate_wpm: self.rate_wpm,
            voices: self.voices.clone(),
            ..EspeakSettings::default()
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum HttpFormatKind {
    #[default]
    Wav,
    /// Raw little-endian mono 16-bit at `sample_rate`.
    Pcm16,
}

#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpTtsConfig {
    pub url: String,
    /// Sent with every request, e.g. `Authorization`.
    pub headers: BTreeMap<String, String>,
    pub format: HttpFormatKind,
    /// Rate of `pcm16` answers.
    pub sample_rate: u32,
    pub timeout_ms: u64,
}

impl Default for HttpTtsConfig {
    fn default() -> Self {
        HttpTtsConfig {
            url: String::new(),
            headers: BTreeMap::new(),
            format: HttpFormatKind::Wav,
            sample_rate: 16_000,
            timeout_ms: 10_000,
        }
    }
}

// Header values are usually credentials; keep them out of logs.
impl fmt::Debug for HttpTtsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTtsConfig")
            .field("url", &self.url)
            .field("headers", &RedactedHeaders(&self.headers))
            .field("format", &self.format)
            .field("sample_rate", &self.sample_rate)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl HttpTtsConfig {
    pub fn settings(&self) -> HttpSettings {
        HttpSettings {
            url: self.url.clone(),
            headers: self.headers.clone(),
            format: match self.format {
                HttpFormatKind::Wav => HttpAudioFormat::Wav,
                HttpFormatKind::Pcm16 => HttpAudioFormat::Pcm16 {
                    sample_rate: self.sample_rate,
                },
            },
            timeout: Duration::from_millis(self.timeout_ms),
        }
    }
}

/// Problems as (key path, message), e.g. ("tts.http.url", "..."). Empty
/// when the section is usable.
pub fn validate(cfg: &TtsConfig) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    let mut err = |key: &str, msg: String| errors.push((key.to_owned(), msg));

    if cfg.memory_cache_mb > 65_536 {
        err("tts.memory_cache_mb", "must be 0..=65536".into());
    }
    let espeak = &cfg.espeak;
    if espeak.binary.as_os_str().is_empty() {
        err("tts.espeak.binary", "must not be empty".into());
    }
    if !ESPEAK_RATES.contains(&espeak.rate_wpm) {
        err(
            "tts.espeak.rate_wpm",
            format!(
                "must be {}..={} words per minute",
                ESPEAK_RATES.start(),
                ESPEAK_RATES.end()
            ),
        );
    }
    for (lang, voice) in &espeak.voices {
        if voice.trim().is_empty() {
            err(
                &format!("tts.espeak.voices.{lang}"),
                "voice must not be empty".into(),
            );
        }
    }

    let http = &cfg.http;
    if http.url.trim().is_empty() {
        if cfg.provider == ProviderKind::Http {
            err(
                "tts.http.url",
                "required when tts.provider = \"http\"".into(),
            );
        }
    } else if let Err(e) = parse_url(&http.url) {
        err("tts.http.url", e);
    }
    for (name, value) in &http.headers {
        if let Err(e) = parse_header(name, value) {
            err(&format!("tts.http.headers.{name}"), e);
        }
    }
    if http.format == HttpFormatKind::Pcm16 && !PCM_RATES.contains(&http.sample_rate) {
        err(
            "tts.http.sample_rate",
            format!("must be {}..={} Hz", PCM_RATES.start(), PCM_RATES.end()),
        );
    }
    if http.timeout_ms == 0 {
        err("tts.http.timeout_ms", "must be greater than 0".into());
    }
    errors
}

/// The configured provider. Fails on anything [`validate`] reports.
pub fn build_provider(cfg: &TtsConfig) -> Result<Box<dyn TtsProvider>, TtsError> {
    let errors = validate(cfg);
    if !errors.is_empty() {
        let list: Vec<String> = errors.iter().map(|(k, m)| format!("{k}: {m}")).collect();
        return Err(TtsError::Config(list.join("; ")));
    }
    Ok(match cfg.provider {
        ProviderKind::Espeak => Box::new(EspeakProvider::new(cfg.espeak.settings())),
        ProviderKind::Http => Box::new(HttpProvider::new(cfg.http.settings())?),
    })
}

/// The cache for `cfg`, memory-only when `cache_dir` is empty.
pub fn build_cache(cfg: &TtsConfig) -> Result<TtsCache, TtsError> {
    TtsCache::new(cfg.cache_dir()).map(|c| c.with_memory_budget(cfg.memory_cache_mb * 1024 * 1024))
}

fn default_language() -> String {
    "en".into()
}

/// A `[[prompts]]` entry: a named phrase rendered at start.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PromptConfig {
    pub name: String,
    pub text: String,
    #[serde(default = "default_language")]
    pub language: String,
    #[serde(default)]
    pub voice: Option<String>,
    #[serde(default)]
    pub rate_wpm: Option<u32>,
}

impl PromptConfig {
    pub fn request(&self) -> TtsRequest {
        TtsRequest {
            text: self.text.clone(),
            language: self.language.clone(),
            voice: self.voice.clone(),
            rate_wpm: self.rate_wpm,
        }
    }
}

/// Problems in `[[prompts]]` as (key path like "prompts[2].name", message).
pub fn validate_prompts(prompts: &[PromptConfig]) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, p) in prompts.iter().enumerate() {
        if p.name.trim().is_empty() || !names.insert(p.name.as_str()) {
            errors.push((
                format!("prompts[{i}].name"),
                "names must be unique and non-empty".into(),
            ));
        }
        if p.text.trim().is_empty() {
            errors.push((format!("prompts[{i}].text"), "must not be empty".into()));
        }
        if p.rate_wpm == Some(0) {
            errors.push((
                format!("prompts[{i}].rate_wpm"),
                "must be greater than 0".into(),
            ));
        }
    }
    errors
}

/// Renders every prompt (through the cache) by name. The first failure
/// stops start-up and names the prompt.
pub async fn render_prompts(
    cache: &TtsCache,
    provider: &dyn TtsProvider,
    prompts: &[PromptConfig],
) -> Result<HashMap<String, Arc<[i16]>>, (String, TtsError)> {
    let mut out = HashMap::with_capacity(prompts.len());
    for p in prompts {
        let samples = cache
            .get_or_render(provider, &p.request())
            .await
            .map_err(|e| (p.name.clone(), e))?;
        out.insert(p.name.clone(), samples);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tts::BoxFuture;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default)]
        tts: TtsConfig,
        #[serde(default)]
        prompts: Vec<PromptConfig>,
    }

    fn parse(text: &str) -> Result<Doc, toml::de::Error> {
        toml::from_str(text)
    }

    fn keys(errors: &[(String, String)]) -> Vec<&str> {
        errors.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn defaults() {
        let cfg = parse("").expect("empty").tts;
        assert_eq!(cfg, TtsConfig::default());
        assert_eq!(cfg.provider, ProviderKind::Espeak);
        assert_eq!(cfg.cache_dir(), Some(PathBuf::from("./tts-cache")));
        assert_eq!(cfg.espeak.binary, PathBuf::from("espeak-ng"));
        assert_eq!(cfg.espeak.rate_wpm, 160);
        assert_eq!(
            cfg.espeak.voices.get("en").map(String::as_str),
            Some("en-us")
        );
        assert_eq!(cfg.espeak.voices.get("es").map(String::as_str), Some("es"));
        assert_eq!(cfg.http.format, HttpFormatKind::Wav);
        assert_eq!(cfg.http.sample_rate, 16_000);
        assert_eq!(cfg.http.timeout_ms, 10_000);
        assert!(validate(&cfg).is_empty(), "{:?}", validate(&cfg));
        assert_eq!(cfg.espeak.settings(), EspeakSettings::default());
    }

    #[test]
    fn full_section_parses() {
        let doc = parse(
            r#"
            [tts]
            provider = "http"
            cache_dir = ""
            [tts.espeak]
            binary = "/usr/bin/espeak-ng"
            rate_wpm = 140
            voices = { en = "en-gb", fr = "fr-fr" }
            [tts.http]
            url = "http://127.0.0.1:9000/tts"
            headers = { Authorization = "Bearer abc" }
            format = "pcm16"
            sample_rate = 24000
            timeout_ms = 5000

            [[prompts]]
            name = "hold"
            text = "Thank you for holding"
            [[prompts]]
            name = "espera"
            text = "Gracias por esperar"
            language = "es"
            voice = "es-419"
            rate_wpm = 150
            "#,
        )
        .expect("parse");
        let cfg = &doc.tts;
        assert_eq!(cfg.provider, ProviderKind::Http);
        assert_eq!(cfg.cache_dir(), None);
        assert_eq!(cfg.espeak.rate_wpm, 140);
        assert_eq!(cfg.espeak.voices.len(), 2);
        let s = cfg.http.settings();
        assert_eq!(
            s.format,
            HttpAudioFormat::Pcm16 {
                sample_rate: 24_000
            }
        );
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert!(validate(cfg).is_empty(), "{:?}", validate(cfg));
        assert!(!format!("{cfg:?}").contains("Bearer abc"));

        assert_eq!(doc.prompts.len(), 2);
        assert_eq!(doc.prompts[0].language, "en");
        assert_eq!(doc.prompts[0].voice, None);
        assert_eq!(doc.prompts[1].voice.as_deref(), Some("es-419"));
        assert_eq!(doc.prompts[1].rate_wpm, Some(150));
        assert!(validate_prompts(&doc.prompts).is_empty());
    }

    #[test]
    fn unknown_keys_rejected() {
        for text in [
            "[tts]\nvoice = \"x\"",
            "[tts.espeak]\nspeed = 1",
            "[tts.http]\nendpoint = \"http://x\"",
            "[tts]\nprovider = \"festival\"",
            "[tts.http]\nformat = \"mp3\"",
            "[[prompts]]\nname = \"a\"\ntext = \"b\"\nlang = \"en\"",
            "[[prompts]]\nname = \"a\"",
        ] {
            assert!(parse(text).is_err(), "accepted: {text}");
        }
    }

    #[test]
    fn http_without_url_fails() {
        let cfg = TtsConfig {
            provider: ProviderKind::Http,
            ..TtsConfig::default()
        };
        assert_eq!(keys(&validate(&cfg)), ["tts.http.url"]);
        match build_provider(&cfg) {
            Err(TtsError::Config(msg)) => assert!(msg.contains("tts.http.url"), "{msg}"),
            Err(e) => panic!("wrong error {e:?}"),
            Ok(_) => panic!("built an HTTP provider without a URL"),
        }
    }

    #[test]
    fn bad_values_are_reported_by_key() {
        let mut cfg = TtsConfig::default();
        cfg.espeak.rate_wpm = 10;
        cfg.espeak.voices.insert("fr".into(), " ".into());
        cfg.http.url = "ftp://x/tts".into();
        cfg.http.headers.insert("Bad Name".into(), "v".into());
        cfg.http.format = HttpFormatKind::Pcm16;
        cfg.http.sample_rate = 0;
        cfg.http.timeout_ms = 0;
        assert_eq!(
            keys(&validate(&cfg)),
            [
                "tts.espeak.rate_wpm",
                "tts.espeak.voices.fr",
                "tts.http.url",
                "tts.http.headers.Bad Name",
                "tts.http.sample_rate",
                "tts.http.timeout_ms",
            ]
        );
    }

    #[test]
    fn builds_each_provider() {
        let espeak = build_provider(&TtsConfig::default()).expect("espeak");
        assert!(espeak.cache_identity().starts_with("espeak-ng|"));
        let mut cfg = TtsConfig {
            provider: ProviderKind::Http,
            ..TtsConfig::default()
        };
        cfg.http.url = "http://127.0.0.1:9000/tts".into();
        let http = build_provider(&cfg).expect("http");
        assert_eq!(http.cache_identity(), "http|http://127.0.0.1:9000/tts|wav");
    }

    #[test]
    fn prompt_problems_are_reported() {
        let p = |name: &str, text: &str| PromptConfig {
            name: name.into(),
            text: text.into(),
            language: "en".into(),
            voice: None,
            rate_wpm: None,
        };
        let prompts = [p("a", "x"), p("a", "y"), p("", "z"), p("b", " ")];
        assert_eq!(
            keys(&validate_prompts(&prompts)),
            ["prompts[1].name", "prompts[2].name", "prompts[3].text"]
        );
    }

    /// Echoes the text length as audio; fails on "fail".
    struct Echo;

    impl TtsProvider for Echo {
        fn cache_identity(&self) -> String {
            "echo".into()
        }
        fn render<'a>(
            &'a self,
            req: &'a TtsRequest,
        ) -> BoxFuture<'a, Result<Arc<[i16]>, TtsError>> {
            Box::pin(async move {
                if req.text == "fail" {
                    return Err(TtsError::Engine("no".into()));
                }
                Ok(vec![1; req.text.len()].into())
            })
        }
    }

    #[tokio::test]
    async fn prompts_render_by_name() {
        let cache = TtsCache::new(None).expect("cache");
        let prompts: Vec<PromptConfig> = parse(
            "[[prompts]]\nname = \"hi\"\ntext = \"hello\"\n[[prompts]]\nname = \"bye\"\ntext = \"goodbye\"",
        )
        .expect("parse")
        .prompts;
        let out = render_prompts(&cache, &Echo, &prompts)
            .await
            .expect("render");
        assert_eq!(out.len(), 2);
        assert_eq!(out.get("hi").map(|s| s.len()), Some(5));
        assert_eq!(out.get("bye").map(|s| s.len()), Some(7));

        let bad = [PromptConfig {
            name: "broken".into(),
            text: "fail".into(),
            ..prompts[0].clone()
        }];
        match render_prompts(&cache, &Echo, &bad).await {
            Err((name, TtsError::Engine(_))) => assert_eq!(name, "broken"),
            other => panic!("expected failure naming the prompt, got {other:?}"),
        }
    }
}
