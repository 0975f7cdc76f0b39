//! One frame of `flora-cluster top` as plain text lines: no escapes (the terminal side adds
//! them), every control character from the scoreboard replaced, every line cut to the width.

use super::view::{RequestRow, View, WorkerRow};
use crate::exporter::terminal::{human_bytes, human_duration, sanitize};

/// The key footer.
const KEYS: &str = "q quit  p pause  s/r/c/m sort by slot/req/s/cpu/memory  h help";
/// Request rows kept for when workers do not all fit.
const MIN_REQUEST_ROWS: usize = 3;

/// Terminal columns of `c`: 0 for combining marks, 2 for East Asian wide and emoji, else 1
/// (a small table, enough to keep the columns of a frame in place).
pub fn char_width(c: char) -> usize {
    match u32::from(c) {
        0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F => 0,
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

/// Terminal columns of `s`.
pub fn text_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// `s` cut to `width` terminal columns (a cut ends in `…`).
pub fn fit(s: &str, width: usize) -> String {
    if text_width(s) <= width {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = char_width(c);
        if used + w + 1 > width {
            break;
        }
        used += w;
        out.push(c);
    }
    if width > 0 {
        out.push('…');
    }
    out
}

/// Control characters as `?` (as `status` shows them), and the invisible format characters
/// that reorder or hide text (bidi overrides, zero-width marks) too.
pub fn clean(s: &str) -> String {
    sanitize(s)
        .chars()
        .map(|c| match u32::from(c) {
            0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2069 | 0xFEFF => '?',
            _ => c,
        })
        .collect()
}

/// `12.3 ms`, `4.56 s`, or `-`.
fn millis(secs: Option<f64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s < 1.0 => format!("{:.1} ms", s * 1000.0),
        Some(s) => format!("{s:.2} s"),
    }
}

fn rate(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// The frame: at most `height` lines, each at most `width` characters. The footer (keys and
/// the sort order) is the last line; workers are cut before the longest-running requests.
pub fn render(view: &View, width: usize, height: usize) -> Vec<String> {
    let mut top = header(view);
    let footer = (!view.once).then(|| footer(view));
    let room = height.saturating_sub(top.len() + usize::from(footer.is_some()));
    let body = if view.help { help() } else { body(view, room) };
    let shown = body.len().min(room);
    top.extend(body.into_iter().take(room));
    if footer.is_some() {
        // The footer sits on the bottom row.
        top.extend(std::iter::repeat_n(String::new(), room - shown));
    }
    top.extend(footer);
    top.truncate(height);
    top.iter().map(|l| fit(&clean(l), width)).collect()
}

fn header(v: &View) -> Vec<String> {
    let c = &v.cluster;
    let master = if v.stale {
        format!("master {} NOT RUNNING (stale scoreboard)", v.master_pid)
    } else {
        format!("master {}", v.master_pid)
    };
    let paused = if v.paused { "  PAUSED" } else { "" };
    let queue = c
        .queue
        .map_or_else(|| "-".into(), |(len, limit)| format!("{len}/{limit}"));
    vec![
        format!(
            "flora-cluster top  instance {}  {master}  generation {}  workers {}/{} ready  every {:.1}s{paused}",
            v.instance, v.generation, c.ready, c.target, v.interval_secs
        ),
        format!(
            "req/s {}  in flight {}  p50 {}  p99 {}  5xx/s {} ({} total)  queue {queue}",
            rate(c.requests_per_second),
            c.in_flight,
            millis(c.p50_seconds),
            millis(c.p99_seconds),
            rate(c.errors_per_second),
            c.errors_total,
        ),
    ]
}

fn footer(v: &View) -> String {
    let paused = if v.paused { "  [paused]" } else { "" };
    format!("{KEYS}  (sorted by {}){paused}", v.sort.label())
}

fn help() -> Vec<String> {
    [
        "",
        "keys",
        "  q, Ctrl-C  quit (the terminal is restored)",
        "  p          pause / resume sampling",
        "  s          sort workers by slot",
        "  r          sort workers by requests per second",
        "  c          sort workers by CPU",
        "  m          sort workers by resident memory",
        "  h          this help (again: back)",
        "",
        "rates and p50/p99 cover the last interval; CPU % is of one core",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The worker table and the requests, fitted into `room` lines.
fn body(v: &View, room: usize) -> Vec<String> {
    let requests = requests(&v.requests);
    // Blank line + table heading before the workers; what is left after the requests'
    // minimum goes to the workers.
    let keep = requests.len().min(MIN_REQUEST_ROWS + 2);
    let worker_room = room.saturating_sub(2 + keep);
    let mut out = vec![String::new(), worker_heading()];
    if v.workers.len() <= worker_room {
        out.extend(v.workers.iter().map(worker));
    } else if worker_room > 0 {
        out.extend(v.workers.iter().take(worker_room - 1).map(worker));
        out.push(format!(
            "  … {} more workers",
            v.workers.len() - (worker_room - 1)
        ));
    }
    out.extend(requests);
    out
}

fn worker_heading() -> String {
    format!(
        "{:>4} {:>8} {:>4} {:<9} {:>8} {:>5} {:>10} {:>6} {:>10} {:>4}",
        "SLOT", "PID", "GEN", "STATE", "REQ/S", "INFL", "P99", "CPU%", "RSS", "RST"
    )
}

fn worker(w: &WorkerRow) -> String {
    format!(
        "{:>4} {:>8} {:>4} {:<9} {:>8} {:>5} {:>10} {:>6} {:>10} {:>4}",
        w.slot,
        if w.pid == 0 {
            "-".into()
        } else {
            w.pid.to_string()
        },
        w.generation,
        w.state.as_str(),
        rate(w.requests_per_second),
        w.in_flight,
        millis(w.p99_seconds),
        w.cpu_percent
            .map_or_else(|| "-".into(), |c| format!("{c:.1}")),
        w.rss_bytes.map_or_else(|| "-".into(), human_bytes),
        w.restarts
    )
}

/// A blank line, the heading, one line per request in flight (longest-running first).
fn requests(rows: &[RequestRow]) -> Vec<String> {
    let mut out = vec![String::new()];
    if rows.is_empty() {
        out.push("no request in flight".into());
        return out;
    }
    out.push(format!(
        "{:>4} {:>8} {:>9}  LONGEST-RUNNING REQUESTS ({})",
        "SLOT",
        "PID",
        "AGE",
        rows.len()
    ));
    for r in rows {
        let route = match r.route.as_str() {
            "" => String::new(),
            t => format!(" [{t}]"),
        };
        let infos: Vec<String> = r.infos.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let infos = if infos.is_empty() {
            String::new()
        } else {
            format!("  {}", infos.join(" "))
        };
        let age = if r.age_seconds < 60.0 {
            format!("{:.1}s", r.age_seconds)
        } else {
            human_duration(r.age_seconds)
        };
        out.push(format!(
            "{:>4} {:>8} {:>9}  {} {}{route}  from {}{infos}",
            r.slot, r.pid, age, r.method, r.path, r.client
        ));
    }
    out
}
