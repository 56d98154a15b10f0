//! The control-plane HTTP sidecar, on its own listener: health, readiness,
//! Prometheus metrics, the `/v1` REST API (with its OpenAPI document), and
//! the web chat (PWA) with its WebSocket.

/// Return the refusal unless the request carries `$role`'s credentials.
macro_rules! guard {
    ($state:expr, $headers:expr, $role:expr) => {
        if let Err(r) = $crate::http::auth::check(&$state, &$headers, $role) {
            return r;
        }
    };
}

/// The value, or return the ready-made error response.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

mod api;
mod auth;
mod callbacks;
mod chat;
pub mod console;
mod headers;
mod hooks;
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
    /// Operator console sessions (cookie → expiry).
    pub console_sessions: Arc<dashmap::DashMap<[u8; 32], std::time::Instant>>,
    /// Failed console sign-ins per client address, to slow guessing.
    pub login_failures: Arc<std::sync::Mutex<crate::callback::limits::RateWindow>>,
}

pub fn router(state: HttpState) -> Router {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api::router(&state))
        .merge(chat::router())
        .merge(hooks::router())
        .merge(console::router())
        .with_state(state);
    headers::secure(app)
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

/// A conversation, live or brought back from the store (after a restart,
/// or started on another node), off the async threads. With `key` (a
/// visitor's), only the conversation that key opens.
pub(crate) async fn conversation(
    state: &HttpState,
    id: &str,
    key: Option<&str>,
) -> Option<std::sync::Arc<crate::chat::Conversation>> {
    let chat = state.services.chat.clone();
    if let Some(c) = chat.get(id) {
        return match key {
            Some(k) => c.key_matches(k).then_some(c),
            None => Some(c),
        };
    }
    let id = id.to_string();
    let key = key.map(str::to_string);
    tokio::task::spawn_blocking(move || match key {
        Some(k) => chat.open_with_key(&id, &k),
        None => chat.get_or_restore(&id),
    })
    .await
    .ok()
    .flatten()
}

/// A browser's WebSocket handshake carries `Origin`; one from another site
/// is refused (cross-site WebSocket hijacking). Clients that send no
/// `Origin` (not browsers) are not affected.
pub(crate) fn same_origin(headers: &axum::http::HeaderMap, public_base_url: &str) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    origin_host.is_some_and(|o| Some(o) == host)
        || origin.trim_end_matches('/') == public_base_url.trim_end_matches('/')
}

/// Serve until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: HttpState) {
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(%e, "HTTP server stopped");
    }
}

/// The same routes over HTTPS (rustls): each connection's handshake runs
/// in its own task, bounded in time; WebSocket upgrades work as over HTTP.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    state: HttpState,
    tls: std::sync::Arc<rustls::ServerConfig>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = headers::strict_transport(router(state));
    loop {
        let Ok((tcp, remote)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        // Handlers see the client's address as over plain HTTP.
        let app = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(remote)));
        tokio::spawn(async move {
            let shake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
            let Ok(Ok(stream)) = shake.await else {
                metrics::counter!("crossline_http_tls_handshake_failures_total").increment(1);
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
