//! The view model (rates, quantiles over the interval, CPU, sorting) and the frame (widths,
//! cuts, the height budget, control characters).

use std::collections::BTreeMap;

use super::*;
use crate::exporter::procfs::ProcStats;
use crate::scoreboard::{Scoreboard, SlotState};

/// A sample of `sb` stamped `at_ms`, with these processes.
fn sample_at(sb: &Scoreboard, at_ms: u64, procs: &[(u32, f64, u64)]) -> Sample {
    let mut snap = sb.snapshot();
    snap.taken_unix_ms = at_ms;
    let procs: BTreeMap<u32, ProcStats> = procs
        .iter()
        .map(|&(pid, cpu_seconds, rss_bytes)| {
            (
                pid,
                ProcStats {
                    cpu_seconds,
                    rss_bytes,
                },
            )
        })
        .collect();
    Sample { snap, procs }
}

/// Three ready workers in slots 0..3 (pids 100, 101, 102).
fn cluster() -> Scoreboard {
    let sb = Scoreboard::create_sealed("t", 4).expect("create");
    for i in 0..3 {
        sb.slot_spawned(i, 100 + i as u32, 1);
        sb.writer(i).expect("writer").set_state(SlotState::Ready);
    }
    sb
}

/// `n` requests of `status` on slot `i`.
fn serve(sb: &Scoreboard, i: usize, n: usize, status: u16) {
    let conn = sb
        .writer(i)
        .expect("writer")
        .conn_open(([127, 0, 0, 1], 9).into());
    for _ in 0..n {
        conn.request_begin("GET", "/", 11).finish(status, 1);
    }
}

#[test]
fn rates_are_differences_over_the_interval() {
    let sb = cluster();
    serve(&sb, 0, 50, 200);
    let a = sample_at(&sb, 10_000, &[(100, 1.0, 1 << 20), (101, 2.0, 2 << 20)]);
    serve(&sb, 0, 20, 200);
    serve(&sb, 1, 10, 503);
    let b = sample_at(
        &sb,
        12_000,
        &[(100, 1.5, 1 << 20), (101, 2.1, 3 << 20), (102, 0.0, 5)],
    );
    let v = View::between(&a, &b, SortKey::Slot);
    assert_eq!(v.interval_secs, 2.0);
    assert_eq!(v.cluster.requests_per_second, Some(15.0));
    assert_eq!(v.cluster.errors_per_second, Some(5.0));
    assert_eq!(v.cluster.errors_total, 10);
    assert_eq!((v.cluster.ready, v.cluster.in_flight), (3, 0));
    let w: Vec<_> = v.workers.iter().map(|w| w.slot).collect();
    assert_eq!(w, [0, 1, 2]);
    assert_eq!(v.workers[0].requests_per_second, Some(10.0));
    assert_eq!(v.workers[1].requests_per_second, Some(5.0));
    assert_eq!(v.workers[2].requests_per_second, Some(0.0));
    // CPU: the growth of the process's CPU time over the interval, percent of one core.
    assert!((v.workers[0].cpu_percent.unwrap() - 25.0).abs() < 1e-9);
    assert!((v.workers[1].cpu_percent.unwrap() - 5.0).abs() < 1e-9);
    // A process seen only in the second sample has no CPU figure yet, but its memory.
    assert_eq!(v.workers[2].cpu_percent, None);
    assert_eq!(v.workers[2].rss_bytes, Some(5));
    assert_eq!(v.workers[1].rss_bytes, Some(3 << 20));
}

#[test]
fn a_first_frame_has_no_rates() {
    let sb = cluster();
    serve(&sb, 0, 5, 200);
    let a = sample_at(&sb, 10_000, &[(100, 1.0, 1)]);
    let v = View::between(&a, &a, SortKey::Slot);
    assert_eq!(v.interval_secs, 0.0);
    assert_eq!(v.cluster.requests_per_second, None);
    assert_eq!(v.workers[0].requests_per_second, None);
    assert_eq!(v.workers[0].cpu_percent, None);
    // Nothing finished in the interval: no quantile either.
    assert_eq!(v.cluster.p99_seconds, None);
    let text = render(&v, 120, 40).join("\n");
    assert!(
        text.contains("req/s -  in flight 0  p50 -  p99 -"),
        "{text}"
    );
}

