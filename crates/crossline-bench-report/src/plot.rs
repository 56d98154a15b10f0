//! The report's plots: line charts rendered to SVG strings with plotters.

use plotters::prelude::*;

use crate::results::{Results, SETUP_BUCKETS_MS};

/// One named line.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    fn new(name: &str, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points: points
                .into_iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect(),
        }
    }
}

/// A chart's text: its title and its axes' descriptions with units.
pub struct Labels<'a> {
    pub title: &'a str,
    pub x: &'a str,
    pub y: &'a str,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// Render `series` as a line chart; `x_names` labels integer x positions
/// (categories) instead of numbers.
pub fn line_chart(
    labels: &Labels,
    series: &[Series],
    x_names: Option<&[String]>,
) -> Result<String, String> {
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Err(format!("{}: no data", labels.title));
    }
    if (x1 - x0).abs() < f64::EPSILON {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(labels.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, 0.0..y1)
            .map_err(|e| e.to_string())?;
        let name_of = |x: &f64| {
            let i = x.round();
            match x_names {
                Some(names) if (x - i).abs() < 1e-6 && i >= 0.0 => {
                    names.get(i as usize).cloned().unwrap_or_default()
                }
                Some(_) => String::new(),
                None => short_number(*x),
            }
        };
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(labels.x)
            .y_desc(labels.y)
            .x_label_formatter(&name_of)
            .y_label_formatter(&|y| short_number(*y));
        if let Some(names) = x_names {
            mesh.x_labels(names.len());
        }
        mesh.draw().map_err(|e| e.to_string())?;
        for (i, s) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn short_number(v: f64) -> String {
    let abs = v.abs();
    if abs >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if abs >= 100.0 || v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else if abs >= 1.0 {
        format!("{v:.2}")
    } else {
        // Small figures (loss in percent) keep three significant digits.
        let places = (2.0 - abs.log10().floor()).clamp(0.0, 8.0) as usize;
        format!("{v:.places$}")
    }
}

/// One titled plot for the report.
fn titled(
    title: &str,
    x: &str,
    y: &str,
    series: &[Series],
    x_names: Option<&[String]>,
) -> (String, Result<String, String>) {
    let chart = line_chart(&Labels { title, x, y }, series, x_names);
    (title.to_string(), chart)
}

/// Every plot the results allow, titled, in report order.
pub fn all(results: &Results) -> Vec<(String, Result<String, String>)> {
    let mut plots = Vec::new();
    let calls = &results.calls;
    if !calls.is_empty() {
        let by_calls = |name: &str, f: fn(&crate::results::CallsStep) -> f64| {
            let points = calls.iter().map(|s| (s.active as f64, f(s))).collect();
            Series::new(name, points)
        };
        let x = "concurrent hold calls";
        plots.push(titled(
            "RTP send jitter against concurrent calls",
            x,
            "|Δ − 20 ms| (ms)",
            &[
                by_calls("p50", |s| s.jitter_p50_ms),
                by_calls("p99", |s| s.jitter_p99_ms),
                by_calls("p99.9", |s| s.jitter_p999_ms),
            ],
            None,
        ));
        let single = [
            (
                "Worst packet gap against concurrent calls",
                "max |Δ − 20 ms| (ms)",
                by_calls("max", |s| s.jitter_max_ms),
            ),
            (
                "CPU against concurrent calls",
                "crossline CPU (% of one core)",
                by_calls("CPU", |s| s.cpu_pct_of_one_core),
            ),
            (
                "Memory against concurrent calls",
                "RSS at plateau (MB)",
                by_calls("RSS", |s| s.rss_plateau_mb),
            ),
            (
                "Packet loss against concurrent calls",
                "loss at the receiver (%)",
                by_calls("loss", |s| s.loss_pct),
            ),
        ];
        for (title, y, series) in single {
            plots.push(titled(title, x, y, &[series], None));
        }
    }
    if !results.cps.is_empty() {
        let names: Vec<String> = SETUP_BUCKETS_MS
            .iter()
            .map(|b| format!("≤{b}"))
            .chain([format!(">{}", SETUP_BUCKETS_MS[SETUP_BUCKETS_MS.len() - 1])])
            .collect();
        let histograms: Vec<Series> = results
            .cps
            .iter()
            .filter(|s| !s.setup_histogram_pct.is_empty())
            .map(|s| {
                let points = s
                    .setup_histogram_pct
                    .iter()
                    .enumerate()
                    .map(|(i, &p)| (i as f64, p));
                Series::new(&format!("{:.0} CPS", s.offered), points.collect())
            })
            .collect();
        if !histograms.is_empty() {
            plots.push(titled(
                "Setup latency (INVITE → 200) per CPS step",
                "INVITE → 200 OK (ms, bucket upper bound)",
                "calls (%)",
                &histograms,
                Some(&names),
            ));
        }
        let by_rate = |name: &str, f: fn(&crate::results::CpsStep) -> f64| {
            Series::new(
                name,
                results.cps.iter().map(|s| (s.offered, f(s))).collect(),
            )
        };
        plots.push(titled(
            "Setup latency percentiles against offered rate",
            "offered call setups per second",
            "INVITE → 200 OK (ms)",
            &[
                by_rate("p50", |s| s.setup_p50_ms),
                by_rate("p99", |s| s.setup_p99_ms),
            ],
            None,
        ));
    }
    if !results.soak.is_empty() {
        let over_time = |name: &str, f: fn(&crate::results::SoakSample) -> f64| {
            Series::new(
                name,
                results.soak.iter().map(|s| (s.elapsed_s, f(s))).collect(),
            )
        };
        plots.push(titled(
            "Soak: memory through the waves of calls and after",
            "time (s)",
            "RSS (MB); calls up (hundreds)",
            &[
                over_time("RSS (MB)", |s| s.rss_mb),
                over_time("calls up / 100", |s| s.calls_active as f64 / 100.0),
            ],
            None,
        ));
    }
    plots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_its_axes_units_and_lines() {
        let svg = line_chart(
            &Labels {
                title: "Jitter",
                x: "concurrent hold calls",
                y: "|Δ − 20 ms| (ms)",
            },
            &[Series::new("p99", vec![(1000.0, 0.5), (4000.0, 1.2)])],
            None,
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{svg:.80}");
        assert!(svg.contains("concurrent hold calls"));
        assert!(svg.contains("(ms)"));
        assert!(svg.contains("p99"));
        assert!(svg.contains("<polyline"), "no line drawn");
        assert!(svg.contains(">4000<") || svg.contains(">4k<") || svg.contains("4000"));
    }

    #[test]
    fn small_figures_keep_their_digits() {
        assert_eq!(short_number(0.0), "0");
        assert_eq!(short_number(0.0125), "0.0125");
        assert_eq!(short_number(0.5), "0.500");
        assert_eq!(short_number(2.5), "2.50");
        assert_eq!(short_number(4000.0), "4000");
        assert_eq!(short_number(50000.0), "50k");
    }

    #[test]
    fn a_chart_without_data_is_an_error_not_an_empty_picture() {
        let err = line_chart(
            &Labels {
                title: "T",
                x: "x",
                y: "y",
            },
            &[Series::new("a", vec![])],
            None,
        );
        assert!(err.is_err());
    }
}
