//! `bench-report`: runs crossline's benchmarks and writes
//! `target/bench-report/index.html` (tables and SVG plots, one
//! self-contained page) and `results.json` (to compare runs with
//! `--compare`). `scripts/bench-report.sh` is the way in; it runs this
//! from the repository root.

mod html;
mod parse;
mod plot;
mod results;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use results::Results;

#[derive(Parser, Debug)]
#[command(about = "Run crossline's benchmarks and write an HTML report with plots")]
struct Args {
    /// Where index.html, results.json and the step logs go.
    #[arg(long, default_value = "target/bench-report")]
    out: PathBuf,
    /// An older results.json: figures more than 10 % worse are marked.
    #[arg(long, value_name = "OLD.json")]
    compare: Option<PathBuf>,
    /// Render from an existing results.json instead of running anything.
    #[arg(long, value_name = "RESULTS.json")]
    from: Option<PathBuf>,
    /// Offered setup rates for the CPS sweep (calls per second).
    #[arg(long, value_delimiter = ',', default_value = "250,500,1000,2000")]
    cps: Vec<u32>,
    /// Seconds of calls per CPS step.
    #[arg(long, default_value_t = 20)]
    cps_secs: u32,
    /// Concurrent hold calls for the concurrency sweep.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000,4000,6000")]
    calls: Vec<u32>,
    /// How long each concurrency step holds its calls (seconds; the
    /// plateau measured is this less the ramp and 5 s).
    #[arg(long, default_value_t = 60)]
    hold_secs: u32,
    /// Setup rate while the concurrency sweep ramps up.
    #[arg(long, default_value_t = 250)]
    ramp_rate: u32,
    /// Web calls under real load (str0m peers through the web-call path)
    /// for the WebRTC step: legs per run.
    #[arg(long, value_delimiter = ',', default_value = "100,200")]
    web_legs: Vec<u32>,
    /// Run benches/soak.sh too (long: 100,000 calls in waves, ~5 minutes).
    #[arg(long)]
    soak: bool,
    /// Plot a soak CSV from an earlier benches/soak.sh run.
    #[arg(long, value_name = "CSV")]
    soak_csv: Option<PathBuf>,
    /// Steps to leave out: criterion, cps, calls, web.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Criterion in quick mode (fewer samples; for a first look).
    #[arg(long)]
    quick: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(regressions) if regressions > 0 => {
            eprintln!("bench-report: {regressions} figures regressed by more than 10 %");
            ExitCode::from(2)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-report: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<usize, String> {
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let results = match &args.from {
        Some(path) => read_results(path)?,
        None => measure(args)?,
    };
    let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    let results_path = args.out.join("results.json");
    if args.from.as_deref() != Some(results_path.as_path()) {
        write(&results_path, &json)?;
    }
    let changes = match &args.compare {
        Some(old) => Some(results.compare(&read_results(old)?)),
        None => None,
    };
    let plots = plot::all(&results);
    for (i, (title, svg)) in plots.iter().enumerate() {
        match svg {
            Ok(svg) => write(&args.out.join(format!("plot-{}.svg", i + 1)), svg)?,
            Err(e) => eprintln!("bench-report: {title}: {e}"),
        }
    }
    let page = html::page(&results, &plots, changes.as_deref());
    let index = args.out.join("index.html");
    write(&index, &page)?;
    println!("report: {}", index.display());
    let regressions: Vec<_> = changes.iter().flatten().filter(|c| c.regression).collect();
    for c in &regressions {
        println!(
            "REGRESSION {}: {:.3} -> {:.3} ({:+.1} %)",
            c.figure, c.old, c.new, c.change_pct
        );
    }
    Ok(regressions.len())
}

fn read_results(path: &Path) -> Result<Results, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn skipped(args: &Args, step: &str) -> bool {
    args.skip.iter().any(|s| s == step)
}

fn measure(args: &Args) -> Result<Results, String> {
    let mut results = Results {
        machine: machine(),
        ..Results::default()
    };
    let mut steps = 0;
    if !skipped(args, "criterion") {
        steps += 1;
    }
    if !skipped(args, "cps") {
        steps += args.cps.len();
    }
    if !skipped(args, "calls") {
        steps += args.calls.len();
    }
    if !skipped(args, "web") {
        steps += args.web_legs.len();
    }
    if args.soak {
        steps += 1;
    }
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let logs = args.out.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;

    if !skipped(args, "criterion") {
        bar.set_message("criterion suites (cargo bench)");
        let mut cmd = Command::new("cargo");
        cmd.args(["bench", "--benches", "--"]);
        if args.quick {
            cmd.arg("--quick");
        }
        step(&mut cmd, &logs.join("criterion.log"))?;
        results.criterion = parse::criterion_dir(&target_dir().join("criterion"));
        bar.inc(1);
    }
    if !skipped(args, "cps") {
        for &rate in &args.cps {
            bar.set_message(format!("CPS sweep: {rate} calls/s for {} s", args.cps_secs));
            let rtt_dir = logs.join(format!("rtt-{rate}"));
            let _ = std::fs::remove_dir_all(&rtt_dir);
            std::fs::create_dir_all(&rtt_dir).map_err(|e| e.to_string())?;
            let log = logs.join(format!("cps-{rate}.log"));
            let output = step(
                Command::new("benches/sipp-load.sh")
                    .arg(rate.to_string())
                    .env("WIRE_RTT", "1")
                    .env("CALLS_PER_STEP", (rate * args.cps_secs).to_string())
                    .env("RTT_DIR", &rtt_dir),
                &log,
            )?;
            let mut row = parse::cps_row(&output)
                .ok_or_else(|| format!("CPS step {rate}: no result row (see {})", log.display()))?;
            let samples: Vec<f64> = std::fs::read_dir(&rtt_dir)
                .map_err(|e| e.to_string())?
                .flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .flat_map(|csv| parse::rtt_samples(&csv))
                .collect();
            row.setup_histogram_pct = results::setup_histogram(&samples);
            results.cps.push(row);
            bar.inc(1);
        }
    }
    if !skipped(args, "calls") {
        for &calls in &args.calls {
            bar.set_message(format!(
                "concurrency sweep: {calls} hold calls for {} s",
                args.hold_secs
            ));
            let log = logs.join(format!("calls-{calls}.log"));
            let output = step(
                Command::new("benches/rtp-load.sh")
                    .args([calls.to_string(), args.hold_secs.to_string()])
                    .env("RATE", args.ramp_rate.to_string()),
                &log,
            )?;
            let row = parse::calls_run(&output, u64::from(calls)).ok_or_else(|| {
                format!("{calls} calls: incomplete figures (see {})", log.display())
            })?;
            results.calls.push(row);
            bar.inc(1);
        }
    }
    if !skipped(args, "web") {
        for &legs in &args.web_legs {
            bar.set_message(format!("web calls: {legs} str0m legs"));
            let log = logs.join(format!("web-{legs}.log"));
            let output = step(
                Command::new("benches/signalling-latency.sh")
                    .arg("web")
                    .env("LEGS", legs.to_string())
                    .env("COUNT", "1000"),
                &log,
            )?;
            let row = parse::web_run(&output, u64::from(legs)).ok_or_else(|| {
                format!(
                    "{legs} web legs: incomplete figures (see {})",
                    log.display()
                )
            })?;
            results.web.push(row);
            bar.inc(1);
        }
    }
    let soak_csv = if args.soak {
        bar.set_message("soak (benches/soak.sh)");
        // soak.sh writes soak.csv (and soak.svg) into $OUT.
        let csv = args.out.join("soak.csv");
        step(
            Command::new("benches/soak.sh").env("OUT", &args.out),
            &logs.join("soak.log"),
        )?;
        bar.inc(1);
        Some(csv)
    } else {
        args.soak_csv.clone()
    };
    if let Some(csv) = soak_csv {
        let text = std::fs::read_to_string(&csv).map_err(|e| format!("{}: {e}", csv.display()))?;
        results.soak = parse::soak_csv(&text);
        if results.soak.is_empty() {
            return Err(format!(
                "{}: no soak samples (benches/soak.sh's header: t_s,phase,rss_kb,...)",
                csv.display()
            ));
        }
    }
    bar.finish_with_message("done");
    Ok(results)
}

/// Run one step, its output (stdout and stderr) to `log`; returns stdout.
fn step(cmd: &mut Command, log: &Path) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = format!(
        "{stdout}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    write(log, &text)?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed ({}); see {}",
            cmd.get_program(),
            out.status,
            log.display()
        ));
    }
    Ok(stdout)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from)
}

fn machine() -> results::Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let memory_mb = read("/proc/meminfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0)
        / 1024;
    let command = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    results::Machine {
        date: command("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        git_revision: command("git", &["rev-parse", "--short", "HEAD"]),
        cpu_model,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_mb,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        load_before: read("/proc/loadavg")
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
    }
}
