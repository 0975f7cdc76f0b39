//! SIGHUP to the master reloads.

mod support;

use flora_cluster::scoreboard::SlotState;
use nix::sys::signal::Signal;
use support::{get, wait_for, Cluster, TestDir, START_TIMEOUT};

#[test]
fn sighup_reloads() {
    let dir = TestDir::new("sighup");
    let port = support::free_port();
    let cluster = dir.start(port, 2, &[]);
    let old = cluster.wait_ready(2);
    cluster.signal(Signal::SIGHUP);
    let new = wait_for(START_TIMEOUT, "generation 2 serving", || {
        let snap = cluster.snapshot();
        let pids: Vec<u32> = snap
            .slots
            .iter()
            .filter(|s| s.generation == 2 && s.state == SlotState::Ready)
            .map(|s| s.pid)
            .collect();
        (snap.generation == 2 && pids.len() == 2).then_some(pids)
    });
    Cluster::wait_pids_gone(&old, START_TIMEOUT);
    assert!(new.contains(&get(port, "/pid").unwrap().pid()));
    assert!(cluster.stderr().contains("reload succeeded"));
}
