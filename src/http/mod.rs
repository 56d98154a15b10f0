//! The control-plane HTTP sidecar, on its own listener: health, readiness,
//! Prometheus metrics, the `/v1` REST API (with its OpenAPI document), and
//! the web chat (PWA) with its WebSocket.

mod api;
mod auth;
mod chat;
mod openapi;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::flow::interp::Services;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Option<PrometheusHandle>,
    /// False while starting and while draining: load balancers stop sending.
    pub ready: Arc<AtomicBool>,
    pub services: Arc<Services>,
    pub store: Arc<dyn crate::store::Store>,
    pub admin_token: Option<String>,
    pub operator_token: Option<String>,
    /// Browser origins allowed to call /v1.
    pub cors_origins: Vec<String>,
    pub chat_title: String,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api::router(&state))
        .merge(chat::router())
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
