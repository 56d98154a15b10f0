//! Per-target back-off: a target that failed (503, no answer, transport
//! error) rests until its time is up, and is skipped while others are up;
//! a 503 with Retry-After names that time itself, and is always honoured.
//! Sans-IO: the caller passes `now`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Target;

/// Most targets remembered; past it, the ones whose time is up go first,
/// then the soonest to recover (a flood of failures can't grow memory).
const MAX_TARGETS: usize = 4096;
/// Longest a Retry-After may keep a target out.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How a target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Up,
    /// It failed lately: skipped while another target is up.
    Resting,
    /// It asked us (Retry-After) to stay away until then.
    AskedToWait,
}

#[derive(Debug, Default)]
pub struct Backoff {
    /// How long a failure keeps a target out when it doesn't say.
    default: Duration,
    /// Until when, and whether the target asked for it.
    down_until: HashMap<Target, (Instant, bool)>,
}

impl Backoff {
    pub fn new(default: Duration) -> Backoff {
        Backoff {
            default,
            down_until: HashMap::new(),
        }
    }

    /// Whether `target` is still being skipped.
    pub fn is_down(&self, now: Instant, target: &Target) -> bool {
        self.standing(now, target) != Standing::Up
    }

    pub fn standing(&self, now: Instant, target: &Target) -> Standing {
        match self.down_until.get(target) {
            Some((until, true)) if *until > now => Standing::AskedToWait,
            Some((until, false)) if *until > now => Standing::Resting,
            _ => Standing::Up,
        }
    }

    /// Skip `target` for `retry_after` (capped), or the default.
    pub fn mark_down(&mut self, now: Instant, target: Target, retry_after: Option<Duration>) {
        let asked = retry_after.is_some();
        let wait = retry_after.map_or(self.default, |d| d.min(MAX_RETRY_AFTER));
        if wait.is_zero() {
            return;
        }
        if self.down_until.len() >= MAX_TARGETS && !self.down_until.contains_key(&target) {
            self.down_until.retain(|_, (until, _)| *until > now);
            if self.down_until.len() >= MAX_TARGETS {
                if let Some(soonest) = self
                    .down_until
                    .iter()
                    .min_by_key(|(_, (until, _))| *until)
                    .map(|(t, _)| *t)
                {
                    self.down_until.remove(&soonest);
                }
            }
        }
        let until = now.checked_add(wait).unwrap_or(now);
        let entry = self.down_until.entry(target).or_insert((until, asked));
        if until >= entry.0 {
            *entry = (until, asked);
        }
    }

    /// A target that just worked is up again.
    pub fn mark_up(&mut self, target: &Target) {
        self.down_until.remove(target);
    }

    pub fn len(&self) -> usize {
        self.down_until.len()
    }

    pub fn is_empty(&self) -> bool {
        self.down_until.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::endpoint::Transport;

    fn target(port: u16) -> Target {
        Target {
            addr: ([192, 0, 2, 1], port).into(),
            transport: Transport::Udp,
        }
    }

    #[test]
    fn a_failed_target_is_skipped_until_its_time_is_up() {
        let t0 = Instant::now();
        let mut b = Backoff::new(Duration::from_secs(30));
        b.mark_down(t0, target(1), None);
        b.mark_down(t0, target(2), Some(Duration::from_secs(120)));
        assert!(b.is_down(t0 + Duration::from_secs(29), &target(1)));
        assert_eq!(b.standing(t0, &target(1)), Standing::Resting);
        assert_eq!(b.standing(t0, &target(2)), Standing::AskedToWait);
        assert!(!b.is_down(t0 + Duration::from_secs(30), &target(1)));
        assert!(b.is_down(t0 + Duration::from_secs(119), &target(2)));
        assert!(!b.is_down(t0, &target(3)));
        b.mark_up(&target(2));
        assert!(!b.is_down(t0, &target(2)));
    }

    #[test]
    fn retry_after_is_capped_and_zero_default_means_off() {
        let t0 = Instant::now();
        let mut b = Backoff::new(Duration::ZERO);
        b.mark_down(t0, target(1), None);
        assert!(!b.is_down(t0, &target(1)));
        b.mark_down(t0, target(1), Some(Duration::from_secs(1_000_000)));
        assert!(b.is_down(t0 + MAX_RETRY_AFTER - Duration::from_secs(1), &target(1)));
        assert!(!b.is_down(t0 + MAX_RETRY_AFTER, &target(1)));
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut b = Backoff::new(Duration::from_secs(30));
        for i in 0..(MAX_TARGETS as u32 + 100) {
            let t = Target {
                addr: (std::net::Ipv4Addr::from(i), 5060).into(),
                transport: Transport::Udp,
            };
            b.mark_down(t0, t, None);
        }
        assert!(b.len() <= MAX_TARGETS);
    }
}
