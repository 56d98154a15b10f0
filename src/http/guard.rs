//! Who is asking, and how much they may try: the client's address (from
//! `X-Forwarded-For` only when the connection comes from a configured
//! proxy), failed sign-ins per client with exponential back-off, and the
//! connection caps of the listener.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Extension;

use crate::net::Cidr;
use crate::telemetry::names;

/// The address a request is from, as far as we can trust it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The client of a connection from `peer`: the peer itself, unless it is
/// a trusted proxy; then the right-most `X-Forwarded-For` entry that is
/// not a trusted proxy (entries left of it could be forged by the client).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .collect();
    hops.iter()
        .rev()
        .copied()
        .find(|ip| !is_trusted(*ip))
        .or_else(|| hops.first().copied())
        .unwrap_or(peer)
}

/// Failed sign-ins per client, sans-IO. The first `free` failures cost
/// nothing; each one after blocks the client for twice as long as the
/// last (1 s, 2 s, 4 s … up to `max_block`). A quiet client is forgotten.
/// Keyed by client, so one client's guesses never block another's right
/// credential.
pub struct SignInThrottle {
    free: u32,
    max_block: Duration,
    clients: HashMap<IpAddr, Strikes>,
    last_sweep: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    blocked_until: Option<Instant>,
    last: Instant,
}

impl SignInThrottle {
    pub fn new(free: u32, max_block: Duration) -> SignInThrottle {
        SignInThrottle {
            free,
            max_block,
            clients: HashMap::new(),
            last_sweep: None,
        }
    }

    /// `Err(retry after)` while the client is blocked.
    pub fn check(&mut self, now: Instant, client: IpAddr) -> Result<(), Duration> {
        let client = crate::net::source_key(client);
        self.sweep(now);
        match self.clients.get(&client).and_then(|s| s.blocked_until) {
            Some(until) if now < until => Err(until - now),
            _ => Ok(()),
        }
    }

    pub fn failed(&mut self, now: Instant, client: IpAddr) {
        let client = crate::net::source_key(client);
        if self.clients.len() >= 100_000 && !self.clients.contains_key(&client) {
            self.sweep_now(now);
        }
        let s = self.clients.entry(client).or_insert(Strikes {
            failures: 0,
            blocked_until: None,
            last: now,
        });
        s.failures = s.failures.saturating_add(1);
        s.last = now;
        if s.failures > self.free {
            let doublings = (s.failures - self.free - 1).min(20);
            let block = Duration::from_secs(1)
                .checked_mul(1 << doublings)
                .unwrap_or(self.max_block)
                .min(self.max_block);
            s.blocked_until = Some(now + block);
        }
    }

    pub fn succeeded(&mut self, client: IpAddr) {
        self.clients.remove(&crate::net::source_key(client));
    }

    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(30))
        {
            return;
        }
        self.sweep_now(now);
    }

    fn sweep_now(&mut self, now: Instant) {
        self.last_sweep = Some(now);
        let forget = self.max_block.max(Duration::from_secs(300));
        self.clients.retain(|_, s| {
            s.blocked_until.is_some_and(|t| now < t)
                || now.saturating_duration_since(s.last) < forget
        });
    }
}

/// Sign-ins one client may get wrong before back-off starts.
pub const FREE_SIGN_IN_FAILURES: u32 = 5;
/// The longest a client is made to wait.
pub const MAX_SIGN_IN_BLOCK: Duration = Duration::from_secs(900);

/// What the middlewares share.
#[derive(Clone)]
pub struct Guard {
    pub trusted_proxies: Arc<Vec<Cidr>>,
    pub sign_in: Arc<Mutex<SignInThrottle>>,
}

impl Guard {
    pub fn new(trusted_proxies: Vec<Cidr>) -> Guard {
        Guard {
            trusted_proxies: Arc::new(trusted_proxies),
            sign_in: Arc::new(Mutex::new(SignInThrottle::new(
                FREE_SIGN_IN_FAILURES,
                MAX_SIGN_IN_BLOCK,
            ))),
        }
    }
}

/// Put the request's `ClientIp` in its extensions.
pub async fn client_ip_layer(State(guard): State<Guard>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let ip = client_ip(peer, req.headers(), &guard.trusted_proxies);
    req.extensions_mut().insert(ClientIp(ip));
    next.run(req).await
}

/// Does this request try a credential? A bearer token anywhere, or the
/// console's sign-in form.
fn tries_credential(req: &Request) -> bool {
    req.headers().contains_key(header::AUTHORIZATION)
        || (req.method() == Method::POST && req.uri().path() == "/v1/console/session")
}

/// Throttle wrong credentials per client: while a client is backing off,
/// its credentialed requests get 429 without being checked; a 401 counts
/// as a failure, anything else as a success.
pub async fn sign_in_layer(
    State(guard): State<Guard>,
    client: Option<Extension<ClientIp>>,
    req: Request,
    next: Next,
) -> Response {
    if !tries_credential(&req) {
        return next.run(req).await;
    }
    let client = client.map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0 .0);
    let blocked = guard
        .sign_in
        .lock()
        .map(|mut t| t.check(Instant::now(), client))
        .unwrap_or(Ok(()));
    if let Err(wait) = blocked {
        metrics::counter!(names::HTTP_AUTH_FAILURES, "reason" => "throttled").increment(1);
        let mut r = super::api::error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed sign-ins; try again later",
        );
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs().max(1)),
        );
        return r;
    }
    let response = next.run(req).await;
    if let Ok(mut t) = guard.sign_in.lock() {
        match response.status() {
            StatusCode::UNAUTHORIZED => {
                t.failed(Instant::now(), client);
                metrics::counter!(names::HTTP_SIGN_IN_FAILURES).increment(1);
            }
            s if s.is_success() => t.succeeded(client),
            _ => {}
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let trusted = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.5, 10.0.0.7".parse().unwrap());
        // From the proxy: the first hop that isn't one of ours.
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("203.0.113.5"));
        // From anyone else: the header is ignored (it could be forged).
        assert_eq!(
            client_ip(ip("198.51.100.1"), &h, &trusted),
            ip("198.51.100.1")
        );
        // A client forging a hop left of the real one doesn't move it.
        h.insert("x-forwarded-for", "1.2.3.4, 203.0.113.9".parse().unwrap());
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("203.0.113.9"));
        // Garbage: the proxy itself.
        h.insert("x-forwarded-for", "not-an-ip".parse().unwrap());
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn back_off_doubles_per_client_and_a_success_clears_it() {
        let t0 = Instant::now();
        let mut t = SignInThrottle::new(2, Duration::from_secs(8));
        let a = ip("192.0.2.1");
        let b = ip("192.0.2.2");
        t.failed(t0, a);
        t.failed(t0, a);
        assert!(t.check(t0, a).is_ok(), "free failures");
        t.failed(t0, a);
        assert_eq!(t.check(t0, a), Err(Duration::from_secs(1)));
        // Another client is not touched by a's failures.
        assert!(t.check(t0, b).is_ok());
        let t1 = t0 + Duration::from_secs(1);
        assert!(t.check(t1, a).is_ok());
        t.failed(t1, a);
        assert_eq!(t.check(t1, a), Err(Duration::from_secs(2)));
        for _ in 0..10 {
            t.failed(t1, a);
        }
        assert_eq!(t.check(t1, a), Err(Duration::from_secs(8)), "capped");
        t.succeeded(a);
        assert!(t.check(t1, a).is_ok());
    }
}
