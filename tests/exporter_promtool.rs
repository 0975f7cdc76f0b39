//! `/metrics` in the Prometheus text format, scraped while two workers serve traffic, passes
//! `promtool check metrics`, has no duplicated series and carries every metric of the contract.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use flora_cluster::scoreboard::SlotState;
use support::status_server::{Scrape, TEXT_CONTENT_TYPE};
use support::tools::{self, Lints};
use support::workers::Traffic;
use support::{exposition, status_server};
use support::{wait_until, TestDir};

/// Scrapes checked while the traffic runs.
const SCRAPES: usize = 6;
/// Requests the traffic must have answered before the first scrape (so histograms have data).
const WARMUP: u64 = 30;
/// Longest wait for the traffic warm-up and for counters to settle after it stops.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Every metric family of the contract with its `# TYPE` in the 0.0.4 text format.
const FAMILIES: &[(&str, &str)] = &[
    ("flora_http_requests_total", "counter"),
    ("flora_http_requests_in_flight", "gauge"),
    ("flora_http_request_duration_seconds", "histogram"),
    ("flora_http_received_bytes_total", "counter"),
    ("flora_http_sent_bytes_total", "counter"),
    ("flora_connections_open", "gauge"),
    ("flora_connections_total", "counter"),
    ("flora_tls_handshake_failures_total", "counter"),
    ("flora_workers", "gauge"),
    ("flora_worker_info", "gauge"),
    ("flora_worker_restarts_total", "counter"),
    ("flora_worker_recycles_total", "counter"),
    ("flora_worker_kills_total", "counter"),
    ("flora_worker_event_loop_lag_seconds", "gauge"),
    ("flora_request_timeouts_total", "counter"),
    ("flora_reloads_total", "counter"),
    ("flora_canary_reloads_total", "counter"),
    ("flora_scale_events_total", "counter"),
    ("flora_master_upgrades_total", "counter"),
    ("flora_master_info", "gauge"),
    ("flora_generation", "gauge"),
    ("flora_start_time_seconds", "gauge"),
    ("process_cpu_seconds_total", "counter"),
    ("process_resident_memory_bytes", "gauge"),
];
/// The guards' families with one series per reason, every reason present from the start.
const REASONS: &[(&str, &[&str])] = &[
    (
        "flora_worker_recycles_total",
        &["memory", "max_requests", "age"],
    ),
    (
        "flora_worker_kills_total",
        &["heartbeat", "shutdown_timeout"],
    ),
];
/// Master upgrades by outcome, both present from the start.
const UPGRADES: &str = "flora_master_upgrades_total";
/// A gauge per ready worker (its readiness counts as its first heartbeat).
const LAG: &str = "flora_worker_event_loop_lag_seconds";
/// Families labelled per process, where the master appears as `worker="master"`.
const PROCESS_FAMILIES: &[&str] = &["process_cpu_seconds_total", "process_resident_memory_bytes"];
/// Whether `code` is a value of the `code` label of `flora_http_requests_total`: an exact
/// code (`404`), the other codes of a class (`4xx`), or `other` (no response).
fn is_code(code: &str) -> bool {
    let exact = code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit());
    let class = matches!(code, "1xx" | "2xx" | "3xx" | "4xx" | "5xx" | "other");
    exact || class
}

