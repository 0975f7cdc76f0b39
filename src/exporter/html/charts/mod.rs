//! The "History" section of the status page: small server-side SVG charts of the master's
//! history (`StatusDoc::history`), one per series group, no script.
//!
//! Each chart spans the samples' time, from a minute up to the last 15 minutes ("−15 m …
//! now", shorter while the master is younger): a sample sits at its own time, a
//! line breaks where the sampler skipped (a step longer than 1.5 intervals) or a value is
//! unknown, so gaps show as gaps. The axis maximum and each series' last value are labelled.
//! [`svg`] is a pure function of a [`Chart`]; every text goes through [`super::escape_html`]
//! and every number is finite (a non-finite value is drawn as 0 and never printed).

use std::fmt::Write;

use super::esc;
use crate::scoreboard::HistorySeries;

/// Size of a chart's `viewBox`.
const W: f64 = 360.0;
const H: f64 = 140.0;
/// The plot area inside it.
const LEFT: f64 = 8.0;
const RIGHT: f64 = 352.0;
const TOP: f64 = 22.0;
const BOTTOM: f64 = 108.0;

/// The shortest time axis: a first sample is not stretched over the width.
const MIN_WINDOW_MS: u64 = 60_000;

/// Colours of the page's palette (`status-page.css`).
const GREY: &str = "#94a3b8";
const GREEN: &str = "#10b981";
const BLUE: &str = "#3b82f6";
const AMBER: &str = "#f59e0b";
const RED: &str = "#ef4444";
const DARK_RED: &str = "#b91c1c";
const ACCENT: &str = "#2563eb";
const MUTED: &str = "#6b7280";
const LINE: &str = "#e5e7eb";

/// One line of a chart.
#[derive(Debug, Clone)]
pub(crate) struct Series<'a> {
    pub label: &'a str,
    pub color: &'a str,
    /// One value per time (`None`: unknown, the line breaks).
    pub values: Vec<Option<f64>>,
}

/// A chart: a title, a unit formatter and lines over the same times.
#[derive(Debug, Clone)]
pub(crate) struct Chart<'a> {
    pub title: &'a str,
    /// Formats a value for the labels (never sees a non-finite value).
    pub fmt: fn(f64) -> String,
    pub lines: Vec<Series<'a>>,
}

/// What every chart shares: the sample times, the window's end and its length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame<'a> {
    pub unix_ms: &'a [u64],
    pub now_ms: u64,
    pub window_ms: u64,
    pub interval_ms: u64,
}

fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// The largest value drawn, or 1 when there is none above 0 (no division by zero).
fn axis_max(lines: &[Series<'_>]) -> f64 {
    let max = lines
        .iter()
        .flat_map(|l| l.values.iter().flatten())
        .map(|&v| finite(v))
        .fold(0.0f64, f64::max);
    if max > 0.0 {
        max
    } else {
        1.0
    }
}

/// Whether any value is above 0.
fn seen_max(lines: &[Series<'_>]) -> bool {
    lines
        .iter()
        .flat_map(|l| l.values.iter().flatten())
        .any(|&v| finite(v) > 0.0)
}

/// The x of a time: the window's start at `LEFT`, now at `RIGHT` (clamped into the plot).
fn x_of(f: &Frame<'_>, ms: u64) -> f64 {
    let start = f.now_ms.saturating_sub(f.window_ms);
    let off = ms.saturating_sub(start).min(f.window_ms) as f64;
    LEFT + (RIGHT - LEFT) * off / f.window_ms.max(1) as f64
}

fn y_of(v: f64, max: f64) -> f64 {
    let share = (finite(v) / max).clamp(0.0, 1.0);
    BOTTOM - (BOTTOM - TOP) * share
}

/// The line's runs of points: broken at gaps and unknown values, samples older than the
/// axis left out; points in one column of the plot are merged into their highest (a spike
/// stays visible).
fn runs(f: &Frame<'_>, values: &[Option<f64>], max: f64) -> Vec<Vec<(f64, f64)>> {
    let gap = f.interval_ms + f.interval_ms / 2;
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut prev_ms: Option<u64> = None;
    let start = f.now_ms.saturating_sub(f.window_ms);
    for (&ms, v) in f.unix_ms.iter().zip(values) {
        let joined = prev_ms.is_some_and(|p| ms.saturating_sub(p) <= gap);
        prev_ms = Some(ms);
        if ms < start {
            continue; // older than the axis: not drawn
        }
        let Some(v) = v else {
            out.push(Vec::new());
            continue;
        };
        let (x, y) = (x_of(f, ms), y_of(*v, max));
        match out.last_mut() {
            Some(run) if joined => match run.last_mut() {
                Some(last) if last.0.floor() == x.floor() => last.1 = last.1.min(y),
                _ => run.push((x, y)),
            },
            _ => out.push(vec![(x, y)]),
        }
    }
    out.retain(|r| !r.is_empty());
    out
}

/// The chart as an inline `<svg>` element.
pub(crate) fn svg(chart: &Chart<'_>, f: &Frame<'_>) -> String {
    let max = axis_max(&chart.lines);
    let mut s = format!(
        "<svg viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" \
         role=\"img\" aria-label=\"{}\">",
        esc(chart.title)
    );
    let _ = write!(
        s,
        "<text x=\"{LEFT}\" y=\"13\" font-size=\"12\" font-weight=\"600\" fill=\"#111827\">{}</text>\
         <text x=\"{RIGHT}\" y=\"13\" font-size=\"10\" text-anchor=\"end\" fill=\"{MUTED}\">max {}</text>",
        esc(chart.title),
        // The largest value (0 when all are 0, though the scale is then 0..1).
        esc(&(chart.fmt)(if seen_max(&chart.lines) { max } else { 0.0 }))
    );
    // Grid: the top (max), the middle, the base.
    for y in [TOP, (TOP + BOTTOM) / 2.0, BOTTOM] {
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{RIGHT}\" y2=\"{y}\" stroke=\"{LINE}\" stroke-width=\"1\"/>"
        );
    }
    let half = format!("\u{2212}{}", ago(f.window_ms / 2));
    let start = format!("\u{2212}{}", ago(f.window_ms));
    let ticks = [
        (start.as_str(), "start"),
        (half.as_str(), "middle"),
        ("now", "end"),
    ];
    for (i, (label, anchor)) in ticks.iter().enumerate() {
        let x = LEFT + (RIGHT - LEFT) * i as f64 / 2.0;
        let _ = write!(
            s,
            "<text x=\"{x:.1}\" y=\"{:.0}\" font-size=\"10\" text-anchor=\"{anchor}\" fill=\"{MUTED}\">{}</text>",
            BOTTOM + 12.0,
            esc(label)
        );
    }
    for line in &chart.lines {
        for run in runs(f, &line.values, max) {
            draw_run(&mut s, &run, line.color);
        }
    }
    legend(&mut s, chart);
    s.push_str("</svg>");
    s
}

fn draw_run(s: &mut String, run: &[(f64, f64)], color: &str) {
    if let [(x, y)] = run {
        let _ = write!(
            s,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"1.8\" fill=\"{color}\"/>"
        );
        return;
    }
    s.push_str("<polyline fill=\"none\" stroke-width=\"1.6\" stroke-linejoin=\"round\" stroke=\"");
    s.push_str(color);
    s.push_str("\" points=\"");
    for (i, (x, y)) in run.iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        let _ = write!(s, "{sep}{x:.1},{y:.1}");
    }
    s.push_str("\"/>");
}

/// Under the plot: each line's colour, label and last value (`–` when unknown).
fn legend(s: &mut String, chart: &Chart<'_>) {
    let y = H - 4.0;
    let mut x = LEFT;
    let step = (RIGHT - LEFT) / chart.lines.len().max(1) as f64;
    for line in &chart.lines {
        let last = match line.values.last() {
            Some(Some(v)) => (chart.fmt)(finite(*v)),
            _ => "\u{2013}".to_string(),
        };
        let _ = write!(
            s,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\" rx=\"2\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{y}\" font-size=\"10\" fill=\"#111827\">{} <tspan font-weight=\"600\">{}</tspan></text>",
            y - 8.0,
            line.color,
            x + 11.0,
            esc(line.label),
            esc(&last)
        );
        x += step;
    }
}

/// `45 s`, `15 m`.
fn ago(ms: u64) -> String {
    let secs = ms / 1000;
    if secs < 120 {
        format!("{secs} s")
    } else {
        format!("{} m", (secs + 30) / 60)
    }
}

fn per_second(v: f64) -> String {
    match v {
        v if v >= 100.0 => format!("{v:.0}/s"),
        v if v >= 10.0 => format!("{v:.1}/s"),
        v => format!("{v:.2}/s"),
    }
}

