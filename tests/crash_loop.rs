//! A worker that crashes right after it becomes ready is respawned with backoff (no fork
//! storm), and the healthy worker next to it is untouched and keeps serving.

mod support;

use std::time::Duration;

use flora_cluster::scoreboard::SlotState;
use support::{wait_until, TestDir};

/// How long the crash loop is watched.
const WINDOW: Duration = Duration::from_secs(4);
/// Most respawns of the crashing slot allowed inside [`WINDOW`].
///
/// The contract: the first respawn is immediate, then the delays double from ~100 ms (100,
/// 200, 400, 800, 1600, 3200 ms, … with jitter) while the worker keeps dying soon after its
/// start. The densest 4 s of that sequence is its very beginning. Even if the jitter halved
/// every delay (50, 100, 200, 400, 800, 1600 ms) the respawns would fall at 0, 50, 150, 350,
/// 750, 1550 and 3150 ms (the next at 6350 ms): 7 in 4 s, fewer still since each worker
/// also needs time to start. 8 leaves one more for scheduling slop. Without backoff a worker
/// that dies at once is respawned every few milliseconds: hundreds in 4 s.
const MAX_RESPAWNS_IN_WINDOW: u64 = 8;
/// Fewest respawns expected by the end of the window: the immediate one, then ~100 ms and
/// ~200 ms later, all well inside 4 s. Fewer means the slot was given up on or stalled.
const MIN_RESPAWNS_BY_END: u64 = 3;
/// A request may hit the crashing worker in the instant between its ready and its exit
/// (it accepted the connection and died with it). That is not the healthy worker failing,
/// so a request is retried on a new connection this many times in all.
const ATTEMPTS_PER_REQUEST: usize = 3;

/// `GET /pid` on a new connection, retried up to [`ATTEMPTS_PER_REQUEST`] times in all; returns
/// the response and the number of failed attempts.
fn get_pid_with_retries(port: u16, served: u64) -> (support::Response, usize) {
    let mut failures = 0;
    for _ in 0..ATTEMPTS_PER_REQUEST {
        match support::get(port, "/pid") {
            Ok(r) => {
                assert_eq!(r.status, 200, "/pid");
                return (r, failures);
            }
            Err(_) => failures += 1,
        }
    }
    panic!("a request failed {ATTEMPTS_PER_REQUEST} times in a row (after {served} served)");
}

#[test]
fn crash_looping_slot_backs_off_and_spares_its_neighbour() {
    let dir = TestDir::new("crashloop");
    let cluster = dir.start(
        support::free_port(),
        2,
        &["--crash-after-ms", "0", "--only-slot", "1"],
    );
    let p0 = cluster.wait_ready(1)[0];
    // The crash loop is under way once slot 1 has been respawned at least once.
    wait_until(Duration::from_secs(15), "slot 1 to be respawned", || {
        cluster.snapshot().slots[1].restarts >= 1
    });
    let start_restarts = cluster.snapshot().slots[1].restarts;

    let s0_requests_before = cluster.snapshot().slots[0].counters.requests_total;
    let (mut served, mut by_p0, mut retried) = (0u64, 0u64, 0usize);
    support::hold_for(WINDOW, || {
        let snap = cluster.snapshot();
        let s0 = &snap.slots[0];
        assert_eq!(
            s0.pid, p0,
            "slot 0 got a new worker during slot 1's crash loop"
        );
        assert_eq!(s0.state, SlotState::Ready, "slot 0 left Ready");
        assert_eq!(s0.restarts, 0, "slot 0 was respawned");
        let so_far = snap.slots[1].restarts - start_restarts;
        assert!(
            so_far <= MAX_RESPAWNS_IN_WINDOW,
            "fork storm: slot 1 respawned {so_far} times in less than {WINDOW:?}"
        );
        let (r, failures) = get_pid_with_retries(cluster.port, served);
        retried += failures;
        served += 1;
        if r.pid() == p0 {
            by_p0 += 1;
        }
    });
    let snap = cluster.snapshot();
    let in_window = snap.slots[1].restarts - start_restarts;
    eprintln!(
        "served {served} requests ({by_p0} by slot 0), {retried} attempts retried; slot 1 restarts {} (+{in_window} in the window)",
        snap.slots[1].restarts
    );
    assert!(
        in_window <= MAX_RESPAWNS_IN_WINDOW,
        "fork storm: {in_window} respawns in {WINDOW:?}"
    );
    assert!(
        snap.slots[1].restarts >= MIN_RESPAWNS_BY_END,
        "slot 1 stopped being respawned: {} restarts",
        snap.slots[1].restarts
    );
    assert_eq!(snap.slots[0].pid, p0);
    assert!(support::pid_alive(p0), "slot 0's worker died");
    assert!(by_p0 > 0, "slot 0 answered none of {served} requests");
    // A request is counted when it finishes, which may be after its response was read.
    wait_until(
        Duration::from_secs(10),
        "slot 0 to count what it answered",
        || cluster.snapshot().slots[0].counters.requests_total - s0_requests_before >= by_p0,
    );
}
