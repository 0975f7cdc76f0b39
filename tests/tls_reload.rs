//! A reload serves renewed certificate files: each generation reads them when it starts.
#![cfg(feature = "tls")]

mod support;

use support::tls::{curl, served_subject, write_cert};
use support::{wait_until, Cluster, TestDir, START_TIMEOUT};

#[test]
fn a_reload_serves_the_renewed_certificate() {
    let dir = TestDir::new("tls-reload");
    let port = support::free_port();
    let (cert, key) = (dir.scratch("cert.pem"), dir.scratch("key.pem"));
    let first = write_cert("flora-first", &cert, &key);
    let first_ca = dir.scratch("first-ca.pem");
    std::fs::copy(&first.cert, &first_ca).expect("keep the first certificate");
    let cluster = dir
        .master(port)
        .args(&["--workers", "2"])
        .tls(&first)
        .demo(&[])
        .start();
    let old = cluster.wait_ready(2);
    let r = curl(port, &first_ca, &["--http2"], "/");
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(served_subject(&r).as_deref(), Some("CN=flora-first"));

    // Renewed on disk: the running workers keep what they loaded.
    write_cert("flora-second", &cert, &key);
    let second_ca = dir.scratch("second-ca.pem");
    std::fs::copy(&cert, &second_ca).expect("keep the second certificate");
    let r = curl(port, &first_ca, &["--http1.1"], "/");
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(served_subject(&r).as_deref(), Some("CN=flora-first"));

    dir.reload_ok();
    Cluster::wait_pids_gone(&old, START_TIMEOUT);
    wait_until(
        START_TIMEOUT,
        "every answer with the new certificate",
        || {
            (0..6).all(|i| {
                let proto = if i % 2 == 0 { "--http2" } else { "--http1.1" };
                let r = curl(port, &second_ca, &[proto], "/");
                r.ok && served_subject(&r).as_deref() == Some("CN=flora-second")
            })
        },
    );
    // The old certificate is no longer served: a client that trusts only it fails.
    let r = curl(port, &first_ca, &["--http2"], "/");
    assert!(!r.ok, "old certificate still served:\n{}", r.stderr);
}
