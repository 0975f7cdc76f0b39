//! What the master does with what it finds at a `unix:` path, and with bad Unix settings:
//! clear refusals that leave other files alone, a live socket is "in use", a stale one (a
//! master killed with SIGKILL) is replaced, another user's plants are never followed, and
//! unprivileged workers get only declared paths.

mod support;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::hostile::{as_nobody, chmod, require_root, NOBODY};
use support::{wait_until, TestDir, START_TIMEOUT};

/// Longest a refused start may take.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a master on `addr` (workers ask for it too) to its exit; returns (exit code, stderr).
fn refused(dir: &TestDir, addr: &str, extra: &[&str]) -> (Option<i32>, String) {
    let (status, stderr) = dir
        .master(0)
        .args(&["--workers", "1", "--listen", addr])
        .args(extra)
        .env("LISTEN", addr)
        .run_to_exit(REFUSAL_TIMEOUT);
    assert!(!status.success(), "started anyway:\n{stderr}");
    (status.code(), stderr)
}

fn curl_ok(sock: &Path) -> bool {
    Command::new("curl")
        .args(["-sf", "--max-time", "5", "--unix-socket"])
        .arg(sock)
        .arg("http://flora/")
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout == b"Hello World\n")
}

#[test]
fn bad_paths_and_settings_are_usage_errors() {
    let dir = TestDir::new("unix-usage");
    let long = format!("unix:/{}", "d".repeat(120));
    let sock = format!("unix:{}", dir.scratch("a.sock").display());
    for (addr, extra, needle) in [
        ("unix:relative.sock", &[][..], "must be absolute"),
        (long.as_str(), &[][..], "at most 107"),
        ("unix:/run/../x.sock", &[][..], "`..`"),
        (sock.as_str(), &["--unix-mode", "999"][..], "unix_mode"),
        (sock.as_str(), &["--unix-mode", "4777"][..], "up to 0777"),
        (sock.as_str(), &["--unix-owner", "a b"][..], "unix_owner"),
        (
            sock.as_str(),
            &["--unix-owner", "no-such-user-flora"][..],
            "no such user",
        ),
    ] {
        let (code, stderr) = refused(&dir, addr, extra);
        assert_eq!(code, Some(2), "{addr} {extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{addr} {extra:?}: {stderr}");
    }
    let (_, stderr) = refused(
        &dir,
        &format!("unix:{}", dir.scratch("missing/a.sock").display()),
        &[],
    );
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn other_files_are_refused_and_kept_live_sockets_are_in_use() {
    let dir = TestDir::new("unix-kept");
    let file = dir.scratch("file.sock");
    std::fs::write(&file, "operator data").unwrap();
    let (_, stderr) = refused(&dir, &format!("unix:{}", file.display()), &[]);
    assert!(stderr.contains("a regular file, not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "operator data");

    let fifo = dir.scratch("fifo.sock");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let (_, stderr) = refused(&dir, &format!("unix:{}", fifo.display()), &[]);
    assert!(stderr.contains("a FIFO"), "{stderr}");
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());

    let live = dir.scratch("live.sock");
    let listener = UnixListener::bind(&live).unwrap();
    let ino = std::fs::symlink_metadata(&live).unwrap().ino();
    let (_, stderr) = refused(&dir, &format!("unix:{}", live.display()), &[]);
    assert!(stderr.contains("in use"), "{stderr}");
    assert_eq!(std::fs::symlink_metadata(&live).unwrap().ino(), ino);
    let _c = UnixStream::connect(&live).expect("the live socket still works");
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_ok());
}

#[test]
fn a_stale_socket_of_a_killed_master_is_replaced() {
    let dir = TestDir::new("unix-stale");
    let sock = dir.scratch("app.sock");
    let addr = format!("unix:{}", sock.display());
    let start = || {
        dir.master(0)
            .args(&["--workers", "1", "--listen", &addr])
            .env("LISTEN", &addr)
            .start()
    };
    let mut first = start();
    let pids = first.wait_ready(1);
    first.kill9_and_reap();
    // Its worker dies with it (parent-death signal); then nobody accepts on the file.
    support::Cluster::wait_pids_gone(&pids, START_TIMEOUT);
    let old = std::fs::symlink_metadata(&sock).expect("a stale file stays");
    assert!(old.file_type().is_socket());
    assert!(UnixStream::connect(&sock).is_err(), "stale");

    let second = start();
    second.wait_ready(1);
    let new = std::fs::symlink_metadata(&sock).unwrap();
    assert_ne!(new.ino(), old.ino(), "a new socket in its place");
    assert!(curl_ok(&sock));
    drop(second);
    wait_until(START_TIMEOUT, "the socket file removed at stop", || {
        std::fs::symlink_metadata(&sock).is_err()
    });
}

#[test]
fn another_users_plants_in_a_shared_directory_are_never_followed() {
    require_root();
    let dir = TestDir::new("unix-hostile");
    // A shared directory as /tmp is: world-writable and sticky; reachable by nobody.
    chmod(dir.scratch("").as_path(), 0o711);
    let shared = dir.scratch("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o1777);
    let victim = dir.scratch("victim");
    std::fs::write(&victim, "root's").unwrap();

    // nobody points the socket name at root's file.
    let link = shared.join("app.sock");
    as_nobody(&["ln", "-s", victim.to_str().unwrap(), link.to_str().unwrap()]);
    let (_, stderr) = refused(&dir, &format!("unix:{}", link.display()), &[]);
    assert!(stderr.contains("a symlink"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());

    // A world-writable directory without the sticky bit is refused outright.
    let open = dir.scratch("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let (_, stderr) = refused(&dir, &format!("unix:{}/a.sock", open.display()), &[]);
    assert!(stderr.contains("writable by every user"), "{stderr}");

    // A dead socket nobody left is replaced by ours (root's, mode 0660, accepting).
    let planted = shared.join("planted.sock");
    as_nobody(&[
        "/usr/bin/python3",
        "-c",
        "import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])",
        planted.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::symlink_metadata(&planted).unwrap().uid(), NOBODY);
    let addr = format!("unix:{}", planted.display());
    let cluster = dir
        .master(0)
        .args(&["--workers", "1", "--listen", &addr])
        .env("LISTEN", &addr)
        .start();
    cluster.wait_ready(1);
    let meta = std::fs::symlink_metadata(&planted).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o660));
    assert!(curl_ok(&planted));
}

#[test]
fn unprivileged_workers_get_only_declared_unix_paths() {
    require_root();
    let dir = TestDir::new("unix-undeclared");
    let declared = format!("unix:{}", dir.scratch("declared.sock").display());
    let asked = format!("unix:{}", dir.scratch("asked.sock").display());
    let (status, stderr) = dir
        .master(0)
        .args(&["--workers", "1", "--user", "nobody", "--listen", &declared])
        .args(&["--ready-timeout", "5"])
        .env("LISTEN", &asked)
        .run_to_exit(REFUSAL_TIMEOUT);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("not one of them"), "{stderr}");
    assert!(
        std::fs::symlink_metadata(dir.scratch("asked.sock")).is_err(),
        "never bound"
    );
}
