//! The RFC 3263 §4 client procedure over any [`Lookup`] (hickory in the
//! gateway, a table in the tests):
//!
//! - a numeric host needs nothing; an explicit port only A/AAAA (§4.2);
//! - a transport named by the URI or config skips NAPTR: SRV for it, then
//!   A/AAAA;
//! - otherwise NAPTR picks transports (SIP+D2U, SIP+D2T, SIPS+D2T; only
//!   SIPS for a `sips:` URI; only those we listen on), in order and
//!   preference, each followed by its SRV records; without usable NAPTR,
//!   SRV for each transport we have (UDP, then TCP; TLS for `sips:`); and
//!   without SRV, A/AAAA of the host on the default port.
//!
//! Non-terminal NAPTR records (empty flags) are followed a few hops; one
//! that comes back to a name already seen is a loop and fails the whole
//! resolution, as does a DNS timeout. Answers are capped in size and the
//! lookups per resolution are counted, so no zone can make it run long.

use std::collections::HashSet;
use std::future::Future;
use std::net::IpAddr;

use super::{Candidate, Query, Resolution, ResolveError};
use crate::sip::endpoint::Transport;

/// Non-terminal NAPTR rewrites followed before calling it a loop.
const MAX_NAPTR_HOPS: usize = 4;
/// Records used from one NAPTR or SRV answer.
const MAX_RECORDS: usize = 16;
/// Lookups one resolution may make.
const MAX_LOOKUPS: usize = 64;

/// A NAPTR record (RFC 3403), as the procedure needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naptr {
    pub order: u16,
    pub preference: u16,
    pub flags: String,
    pub service: String,
    /// The replacement domain, without the trailing dot.
    pub replacement: String,
}

/// An SRV record (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The target host, without the trailing dot ("" or "." = none).
    pub target: String,
}

/// How one lookup failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// No such name, or no records of that type.
    Empty,
    /// The server did not answer in time.
    Timeout,
    /// Anything else (refused, malformed, a CNAME loop...).
    Other(String),
}

/// The three lookups the procedure makes. Futures are `Send` so the
/// driver can run a resolution on a task of its own.
pub trait Lookup {
    fn naptr(&self, name: &str) -> impl Future<Output = Result<Vec<Naptr>, LookupError>> + Send;
    fn srv(&self, name: &str) -> impl Future<Output = Result<Vec<Srv>, LookupError>> + Send;
    fn ip(&self, name: &str) -> impl Future<Output = Result<Vec<IpAddr>, LookupError>> + Send;
}

/// Resolve `q` by RFC 3263; the candidates come unordered within an SRV
/// priority ([`super::select::order`] does that).
pub async fn resolve<L: Lookup + Sync>(dns: &L, q: &Query) -> Result<Resolution, ResolveError> {
    if let Some(t) = super::literal(q) {
        return Ok(one(t.transport, t.addr.port(), vec![t.addr.ip()]));
    }
    let mut run = Run { dns, q, lookups: 0 };
    if let Some(port) = q.port {
        let t = run.usable(q.default_transport())?;
        let addrs = run.addresses(&q.host).await?;
        return Ok(one(t, port, addrs));
    }
    if let Some(t) = q.transport {
        let t = run.usable(t)?;
        let found = run.srv_set(0, &srv_name(t, q.secure, &q.host), t).await?;
        if !found.is_empty() {
            return Ok(Resolution { candidates: found });
        }
        return run.host(t).await;
    }
    let mut candidates = Vec::new();
    let naptrs = run.naptrs().await?;
    for (set, (t, name)) in naptrs.iter().enumerate() {
        candidates.extend(run.srv_set(set, name, *t).await?);
    }
    if candidates.is_empty() {
        let transports: &[Transport] = if q.secure {
            &[Transport::Tls]
        } else {
            &[Transport::Udp, Transport::Tcp]
        };
        let base = naptrs.len();
        for (i, t) in transports
            .iter()
            .filter(|t| q.supported.has(**t))
            .enumerate()
        {
            let name = srv_name(*t, q.secure, &q.host);
            candidates.extend(run.srv_set(base + i, &name, *t).await?);
        }
    }
    if !candidates.is_empty() {
        return Ok(Resolution { candidates });
    }
    let fallback = if q.secure {
        Transport::Tls
    } else if q.supported.udp {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    let t = run.usable(fallback)?;
    run.host(t).await
}

fn one(transport: Transport, port: u16, addrs: Vec<IpAddr>) -> Resolution {
    Resolution {
        candidates: vec![Candidate {
            set: 0,
            transport,
            priority: 0,
            weight: 0,
            port,
            addrs,
        }],
    }
}

fn srv_name(t: Transport, secure: bool, host: &str) -> String {
    match (t, secure) {
        (Transport::Tls, _) => format!("_sips._tcp.{host}"),
        (Transport::Tcp, _) => format!("_sip._tcp.{host}"),
        (Transport::Udp, _) => format!("_sip._udp.{host}"),
    }
}

/// The transport a NAPTR service field names, if SIP may use it here.
fn naptr_transport(service: &str, secure: bool) -> Option<Transport> {
    let s = service.to_ascii_uppercase();
    match s.as_str() {
        "SIPS+D2T" => Some(Transport::Tls),
        "SIP+D2T" if !secure => Some(Transport::Tcp),
        "SIP+D2U" if !secure => Some(Transport::Udp),
        _ => None,
    }
}

struct Run<'a, L> {
    dns: &'a L,
    q: &'a Query,
    lookups: usize,
}

