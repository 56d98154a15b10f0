//! Trunk health: when to send each outbound trunk its OPTIONS keep-alive,
//! and what the answers make of it. Sans-IO: call control asks
//! [`TrunkHealth::due`] which trunks to probe, sends the pings, and hands
//! back each result with [`TrunkHealth::record`].
//!
//! A trunk starts `unknown`; its first answer makes it `up`. It goes
//! `down` after `options_failures_down` failed probes in a row, and `up`
//! again after `options_successes_up` answered ones in a row. Any final
//! response answers (a 404 or 405 is a peer that is there to say it),
//! except 503: that peer is overloaded, and counts as a failure like no
//! answer, a transport error or a name that does not resolve.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::Config;

/// Where a trunk stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrunkState {
    /// No keep-alive (no `options_interval_secs`, or no outbound proxy):
    /// calls always try it.
    Unmonitored,
    /// Monitored, no answer yet either way: calls try it.
    Unknown,
    Up,
    /// Calls pass it over.
    Down,
}

impl TrunkState {
    pub fn as_str(self) -> &'static str {
        match self {
            TrunkState::Unmonitored => "unmonitored",
            TrunkState::Unknown => "unknown",
            TrunkState::Up => "up",
            TrunkState::Down => "down",
        }
    }
}

/// How one probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// A final response with this status.
    Answered(u16),
    /// No final response in time.
    Timeout,
    /// The transport could not reach it.
    Unreachable,
    /// Its proxy's name did not resolve.
    Unresolved,
}

impl ProbeResult {
    /// Why it counts as a failure (the metric label), or `None`: the
    /// trunk answered.
    pub fn failure(self) -> Option<&'static str> {
        match self {
            ProbeResult::Answered(503) => Some("503"),
            ProbeResult::Answered(_) => None,
            ProbeResult::Timeout => Some("timeout"),
            ProbeResult::Unreachable => Some("transport"),
            ProbeResult::Unresolved => Some("dns"),
        }
    }

    fn status(self) -> Option<u16> {
        match self {
            ProbeResult::Answered(s) => Some(s),
            _ => None,
        }
    }
}

/// A trunk moved between up and down (or left unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: TrunkState,
    pub to: TrunkState,
}

#[derive(Debug)]
struct Monitor {
    interval: Duration,
    failures_down: u32,
    successes_up: u32,
    next_probe: Instant,
    in_flight: bool,
}

#[derive(Debug)]
struct Trunk {
    name: String,
    groups: Vec<String>,
    monitor: Option<Monitor>,
    state: TrunkState,
    failures: u32,
    successes: u32,
    last_probe_at: Option<Instant>,
    last_status: Option<u16>,
}

/// What `GET /v1/trunks` shows of one trunk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrunkStatus {
    pub name: String,
    pub state: TrunkState,
    /// When the last probe ended, in ms since the Unix epoch.
    pub last_probe_at: Option<u64>,
    /// The last probe's final status; `null` when it had none (timeout,
    /// transport error) or there was no probe yet.
    pub last_status: Option<u16>,
    pub consecutive_failures: u32,
    /// The `[[trunk_groups]]` it is in.
    pub groups: Vec<String>,
}

/// The latest [`TrunkStatus`] of every trunk, published by the gateway
/// task for the HTTP API.
pub type TrunkBoard = Arc<RwLock<Vec<TrunkStatus>>>;

/// Every `[[trunks]]` entry's health, in config order.
#[derive(Debug, Default)]
pub struct TrunkHealth {
    trunks: Vec<Trunk>,
    /// Bumped on every change: the driver republishes when it moves.
    version: u64,
}

impl TrunkHealth {
    /// Trunks with an outbound proxy and `options_interval_secs` are
    /// probed, the first time at `now`.
    pub fn new(config: &Config, now: Instant) -> TrunkHealth {
        let trunks = config
            .trunks
            .iter()
            .map(|t| {
                let monitor =
                    (t.outbound_proxy.is_some() && t.options_interval_secs > 0).then(|| Monitor {
                        interval: Duration::from_secs(t.options_interval_secs),
                        failures_down: t.options_failures_down.max(1),
                        successes_up: t.options_successes_up.max(1),
                        next_probe: now,
                        in_flight: false,
                    });
                Trunk {
                    name: t.name.clone(),
                    groups: config
                        .trunk_groups
                        .iter()
                        .filter(|g| g.trunks.contains(&t.name))
                        .map(|g| g.name.clone())
                        .collect(),
                    state: match monitor {
                        Some(_) => TrunkState::Unknown,
                        None => TrunkState::Unmonitored,
                    },
                    monitor,
                    failures: 0,
                    successes: 0,
                    last_probe_at: None,
                    last_status: None,
                }
            })
            .collect();
        TrunkHealth { trunks, version: 0 }
    }

