//! A second master for the same name and runtime dir refuses to start while the first lives,
//! and leaves the first one alone.

mod support;

use std::time::Duration;

use support::TestDir;

/// "At once": the second master only has to find the lock taken.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts one master, then a second one for the same instance on the same or another port.
fn second_master_is_refused(tag: &str, same_port: bool) {
    let dir = TestDir::new(tag);
    let first = dir.start(support::free_port(), 2, &[]);
    let pids = first.wait_ready(2);
    let before = std::fs::read(dir.segment_path()).expect("read segment");

    let port = if same_port {
        first.port
    } else {
        support::free_port()
    };
    let mut second = dir.start(port, 2, &[]);
    let status = second.wait_exit(REFUSE_TIMEOUT);
    let stderr = second.stderr();
    assert!(!status.success(), "second master exited with {status:?}");
    assert!(
        stderr.contains("already running"),
        "second master's stderr does not say \"already running\":\n{stderr}"
    );

    // The first master is intact: same workers, same segment, same lock, still serving.
    assert_eq!(
        first.wait_ready(2),
        pids,
        "the first master's workers changed"
    );
    let after = std::fs::read(dir.segment_path()).expect("segment of the first master is gone");
    assert_eq!(after.len(), before.len(), "the segment was replaced");
    assert!(
        dir.lock_path().exists(),
        "the second master removed the lock"
    );
    let reopened = flora_cluster::scoreboard::Scoreboard::open_read_only(&dir.segment_path())
        .expect("reopen the first master's segment");
    let slots: Vec<u32> = reopened.snapshot().slots[..2]
        .iter()
        .map(|s| s.pid)
        .collect();
    assert_eq!(slots, pids, "the segment on disk is not the first master's");
    let r = support::get(first.port, "/").expect("GET / on the first master");
    assert_eq!(r.status, 200);
    assert!(support::pid_alive(first.pid));
}

#[test]
fn second_master_same_command_is_refused() {
    second_master_is_refused("second-same", true);
}

#[test]
fn second_master_other_port_is_refused() {
    second_master_is_refused("second-other", false);
}
