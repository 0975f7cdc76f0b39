//! A reload replaces every worker with the program on disk now, and the new code answers.

mod support;

use flora_cluster::scoreboard::SlotState;
use support::{get, pid_alive, wait_for, wait_until, Cluster, TestDir, START_TIMEOUT};

#[test]
fn reload_replaces_every_worker_and_serves_the_new_code() {
    let dir = TestDir::new("reload-replace");
    let port = support::free_port();
    let script = dir.demo_script("worker.sh", "", "--body v1");
    let cluster = dir.start_program(port, &["--workers", "2"], &[script.to_str().unwrap()]);
    let old = cluster.wait_ready(2);
    assert_eq!(get(port, "/").unwrap().text(), "v1");

    dir.demo_script("worker.sh", "", "--body v2");
    let out = dir.ctl(&["reload"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "reload failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("reload succeeded"), "{stdout}");

    let snap = cluster.snapshot();
    assert_eq!(snap.generation, 2);
    let new: Vec<u32> = snap
        .slots
        .iter()
        .filter(|s| s.generation == 2 && s.state == SlotState::Ready)
        .map(|s| s.pid)
        .collect();
    assert_eq!(
        new.len(),
        2,
        "two ready workers of generation 2: {:?}",
        snap.slots
    );
    assert!(
        new.iter().all(|p| !old.contains(p)),
        "old {old:?} new {new:?}"
    );
    Cluster::wait_pids_gone(&old, START_TIMEOUT);
    for _ in 0..40 {
        let r = get(port, "/").unwrap();
        assert_eq!(r.text(), "v2");
        assert!(new.contains(&get(port, "/pid").unwrap().pid()));
    }

    // A worker of the new generation that dies is respawned with the new code.
    support::kill9(new[0]);
    let respawned = wait_for(START_TIMEOUT, "respawn of a generation-2 worker", || {
        cluster
            .snapshot()
            .slots
            .iter()
            .find(|s| {
                s.generation == 2
                    && s.state == SlotState::Ready
                    && !new.contains(&s.pid)
                    && s.pid != 0
            })
            .map(|s| s.pid)
    });
    assert!(pid_alive(respawned));
    wait_until(START_TIMEOUT, "respawned worker answers v2", || {
        (0..10).all(|_| get(port, "/").map(|r| r.text() == "v2").unwrap_or(false))
    });
}
