//! Socket activation: a listening socket passed by systemd (LISTEN_FDS) feeds the master's
//! listener table, and the workers serve it — the master never binds the port itself.

mod support;

use std::process::Command;
use std::time::Duration;

use support::tools::ChildGuard;
use support::{get, wait_for, TestDir, DEMO_BIN, MASTER_BIN};

#[test]
fn workers_serve_the_socket_systemd_passed() {
    let dir = TestDir::new("sockact");
    let port = support::free_port();
    let mut cmd = Command::new("systemd-socket-activate");
    // The activator passes on only the environment given with --setenv.
    cmd.arg(format!("--listen=127.0.0.1:{port}"))
        .arg("--setenv=HOST=127.0.0.1")
        .arg(format!("--setenv=PORT={port}"))
        .arg(MASTER_BIN)
        .args([
            "run",
            "--workers",
            "2",
            "--name",
            &dir.name,
            "--status-addr",
            "127.0.0.1:0",
        ])
        .arg("--runtime-dir")
        .arg(dir.runtime_dir())
        .args(["--", DEMO_BIN]);
    let activator = ChildGuard::spawn(
        "systemd-socket-activate",
        &mut cmd,
        dir.scratch("activator.log"),
    );
    // The first connection makes the activator start the master with the socket as fd 3; it
    // waits in the socket's queue until a worker accepts it.
    let first = wait_for(Duration::from_secs(20), "first request served", || {
        get(port, "/").ok()
    });
    assert_eq!(first.text(), "Hello World\n");
    for _ in 0..20 {
        assert_eq!(get(port, "/").unwrap().status, 200);
    }
    let log = activator.log();
    assert!(
        log.contains("socket activation"),
        "the master must use the inherited socket:\n{log}"
    );
    assert!(
        !log.contains(&format!("listening on 127.0.0.1:{port}\n")),
        "bound the port itself:\n{log}"
    );
}
