//! HTTP plumbing shared by the adapters: client, capped body reads, and the
//! transient cases (5xx, 429, transport) that all providers treat alike.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use super::retry::{Outcome, RetryPolicy};
use super::SendError;

/// Provider answers are small JSON; anything bigger is cut.
const BODY_CAP: usize = 64 * 1024;

pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, SendError> {
    // reqwest is built without a default crypto provider and panics when
    // building a client without one; main installs ring, tests may not.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
        .timeout(timeout)
        // A redirected POST would become a GET and could carry our
        // credentials to another host.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| SendError::Config(format!("cannot build HTTP client: {e}")))
}

pub(crate) fn parse_url(url: &str) -> Result<reqwest::Url, String> {
    if url.trim().is_empty() {
        return Err("URL is empty".into());
    }
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| format!("not a valid URL ({e})"))?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(format!("scheme {other:?} is not http or https")),
    }
}

/// A header marked sensitive (kept out of reqwest's Debug). The value is
/// not echoed in the error: it is usually a credential.
pub(crate) fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name_h = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| format!("value of header {name:?} has characters not allowed in HTTP"))?;
    value.set_sensitive(true);
    Ok((name_h, value))
}

/// One answer, read.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub retry_after: Option<Duration>,
    /// At most [`BODY_CAP`] bytes; empty when the body could not be read.
    pub body: Vec<u8>,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends and reads the answer. `Err` only when no status line came back.
pub(crate) async fn execute(req: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
    let mut resp = req.send().await?;
    let status = resp.status().as_u16();
    let retry_after = parse_retry_after(resp.headers());
    let mut body = Vec::new();
    // A body that breaks off mid-way still leaves the status to act on.
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = BODY_CAP.saturating_sub(body.len());
        body.extend(chunk.iter().take(room));
        if body.len() >= BODY_CAP {
            break;
        }
    }
    Ok(Reply {
        status,
        retry_after,
        body,
    })
}

/// Delay-seconds form only; an HTTP-date is treated as absent, so such a
/// 429 is returned rather than retried.
fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// No answer at all: connection refused or reset, timeout. Retried.
pub(crate) fn transport_failure<T>(e: reqwest::Error, timeout: Duration) -> Outcome<T> {
    if e.is_builder() {
        return Outcome::Fatal(SendError::Config(format!(
            "cannot build request: {}",
            e.without_url()
        )));
    }
    let message = if e.is_timeout() {
        format!("no answer within {timeout:?}")
    } else {
        crate::net::http_error_text(e)
    };
    Outcome::Retry(SendError::Unavailable { message }, None)
}

/// 5xx and 429 are handled the same for every provider; `None` for the
/// rest, which the adapter maps from its own error body. `message` is the
/// provider's (scrubbed) error text.
pub(crate) fn transient<T>(
    reply: &Reply,
    policy: &RetryPolicy,
    message: &str,
) -> Option<Outcome<T>> {
    let status = reply.status;
    let short_wait = reply.retry_after.filter(|d| *d <= policy.max_retry_after);
    if (500..600).contains(&status) {
        let e = SendError::Unavailable {
            message: format!("HTTP {status}: {message}"),
        };
        return Some(Outcome::Retry(e, short_wait));
    }
    if status == 429 {
        let e = SendError::RateLimited {
            retry_after: reply.retry_after,
            message: message.to_owned(),
        };
        return Some(match short_wait {
            Some(wait) => Outcome::Retry(e, Some(wait)),
            None => Outcome::Fatal(e),
        });
    }
    None
}

/// Status words for errors without a usable body.
pub(crate) fn fallback_message(reply: &Reply, to: &str) -> String {
    let text = super::scrub(&reply.text(), to);
    if text.is_empty() {
        format!("HTTP {}", reply.status)
    } else {
        text
    }
}
