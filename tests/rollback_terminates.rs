//! A rolled-back generation that never became ready is stopped at once: SIGTERM when the
//! reload rolls back (such a worker may not read its control channel at all), SIGKILL only
//! after the shutdown timeout — not left holding its slots for the whole timeout.

mod support;

use std::time::Instant;

use support::{wait_until, TestDir, START_TIMEOUT};

#[test]
fn never_ready_generation_gets_sigterm_at_rollback() {
    let dir = TestDir::new("rollback-term");
    let port = support::free_port();
    let flag = dir.scratch("hang");
    let prelude = format!("if [ -e {} ]; then exec sleep 600; fi", flag.display());
    let script = dir.demo_script("worker.sh", &prelude, "");
    // A shutdown timeout far longer than the waits below: only a SIGTERM can end them in time.
    let cluster = dir.start_program(
        port,
        &[
            "--workers",
            "2",
            "--ready-timeout",
            "1",
            "--shutdown-timeout",
            "120",
        ],
        &[script.to_str().unwrap()],
    );
    let old = cluster.wait_ready(2);
    std::fs::write(&flag, b"").unwrap();
    let out = dir.ctl(&["reload"]);
    let rolled_back = Instant::now();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    wait_until(START_TIMEOUT, "generation 2 gone", || {
        cluster
            .snapshot()
            .slots
            .iter()
            .all(|s| s.generation != 2 || s.pid == 0)
    });
    eprintln!(
        "rolled-back generation gone {} ms after the reload answered",
        rolled_back.elapsed().as_millis()
    );
    let log = cluster.stderr();
    assert!(log.contains("killed by SIGTERM"), "{log}");
    assert!(
        !log.contains("garbage"),
        "stopping a worker is not an error:\n{log}"
    );
    assert_eq!(
        cluster.wait_ready(2),
        old,
        "the old generation keeps serving"
    );
}
