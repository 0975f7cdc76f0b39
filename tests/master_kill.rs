//! When the master is killed with SIGKILL its workers exit on their own, and a new master
//! with the same name and runtime dir starts over the stale segment and lock.

mod support;

use std::time::Duration;

use support::{Cluster, TestDir};

/// Workers notice a dead master (EOF on the control socket, parent-death signal) within this.
const ORPHANS_GONE_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn workers_exit_after_master_sigkill_and_a_new_master_starts() {
    let dir = TestDir::new("masterkill");
    let mut first = dir.start(support::free_port(), 2, &[]);
    let old_pids = first.wait_ready(2);
    assert_eq!(support::get(first.port, "/").expect("GET /").status, 200);

    first.kill9_and_reap();
    Cluster::wait_pids_gone(&old_pids, ORPHANS_GONE_TIMEOUT);
    // The files of the dead master are still there: the next master must cope with them
    // (the segment's name is a link to the dead master's memfd, dangling now).
    assert!(
        std::fs::symlink_metadata(dir.segment_path()).is_ok(),
        "stale segment vanished: nothing to replace"
    );

    // A fresh port: the old one may linger in TIME_WAIT, which is not what is tested here.
    let second = dir.start(support::free_port(), 2, &[]);
    let new_pids = second.wait_ready(2);
    assert!(
        new_pids.iter().all(|p| !old_pids.contains(p)),
        "the new segment shows old workers: {new_pids:?} vs {old_pids:?}"
    );
    let snap = second.snapshot();
    assert_eq!(
        snap.totals.counters.requests_total, 0,
        "the new segment kept the stale counters"
    );
    assert!(
        snap.slots.iter().all(|s| s.restarts == 0),
        "stale restarts carried over"
    );
    let r = support::get(second.port, "/").expect("GET / from the new master");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Hello World\n");
    let pid = support::get(second.port, "/pid").expect("GET /pid").pid();
    assert!(
        new_pids.contains(&pid),
        "/pid {pid} is not a worker of the new master"
    );
    drop(first);
}
