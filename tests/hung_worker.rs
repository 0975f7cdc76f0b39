//! A worker that hangs on shutdown (ignores the drain request and SIGTERM) is SIGKILLed after the
//! shutdown timeout, on stop and on reload; the master still exits cleanly.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use support::{wait_for, Cluster, TestDir, START_TIMEOUT};

#[test]
fn hung_workers_are_killed_after_the_shutdown_timeout() {
    let dir = TestDir::new("hung");
    let mut cluster = dir.start_with(
        support::free_port(),
        &["--workers", "2", "--shutdown-timeout", "1"],
        &["--hang-on-shutdown"],
    );
    let old = cluster.wait_ready(2);
    // Reload: the old generation hangs while draining and is killed after 1 s.
    dir.reload_ok();
    Cluster::wait_pids_gone(&old, Duration::from_secs(10));
    assert!(
        cluster.stderr().contains("still draining after"),
        "{}",
        cluster.stderr()
    );
    let new: Vec<u32> = wait_for(START_TIMEOUT, "generation 2 ready", || {
        let pids: Vec<u32> = cluster
            .snapshot()
            .slots
            .iter()
            .filter(|s| s.generation == 2 && s.pid != 0)
            .map(|s| s.pid)
            .collect();
        (pids.len() == 2).then_some(pids)
    });
    // Stop: the same, then the master exits 0.
    cluster.signal(Signal::SIGTERM);
    let status = cluster.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}\n{}", cluster.stderr());
    Cluster::wait_pids_gone(&new, Duration::from_secs(5));
}
