//! `--max-requests N --max-requests-jitter J`: a worker that served N (plus its own draw of
//! up to J) requests is recycled gracefully. Under `wrk` (keep-alive, as fast as it goes)
//! recycles follow each other with 0 failed requests, never fewer than 2 ready workers and
//! one replacement at a time, and every recycled worker had served at least N. At a bounded
//! rate on fresh connections, with heartbeats (which carry the count) every 0.5 s, each
//! recycled worker served between N and N + J plus what it could serve in a heartbeat
//! interval and a replacement's start.
//!
//! The workers are this test binary itself (`support::guards`); each writes how many
//! requests it answered when its drain ends.

mod support;

use std::time::Duration;

use support::guards::client::{RateLoop, Wrk, WrkReport};
use support::guards::watch::{assert_only_recycles, guard_count, guard_counts, status_json, Watch};
use support::guards::{serial, worker_entry as guards_worker, GuardCluster, WorkerReport};
use support::{wait_for, wait_until, TestDir, START_TIMEOUT};

/// `--max-requests`.
const MAX_REQUESTS: u64 = 300;
/// `--max-requests-jitter`.
const JITTER: u64 = 100;
/// Recycles the wrk run waits for.
const WRK_RECYCLES: u64 = 3;
/// wrk's longest run (stopped once the recycles happened).
const WRK_MAX_SECS: u64 = 90;
/// Longest wait for the recycles under load.
const RECYCLES_TIMEOUT: Duration = Duration::from_secs(40);
/// `--heartbeat-timeout` of the bounded-rate run: heartbeats every 0.5 s.
const HEARTBEAT_TIMEOUT_SECS: &str = "2";
/// The heartbeat interval that gives.
const HEARTBEAT_INTERVAL_SECS: f64 = 0.5;
/// Requests a second of the bounded-rate run (all workers together).
const RATE: u32 = 150;
/// Time a recycled worker may go on serving after its count crossed the limit, besides the
/// heartbeat interval: its replacement starts and becomes ready (busy 2-core machine).
const REPLACEMENT_START_SECS: f64 = 1.0;
/// Recycled workers the bounded-rate run waits for.
const RATE_REPORTS: usize = 4;
/// Longest the bounded-rate run may take.
const RATE_MAX_RUN: Duration = Duration::from_secs(50);

/// The worker side: runs only in the re-started test binary.
#[test]
fn worker_entry() {
    guards_worker();
}

fn max_request_args() -> Vec<String> {
    [
        "--workers",
        "2",
        "--max-requests",
        &MAX_REQUESTS.to_string(),
        "--max-requests-jitter",
        &JITTER.to_string(),
    ]
    .map(str::to_string)
    .to_vec()
}

/// Waits for at least `n` workers' reports (recycled workers that drained).
fn wait_reports(cluster: &GuardCluster, n: usize) -> Vec<WorkerReport> {
    wait_for(
        START_TIMEOUT,
        &format!("{n} recycled workers' reports"),
        || {
            let reports = cluster.reports();
            (reports.len() >= n).then(|| reports.into_values().collect())
        },
    )
}

#[test]
fn recycles_by_request_count_under_wrk_lose_no_request() {
    let _serial = serial();
    let dir = TestDir::new("guards-maxreq");
    let port = support::free_port();
    let cluster = GuardCluster::start(&dir, port, &max_request_args());
    cluster.wait_ready(2);
    let watch = Watch::start(&cluster, false);
    let mut wrk = Wrk::start(port, "/", 2, 8, WRK_MAX_SECS);
    wait_until(RECYCLES_TIMEOUT, "recycles under wrk", || {
        guard_count(&status_json(&cluster), "recycles", "max_requests") >= WRK_RECYCLES
    });
    assert!(wrk.running(), "wrk's run ended before the recycles");
    let report = wrk.stop();
    let watched = watch.stop();
    let counts = guard_counts(&cluster);
    let reports = wait_reports(&cluster, 2);
    eprintln!(
        "wrk: {} requests; guards {counts:?}; recycled workers {reports:?}\n{}",
        report.requests,
        watched.timeline()
    );
    report.assert_clean();
    watched.assert_one_recycle_at_a_time(2);
    assert_only_recycles(&counts, "max_requests", WRK_RECYCLES);
    for r in &reports {
        assert!(
            r.requests >= MAX_REQUESTS,
            "worker {} was recycled after {} requests",
            r.pid,
            r.requests
        );
    }
}

#[test]
fn each_recycled_worker_served_its_limit_plus_at_most_its_jitter_and_some_slack() {
    let _serial = serial();
    let dir = TestDir::new("guards-maxreq-rate");
    let port = support::free_port();
    let mut args = max_request_args();
    args.extend(["--heartbeat-timeout".into(), HEARTBEAT_TIMEOUT_SECS.into()]);
    let cluster = GuardCluster::start(&dir, port, &args);
    cluster.wait_ready(2);
    let load = RateLoop::start(port, "/", RATE, RATE_MAX_RUN);
    let reports = wait_for(RATE_MAX_RUN, "recycled workers' reports", || {
        let reports = cluster.reports();
        (reports.len() >= RATE_REPORTS).then(|| reports.into_values().collect::<Vec<_>>())
    });
    let seen = load.stop();
    let counts = guard_counts(&cluster);
    // What a worker may serve after its count crossed the limit, at the whole rate.
    let slack = (f64::from(RATE) * (HEARTBEAT_INTERVAL_SECS + REPLACEMENT_START_SECS)).ceil();
    let most = MAX_REQUESTS + JITTER + slack as u64;
    eprintln!(
        "load: {} answered, {} connections closed unsent; guards {counts:?}; served by the \
         recycled workers {:?} (allowed {MAX_REQUESTS}..={most})",
        seen.ok,
        seen.unsent,
        reports.iter().map(|r| r.requests).collect::<Vec<_>>()
    );
    assert!(seen.failures.is_empty(), "failed: {:?}", seen.failures);
    assert_only_recycles(&counts, "max_requests", RATE_REPORTS as u64);
    for r in &reports {
        assert!(
            (MAX_REQUESTS..=most).contains(&r.requests),
            "worker {} served {} requests, not in {MAX_REQUESTS}..={most}",
            r.pid,
            r.requests
        );
    }
}

#[test]
fn wrk_reports_parse() {
    let clean = "Running 2s test @ http://127.0.0.1:1/\n  2 threads and 8 connections\n  \
                 1234 requests in 2.00s, 100.00KB read\nRequests/sec: 617.00\n";
    let r = WrkReport::parse(clean);
    assert_eq!((r.requests, r.socket_errors, r.non_2xx), (1234, [0; 4], 0));
    let bad = "  99 requests in 1.00s, 1KB read\n  Socket errors: connect 1, read 2, write 3, \
               timeout 4\n  Non-2xx or 3xx responses: 5\n";
    let r = WrkReport::parse(bad);
    assert_eq!(
        (r.requests, r.socket_errors, r.non_2xx),
        (99, [1, 2, 3, 4], 5)
    );
}
