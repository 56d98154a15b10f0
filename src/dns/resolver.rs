//! The lookups on tokio, by hickory-resolver: `[sip] dns_servers` or
//! `/etc/resolv.conf`, with hickory's cache keeping each answer for its
//! TTL within `[sip]`'s bounds (negative answers too, for at most
//! `dns_negative_ttl_secs`). Every lookup is counted by type and result.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::TokioResolver;
use metrics::counter;

use super::procedure::{Lookup, LookupError, Naptr, Srv};
use super::{Query, Resolution, ResolveError};
use crate::telemetry::names;

/// How the resolver is set up, from `[sip]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolverSettings {
    /// Servers to ask; empty: those in `/etc/resolv.conf`.
    pub servers: Vec<SocketAddr>,
    /// How long one query waits for its answer (it is sent twice).
    pub timeout: Duration,
    /// Answers kept in the cache.
    pub cache_size: usize,
    /// Bounds on how long a positive answer is cached, whatever its TTL.
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    /// Longest a negative answer (no such name, no records) is cached.
    pub negative_ttl: Duration,
}

impl ResolverSettings {
    pub fn from_config(sip: &crate::config::SipConfig) -> ResolverSettings {
        ResolverSettings {
            servers: sip.dns_server_addrs(),
            timeout: Duration::from_millis(sip.dns_timeout_ms),
            cache_size: sip.dns_cache_size,
            min_ttl: Duration::from_secs(sip.dns_cache_min_ttl_secs),
            max_ttl: Duration::from_secs(sip.dns_cache_max_ttl_secs),
            negative_ttl: Duration::from_secs(sip.dns_negative_ttl_secs),
        }
    }

    /// The longest one resolution may take: a few queries' worth, so a
    /// call never waits on DNS for long.
    pub fn deadline(&self) -> Duration {
        self.timeout.saturating_mul(4)
    }
}

/// Shared by every resolution the driver runs.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
    deadline: Duration,
}

impl Resolver {
    /// A resolver on `settings`; `/etc/resolv.conf` is read now when no
    /// servers are configured (if it can't be, names don't resolve and
    /// the error says why).
    pub fn new(settings: &ResolverSettings) -> Resolver {
        let (config, mut opts) = if settings.servers.is_empty() {
            match hickory_resolver::system_conf::read_system_conf() {
                Ok((config, mut opts)) => {
                    opts.use_hosts_file = ResolveHosts::Always;
                    (config, opts)
                }
                Err(e) => {
                    tracing::warn!(%e, "cannot read /etc/resolv.conf: SIP host names will not resolve (set [sip] dns_servers)");
                    (ResolverConfig::new(), ResolverOpts::default())
                }
            }
        } else {
            let mut group = NameServerConfigGroup::new();
            for addr in &settings.servers {
                group.merge(NameServerConfigGroup::from_ips_clear(
                    &[addr.ip()],
                    addr.port(),
                    true,
                ));
            }
            let mut opts = ResolverOpts::default();
            opts.use_hosts_file = ResolveHosts::Never;
            (ResolverConfig::from_parts(None, Vec::new(), group), opts)
        };
        opts.timeout = settings.timeout;
        opts.attempts = 1;
        opts.cache_size = settings.cache_size;
        opts.positive_min_ttl = Some(settings.min_ttl);
        opts.positive_max_ttl = Some(settings.max_ttl);
        opts.negative_min_ttl = Some(Duration::ZERO);
        opts.negative_max_ttl = Some(settings.negative_ttl);
        let inner = TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(opts)
            .build();
        Resolver {
            inner,
            deadline: settings.deadline(),
        }
    }

    /// Resolve `q` by RFC 3263, within the deadline.
    pub async fn resolve(&self, q: &Query) -> Result<Resolution, ResolveError> {
        let r = match tokio::time::timeout(self.deadline, super::resolve(self, q)).await {
            Ok(r) => r,
            Err(_) => Err(ResolveError::Timeout(q.host.clone())),
        };
        if let Err(e) = &r {
            counter!(names::DNS_FAILURES, "reason" => e.reason()).increment(1);
        }
        r
    }

    async fn query(&self, name: &str, kind: RecordType) -> Result<Vec<RData>, LookupError> {
        // Fully qualified: search domains never apply to SIP hosts.
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        let r = self.inner.lookup(fqdn.as_str(), kind).await;
        let label = match kind {
            RecordType::NAPTR => "naptr",
            RecordType::SRV => "srv",
            _ => "address",
        };
        let r = r
            .map(|l| l.iter().cloned().collect::<Vec<_>>())
            .map_err(|e| {
                if e.is_no_records_found() || e.is_nx_domain() {
                    LookupError::Empty
                } else if e
                    .proto()
                    .is_some_and(|p| matches!(p.kind(), ProtoErrorKind::Timeout))
                {
                    LookupError::Timeout
                } else {
                    LookupError::Other(e.to_string())
                }
            });
        let result = match &r {
            Ok(v) if v.is_empty() => "empty",
            Ok(_) => "ok",
            Err(LookupError::Empty) => "empty",
            Err(LookupError::Timeout) => "timeout",
            Err(LookupError::Other(_)) => "error",
        };
        counter!(names::DNS_LOOKUPS, "type" => label, "result" => result).increment(1);
        r
    }
}

fn trim(name: &hickory_resolver::Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

impl Lookup for Resolver {
    async fn naptr(&self, name: &str) -> Result<Vec<Naptr>, LookupError> {
        Ok(self
            .query(name, RecordType::NAPTR)
            .await?
            .into_iter()
            .filter_map(|r| match r {
                RData::NAPTR(n) => Some(Naptr {
                    order: n.order(),
                    preference: n.preference(),
                    flags: String::from_utf8_lossy(n.flags()).into_owned(),
                    service: String::from_utf8_lossy(n.services()).into_owned(),
                    replacement: trim(n.replacement()),
                }),
                _ => None,
            })
            .collect())
    }

    async fn srv(&self, name: &str) -> Result<Vec<Srv>, LookupError> {
        Ok(self
            .query(name, RecordType::SRV)
            .await?
            .into_iter()
            .filter_map(|r| match r {
                RData::SRV(s) => Some(Srv {
                    priority: s.priority(),
                    weight: s.weight(),
                    port: s.port(),
                    target: trim(s.target()),
                }),
                _ => None,
            })
            .collect())
    }

    async fn ip(&self, name: &str) -> Result<Vec<IpAddr>, LookupError> {
        let v4 = match self.query(name, RecordType::A).await {
            Err(LookupError::Empty) => Vec::new(),
            r => r?,
        };
        let v4: Vec<IpAddr> = v4
            .into_iter()
            .filter_map(|r| match r {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                _ => None,
            })
            .collect();
        if !v4.is_empty() {
            return Ok(v4);
        }
        // IPv6 only when there is no IPv4 address (one query in the
        // common case).
        Ok(self
            .query(name, RecordType::AAAA)
            .await?
            .into_iter()
            .filter_map(|r| match r {
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect())
    }
}
