//! A worker that sends garbage on its control channel is dropped and replaced (with backoff
//! while it keeps doing so); the other workers are untouched.

mod support;

use std::time::Duration;

use support::{get, hold_for, wait_until, TestDir, START_TIMEOUT};

#[test]
fn garbage_on_the_control_channel_replaces_only_that_worker() {
    let dir = TestDir::new("garbage");
    let port = support::free_port();
    // Once the marker exists, slot 1 writes a packet that is not a control message before it
    // starts serving. (At first start that would fail the start, as it should.)
    let marker = dir.scratch("misbehave");
    let script = dir.demo_script(
        "worker.sh",
        &format!(
            r#"[ "$FLORA_SLOT" = 1 ] && [ -e {} ] && bash -c 'printf "this is not json" >&$FLORA_CONTROL_FD'"#,
            marker.display()
        ),
        "",
    );
    let cluster = dir.start_program(port, &["--workers", "2"], &[script.to_str().unwrap()]);
    let pids = cluster.wait_ready(2);
    let slot0 = wait_until_ready_slot0(&cluster);
    assert_eq!(slot0, pids[0]);
    std::fs::write(&marker, b"").unwrap();
    support::kill9(pids[1]);
    wait_until(START_TIMEOUT, "slot 1 replaced again and again", || {
        cluster.snapshot().slots[1].restarts >= 3
    });
    assert!(
        cluster
            .stderr()
            .contains("sent garbage on its control channel"),
        "{}",
        cluster.stderr()
    );
    // Meanwhile slot 0 keeps its process and serves every request.
    hold_for(Duration::from_secs(1), || {
        assert_eq!(cluster.snapshot().slots[0].pid, slot0);
        assert_eq!(get(port, "/").unwrap().status, 200);
    });
    assert_eq!(cluster.snapshot().slots[0].restarts, 0);
}

fn wait_until_ready_slot0(cluster: &support::Cluster) -> u32 {
    support::wait_for(START_TIMEOUT, "slot 0 ready", || {
        let s = &cluster.snapshot().slots[0];
        (s.state == flora_cluster::scoreboard::SlotState::Ready && s.pid != 0).then_some(s.pid)
    })
}
