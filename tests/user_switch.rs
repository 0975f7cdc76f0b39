//! Run as root with `--user`: the master binds a privileged port and hands it over, the
//! workers run unprivileged. (This test needs root, as CI and these machines run.)

mod support;

use std::net::TcpListener;

use support::{get, TestDir};

fn free_privileged_port() -> u16 {
    (900..1000)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 1024")
}

fn uid_of(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn workers_run_unprivileged_on_a_privileged_port() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (scripts/test.sh runs as root in CI)"
    );
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    let dir = TestDir::new("user");
    let port = free_privileged_port();
    let listen = format!("127.0.0.1:{port}");
    let cluster = dir.start_with(
        port,
        &["--workers", "2", "--user", "nobody", "--listen", &listen],
        &[],
    );
    let pids = cluster.wait_ready(2);
    for pid in &pids {
        assert_eq!(
            uid_of(*pid),
            nobody.uid.as_raw(),
            "worker {pid} runs as nobody"
        );
    }
    assert_eq!(uid_of(cluster.pid), 0, "the master stays root");
    for _ in 0..10 {
        let r = get(port, "/pid").unwrap();
        assert!(pids.contains(&r.pid()));
    }
    // The runtime dir can be traversed but not listed; the segment stays private.
    let mode = |p: &std::path::Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    assert_eq!(mode(&dir.runtime_dir()), 0o711);
    assert_eq!(mode(&dir.segment_path()), 0o600);
    // A reload starts the new generation unprivileged too.
    dir.reload_ok();
    let snap = cluster.snapshot();
    for s in snap
        .slots
        .iter()
        .filter(|s| s.generation == 2 && s.pid != 0)
    {
        assert_eq!(uid_of(s.pid), nobody.uid.as_raw());
    }
}

#[test]
fn group_without_user_is_refused() {
    let dir = TestDir::new("group");
    let mut cluster = dir.start_with(
        support::free_port(),
        &["--workers", "1", "--group", "nogroup"],
        &[],
    );
    assert_eq!(cluster.wait_exit(support::EXIT_TIMEOUT).code(), Some(2));
    assert!(
        cluster.stderr().contains("--group needs --user"),
        "{}",
        cluster.stderr()
    );
}

#[test]
fn unprivileged_workers_get_only_declared_addresses() {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root");
    let dir = TestDir::new("user-undeclared");
    // No --listen: the workers' own listen(127.0.0.1:PORT) must not be bound for them by root.
    let port = free_privileged_port();
    let mut cluster = dir.start_with(port, &["--workers", "1", "--user", "nobody"], &[]);
    let st = cluster.wait_exit(support::EXIT_TIMEOUT);
    assert_eq!(st.code(), Some(1), "{}", cluster.stderr());
    let log = cluster.stderr();
    assert!(
        log.contains("get only the addresses the master was given"),
        "{log}"
    );
    assert!(
        !log.contains(&format!("listening on 127.0.0.1:{port}")),
        "the port was bound for an unprivileged worker:\n{log}"
    );
}
