//! OpenTelemetry export of the `call` and `chat` spans (and their children)
//! over OTLP/HTTP with protobuf, when `[telemetry] otlp_endpoint` is set.
//! Unset, nothing here is built and logging is exactly as without it.
//!
//! Spans end into the SDK's batch processor, which queues them (a full
//! queue drops, never waits) and exports from its own thread. Its HTTP
//! client is the project's reqwest, run on the tokio runtime, so no second
//! HTTP or TLS stack comes in. Failed exports are counted and logged at
//! most once a minute; [`Exporter::shutdown`] flushes what is queued.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
};
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::Layer;

use super::names;

/// One export request may take this long, retries included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the last export.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one "export failed" line per this long.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Spans waiting for export; past this they are dropped.
const MAX_QUEUED_SPANS: usize = 8_192;
/// A collector's answer is a small protobuf; more is refused unread.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The running exporter; the tracing layer comes from [`Exporter::layer`].
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Build the exporter for `traces_url` (the full `/v1/traces` URL).
    /// `node` names this gateway in the resource (`service.instance.id`);
    /// `runtime` runs the HTTP requests.
    pub fn start(
        traces_url: &str,
        node: &str,
        runtime: tokio::runtime::Handle,
    ) -> Result<Exporter, String> {
        let http = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| format!("OTLP HTTP client: {e}"))?;
        let otlp = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(traces_url)
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(TokioReqwest { http, runtime })
            .build()
            .map_err(|e| format!("OTLP exporter: {e}"))?;
        let batches = BatchSpanProcessor::builder(Counted::new(otlp))
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(MAX_QUEUED_SPANS)
                    .build(),
            )
            .build();
        let resource = Resource::builder()
            .with_service_name("crossline")
            .with_attributes([
                opentelemetry::KeyValue::new("service.instance.id", node.to_string()),
                opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            ])
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batches)
            .with_resource(resource)
            .build();
        Ok(Exporter { provider })
    }

    /// The layer that turns crossline's spans into OTel spans. Only
    /// crossline's own spans and events (info and up) go out, whatever
    /// `[logging] level` says.
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("crossline"))
            // No per-enter clock reads or thread ids: a flow's span is
            // entered at every poll.
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            // Nothing here propagates OTel context itself.
            .with_context_activation(false)
            .with_filter(Targets::new().with_target("crossline", tracing::Level::INFO))
    }

    /// Export what is queued and stop (on the way out, after the drain).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
            tracing::warn!(%e, "OTLP: final flush failed");
        }
    }
}

/// The OTLP exporter with its outcomes counted and failures logged at
/// most once per [`FAILURE_LOG_INTERVAL`].
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    failures_unlogged: AtomicU64,
    last_logged: Mutex<Option<Instant>>,
}

impl<E> Counted<E> {
    fn new(inner: E) -> Self {
        Counted {
            inner,
            failures_unlogged: AtomicU64::new(0),
            last_logged: Mutex::new(None),
        }
    }

    fn failed(&self, spans: u64, error: &dyn std::fmt::Display) {
        metrics::counter!(names::OTLP_EXPORTS, "outcome" => "failed").increment(1);
        metrics::counter!(names::OTLP_SPANS, "outcome" => "failed").increment(spans);
        let failures = self.failures_unlogged.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let mut last = self.last_logged.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|at| now.duration_since(at) >= FAILURE_LOG_INTERVAL) {
            *last = Some(now);
            self.failures_unlogged.store(0, Ordering::Relaxed);
            tracing::warn!(failures, %error, "OTLP export failed (logged at most once a minute)");
        }
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                metrics::counter!(names::OTLP_EXPORTS, "outcome" => "ok").increment(1);
                metrics::counter!(names::OTLP_SPANS, "outcome" => "exported").increment(spans);
            }
            Err(e) => self.failed(spans, e),
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// reqwest on the tokio runtime: the batch processor's thread has no
/// runtime of its own, so each request is spawned onto the gateway's and
/// awaited from there.
#[derive(Debug)]
struct TokioReqwest {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for TokioReqwest {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let http = self.http.clone();
        let task = self.runtime.spawn(async move {
            let mut reply = http.execute(request).await?;
            let mut out = Response::builder().status(reply.status());
            if let Some(headers) = out.headers_mut() {
                *headers = std::mem::take(reply.headers_mut());
            }
            let mut body = Vec::new();
            while let Some(chunk) = reply.chunk().await? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err::<_, HttpError>("collector reply too large".into());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(out.body(Bytes::from(body))?)
        });
        task.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_logged_once_a_minute_and_all_counted() {
        let counted = Counted::new(());
        counted.failed(3, &"refused");
        assert_eq!(counted.failures_unlogged.load(Ordering::Relaxed), 0);
        counted.failed(2, &"refused");
        counted.failed(1, &"refused");
        // Two more failures inside the minute: held back, not logged.
        assert_eq!(counted.failures_unlogged.load(Ordering::Relaxed), 2);
    }
}
