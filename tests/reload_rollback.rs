//! A reload whose new workers fail at start-up, or never become ready, is rolled back: the old
//! generation keeps serving, and a broken program on disk does not poison its respawns.

mod support;

use flora_cluster::scoreboard::SlotState;
use support::{get, wait_for, TestDir, START_TIMEOUT};

fn ready_pids(cluster: &support::Cluster, generation: u64) -> Vec<u32> {
    cluster
        .snapshot()
        .slots
        .iter()
        .filter(|s| s.generation == generation && s.state == SlotState::Ready && s.pid != 0)
        .map(|s| s.pid)
        .collect()
}

#[test]
fn failing_start_up_rolls_back_and_old_generation_keeps_its_program() {
    let dir = TestDir::new("reload-fail");
    let port = support::free_port();
    let script = dir.demo_script("worker.sh", "", "--body v1");
    let cluster = dir.start_program(port, &["--workers", "2"], &[script.to_str().unwrap()]);
    let old = cluster.wait_ready(2);

    // The new program's start-up checks fail.
    dir.demo_script("worker.sh", "", "--exit-at-start 7");
    let out = dir.ctl(&["reload"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "reload must exit 1 on rollback: {stdout}"
    );
    assert!(
        stdout.contains("rolled back") && stdout.contains("exit code 7"),
        "{stdout}"
    );
    assert_eq!(cluster.snapshot().generation, 1);
    assert_eq!(ready_pids(&cluster, 1), old);
    for _ in 0..20 {
        let r = get(port, "/").unwrap();
        assert_eq!(r.text(), "v1");
        assert!(old.contains(&get(port, "/pid").unwrap().pid()));
    }

    // The file on disk is broken now; a respawn of generation 1 still runs generation 1's copy.
    support::kill9(old[0]);
    let respawned = wait_for(START_TIMEOUT, "generation-1 respawn", || {
        let pids = ready_pids(&cluster, 1);
        (pids.len() == 2 && !pids.contains(&old[0])).then_some(pids)
    });
    assert!(respawned.contains(&old[1]));
    for _ in 0..20 {
        assert_eq!(get(port, "/").unwrap().text(), "v1");
    }
}

#[test]
fn never_ready_rolls_back_after_the_ready_timeout() {
    let dir = TestDir::new("reload-hang");
    let port = support::free_port();
    let script = dir.demo_script("worker.sh", "", "--body v1");
    let cluster = dir.start_program(
        port,
        &[
            "--workers",
            "2",
            "--ready-timeout",
            "2",
            "--shutdown-timeout",
            "3",
        ],
        &[script.to_str().unwrap()],
    );
    let old = cluster.wait_ready(2);
    dir.demo_script("worker.sh", "", "--never-ready");
    let out = dir.ctl(&["reload"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("rolled back") && stdout.contains("ready after"),
        "{stdout}"
    );
    assert_eq!(ready_pids(&cluster, 1), old);
    assert_eq!(get(port, "/").unwrap().text(), "v1");
    // The hung new workers are stopped, not left behind.
    support::wait_until(START_TIMEOUT, "generation 2 gone", || {
        cluster
            .snapshot()
            .slots
            .iter()
            .all(|s| s.generation != 2 || s.pid == 0)
    });
}
