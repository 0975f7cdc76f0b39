//! Another local user cannot make a root master run their code through the runtime dir:
//! a symlink planted where the runtime dir goes is refused at start, and a runtime dir path
//! repointed while the master runs is never written to or executed from.
//! (These tests need root: they plant files as `nobody`.)

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::hostile::{as_nobody, chmod, require_root, NOBODY};
use support::TestDir;

/// Refusing a bad runtime dir happens before anything starts.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(20);

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn symlink_planted_as_the_runtime_dir_is_refused() {
    require_root();
    let dir = TestDir::new("rt-planted");
    chmod(&dir.scratch(""), 0o755); // nobody must reach the stand-in for /dev/shm
                                    // A stand-in for /dev/shm: root's, world-writable, sticky.
    let shm = dir.scratch("shm");
    std::fs::create_dir(&shm).unwrap();
    chmod(&shm, 0o1777);
    // A root-owned private directory: it passes an owner/mode check that follows links.
    let private = dir.scratch("root-private");
    std::fs::create_dir(&private).unwrap();
    chmod(&private, 0o700);
    let planted = shm.join("flora-cluster-0");
    as_nobody(&[
        "ln",
        "-s",
        private.to_str().unwrap(),
        planted.to_str().unwrap(),
    ]);

    let (status, stderr) = dir
        .master(support::free_port())
        .args(&["--workers", "1", "--status-addr", "off"])
        .runtime_dir(&planted)
        .run_to_exit(REFUSE_TIMEOUT);
    assert!(!status.success(), "master started: {stderr}");
    assert!(
        stderr.contains("is a symlink") && stderr.contains("flora-cluster-0"),
        "{stderr}"
    );
    assert!(entries(&private).is_empty(), "{:?}", entries(&private));
}

fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

#[test]
fn repointed_runtime_dir_is_never_used() {
    require_root();
    let dir = TestDir::new("rt-repoint");
    let socket = dir.scratch("ctl.sock");
    let mut cluster = dir.start_with(
        support::free_port(),
        &[
            "--workers",
            "2",
            "--control-socket",
            socket.to_str().unwrap(),
        ],
        &[],
    );
    let pids = cluster.wait_ready(2);
    let held = dir.runtime_dir();

    // The path is repointed at a directory `nobody` controls. (Another user cannot do this
    // here: the master refuses a parent they could write without the sticky bit; the test
    // does it as root to show the master never re-resolves that path.)
    let attacker = dir.scratch("attacker");
    std::fs::create_dir(&attacker).unwrap();
    std::os::unix::fs::chown(&attacker, Some(NOBODY), Some(NOBODY)).unwrap();
    let moved = dir.scratch("run.held");
    std::fs::rename(&held, &moved).unwrap();
    std::os::unix::fs::symlink(&attacker, &held).unwrap();

    let out = Command::new(support::MASTER_BIN)
        .args(["reload", "--control-socket", socket.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("rolled back") && text.contains("no longer names"),
        "{text}"
    );
    // A respawn is refused too, and the master keeps serving with the other worker.
    support::kill9(pids[0]);
    support::wait_until(
        Duration::from_secs(20),
        "the refused respawn in the log",
        || {
            cluster
                .stderr()
                .contains("respawn failed: runtime directory")
        },
    );
    let r = support::get(cluster.port, "/pid").expect("GET /pid");
    assert_eq!(r.pid(), pids[1]);
    assert!(entries(&attacker).is_empty(), "{:?}", entries(&attacker));
    for s in cluster.snapshot().slots.iter().filter(|s| s.pid != 0) {
        if support::pid_alive(s.pid) {
            assert!(
                !exe_of(s.pid).starts_with(attacker.to_str().unwrap()),
                "worker {} runs {}",
                s.pid,
                exe_of(s.pid)
            );
        }
    }
    cluster.signal(Signal::SIGTERM);
    assert!(cluster.wait_exit(support::EXIT_TIMEOUT).success());
    assert!(entries(&attacker).is_empty(), "{:?}", entries(&attacker));
}
