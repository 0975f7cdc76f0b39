//! A worker killed with SIGKILL is respawned into the same slot, and the slot's counters go on.

mod support;

use std::time::Duration;

use flora_cluster::scoreboard::SlotState;
use support::{wait_for, wait_until, TestDir};

/// Requests sent before the kill, so the victim's counters are not zero.
const WARMUP_REQUESTS: u64 = 40;
/// Longest wait for the respawned worker to be ready (the first respawn is immediate).
const RESPAWN_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait for answered requests to show in the counters.
const COUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the new worker to answer a request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn killed_worker_is_respawned_in_its_slot_with_counters_kept() {
    let dir = TestDir::new("respawn");
    let cluster = dir.start(support::free_port(), 2, &[]);
    let pids = cluster.wait_ready(2);

    for _ in 0..WARMUP_REQUESTS {
        let r = support::get(cluster.port, "/").expect("GET /");
        assert_eq!(r.status, 200);
    }
    wait_until(COUNT_TIMEOUT, "warm-up requests counted", || {
        cluster.snapshot().totals.counters.requests_total == WARMUP_REQUESTS
    });
    // The victim is the busier slot, so "the counter did not go down" is not about a zero.
    let before = cluster.snapshot();
    let victim = before.slots[..2]
        .iter()
        .max_by_key(|s| s.counters.requests_total)
        .expect("two slots")
        .clone();
    let other = 1 - victim.index;
    assert!(victim.counters.requests_total > 0);
    assert_eq!(victim.pid, pids[victim.index]);

    support::kill9(victim.pid);

    let new = wait_for(
        RESPAWN_TIMEOUT,
        "a new ready worker in the victim's slot",
        || {
            let s = cluster.snapshot().slots[victim.index].clone();
            (s.pid != 0
                && s.pid != victim.pid
                && s.state == SlotState::Ready
                && support::pid_alive(s.pid))
            .then_some(s)
        },
    );
    // The master reaped the old worker (no zombie left behind).
    wait_until(
        Duration::from_secs(5),
        "the killed worker to be reaped",
        || support::proc_state(victim.pid).is_none(),
    );
    assert_eq!(
        new.restarts,
        victim.restarts + 1,
        "restarts of the victim's slot"
    );
    assert!(
        new.counters.requests_total >= victim.counters.requests_total,
        "slot counters went down across the respawn: {} -> {}",
        victim.counters.requests_total,
        new.counters.requests_total
    );
    assert!(
        new.counters.conns_total >= victim.counters.conns_total,
        "conns_total went down"
    );
    let after = cluster.snapshot();
    assert_eq!(
        after.slots[other].pid, pids[other],
        "the other worker was touched"
    );
    assert_eq!(after.slots[other].restarts, 0);
    assert!(
        after.totals.counters.requests_total >= WARMUP_REQUESTS,
        "the total went down"
    );

    // The new worker serves.
    support::wait_pids_answer(cluster.port, &[new.pid], ANSWER_TIMEOUT);
    // A request is counted when it finishes, which may be after its response was read.
    wait_until(
        COUNT_TIMEOUT,
        "the new worker's requests to be counted",
        || {
            cluster.snapshot().slots[victim.index]
                .counters
                .requests_total
                > victim.counters.requests_total
        },
    );
    let served = cluster.snapshot().slots[victim.index].clone();
    assert_eq!(served.pid, new.pid);
    assert_eq!(
        served.restarts,
        victim.restarts + 1,
        "a second respawn happened"
    );
}
