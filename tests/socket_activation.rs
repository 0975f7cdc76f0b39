//! Socket activation: a listening socket passed by systemd (LISTEN_FDS) feeds the master's
//! listener table, and the workers serve it — the master never binds the port itself.

mod support;

use std::time::Duration;

use support::{get, wait_for, TestDir};

#[test]
fn workers_serve_the_socket_systemd_passed() {
    let dir = TestDir::new("sockact");
    let port = support::free_port();
    // The activator passes on only the environment given with --setenv.
    let activator = dir
        .master(port)
        .args(&["--workers", "2", "--status-addr", "127.0.0.1:0"])
        .through(&[
            "systemd-socket-activate",
            &format!("--listen=127.0.0.1:{port}"),
            "--setenv=HOST=127.0.0.1",
            &format!("--setenv=PORT={port}"),
        ])
        .start();
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
