//! `--control-socket` never deletes what is not ours: a regular file or a symlink at that path
//! is refused and left alone, a live master's socket is refused, and only a stale socket of
//! ours is replaced.

mod support;

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::TestDir;

/// Refusing happens before any worker starts.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(20);

fn start_on(dir: &TestDir, socket: &Path) -> support::Cluster {
    dir.start_with(
        support::free_port(),
        &[
            "--workers",
            "1",
            "--control-socket",
            socket.to_str().unwrap(),
        ],
        &[],
    )
}

fn refused(dir: &TestDir, socket: &Path, why: &str) {
    let mut master = start_on(dir, socket);
    let status = master.wait_exit(REFUSE_TIMEOUT);
    let stderr = master.stderr();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&socket.display().to_string()) && stderr.contains(why),
        "{stderr}"
    );
}

#[test]
fn regular_file_and_symlink_are_refused_and_kept() {
    let dir = TestDir::new("ctl-file");
    let file = dir.scratch("notes.txt");
    std::fs::write(&file, "keep me\n").unwrap();
    refused(&dir, &file, "is a regular file, not a socket");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me\n");

    let link = dir.scratch("link.sock");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    refused(&dir, &link, "is a symlink, not a socket");
    assert!(link.symlink_metadata().unwrap().is_symlink());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me\n");
}

#[test]
fn live_socket_is_refused_and_stale_one_replaced() {
    let first_dir = TestDir::new("ctl-live");
    let socket = first_dir.scratch("shared.sock");
    // A stale socket of ours (its listener is gone) is replaced.
    drop(UnixListener::bind(&socket).unwrap());
    let mut first = start_on(&first_dir, &socket);
    first.wait_ready(1);

    // Another instance pointed at the same path must not steal it.
    let other = TestDir::new("ctl-live2");
    refused(&other, &socket, "a running master answers on it");
    UnixStream::connect(&socket).expect("the first master's socket still answers");
    let reply = flora_cluster::control::call(
        &socket,
        &flora_cluster::control::Request::Status,
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(reply.ok);

    first.signal(Signal::SIGTERM);
    assert!(first.wait_exit(support::EXIT_TIMEOUT).success());
    assert!(!socket.exists(), "the socket is removed at a clean stop");
}