#[test]
fn quantiles_cover_only_the_interval() {
    let sb = cluster();
    // Before: 100 fast requests.
    serve(&sb, 0, 100, 200);
    let a = sample_at(&sb, 0, &[]);
    // In the interval: slow ones only (a request that took at least 50 ms).
    let conn = sb
        .writer(1)
        .expect("writer")
        .conn_open(([127, 0, 0, 1], 9).into());
    for _ in 0..3 {
        let r = conn.request_begin("GET", "/slow", 11);
        std::thread::sleep(std::time::Duration::from_millis(50));
        r.finish(200, 1);
    }
    let b = sample_at(&sb, 1000, &[]);
    let v = View::between(&a, &b, SortKey::Slot);
    let p50 = v.cluster.p50_seconds.expect("p50");
    assert!(p50 >= 0.025, "{p50}");
    assert!(v.workers[1].p99_seconds.expect("p99") >= 0.025);
    // Slot 0 finished nothing in the interval.
    assert_eq!(v.workers[0].p99_seconds, None);
}

#[test]
fn a_slot_reused_by_a_new_worker_never_goes_negative() {
    let sb = cluster();
    serve(&sb, 0, 10, 200);
    let mut a = sample_at(&sb, 0, &[(100, 9.0, 1)]);
    // The earlier sample saw more than now (a reset): rates floor at 0.
    a.snap.slots[0].counters.requests_total = 1000;
    a.snap.totals.counters.requests_total = 1000;
    sb.slot_spawned(0, 200, 2);
    let b = sample_at(&sb, 1000, &[(200, 0.5, 1)]);
    let v = View::between(&a, &b, SortKey::Slot);
    assert_eq!(v.cluster.requests_per_second, Some(0.0));
    assert_eq!(v.workers[0].requests_per_second, Some(0.0));
    // A new pid in the slot: no CPU figure from the old process's time.
    assert_eq!((v.workers[0].pid, v.workers[0].cpu_percent), (200, None));
}

fn row(slot: usize, rps: Option<f64>, cpu: Option<f64>, rss: Option<u64>) -> WorkerRow {
    WorkerRow {
        slot,
        pid: 10 + slot as u32,
        state: SlotState::Ready,
        generation: 1,
        requests_per_second: rps,
        in_flight: 0,
        p99_seconds: None,
        cpu_percent: cpu,
        rss_bytes: rss,
        restarts: 0,
    }
}

#[test]
fn sorting_puts_the_highest_first_and_unknowns_last() {
    let mut rows = vec![
        row(0, Some(1.0), Some(50.0), Some(10)),
        row(1, None, None, None),
        row(2, Some(9.0), Some(5.0), Some(30)),
        row(3, Some(9.0), Some(70.0), Some(20)),
    ];
    let order = |rows: &[WorkerRow]| rows.iter().map(|r| r.slot).collect::<Vec<_>>();
    sort_workers(&mut rows, SortKey::Requests);
    assert_eq!(order(&rows), [2, 3, 0, 1]);
    sort_workers(&mut rows, SortKey::Cpu);
    assert_eq!(order(&rows), [3, 0, 2, 1]);
    sort_workers(&mut rows, SortKey::Memory);
    assert_eq!(order(&rows), [2, 3, 0, 1]);
    sort_workers(&mut rows, SortKey::Slot);
    assert_eq!(order(&rows), [0, 1, 2, 3]);
    assert_eq!(SortKey::from_key('c'), Some(SortKey::Cpu));
    assert_eq!(SortKey::from_key('x'), None);
}

/// A view with `n` workers and the in-flight requests of `sb`.
fn view_with(sb: &Scoreboard) -> View {
    let a = sample_at(sb, 0, &[]);
    let b = sample_at(sb, 1000, &[]);
    View::between(&a, &b, SortKey::Slot)
}

#[test]
fn longest_running_requests_come_first_with_their_infos_and_escaped() {
    let sb = cluster();
    let w = sb.writer(2).expect("writer");
    let c1 = w.conn_open(([127, 0, 0, 1], 7).into());
    let mut old = c1.request_begin("POST", "/upload\x1b[2J", 11);
    old.set_info("user", "bob\x07");
    old.set_route("/upload");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let c2 = sb
        .writer(0)
        .expect("writer")
        .conn_open(([127, 0, 0, 1], 8).into());
    let _new = c2.request_begin("GET", "/new", 11);
    let v = view_with(&sb);
    assert_eq!(v.requests.len(), 2);
    assert_eq!(v.requests[0].path, "/upload\x1b[2J");
    assert!(v.requests[0].age_seconds >= v.requests[1].age_seconds);
    let lines = render(&v, 200, 40);
    let text = lines.join("\n");
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text}");
    let upload = lines
        .iter()
        .position(|l| l.contains("POST /upload?[2J [/upload]"));
    let new = lines.iter().position(|l| l.contains("GET /new"));
    assert!(
        upload.expect("upload row") < new.expect("new row"),
        "{text}"
    );
    assert!(text.contains("user=bob?"), "{text}");
    assert!(text.contains("LONGEST-RUNNING REQUESTS (2)"), "{text}");
    drop(old);
}

