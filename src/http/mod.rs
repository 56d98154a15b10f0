//! The control-plane HTTP sidecar. Today: health, readiness and metrics.
//! The REST API, web chat and operator console grow here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Option<PrometheusHandle>,
    /// False while starting and while draining: load balancers stop sending.
    pub ready: Arc<AtomicBool>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    let body = s.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// Serve until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: HttpState) {
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::error!(%e, "HTTP server stopped");
    }
}
