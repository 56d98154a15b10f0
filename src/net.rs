//! Small network helpers shared by config and the SIP layer.

use std::net::IpAddr;

/// An IP network such as `192.0.2.0/24` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("not an IP address: {addr:?}"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("prefix length must be 0..={max}: {p:?}"))?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The "source" per-source limits count: the address itself for IPv4,
/// its /64 for IPv6 (one subscriber's line holds a whole /64, so counting
/// single v6 addresses would let one attacker be 2^64 sources). IPv4
/// mapped into IPv6 counts as the IPv4 address.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
    }
}

/// Places for connections, in all and per source (`source_key`); a
/// source inside `exempt` counts only toward the total. Each place is a
/// `Slot`, given back when dropped.
pub struct SlotCaps {
    max: usize,
    per_source: usize,
    exempt: std::sync::Arc<Vec<Cidr>>,
    open: std::sync::Mutex<(usize, std::collections::HashMap<IpAddr, usize>)>,
}

/// Why `SlotCaps::take` refused; `as_str` names it in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefusal {
    Total,
    PerSource,
}

impl SlotRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotRefusal::Total => "total",
            SlotRefusal::PerSource => "per_source",
        }
    }
}

/// One connection's place under its `SlotCaps`.
pub struct Slot {
    caps: std::sync::Arc<SlotCaps>,
    key: Option<IpAddr>,
}

impl SlotCaps {
    pub fn new(
        max: usize,
        per_source: usize,
        exempt: std::sync::Arc<Vec<Cidr>>,
    ) -> std::sync::Arc<SlotCaps> {
        std::sync::Arc::new(SlotCaps {
            max: max.max(1),
            per_source: per_source.max(1),
            exempt,
            open: std::sync::Mutex::new((0, std::collections::HashMap::new())),
        })
    }

    /// A place for a connection from `ip`, or why not.
    pub fn take(caps: &std::sync::Arc<SlotCaps>, ip: IpAddr) -> Result<Slot, SlotRefusal> {
        let mut open = caps.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.0 >= caps.max {
            return Err(SlotRefusal::Total);
        }
        let key = (!caps.exempt.iter().any(|c| c.contains(ip))).then(|| source_key(ip));
        if let Some(key) = key {
            let n = open.1.entry(key).or_default();
            if *n >= caps.per_source {
                return Err(SlotRefusal::PerSource);
            }
            *n += 1;
        }
        open.0 += 1;
        Ok(Slot {
            caps: caps.clone(),
            key,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.caps.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(key) = self.key {
            if let Some(n) = open.1.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.1.remove(&key);
                }
            }
        }
    }
}

/// What went wrong with an HTTP request, without its URL: URLs carry ids,
/// phone numbers and tokens in their paths and queries. The chain of
/// causes says what failed (refused, reset, TLS...).
pub fn http_error_text(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_sources_count_by_their_64() {
        assert_eq!(source_key(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(source_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            source_key(ip("2001:db8:1:2:ffff::9")),
            source_key(ip("2001:db8:1:2::1"))
        );
        assert_ne!(source_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(source_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn slots_per_source_and_in_all() {
        let exempt = std::sync::Arc::new(vec![Cidr::parse("10.0.0.1/32").unwrap()]);
        let caps = SlotCaps::new(5, 2, exempt);
        let s1 = SlotCaps::take(&caps, ip("192.0.2.1")).unwrap();
        let _s2 = SlotCaps::take(&caps, ip("192.0.2.1")).unwrap();
        assert_eq!(
            SlotCaps::take(&caps, ip("192.0.2.1")).err(),
            Some(SlotRefusal::PerSource)
        );
        drop(s1);
        let _s3 = SlotCaps::take(&caps, ip("192.0.2.1")).unwrap();
        // One /64 is one source.
        let _v1 = SlotCaps::take(&caps, ip("2001:db8::1")).unwrap();
        let _v2 = SlotCaps::take(&caps, ip("2001:db8::2")).unwrap();
        assert_eq!(
            SlotCaps::take(&caps, ip("2001:db8::3")).err(),
            Some(SlotRefusal::PerSource)
        );
        // The exempt proxy counts toward the total only.
        let _p1 = SlotCaps::take(&caps, ip("10.0.0.1")).unwrap();
        assert_eq!(
            SlotCaps::take(&caps, ip("10.0.0.1")).err(),
            Some(SlotRefusal::Total)
        );
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("192.0.2.0/24").unwrap();
        assert!(c.contains("192.0.2.77".parse().unwrap()));
        assert!(!c.contains("192.0.3.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("127.0.0.1")
            .unwrap()
            .contains("127.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope/8").is_err());
        assert!(Cidr::parse("2001:db8::/32")
            .unwrap()
            .contains("2001:db8::1".parse().unwrap()));
    }
}
