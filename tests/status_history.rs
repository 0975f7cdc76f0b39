//! The master's history end to end: a real two-worker cluster under about 20 s of varying
//! load (phases of different request rates, some 5xx, slow requests in flight), then the
//! history in `/server-status.json` and in `flora-cluster status --json`, the charts on the
//! status page, and the page rendered by headless Chromium with the charts drawn.
//!
//! The request rates are checked against the counters exactly, not against the load's
//! timing: each sample is the difference of two readings, so the samples' `rate × seconds`
//! add up to the counter's growth from the first reading to the last (the first reading is
//! taken as the master starts, before any worker). The only loss is the rounding of each
//! rate to 0.001/s, so the tolerance is `0.0005 × seconds covered` plus float noise.
//!
//! Chromium is required (scripts/test.sh installs it). The screenshot is kept as
//! `target/test-artifacts/status-history.png`.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::chromium;
use support::http::get_json;
use support::status_server::status_port;
use support::{free_port, get, wait_for, wait_until, Http, TestDir};

/// Longest wait for the sampler to pass a given moment (it samples once a second).
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Samples the JSON must hold at least.
const MIN_SAMPLES: usize = 15;
/// The p50 and in-flight lines are drawn in the page's accent colour (`#2563eb`).
const ACCENT: [u8; 3] = [0x25, 0x63, 0xeb];
/// Accent pixels a drawn chart line gives at least (two lines of a few hundred pixels; the
/// page has no other accent area in view, only a few anti-aliased link letters).
const MIN_ACCENT_PIXELS: usize = 150;

/// One load phase: `rate` requests a second for `secs` seconds on one keep-alive
/// connection, cycling through `paths`.
struct Phase {
    secs: u64,
    rate: u32,
    paths: &'static [&'static str],
}

const PHASES: [Phase; 4] = [
    Phase {
        secs: 4,
        rate: 10,
        paths: &["/"],
    },
    Phase {
        secs: 4,
        rate: 60,
        paths: &["/", "/pid"],
    },
    Phase {
        secs: 4,
        rate: 30,
        paths: &["/", "/code/503", "/", "/code/404"],
    },
    Phase {
        secs: 4,
        rate: 5,
        paths: &["/"],
    },
];

/// What the load sent, by answer.
#[derive(Debug, Default)]
struct Sent {
    total: u64,
    s5xx: u64,
}

fn run_phase(port: u16, p: &Phase, sent: &mut Sent) {
    let mut c = Http::connect(port).expect("connect to the workers");
    let start = Instant::now();
    let step = Duration::from_secs(1) / p.rate;
    let mut i = 0u32;
    while start.elapsed() < Duration::from_secs(p.secs) {
        let path = p.paths[i as usize % p.paths.len()];
        let r = c.get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        sent.total += 1;
        if r.status >= 500 {
            sent.s5xx += 1;
        }
        i += 1;
        // Pacing, not a check: the next request's turn.
        if let Some(wait) = (step * i).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    c.close();
}

/// Three connections with slow requests (300 ms each) until a sample shows requests in
/// flight, up to a deadline.
fn slow_phase(port: u16, status: u16, sent: &mut Sent) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = Http::connect(port).expect("connect to the workers");
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = c.get("/slow?ms=300").expect("slow request");
                    assert_eq!(r.status, 200);
                    n += 1;
                }
                c.close();
                n
            })
        })
        .collect();
    wait_until(SAMPLE_TIMEOUT, "a sample with requests in flight", || {
        let doc = get_json(status, "/server-status.json");
        history_of(&doc)["in_flight"]
            .as_array()
            .is_some_and(|v| v.iter().any(|n| n.as_u64() > Some(0)))
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        sent.total += t.join().expect("slow load thread");
    }
}

fn history_of(doc: &Value) -> &Value {
    let h = &doc["history"];
    assert!(h.is_object(), "no history in {doc}");
    h
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap_or_else(|| panic!("not a number: {x}")))
        .collect()
}