/// Content types compared without spaces and case.
fn normalized(ct: &str) -> String {
    ct.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

fn check_promtool(s: &Scrape) {
    tools::assert_promtool(&s.text, Lints::None, "scrape");
}

fn check_structure(s: &Scrape) {
    let ct = s.resp.header("content-type").unwrap_or("<none>");
    assert_eq!(
        normalized(ct),
        normalized(TEXT_CONTENT_TYPE),
        "Content-Type"
    );
    assert!(
        s.text.ends_with('\n'),
        "the scrape does not end with a newline"
    );
    let dups = s.expo.duplicate_series();
    assert!(dups.is_empty(), "duplicated series {dups:?}\n{}", s.text);
    let scattered = s.expo.scattered_families();
    assert!(scattered.is_empty(), "{scattered:?}\n{}", s.text);
    for sample in &s.expo.samples {
        let fam = s.expo.family_of(&sample.name);
        assert!(
            s.expo.type_of(&fam).is_some() && s.expo.helps.contains(&fam),
            "sample {} has no # TYPE and # HELP (family {fam})\n{}",
            sample.series(),
            s.text
        );
    }
}

fn check_families(s: &Scrape) {
    // Per-route families only with --route-metrics (off here).
    for name in [
        "flora_http_route_requests_total",
        "flora_http_route_request_duration_seconds",
        "flora_http_route_overflow_total",
    ] {
        assert_eq!(s.expo.type_of(name), None, "{name} without --route-metrics");
    }
    for (name, typ) in FAMILIES {
        let declared = s.expo.type_of(name);
        let ok =
            declared == Some(typ) || (*name == "flora_worker_info" && declared == Some("untyped"));
        assert!(
            ok,
            "# TYPE {name}: want {typ}, got {declared:?}\n{}",
            s.text
        );
        let sample = if *typ == "histogram" {
            format!("{name}_bucket")
        } else {
            (*name).to_string()
        };
        assert!(
            s.expo.named(&sample).next().is_some(),
            "no sample of {name}\n{}",
            s.text
        );
    }
}

fn check_guards(s: &Scrape) {
    for (name, reasons) in REASONS {
        let got: BTreeSet<&str> = s
            .expo
            .named(name)
            .filter_map(|x| x.labels.get("reason").map(String::as_str))
            .collect();
        assert_eq!(got, reasons.iter().copied().collect(), "{name}\n{}", s.text);
        assert_eq!(
            s.expo.sum(name),
            0.0,
            "nothing recycled or killed\n{}",
            s.text
        );
    }
    let ready = s.expo.value("flora_workers", &[("state", "ready")]);
    let lags = s.expo.named(LAG).count() as f64;
    assert!(
        ready.is_some_and(|r| lags >= r),
        "a lag per ready worker\n{}",
        s.text
    );
    for lag in s.expo.named(LAG) {
        let worker = lag.labels.get("worker").map(|w| w.parse::<usize>());
        assert!(matches!(worker, Some(Ok(_))), "{}", lag.series());
        assert!(
            lag.value.is_finite() && lag.value >= 0.0,
            "{}",
            lag.series()
        );
    }
}

/// Both outcomes at 0, and one `flora_master_info` series: the master's pid, this build.
fn check_master(s: &Scrape, master_pid: u32) {
    for outcome in ["success", "rollback"] {
        let n = s.expo.value(UPGRADES, &[("outcome", outcome)]);
        assert_eq!(
            n,
            Some(0.0),
            "{UPGRADES}{{outcome={outcome:?}}}\n{}",
            s.text
        );
    }
    assert_eq!(s.expo.named(UPGRADES).count(), 2, "{}", s.text);
    let pid = master_pid.to_string();
    let labels = [
        ("version", env!("CARGO_PKG_VERSION")),
        ("pid", pid.as_str()),
    ];
    let info = s.expo.value("flora_master_info", &labels);
    assert_eq!(info, Some(1.0), "flora_master_info{labels:?}\n{}", s.text);
    assert_eq!(s.expo.named("flora_master_info").count(), 1, "{}", s.text);
}

fn check_labels(s: &Scrape) {
    for sample in &s.expo.samples {
        let Some(w) = sample.labels.get("worker") else {
            continue;
        };
        let is_process = PROCESS_FAMILIES.contains(&sample.name.as_str());
        let valid = w.parse::<usize>().is_ok() || (is_process && w == "master");
        assert!(valid, "bad worker label in {}", sample.series());
    }
    for fam in PROCESS_FAMILIES {
        let masters = s
            .expo
            .named(fam)
            .filter(|x| x.has_labels(&[("worker", "master")]));
        assert_eq!(masters.count(), 1, "{fam}{{worker=\"master\"}}\n{}", s.text);
    }
    for sample in s.expo.named("flora_http_requests_total") {
        let code = sample
            .labels
            .get("code")
            .map(String::as_str)
            .unwrap_or("<none>");
        assert!(is_code(code), "code label of {}", sample.series());
        assert!(sample.labels.contains_key("worker"), "{}", sample.series());
    }
}

/// Buckets are cumulative and the `+Inf` bucket equals `_count`, per worker.
fn check_histogram(s: &Scrape) {
    let name = "flora_http_request_duration_seconds";
    let (count_name, bucket_name) = (format!("{name}_count"), format!("{name}_bucket"));
    let workers: BTreeSet<&String> = s
        .expo
        .named(&count_name)
        .filter_map(|x| x.labels.get("worker"))
        .collect();
    assert!(!workers.is_empty(), "no {name}_count\n{}", s.text);
    for w in workers {
        let mut buckets: Vec<(f64, f64)> = s
            .expo
            .named(&bucket_name)
            .filter(|x| x.labels.get("worker") == Some(w))
            .map(|x| {
                (
                    exposition::parse_value(&x.labels["le"]).unwrap_or(f64::NAN),
                    x.value,
                )
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(
            buckets.windows(2).all(|p| p[0].1 <= p[1].1),
            "worker {w}: buckets not cumulative {buckets:?}"
        );
        let inf = buckets.last().filter(|b| b.0 == f64::INFINITY).map(|b| b.1);
        let count = s.expo.value(&format!("{name}_count"), &[("worker", w)]);
        assert_eq!(inf, count, "worker {w}: +Inf bucket vs _count\n{}", s.text);
        assert!(s
            .expo
            .value(&format!("{name}_sum"), &[("worker", w)])
            .is_some());
    }
}

fn check_scrape(s: &Scrape) {
    check_structure(s);
    check_promtool(s);
    check_families(s);
    check_guards(s);
    check_labels(s);
    check_histogram(s);
}

#[test]
fn metrics_under_traffic_pass_promtool_and_carry_the_contract() {
    tools::require_tool("promtool", "prometheus");
    let dir = TestDir::new("exp-promtool");
    let cluster = dir.start(support::free_port(), 2, &[]);
    let pids = cluster.wait_ready(2);
    let status = status_server::status_port(&cluster);

    let traffic = Traffic::start(cluster.port);
    wait_until(SETTLE_TIMEOUT, "traffic warm-up", || {
        traffic.sent() >= WARMUP
    });
    for _ in 0..SCRAPES {
        check_scrape(&status_server::scrape(status, None));
    }
    let errors = traffic.errors();
    let sent = traffic.stop();
    assert!(errors.is_empty(), "the traffic saw errors: {errors:?}");

    // Once idle: every answered request counted once, nothing in flight.
    let what = format!("{sent} requests counted and none in flight");
    let s = support::poll(SETTLE_TIMEOUT, &what, || {
        let s = status_server::scrape(status, None);
        let done = s.expo.sum("flora_http_requests_total") == sent as f64
            && s.expo.sum("flora_http_requests_in_flight") == 0.0;
        done.then_some(s.clone()).ok_or(s.text)
    });
    check_scrape(&s);
    check_master(&s, cluster.snapshot().master_pid);
    let ok = s
        .expo
        .named("flora_http_requests_total")
        .filter(|x| x.has_labels(&[("code", "200")]));
    assert_eq!(
        ok.map(|x| x.value).sum::<f64>(),
        sent as f64,
        "200\n{}",
        s.text
    );
    assert_eq!(
        s.expo.value("flora_generation", &[]),
        Some(1.0),
        "{}",
        s.text
    );
    assert_eq!(
        s.expo.value("flora_workers", &[("state", "ready")]),
        Some(2.0),
        "{}",
        s.text
    );
    for slot in cluster
        .snapshot()
        .slots
        .iter()
        .filter(|x| x.state == SlotState::Ready)
    {
        let (w, pid, g) = (
            slot.index.to_string(),
            slot.pid.to_string(),
            slot.generation.to_string(),
        );
        let labels = [
            ("worker", w.as_str()),
            ("pid", pid.as_str()),
            ("generation", g.as_str()),
        ];
        assert_eq!(
            s.expo.value("flora_worker_info", &labels),
            Some(1.0),
            "flora_worker_info{labels:?} (pids {pids:?})\n{}",
            s.text
        );
    }
}
