//! Bad TLS clients are harmless: a plain-HTTP client, garbage and clients that connect and
//! send nothing never crash the worker nor stall the clients after them.
#![cfg(feature = "tls")]

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use support::http::connect;
use support::tls::{curl, scratch_cert};
use support::TestDir;

#[test]
fn garbage_plain_http_and_silent_clients_do_not_stall_the_next_tls_client() {
    let dir = TestDir::new("tls-bad");
    let port = support::free_port();
    let c = scratch_cert(&dir, "flora-bad");
    // One worker with one thread: every connection below lands on the same event loop.
    let cluster = dir
        .master(port)
        .args(&["--workers", "1"])
        .tls(&c)
        .demo(&[])
        .start();
    let pid = cluster.wait_ready(1)[0];

    // Silent clients: connected, never a byte. They hold a handshake each until its timeout.
    let silent: Vec<_> = (0..8).map(|_| connect(port).expect("connect")).collect();
    // A whole TLS handshake record of junk.
    let mut garbage = connect(port).expect("connect");
    garbage
        .write_all(&[
            0x16, 0x03, 0x01, 0x00, 0x06, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01,
        ])
        .expect("send garbage");
    let mut plain = connect(port).expect("connect");
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("send plain http");

    // The next TLS clients are served at once, over both protocols.
    for proto in ["--http2", "--http1.1"] {
        let r = curl(port, &c.cert, &[proto], "/pid");
        assert!(
            r.ok,
            "curl {proto} behind bad clients failed:\n{}",
            r.stderr
        );
        assert_eq!(r.body.trim(), pid.to_string());
    }

    // The failed handshakes are closed by the server (EOF within the read timeout), the
    // plain client gets no HTTP answer.
    for (what, mut s) in [("garbage", garbage), ("plain http", plain)] {
        let mut out = Vec::new();
        s.read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("{what}: not closed by the server: {e}"));
        assert!(!out.starts_with(b"HTTP/"), "{what}: {out:?}");
    }
    // Both are counted as failed handshakes, on the slot and on /metrics (the silent ones
    // still wait for their timeout).
    let failures = || cluster.snapshot().totals.counters.tls_handshake_failures;
    support::wait_until(Duration::from_secs(5), "two failed handshakes", || {
        failures() == 2
    });
    assert_eq!(failures(), 2, "garbage and plain http counted");
    let metrics =
        support::status_server::scrape(support::status_server::status_port(&cluster), None);
    assert!(
        metrics
            .text
            .contains("flora_tls_handshake_failures_total{worker=\"0\"} 2"),
        "{}",
        metrics.text
    );

    // Same worker, still serving.
    assert_eq!(cluster.wait_ready(1)[0], pid);
    let r = curl(port, &c.cert, &["--http2"], "/pid");
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.body.trim(), pid.to_string());
    drop(silent);
}
