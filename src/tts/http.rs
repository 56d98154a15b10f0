//! Synthesis by an HTTP service: POST JSON, get WAV or raw PCM back.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use serde::Serialize;

use super::{check_text, excerpt, BoxFuture, TtsError, TtsProvider, TtsRequest};
use crate::media::audio_file::{load_wav_bytes, resample_to_8k};

/// Largest response body accepted (about 20 minutes of 16 kHz PCM).
pub const MAX_BODY_BYTES: usize = 20 * 1024 * 1024;

/// How much of an error body is read for the message.
const ERROR_BODY_CAP: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpAudioFormat {
    /// A WAV file of any rate, channel count and depth.
    Wav,
    /// Raw little-endian mono signed 16-bit samples.
    Pcm16 { sample_rate: u32 },
}

impl HttpAudioFormat {
    fn accept(self) -> &'static str {
        match self {
            HttpAudioFormat::Wav => "audio/wav",
            HttpAudioFormat::Pcm16 { .. } => "audio/L16",
        }
    }
}

impl fmt::Display for HttpAudioFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpAudioFormat::Wav => f.write_str("wav"),
            HttpAudioFormat::Pcm16 { sample_rate } => write!(f, "pcm16/{sample_rate}"),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct HttpSettings {
    pub url: String,
    /// Extra request headers, e.g. `Authorization`.
    pub headers: BTreeMap<String, String>,
    pub format: HttpAudioFormat,
    /// Whole-request timeout, connect to last byte.
    pub timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            url: String::new(),
            headers: BTreeMap::new(),
            format: HttpAudioFormat::Wav,
            timeout: Duration::from_secs(10),
        }
    }
}

// Header values are usually credentials; keep them out of logs.
impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSettings")
            .field("url", &self.url)
            .field("headers", &RedactedHeaders(&self.headers))
            .field("format", &self.format)
            .field("timeout", &self.timeout)
            .finish()
    }
}

pub(crate) struct RedactedHeaders<'a>(pub &'a BTreeMap<String, String>);

impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

pub struct HttpProvider {
    client: reqwest::Client,
    url: reqwest::Url,
    /// Configured headers plus our Content-Type and Accept.
    headers: HeaderMap,
    format: HttpAudioFormat,
    timeout: Duration,
}

impl fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProvider")
            .field("url", &self.url.as_str())
            .field("format", &self.format)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpProvider {
    /// Checks the URL and headers and builds the client; nothing is sent.
    pub fn new(settings: HttpSettings) -> Result<Self, TtsError> {
        let url = parse_url(&settings.url).map_err(TtsError::Config)?;
        let mut headers = HeaderMap::new();
        for (name, value) in &settings.headers {
            let (name, value) = parse_header(name, value).map_err(TtsError::Config)?;
            headers.insert(name, value);
        }
        // Ours win over configured ones: the body is JSON and the decoder
        // only understands the format we ask for.
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static(settings.format.accept()));

        // reqwest is built without a default crypto provider and panics
        // when building a client without one; main installs ring, but
        // make sure here too so tools and tests don't depend on that.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|e| TtsError::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(HttpProvider {
            client,
            url,
            headers,
            format: settings.format,
            timeout: settings.timeout,
        })
    }

    async fn fetch(&self, req: &TtsRequest) -> Result<(Vec<u8>, String), TtsError> {
        let body = RequestBody {
            text: &req.text,
            language: &req.language,
            voice: req.voice_override(),
            rate_wpm: req.rate_wpm,
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| TtsError::Http(format!("cannot encode request: {e}")))?;
        let mut resp = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;

        let status = resp.status();
        if !status.is_success() {
            let body = self
                .read_body(&mut resp, ERROR_BODY_CAP, false)
                .await
                .unwrap_or_default();
            return Err(TtsError::Http(format!(
                "status {}: {}",
                status.as_u16(),
                excerpt(&String::from_utf8_lossy(&body), 200)
            )));
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        if let Some(len) = resp.content_length() {
            if len > MAX_BODY_BYTES as u64 {
                return Err(too_big());
            }
        }
        let body = self.read_body(&mut resp, MAX_BODY_BYTES, true).await?;
        Ok((body, content_type))
    }

    /// Reads at most `cap` bytes. Past the cap: an error when `strict`,
    /// else the body is cut short (error bodies only feed a message).
    async fn read_body(
        &self,
        resp: &mut reqwest::Response,
        cap: usize,
        strict: bool,
    ) -> Result<Vec<u8>, TtsError> {
        // The length header is a hint; a lying one must not size the buffer.
        let hint = resp.content_length().unwrap_or(0).min(1 << 20) as usize;
        let mut body = Vec::with_capacity(hint.min(cap));
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport_error(e))? {
            if body.len().saturating_add(chunk.len()) > cap {
                if strict {
                    return Err(too_big());
                }
                let room = cap.saturating_sub(body.len());
                body.extend(chunk.iter().take(room));
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport_error(&self, e: reqwest::Error) -> TtsError {
        if e.is_timeout() {
            return TtsError::Http(format!("no answer within {:?}", self.timeout));
        }
        TtsError::Http(crate::net::http_error_text(e))
    }
}

fn too_big() -> TtsError {
    TtsError::Http(format!("response body larger than {MAX_BODY_BYTES} bytes"))
}

pub(crate) fn parse_url(url: &str) -> Result<reqwest::Url, String> {
    if url.trim().is_empty() {
        return Err("URL is empty".into());
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a valid URL ({e})"))?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(format!("scheme {other:?} is not http or https")),
    }
}

pub(crate) fn parse_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    // The value is not echoed: it is usually a credential.
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| format!("value of header {name:?} has characters not allowed in HTTP"))?;
    value.set_sensitive(true);
    Ok((header, value))
}

