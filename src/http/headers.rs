//! Security headers on every response of the sidecar. A handler that set
//! one (the chat and console pages set their own CSP) keeps its own.

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;

/// For what chose no policy: load nothing, be framed nowhere.
const DEFAULT_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'";
/// A policy on a script binds only when it runs as a worker, and the
/// chat's service worker fetches the app shell from here.
const SCRIPT_CSP: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'";
const HSTS: &str = "max-age=31536000";

/// `nosniff`, no referrer, no framing and a default CSP on every response.
pub fn secure(router: Router) -> Router {
    router.layer(middleware::from_fn_with_state(false, add))
}

/// HSTS as well: only for a listener that speaks HTTPS.
pub fn strict_transport(router: Router) -> Router {
    router.layer(middleware::from_fn_with_state(true, add))
}

async fn add(State(https): State<bool>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let script = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.trim_start().to_ascii_lowercase();
            ct.starts_with("text/javascript") || ct.starts_with("application/javascript")
        });
    let csp = if script { SCRIPT_CSP } else { DEFAULT_CSP };
    let mut wanted: Vec<(HeaderName, &'static str)> = vec![
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, csp),
    ];
    if https {
        wanted.push((header::STRICT_TRANSPORT_SECURITY, HSTS));
    }
    let h = resp.headers_mut();
    for (name, value) in wanted {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use hyper::service::Service as _;

    fn app() -> Router {
        Router::new()
            .route("/plain", get(|| async { "ok\n" }))
            .route(
                "/own",
                get(|| async {
                    (
                        [
                            (header::CONTENT_SECURITY_POLICY, "default-src 'self'"),
                            (header::X_FRAME_OPTIONS, "SAMEORIGIN"),
                        ],
                        "page",
                    )
                }),
            )
            .route(
                "/sw.js",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                        "",
                    )
                }),
            )
    }

    async fn get_headers(app: Router, path: &str) -> axum::http::HeaderMap {
        let svc = hyper_util::service::TowerToHyperService::new(app);
        let req = Request::get(path).body(Body::empty()).unwrap();
        svc.call(req).await.unwrap().headers().clone()
    }

    fn value(h: &axum::http::HeaderMap, name: HeaderName) -> Option<&str> {
        h.get(name).and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn every_response_gets_them_unless_it_set_its_own() {
        // Also for what no route serves.
        for path in ["/plain", "/no-such-page"] {
            let h = get_headers(secure(app()), path).await;
            assert_eq!(value(&h, header::X_CONTENT_TYPE_OPTIONS), Some("nosniff"));
            assert_eq!(value(&h, header::REFERRER_POLICY), Some("no-referrer"));
            assert_eq!(value(&h, header::X_FRAME_OPTIONS), Some("DENY"));
            assert_eq!(
                value(&h, header::CONTENT_SECURITY_POLICY),
                Some(DEFAULT_CSP)
            );
            assert_eq!(value(&h, header::STRICT_TRANSPORT_SECURITY), None);
        }
        let own = get_headers(secure(app()), "/own").await;
        assert_eq!(
            value(&own, header::CONTENT_SECURITY_POLICY),
            Some("default-src 'self'")
        );
        assert_eq!(value(&own, header::X_FRAME_OPTIONS), Some("SAMEORIGIN"));
        assert_eq!(value(&own, header::REFERRER_POLICY), Some("no-referrer"));
        // The service worker may still fetch from its own origin.
        let sw = get_headers(secure(app()), "/sw.js").await;
        assert_eq!(
            value(&sw, header::CONTENT_SECURITY_POLICY),
            Some(SCRIPT_CSP)
        );
    }

    #[tokio::test]
    async fn hsts_only_over_https() {
        let h = get_headers(strict_transport(secure(app())), "/plain").await;
        assert_eq!(value(&h, header::STRICT_TRANSPORT_SECURITY), Some(HSTS));
        assert_eq!(
            value(&h, header::CONTENT_SECURITY_POLICY),
            Some(DEFAULT_CSP)
        );
        let h = get_headers(secure(app()), "/plain").await;
        assert!(!h.contains_key(header::STRICT_TRANSPORT_SECURITY));
    }
}
