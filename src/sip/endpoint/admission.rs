//! Who may start something new: a token bucket per source address for
//! requests outside a dialog, and a blocklist of scanner User-Agents.
//! Sans-IO: the caller passes the time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionConfig {
    /// Out-of-dialog requests per second per source address; 0: no limit.
    pub rate_per_source: f64,
    /// How many may come at once before the rate applies.
    pub burst_per_source: f64,
    /// User-Agent substrings (any case) of scanners: their requests are
    /// dropped without an answer.
    pub blocked_user_agents: Vec<String>,
    /// Most calls at once; 0: no limit. Over it, INVITEs get 503.
    pub max_calls: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            rate_per_source: 0.0,
            burst_per_source: 0.0,
            blocked_user_agents: Vec::new(),
            max_calls: 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What to do with a new request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admit,
    /// A scanner's User-Agent: drop, don't answer.
    Scanner,
    /// Over its source's rate: drop, don't answer (an answer feeds a flood).
    RateLimited,
}

pub struct Admission {
    config: AdmissionConfig,
    /// Lower-cased blocklist.
    blocked: Vec<String>,
    buckets: HashMap<IpAddr, Bucket>,
    last_sweep: Option<Instant>,
}

impl Admission {
    pub fn new(config: AdmissionConfig) -> Admission {
        let blocked = config
            .blocked_user_agents
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        Admission {
            config,
            blocked,
            buckets: HashMap::new(),
            last_sweep: None,
        }
    }

    pub fn max_calls(&self) -> usize {
        self.config.max_calls
    }

    /// `exempt`: the source is a configured trunk (never rate limited).
    pub fn check(
        &mut self,
        now: Instant,
        source: IpAddr,
        user_agent: Option<&str>,
        exempt: bool,
    ) -> Verdict {
        if let Some(ua) = user_agent {
            let ua = ua.to_ascii_lowercase();
            if self.blocked.iter().any(|b| ua.contains(b.as_str())) {
                return Verdict::Scanner;
            }
        }
        let rate = self.config.rate_per_source;
        if rate <= 0.0 || exempt {
            return Verdict::Admit;
        }
        self.sweep(now);
        let burst = self.config.burst_per_source.max(1.0);
        let bucket = self.buckets.entry(source).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Verdict::Admit
        } else {
            Verdict::RateLimited
        }
    }

    /// Forget sources whose buckets have refilled: they hold no state worth
    /// keeping, and a spoofed-address flood must not grow the map forever.
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(10))
        {
            return;
        }
        self.last_sweep = Some(now);
        let (rate, burst) = (
            self.config.rate_per_source,
            self.config.burst_per_source.max(1.0),
        );
        self.buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(rate: f64, burst: f64) -> Admission {
        Admission::new(AdmissionConfig {
            rate_per_source: rate,
            burst_per_source: burst,
            blocked_user_agents: vec!["friendly-scanner".into(), "SIPVicious".into()],
            max_calls: 0,
        })
    }

    #[test]
    fn a_bucket_per_source_refills_with_time() {
        let t0 = Instant::now();
        let a_ip: IpAddr = "127.0.0.2".parse().unwrap();
        let b_ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut a = admission(10.0, 5.0);
        for _ in 0..5 {
            assert_eq!(a.check(t0, a_ip, None, false), Verdict::Admit);
        }
        assert_eq!(a.check(t0, a_ip, None, false), Verdict::RateLimited);
        // Another source is untouched by the first one's flood.
        assert_eq!(a.check(t0, b_ip, None, false), Verdict::Admit);
        // A trunk is never limited.
        assert_eq!(a.check(t0, a_ip, None, true), Verdict::Admit);
        // 100 ms at 10/s is one more token.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(a.check(t1, a_ip, None, false), Verdict::Admit);
        assert_eq!(a.check(t1, a_ip, None, false), Verdict::RateLimited);
        // Quiet sources are forgotten.
        let later = t0 + Duration::from_secs(60);
        a.check(later, b_ip, None, false);
        assert_eq!(a.buckets.len(), 1);
    }

    #[test]
    fn scanners_are_known_by_their_user_agent() {
        let mut a = admission(0.0, 0.0);
        let ip: IpAddr = "127.0.0.3".parse().unwrap();
        let now = Instant::now();
        assert_eq!(
            a.check(now, ip, Some("friendly-scanner"), false),
            Verdict::Scanner
        );
        assert_eq!(
            a.check(now, ip, Some("sipvicious 0.3.4"), false),
            Verdict::Scanner
        );
        assert_eq!(
            a.check(now, ip, Some("Asterisk PBX 20"), false),
            Verdict::Admit
        );
        assert_eq!(a.check(now, ip, None, false), Verdict::Admit);
    }
}