    /// Trunks to probe now (by index); each is then in flight until its
    /// result comes back, and due again an interval after this send.
    pub fn due(&mut self, now: Instant) -> Vec<usize> {
        let mut due = Vec::new();
        for (i, t) in self.trunks.iter_mut().enumerate() {
            let Some(m) = t.monitor.as_mut() else {
                continue;
            };
            if !m.in_flight && m.next_probe <= now {
                m.in_flight = true;
                m.next_probe = now.checked_add(m.interval).unwrap_or(now);
                due.push(i);
            }
        }
        due
    }

    /// When the next probe is due.
    pub fn next_wake(&self) -> Option<Instant> {
        self.trunks
            .iter()
            .filter_map(|t| t.monitor.as_ref())
            .filter(|m| !m.in_flight)
            .map(|m| m.next_probe)
            .min()
    }

    /// How long a probe sent now may wait for its answer: until the next
    /// is due.
    pub fn probe_timeout(&self, index: usize) -> Duration {
        self.trunks
            .get(index)
            .and_then(|t| t.monitor.as_ref())
            .map_or(Duration::ZERO, |m| m.interval)
    }

    /// A probe of trunk `index` ended; `Some` when that moved its state.
    pub fn record(
        &mut self,
        now: Instant,
        index: usize,
        result: ProbeResult,
    ) -> Option<Transition> {
        let t = self.trunks.get_mut(index)?;
        let m = t.monitor.as_mut()?;
        m.in_flight = false;
        self.version += 1;
        t.last_probe_at = Some(now);
        t.last_status = result.status();
        let from = t.state;
        if result.failure().is_some() {
            t.successes = 0;
            t.failures = t.failures.saturating_add(1);
            if t.failures >= m.failures_down {
                t.state = TrunkState::Down;
            }
        } else {
            t.failures = 0;
            t.successes = t.successes.saturating_add(1);
            if from != TrunkState::Down || t.successes >= m.successes_up {
                t.state = TrunkState::Up;
            }
        }
        (t.state != from).then_some(Transition { from, to: t.state })
    }

    /// Whether calls may go through the trunk named `name`: any but one
    /// that is down (an unknown name too: config checks catch those).
    pub fn usable(&self, name: &str) -> bool {
        self.trunks
            .iter()
            .find(|t| t.name == name)
            .is_none_or(|t| t.state != TrunkState::Down)
    }

    pub fn name(&self, index: usize) -> Option<&str> {
        self.trunks.get(index).map(|t| t.name.as_str())
    }

    pub fn state(&self, index: usize) -> Option<TrunkState> {
        self.trunks.get(index).map(|t| t.state)
    }