fn unix_ms_now() -> u64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    d.expect("clock after 1970").as_millis() as u64
}

/// The history of the JSON once it has a sample taken after `after_ms` plus a second.
fn history_after(status: u16, after_ms: u64) -> Value {
    wait_for(SAMPLE_TIMEOUT, "a sample after the load", || {
        let doc = get_json(status, "/server-status.json");
        let h = history_of(&doc);
        let last = h["unix_ms"].as_array()?.last()?.as_u64()?;
        (last > after_ms + 1_000).then_some(doc)
    })
}

/// Σ rate × seconds over the samples of `series` (rates per second).
fn added_up(series: &Value, seconds: &[f64]) -> f64 {
    let rates = floats(series);
    assert_eq!(rates.len(), seconds.len(), "one rate per sample");
    rates.iter().zip(seconds).map(|(r, s)| r * s).sum()
}

fn check_json(doc: &Value, sent: &Sent) {
    let h = history_of(doc);
    let times: Vec<u64> = h["unix_ms"]
        .as_array()
        .expect("unix_ms")
        .iter()
        .map(|t| t.as_u64().expect("ms"))
        .collect();
    assert!(times.len() >= MIN_SAMPLES, "{} samples: {h}", times.len());
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "time order: {times:?}"
    );
    let seconds = floats(&h["seconds"]);
    let covered: f64 = seconds.iter().sum();
    let tolerance = 0.0005 * covered + 1e-6;
    let totals = &doc["totals"];
    let counted = totals["requests_total"].as_u64().expect("requests_total");
    assert!(
        counted >= sent.total,
        "{counted} counted, {} sent",
        sent.total
    );
    let sum = added_up(&h["requests_per_second"], &seconds);
    eprintln!(
        "{} samples over {covered:.3} s: Σ rate×s = {sum:.3}, counted {counted}, sent {}",
        times.len(),
        sent.total
    );
    assert!(
        (sum - counted as f64).abs() <= tolerance,
        "Σ {sum} vs {counted} (±{tolerance})"
    );
    // By class: the 5xx the load provoked, and every class adds up to the total.
    let by_class = &h["requests_per_second_by_class"];
    let s5xx = added_up(&by_class["5xx"], &seconds);
    let counted_5xx = totals["status"][4].as_u64().expect("5xx count");
    assert!(
        counted_5xx >= sent.s5xx && sent.s5xx > 0,
        "{counted_5xx} 5xx"
    );
    assert!(
        (s5xx - counted_5xx as f64).abs() <= tolerance,
        "5xx Σ {s5xx} vs {counted_5xx}"
    );
    let classes: f64 = ["1xx", "2xx", "3xx", "4xx", "5xx", "errors"]
        .iter()
        .map(|c| added_up(&by_class[*c], &seconds))
        .sum();
    assert!(
        (classes - counted as f64).abs() <= 6.0 * tolerance,
        "classes Σ {classes}"
    );
    // Latency where requests finished, and the workers.
    let p99 = h["p99_seconds"].as_array().expect("p99");
    assert!(p99.iter().any(Value::is_f64), "no p99 in any sample");
    let p50 = h["p50_seconds"].as_array().expect("p50");
    for (a, b) in p50.iter().zip(p99) {
        if let (Some(a), Some(b)) = (a.as_f64(), b.as_f64()) {
            assert!(a <= b + 1e-9 && a >= 0.0, "p50 {a} > p99 {b}");
        }
    }
    let ready = h["workers_ready"].as_array().expect("workers_ready");
    assert_eq!(ready.last().and_then(Value::as_u64), Some(2));
    for key in [
        "in_flight",
        "workers_starting",
        "workers_draining",
        "listen_queue_length",
    ] {
        assert_eq!(h[key].as_array().map(Vec::len), Some(times.len()), "{key}");
    }
}

