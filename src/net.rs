//! Small network helpers shared by config, HTTP and the SIP transports.
//! The pure address helpers live in the SIP core; they are re-exported here.

use std::net::IpAddr;

pub use crossline_sip::net::{source_key, Cidr};

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
}
