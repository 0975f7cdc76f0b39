//! Connections that never send a request hold nothing: a TLS client that completes the
//! handshake with ALPN `h2` and then stays silent is closed at the header-read timeout; a
//! client that connects and closes (a TCP health check) is not a failed handshake; and a
//! drain (reload) does not wait for connections still in the TLS handshake or with no
//! request bytes yet.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flora_cluster::worker::HEADER_READ_TIMEOUT_ENV;
use support::http::connect;
use support::tls::scratch_cert;
use support::{kill_and_reap, wait_child, Cluster, TestDir};

/// A TLS client (Python's `ssl`, a real TLS stack) that offers ALPN `h2`, completes the
/// handshake, sends nothing and prints how the server ended it: `h2 eof SECONDS`.
const H2_SILENT: &str = r#"
import ssl, socket, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[2])
ctx.set_alpn_protocols(["h2"])
t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))), server_hostname="localhost")
print(t.selected_alpn_protocol(), flush=True)
t.settimeout(float(sys.argv[3]))
start = time.time()
try:
    out = "eof" if t.recv(100) == b"" else "data"
except socket.timeout:
    out = "timeout"
except OSError:
    out = "reset"
print(out, round(time.time() - start, 2), flush=True)
"#;

/// Longest the silent client waits for the server to close.
const CLIENT_WAIT_SECS: &str = "20";

fn h2_silent(port: u16, ca: &Path) -> Child {
    Command::new("python3")
        .args(["-c", H2_SILENT, &port.to_string()])
        .arg(ca)
        .arg(CLIENT_WAIT_SECS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3")
}

fn output(mut child: Child, timeout: Duration) -> String {
    let status = wait_child(&mut child, timeout);
    if status.is_none() {
        kill_and_reap(&mut child);
    }
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut s, &mut out);
    }
    assert!(status.is_some(), "the silent client still connected: {out}");
    out
}

fn start(dir: &TestDir, port: u16, header_ms: Option<&str>) -> (Cluster, std::path::PathBuf) {
    let c = scratch_cert(dir, "flora-silent");
    let mut m = dir
        .master(port)
        .args(&["--workers", "1", "--shutdown-timeout", "20"])
        .tls(&c)
        .demo(&[]);
    if let Some(ms) = header_ms {
        m = m.env(HEADER_READ_TIMEOUT_ENV, ms);
    }
    let cluster = m.start();
    cluster.wait_ready(1);
    (cluster, c.cert)
}

#[test]
fn a_silent_h2_client_is_cut_and_a_health_check_is_no_failure() {
    let dir = TestDir::new("tls-silent");
    let port = support::free_port();
    let (cluster, ca) = start(&dir, port, Some("1000"));
    let out = output(h2_silent(port, &ca), Duration::from_secs(15));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("h2"), "ALPN: {out}");
    let end: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
    assert!(matches!(end[0], "eof" | "reset"), "not closed: {out}");
    let secs: f64 = end.get(1).and_then(|s| s.parse().ok()).unwrap_or(f64::MAX);
    assert!(secs < 5.0, "closed after {secs} s, the limit is 1 s: {out}");

    // Connect and close without a byte: a health check, not a failed handshake.
    drop(connect(port).expect("connect"));
    std::thread::sleep(Duration::from_millis(300));
    let failures = cluster.snapshot().totals.counters.tls_handshake_failures;
    assert_eq!(failures, 0, "a health check counted as a failed handshake");
}

#[test]
fn a_reload_does_not_wait_for_handshakes_or_silent_connections() {
    let dir = TestDir::new("tls-silent-drain");
    let port = support::free_port();
    // The default 30 s header-read limit: only the drain can end these connections soon.
    let (cluster, ca) = start(&dir, port, None);
    let old = cluster.wait_ready(1);
    // One connection in the handshake (no ClientHello yet), one past it with ALPN h2 and
    // no preface.
    let in_handshake = connect(port).expect("connect");
    let silent = h2_silent(port, &ca);
    std::thread::sleep(Duration::from_millis(500));

    let started = Instant::now();
    dir.reload_ok();
    Cluster::wait_pids_gone(&old, Duration::from_secs(15));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "the old worker took {took:?} to drain (shutdown timeout 20 s)"
    );
    let out = output(silent, Duration::from_secs(10));
    assert!(out.contains("eof") || out.contains("reset"), "{out}");
    drop(in_handshake);
}
