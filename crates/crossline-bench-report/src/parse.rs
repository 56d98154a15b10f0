//! Reading what the load scripts print (benches/sipp-load.sh,
//! benches/rtp-load.sh, benches/soak.sh) and what criterion writes.

use std::path::Path;

use crate::results::{CallsStep, CpsStep, CriterionResult, SoakSample, WebStep};

/// The data row of `sipp-load.sh` for one rate: `offered achieved ok
/// failed retrans p50_ms p99_ms cpu_% rss_MB wire_p50 wire_p99` (the wire
/// columns "-" without `WIRE_RTT=1`, and absent from older scripts).
pub fn cps_row(output: &str) -> Option<CpsStep> {
    let row = output.lines().rev().find(|line| {
        let first = line.split_whitespace().next().unwrap_or("");
        first.parse::<f64>().is_ok()
    })?;
    let cols: Vec<&str> = row.split_whitespace().collect();
    let num = |i: usize| cols.get(i).and_then(|s| s.parse::<f64>().ok());
    Some(CpsStep {
        offered: num(0)?,
        achieved: num(1)?,
        ok: num(2)? as u64,
        failed: num(3)? as u64,
        retransmissions: num(4).unwrap_or(0.0) as u64,
        // A step where nothing answered prints "-".
        setup_p50_ms: num(5).unwrap_or(f64::NAN),
        setup_p99_ms: num(6).unwrap_or(f64::NAN),
        cpu_pct_of_one_core: num(7)?,
        peak_rss_mb: num(8)?,
        setup_histogram_pct: Vec::new(),
        wire_p50_ms: num(9),
        wire_p99_ms: num(10),
    })
}

/// SIPp's `-trace_rtt` file: `Date_ms;response_time_ms;rtd_no`.
pub fn rtt_samples(csv: &str) -> Vec<f64> {
    csv.lines()
        .skip(1)
        .filter_map(|line| line.split(';').nth(1)?.trim().parse().ok())
        .collect()
}

/// The value after `key=` anywhere in `output` (the scripts print
/// `key=value` pairs, several to a line).
fn value(output: &str, key: &str) -> Option<f64> {
    output.lines().find_map(|line| {
        line.split_whitespace().find_map(|word| {
            let rest = word.strip_prefix(key)?.strip_prefix('=')?;
            rest.parse().ok()
        })
    })
}

/// The value of `key=` on the line that starts with `prefix`.
fn value_on(output: &str, prefix: &str, key: &str) -> Option<f64> {
    let line = output.lines().find(|l| l.starts_with(prefix))?;
    value(line, key)
}

/// One `rtp-load.sh` run.
pub fn calls_run(output: &str, offered: u64) -> Option<CallsStep> {
    Some(CallsStep {
        offered,
        active: value(output, "calls_active_at_plateau")? as u64,
        jitter_p50_ms: value_on(output, "jitter_ms", "p50")?,
        jitter_p99_ms: value_on(output, "jitter_ms", "p99")?,
        jitter_p999_ms: value_on(output, "jitter_ms", "p99.9")?,
        jitter_max_ms: value_on(output, "jitter_ms", "max")?,
        loss_pct: value(output, "loss_pct")?,
        drift_max_ms: value_on(output, "drift_ms", "max_abs").unwrap_or(0.0),
        cpu_pct_of_one_core: value(output, "crossline_cpu_pct_of_one_core")?,
        rss_plateau_mb: value(output, "rss_plateau_kb")? / 1024.0,
        rss_per_call_kb: value(output, "rss_per_call_kb")?,
        cpu_us_per_packet: value(output, "crossline_cpu_us_per_rtp_packet_sent").unwrap_or(0.0),
        late_wakeups: value(output, "late_wakeups_during_plateau").unwrap_or(0.0) as u64,
        steal_pct: value(output, "cpu_steal_pct").unwrap_or(0.0),
    })
}

/// The `web` line of `signalling-latency.sh`: `... p99_ms=7.0 ... cpu=70%
/// web: [all 100 legs up] active=100 opus_back/s=5002 ... legs_per_core=142`.
pub fn web_run(output: &str, legs: u64) -> Option<WebStep> {
    let line = output.lines().rev().find(|l| l.starts_with("web "))?;
    let cpu = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("cpu=")?.trim_end_matches('%').parse().ok())?;
    Some(WebStep {
        legs,
        active: value(line, "active")? as u64,
        cpu_pct_of_one_core: cpu,
        opus_back_per_s: value(line, "opus_back/s")?,
        legs_per_core: value(line, "legs_per_core")?,
        options_p99_ms: value(line, "p99_ms").unwrap_or(f64::NAN),
    })
}

/// benches/soak.sh's CSV: `t_s,phase,rss_kb,rss_anon_kb,threads,fds,tasks,calls_active`
/// (columns found by name; `t_s`, `rss_kb` required).
pub fn soak_csv(csv: &str) -> Vec<SoakSample> {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |name: &str| names.iter().position(|n| *n == name);
    let (Some(elapsed), Some(rss)) = (col("t_s"), col("rss_kb")) else {
        return Vec::new();
    };
    let (phase, threads, fds, tasks, calls) = (
        col("phase"),
        col("threads"),
        col("fds"),
        col("tasks"),
        col("calls_active"),
    );
    lines
        .filter_map(|line| {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            let num = |i: usize| cells.get(i).and_then(|s| s.parse::<f64>().ok());
            let opt = |i: Option<usize>| i.and_then(num).unwrap_or(0.0) as u64;
            Some(SoakSample {
                elapsed_s: num(elapsed)?,
                phase: phase
                    .and_then(|i| cells.get(i))
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                rss_mb: num(rss)? / 1024.0,
                threads: opt(threads),
                fds: opt(fds),
                tasks: opt(tasks),
                calls_active: opt(calls),
            })
        })
        .collect()
}

