//! First start: there is nothing to roll back to. If the first generation cannot become
//! ready, the master stops what it started and exits non-zero with the reason.

mod support;

use std::time::Duration;

use support::{TestDir, EXIT_TIMEOUT};

#[test]
fn worker_failing_its_start_up_checks_fails_the_start() {
    let dir = TestDir::new("first-exit");
    let mut cluster = dir.start(
        support::free_port(),
        2,
        &["--exit-at-start", "5", "--only-slot", "1"],
    );
    let status = cluster.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(1), "{}", cluster.stderr());
    let err = cluster.stderr();
    assert!(
        err.contains("exited during start-up (exit code 5)"),
        "{err}"
    );
    assert!(!dir.segment_path().exists(), "segment removed");
}

#[test]
fn workers_never_ready_fail_the_start_after_the_timeout() {
    let dir = TestDir::new("first-hang");
    let mut cluster = dir.start_with(
        support::free_port(),
        &[
            "--workers",
            "2",
            "--ready-timeout",
            "1",
            "--shutdown-timeout",
            "2",
        ],
        &["--never-ready"],
    );
    let status = cluster.wait_exit(EXIT_TIMEOUT + Duration::from_secs(5));
    assert_eq!(status.code(), Some(1));
    assert!(
        cluster.stderr().contains("were ready after"),
        "{}",
        cluster.stderr()
    );
}
