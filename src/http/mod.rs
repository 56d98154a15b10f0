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
mod calls_api;
mod chat;
pub mod console;
pub mod guard;
mod headers;
mod hooks;
mod openapi;
mod queues;
mod queues_api;
mod recordings;
mod users;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::flow::interp::Services;
use crate::telemetry::names;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Option<PrometheusHandle>,
    /// False while starting and while draining: load balancers stop sending.
    pub ready: Arc<AtomicBool>,
    pub services: Arc<Services>,
    pub store: Arc<dyn crate::store::Store>,
    pub admin_token: Option<String>,
    pub operator_token: Option<String>,
    pub viewer_token: Option<String>,
    /// Browser origins allowed to call /v1.
    pub cors_origins: Vec<String>,
    pub chat_title: String,
    /// Operator console sessions (cookie → expiry, and the role signed in).
    pub console_sessions: Arc<dashmap::DashMap<[u8; 32], (std::time::Instant, auth::Role)>>,
    /// Client addresses and sign-in back-off.
    pub guard: guard::Guard,
    /// Outbound trunk health, as the gateway task last published it.
    pub trunks: crate::call::TrunkBoard,
    /// The registrar's users (`/v1/users`).
    pub users: Arc<crate::registrar::cluster::Directory>,
}

/// Largest request body any route takes (JSON, forms, SDP offers).
pub const MAX_BODY: usize = 64 * 1024;

/// Every route. With `with_admin = false`, the public set: no metrics and
/// no console (those then live on `[http] admin_listen`).
pub fn router(state: HttpState, with_admin: bool) -> Router {
    let mut r = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(api::router(&state))
        .merge(chat::router())
        .merge(hooks::router());
    if with_admin {
        r = r.route("/metrics", get(metrics)).merge(console::router());
    }
    let guard = state.guard.clone();
    let app = r
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            guard.clone(),
            guard::sign_in_layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            guard,
            guard::client_ip_layer,
        ))
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
/// or started on another node). With `key` (a visitor's), only the
/// conversation that key opens.
pub(crate) async fn conversation(
    state: &HttpState,
    id: &str,
    key: Option<&str>,
) -> Option<std::sync::Arc<crate::chat::Conversation>> {
    let chat = &state.services.chat;
    match key {
        Some(k) => chat.open_with_key(id, k).await,
        None => chat.get_or_restore(id).await,
    }
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

/// How a listener holds its connections.
#[derive(Clone)]
pub struct ServeLimits {
    pub max_connections: usize,
    pub max_connections_per_source: usize,
    /// A client must send a request's whole head within this (slowloris).
    pub header_read_timeout: std::time::Duration,
    /// And its body within this.
    pub body_timeout: std::time::Duration,
    pub trusted_proxies: Arc<Vec<crate::net::Cidr>>,
}

/// Serve `app` until the process ends, over HTTPS when `tls` is given.
/// Each connection runs in its own task (a TLS handshake bounded in
/// time), under the listener's caps; WebSocket upgrades work.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    limits: ServeLimits,
) {
    let https = tls.is_some();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let caps = crate::net::SlotCaps::new(
        limits.max_connections,
        limits.max_connections_per_source,
        limits.trusted_proxies.clone(),
    );
    let mut app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_timeout,
    ));
    if https {
        app = headers::strict_transport(app);
    }
    loop {
        let Ok((tcp, remote)) = listener.accept().await else {
            // Out of file descriptors, most likely: don't spin.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let slot = match crate::net::SlotCaps::take(&caps, remote.ip()) {
            Ok(slot) => slot,
            Err(which) => {
                metrics::counter!(names::HTTP_CONNECTIONS_REFUSED, "cap" => which.as_str())
                    .increment(1);
                drop(tcp);
                continue;
            }
        };
        // Handlers see the client's address through ConnectInfo.
        let app = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(remote)));
        let acceptor = acceptor.clone();
        let header_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper_util::service::TowerToHyperService::new(app);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(64 * 1024);
            match acceptor {
                None => {
                    let _ = builder
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .with_upgrades()
                        .await;
                }
                Some(acceptor) => {
                    let shake = tokio::time::timeout(header_timeout, acceptor.accept(tcp));
                    let Ok(Ok(stream)) = shake.await else {
                        metrics::counter!(names::HTTP_TLS_HANDSHAKE_FAILURES).increment(1);
                        return;
                    };
                    let _ = builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                }
            }
        });
    }
}
