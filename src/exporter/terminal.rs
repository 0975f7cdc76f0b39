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
        "workers ready {} starting {} draining {} of {}  reloads ok {} rolled back {}",
        t.workers_ready,
        t.workers_starting,
        t.workers_draining,
        doc.target_workers,
        doc.reloads.success,
        doc.reloads.rollback
    );
    upgrades(&mut out, doc);
    listeners(&mut out, doc);
    guards(&mut out, doc);
    let _ = writeln!(
        out,
        "{:>4} {:>8} {:>4} {:<9} {:>8} {:>4} {:>6} {:>6} {:>10} {:>8} {:>10} {:>9} {:<24}  CURRENT / LAST REQUEST",
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
        "RSS",
        "LAG",
        "LAST GUARD"
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
            "{:>4} {:>8} {:>4} {:<9} {:>8} {:>4} {:>6} {:>6} {:>10} {:>8} {:>10} {:>9} {:<24}  {}",
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
            sl.event_loop_lag_seconds.map_or_else(|| "-".into(), ms),
            last_guard(sl.last_guard_event.as_ref(), doc.now_unix_ms),
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

/// The master that answers and its upgrades: `master 4188 version 0.9.1  upgrades ok 1 rolled
/// back 0  last upgrade success: master 4121 (0.9.0) -> 4188 (0.9.1) in 640 ms, 5s ago`.
/// Nothing when the master's records are unknown and there was no upgrade.
fn upgrades(out: &mut String, doc: &StatusDoc) {
    let master = doc.master.as_ref().map(|m| {
        let u = m.upgrades;
        format!(
            "master {} version {}  upgrades ok {} rolled back {}",
            m.pid,
            sanitize(&m.version),
            u.success,
            u.rollback
        )
    });
    let last = doc.last_upgrade.as_ref().map(|u| {
        let took = match u.duration_ms {
            ms @ 0..10_000 => format!("{ms} ms"),
            ms => human_duration(ms as f64 / 1000.0),
        };
        let ago = human_duration(doc.now_unix_ms.saturating_sub(u.finished_unix_ms) as f64 / 1e3);
        let to_pid = u.to_pid.map_or_else(|| "-".into(), |p| p.to_string());
        let why = u
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        format!(
            "last upgrade {}: master {} ({}) -> {to_pid} ({}) in {took}, {ago} ago{why}",
            u.outcome.as_str(),
            u.from_pid,
            u.from_version,
            u.to_version.as_deref().unwrap_or("-"),
        )
    });
    let line: Vec<String> = master.into_iter().chain(last).collect();
    if !line.is_empty() {
        let _ = writeln!(out, "{}", sanitize(&line.join("  ")));
    }
}

/// One line per listener: its accept queue against the limit, the peak, the drops.
fn listeners(out: &mut String, doc: &StatusDoc) {
    for q in &doc.listen_queues {
        let drops = q.drops.map_or_else(|| "-".into(), |d| d.to_string());
        let _ = writeln!(
            out,
            "listen {}  queue {}/{} ({:.0}%)  peak {}  dropped {}",
            sanitize(&q.listener),
            q.length,
            q.limit,
            q.fill_ratio() * 100.0,
            q.peak,
            drops
        );
    }
}

/// Kill records shown (the newest).
const SHOWN_KILLS: usize = 3;

/// The guards' counts and the newest kill records (with their requests).
fn guards(out: &mut String, doc: &StatusDoc) {
    let Some(g) = &doc.guards else {
        let _ = writeln!(out, "guards: unknown (the master did not answer)\n");
        return;
    };
    let line = |pairs: &[(&str, u64)]| -> String {
        let parts: Vec<String> = pairs.iter().map(|(r, n)| format!("{r} {n}")).collect();
        parts.join(" ")
    };
    let _ = writeln!(
        out,
        "recycles {}  kills {} ({})",
        line(&g.recycles.by_reason()),
        g.kills.total(),
        line(&g.kills.by_reason())
    );
    if g.scale_events.total() > 0 {
        let pairs: Vec<String> = g
            .scale_events
            .by_label()
            .iter()
            .map(|(d, r, n)| format!("{d} {r} {n}"))
            .collect();
        let _ = writeln!(out, "scale events {}", pairs.join(" "));
    }
    for r in g.kill_records.iter().rev().take(SHOWN_KILLS) {
        let ago = human_duration(doc.now_unix_ms.saturating_sub(r.unix_ms) as f64 / 1000.0);
        let requests: Vec<String> = r
            .requests
            .iter()
            .map(|k| {
                let q = &k.request;
                let path = with_route(&q.path, &q.route);
                format!("{} {path} ({} so far)", q.method, ms(q.age_seconds))
            })
            .collect();
        let requests = if requests.is_empty() {
            "no request in flight".to_string()
        } else {
            requests.join(", ")
        };
        let _ = writeln!(
            out,
            "  killed {ago} ago: slot {} pid {} {}: {}; {}",
            r.slot,
            r.pid,
            sanitize(&r.reason),
            sanitize(&r.detail),
            sanitize(&requests)
        );
    }
    out.push('\n');
}

/// `kill heartbeat 5m 2s ago`, or `-`.
fn last_guard(event: Option<&crate::scoreboard::GuardEvent>, now_ms: u64) -> String {
    event.map_or_else(
        || "-".into(),
        |e| {
            let ago = human_duration(now_ms.saturating_sub(e.unix_ms) as f64 / 1000.0);
            sanitize(&format!("{} {} {ago} ago", e.kind.as_str(), e.reason))
        },
    )
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
    use crate::scoreboard::{Scoreboard, SlotState};

    #[test]
    fn shows_each_listeners_queue_with_control_bytes_replaced() {
        let sb = Scoreboard::create_sealed("t", 1).expect("create");
        let sample = |length, drops| crate::scoreboard::QueueSample {
            length,
            limit: 16,
            drops,
        };
        sb.record_listen_queues(&[
            ("127.0.0.1:8080".into(), sample(12, Some(3))),
            ("unix:/run/a\x1b[2J.sock".into(), sample(0, None)),
        ]);
        let out = render(&StatusDoc::build_with(sb.snapshot(), |_| None));
        assert!(!out.contains('\x1b'), "{out}");
        assert!(
            out.contains("listen 127.0.0.1:8080  queue 12/16 (75%)  peak 12  dropped 3"),
            "{out}"
        );
        assert!(
            out.contains("listen unix:/run/a?[2J.sock  queue 0/16 (0%)  peak 0  dropped -"),
            "{out}"
        );
    }

    #[test]
    fn shows_guard_counts_kills_and_each_slots_last_event() {
        let sb = Scoreboard::create_sealed("t", 2).expect("create");
        sb.slot_spawned(1, 4101, 3);
        sb.writer(1).expect("writer").set_state(SlotState::Ready);
        let conn = sb
            .writer(1)
            .expect("writer")
            .conn_open(([127, 0, 0, 1], 9).into());
        let req = conn.request_begin("GET", "/stuck\x1b[2J", 11);
        sb.record_recycle(0, "age");
        sb.record_kill(1, 4101, "heartbeat", "no heartbeat for 3.0s\x07");
        drop(req);
        let mut doc = StatusDoc::build_with(sb.snapshot(), |_| None);
        let out = render(&doc);
        assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out}");
        for want in [
            "recycles memory 0 max_requests 0 age 1  kills 1 (heartbeat 1 shutdown_timeout 0)",
            "slot 1 pid 4101 heartbeat: no heartbeat for 3.0s?; GET /stuck?[2J (",
            "LAST GUARD",
            "kill heartbeat 0s ago",
        ] {
            assert!(out.contains(want), "{want}\n{out}");
        }
        doc.guards = None;
        assert!(render(&doc).contains("guards: unknown"));
    }

    #[test]
    fn shows_scale_events_once_there_are_any() {
        let sb = Scoreboard::create_sealed("t", 2).expect("create");
        let doc = StatusDoc::build_with(sb.snapshot(), |_| None);
        assert!(!render(&doc).contains("scale events"));
        sb.record_scale("up", "busy");
        sb.record_scale("down", "idle");
        let doc = StatusDoc::build_with(sb.snapshot(), |_| None);
        let want = "scale events up busy 1 up queue 0 up manual 0 down idle 1 down manual 0";
        assert!(render(&doc).contains(want), "{}", render(&doc));
    }

    #[test]
    fn shows_the_master_and_its_last_upgrade() {
        use crate::scoreboard::{UpgradeOutcomeKind, UpgradeRecord};
        let sb = Scoreboard::create_sealed("t", 1).expect("create");
        let doc = StatusDoc::build_with(sb.snapshot(), |_| None);
        let (pid, version) = (std::process::id(), env!("CARGO_PKG_VERSION"));
        let want = format!("master {pid} version {version}  upgrades ok 0 rolled back 0\n");
        assert!(render(&doc).contains(&want), "{}", render(&doc));
        assert!(!render(&doc).contains("last upgrade"));
        sb.record_upgrade(UpgradeRecord {
            outcome: UpgradeOutcomeKind::Rollback,
            from_pid: 4121,
            to_pid: Some(4188),
            from_version: "0.9.0".into(),
            to_version: None,
            duration_ms: 640,
            reason: Some("exited\x1b[2J (exit code 3)".into()),
            finished_unix_ms: 0,
        });
        let mut doc = StatusDoc::build_with(sb.snapshot(), |_| None);
        doc.now_unix_ms = 5_000;
        let out = render(&doc);
        let want = "upgrades ok 0 rolled back 1  last upgrade rollback: master 4121 (0.9.0) -> \
                    4188 (-) in 640 ms, 5s ago: exited?[2J (exit code 3)";
        assert!(out.contains(want), "{out}");
        // A reader without the master's records still shows the last upgrade it was given.
        doc.master = None;
        assert!(render(&doc).contains("\nlast upgrade rollback: master 4121"));
        doc.last_upgrade = None;
        assert!(!render(&doc).contains("upgrade"));
    }

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
