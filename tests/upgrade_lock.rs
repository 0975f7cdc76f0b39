//! The instance lock across a master upgrade (issue 17): from the moment the new master
//! holds the handed-over lock until the old one exits, and after a rollback, a third master
//! for the same instance is refused ("already running"), and the lock file names the master
//! that answers: the old one until the commit, the new one after.

mod support;

use std::time::Duration;

use support::upgrade::{
    copy_master, lock_pid, marked_pids, ppid, stop_master, Current, Upgraded, MARK_VAR,
};
use support::{wait_for, TestDir};

/// Starts a third master for `dir`'s instance and checks that it is refused at once.
fn third_master_refused(dir: &TestDir) {
    let mut third = dir.start(support::free_port(), 1, &[]);
    let status = third.wait_exit(Duration::from_secs(20));
    let stderr = third.stderr();
    assert!(!status.success(), "a third master ran: {status:?}");
    assert!(stderr.contains("already running"), "{stderr}");
}

#[test]
fn no_third_master_during_or_after_an_upgrade() {
    let dir = TestDir::new("up-lock");
    let port = support::free_port();
    let worker = dir.demo_script("worker.sh", "", "");
    let cluster = dir
        .master(port)
        .args(&[
            "--workers",
            "1",
            "--ready-timeout",
            "4",
            "--shutdown-timeout",
            "3",
        ])
        .env(MARK_VAR, &dir.name)
        .program(&[&worker])
        .start();
    cluster.wait_ready(1);
    let old = cluster.pid;
    let current = Current::new(&dir.name, old);
    // An upgrade whose new workers never get ready: it stays under way for the ready timeout.
    dir.demo_script("worker.sh", "", "--never-ready");
    let copy = copy_master(&dir, "flora-cluster-copy");
    let copy_arg = copy.display().to_string();
    let runner = {
        let dir_args = (dir.name.clone(), dir.runtime_dir());
        std::thread::spawn(move || {
            std::process::Command::new(support::MASTER_BIN)
                .args(["upgrade", "--binary", &copy_arg, "--name", &dir_args.0])
                .arg("--runtime-dir")
                .arg(&dir_args.1)
                .output()
                .expect("run upgrade")
        })
    };
    // The new master is up (a child of the old one) and shares the lock now.
    wait_for(Duration::from_secs(20), "the new master", || {
        marked_pids(&dir.name).into_iter().find(|p| {
            ppid(*p) == Some(old)
                && std::fs::read_link(format!("/proc/{p}/exe"))
                    .is_ok_and(|exe| exe.ends_with("flora-cluster-copy"))
        })
    });
    third_master_refused(&dir);
    assert_eq!(
        lock_pid(&dir),
        old,
        "the old master answers until the commit"
    );
    let out = runner.join().expect("upgrade thread");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // Rolled back: the old master still holds the lock alone.
    third_master_refused(&dir);
    assert_eq!(lock_pid(&dir), old);
    // A good upgrade: the lock file names the new master, which refuses a third one too.
    dir.demo_script("worker.sh", "", "");
    let out = dir.ctl(&["upgrade", "--binary", &copy.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let up = Upgraded::parse(&String::from_utf8_lossy(&out.stdout));
    current.set(up.to);
    assert_eq!(lock_pid(&dir), up.to);
    third_master_refused(&dir);
    stop_master(up.to, &dir.name);
    drop(cluster);
}
