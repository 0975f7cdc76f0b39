//! `--max-worker-age SECS --max-worker-age-jitter SECS`: a worker that lived its age (plus
//! its own draw of the jitter) is recycled gracefully. Under `wrk` (keep-alive, as fast as
//! it goes) both first workers reach their age within a second of each other: they are
//! recycled one at a time, never fewer than 2 ready workers, with 0 failed requests, and
//! each recycled worker lived at least the age.
//!
//! The workers are this test binary itself (`support::guards`); each writes how long it
//! lived when its drain ends.

mod support;

use std::time::Duration;

use support::guards::client::Wrk;
use support::guards::watch::{assert_only_recycles, guard_count, guard_counts, status_json, Watch};
use support::guards::{worker_entry as guards_worker, GuardCluster};
use support::{pid_alive, wait_for, wait_until, TestDir, START_TIMEOUT};

/// `--max-worker-age`, seconds.
const MAX_AGE_SECS: u64 = 3;
/// `--max-worker-age-jitter`, seconds.
const AGE_JITTER_SECS: u64 = 1;
/// Recycles to wait for: both first workers and one replacement.
const RECYCLES: u64 = 3;
/// Longest wait for them (a recycle every ~2 s, one at a time, on a busy machine).
const RECYCLES_TIMEOUT: Duration = Duration::from_secs(40);
/// wrk's longest run (stopped once the recycles happened).
const WRK_MAX_SECS: u64 = 90;
/// A worker measures its life from its own start, a little after the master spawned it.
const SPAWN_SLACK_MS: u64 = 100;

/// The worker side: runs only in the re-started test binary.
#[test]
fn worker_entry() {
    guards_worker();
}

#[test]
fn workers_past_their_age_are_recycled_one_at_a_time_under_wrk() {
    let dir = TestDir::new("guards-age");
    let port = support::free_port();
    let cluster = GuardCluster::start(
        &dir,
        port,
        &[
            "--workers",
            "2",
            "--max-worker-age",
            &MAX_AGE_SECS.to_string(),
            "--max-worker-age-jitter",
            &AGE_JITTER_SECS.to_string(),
        ],
    );
    let first = cluster.wait_ready(2);
    let watch = Watch::start(&cluster, false);
    let mut wrk = Wrk::start(port, "/", 2, 8, WRK_MAX_SECS);
    wait_until(RECYCLES_TIMEOUT, "age recycles under wrk", || {
        guard_count(&status_json(&cluster), "recycles", "age") >= RECYCLES
    });
    assert!(wrk.running(), "wrk's run ended before the recycles");
    let report = wrk.stop();
    let watched = watch.stop();
    let counts = guard_counts(&cluster);
    let reports = wait_for(START_TIMEOUT, "both first workers' reports", || {
        let reports = cluster.reports();
        first
            .iter()
            .all(|p| reports.contains_key(p))
            .then_some(reports)
    });
    eprintln!(
        "wrk: {} requests; guards {counts:?}; recycled workers {:?}\n{}",
        report.requests,
        reports.values().collect::<Vec<_>>(),
        watched.timeline()
    );
    report.assert_clean();
    watched.assert_one_recycle_at_a_time(2);
    assert_only_recycles(&counts, "age", RECYCLES);
    assert!(
        first.iter().all(|p| !pid_alive(*p)),
        "a first worker lives on"
    );
    for r in reports.values() {
        assert!(
            r.lifetime_ms + SPAWN_SLACK_MS >= MAX_AGE_SECS * 1000,
            "worker {} was recycled after {} ms",
            r.pid,
            r.lifetime_ms
        );
    }
}