impl<L: Lookup + Sync> Run<'_, L> {
    fn usable(&self, t: Transport) -> Result<Transport, ResolveError> {
        if self.q.supported.has(t) {
            Ok(t)
        } else {
            Err(ResolveError::NoTransport(self.q.host.clone()))
        }
    }

    fn count(&mut self) -> Result<(), ResolveError> {
        self.lookups += 1;
        if self.lookups > MAX_LOOKUPS {
            return Err(ResolveError::Failed {
                name: self.q.host.clone(),
                why: format!("more than {MAX_LOOKUPS} lookups"),
            });
        }
        Ok(())
    }

    /// A timeout ends the resolution; other failures count as empty.
    fn settle<T>(&self, r: Result<Vec<T>, LookupError>) -> Result<Vec<T>, ResolveError> {
        match r {
            Ok(v) => Ok(v),
            Err(LookupError::Empty) => Ok(Vec::new()),
            Err(LookupError::Timeout) => Err(ResolveError::Timeout(self.q.host.clone())),
            Err(LookupError::Other(why)) => {
                tracing::debug!(host = %self.q.host, %why, "DNS lookup failed");
                Ok(Vec::new())
            }
        }
    }

    /// The host's own addresses on the default port of `t`.
    async fn host(&mut self, t: Transport) -> Result<Resolution, ResolveError> {
        let addrs = self.addresses(&self.q.host).await?;
        Ok(one(t, Query::default_port(t), addrs))
    }

    /// A/AAAA of `name`; none is an error.
    async fn addresses(&mut self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        self.count()?;
        match self.dns.ip(name).await {
            Ok(a) if !a.is_empty() => Ok(a),
            Ok(_) | Err(LookupError::Empty) => Err(ResolveError::NotFound(self.q.host.clone())),
            Err(LookupError::Timeout) => Err(ResolveError::Timeout(self.q.host.clone())),
            Err(LookupError::Other(why)) => Err(ResolveError::Failed {
                name: self.q.host.clone(),
                why,
            }),
        }
    }

    /// The usable NAPTR services of the host, best first, following
    /// non-terminal records.
    async fn naptrs(&mut self) -> Result<Vec<(Transport, String)>, ResolveError> {
        let mut out = Vec::new();
        let mut seen = HashSet::from([self.q.host.clone()]);
        let mut names = vec![self.q.host.clone()];
        for _hop in 0..=MAX_NAPTR_HOPS {
            let mut next = Vec::new();
            for name in names {
                self.count()?;
                let mut records = self.settle(self.dns.naptr(&name).await)?;
                records.truncate(MAX_RECORDS);
                records.sort_by_key(|r| (r.order, r.preference));
                for r in records {
                    let replacement = r.replacement.trim_end_matches('.').to_ascii_lowercase();
                    if replacement.is_empty() {
                        continue;
                    }
                    if r.flags.is_empty() {
                        // Non-terminal: the replacement has NAPTRs of its own.
                        if !seen.insert(replacement.clone()) {
                            return Err(ResolveError::Loop(self.q.host.clone()));
                        }
                        next.push(replacement);
                    } else if r.flags.eq_ignore_ascii_case("s") {
                        if let Some(t) = naptr_transport(&r.service, self.q.secure)
                            .filter(|t| self.q.supported.has(*t))
                        {
                            out.push((t, replacement));
                        }
                    }
                }
            }
            if next.is_empty() {
                return Ok(out);
            }
            names = next;
        }
        Err(ResolveError::Loop(self.q.host.clone()))
    }

    /// The SRV records at `name` with their addresses, as set `set`.
    async fn srv_set(
        &mut self,
        set: usize,
        name: &str,
        t: Transport,
    ) -> Result<Vec<Candidate>, ResolveError> {
        self.count()?;
        let mut records = self.settle(self.dns.srv(name).await)?;
        records.truncate(MAX_RECORDS);
        let mut out = Vec::new();
        for r in records {
            let target = r.target.trim_end_matches('.');
            // "." says the service is decidedly not available here.
            if target.is_empty() {
                continue;
            }
            self.count()?;
            let addrs = self.settle(self.dns.ip(target).await)?;
            if addrs.is_empty() {
                continue;
            }
            out.push(Candidate {
                set,
                transport: t,
                priority: r.priority,
                weight: r.weight,
                port: r.port,
                addrs,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::dns::Supported;
    use crate::sip::message::Uri;

    /// A zone in a table; names not in it are empty.
    #[derive(Default)]
    struct Zone {
        naptr: HashMap<String, Vec<Naptr>>,
        srv: HashMap<String, Vec<Srv>>,
        ip: HashMap<String, Vec<IpAddr>>,
        timeout: HashSet<String>,
        asked: Mutex<Vec<String>>,
    }

    impl Zone {
        fn answer<T: Clone>(
            &self,
            kind: &str,
            name: &str,
            map: &HashMap<String, Vec<T>>,
        ) -> Result<Vec<T>, LookupError> {
            self.asked.lock().unwrap().push(format!("{kind} {name}"));
            if self.timeout.contains(name) {
                return Err(LookupError::Timeout);
            }
            map.get(name).cloned().ok_or(LookupError::Empty)
        }
        fn naptr(mut self, name: &str, order: u16, flags: &str, service: &str, repl: &str) -> Zone {
            self.naptr.entry(name.into()).or_default().push(Naptr {
                order,
                preference: 10,
                flags: flags.into(),
                service: service.into(),
                replacement: repl.into(),
            });
            self
        }
        fn srv(mut self, name: &str, priority: u16, weight: u16, port: u16, target: &str) -> Zone {
            self.srv.entry(name.into()).or_default().push(Srv {
                priority,
                weight,
                port,
                target: target.into(),
            });
            self
        }
        fn a(mut self, name: &str, last: u8) -> Zone {
            self.ip
                .entry(name.into())
                .or_default()
                .push([192, 0, 2, last].into());
            self
        }
    }

    impl Lookup for Zone {
        async fn naptr(&self, name: &str) -> Result<Vec<Naptr>, LookupError> {
            self.answer("NAPTR", name, &self.naptr)
        }
        async fn srv(&self, name: &str) -> Result<Vec<Srv>, LookupError> {
            self.answer("SRV", name, &self.srv)
        }
        async fn ip(&self, name: &str) -> Result<Vec<IpAddr>, LookupError> {
            self.answer("A", name, &self.ip)
        }
    }

    const ALL: Supported = Supported {
        udp: true,
        tcp: true,
        tls: true,
    };

    fn run(zone: &Zone, uri: &str, supported: Supported) -> Result<Resolution, ResolveError> {
        let q = Query::for_uri(&Uri::parse(uri).unwrap(), None, supported);
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(resolve(zone, &q))
    }

    fn summary(r: &Resolution) -> Vec<(usize, Transport, u16, u16)> {
        r.candidates
            .iter()
            .map(|c| (c.set, c.transport, c.priority, c.port))
            .collect()
    }

    #[test]
    fn naptr_picks_the_transport_and_srv_the_hosts() {
        let zone = Zone::default()
            .naptr("example.com", 20, "s", "SIP+D2U", "_sip._udp.example.com")
            .naptr("example.com", 10, "S", "SIP+D2T", "_sip._tcp.example.com.")
            .srv("_sip._tcp.example.com", 10, 60, 5070, "a.example.com")
            .srv("_sip._tcp.example.com", 20, 0, 5071, "b.example.com")
            .srv("_sip._udp.example.com", 10, 0, 5072, "a.example.com")
            .a("a.example.com", 1)
            .a("b.example.com", 2);
        let r = run(&zone, "sip:+1555@example.com", ALL).unwrap();
        assert_eq!(
            summary(&r),
            [
                (0, Transport::Tcp, 10, 5070),
                (0, Transport::Tcp, 20, 5071),
                (1, Transport::Udp, 10, 5072)
            ]
        );
        // Without a TCP listener, the TCP records are passed over.
        let udp_only = Supported {
            udp: true,
            ..Default::default()
        };
        let r = run(&zone, "sip:+1555@example.com", udp_only).unwrap();
        assert_eq!(summary(&r), [(0, Transport::Udp, 10, 5072)]);
    }

    #[test]
    fn sips_uses_only_sips_services() {
        let zone = Zone::default()
            .naptr("example.com", 10, "s", "SIP+D2U", "_sip._udp.example.com")
            .naptr("example.com", 20, "s", "SIPS+D2T", "_sips._tcp.example.com")
            .srv("_sip._udp.example.com", 10, 0, 5060, "a.example.com")
            .srv("_sips._tcp.example.com", 10, 0, 5061, "a.example.com")
            .a("a.example.com", 1);
        let r = run(&zone, "sips:example.com", ALL).unwrap();
        assert_eq!(summary(&r), [(0, Transport::Tls, 10, 5061)]);
    }

    #[test]
    fn without_naptr_srv_per_transport_then_the_host() {
        let zone = Zone::default()
            .srv("_sip._tcp.example.com", 0, 0, 5080, "a.example.com")
            .a("a.example.com", 1)
            .a("plain.example.com", 9);
        let r = run(&zone, "sip:example.com", ALL).unwrap();
        assert_eq!(summary(&r), [(1, Transport::Tcp, 0, 5080)]);
        let r = run(&zone, "sip:plain.example.com", ALL).unwrap();
        assert_eq!(summary(&r), [(0, Transport::Udp, 0, 5060)]);
        assert_eq!(r.candidates[0].addrs, vec![IpAddr::from([192, 0, 2, 9])]);
    }

    #[test]
    fn an_explicit_port_or_transport_skips_naptr() {
        let zone = Zone::default()
            .naptr("example.com", 10, "s", "SIP+D2T", "_sip._tcp.example.com")
            .srv("_sip._tcp.example.com", 0, 0, 5080, "a.example.com")
            .a("a.example.com", 1)
            .a("example.com", 2);
        let r = run(&zone, "sip:example.com:5099", ALL).unwrap();
        assert_eq!(summary(&r), [(0, Transport::Udp, 0, 5099)]);
        assert_eq!(zone.asked.lock().unwrap().as_slice(), ["A example.com"]);
        let r = run(&zone, "sip:example.com;transport=tcp", ALL).unwrap();
        assert_eq!(summary(&r), [(0, Transport::Tcp, 0, 5080)]);
        let r = run(&zone, "sip:example.com;transport=udp", ALL).unwrap();
        assert_eq!(summary(&r), [(0, Transport::Udp, 0, 5060)]);
    }

    #[test]
    fn loops_empty_answers_and_timeouts_fail_clearly() {
        let zone = Zone::default()
            .naptr("loop.example.com", 10, "", "", "hop.example.com")
            .naptr("hop.example.com", 10, "", "", "loop.example.com")
            .a("loop.example.com", 1);
        assert_eq!(
            run(&zone, "sip:loop.example.com", ALL),
            Err(ResolveError::Loop("loop.example.com".into()))
        );
        assert_eq!(
            run(&zone, "sip:nothing.example.com", ALL),
            Err(ResolveError::NotFound("nothing.example.com".into()))
        );
        let mut zone = Zone::default();
        zone.timeout.insert("slow.example.com".into());
        assert_eq!(
            run(&zone, "sip:slow.example.com", ALL),
            Err(ResolveError::Timeout("slow.example.com".into()))
        );
        let zone = Zone::default()
            .naptr(
                "tcp.example.com",
                10,
                "s",
                "SIP+D2T",
                "_sip._tcp.tcp.example.com",
            )
            .srv("_sip._tcp.tcp.example.com", 0, 0, 5060, "a.example.com")
            .a("a.example.com", 1);
        let tls_only = Supported {
            tls: true,
            ..Default::default()
        };
        assert_eq!(
            run(&zone, "sip:tcp.example.com", tls_only),
            Err(ResolveError::NoTransport("tcp.example.com".into()))
        );
    }

    #[test]
    fn a_long_non_terminal_chain_is_a_loop_too() {
        let mut zone = Zone::default();
        for i in 0..10 {
            zone = zone.naptr(
                &format!("n{i}.example.com"),
                10,
                "",
                "",
                &format!("n{}.example.com", i + 1),
            );
        }
        assert_eq!(
            run(&zone, "sip:n0.example.com", ALL),
            Err(ResolveError::Loop("n0.example.com".into()))
        );
    }

    #[test]
    fn srv_dot_means_no_service_and_dead_targets_are_skipped() {
        let zone = Zone::default()
            .srv("_sip._udp.example.com", 0, 0, 5060, ".")
            .srv("_sip._udp.example.com", 0, 0, 5060, "gone.example.com")
            .srv("_sip._udp.example.com", 1, 0, 5062, "a.example.com")
            .a("a.example.com", 1);
        let r = run(&zone, "sip:example.com", ALL).unwrap();
        assert_eq!(summary(&r), [(0, Transport::Udp, 1, 5062)]);
    }
}