#[derive(Serialize)]
struct RequestBody<'a> {
    text: &'a str,
    language: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    voice: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_wpm: Option<u32>,
}

impl TtsProvider for HttpProvider {
    fn cache_identity(&self) -> String {
        format!("http|{}|{}", self.url, self.format)
    }

    fn render<'a>(&'a self, req: &'a TtsRequest) -> BoxFuture<'a, Result<Arc<[i16]>, TtsError>> {
        Box::pin(async move {
            check_text(&req.text)?;
            let (body, content_type) = self.fetch(req).await?;
            let format = self.format;
            // Resampling minutes of audio is CPU work; keep it off the reactor.
            tokio::task::spawn_blocking(move || decode(format, &body))
                .await
                .map_err(|e| TtsError::BadAudio(format!("decode task failed: {e}")))?
                .map_err(|e| TtsError::BadAudio(format!("{e} (content-type {content_type})")))
        })
    }
}

fn decode(format: HttpAudioFormat, body: &[u8]) -> Result<Arc<[i16]>, String> {
    let samples: Arc<[i16]> = match format {
        HttpAudioFormat::Wav => {
            load_wav_bytes(body, "TTS HTTP response")
                .map_err(|e| e.to_string())?
                .samples
        }
        HttpAudioFormat::Pcm16 { sample_rate } => {
            if body.len() % 2 != 0 {
                return Err(format!(
                    "{} bytes is not a whole number of 16-bit samples",
                    body.len()
                ));
            }
            let mono: Vec<f32> = body
                .chunks_exact(2)
                .map(|pair| match pair {
                    [lo, hi] => f32::from(i16::from_le_bytes([*lo, *hi])) / 32768.0,
                    // chunks_exact(2) yields only pairs.
                    _ => 0.0,
                })
                .collect();
            resample_to_8k(&mono, sample_rate)
                .map_err(|e| e.to_string())?
                .into()
        }
    };
    if samples.is_empty() {
        return Err("no audio samples".into());
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tts::test_util::rms;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap as AxumHeaders, Method, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::any;
    use axum::Router;
    use std::io::Cursor;
    use std::sync::Mutex;

    /// What the stand-in server saw.
    #[derive(Debug, Clone)]
    struct Seen {
        method: Method,
        headers: AxumHeaders,
        body: serde_json::Value,
    }

    #[derive(Clone)]
    struct Stub {
        status: StatusCode,
        content_type: &'static str,
        body: Bytes,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    async fn handle(
        State(stub): State<Stub>,
        method: Method,
        headers: AxumHeaders,
        body: Bytes,
    ) -> Response {
        let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        stub.seen.lock().expect("lock").push(Seen {
            method,
            headers,
            body,
        });
        (
            stub.status,
            [(axum::http::header::CONTENT_TYPE, stub.content_type)],
            stub.body.clone(),
        )
            .into_response()
    }

    /// Serves `body` on 127.0.0.1:0; returns the URL and the request log.
    async fn serve(
        status: StatusCode,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stub = Stub {
            status,
            content_type,
            body: Bytes::from(body),
            seen: seen.clone(),
        };
        let app = Router::new().route("/tts", any(handle)).with_state(stub);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}/tts"), seen)
    }

    /// One second of a 440 Hz tone at 16 kHz.
    fn tone_16k() -> Vec<i16> {
        (0..16_000)
            .map(|i| {
                let t = f64::from(i) / 16_000.0;
                ((t * 440.0 * std::f64::consts::TAU).sin() * 12_000.0) as i16
            })
            .collect()
    }

    fn wav_16k(samples: &[i16]) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut out = Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut out, spec).expect("writer");
        for &s in samples {
            w.write_sample(s).expect("sample");
        }
        w.finalize().expect("finalize");
        out.into_inner()
    }

    fn provider(url: &str, format: HttpAudioFormat) -> HttpProvider {
        let _ = rustls::crypto::ring::default_provider().install_default();
        HttpProvider::new(HttpSettings {
            url: url.to_owned(),
            headers: BTreeMap::from([("Authorization".to_owned(), "Bearer t0ken".to_owned())]),
            format,
            timeout: Duration::from_secs(5),
        })
        .expect("provider")
    }

    fn assert_about_one_second(samples: &[i16]) {
        // The resampler trims its delay; allow a few samples either way.
        assert!(
            (7_990..=8_010).contains(&samples.len()),
            "got {} samples",
            samples.len()
        );
        assert!(rms(samples) > 0.2, "rms {}", rms(samples));
    }

    #[tokio::test]
    async fn wav_answer_is_decoded_and_request_checked() {
        let (url, seen) = serve(StatusCode::OK, "audio/wav", wav_16k(&tone_16k())).await;
        let p = provider(&url, HttpAudioFormat::Wav);
        let req = TtsRequest {
            voice: Some("alloy".into()),
            rate_wpm: Some(150),
            ..TtsRequest::new("Thank you for holding", "en")
        };
        let samples = p.render(&req).await.expect("render");
        assert_about_one_second(&samples);

        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 1);
        let s = &seen[0];
        assert_eq!(s.method, Method::POST);
        assert_eq!(
            s.body,
            serde_json::json!({
                "text": "Thank you for holding",
                "language": "en",
                "voice": "alloy",
                "rate_wpm": 150
            })
        );
        let header = |name: &str| s.headers.get(name).and_then(|v| v.to_str().ok());
        assert_eq!(header("authorization"), Some("Bearer t0ken"));
        assert_eq!(header("content-type"), Some("application/json"));
        assert_eq!(header("accept"), Some("audio/wav"));
    }

    #[tokio::test]
    async fn null_fields_are_omitted() {
        let (url, seen) = serve(StatusCode::OK, "audio/wav", wav_16k(&tone_16k())).await;
        let p = provider(&url, HttpAudioFormat::Wav);
        p.render(&TtsRequest::new("hola", "es"))
            .await
            .expect("render");
        let body = seen.lock().expect("lock")[0].body.clone();
        assert_eq!(body, serde_json::json!({"text": "hola", "language": "es"}));
    }

    #[tokio::test]
    async fn pcm16_answer_is_resampled() {
        let pcm: Vec<u8> = tone_16k().iter().flat_map(|s| s.to_le_bytes()).collect();
        let (url, seen) = serve(StatusCode::OK, "audio/L16", pcm).await;
        let p = provider(
            &url,
            HttpAudioFormat::Pcm16 {
                sample_rate: 16_000,
            },
        );
        let samples = p
            .render(&TtsRequest::new("hello", "en"))
            .await
            .expect("render");
        assert_about_one_second(&samples);
        let accept = seen.lock().expect("lock")[0].headers.get("accept").cloned();
        assert_eq!(accept, Some(HeaderValue::from_static("audio/L16")));
    }

    #[tokio::test]
    async fn odd_pcm_length_is_bad_audio() {
        let (url, _) = serve(StatusCode::OK, "audio/L16", vec![1, 2, 3]).await;
        let p = provider(
            &url,
            HttpAudioFormat::Pcm16 {
                sample_rate: 16_000,
            },
        );
        let err = p.render(&TtsRequest::new("hello", "en")).await;
        assert!(matches!(err, Err(TtsError::BadAudio(_))), "{err:?}");
    }

    #[tokio::test]
    async fn server_error_reports_status_and_body() {
        let (url, _) = serve(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            b"voice model crashed".to_vec(),
        )
        .await;
        let p = provider(&url, HttpAudioFormat::Wav);
        match p.render(&TtsRequest::new("hello", "en")).await {
            Err(TtsError::Http(msg)) => {
                assert!(msg.contains("status 500"), "{msg}");
                assert!(msg.contains("voice model crashed"), "{msg}");
            }
            other => panic!("expected Http error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn long_error_body_is_cut_to_200_chars() {
        let (url, _) = serve(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            vec![b'x'; 10_000],
        )
        .await;
        let p = provider(&url, HttpAudioFormat::Wav);
        match p.render(&TtsRequest::new("hello", "en")).await {
            Err(TtsError::Http(msg)) => {
                assert_eq!(msg, format!("status 503: {}", "x".repeat(200)));
            }
            other => panic!("expected Http error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn garbage_wav_is_bad_audio() {
        let (url, _) = serve(
            StatusCode::OK,
            "audio/wav",
            b"<html>not audio</html>".to_vec(),
        )
        .await;
        let p = provider(&url, HttpAudioFormat::Wav);
        match p.render(&TtsRequest::new("hello", "en")).await {
            Err(TtsError::BadAudio(msg)) => {
                assert!(msg.contains("content-type audio/wav"), "{msg}")
            }
            other => panic!("expected BadAudio, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn oversized_body_is_rejected() {
        let (url, _) = serve(StatusCode::OK, "audio/wav", vec![0; MAX_BODY_BYTES + 2]).await;
        let p = provider(
            &url,
            HttpAudioFormat::Pcm16 {
                sample_rate: 16_000,
            },
        );
        match p.render(&TtsRequest::new("hello", "en")).await {
            Err(TtsError::Http(msg)) => assert!(msg.contains("larger than"), "{msg}"),
            other => panic!("expected Http error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn oversized_body_without_length_is_rejected() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Close-delimited body: no Content-Length, so only the read counts.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0; 4096];
            let _ = sock.read(&mut buf).await;
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                .await;
            let block = vec![0u8; 1 << 20];
            for _ in 0..=MAX_BODY_BYTES / block.len() {
                if sock.write_all(&block).await.is_err() {
                    return;
                }
            }
        });
        let p = provider(&format!("http://{addr}/tts"), HttpAudioFormat::Wav);
        match p.render(&TtsRequest::new("hello", "en")).await {
            Err(TtsError::Http(msg)) => assert!(msg.contains("larger than"), "{msg}"),
            other => panic!("expected Http error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn unreachable_server_is_http_error() {
        // Bind then drop: nothing listens on the port afterwards.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let p = provider(&format!("http://{addr}/tts"), HttpAudioFormat::Wav);
        let err = p.render(&TtsRequest::new("hello", "en")).await;
        assert!(matches!(err, Err(TtsError::Http(_))), "{err:?}");
    }

    #[test]
    fn bad_settings_are_config_errors() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        for url in ["", "not a url", "ftp://example.com/tts"] {
            let r = HttpProvider::new(HttpSettings {
                url: url.into(),
                ..HttpSettings::default()
            });
            assert!(matches!(r, Err(TtsError::Config(_))), "{url:?}");
        }
        let r = HttpProvider::new(HttpSettings {
            url: "http://127.0.0.1:1/tts".into(),
            headers: BTreeMap::from([("X-Key".into(), "line\nbreak".into())]),
            ..HttpSettings::default()
        });
        match r {
            Err(TtsError::Config(msg)) => assert!(!msg.contains("line"), "{msg}"),
            other => panic!("expected Config error, got {other:?}"),
        }
    }

    #[test]
    fn identity_and_debug() {
        let p = provider(
            "http://127.0.0.1:9000/tts",
            HttpAudioFormat::Pcm16 {
                sample_rate: 16_000,
            },
        );
        assert_eq!(
            p.cache_identity(),
            "http|http://127.0.0.1:9000/tts|pcm16/16000"
        );
        let s = HttpSettings {
            headers: BTreeMap::from([("Authorization".into(), "Bearer secret".into())]),
            ..HttpSettings::default()
        };
        assert!(!format!("{s:?}").contains("secret"));
    }
}
