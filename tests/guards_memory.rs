//! `--max-memory`: a worker whose RSS stays over the limit is recycled gracefully, with
//! **0 failed requests**. `/leak/2` (2 MiB kept per request, every page written) is called
//! at a bounded rate on fresh connections while `wrk` keeps `/` busy over keep-alive
//! connections. The recycle starts the replacement in a spare slot and lets it become ready
//! before the leaking worker drains (never fewer than 2 ready workers, one recycle at a
//! time); the leaking worker drains and exits by itself; the replacement's RSS is far below
//! the limit; `flora_worker_recycles_total{reason="memory"}` and the JSON count it.
//!
//! The workers are this test binary itself (`support::guards`).

mod support;

use std::time::Duration;

use flora_cluster::scoreboard::SlotState;
use support::guards::client::{RateLoop, Wrk};
use support::guards::watch::{
    assert_only_recycles, guard_count, guard_counts, pids_in, rss_bytes, status_json, Watch, MIB,
};
use support::guards::{worker_entry as guards_worker, GuardCluster};
use support::{pid_alive, wait_for, wait_until, TestDir, START_TIMEOUT};

/// `--max-memory`.
const MAX_MEMORY: &str = "100MiB";
/// The same in bytes.
const LIMIT: u64 = 100 * MIB;
/// What leaks (2 MiB per request).
const LEAK_PATH: &str = "/leak/2";
/// Leak requests a second (40 MiB/s over the cluster: the limit is crossed in seconds).
const LEAK_PER_SEC: u32 = 20;
/// Longest wait from the first leak to a recorded memory recycle: ~5 s to cross the limit,
/// 3 samples a second apart, on a busy 2-core machine.
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(40);
/// Longest wait for a recycle to complete (replacement ready, old worker gone).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// wrk's longest run (it is stopped once the recycle completed).
const WRK_MAX_SECS: u64 = 90;
/// Requests wrk gets answered before the leaks start.
const WARM_REQUESTS: u64 = 1000;

/// The worker side: runs only in the re-started test binary.
#[test]
fn worker_entry() {
    guards_worker();
}

#[test]
fn a_leaking_worker_is_recycled_without_a_failed_request() {
    let dir = TestDir::new("guards-mem");
    let port = support::free_port();
    let cluster = GuardCluster::start(&dir, port, &["--workers", "2", "--max-memory", MAX_MEMORY]);
    let first = cluster.wait_ready(2);
    let watch = Watch::start(&cluster, true);
    let mut wrk = Wrk::start(port, "/", 2, 8, WRK_MAX_SECS);
    wait_until(START_TIMEOUT, "wrk's load flowing", || {
        cluster.snapshot().totals.counters.requests_total > WARM_REQUESTS
    });

    let leaks = RateLoop::start(port, LEAK_PATH, LEAK_PER_SEC, RECYCLE_TIMEOUT);
    wait_until(RECYCLE_TIMEOUT, "a memory recycle", || {
        guard_count(&status_json(&cluster), "recycles", "memory") >= 1
    });
    // No more leaks: the replacement starts clean.
    let leaked = leaks.stop();

    let (gone, ready) = wait_for(SETTLE_TIMEOUT, "the recycle to complete", || {
        let snap = cluster.snapshot();
        let ready = pids_in(&snap, SlotState::Ready);
        let busy = !pids_in(&snap, SlotState::Starting).is_empty()
            || !pids_in(&snap, SlotState::Draining).is_empty();
        let gone: Vec<u32> = first.iter().copied().filter(|p| !pid_alive(*p)).collect();
        (!gone.is_empty() && ready.len() == 2 && !busy).then_some((gone, ready))
    });
    assert!(
        wrk.running(),
        "wrk's run ended before the recycle completed"
    );
    let report = wrk.stop();
    let watched = watch.stop();
    let counts = guard_counts(&cluster);
    let replacements: Vec<u32> = ready
        .iter()
        .copied()
        .filter(|p| !first.contains(p))
        .collect();
    let rss: Vec<(u32, Option<u64>)> = replacements.iter().map(|p| (*p, rss_bytes(*p))).collect();
    eprintln!(
        "recycled {gone:?} (peak RSS MiB {:?}), replacements {rss:?}; leaks: {} answered, \
         {} connections closed unsent; wrk: {} requests; guards {counts:?}\n{}",
        gone.iter()
            .map(|p| watched.peak_rss.get(p).map(|b| b / MIB))
            .collect::<Vec<_>>(),
        leaked.ok,
        leaked.unsent,
        report.requests,
        watched.timeline()
    );

    assert!(
        leaked.failures.is_empty(),
        "leak requests failed: {:?}",
        leaked.failures
    );
    report.assert_clean();
    assert!(
        watched.min_ready >= 2,
        "fewer than 2 ready workers during the recycle:\n{}",
        watched.timeline()
    );
    assert!(
        watched.max_starting <= 1,
        "more than one replacement starting at once:\n{}",
        watched.timeline()
    );
    assert_only_recycles(&counts, "memory", 1);
    let reports = cluster.reports();
    for pid in &gone {
        let peak = watched.peak_rss.get(pid).copied().unwrap_or(0);
        assert!(
            peak > LIMIT,
            "recycled worker {pid} peaked at {} MiB, not over the limit",
            peak / MIB
        );
        assert!(
            reports.contains_key(pid),
            "recycled worker {pid} did not drain and exit by itself (no report): {reports:?}"
        );
    }
    assert!(!replacements.is_empty(), "no replacement among {ready:?}");
    for (pid, bytes) in rss {
        let bytes = bytes.unwrap_or_else(|| panic!("no RSS for the replacement {pid}"));
        assert!(
            bytes < LIMIT / 2,
            "the replacement {pid} uses {} MiB",
            bytes / MIB
        );
    }
}
