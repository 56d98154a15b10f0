//! The self-contained report page: the machine, the tables, the plots
//! (inline SVG) and, against an older run, the regressions.

use std::fmt::Write;

use crate::results::{Change, Results, REGRESSION_PCT};

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn table(out: &mut String, head: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    out.push_str("<table><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(&cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

fn num(v: f64, places: usize) -> String {
    if v.is_finite() {
        format!("{v:.places$}")
    } else {
        "–".into()
    }
}

pub fn page(
    results: &Results,
    plots: &[(String, Result<String, String>)],
    changes: Option<&[Change]>,
) -> String {
    let m = &results.machine;
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>crossline benchmark report</title><style>\
         body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}\
         table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
         th{background:#f3f3f3}tr.bad td{background:#fdd}figure{margin:1.5em 0}.err{color:#b00}\
         </style></head><body><h1>crossline benchmark report</h1>",
    );
    let _ = write!(
        out,
        "<p>{} · revision <code>{}</code> · {} · {} cores · {} MB · Linux {} · load average before the run {:.2} \
         (anything above 0 shared the box)</p>",
        escape(&m.date),
        escape(&m.git_revision),
        escape(&m.cpu_model),
        m.cores,
        m.memory_mb,
        escape(&m.kernel),
        m.load_before,
    );
    if let Some(changes) = changes {
        let bad = changes.iter().filter(|c| c.regression).count();
        let _ = write!(
            out,
            "<h2>Against the older run</h2><p>{bad} of {} figures regressed by more than {REGRESSION_PCT:.0} %.</p>",
            changes.len()
        );
        out.push_str(
            "<table><tr><th>figure</th><th>old</th><th>new</th><th>change</th><th></th></tr>",
        );
        for c in changes {
            let _ = write!(
                out,
                "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{:+.1} %</td><td>{}</td></tr>",
                if c.regression { " class=\"bad\"" } else { "" },
                escape(&c.figure),
                num(c.old, 3),
                num(c.new, 3),
                c.change_pct,
                if c.regression { "REGRESSION" } else { "" },
            );
        }
        out.push_str("</table>");
    }
    out.push_str("<h2>Targets</h2>");
    table(
        &mut out,
        &["figure", "target", "measured", "met"],
        results.targets().into_iter().map(|t| {
            let met = match t.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "–",
            };
            vec![t.figure, t.target, t.measured, met.into()]
        }),
    );
    out.push_str("<h2>Plots</h2>");
    for (title, svg) in plots {
        match svg {
            Ok(svg) => {
                let _ = write!(out, "<figure title=\"{}\">{svg}</figure>", escape(title));
            }
            Err(e) => {
                let _ = write!(out, "<p class=\"err\">{}: {}</p>", escape(title), escape(e));
            }
        }
    }
    if !results.calls.is_empty() {
        out.push_str("<h2>Concurrent hold calls</h2>");
        table(
            &mut out,
            &[
                "offered",
                "up",
                "jitter p50 ms",
                "p99",
                "p99.9",
                "max",
                "loss %",
                "drift ms",
                "CPU % of a core",
                "RSS MB",
                "KB per call",
                "µs CPU per packet",
                "late loop wake-ups",
                "vCPU steal %",
            ],
            results.calls.iter().map(|s| {
                vec![
                    s.offered.to_string(),
                    s.active.to_string(),
                    num(s.jitter_p50_ms, 3),
                    num(s.jitter_p99_ms, 3),
                    num(s.jitter_p999_ms, 3),
                    num(s.jitter_max_ms, 2),
                    num(s.loss_pct, 4),
                    num(s.drift_max_ms, 2),
                    num(s.cpu_pct_of_one_core, 1),
                    num(s.rss_plateau_mb, 1),
                    num(s.rss_per_call_kb, 1),
                    num(s.cpu_us_per_packet, 2),
                    s.late_wakeups.to_string(),
                    num(s.steal_pct, 1),
                ]
            }),
        );
    }
    if !results.cps.is_empty() {
        out.push_str("<h2>Call setup rate</h2>");
        table(
            &mut out,
            &[
                "offered CPS",
                "achieved",
                "ok",
                "failed",
                "retransmissions",
                "setup p50 ms",
                "p99 ms",
                "on the wire: p50 ms",
                "p99 ms",
                "CPU % of a core",
                "peak RSS MB",
            ],
            results.cps.iter().map(|s| {
                vec![
                    num(s.offered, 0),
                    num(s.achieved, 0),
                    s.ok.to_string(),
                    s.failed.to_string(),
                    s.retransmissions.to_string(),
                    num(s.setup_p50_ms, 1),
                    num(s.setup_p99_ms, 1),
                    s.wire_p50_ms.map_or("-".into(), |v| num(v, 2)),
                    s.wire_p99_ms.map_or("-".into(), |v| num(v, 2)),
                    num(s.cpu_pct_of_one_core, 0),
                    num(s.peak_rss_mb, 1),
                ]
            }),
        );
    }
    if !results.web.is_empty() {
        out.push_str("<h2>Web calls under real load</h2>");
        table(
            &mut out,
            &[
                "legs",
                "up",
                "CPU % of a core",
                "Opus packets/s back",
                "legs per core",
                "OPTIONS p99 ms",
            ],
            results.web.iter().map(|s| {
                vec![
                    s.legs.to_string(),
                    s.active.to_string(),
                    num(s.cpu_pct_of_one_core, 0),
                    num(s.opus_back_per_s, 0),
                    num(s.legs_per_core, 0),
                    num(s.options_p99_ms, 1),
                ]
            }),
        );
    }
    if !results.soak.is_empty() {
        out.push_str("<h2>Soak</h2>");
        table(
            &mut out,
            &[
                "s",
                "phase",
                "calls up",
                "RSS MB",
                "threads",
                "fds",
                "tokio tasks",
            ],
            // One row per phase: its last sample.
            results
                .soak
                .iter()
                .enumerate()
                .filter(|(i, s)| {
                    results
                        .soak
                        .get(i + 1)
                        .is_none_or(|next| next.phase != s.phase)
                })
                .map(|(_, s)| {
                    vec![
                        num(s.elapsed_s, 0),
                        s.phase.clone(),
                        s.calls_active.to_string(),
                        num(s.rss_mb, 1),
                        s.threads.to_string(),
                        s.fds.to_string(),
                        s.tasks.to_string(),
                    ]
                }),
        );
    }
    if !results.criterion.is_empty() {
        out.push_str("<h2>Criterion suites</h2>");
        table(
            &mut out,
            &["benchmark", "mean"],
            results
                .criterion
                .iter()
                .map(|c| vec![c.id.clone(), human_time(c.mean_ns)]),
        );
    }
    out.push_str("</body></html>\n");
    out
}

fn human_time(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}
