//! How loaded the audio loops are, and when the gateway should stop taking
//! new calls: overload control by measured headroom. Sans-IO: the audio
//! loop feeds [`LoadMeter`] its busy time per frame; the signalling side
//! reads the published loads and asks [`OverloadGate`] with its own clock.
//!
//! Loads are in basis points (10,000 = 100 %), so they fit an atomic.

use std::time::{Duration, Instant};

/// 100 %, in basis points.
pub const FULL: u32 = 10_000;

/// The smoothed share of each 20 ms frame one loop spends working.
///
/// An exponentially weighted moving average over frames with a time
/// constant of about one second: one slow frame (a page fault, a burst of
/// new streams) doesn't refuse calls, a second of steady load does.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadMeter {
    /// The average, as a fraction of the frame.
    average: f32,
}

/// Weight of the newest frame: 20 ms / 1 s.
const NEWEST_WEIGHT: f32 = 1.0 / 50.0;

impl LoadMeter {
    /// Record one frame: `busy` of `period` spent working. A frame busier
    /// than its period (the loop fell behind) counts as full.
    pub fn record(&mut self, busy: Duration, period: Duration) -> u32 {
        let share = if period.is_zero() {
            1.0
        } else {
            (busy.as_secs_f32() / period.as_secs_f32()).min(1.0)
        };
        self.average += (share - self.average) * NEWEST_WEIGHT;
        self.load()
    }

    /// The average now, in basis points.
    pub fn load(&self) -> u32 {
        (self.average * FULL as f32).round().clamp(0.0, FULL as f32) as u32
    }
}

/// How close the loops are to their limits, in basis points of the limit
/// (10,000: at the limit). The larger of:
/// - the busiest loop's load against `threshold` (a new call may land on
///   any loop, and a loop past its threshold is near missing deadlines);
/// - the loops' summed load against the cores left after one core's worth
///   is kept for everything else (signalling, HTTP, the store, the kernel's
///   network stack): with SCHED_FIFO loops on a small box, admission must
///   stop before the loops take the whole machine. On a one-core box half
///   the core is kept.
pub fn pressure(loads: &[u32], cores: usize, threshold: u32) -> u32 {
    let busiest = loads.iter().copied().max().unwrap_or(0);
    let total: u64 = loads.iter().map(|&l| u64::from(l)).sum();
    let budget = match cores {
        0 | 1 => u64::from(FULL) / 2,
        n => (n as u64 - 1) * u64::from(FULL),
    };
    let of_threshold = u64::from(busiest) * u64::from(FULL) / u64::from(threshold.max(1));
    let of_budget = total * u64::from(FULL) / budget;
    of_threshold.max(of_budget).min(u64::from(u32::MAX)) as u32
}

/// Overload with hysteresis, so admission doesn't flap around the limit:
/// on at 100 % pressure, off only after it has stayed below 90 % for
/// [`OverloadGate::HOLD`].
#[derive(Debug, Clone, Default)]
pub struct OverloadGate {
    overloaded: bool,
    /// Since when pressure has been below the release level, while on.
    calm_since: Option<Instant>,
}

impl OverloadGate {
    /// Pressure at which new calls are refused.
    pub const ON: u32 = FULL;
    /// Pressure below which refusing may stop.
    pub const OFF: u32 = FULL * 9 / 10;
    /// How long pressure must stay below [`OverloadGate::OFF`] before new
    /// calls are taken again.
    pub const HOLD: Duration = Duration::from_secs(2);

    /// Feed the current pressure; true while new calls should be refused.
    pub fn observe(&mut self, now: Instant, pressure: u32) -> bool {
        if pressure >= Self::ON {
            self.overloaded = true;
            self.calm_since = None;
        } else if self.overloaded {
            if pressure >= Self::OFF {
                self.calm_since = None;
            } else {
                let since = *self.calm_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= Self::HOLD {
                    self.overloaded = false;
                    self.calm_since = None;
                }
            }
        }
        self.overloaded
    }

    /// True while new calls should be refused.
    pub fn overloaded(&self) -> bool {
        self.overloaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_millis(20);

    #[test]
    fn the_meter_follows_steady_load_within_a_few_seconds_and_ignores_one_spike() {
        let mut m = LoadMeter::default();
        // 10 ms of every 20: half loaded.
        for _ in 0..50 {
            m.record(Duration::from_millis(10), FRAME);
        }
        // After one time constant: 1 - 1/e of the way.
        let after_1s = m.load();
        assert!((3_000..3_300).contains(&after_1s), "{after_1s}");
        for _ in 0..200 {
            m.record(Duration::from_millis(10), FRAME);
        }
        assert!((4_900..=5_000).contains(&m.load()), "{}", m.load());
        // One frame four times too long counts as full, and moves the
        // average by a fiftieth of the gap: about one point.
        let before = m.load();
        m.record(Duration::from_millis(80), FRAME);
        assert!((before + 95..=before + 105).contains(&m.load()));
    }

    #[test]
    fn a_frame_past_its_period_counts_as_full_and_idle_decays_to_zero() {
        let mut m = LoadMeter::default();
        for _ in 0..1_000 {
            m.record(Duration::from_millis(45), FRAME);
        }
        assert_eq!(m.load(), FULL);
        for _ in 0..1_000 {
            m.record(Duration::ZERO, FRAME);
        }
        assert_eq!(m.load(), 0);
        assert_eq!(m.record(Duration::from_millis(1), Duration::ZERO), 200);
    }

    #[test]
    fn pressure_is_the_busiest_loop_against_the_threshold() {
        // 8 cores, 8 loops: the summed budget (7 cores) is far away.
        let loads = [4_000, 6_000, 2_000, 0, 0, 0, 0, 0];
        assert_eq!(pressure(&loads, 8, 8_000), 7_500);
        assert_eq!(pressure(&[8_000, 0], 8, 8_000), FULL);
        assert_eq!(pressure(&[], 2, 8_000), 0);
    }

    #[test]
    fn a_small_box_keeps_one_core_for_everything_else() {
        // 2 cores, 2 loops at 45 %: each is under the 80 % threshold, but
        // together they take 0.9 of the one core the loops may use.
        assert_eq!(pressure(&[4_500, 4_500], 2, 8_000), 9_000);
        assert_eq!(pressure(&[5_000, 5_000], 2, 8_000), FULL);
        // One core: half of it.
        assert_eq!(pressure(&[5_000], 1, 8_000), FULL);
        assert_eq!(pressure(&[2_500], 1, 8_000), 5_000);
    }

    #[test]
    fn the_gate_turns_on_at_the_limit_and_off_only_after_two_calm_seconds() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut g = OverloadGate::default();
        assert!(!g.observe(at(0), 9_999));
        assert!(g.observe(at(100), 10_000));
        // Dipping just under the limit doesn't release it.
        assert!(g.observe(at(200), 9_500));
        assert!(g.observe(at(5_000), 9_500));
        // Below 90 %: released only once it has stayed there for 2 s.
        assert!(g.observe(at(5_100), 8_000));
        assert!(g.observe(at(6_000), 8_999));
        // A bounce above 90 % restarts the calm period.
        assert!(g.observe(at(6_500), 9_200));
        assert!(g.observe(at(7_000), 5_000));
        assert!(g.observe(at(8_900), 5_000));
        assert!(!g.observe(at(9_000), 5_000));
        assert!(!g.overloaded());
        // And on again at the limit.
        assert!(g.observe(at(9_100), 12_000));
    }
}
