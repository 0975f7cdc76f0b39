//! HTTPS from the workers: the master's `--tls-cert`/`--tls-key` reach every worker, curl
//! negotiates HTTP/2 or HTTP/1.1 by ALPN, and the bytes counted are the bytes on the wire.
#![cfg(feature = "tls")]

mod support;

use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use support::http::raw_exchange;
use support::tls::{curl, scratch_cert};
use support::{wait_for, TestDir};

/// Longest wait for the counters of finished requests to show.
const SHOW_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn curl_gets_http2_and_http1_over_tls_and_wire_bytes_are_counted() {
    let dir = TestDir::new("tls");
    let port = support::free_port();
    let c = scratch_cert(&dir, "flora-tls");
    let cluster = dir
        .master(port)
        .args(&["--workers", "1"])
        .tls(&c)
        .demo(&[])
        .start();
    cluster.wait_ready(1);

    // curl checks the certificate against our CA file: the served chain is ours.
    let h2 = curl(port, &c.cert, &["--http2"], "/");
    assert!(h2.ok, "curl --http2 failed:\n{}", h2.stderr);
    assert_eq!(h2.body, "Hello World\n");
    assert_eq!(h2.http_version, "2", "{}", h2.stderr);
    assert!(
        h2.stderr.contains("ALPN: server accepted h2"),
        "{}",
        h2.stderr
    );

    let h1 = curl(port, &c.cert, &["--http1.1"], "/");
    assert!(h1.ok, "curl --http1.1 failed:\n{}", h1.stderr);
    assert_eq!(h1.body, "Hello World\n");
    assert_eq!(h1.http_version, "1.1", "{}", h1.stderr);
    assert!(
        h1.stderr.contains("ALPN: server accepted http/1.1"),
        "{}",
        h1.stderr
    );

    // Bytes are counted under TLS: each handshake alone sent the certificate, far more than
    // the two plain responses would be.
    let der = CertificateDer::from_pem_file(&c.cert).expect("certificate der");
    let counters = wait_for(SHOW_TIMEOUT, "two requests counted", || {
        let t = cluster.snapshot().totals.counters;
        (t.requests_total == 2).then_some(t)
    });
    assert!(
        counters.bytes_out >= 2 * der.len() as u64,
        "bytes_out {} < two certificates ({} bytes each)",
        counters.bytes_out,
        der.len()
    );
    assert!(
        counters.bytes_in > 2 * 200,
        "bytes_in {}",
        counters.bytes_in
    );

    // Plain HTTP on the TLS port gets no HTTP answer, and its connection is closed.
    let out = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").expect("closed, not hung");
    assert!(
        !out.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
}
