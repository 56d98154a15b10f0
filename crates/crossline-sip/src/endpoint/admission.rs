//! Who may start something new, and how much of us they may take:
//! - a token bucket per source address for requests outside a known
//!   dialog (sources in `exempt` and trunk sources skip it);
//! - per-source counts key IPv6 by its /64 (`net::source_key`);
//! - a blocklist of scanner User-Agents;
//! - call caps, in total and per source (a source's share of the ports);
//! - digest failures per source and per user, with temporary bans, in the
//!   manner of Kamailio's pike and fail2ban.
//!
//! Sans-IO: the caller passes the time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::message::Headers;
use crate::net::{source_key, Cidr};

/// Admission limits; the default limits nothing.
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
    /// Most calls at once from one source address (trunk sources and
    /// `exempt` ones excepted); 0: no limit.
    pub max_calls_per_source: usize,
    /// Sources exempt from the request rate and the per-source call cap
    /// (never from bans, connection caps or the no-amplification rule).
    pub exempt: Vec<Cidr>,
    /// Failed digest answers from one source (or for one user) within
    /// `auth_failure_window` before a ban; 0: never ban.
    pub auth_failures_before_ban: u32,
    /// How far back failures count toward a ban.
    pub auth_failure_window: Duration,
    /// The first ban's length; each further ban of the same source or
    /// user doubles it, up to `auth_ban_max`.
    pub auth_ban: Duration,
    /// The longest a ban grows to.
    pub auth_ban_max: Duration,
    /// Proxies in front of us (Kamailio, an SBC) that append the address
    /// they received each request from in `X-Forwarded-For`: that address,
    /// not the proxy's, pays the request rate and the digest-failure
    /// counts and bans, so one phone's guesses never ban the proxy.
    pub trusted_proxies: Vec<Cidr>,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            rate_per_source: 0.0,
            burst_per_source: 0.0,
            blocked_user_agents: Vec::new(),
            max_calls: 0,
            max_calls_per_source: 0,
            exempt: Vec::new(),
            auth_failures_before_ban: 0,
            auth_failure_window: Duration::from_secs(60),
            auth_ban: Duration::from_secs(60),
            auth_ban_max: Duration::from_secs(3600),
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Failed sign-ins of one source or user, and its ban.
#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    window_start: Instant,
    /// Bans so far: the next one lasts `auth_ban << bans`.
    bans: u32,
    banned_until: Option<Instant>,
    last_seen: Instant,
}

impl Strikes {
    fn new(now: Instant) -> Strikes {
        Strikes {
            failures: 0,
            window_start: now,
            bans: 0,
            banned_until: None,
            last_seen: now,
        }
    }

    fn banned(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|t| now < t)
    }

    /// One more failure; true if it starts a ban.
    fn fail(&mut self, now: Instant, cfg: &AdmissionConfig) -> bool {
        self.last_seen = now;
        if now.saturating_duration_since(self.window_start) > cfg.auth_failure_window {
            self.window_start = now;
            self.failures = 0;
        }
        self.failures += 1;
        if self.failures < cfg.auth_failures_before_ban || self.banned(now) {
            return false;
        }
        let length = cfg
            .auth_ban
            .checked_mul(1u32 << self.bans.min(16))
            .unwrap_or(cfg.auth_ban_max)
            .min(cfg.auth_ban_max);
        self.banned_until = Some(now + length);
        self.bans += 1;
        self.failures = 0;
        true
    }
}

/// What to do with a new request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on with it.
    Admit,
    /// A scanner's User-Agent: drop, don't answer.
    Scanner,
    /// Over its source's rate: drop, don't answer (an answer feeds a flood).
    RateLimited,
    /// The source is banned for failed sign-ins: drop, don't answer.
    Banned,
}

/// What a digest check of a trunk's user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserGate {
    /// Check the credentials.
    Check,
    /// The user is banned and this source never signed in as them: refuse
    /// without checking, so guesses learn nothing.
    Refuse,
}

/// The admission state: buckets, strike counts, bans.
pub struct Admission {
    config: AdmissionConfig,
    /// Lower-cased blocklist.
    blocked: Vec<String>,
    buckets: HashMap<IpAddr, Bucket>,
    sources: HashMap<IpAddr, Strikes>,
    users: HashMap<String, Strikes>,
    /// (source, user) pairs that signed in: a ban of the user (others
    /// guessing its password) does not lock its real owner out.
    proven: HashMap<(IpAddr, String), Instant>,
    last_sweep: Option<Instant>,
    /// Bans started, by kind, for metrics.
    pub bans_started: BanCounts,
}

/// Bans started, by what was banned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BanCounts {
    /// Source addresses (IPv6 by /64).
    pub sources: u64,
    /// User names.
    pub users: u64,
}

/// Most sources, users or proven pairs remembered at once.
const MAX_TRACKED: usize = 100_000;

/// How long a successful sign-in vouches for its source.
const PROVEN_FOR: Duration = Duration::from_secs(24 * 3600);

