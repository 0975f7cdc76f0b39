//! `flora-cluster scale N` adds workers or drains surplus ones at runtime.

mod support;

use flora_cluster::scoreboard::SlotState;
use support::{wait_for, Cluster, TestDir, START_TIMEOUT};

fn live(cluster: &Cluster) -> Vec<u32> {
    cluster
        .snapshot()
        .slots
        .iter()
        .filter(|s| s.state == SlotState::Ready && s.pid != 0)
        .map(|s| s.pid)
        .collect()
}

#[test]
fn scale_up_and_down() {
    let dir = TestDir::new("scale");
    let port = support::free_port();
    let cluster = dir.start(port, 2, &[]);
    let first = cluster.wait_ready(2);

    let out = dir.ctl(&["scale", "4"]);
    assert!(out.status.success(), "{out:?}");
    let four = wait_for(START_TIMEOUT, "4 ready workers", || {
        let pids = live(&cluster);
        (pids.len() == 4).then_some(pids)
    });
    assert!(
        first.iter().all(|p| four.contains(p)),
        "scaling up keeps the running workers"
    );
    assert_eq!(cluster.snapshot().target_workers, 4);

    let out = dir.ctl(&["scale", "1"]);
    assert!(out.status.success(), "{out:?}");
    let one = wait_for(START_TIMEOUT, "1 ready worker", || {
        let pids = live(&cluster);
        (pids.len() == 1).then_some(pids)
    });
    let gone: Vec<u32> = four.iter().copied().filter(|p| !one.contains(p)).collect();
    Cluster::wait_pids_gone(&gone, START_TIMEOUT);
    assert_eq!(support::get(port, "/pid").unwrap().pid(), one[0]);

    let out = dir.ctl(&["scale", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid worker count"));
    let out = dir.ctl(&["scale", "100"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not enough free slots"));
    assert_eq!(live(&cluster), one);
}