#[test]
fn every_line_fits_the_width_and_the_frame_the_height() {
    let sb = cluster();
    let c = sb
        .writer(1)
        .expect("writer")
        .conn_open(([127, 0, 0, 1], 8).into());
    let long = format!("/{}{}", "é".repeat(100), "日".repeat(100));
    let _r = c.request_begin("GET", &long, 11);
    let v = view_with(&sb);
    for (w, h) in [(20, 5), (80, 24), (1, 1), (0, 3), (200, 3)] {
        let lines = render(&v, w, h);
        assert!(lines.len() <= h, "{w}x{h}: {lines:?}");
        assert!(lines.iter().all(|l| text_width(l) <= w), "{lines:?}");
    }
    // The footer is always on the bottom row; the header the first.
    let lines = render(&v, 80, 24);
    assert_eq!(lines.len(), 24, "{lines:?}");
    assert!(
        lines[0].starts_with("flora-cluster top  instance t"),
        "{lines:?}"
    );
    assert!(
        lines.last().expect("footer").starts_with("q quit"),
        "{lines:?}"
    );
    // A cut line ends in an ellipsis.
    let row = lines.iter().find(|l| l.contains("GET /")).expect("row");
    assert!(row.ends_with('…'), "{row}");
    assert_eq!(fit("abcdef", 4), "abc…");
    // Wide characters take two columns, combining marks none.
    assert_eq!(text_width("日本/e\u{301}"), 6);
    assert_eq!(fit("日本語のパス", 6), "日本…");
    assert_eq!(text_width(&fit("日本語のパス", 6)), 5);
    assert_eq!(fit("日本", 4), "日本");
    // Bidi overrides and zero-width marks are shown, not obeyed.
    assert_eq!(clean("/a\u{202E}b\u{200B}c\x1b"), "/a?b?c?");
    assert_eq!(fit("abc", 3), "abc");
    assert_eq!(fit("abc", 0), "");
}

#[test]
fn workers_are_cut_before_the_requests_when_the_screen_is_short() {
    let sb = Scoreboard::create_sealed("t", 30).expect("create");
    for i in 0..30 {
        sb.slot_spawned(i, 1000 + i as u32, 1);
    }
    let c = sb
        .writer(29)
        .expect("writer")
        .conn_open(([127, 0, 0, 1], 8).into());
    let _r = c.request_begin("GET", "/slow", 11);
    let v = view_with(&sb);
    let lines = render(&v, 120, 15);
    let text = lines.join("\n");
    assert_eq!(lines.len(), 15, "{text}");
    assert!(text.contains("GET /slow"), "{text}");
    assert!(text.contains("more workers"), "{text}");
    // Tall enough: every worker, no cut.
    let text = render(&v, 120, 60).join("\n");
    assert!(
        !text.contains("more workers") && text.contains("  1029 "),
        "{text}"
    );
}

#[test]
fn once_has_no_footer_and_pause_and_help_show() {
    let sb = cluster();
    let mut v = view_with(&sb);
    v.once = true;
    let text = render(&v, 120, usize::MAX).join("\n");
    assert!(!text.contains("q quit"), "{text}");
    assert!(text.contains("no request in flight"), "{text}");
    v.once = false;
    v.paused = true;
    v.resort(SortKey::Memory);
    let lines = render(&v, 160, 30);
    assert!(lines[0].ends_with("PAUSED"), "{lines:?}");
    assert!(
        lines
            .last()
            .expect("footer")
            .contains("(sorted by memory)  [paused]"),
        "{lines:?}"
    );
    v.help = true;
    let text = render(&v, 160, 30).join("\n");
    assert!(text.contains("sort workers by resident memory"), "{text}");
    assert!(!text.contains("SLOT"), "{text}");
    v.stale = true;
    assert!(render(&v, 160, 30)[0].contains("NOT RUNNING"));
}

#[test]
fn the_queue_sums_the_listeners() {
    let sb = cluster();
    let q = |length| crate::scoreboard::QueueSample {
        length,
        limit: 128,
        drops: None,
    };
    let v = view_with(&sb);
    assert_eq!(v.cluster.queue, None);
    sb.record_listen_queues(&[("a".into(), q(3)), ("b".into(), q(4))]);
    let v = view_with(&sb);
    assert_eq!(v.cluster.queue, Some((7, 256)));
    assert!(render(&v, 160, 30)[1].ends_with("queue 7/256"));
}