fn millis(v: f64) -> String {
    let ms = v * 1000.0;
    match ms {
        m if m >= 100.0 => format!("{m:.0} ms"),
        m if m >= 1.0 => format!("{m:.1} ms"),
        m => format!("{m:.2} ms"),
    }
}

fn whole(v: f64) -> String {
    format!("{v:.0}")
}

fn some(v: &[f64]) -> Vec<Option<f64>> {
    v.iter().map(|&x| Some(x)).collect()
}

fn u64s(v: &[u64]) -> Vec<Option<f64>> {
    v.iter().map(|&x| Some(x as f64)).collect()
}

/// The charts of a history: requests/s by class, p50/p99, in flight, workers by state, and
/// the listen queue when any listener was sampled.
pub(crate) fn charts(h: &HistorySeries) -> Vec<Chart<'_>> {
    let colors = [GREY, GREEN, BLUE, AMBER, RED, DARK_RED];
    let by_class: Vec<Series<'_>> = h
        .requests_per_second_by_class
        .each()
        .into_iter()
        .zip(colors)
        .filter(|((label, v), _)| *label == "2xx" || v.iter().any(|&x| x > 0.0))
        .map(|((label, v), color)| Series {
            label,
            color,
            values: some(v),
        })
        .collect();
    let mut out = vec![
        Chart {
            title: "Requests/s by class",
            fmt: per_second,
            lines: by_class,
        },
        Chart {
            title: "Latency",
            fmt: millis,
            lines: vec![
                Series {
                    label: "p50",
                    color: ACCENT,
                    values: h.p50_seconds.clone(),
                },
                Series {
                    label: "p99",
                    color: AMBER,
                    values: h.p99_seconds.clone(),
                },
            ],
        },
        Chart {
            title: "In flight",
            fmt: whole,
            lines: vec![Series {
                label: "requests",
                color: ACCENT,
                values: u64s(&h.in_flight),
            }],
        },
        Chart {
            title: "Workers",
            fmt: whole,
            lines: vec![
                Series {
                    label: "ready",
                    color: GREEN,
                    values: u64s(&h.workers_ready),
                },
                Series {
                    label: "starting",
                    color: BLUE,
                    values: u64s(&h.workers_starting),
                },
                Series {
                    label: "draining",
                    color: AMBER,
                    values: u64s(&h.workers_draining),
                },
            ],
        },
    ];
    if h.listen_queue_length.iter().any(Option::is_some) {
        let length = h
            .listen_queue_length
            .iter()
            .map(|v| v.map(|n| n as f64))
            .collect();
        out.push(Chart {
            title: "Listen queue",
            fmt: whole,
            lines: vec![
                Series {
                    label: "longest",
                    color: ACCENT,
                    values: length,
                },
                Series {
                    label: "drops/s",
                    color: RED,
                    values: h.listen_queue_drops_per_second.clone(),
                },
            ],
        });
    }
    out
}

/// The section: a heading, a line on the samples, the charts side by side.
pub(crate) fn section(h: &HistorySeries, now_ms: u64) -> String {
    let interval_ms = (h.interval_seconds * 1000.0).round().max(1.0) as u64;
    let now_ms = h.unix_ms.last().copied().unwrap_or(0).max(now_ms);
    // The span the samples cover, at least a minute, at most the ring's 15 minutes.
    let full = interval_ms.saturating_mul(h.capacity.max(1) as u64);
    let first = h.unix_ms.first().copied().unwrap_or(now_ms);
    let span = now_ms.saturating_sub(first).saturating_add(interval_ms);
    let frame = Frame {
        unix_ms: &h.unix_ms,
        now_ms,
        window_ms: span.clamp(MIN_WINDOW_MS.min(full), full),
        interval_ms,
    };
    let note = match h.len() {
        0 => "No samples yet: the master samples once a second.".to_string(),
        1 => "1 sample; one a second, the last 15 minutes kept.".to_string(),
        n => format!("{n} samples; one a second, the last 15 minutes kept."),
    };
    let charts: String = charts(h)
        .iter()
        .map(|c| format!("<div class=\"chart\">{}</div>", svg(c, &frame)))
        .collect();
    format!(
        "<h2 id=\"history\">History</h2><p class=\"muted small\">{}</p>\
         <section class=\"charts\">{charts}</section>\n",
        esc(&note)
    )
}

#[cfg(test)]
mod tests;
