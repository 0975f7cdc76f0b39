//! Socket activation of a Unix socket: systemd (here `systemd-socket-activate`) binds the
//! path and passes the socket; workers asking for `unix:PATH` get that very socket, and the
//! master leaves the file to its owner when it stops.

mod support;

use std::os::unix::fs::FileTypeExt;
use std::process::Command;
use std::time::Duration;

use support::{wait_for, TestDir, EXIT_TIMEOUT};

#[test]
fn workers_serve_the_unix_socket_systemd_passed() {
    let dir = TestDir::new("unix-sockact");
    let sock = dir.scratch("app.sock");
    let addr = format!("unix:{}", sock.display());
    let mut activator = dir
        .master(0)
        .args(&["--workers", "2"])
        .through(&[
            "systemd-socket-activate",
            &format!("--listen={}", sock.display()),
            &format!("--setenv=LISTEN={addr}"),
        ])
        .start();
    let curl = || {
        Command::new("curl")
            .args(["-sf", "--max-time", "5", "--unix-socket"])
            .arg(&sock)
            .arg("http://flora/")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    // The first connection starts the master; it waits in the queue until a worker accepts.
    let first = wait_for(Duration::from_secs(20), "first request served", curl);
    assert_eq!(first, "Hello World\n");
    for _ in 0..5 {
        assert_eq!(curl().as_deref(), Some("Hello World\n"));
    }
    let log = activator.stderr();
    assert!(
        log.contains(&format!("listening on {addr} (socket activation)")),
        "the master must use the inherited socket:\n{log}"
    );
    assert!(!log.contains("(mode 0"), "bound the path itself:\n{log}");
    activator.signal(nix::sys::signal::Signal::SIGTERM);
    activator.wait_exit(EXIT_TIMEOUT);
    assert!(
        std::fs::symlink_metadata(&sock).is_ok_and(|m| m.file_type().is_socket()),
        "an inherited socket's file is not the master's to remove"
    );
}
