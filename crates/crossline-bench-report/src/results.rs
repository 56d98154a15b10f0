//! What one report run measured, as written to `results.json`, and the
//! comparison against an older run.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    pub machine: Machine,
    /// Criterion suites: benchmark id and its mean time in nanoseconds.
    #[serde(default)]
    pub criterion: Vec<CriterionResult>,
    /// The CPS sweep, one step per offered rate.
    #[serde(default)]
    pub cps: Vec<CpsStep>,
    /// The concurrency sweep, one step per number of hold calls.
    #[serde(default)]
    pub calls: Vec<CallsStep>,
    /// Soak samples, in order.
    #[serde(default)]
    pub soak: Vec<SoakSample>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub date: String,
    pub git_revision: String,
    pub cpu_model: String,
    pub cores: usize,
    pub memory_mb: u64,
    pub kernel: String,
    /// The 1-minute load average before the run: what else shared the box.
    pub load_before: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CriterionResult {
    pub id: String,
    pub mean_ns: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpsStep {
    pub offered: f64,
    pub achieved: f64,
    pub ok: u64,
    pub failed: u64,
    pub retransmissions: u64,
    pub setup_p50_ms: f64,
    pub setup_p99_ms: f64,
    pub cpu_pct_of_one_core: f64,
    pub peak_rss_mb: f64,
    /// Share of calls (percent) whose INVITE→200 fell in each of
    /// [`SETUP_BUCKETS_MS`]' buckets.
    #[serde(default)]
    pub setup_histogram_pct: Vec<f64>,
}

/// Upper bounds of the setup-latency histogram's buckets, in ms; the last
/// bucket holds everything slower.
pub const SETUP_BUCKETS_MS: [f64; 9] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CallsStep {
    pub offered: u64,
    pub active: u64,
    pub jitter_p50_ms: f64,
    pub jitter_p99_ms: f64,
    pub jitter_p999_ms: f64,
    pub jitter_max_ms: f64,
    pub loss_pct: f64,
    pub drift_max_ms: f64,
    pub cpu_pct_of_one_core: f64,
    pub rss_plateau_mb: f64,
    pub rss_per_call_kb: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SoakSample {
    pub elapsed_s: f64,
    /// `idle`, `waveN`, `pauseN` or `after` (benches/soak.sh's phases).
    pub phase: String,
    pub rss_mb: f64,
    pub threads: u64,
    pub fds: u64,
    pub tasks: u64,
    pub calls_active: u64,
}

/// Which way a figure should move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
}

/// One figure present in both runs.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub figure: String,
    pub old: f64,
    pub new: f64,
    /// Signed change, percent of the old value (positive = larger).
    pub change_pct: f64,
    pub regression: bool,
}

/// A change worse than this (percent) is marked a regression.
pub const REGRESSION_PCT: f64 = 10.0;

impl Results {
    /// Every comparable figure, named so two runs line up.
    pub fn figures(&self) -> Vec<(String, f64, Better)> {
        let mut out = Vec::new();
        for c in &self.criterion {
            out.push((format!("criterion {} (ns)", c.id), c.mean_ns, Better::Lower));
        }
        for s in &self.cps {
            let at = format!("{:.0} CPS", s.offered);
            out.push((format!("{at}: achieved CPS"), s.achieved, Better::Higher));
            out.push((
                format!("{at}: failed calls"),
                s.failed as f64,
                Better::Lower,
            ));
            out.push((
                format!("{at}: setup p99 (ms)"),
                s.setup_p99_ms,
                Better::Lower,
            ));
            out.push((
                format!("{at}: CPU (% of a core)"),
                s.cpu_pct_of_one_core,
                Better::Lower,
            ));
        }
        for s in &self.calls {
            let at = format!("{} calls", s.offered);
            out.push((
                format!("{at}: jitter p99 (ms)"),
                s.jitter_p99_ms,
                Better::Lower,
            ));
            out.push((
                format!("{at}: jitter p99.9 (ms)"),
                s.jitter_p999_ms,
                Better::Lower,
            ));
            out.push((format!("{at}: loss (%)"), s.loss_pct, Better::Lower));
            out.push((
                format!("{at}: CPU (% of a core)"),
                s.cpu_pct_of_one_core,
                Better::Lower,
            ));
            out.push((
                format!("{at}: RSS per call (KB)"),
                s.rss_per_call_kb,
                Better::Lower,
            ));
        }
        if let (Some(first), Some(last)) = (self.soak.first(), self.soak.last()) {
            out.push((
                "soak: RSS at the end above idle (MB)".into(),
                last.rss_mb - first.rss_mb,
                Better::Lower,
            ));
        }
        out
    }

