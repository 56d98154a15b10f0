//! The report binary end to end: results in, a page with plots out, a
//! regression against an older run marked, and the page rendered by a
//! real headless Chromium.

use std::path::Path;
use std::process::Command;

fn results(p99_ms: f64, loss_pct: f64) -> serde_json::Value {
    let calls: Vec<_> = [1000u64, 2000, 4000]
        .iter()
        .map(|&n| {
            serde_json::json!({
                "offered": n, "active": n,
                "jitter_p50_ms": 0.1, "jitter_p99_ms": p99_ms * n as f64 / 4000.0,
                "jitter_p999_ms": 2.0, "jitter_max_ms": 8.0, "loss_pct": loss_pct,
                "drift_max_ms": 0.3, "cpu_pct_of_one_core": n as f64 / 40.0,
                "rss_plateau_mb": 16.0 + n as f64 * 0.01, "rss_per_call_kb": 10.2
            })
        })
        .collect();
    serde_json::json!({
        "machine": {"date": "2026-12-05T00:00:00Z", "git_revision": "abc1234", "cpu_model": "test CPU",
                    "cores": 2, "memory_mb": 24000, "kernel": "6.1", "load_before": 0.1},
        "criterion": [{"id": "sip_parse/invite", "mean_ns": 2500.0}],
        "cps": [{"offered": 500.0, "achieved": 499.0, "ok": 10000, "failed": 0, "retransmissions": 0,
                 "setup_p50_ms": 1.0, "setup_p99_ms": 4.0, "cpu_pct_of_one_core": 30.0, "peak_rss_mb": 40.0,
                 "setup_histogram_pct": [50.0, 30.0, 15.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}],
        "calls": calls,
        "web": [{"legs": 100, "active": 100, "cpu_pct_of_one_core": 70.0, "opus_back_per_s": 5002.0,
                 "legs_per_core": 142.0, "options_p99_ms": 7.0}],
        "soak": [{"elapsed_s": 0.0, "phase": "idle", "rss_mb": 16.0, "threads": 9, "fds": 20, "tasks": 12, "calls_active": 0},
                 {"elapsed_s": 100.0, "phase": "wave1", "rss_mb": 60.0, "threads": 9, "fds": 2020, "tasks": 2012, "calls_active": 2000},
                 {"elapsed_s": 200.0, "phase": "after", "rss_mb": 24.0, "threads": 9, "fds": 20, "tasks": 12, "calls_active": 0}]
    })
}

fn report(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bench-report"))
        .arg("--out")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn renders_plots_and_marks_a_regression() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.json");
    let new = dir.path().join("new.json");
    std::fs::write(&old, results(1.0, 0.0).to_string()).unwrap();
    std::fs::write(&new, results(1.5, 0.0).to_string()).unwrap();

    let same = report(dir.path(), &["--from", new.to_str().unwrap()]);
    assert!(
        same.status.success(),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );
    let page = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    // Seven plots: jitter, worst gap, CPU, memory, loss, setup histogram,
    // setup percentiles, soak; each an inline SVG with its axis units.
    assert_eq!(page.matches("<svg").count(), 8, "plots in the page");
    for unit in [
        "|Δ − 20 ms| (ms)",
        "(% of one core)",
        "RSS at plateau (MB)",
        "loss at the receiver (%)",
        "calls (%)",
        "RSS (MB)",
    ] {
        assert!(page.contains(unit), "axis {unit} missing");
    }
    assert!(
        page.contains("test CPU") && page.contains("abc1234"),
        "machine and revision shown"
    );
    // The targets, judged from the steps: the soak ended 8 MB over idle
    // (met), 10.2 KB per call (not met), no 6,000-call step (not measured).
    assert!(page.contains("<h2>Targets</h2>"));
    assert!(
        page.contains("<td>+8.0 MB over idle</td><td>yes</td>"),
        "soak target row"
    );
    assert!(
        page.contains("<td>10.2 KB at 4000 calls</td><td>NO</td>"),
        "memory target row"
    );
    assert!(page.contains("<td>not measured in this run</td><td>–</td>"));
    assert!(page.contains("142 per core (100 legs"), "web target row");
    assert!(page.contains("<h2>Web calls under real load</h2>"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(json["calls"].as_array().unwrap().len(), 3);

    // 50 % worse p99 jitter: marked, and the exit status says so.
    let worse = report(
        dir.path(),
        &[
            "--from",
            new.to_str().unwrap(),
            "--compare",
            old.to_str().unwrap(),
        ],
    );
    assert_eq!(
        worse.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&worse.stderr)
    );
    let stdout = String::from_utf8_lossy(&worse.stdout);
    assert!(
        stdout.contains("REGRESSION 4000 calls: jitter p99 (ms)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("RSS per call"),
        "unchanged figures are not regressions: {stdout}"
    );
    let page = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert!(page.contains("class=\"bad\""));

    // A run against itself: nothing regressed.
    let itself = report(
        dir.path(),
        &[
            "--from",
            new.to_str().unwrap(),
            "--compare",
            new.to_str().unwrap(),
        ],
    );
    assert!(itself.status.success());

    // Headless Chromium renders the page: a screenshot of real size with
    // the plots' pixels in it (a blank page compresses to almost nothing).
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("install Chromium: apt-get install -y chromium");
    let shot = dir.path().join("report.png");
    let out = Command::new(chromium)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1100,3000",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!(
            "file://{}",
            dir.path().join("index.html").display()
        ))
        .output()
        .unwrap();
    let png = std::fs::read(&shot)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(&png[1..4], b"PNG");
    assert!(
        png.len() > 60_000,
        "screenshot {} bytes: plots did not render",
        png.len()
    );
    if let Ok(keep) = std::env::var("BENCH_REPORT_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

#[test]
fn a_missing_results_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = report(dir.path(), &["--from", "/nonexistent/results.json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/results.json"));
}
