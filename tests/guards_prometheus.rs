//! Counters stay exact and monotonic across recycles and kills: a real Prometheus scrapes
//! the master every second while workers are recycled by request count and one blocked
//! worker is killed by the heartbeat guard. Afterwards `resets()` over the whole run is 0 for
//! `flora_http_requests_total`, `flora_worker_recycles_total` and `flora_worker_kills_total`,
//! and Prometheus' last values equal the master's final `/metrics` exactly.
//!
//! The workers are this test binary itself (`support::guards`).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::exposition::Exposition;
use support::guards::client::{fresh_get, RateLoop};
use support::guards::watch::{guard_count, metrics, status_json, wait_ready_anywhere};
use support::guards::{worker_entry as guards_worker, GuardCluster};
use support::status_server::status_port;
use support::tools::PrometheusServer;
use support::{pid_alive, poll, wait_for, wait_until, TestDir};

/// Requests a second (a recycle every couple of seconds with `--max-requests 300`).
const RATE: u32 = 300;
/// Longest the load may run.
const LOAD_MAX_RUN: Duration = Duration::from_secs(60);
/// Longest wait for Prometheus' first scrape (target updates are batched every 5 s).
const SCRAPED_TIMEOUT: Duration = Duration::from_secs(40);
/// Longest wait for each step (recycles, the kill, the respawn).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for Prometheus to have scraped the final values.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(15);
/// The request that blocks a worker.
const BLOCK_PATH: &str = "/block/60000";
/// The families whose every series must only grow.
const COUNTERS: [&str; 3] = [
    "flora_http_requests_total",
    "flora_worker_recycles_total",
    "flora_worker_kills_total",
];
/// Scrape job name.
const JOB: &str = "flora";

/// The worker side: runs only in the re-started test binary.
#[test]
fn worker_entry() {
    guards_worker();
}

/// `sum by (LABEL) (FAMILY)` of a scrape, as Prometheus would answer it.
fn sums_by(expo: &Exposition, family: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in expo.named(family) {
        let key = s.labels.get(label).cloned().unwrap_or_default();
        *out.entry(key).or_default() += s.value;
    }
    out
}

/// `sum by (LABEL) (FAMILY)` from Prometheus.
fn prom_sums_by(prom: &PrometheusServer, family: &str, label: &str) -> BTreeMap<String, f64> {
    prom.query(&format!("sum by ({label}) ({family})"))
        .iter()
        .map(|r| {
            let key = r["metric"][label].as_str().unwrap_or_default().to_string();
            let v = r["value"][1]
                .as_str()
                .and_then(support::exposition::parse_value)
                .unwrap_or(f64::NAN);
            (key, v)
        })
        .collect()
}

fn max_recycles(cluster: &GuardCluster) -> u64 {
    guard_count(&status_json(cluster), "recycles", "max_requests")
}

#[test]
fn counters_stay_exact_and_monotonic_across_recycles_and_a_kill() {
    let dir = TestDir::new("guards-prom");
    let port = support::free_port();
    let cluster = GuardCluster::start(
        &dir,
        port,
        &[
            "--workers",
            "2",
            "--max-requests",
            "300",
            "--max-requests-jitter",
            "100",
            "--heartbeat-timeout",
            "2",
            "--shutdown-timeout",
            "2",
        ],
    );
    cluster.wait_ready(2);
    let prom = PrometheusServer::start(JOB, &format!("127.0.0.1:{}", status_port(&cluster)));
    wait_until(SCRAPED_TIMEOUT, "Prometheus' first scrape", || {
        prom.query_scalar(&format!("up{{job=\"{JOB}\"}}")) == Some(1.0)
    });

    let load = RateLoop::start(port, "/", RATE, LOAD_MAX_RUN);
    wait_until(STEP_TIMEOUT, "two recycles", || max_recycles(&cluster) >= 2);

    // One worker blocks: killed by the heartbeat guard, its slot respawned.
    let blocker = std::thread::spawn(move || fresh_get(port, BLOCK_PATH));
    let blocked = wait_for(STEP_TIMEOUT, "the blocking request in flight", || {
        cluster.snapshot().slots.iter().find_map(|s| {
            let blocking = s
                .connections
                .iter()
                .filter_map(|c| c.request.as_ref())
                .any(|r| r.path == BLOCK_PATH);
            blocking.then_some(s.pid)
        })
    });
    wait_until(STEP_TIMEOUT, "the blocked worker killed", || {
        !pid_alive(blocked)
    });
    wait_ready_anywhere(&cluster, 2, STEP_TIMEOUT);
    let after_kill = max_recycles(&cluster);
    wait_until(STEP_TIMEOUT, "a recycle after the kill", || {
        max_recycles(&cluster) > after_kill
    });
    let seen = load.stop();
    let _ = blocker.join();

    // Final values: once /metrics stops moving, Prometheus must reach exactly them.
    let last = poll(
        CATCH_UP_TIMEOUT,
        "Prometheus to scrape the final values",
        || {
            let expo = metrics(&cluster);
            let mut differ = Vec::new();
            for (family, label) in COUNTERS.iter().zip(["code", "reason", "reason"]) {
                let want = sums_by(&expo, family, label);
                let got = prom_sums_by(&prom, family, label);
                if want != got {
                    differ.push(format!("{family}: /metrics {want:?}, Prometheus {got:?}"));
                }
            }
            if differ.is_empty() {
                Ok(expo)
            } else {
                Err(differ.join("\n"))
            }
        },
    );
    let kills = sums_by(&last, "flora_worker_kills_total", "reason");
    let recycles = sums_by(&last, "flora_worker_recycles_total", "reason");
    eprintln!(
        "load: {} answered, {} failed; kills {kills:?}; recycles {recycles:?}",
        seen.ok,
        seen.failures.len()
    );
    // One kill of the blocked worker: by the heartbeat guard, or — when its last heartbeat
    // had already crossed --max-requests, so it was being recycled (draining) when it
    // blocked — by the shutdown timeout of that drain.
    let one_kill = kills.values().sum::<f64>() == 1.0
        && (kills.get("heartbeat") == Some(&1.0) || kills.get("shutdown_timeout") == Some(&1.0));
    assert!(one_kill, "{kills:?}");
    assert!(
        recycles.get("max_requests").is_some_and(|n| *n >= 3.0),
        "{recycles:?}"
    );
    let total = sums_by(&last, "flora_http_requests_total", "code")
        .values()
        .sum::<f64>();
    assert!(
        total >= seen.ok as f64,
        "{total} counted < {} answered",
        seen.ok
    );

    for family in COUNTERS {
        let expr = format!("sum(resets({family}[5m]))");
        assert_eq!(
            prom.query_scalar(&expr),
            Some(0.0),
            "{expr}: Prometheus saw a counter go down; targets {}",
            prom.targets()
        );
    }
    // Prometheus kept the whole run: it saw the counters before the guards acted.
    let first_requests = prom.query_scalar("min_over_time(sum(flora_http_requests_total)[5m:1s])");
    assert!(
        first_requests.is_some_and(|v| v < total),
        "Prometheus' earliest request total {first_requests:?}, final {total}"
    );
}