    /// Changes with every probe result.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every trunk as the API shows it; `now` and `wall` are the same
    /// moment, to date the probes.
    pub fn snapshot(&self, now: Instant, wall: SystemTime) -> Vec<TrunkStatus> {
        self.trunks
            .iter()
            .map(|t| TrunkStatus {
                name: t.name.clone(),
                state: t.state,
                last_probe_at: t.last_probe_at.map(|at| {
                    let when = wall
                        .checked_sub(now.saturating_duration_since(at))
                        .unwrap_or(wall);
                    when.duration_since(UNIX_EPOCH)
                        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                }),
                last_status: t.last_status,
                consecutive_failures: t.failures,
                groups: t.groups.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        Config::parse(toml, std::path::Path::new("test.toml")).unwrap()
    }

    fn two_trunks() -> Config {
        config(
            "[[trunks]]\nname = \"a\"\noutbound_proxy = \"sip:192.0.2.1\"\noptions_interval_secs = 10\noptions_failures_down = 3\noptions_successes_up = 2\n\n\
             [[trunks]]\nname = \"b\"\noutbound_proxy = \"sip:192.0.2.2\"\n\n\
             [[trunks]]\nname = \"inbound\"\ninbound_cidrs = [\"192.0.2.0/24\"]\n\n\
             [[trunk_groups]]\nname = \"pstn\"\ntrunks = [\"a\", \"b\"]\n",
        )
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn probes_go_out_every_interval_one_at_a_time() {
        let t0 = Instant::now();
        let mut h = TrunkHealth::new(&two_trunks(), t0);
        assert_eq!(h.state(0), Some(TrunkState::Unknown));
        assert_eq!(h.state(1), Some(TrunkState::Unmonitored));
        assert_eq!(h.state(2), Some(TrunkState::Unmonitored));
        assert_eq!(h.next_wake(), Some(t0));
        assert_eq!(h.due(t0), [0]);
        assert_eq!(h.probe_timeout(0), 10 * S);
        // In flight: not due again, however late its answer.
        assert_eq!(h.next_wake(), None);
        assert!(h.due(t0 + 30 * S).is_empty());
        h.record(t0 + 30 * S, 0, ProbeResult::Timeout);
        // Overdue: at once, then every 10 s from that send.
        assert_eq!(h.next_wake(), Some(t0 + 10 * S));
        assert_eq!(h.due(t0 + 30 * S), [0]);
        h.record(t0 + 31 * S, 0, ProbeResult::Answered(200));
        assert!(h.due(t0 + 39 * S).is_empty());
        assert_eq!(h.due(t0 + 40 * S), [0]);
    }

    #[test]
    fn down_after_n_failures_up_after_m_answers() {
        let t0 = Instant::now();
        let mut h = TrunkHealth::new(&two_trunks(), t0);
        let clock = std::cell::Cell::new(t0);
        let probe = |h: &mut TrunkHealth, result| {
            let now = clock.get();
            assert_eq!(h.due(now), [0]);
            clock.set(now + 10 * S);
            h.record(now, 0, result)
        };
        assert_eq!(
            probe(&mut h, ProbeResult::Answered(404)),
            Some(Transition {
                from: TrunkState::Unknown,
                to: TrunkState::Up
            }),
            "a 404 is an answer: the peer is there"
        );
        assert_eq!(probe(&mut h, ProbeResult::Timeout), None);
        assert_eq!(probe(&mut h, ProbeResult::Answered(503)), None);
        assert!(h.usable("a"));
        assert_eq!(
            probe(&mut h, ProbeResult::Unreachable),
            Some(Transition {
                from: TrunkState::Up,
                to: TrunkState::Down
            }),
            "the third failure in a row (a 503 is one)"
        );
        assert!(!h.usable("a"));
        assert!(h.usable("b"), "unmonitored trunks are always tried");
        assert!(h.usable("no-such-trunk"));
        let status = &h.snapshot(clock.get(), SystemTime::now())[0];
        assert_eq!(status.state, TrunkState::Down);
        assert_eq!(status.consecutive_failures, 3);
        assert_eq!(status.last_status, None);
        assert_eq!(status.groups, ["pstn"]);
        assert_eq!(
            probe(&mut h, ProbeResult::Answered(200)),
            None,
            "one of two"
        );
        assert_eq!(probe(&mut h, ProbeResult::Unresolved), None);
        assert_eq!(probe(&mut h, ProbeResult::Answered(200)), None);
        assert_eq!(
            probe(&mut h, ProbeResult::Answered(405)),
            Some(Transition {
                from: TrunkState::Down,
                to: TrunkState::Up
            })
        );
        assert!(h.usable("a"));
    }

    #[test]
    fn an_unknown_trunk_that_never_answers_goes_down_and_the_snapshot_dates_probes() {
        let t0 = Instant::now();
        let mut h = TrunkHealth::new(&two_trunks(), t0);
        for i in 0..3u32 {
            let now = t0 + 10 * i * S;
            assert_eq!(h.due(now), [0]);
            let moved = h.record(now + S, 0, ProbeResult::Timeout);
            assert_eq!(moved.is_some(), i == 2, "down at the third");
        }
        assert_eq!(h.state(0), Some(TrunkState::Down));
        let version = h.version();
        let wall = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let snap = h.snapshot(t0 + 31 * S, wall);
        assert_eq!(
            snap[0].last_probe_at,
            Some(1_000_000_000 - 10_000),
            "the last result came 10 s before now"
        );
        assert_eq!(snap[1].last_probe_at, None);
        assert_eq!(snap[1].state, TrunkState::Unmonitored);
        assert_eq!(snap[1].groups, ["pstn"]);
        // A result for an unmonitored trunk changes nothing.
        assert_eq!(h.record(t0, 1, ProbeResult::Timeout), None);
        assert_eq!(h.version(), version);
    }
}