/// `flora-cluster status --json` (another process, through the control socket) carries
/// the master's history too.
fn check_cli(dir: &TestDir, http_doc: &Value) {
    let out = dir.ctl(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    let h = history_of(&doc);
    let times = h["unix_ms"].as_array().expect("unix_ms");
    assert!(
        times.len() >= MIN_SAMPLES,
        "{} samples over the control socket",
        times.len()
    );
    let http_times = history_of(http_doc)["unix_ms"].as_array().expect("unix_ms");
    assert!(
        http_times.iter().all(|t| times.contains(t)),
        "the same ring, a sample or two later"
    );
}

fn check_page(status: u16) {
    let resp = get(status, "/server-status").expect("GET /server-status");
    assert_eq!(resp.status, 200);
    let body = resp.text();
    assert!(body.contains("<h2 id=\"history\">History</h2>"), "{body}");
    let svgs = body.matches("<svg").count();
    assert!(svgs >= 4, "{svgs} charts");
    assert!(body.contains("<polyline"), "no line drawn");
    assert!(!body.to_ascii_lowercase().contains("<script"));
    for title in ["Requests/s by class", "Latency", "In flight", "Workers"] {
        assert!(body.contains(title), "{title} chart missing");
    }
}

fn near(p: [u8; 3], c: [u8; 3], by: u8) -> bool {
    p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= by)
}

/// The screenshot shows the charts: accent-coloured line pixels, and the rows they span
/// (the chart area) are not blank.
fn check_screenshot(png: &[u8]) {
    let img = support::png::decode(png).expect("decode the screenshot");
    let accent: Vec<(usize, usize)> = (0..img.height)
        .flat_map(|y| (0..img.width).map(move |x| (x, y)))
        .filter(|&(x, y)| near(img.at(x, y), ACCENT, 24))
        .collect();
    let (top, bottom) = accent
        .iter()
        .fold((usize::MAX, 0), |(t, b), &(_, y)| (t.min(y), b.max(y)));
    let area = (top..=bottom.max(top)).flat_map(|y| (0..img.width).map(move |x| (x, y)));
    let (mut all, mut inked) = (0usize, 0usize);
    for (x, y) in area {
        all += 1;
        let p = img.at(x, y);
        // Neither white (cards) nor the page's background (#f5f6f8).
        if !near(p, [255, 255, 255], 6) && !near(p, [0xf5, 0xf6, 0xf8], 6) {
            inked += 1;
        }
    }
    let share = inked as f64 / all.max(1) as f64;
    eprintln!(
        "screenshot {}×{}: {} accent pixels in rows {top}..={bottom}, {:.1} % inked",
        img.width,
        img.height,
        accent.len(),
        share * 100.0
    );
    assert!(
        accent.len() >= MIN_ACCENT_PIXELS,
        "{} accent pixels",
        accent.len()
    );
    assert!(share > 0.01, "the chart area is blank ({share})");
}

#[test]
fn history_is_sampled_charted_and_served() {
    let dir = TestDir::new("history");
    let port = free_port();
    let cluster = dir.start(port, 2, &[]);
    cluster.wait_ready(2);
    let status = status_port(&cluster);
    let mut sent = Sent::default();
    for p in &PHASES {
        run_phase(port, p, &mut sent);
    }
    slow_phase(port, status, &mut sent);
    let end = unix_ms_now();
    let doc = history_after(status, end);
    check_json(&doc, &sent);
    check_cli(&dir, &doc);
    check_page(status);

    let shot = dir.scratch("status-history.png");
    let url = format!("http://127.0.0.1:{status}/server-status");
    let mode = format!("--screenshot={}", shot.display());
    chromium::run(&dir.scratch(""), "history", &mode, &url);
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    std::fs::write(chromium::artifact("status-history.png"), &png).expect("save the screenshot");
    check_screenshot(&png);
}
