//! Two workers serve one port, and the scoreboard counts every request exactly once.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use flora_cluster::scoreboard::Snapshot;
use support::{wait_pids_answer, wait_until, Cluster, Http, TestDir};

/// Requests sent in total; an odd number so an off-by-one or double count cannot hide.
const K: u64 = 137;
/// Keep-alive connections, each carrying [`PER_KEEPALIVE`] requests.
const KEEPALIVE_CONNS: u64 = 4;
/// Requests on each keep-alive connection.
const PER_KEEPALIVE: u64 = 20;
/// Connections the K requests use: the keep-alive ones plus one per remaining request.
const CONNS: u64 = KEEPALIVE_CONNS + (K - KEEPALIVE_CONNS * PER_KEEPALIVE);
/// How long the total must stay at K once it got there (no late or double counting).
const STABLE_WINDOW: Duration = Duration::from_millis(750);
/// Longest wait for the counters to catch up with the answered requests.
const COUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for both workers to have answered at least one `/pid`.
const BOTH_ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// Sends exactly K requests: first over keep-alive connections open side by side, then one
/// per new connection alternating `/pid` and `/`. Returns the pids that answered `/pid`.
fn send_k_requests(cluster: &Cluster) -> BTreeSet<u32> {
    let mut answered_by = BTreeSet::new();
    let mut sent = 0u64;
    let mut keepalive: Vec<Http> = (0..KEEPALIVE_CONNS)
        .map(|_| Http::connect(cluster.port).expect("connect"))
        .collect();
    for _ in 0..PER_KEEPALIVE {
        for c in &mut keepalive {
            let r = c.get("/pid").expect("GET /pid on a keep-alive connection");
            assert_eq!(r.status, 200);
            answered_by.insert(r.pid());
            sent += 1;
        }
    }
    for c in keepalive {
        c.close();
    }
    while sent < K {
        let path = if sent % 2 == 0 { "/pid" } else { "/" };
        let r = support::get(cluster.port, path).expect("GET on a new connection");
        assert_eq!(r.status, 200, "{path}");
        if path == "/pid" {
            answered_by.insert(r.pid());
        } else {
            assert_eq!(r.text(), "Hello World\n");
        }
        sent += 1;
    }
    answered_by
}

/// Checks the per-slot counters of `snap` against the K requests on [`CONNS`] connections.
fn assert_slot_counters(snap: &Snapshot) {
    let per_slot: u64 = snap.slots.iter().map(|s| s.counters.requests_total).sum();
    assert_eq!(per_slot, K, "slot counters do not add up to K");
    let statuses: Vec<[u64; 6]> = snap.slots.iter().map(|s| s.counters.status).collect();
    let ok: u64 = statuses.iter().map(|s| s[1]).sum();
    assert_eq!(ok, K, "2xx counts: {statuses:?}");
    let all: u64 = statuses.iter().flatten().sum();
    assert_eq!(all, K, "statuses other than 2xx counted: {statuses:?}");
    assert_eq!(
        snap.totals.counters.conns_total, CONNS,
        "connections counted"
    );
    for s in snap.slots.iter().filter(|s| s.counters.requests_total > 0) {
        assert!(
            s.counters.bytes_in > 0,
            "slot {} served but read no bytes",
            s.index
        );
        assert!(
            s.counters.bytes_out > 0,
            "slot {} served but wrote no bytes",
            s.index
        );
    }
}

#[test]
fn two_workers_serve_and_every_request_is_counted_once() {
    let dir = TestDir::new("count");
    let cluster = dir.start(support::free_port(), 2, &[]);
    let pids = cluster.wait_ready(2);
    assert_ne!(pids[0], pids[1], "two slots, one pid: {pids:?}");
    let idle = cluster.snapshot().totals.counters.requests_total;
    assert_eq!(idle, 0, "requests counted before any was sent");

    let answered_by = send_k_requests(&cluster);
    assert!(
        answered_by.iter().all(|p| pids.contains(p)),
        "a pid that is not a worker of the scoreboard answered: {answered_by:?} vs {pids:?}"
    );
    // A request is counted when it finishes, which may be after its response was read.
    wait_until(COUNT_TIMEOUT, "requests_total == K", || {
        cluster.snapshot().totals.counters.requests_total == K
    });
    support::hold_for(STABLE_WINDOW, || {
        let total = cluster.snapshot().totals.counters.requests_total;
        assert_eq!(total, K, "the total moved after reaching K");
    });
    assert_slot_counters(&cluster.snapshot());

    // Both workers answer: if the K requests did not reach both, send bursts of held-open
    // connections (which a load-spreading worker shares) until both have answered.
    if !pids.iter().all(|p| answered_by.contains(p)) {
        wait_pids_answer(cluster.port, &pids, BOTH_ANSWER_TIMEOUT);
    }
    assert_eq!(
        cluster.wait_ready(2),
        pids,
        "a worker changed while serving"
    );
}
