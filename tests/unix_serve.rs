//! A cluster on a Unix socket: `--listen unix:PATH` with mode and owner, served to `curl
//! --unix-socket`, kept (same inode) and served across reloads, removed at the final stop;
//! workers running as another user get it because it was declared.

mod support;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::{wait_until, TestDir, EXIT_TIMEOUT, START_TIMEOUT};

/// `curl --unix-socket PATH http://x/TARGET`: the body, or the failure.
fn curl(sock: &Path, target: &str) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "5", "--unix-socket"])
        .arg(sock)
        .arg(format!("http://flora{target}"))
        .output()
        .map_err(|e| format!("run curl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn curl_pid(sock: &Path) -> u32 {
    let body = curl(sock, "/pid").expect("curl /pid over the unix socket");
    body.trim().parse().expect("a pid")
}

#[test]
fn unix_socket_serves_survives_reloads_and_is_removed_at_stop() {
    let dir = TestDir::new("unix-serve");
    let sock = dir.scratch("app.sock");
    let addr = format!("unix:{}", sock.display());
    let mut cluster = dir
        .master(0)
        .args(&["--workers", "2", "--listen", &addr])
        .args(&["--unix-mode", "0640", "--unix-owner", "65534:65534"])
        .env("LISTEN", &addr)
        .start();
    let pids = cluster.wait_ready(2);

    let meta = std::fs::symlink_metadata(&sock).expect("the socket file");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640, "--unix-mode");
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "--unix-owner");
    assert_eq!(curl(&sock, "/").unwrap(), "Hello World\n");
    assert!(pids.contains(&curl_pid(&sock)));
    let leftovers: Vec<_> = std::fs::read_dir(sock.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".flora-bind"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "private bind dirs left: {leftovers:?}"
    );

    let mut old = pids;
    for round in 0..2 {
        dir.reload_ok();
        let fresh = support::wait_for(
            START_TIMEOUT,
            "2 ready workers of the new generation",
            || {
                let ready: Vec<u32> = cluster
                    .snapshot()
                    .slots
                    .iter()
                    .filter(|s| s.state == flora_cluster::scoreboard::SlotState::Ready)
                    .map(|s| s.pid)
                    .collect();
                (ready.len() == 2 && ready.iter().all(|p| !old.contains(p))).then_some(ready)
            },
        );
        let now = std::fs::symlink_metadata(&sock).expect("socket after reload");
        assert_eq!(now.ino(), meta.ino(), "reload {round} kept the socket file");
        // The new generation answers on it (the old one is draining or gone).
        wait_until(START_TIMEOUT, "a new-generation worker answers", || {
            let pid = curl_pid(&sock);
            !old.contains(&pid) && fresh.contains(&pid)
        });
        old = fresh;
    }

    cluster.signal(Signal::SIGTERM);
    assert!(cluster.wait_exit(EXIT_TIMEOUT).success());
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "the master removes its socket file when it stops for good"
    );
    assert!(curl(&sock, "/").is_err());
}

#[test]
fn workers_of_another_user_get_the_declared_unix_socket() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (scripts/test.sh runs as root in CI)"
    );
    let dir = TestDir::new("unix-user");
    let sock = dir.scratch("app.sock");
    let addr = format!("unix:{}", sock.display());
    let cluster = dir
        .master(0)
        .args(&["--workers", "1", "--user", "nobody", "--listen", &addr])
        .env("LISTEN", &addr)
        .start();
    let pids = cluster.wait_ready(1);
    assert_eq!(curl_pid(&sock), pids[0]);
    // Root's socket file, 0660 by default: the workers use the descriptor, not the path.
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!((meta.uid(), meta.permissions().mode() & 0o777), (0, 0o660));
    drop(cluster);
    wait_until(Duration::from_secs(5), "socket file removed", || {
        std::fs::symlink_metadata(&sock).is_err()
    });
}
