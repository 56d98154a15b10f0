//! The HTTP side of webhook apps: TwiML documents asked for with Twilio's
//! parameters and `X-Twilio-Signature`, and `<Play>` audio fetched once
//! and kept by URL (revalidated by ETag). Every request is bounded: a
//! timeout for the whole exchange, a size cap read as the body streams in,
//! and a redirect cap. All of it runs on the call's flow task, never on
//! the signalling loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Method;
use crate::messaging::inbound::twilio_signature;

/// Why an app request failed; `kind` labels the metric and the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    pub kind: &'static str,
    pub message: String,
}

impl AppError {
    pub fn new(kind: &'static str, message: impl Into<String>) -> AppError {
        AppError {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// `<Play>` audio kept per URL: most apps play the same few files.
const PLAY_CACHE_ENTRIES: usize = 256;

struct CachedAudio {
    etag: Option<String>,
    samples: Arc<[i16]>,
}

/// What every webhook app shares: the client, the account, the limits.
pub struct Apps {
    client: reqwest::Client,
    pub account_sid: String,
    auth_token: String,
    pub(super) timeout: Duration,
    max_document_bytes: usize,
    max_play_bytes: usize,
    pub error_message: String,
    pub error_language: String,
    plays: Mutex<HashMap<String, CachedAudio>>,
    /// `<Dial><Number>` goes out through this trunk (by name).
    pub outbound_trunk: Option<crate::config::TrunkConfig>,
    pub(super) statuses: super::status::StatusQueues,
    /// Running app calls, by CallSid (the Calls API redirects them).
    pub live: super::live::LiveApps,
    /// `[twiml] api_sip_hosts`.
    pub api_sip_hosts: Vec<String>,
    /// App callers in queues, for `<Dial><Queue>` to take.
    pub(super) dequeueable: super::exec::queue::Dequeueable,
}

impl Apps {
    pub fn new(config: &crate::config::Config) -> Result<Apps, String> {
        let t = &config.twiml;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::limited(t.max_redirects))
            .connect_timeout(Duration::from_millis(t.timeout_ms))
            .user_agent(concat!("crossline/", env!("CARGO_PKG_VERSION"), " (TwiML)"))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Apps {
            client,
            account_sid: t.account_sid.clone(),
            // Validation requires one wherever an app is configured.
            auth_token: t.auth_token().ok().flatten().unwrap_or_default(),
            timeout: Duration::from_millis(t.timeout_ms),
            max_document_bytes: t.max_document_bytes,
            max_play_bytes: t.max_play_bytes,
            error_message: t.error_message.clone(),
            error_language: t.error_language.clone(),
            plays: Mutex::new(HashMap::new()),
            // A group's first trunk: its proxy names the numbers dialled.
            outbound_trunk: crate::callback::outbound_trunk(config)
                .and_then(|name| config.outbound_trunks(name))
                .and_then(|(trunks, _)| trunks.first().map(|t| (*t).clone())),
            statuses: Default::default(),
            live: Default::default(),
            api_sip_hosts: t.api_sip_hosts.clone(),
            dequeueable: Default::default(),
        })
    }

    /// The account's auth token (the Calls API's password), if set.
    pub fn auth_token(&self) -> Option<&str> {
        Some(self.auth_token.as_str()).filter(|t| !t.is_empty())
    }

    /// Ask an app for its next document: `params` as a form (POST) or in
    /// the query (GET), signed. Gives the document's text.
    pub async fn document(
        &self,
        url: &reqwest::Url,
        method: Method,
        params: &[(String, String)],
    ) -> Result<String, AppError> {
        let req = self.signed(url, method, params);
        let resp = send(req.timeout(self.timeout)).await?;
        let body = read_capped(resp, self.max_document_bytes).await?;
        String::from_utf8(body).map_err(|_| AppError::new("bad_twiml", "the document is not UTF-8"))
    }

    /// A request to an app: `params` as a form (POST) or in the query
    /// (GET), with `X-Twilio-Signature` over what Twilio signs.
    pub(super) fn signed(
        &self,
        url: &reqwest::Url,
        method: Method,
        params: &[(String, String)],
    ) -> reqwest::RequestBuilder {
        match method {
            Method::Post => {
                let signature = twilio_signature(&self.auth_token, url.as_str(), params);
                self.client
                    .post(url.clone())
                    .header("X-Twilio-Signature", signature)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(crate::messaging::form::encode(params))
            }
            Method::Get => {
                let mut url = url.clone();
                url.query_pairs_mut()
                    .extend_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                let signature = twilio_signature(&self.auth_token, url.as_str(), &[]);
                self.client.get(url).header("X-Twilio-Signature", signature)
            }
        }
    }

    /// `<Play>` audio as 8 kHz samples: fetched once and kept, asked again
    /// with If-None-Match when it came with an ETag.
    pub async fn audio(&self, url: &reqwest::Url) -> Result<Arc<[i16]>, AppError> {
        let key = url.as_str().to_string();
        let cached = self
            .plays_lock()
            .get(&key)
            .map(|c| (c.etag.clone(), c.samples.clone()));
        let mut req = self.client.get(url.clone()).timeout(self.timeout);
        match &cached {
            Some((None, samples)) => return Ok(samples.clone()),
            Some((Some(etag), _)) => req = req.header("If-None-Match", etag.as_str()),
            None => {}
        }
        let resp = req
            .send()
            .await
            .map_err(|e| AppError::new("play_unreachable", crate::net::http_error_text(e)))?;
        if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
            if let Some((_, samples)) = cached {
                return Ok(samples);
            }
        }
        if !resp.status().is_success() {
            return Err(AppError::new(
                "play_status",
                format!("<Play> audio answered {}", resp.status().as_u16()),
            ));
        }
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if [
            "text/",
            "application/json",
            "application/xml",
            "image/",
            "video/",
        ]
        .iter()
        .any(|t| content_type.starts_with(t))
        {
            return Err(AppError::new(
                "play_not_audio",
                format!("<Play> URL serves {content_type:?}, not audio"),
            ));
        }
        let body = read_capped(resp, self.max_play_bytes)
            .await
            .map_err(|e| match e.kind {
                "too_large" => AppError::new("play_too_large", e.message),
                _ => AppError::new("play_unreachable", e.message),
            })?;
        let label = url.path().to_string();
        let clip = tokio::task::spawn_blocking(move || {
            crate::media::audio_file::load_wav_bytes(&body, &label)
        })
        .await
        .map_err(|e| AppError::new("play_not_audio", e.to_string()))?
        .map_err(|e| {
            AppError::new(
                "play_not_audio",
                format!("<Play> audio is not a WAV file crossline can decode: {e}"),
            )
        })?;
        let mut plays = self.plays_lock();
        if plays.len() >= PLAY_CACHE_ENTRIES {
            plays.clear();
        }
        plays.insert(
            key,
            CachedAudio {
                etag,
                samples: clip.samples.clone(),
            },
        );
        Ok(clip.samples)
    }

    fn plays_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedAudio>> {
        self.plays.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn send(req: reqwest::RequestBuilder) -> Result<reqwest::Response, AppError> {
    let resp = req.send().await.map_err(|e| {
        let kind = if e.is_timeout() {
            "timeout"
        } else if e.is_redirect() {
            "too_many_redirects"
        } else {
            "unreachable"
        };
        AppError::new(kind, crate::net::http_error_text(e))
    })?;
    if !resp.status().is_success() {
        return Err(AppError::new(
            "http_status",
            format!("the app answered {}", resp.status().as_u16()),
        ));
    }
    Ok(resp)
}

/// The body, or an error as soon as it grows past `cap` (a lying or
/// missing Content-Length can't make us read more).
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, AppError> {
    let too_large = || AppError::new("too_large", format!("the response is over {cap} bytes"));
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > cap {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else {
                    "unreachable"
                };
                return Err(AppError::new(kind, crate::net::http_error_text(e)));
            }
        }
    }
}
