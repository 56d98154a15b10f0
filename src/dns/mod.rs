//! Where a SIP URI sends us (RFC 3263): NAPTR, then SRV, then A/AAAA.
//!
//! Split like the rest of crossline. The lookups are I/O and run on tokio
//! in the driver ([`Resolver`], hickory-resolver with its TTL cache); they
//! return every place found, unordered within its SRV priority. What call
//! control does with that answer is sans-IO: [`select::order`] puts the
//! targets in RFC 2782 order with call control's seeded generator, and
//! [`backoff::Backoff`] skips targets that failed lately. A URI with a
//! numeric host needs no lookup at all ([`literal`]).

pub mod backoff;
mod procedure;
mod resolver;
pub mod select;

use std::net::{IpAddr, SocketAddr};

use crate::sip::endpoint::Transport;
use crate::sip::message::Uri;

pub use procedure::{resolve, Lookup, LookupError, Naptr, Srv};
pub use resolver::{Resolver, ResolverSettings};

/// The transports we can send on (we have a listener for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Supported {
    pub udp: bool,
    pub tcp: bool,
    pub tls: bool,
}

impl Supported {
    pub fn has(self, t: Transport) -> bool {
        match t {
            Transport::Udp => self.udp,
            Transport::Tcp => self.tcp,
            Transport::Tls => self.tls,
        }
    }
}

/// What to resolve: a SIP URI's host, and what constrains the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Host name or address, lower-cased, without IPv6 brackets.
    pub host: String,
    /// An explicit port: no NAPTR or SRV (RFC 3263 §4.2).
    pub port: Option<u16>,
    /// A `sips:` URI: TLS only.
    pub secure: bool,
    /// Named by the URI's `transport` parameter or by config: no NAPTR.
    pub transport: Option<Transport>,
    pub supported: Supported,
}

impl Query {
    /// The query for `uri`; `forced` (a trunk's configured transport) wins
    /// over the URI's `transport` parameter.
    pub fn for_uri(uri: &Uri, forced: Option<Transport>, supported: Supported) -> Query {
        let secure = uri.scheme.eq_ignore_ascii_case("sips");
        let named = match Transport::of_uri(uri) {
            // sips: alone says TLS, which NAPTR may still refine.
            Some(Transport::Tls) if secure && uri.param("transport").is_none() => None,
            t => t,
        };
        Query {
            host: uri
                .host
                .trim_matches(|c| c == '[' || c == ']')
                .to_ascii_lowercase(),
            port: uri.port,
            secure,
            transport: forced.or(named),
            supported,
        }
    }

    /// The transport when neither DNS nor the URI picks one (§4.1).
    fn default_transport(&self) -> Transport {
        self.transport.unwrap_or(if self.secure {
            Transport::Tls
        } else {
            Transport::Udp
        })
    }

    fn default_port(transport: Transport) -> u16 {
        match transport {
            Transport::Tls => 5061,
            _ => 5060,
        }
    }
}

/// One place the procedure found: an SRV target (or the host itself)
/// with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The NAPTR record (or SRV query) it came from; lower sets first.
    pub set: usize,
    pub transport: Transport,
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub addrs: Vec<IpAddr>,
}

/// Everything a lookup found for a query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolution {
    pub candidates: Vec<Candidate>,
}

/// One address to send to, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub addr: SocketAddr,
    pub transport: Transport,
}

/// Why a destination could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("{0}: no NAPTR, SRV or A/AAAA records")]
    NotFound(String),
    #[error("{0}: its NAPTR records loop")]
    Loop(String),
    #[error("{0}: the DNS server did not answer in time")]
    Timeout(String),
    #[error("{0}: no transport we listen on (NAPTR/SRV offer only others)")]
    NoTransport(String),
    #[error("{name}: lookup failed: {why}")]
    Failed { name: String, why: String },
}

impl ResolveError {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ResolveError::NotFound(_) => "not_found",
            ResolveError::Loop(_) => "loop",
            ResolveError::Timeout(_) => "timeout",
            ResolveError::NoTransport(_) => "no_transport",
            ResolveError::Failed { .. } => "error",
        }
    }
}

/// A query with a numeric host needs no DNS: its one target.
pub fn literal(query: &Query) -> Option<Target> {
    let ip = query.host.parse::<IpAddr>().ok()?;
    let transport = query.default_transport();
    Some(Target {
        addr: SocketAddr::new(ip, query.port.unwrap_or(Query::default_port(transport))),
        transport,
    })
}

/// Whether `uri` is somewhere we can send calls: a `sip:`/`sips:` URI
/// whose host is an IP address or a DNS name (looked up when used). The
/// error never repeats the URI (it may hold a password).
pub fn check_destination(uri: &str) -> Result<Uri, String> {
    let parsed = Uri::parse(uri).map_err(|_| "not a SIP URI".to_string())?;
    if !matches!(parsed.scheme.as_str(), "sip" | "sips") {
        return Err("not a SIP URI (sip: or sips:)".into());
    }
    if !valid_host(&parsed.host) {
        return Err("its host is neither an IP address nor a DNS name".into());
    }
    Ok(parsed)
}

/// Whether `host` can be looked up: an IP address, or letters, digits,
/// hyphens and dots in labels of at most 63 (253 in all).
pub fn valid_host(host: &str) -> bool {
    let host = host.trim_matches(|c| c == '[' || c == ']');
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Supported = Supported {
        udp: true,
        tcp: true,
        tls: true,
    };

    fn query(uri: &str) -> Query {
        Query::for_uri(&Uri::parse(uri).unwrap(), None, ALL)
    }

    #[test]
    fn numeric_hosts_skip_dns_with_rfc_3263_defaults() {
        let t = literal(&query("sip:agent@192.0.2.1")).unwrap();
        assert_eq!(t.addr, "192.0.2.1:5060".parse().unwrap());
        assert_eq!(t.transport, Transport::Udp);
        let t = literal(&query("sips:agent@[2001:db8::1]")).unwrap();
        assert_eq!(t.addr, "[2001:db8::1]:5061".parse().unwrap());
        assert_eq!(t.transport, Transport::Tls);
        let t = literal(&query("sip:agent@192.0.2.1:5070;transport=tcp")).unwrap();
        assert_eq!(t.addr, "192.0.2.1:5070".parse().unwrap());
        assert_eq!(t.transport, Transport::Tcp);
        assert_eq!(literal(&query("sip:pstn.example.com")), None);
    }

    #[test]
    fn config_transport_wins_and_sips_alone_leaves_naptr_free() {
        let q = Query::for_uri(
            &Uri::parse("sip:Carrier.Example.com;transport=udp").unwrap(),
            Some(Transport::Tcp),
            ALL,
        );
        assert_eq!(q.transport, Some(Transport::Tcp));
        assert_eq!(q.host, "carrier.example.com");
        let q = query("sips:carrier.example.com");
        assert!(q.secure);
        assert_eq!(q.transport, None);
    }

    #[test]
    fn host_names_are_checked() {
        for ok in [
            "pstn.example.com",
            "a-b.example",
            "_sip._udp.x",
            "10.0.0.1",
            "[::1]",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in ["", "a..b", "-a.b", "a b", "exa$mple.com", &"x".repeat(64)] {
            assert!(!valid_host(bad), "{bad}");
        }
    }
}
