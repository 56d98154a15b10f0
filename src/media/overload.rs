//! Overload control: new calls are refused while the audio loops have no
//! headroom left (`[media] overload_threshold_percent`). The signalling
//! task samples the loops' published loads a few times a second; the
//! policy and its hysteresis are in [`crate::media::headroom`].

use std::time::{Duration, Instant};

use super::headroom::{pressure, OverloadGate, FULL};

/// How often the loads are sampled: the loads are already smoothed over
/// about a second, so this only bounds how late the gate reacts.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

pub struct Overload {
    /// The busiest loop's limit in basis points; `None`: overload control off.
    threshold: Option<u32>,
    cores: usize,
    gate: OverloadGate,
}

impl Overload {
    /// `threshold_percent` 0 turns overload control off.
    pub fn new(threshold_percent: f64) -> Overload {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let threshold = (threshold_percent > 0.0)
            .then(|| ((threshold_percent / 100.0 * f64::from(FULL)).round() as u32).max(1));
        Overload {
            threshold,
            cores,
            gate: OverloadGate::default(),
        }
    }

    /// Feed the loops' loads (basis points each); true while new calls
    /// should be refused.
    pub fn observe(&mut self, now: Instant, loads: &[u32]) -> bool {
        let Some(threshold) = self.threshold else {
            return false;
        };
        let was = self.gate.overloaded();
        let on = self
            .gate
            .observe(now, pressure(loads, self.cores, threshold));
        if on != was {
            let loads_percent: Vec<f64> = loads.iter().map(|l| f64::from(*l) / 100.0).collect();
            if on {
                tracing::warn!(
                    ?loads_percent,
                    cores = self.cores,
                    "overloaded: new calls get 503"
                );
            } else {
                tracing::info!(?loads_percent, "headroom is back: taking new calls");
            }
        }
        on
    }
}
