//! The terminal view of `flora-cluster status`: totals, then one row per worker.

use std::fmt::Write;

use super::model::StatusDoc;

/// `1.5 KiB`, `12.0 MiB`, …
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `3d 4h`, `5m 6s`, `7s`.
pub fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn ms(secs: f64) -> String {
    format!("{:.1} ms", secs * 1000.0)
}

/// Replaces control characters so a hostile path cannot drive the terminal.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Renders the view.
pub fn render(doc: &StatusDoc) -> String {
    let mut out = String::new();
    let t = &doc.totals;
    let reload = doc.reloads.last.as_ref().map_or_else(
        || "none".to_string(),
        |r| {
            let why = if r.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", r.reason)
            };
            format!("{} (generation {}){}", r.outcome, r.generation, why)
        },
    );
    let _ = writeln!(
        out,
        "{}  instance {}  master {}  up {}  generation {}  last reload {}",
        doc.server_version,
        sanitize(&doc.instance),
        doc.master_pid,
        human_duration(doc.uptime_seconds),
        doc.generation,
        sanitize(&reload)
    );
    let _ = writeln!(
        out,
        "requests {} ({:.1}/s)  in flight {}  connections {}  received {}  sent {}",
        t.counters.requests_total,
        doc.rates.requests_per_second,
        t.counters.requests_active,
        t.counters.conns_open,
        human_bytes(t.counters.bytes_in),
        human_bytes(t.counters.bytes_out)
    );
    let latency = doc.latency.map_or_else(
        || "latency -".to_string(),
        |l| {
            format!(
                "latency mean {} p50 {} p99 {}",
                ms(l.mean_seconds),
                ms(l.p50_seconds),
                ms(l.p99_seconds)
            )
        },
    );
    let s = t.counters.status;
    let _ = writeln!(
        out,
        "{latency}  1xx {} 2xx {} 3xx {} 4xx {} 5xx {} other {}",
        s[0], s[1], s[2], s[3], s[4], s[5]
    );
    let codes: Vec<String> = t
        .counters
        .codes
        .seen()
        .map(|(code, n)| format!("{code} {n}"))
        .collect();
    if !codes.is_empty() {
        let _ = writeln!(out, "codes {}", codes.join("  "));
    }
    let _ = writeln!(
        out,
        "workers ready {} starting {} draining {} of {}  reloads ok {} rolled back {}\n",
        t.workers_ready,
        t.workers_starting,
        t.workers_draining,
        doc.target_workers,
        doc.reloads.success,
        doc.reloads.rollback
    );
    let _ = writeln!(
        out,
        "{:>4} {:>8} {:>4} {:<9} {:>8} {:>4} {:>6} {:>6} {:>10} {:>8} {:>10}  CURRENT / LAST REQUEST",
        "SLOT",
        "PID",
        "GEN",
        "STATE",
        "UPTIME",
        "RST",
        "CONNS",
        "ACTIVE",
        "REQUESTS",
        "CPU s",
        "RSS"
    );
    for w in &doc.workers {
        let sl = &w.slot;
        let current = sl
            .connections
            .iter()
            .find_map(|c| c.request.as_ref())
            .map(|r| {
                let path = with_route(&r.path, &r.route);
                format!("{} {path} ({} so far)", r.method, ms(r.age_seconds))
            })
            .or_else(|| {
                sl.last_request.as_ref().map(|l| {
                    let path = with_route(&l.path, &l.route);
                    format!(
                        "{} {path} {} {}",
                        l.method,
                        l.status,
                        ms(l.duration_seconds)
                    )
                })
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:>4} {:>8} {:>4} {:<9} {:>8} {:>4} {:>6} {:>6} {:>10} {:>8} {:>10}  {}",
            sl.index,
            if sl.pid == 0 {
                "-".into()
            } else {
                sl.pid.to_string()
            },
            sl.generation,
            sl.state.as_str(),
            w.uptime_seconds.map_or_else(|| "-".into(), human_duration),
            sl.restarts,
            sl.counters.conns_open,
            sl.counters.requests_active,
            sl.counters.requests_total,
            w.process
                .map_or_else(|| "-".into(), |p| format!("{:.2}", p.cpu_seconds)),
            w.process
                .map_or_else(|| "-".into(), |p| human_bytes(p.rss_bytes)),
            sanitize(&current)
        );
    }
    if !doc.custom.is_empty() {
        let _ = writeln!(out, "\ncustom metrics");
    }
    for m in &doc.custom {
        let labels: Vec<String> = m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let value = m.value.map_or_else(|| "-".to_string(), |v| format!("{v}"));
        let agg = m.aggregation.map(|a| format!(" ({a})")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} {{{}}} {}{} = {}",
            sanitize(&m.name),
            sanitize(&labels.join(", ")),
            m.kind,
            agg,
            value
        );
    }
    out
}

/// A path followed by its route template in brackets, when the app set one.
fn with_route(path: &str, route: &str) -> String {
    match route {
        "" => path.to_string(),
        r => format!("{path} [{r}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humans() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(human_duration(7.9), "7s");
        assert_eq!(human_duration(65.0), "1m 5s");
        assert_eq!(human_duration(7300.0), "2h 1m");
        assert_eq!(human_duration(90_000.0), "1d 1h");
        assert_eq!(sanitize("a\x1b[2Jb\n"), "a?[2Jb?");
        assert_eq!(with_route("/u/7", "/u/{id}"), "/u/7 [/u/{id}]");
        assert_eq!(with_route("/", ""), "/");
    }
}
