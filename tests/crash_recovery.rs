//! A crash-looping worker is respawned with backoff, visible in the metrics, without making the
//! master busy; once the cause is fixed it recovers without a restart of the master.

mod support;

use std::time::{Duration, Instant};

use flora_cluster::scoreboard::SlotState;
use support::{get, wait_for, wait_until, TestDir, START_TIMEOUT};

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

#[test]
fn crash_loop_backs_off_and_recovers_when_fixed() {
    let dir = TestDir::new("recover");
    let port = support::free_port();
    let broken = dir.scratch("broken");
    // Slot 1 dies at once while the marker exists (after the cluster started).
    let script = dir.demo_script(
        "worker.sh",
        &format!(
            r#"[ "$FLORA_SLOT" = 1 ] && [ -e {} ] && exit 9"#,
            broken.display()
        ),
        "",
    );
    let cluster = dir.start_program(port, &["--workers", "2"], &[script.to_str().unwrap()]);
    let pids = cluster.wait_ready(2);
    std::fs::write(&broken, b"").unwrap();
    support::kill9(pids[1]);

    let cpu_before = cpu_seconds(cluster.pid);
    let window = Instant::now();
    wait_until(Duration::from_secs(10), "a few respawns", || {
        cluster.snapshot().slots[1].restarts >= 5
    });
    let (elapsed, cpu) = (
        window.elapsed().as_secs_f64(),
        cpu_seconds(cluster.pid) - cpu_before,
    );
    let restarts = cluster.snapshot().slots[1].restarts;
    // Backoff 0, 0.1, 0.2, 0.4, 0.8 s…: 5 respawns take ≥ 0.5 s; the master mostly sleeps.
    assert!(
        elapsed >= 0.5,
        "{restarts} respawns in {elapsed:.2} s: no backoff"
    );
    assert!(
        cpu < 0.5 * elapsed + 0.1,
        "master used {cpu:.2} s CPU in {elapsed:.2} s"
    );
    let metrics = get(support::status_server::status_port(&cluster), "/metrics")
        .unwrap()
        .text();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("flora_worker_restarts_total{worker=\"1\"}") && !l.ends_with(" 0")
        ),
        "restarts visible in /metrics"
    );
    assert_eq!(get(port, "/").unwrap().status, 200, "slot 0 keeps serving");

    // Fix it: the next respawn (after the current backoff) serves again; the master never restarted.
    std::fs::remove_file(&broken).unwrap();
    let fixed = wait_for(START_TIMEOUT, "slot 1 ready again", || {
        let s = &cluster.snapshot().slots[1];
        (s.state == SlotState::Ready && s.pid != 0).then_some(s.pid)
    });
    assert!(support::pid_alive(fixed));
    assert_eq!(cluster.snapshot().master_pid, cluster.pid);
    assert_eq!(cluster.snapshot().slots[0].pid, pids[0]);
}
