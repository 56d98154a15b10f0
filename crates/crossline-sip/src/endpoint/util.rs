//! Identifiers and response routing shared by the endpoint's parts.

use std::net::{IpAddr, SocketAddr};

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

use super::Peer;
use crate::message::{Request, Response, Via};

/// The endpoint's source of tags, branches, Call-IDs and CSeq starts:
/// seeded from `EndpointConfig::random_seed` so a test run replays
/// exactly, else from OS entropy. Never for secrets (digest nonces draw
/// from the OS themselves).
pub(super) fn id_rng(seed: Option<u64>) -> StdRng {
    match seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => rand::make_rng(),
    }
}

/// RFC 3261 magic cookie plus 96 random bits.
pub(super) fn new_branch(rng: &mut StdRng) -> String {
    format!("z9hG4bK{:024x}", rng.random::<u128>() >> 32)
}

pub(super) fn new_tag(rng: &mut StdRng) -> String {
    format!("{:016x}", rng.random::<u64>())
}

pub(super) fn new_call_id(rng: &mut StdRng, host: &str) -> String {
    format!("{:032x}@{host}", rng.random::<u128>())
}

/// A dialog's first local CSeq: random and small enough that it never
/// wraps (§8.1.1.5 asks for less than 2**31).
pub(super) fn first_local_seq(rng: &mut StdRng) -> u32 {
    rng.random::<u16>() as u32 + 1
}

/// RFC 3261 §18.2.1 and RFC 3581: note where the request really came from
/// in its top Via, so responses find their way back through NAT.
pub(super) fn stamp_received(req: &mut Request, source: SocketAddr) {
    let Ok(mut via) = req.headers.top_via() else {
        return;
    };
    let mut changed = false;
    let host_ip = via
        .host
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
        .ok();
    if host_ip != Some(source.ip()) {
        via.set_param("received", Some(&source.ip().to_string()));
        changed = true;
    }
    if via.rport() == Some(None) {
        via.set_param("rport", Some(&source.port().to_string()));
        changed = true;
    }
    if changed {
        replace_top_via(req, &via);
    }
}

fn replace_top_via(req: &mut Request, via: &Via) {
    let rest: Vec<String> = req
        .headers
        .get_all("Via")
        .skip(1)
        .map(str::to_string)
        .collect();
    req.headers.set("Via", via.to_string());
    for v in rest {
        req.headers.push("Via", v);
    }
}

/// RFC 3261 §18.2.2 with RFC 3581: where a response goes. Reliable
/// transports reuse the connection the request came on.
pub(super) fn response_destination(peer: Peer, resp: &Response) -> Peer {
    if peer.transport.reliable() {
        return peer;
    }
    let Ok(via) = resp.headers.top_via() else {
        return peer;
    };
    let host = via
        .received()
        .and_then(|r| r.parse::<IpAddr>().ok())
        .or_else(|| {
            via.host
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<IpAddr>()
                .ok()
        })
        .unwrap_or(peer.remote.ip());
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => via.port.unwrap_or(5060),
    };
    Peer {
        remote: SocketAddr::new(host, port),
        ..peer
    }
}

/// The sent-by part of a Via, for transaction matching.
pub(super) fn sent_by(via: &Via) -> String {
    match via.port {
        Some(p) => format!("{}:{}", via.host.to_ascii_lowercase(), p),
        None => via.host.to_ascii_lowercase(),
    }
}

/// `host:port` for Via/Contact; IPv6 in brackets.
pub(super) fn host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// RFC 2976 / common dtmf-relay body: `Signal=5\r\nDuration=160`.
pub(super) fn parse_dtmf_relay(body: &[u8]) -> Option<(char, u32)> {
    let text = std::str::from_utf8(body).ok()?;
    let mut digit = None;
    let mut duration = 100;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "signal" => {
                let v = v.trim();
                digit = match v {
                    "10" => Some('*'),
                    "11" => Some('#'),
                    _ => {
                        let mut chars = v.chars();
                        match (chars.next(), chars.next()) {
                            (Some(c), None) if "0123456789*#ABCDabcd".contains(c) => {
                                Some(c.to_ascii_uppercase())
                            }
                            _ => None,
                        }
                    }
                };
            }
            "duration" => duration = v.trim().parse().unwrap_or(100),
            _ => {}
        }
    }
    digit.map(|d| (d, duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtmf_relay_bodies() {
        assert_eq!(
            parse_dtmf_relay(b"Signal=5\r\nDuration=160\r\n"),
            Some(('5', 160))
        );
        assert_eq!(
            parse_dtmf_relay(b"Signal= #\nDuration= 250"),
            Some(('#', 250))
        );
        assert_eq!(parse_dtmf_relay(b"Signal=11"), Some(('#', 100)));
        assert_eq!(parse_dtmf_relay(b"Signal=55"), None);
        assert_eq!(parse_dtmf_relay(b"\xff\xfe"), None);
        assert_eq!(parse_dtmf_relay(b""), None);
    }

    #[test]
    fn branches_carry_the_cookie_and_differ() {
        let mut rng = id_rng(None);
        let a = new_branch(&mut rng);
        assert!(a.starts_with("z9hG4bK"));
        assert_ne!(a, new_branch(&mut rng));
    }
}
