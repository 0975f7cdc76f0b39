//! Socket activation: a listening socket passed by systemd (LISTEN_FDS) feeds the master's
//! listener table, and the workers serve it — the master never binds the port itself.

mod support;

use std::time::Duration;

use support::{get, wait_for, TestDir};

/// A master of 2 workers behind `systemd-socket-activate` on `port` (the activator passes on
/// only the environment given with --setenv).
fn activated(dir: &TestDir, port: u16) -> support::Cluster {
    dir.master(port)
        .args(&["--workers", "2", "--status-addr", "127.0.0.1:0"])
        .through(&[
            "systemd-socket-activate",
            &format!("--listen=127.0.0.1:{port}"),
            "--setenv=HOST=127.0.0.1",
            &format!("--setenv=PORT={port}"),
        ])
        .start()
}

#[test]
fn workers_serve_the_socket_systemd_passed() {
    let dir = TestDir::new("sockact");
    let port = support::free_port();
    let activator = activated(&dir, port);
    // The first connection makes the activator start the master with the socket as fd 3; it
    // waits in the socket's queue until a worker accepts it.
    let first = wait_for(Duration::from_secs(20), "first request served", || {
        get(port, "/").ok()
    });
    assert_eq!(first.text(), "Hello World\n");
    for _ in 0..20 {
        assert_eq!(get(port, "/").unwrap().status, 200);
    }
    let log = activator.stderr();
    assert!(
        log.contains("socket activation"),
        "the master must use the inherited socket:\n{log}"
    );
    assert!(
        !log.contains(&format!("listening on 127.0.0.1:{port}\n")),
        "bound the port itself:\n{log}"
    );
}

#[test]
fn a_master_upgrade_keeps_serving_the_socket_systemd_passed() {
    let dir = TestDir::new("sockact-up");
    let port = support::free_port();
    let mut activator = activated(&dir, port);
    wait_for(Duration::from_secs(20), "first request served", || {
        get(port, "/").ok()
    });
    let old = activator.pid;
    let out = dir.ctl(&["upgrade"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The old master (the activator's exec) exited after handing over.
    let status = activator.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    let new: u32 = std::fs::read_to_string(dir.lock_path())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new, old);
    assert!(said.contains(&format!("-> {new}")), "{said}");
    for _ in 0..20 {
        assert_eq!(get(port, "/").unwrap().status, 200);
    }
    let log = activator.stderr();
    assert!(log.contains("taking over"), "{log}");
    assert!(
        !log.contains(&format!("listening on 127.0.0.1:{port}\n")),
        "a master bound the port itself:\n{log}"
    );
    // The new master is nobody's child here: stop it by its pid.
    support::term(new);
    support::wait_until(Duration::from_secs(20), "the new master gone", || {
        !support::pid_alive(new)
    });
}
