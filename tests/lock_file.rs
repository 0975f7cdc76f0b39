//! The instance lock file: never followed through a symlink, never removed, and it keeps
//! guarding the instance across a clean stop and a restart.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use support::TestDir;

/// Refusing happens before anything starts.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn planted_lock_symlink_is_refused_and_its_target_untouched() {
    let dir = TestDir::new("lock-link");
    let victim = dir.scratch("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, dir.lock_path()).unwrap();

    let mut master = dir.start(support::free_port(), 1, &[]);
    let status = master.wait_exit(REFUSE_TIMEOUT);
    let stderr = master.stderr();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{}.lock", dir.name)) && stderr.contains("symlink"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(dir.lock_path().symlink_metadata().unwrap().is_symlink());
}

fn refused_by(dir: &TestDir, holder: u32) {
    let mut second = dir.start(support::free_port(), 1, &[]);
    let status = second.wait_exit(REFUSE_TIMEOUT);
    let stderr = second.stderr();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("already running (master pid {holder})")),
        "{stderr}"
    );
}

#[test]
fn lock_file_is_kept_and_keeps_guarding_the_instance() {
    let dir = TestDir::new("lock-kept");
    let mut first = dir.start(support::free_port(), 1, &[]);
    first.wait_ready(1);
    refused_by(&dir, first.pid);

    first.signal(Signal::SIGTERM);
    assert!(first.wait_exit(support::EXIT_TIMEOUT).success());
    assert!(
        dir.lock_path().exists(),
        "the lock file was removed at a clean stop"
    );

    // The same file guards the next master, which records its own pid in it.
    let next = dir.start(support::free_port(), 1, &[]);
    next.wait_ready(1);
    assert_eq!(
        std::fs::read_to_string(dir.lock_path()).unwrap().trim(),
        next.pid.to_string()
    );
    refused_by(&dir, next.pid);
    assert!(support::pid_alive(next.pid));
}
