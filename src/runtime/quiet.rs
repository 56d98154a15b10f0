//! When a burst of calls is over. The store keeps a cache that a burst
//! fills; once no call has been up for a while, it can let go of it.

use std::time::{Duration, Instant};

/// How long no call must be up before the burst counts as over: longer
/// than the pause between calls of a steady light load.
pub const QUIET_AFTER: Duration = Duration::from_secs(10);

/// Says once per burst that it is over, [`QUIET_AFTER`] after the last
/// call ended. Nothing before the first call.
#[derive(Debug)]
pub struct AfterBurst {
    quiet_since: Option<Instant>,
    told: bool,
}

impl Default for AfterBurst {
    fn default() -> Self {
        // Nothing to give back until calls have come.
        AfterBurst {
            quiet_since: None,
            told: true,
        }
    }
}

impl AfterBurst {
    /// Called now and then with the calls up: true once, when the quiet
    /// after a burst has lasted [`QUIET_AFTER`].
    pub fn over(&mut self, now: Instant, calls_up: usize) -> bool {
        if calls_up > 0 {
            self.quiet_since = None;
            self.told = false;
            return false;
        }
        let since = *self.quiet_since.get_or_insert(now);
        if self.told || now.duration_since(since) < QUIET_AFTER {
            return false;
        }
        self.told = true;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_over_once_after_ten_quiet_seconds() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut burst = AfterBurst::default();
        // Idle from the start: nothing to give back.
        assert!(!burst.over(at(0), 0));
        assert!(!burst.over(at(30), 0));
        // Calls, then quiet: over at ten seconds, and only once.
        assert!(!burst.over(at(31), 5));
        assert!(!burst.over(at(40), 0));
        assert!(!burst.over(at(49), 0));
        assert!(burst.over(at(50), 0));
        assert!(!burst.over(at(51), 0));
        assert!(!burst.over(at(500), 0));
        // A call within the quiet starts the wait again.
        assert!(!burst.over(at(501), 1));
        assert!(!burst.over(at(502), 0));
        assert!(!burst.over(at(508), 1));
        assert!(!burst.over(at(509), 0));
        assert!(!burst.over(at(518), 0));
        assert!(burst.over(at(519), 0));
    }
}