impl Admission {
    /// Admission with no traffic seen yet.
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
            sources: HashMap::new(),
            users: HashMap::new(),
            proven: HashMap::new(),
            last_sweep: None,
            bans_started: BanCounts::default(),
        }
    }

    /// The configured cap on calls at once (0: none).
    pub fn max_calls(&self) -> usize {
        self.config.max_calls
    }

    /// The most calls `source` may hold at once; `None`: no per-source cap
    /// (exempt, or no cap configured).
    pub fn calls_cap_for(&self, source: IpAddr, trunk: bool) -> Option<usize> {
        let cap = self.config.max_calls_per_source;
        (cap > 0 && !trunk && !self.is_exempt(source)).then_some(cap)
    }

    /// Whom a request from `source` counts against: `source` itself, or,
    /// for a trusted proxy, the address in the last `X-Forwarded-For` entry
    /// (the one that proxy appended; earlier ones came with the request
    /// and prove nothing). A proxy's request without one is its own.
    pub fn client_of(&self, source: IpAddr, headers: &Headers) -> IpAddr {
        if !self
            .config
            .trusted_proxies
            .iter()
            .any(|c| c.contains(source))
        {
            return source;
        }
        headers
            .get_all("X-Forwarded-For")
            .last()
            .and_then(|v| v.rsplit(',').next())
            .map(|a| a.trim().trim_start_matches('[').trim_end_matches(']'))
            .and_then(|a| a.parse().ok())
            .unwrap_or(source)
    }

    fn is_exempt(&self, source: IpAddr) -> bool {
        self.config.exempt.iter().any(|c| c.contains(source))
    }

    /// `trunk`: the source is a configured trunk (never rate limited).
    pub fn check(
        &mut self,
        now: Instant,
        source: IpAddr,
        user_agent: Option<&str>,
        trunk: bool,
    ) -> Verdict {
        if let Some(ua) = user_agent {
            let ua = ua.to_ascii_lowercase();
            if self.blocked.iter().any(|b| ua.contains(b.as_str())) {
                return Verdict::Scanner;
            }
        }
        self.sweep(now);
        let exempt = self.is_exempt(source);
        let source = source_key(source);
        if self.sources.get(&source).is_some_and(|s| s.banned(now)) {
            return Verdict::Banned;
        }
        let rate = self.config.rate_per_source;
        if rate <= 0.0 || trunk || exempt {
            return Verdict::Admit;
        }
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

    /// Before checking `user`'s digest answer from `source`.
    pub fn user_gate(&self, now: Instant, source: IpAddr, user: &str) -> UserGate {
        let source = source_key(source);
        let banned = self.users.get(user).is_some_and(|s| s.banned(now));
        if banned && !self.proven.contains_key(&(source, user.to_string())) {
            UserGate::Refuse
        } else {
            UserGate::Check
        }
    }

    /// A wrong digest answer from `source` for `user`.
    pub fn auth_failed(&mut self, now: Instant, source: IpAddr, user: &str) {
        if self.config.auth_failures_before_ban == 0 {
            return;
        }
        let source = source_key(source);
        let cfg = &self.config;
        // A spoofed-address flood must not grow the map without bound.
        if self.sources.len() < MAX_TRACKED || self.sources.contains_key(&source) {
            let strikes = self
                .sources
                .entry(source)
                .or_insert_with(|| Strikes::new(now));
            if strikes.fail(now, cfg) {
                self.bans_started.sources += 1;
                tracing::warn!(%source, "SIP source banned after failed sign-ins");
            }
        }
        // A user's count only grows from sources that never signed in as
        // it, so its owner's own typos can't lock it.
        if user.is_empty() || self.proven.contains_key(&(source, user.to_string())) {
            return;
        }
        if self.users.len() < MAX_TRACKED || self.users.contains_key(user) {
            let strikes = self
                .users
                .entry(user.to_string())
                .or_insert_with(|| Strikes::new(now));
            if strikes.fail(now, cfg) {
                self.bans_started.users += 1;
                tracing::warn!("SIP user banned after failed sign-ins from unknown sources");
            }
        }
    }

    /// A right digest answer: the source is vouched for this user.
    pub fn auth_ok(&mut self, now: Instant, source: IpAddr, user: &str) {
        let source = source_key(source);
        if let Some(s) = self.sources.get_mut(&source) {
            s.failures = 0;
        }
        if self.proven.len() < MAX_TRACKED {
            self.proven.insert((source, user.to_string()), now);
        }
    }

    /// Forget what holds no state worth keeping: full buckets, quiet
    /// strike records; a spoofed-address flood must not grow maps forever.
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
        let window = self.config.auth_failure_window;
        // A record is kept while banned, and a while after, so repeat
        // offenders get longer bans.
        let hold = window.max(self.config.auth_ban_max);
        let keep = |s: &Strikes| s.banned(now) || now.saturating_duration_since(s.last_seen) < hold;
        self.sources.retain(|_, s| keep(s));
        self.users.retain(|_, s| keep(s));
        self.proven
            .retain(|_, at| now.saturating_duration_since(*at) < PROVEN_FOR);
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
            ..Default::default()
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

    /// Behind a trusted proxy the client is the address the proxy appended;
    /// what a client wrote itself, or any header from elsewhere, is not
    /// believed; and a phone's guesses ban the phone, not the proxy.
    #[test]
    fn a_trusted_proxys_client_pays_for_its_own_guesses() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let phone: IpAddr = "192.0.2.7".parse().unwrap();
        let mut a = Admission::new(AdmissionConfig {
            auth_failures_before_ban: 2,
            trusted_proxies: vec![Cidr::parse("10.0.0.0/24").unwrap()],
            ..Default::default()
        });
        let headers = |xff: &[&str]| {
            let mut h = Headers::new();
            for v in xff {
                h.push("X-Forwarded-For", v.to_string());
            }
            h
        };
        // The phone forged one entry; the proxy appended the truth.
        let via_proxy = headers(&["203.0.113.9", "203.0.113.10, 192.0.2.7"]);
        assert_eq!(a.client_of(proxy, &via_proxy), phone);
        assert_eq!(
            a.client_of(proxy, &headers(&["[2001:db8::7]"])),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
        // No header, or garbage: the proxy's own request.
        assert_eq!(a.client_of(proxy, &headers(&[])), proxy);
        assert_eq!(a.client_of(proxy, &headers(&["nonsense"])), proxy);
        // The header from anyone else is ignored.
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(a.client_of(stranger, &via_proxy), stranger);

        let t0 = Instant::now();
        let client = a.client_of(proxy, &via_proxy);
        a.auth_failed(t0, client, "alice");
        a.auth_failed(t0, client, "alice");
        assert_eq!(a.check(t0, phone, None, true), Verdict::Banned);
        assert_eq!(a.check(t0, proxy, None, true), Verdict::Admit);
        let other_phone: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(a.check(t0, other_phone, None, true), Verdict::Admit);
    }

    #[test]
    fn exempt_sources_skip_the_rate_but_not_bans() {
        let t0 = Instant::now();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let mut a = Admission::new(AdmissionConfig {
            rate_per_source: 1.0,
            burst_per_source: 1.0,
            exempt: vec![Cidr::parse("127.0.0.0/8").unwrap()],
            max_calls_per_source: 4,
            auth_failures_before_ban: 3,
            ..Default::default()
        });
        for _ in 0..100 {
            assert_eq!(a.check(t0, lo, None, false), Verdict::Admit);
        }
        assert_eq!(a.calls_cap_for(lo, false), None);
        let other: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(a.calls_cap_for(other, false), Some(4));
        assert_eq!(a.calls_cap_for(other, true), None);
        for _ in 0..3 {
            a.auth_failed(t0, lo, "carrier");
        }
        assert_eq!(a.check(t0, lo, None, false), Verdict::Banned);
    }

    #[test]
    fn failed_sign_ins_ban_the_source_then_longer_each_time() {
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let mut a = Admission::new(AdmissionConfig {
            auth_failures_before_ban: 3,
            auth_ban: Duration::from_secs(10),
            ..Default::default()
        });
        a.auth_failed(t0, ip, "u");
        a.auth_failed(t0, ip, "u");
        assert_eq!(a.check(t0, ip, None, false), Verdict::Admit);
        a.auth_failed(t0, ip, "u");
        assert_eq!(a.check(t0, ip, None, false), Verdict::Banned);
        assert_eq!(a.bans_started.sources, 1);
        let t1 = t0 + Duration::from_secs(11);
        assert_eq!(a.check(t1, ip, None, false), Verdict::Admit);
        // The second ban lasts twice as long.
        for _ in 0..3 {
            a.auth_failed(t1, ip, "u");
        }
        assert_eq!(
            a.check(t1 + Duration::from_secs(15), ip, None, false),
            Verdict::Banned
        );
        assert_eq!(
            a.check(t1 + Duration::from_secs(21), ip, None, false),
            Verdict::Admit
        );
    }

    #[test]
    fn a_banned_user_still_signs_in_from_where_it_signed_in_before() {
        let t0 = Instant::now();
        let owner: IpAddr = "192.0.2.1".parse().unwrap();
        let mut a = Admission::new(AdmissionConfig {
            auth_failures_before_ban: 3,
            ..Default::default()
        });
        a.auth_ok(t0, owner, "carrier");
        // Guesses for the same user from many addresses: each address
        // stays under its own limit, the user's count adds up.
        for i in 0..3u8 {
            let guesser = IpAddr::from([198, 51, 100, i]);
            a.auth_failed(t0, guesser, "carrier");
        }
        assert_eq!(a.bans_started.users, 1);
        let stranger: IpAddr = "198.51.100.200".parse().unwrap();
        assert_eq!(a.user_gate(t0, stranger, "carrier"), UserGate::Refuse);
        assert_eq!(a.user_gate(t0, owner, "carrier"), UserGate::Check);
        // The owner's own mistakes don't count against the user.
        for _ in 0..2 {
            a.auth_failed(t0, owner, "other");
        }
        assert_eq!(a.user_gate(t0, owner, "other"), UserGate::Check);
    }
}
