//! Sliding-window rate limits, sans-IO: the caller passes the time.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// At most `max` events per key in any `window`.
pub struct RateWindow {
    max: u32,
    window: Duration,
    seen: HashMap<String, VecDeque<Instant>>,
}

impl RateWindow {
    pub fn new(max: u32, window: Duration) -> RateWindow {
        RateWindow {
            max,
            window,
            seen: HashMap::new(),
        }
    }

    /// Would one more event for `key` at `now` fit?
    pub fn allows(&mut self, key: &str, now: Instant) -> bool {
        self.forget(now);
        self.seen
            .get(key)
            .is_none_or(|q| q.len() < self.max as usize)
    }

    /// Count one event.
    pub fn record(&mut self, key: &str, now: Instant) {
        self.seen.entry(key.to_string()).or_default().push_back(now);
    }

    /// Drop events older than the window, and keys with none left, so the
    /// map only holds what is recent.
    fn forget(&mut self, now: Instant) {
        let window = self.window;
        self.seen.retain(|_, q| {
            while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
                q.pop_front();
            }
            !q.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_slides_with_the_clock() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(2, Duration::from_secs(60));
        assert!(w.allows("a", t0));
        w.record("a", t0);
        w.record("a", t0 + Duration::from_secs(10));
        assert!(!w.allows("a", t0 + Duration::from_secs(20)));
        assert!(
            w.allows("b", t0 + Duration::from_secs(20)),
            "keys are separate"
        );
        // The first event leaves the window at 60 s.
        assert!(!w.allows("a", t0 + Duration::from_secs(59)));
        assert!(w.allows("a", t0 + Duration::from_secs(60)));
        assert!(w.allows("a", t0 + Duration::from_secs(200)));
        assert!(w.seen.is_empty(), "old keys are forgotten");
    }
}