/// Every benchmark criterion has written under `criterion_dir`
/// (`<id>/new/estimates.json`, mean point estimate in ns).
pub fn criterion_dir(criterion_dir: &Path) -> Vec<CriterionResult> {
    let mut found = Vec::new();
    walk(criterion_dir, criterion_dir, &mut found);
    found.sort_by(|a, b| a.id.cmp(&b.id));
    found
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<CriterionResult>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            let estimates = path.join("estimates.json");
            let mean = std::fs::read_to_string(&estimates)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|v| v.get("mean")?.get("point_estimate")?.as_f64());
            let id = dir
                .strip_prefix(root)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some(mean_ns) = mean {
                found.push(CriterionResult { id, mean_ns });
            }
        } else if path.file_name().is_none_or(|n| n != "report") {
            walk(root, &path, found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_sipp_load_step() {
        let out = "offered  achieved  ok  failed  retrans  p50_ms  p99_ms  cpu_%  rss_MB\n\
                   1000     998       20000  0    0        1       7       61        39.5\n";
        let step = cps_row(out).unwrap();
        assert_eq!(step.offered, 1000.0);
        assert_eq!(step.ok, 20000);
        assert_eq!(step.setup_p99_ms, 7.0);
        assert_eq!(step.peak_rss_mb, 39.5);
        assert_eq!(step.wire_p99_ms, None, "an older script's row");

        let wired =
            "offered achieved ok failed retrans p50_ms p99_ms cpu_% rss_MB wire_p50 wire_p99\n\
                     2000 1989 40000 0 0 0 20 64 180.0 1.33 14.09\n";
        let step = cps_row(wired).unwrap();
        assert_eq!(
            (step.setup_p99_ms, step.wire_p50_ms, step.wire_p99_ms),
            (20.0, Some(1.33), Some(14.09))
        );
        let unwired = "2000 1989 40000 0 0 0 20 64 180.0 - -\n";
        assert_eq!(cps_row(unwired).unwrap().wire_p99_ms, None);
    }

    #[test]
    fn reads_an_rtp_load_run() {
        let out = "calls=4000 rate=250 hold=40s plateau=19s\n\
            cpu cpu0 busy=61.0%\n\
            crossline_cpu_pct_of_one_core=120.5\n\
            calls_active_at_plateau=4000\n\
            rss_idle_kb=16000 rss_plateau_kb=57000 rss_per_call_kb=10\n\
            streams=4000\npackets=3800000 total_seen=3800000\n\
            loss=12 loss_pct=0.0003\n\
            jitter_ms p50=0.120 p99=1.200 p99.9=2.500 max=9.000\n\
            drift_ms max_abs=0.40\n\
            late_wakeups_during_plateau=7\n\
            cpu_steal_pct=12.5\n";
        let step = calls_run(out, 4000).unwrap();
        assert_eq!(step.late_wakeups, 7);
        assert_eq!(step.steal_pct, 12.5);
        assert_eq!(step.active, 4000);
        assert_eq!(step.jitter_p99_ms, 1.2);
        assert_eq!(step.jitter_p999_ms, 2.5);
        assert_eq!(step.jitter_max_ms, 9.0);
        assert_eq!(step.loss_pct, 0.0003);
        assert_eq!(step.cpu_pct_of_one_core, 120.5);
        assert_eq!(step.rss_per_call_kb, 10.0);
    }

    #[test]
    fn reads_a_web_run() {
        let out = "condition result\n\
            web     sent=1000 answered=1000 lost=0 non200=0 p50_ms=0.215 p90_ms=1.180 p99_ms=7.039 \
            max_ms=13.152 cpu=70% web: [all 100 legs up] active=100 opus_back/s=5002 \
            transcode_dropped=[result:0] legs_per_core=142\n";
        let step = web_run(out, 100).unwrap();
        assert_eq!(step.active, 100);
        assert_eq!(step.cpu_pct_of_one_core, 70.0);
        assert_eq!(step.opus_back_per_s, 5002.0);
        assert_eq!(step.legs_per_core, 142.0);
        assert_eq!(step.options_p99_ms, 7.039);
        assert!(web_run("web     sent=0 cpu=0% web: [legs up: 0 of 100]\n", 100).is_none());
    }

    #[test]
    fn a_run_without_receiver_figures_is_refused() {
        assert!(calls_run("calls=10\ncalls_active_at_plateau=10\n", 10).is_none());
    }

    #[test]
    fn reads_rtt_and_soak_files() {
        assert_eq!(
            rtt_samples("Date_ms;response_time_ms;rtd_no\n1;2.5;1\n2;x;1\n3;4;1\n"),
            vec![2.5, 4.0]
        );
        let soak = soak_csv(
            "t_s,phase,rss_kb,rss_anon_kb,threads,fds,tasks,calls_active\n\
             0.0,idle,16384,9000,9,20,12,0\n61.5,wave1,115712,90000,9,2021,1012,1000\n",
        );
        assert_eq!(soak.len(), 2);
        assert_eq!(soak[1].phase, "wave1");
        assert_eq!(soak[1].rss_mb, 113.0);
        assert_eq!(soak[1].fds, 2021);
        assert_eq!(soak[1].calls_active, 1000);
    }
}
