//! A worker's `listen("name:port")` with a resolver that never answers: the master resolves
//! off its event loop with a timeout, so `/metrics` keeps answering in milliseconds while the
//! lookup hangs, and the worker gets a clear error after the timeout.
//!
//! The master runs in its own mount namespace (`unshare -m`) whose `/etc/resolv.conf` points
//! at a UDP socket on 127.0.0.1:53 that this test holds and never answers. Needs root.

mod support;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use support::http::get_with;
use support::{wait_for, TestDir};

#[test]
fn hanging_resolver_never_stalls_the_master() {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root");
    let silent_dns = UdpSocket::bind("127.0.0.1:53").expect("bind 127.0.0.1:53 (udp)");
    silent_dns
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let dir = TestDir::new("resolver");
    let resolv = dir.scratch("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.1\noptions timeout:30 attempts:1\n",
    )
    .unwrap();
    let status_port = support::free_port();
    let mount = format!(
        "mount --bind {} /etc/resolv.conf && exec \"$0\" \"$@\"",
        resolv.display()
    );
    let mut master = dir
        .master(8080)
        .args(&["--workers", "1"])
        .args(&["--status-addr", &format!("127.0.0.1:{status_port}")])
        .env("HOST", "flora-test.example.com")
        .through(&[
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &mount,
        ])
        .start();
    wait_for(support::START_TIMEOUT, "the master resolving", || {
        master.stderr().contains("worker spawned").then_some(())
    });
    // The lookup hangs (30 s resolver timeout); scrapes meanwhile must not wait for it.
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let r = get_with(status_port, "/metrics", &[]);
        worst = worst.max(t.elapsed());
        assert_eq!(r.status, 200, "{}", master.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("slowest /metrics while the resolver hung: {worst:?}");
    assert!(
        silent_dns.peek_from(&mut [0u8; 512]).is_ok(),
        "the master never asked the resolver"
    );
    let st = master.wait_exit(Duration::from_secs(20));
    assert_eq!(st.code(), Some(1), "{}", master.stderr());
    assert!(
        master.stderr().contains("name resolution took longer than"),
        "{}",
        master.stderr()
    );
}
