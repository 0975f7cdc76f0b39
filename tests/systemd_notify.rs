//! Type=notify: the master tells systemd READY (with a STATUS line of live totals), RELOADING
//! around a reload, and STOPPING; its workers never see NOTIFY_SOCKET.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{TestDir, EXIT_TIMEOUT};

/// Receives notifications until one satisfies `want`, at most 20 s.
fn expect(
    sock: &UnixDatagram,
    what: &str,
    seen: &mut Vec<String>,
    want: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(msg.clone());
            if want(&msg) {
                return msg;
            }
        }
    }
    panic!("no {what} notification within 20 s; got {seen:?}");
}

#[test]
fn ready_reloading_status_and_stopping_reach_systemd() {
    let dir = TestDir::new("notify");
    let path = dir.scratch("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // This test is alone in its binary: setting the variable affects only the master we start.
    std::env::set_var("NOTIFY_SOCKET", &path);
    let mut cluster = dir.start(support::free_port(), 2, &[]);
    std::env::remove_var("NOTIFY_SOCKET");
    let pids = cluster.wait_ready(2);
    let mut seen = Vec::new();

    let ready = expect(&sock, "READY", &mut seen, |m| m.contains("READY=1"));
    assert!(
        ready.contains("STATUS=2/2 workers ready, generation 1"),
        "{ready}"
    );
    for pid in &pids {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(
            !String::from_utf8_lossy(&env).contains("NOTIFY_SOCKET"),
            "worker {pid} got NOTIFY_SOCKET"
        );
    }

    cluster.signal(Signal::SIGHUP);
    let reloading = expect(&sock, "RELOADING", &mut seen, |m| m.contains("RELOADING=1"));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let again = expect(&sock, "READY after reload", &mut seen, |m| {
        m.contains("READY=1")
    });
    assert!(again.contains("generation 2"), "{again}");
    // The STATUS line is refreshed with live totals.
    expect(&sock, "periodic STATUS", &mut seen, |m| {
        m.starts_with("STATUS=") && m.contains("requests")
    });

    cluster.signal(Signal::SIGTERM);
    expect(&sock, "STOPPING", &mut seen, |m| m.contains("STOPPING=1"));
    assert!(cluster.wait_exit(EXIT_TIMEOUT).success());
}