    /// This run against `old`: every figure both have.
    pub fn compare(&self, old: &Results) -> Vec<Change> {
        let before = old.figures();
        self.figures()
            .into_iter()
            .filter_map(|(figure, new, better)| {
                let (_, old, _) = before.iter().find(|(name, _, _)| *name == figure)?;
                Some(change(figure, *old, new, better))
            })
            .collect()
    }
}

fn change(figure: String, old: f64, new: f64, better: Better) -> Change {
    let change_pct = if old.abs() > f64::EPSILON {
        (new - old) / old.abs() * 100.0
    } else if new.abs() > f64::EPSILON {
        // From zero (say, no loss) to something: call it a full step.
        100.0 * new.signum()
    } else {
        0.0
    };
    let regression = match better {
        Better::Lower => change_pct > REGRESSION_PCT,
        Better::Higher => change_pct < -REGRESSION_PCT,
    };
    Change {
        figure,
        old,
        new,
        change_pct,
        regression,
    }
}

/// Percent of `samples_ms` in each of [`SETUP_BUCKETS_MS`]' buckets, plus
/// the overflow bucket.
pub fn setup_histogram(samples_ms: &[f64]) -> Vec<f64> {
    let mut counts = vec![0u64; SETUP_BUCKETS_MS.len() + 1];
    for &ms in samples_ms {
        let bucket = SETUP_BUCKETS_MS
            .iter()
            .position(|&bound| ms <= bound)
            .unwrap_or(SETUP_BUCKETS_MS.len());
        if let Some(count) = counts.get_mut(bucket) {
            *count += 1;
        }
    }
    let total = samples_ms.len().max(1) as f64;
    counts.iter().map(|&c| c as f64 * 100.0 / total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p99: f64, achieved: f64) -> Results {
        Results {
            cps: vec![CpsStep {
                offered: 1000.0,
                achieved,
                setup_p99_ms: p99,
                ..CpsStep::default()
            }],
            ..Results::default()
        }
    }

    #[test]
    fn a_slower_setup_or_fewer_calls_is_a_regression_beyond_ten_percent() {
        let old = run(10.0, 1000.0);
        let changes = run(11.5, 850.0).compare(&old);
        let p99 = changes
            .iter()
            .find(|c| c.figure.contains("setup p99"))
            .unwrap();
        assert!(p99.regression, "{p99:?}");
        let cps = changes
            .iter()
            .find(|c| c.figure.contains("achieved"))
            .unwrap();
        assert!(cps.regression, "{cps:?}");

        let changes = run(10.5, 950.0).compare(&old);
        assert!(changes.iter().all(|c| !c.regression), "{changes:?}");
        // Better is never a regression, however large.
        let changes = run(2.0, 3000.0).compare(&old);
        assert!(changes.iter().all(|c| !c.regression), "{changes:?}");
    }

    #[test]
    fn loss_appearing_from_zero_is_a_regression() {
        let step = |loss| Results {
            calls: vec![CallsStep {
                offered: 4000,
                loss_pct: loss,
                ..CallsStep::default()
            }],
            ..Results::default()
        };
        let changes = step(0.2).compare(&step(0.0));
        assert!(changes
            .iter()
            .any(|c| c.figure.contains("loss") && c.regression));
    }

    #[test]
    fn the_histogram_puts_each_sample_in_its_bucket() {
        let h = setup_histogram(&[0.5, 1.0, 1.5, 15.0, 900.0]);
        assert_eq!(h.len(), SETUP_BUCKETS_MS.len() + 1);
        assert_eq!(h[0], 40.0);
        assert_eq!(h[1], 20.0);
        assert_eq!(h[4], 20.0);
        assert_eq!(h[SETUP_BUCKETS_MS.len()], 20.0);
        assert!((h.iter().sum::<f64>() - 100.0).abs() < 1e-9);
    }
}
