//! `/metrics` counts every request exactly once, and its counters keep their totals across a
//! SIGKILLed worker and a reload; `/server-status.json` agrees.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use flora_cluster::scoreboard::SlotState;
use support::exposition::Exposition;
use support::status_server::Scrape;
use support::{http, status_server, workers};
use support::{wait_for, Cluster, TestDir, START_TIMEOUT};

/// Requests of the first phase (odd, so an off-by-one or a double count cannot hide).
const K1: u64 = 41;
/// Requests after the respawn.
const K2: u64 = 23;
/// Requests after the reload.
const K3: u64 = 17;
/// Longest wait for answered requests to show in the counters.
const COUNT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a reached total must stay put (no late or double counting).
const STABLE_WINDOW: Duration = Duration::from_millis(500);

/// Sums of every counter family, from scrape to scrape; asserts none goes down. Per-process
/// CPU time is left out: it restarts with each new worker process.
#[derive(Default)]
struct Monotonic {
    last: BTreeMap<String, f64>,
}

impl Monotonic {
    fn check(&mut self, s: &Scrape) {
        for (name, sum) in counter_sums(&s.expo) {
            if let Some(prev) = self.last.get(&name) {
                assert!(
                    sum >= *prev,
                    "{name} went down: {prev} -> {sum}\n{}",
                    s.text
                );
            }
            self.last.insert(name, sum);
        }
    }
}

fn counter_sums(e: &Exposition) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for (fam, typ) in &e.types {
        let names = match typ.as_str() {
            "counter" if fam != "process_cpu_seconds_total" => vec![fam.clone()],
            "histogram" => vec![format!("{fam}_count"), format!("{fam}_sum")],
            _ => continue,
        };
        for n in names {
            sums.insert(n.clone(), e.sum(&n));
        }
    }
    sums
}

/// Scrapes until `sum(flora_http_requests_total)` is `want`, checks it stays there and that
/// the JSON status (both spellings) shows the same total. Returns the last scrape.
fn wait_total(status: u16, want: u64, mono: &mut Monotonic) -> Scrape {
    let what = format!("sum(flora_http_requests_total) == {want}");
    let s = support::poll(COUNT_TIMEOUT, &what, || {
        let s = status_server::scrape(status, None);
        mono.check(&s);
        let total = s.expo.sum("flora_http_requests_total");
        assert!(
            total <= want as f64,
            "{total} requests counted, {want} sent\n{}",
            s.text
        );
        if total == want as f64 {
            return Ok(s);
        }
        Err(format!("{total} counted\n{}", s.text))
    });
    support::hold_for(STABLE_WINDOW, || {
        let s = status_server::scrape(status, None);
        mono.check(&s);
        assert_eq!(
            s.expo.sum("flora_http_requests_total"),
            want as f64,
            "{}",
            s.text
        );
    });
    for target in ["/server-status.json", "/server-status?json"] {
        let doc = http::get_json(status, target);
        assert_eq!(doc["schema_version"], 1, "{target}: {doc}");
        assert_eq!(doc["totals"]["requests_total"], want, "{target}: {doc}");
    }
    s
}

/// Kills the worker of slot 0 and waits for its replacement to be ready.
fn kill_and_wait_respawn(cluster: &Cluster) -> u32 {
    let victim = cluster.snapshot().slots[0].clone();
    support::kill9(victim.pid);
    wait_for(START_TIMEOUT, "slot 0 respawned and ready", || {
        let s = cluster.snapshot().slots[0].clone();
        let ok = s.pid != victim.pid && s.state == SlotState::Ready && support::pid_alive(s.pid);
        ok.then_some(s.pid)
    })
}

#[test]
fn metrics_count_each_request_once_across_kill_and_reload() {
    let dir = TestDir::new("exp-counts");
    let cluster = dir.start(support::free_port(), 2, &[]);
    cluster.wait_ready(2);
    let status = status_server::status_port(&cluster);
    let mut mono = Monotonic::default();
    let idle = status_server::scrape(status, None);
    assert_eq!(
        idle.expo.sum("flora_http_requests_total"),
        0.0,
        "{}",
        idle.text
    );
    mono.check(&idle);

    workers::send_requests(cluster.port, K1);
    wait_total(status, K1, &mut mono);

    let new_pid = kill_and_wait_respawn(&cluster);
    let s = status_server::scrape(status, None);
    mono.check(&s);
    let restarts = s
        .expo
        .value("flora_worker_restarts_total", &[("worker", "0")]);
    assert_eq!(restarts, Some(1.0), "restarts of slot 0\n{}", s.text);
    workers::send_requests(cluster.port, K2);
    let s = wait_total(status, K1 + K2, &mut mono);
    let info = s.expo.value(
        "flora_worker_info",
        &[("worker", "0"), ("pid", &new_pid.to_string())],
    );
    assert_eq!(
        info,
        Some(1.0),
        "flora_worker_info of the respawned worker\n{}",
        s.text
    );

    dir.reload_ok();
    workers::send_requests(cluster.port, K3);
    let s = wait_total(status, K1 + K2 + K3, &mut mono);
    let success = s
        .expo
        .value("flora_reloads_total", &[("outcome", "success")]);
    assert_eq!(success, Some(1.0), "reloads, success\n{}", s.text);
    let rollback = s
        .expo
        .value("flora_reloads_total", &[("outcome", "rollback")]);
    assert_eq!(rollback, Some(0.0), "reloads, rollback\n{}", s.text);
    assert_eq!(
        s.expo.value("flora_generation", &[]),
        Some(2.0),
        "{}",
        s.text
    );
    let gen2 = s
        .expo
        .named("flora_worker_info")
        .filter(|x| x.has_labels(&[("generation", "2")]));
    assert!(
        gen2.count() >= 2,
        "no flora_worker_info of generation 2\n{}",
        s.text
    );
}
