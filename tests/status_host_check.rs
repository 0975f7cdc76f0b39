//! DNS rebinding: while the status server listens on loopback it answers only requests whose
//! `Host` is an IP literal, `localhost` or a name given with `--status-host` (any port); a
//! page on a rebound name gets 421 with a short text, on every path. A missing `Host` is fine
//! on HTTP/1.0. On a non-loopback address there is no check (Prometheus scrapes by name).

mod support;

use std::time::Duration;

use support::{http, status_server};
use support::{Response, TestDir};

/// A usage error is reported before anything starts.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(20);
/// A name the operator allows.
const ALLOWED: &str = "metrics.internal";

/// `GET target` with exactly the given raw header lines (no `Host` added), HTTP `version`.
fn raw_get(port: u16, version: &str, target: &str, headers: &[&str]) -> Response {
    let mut req = format!("GET {target} {version}\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    let raw = http::raw_exchange(port, req.as_bytes()).expect("exchange");
    http::parse_response(&raw, false).expect("a response")
}

fn with_host(port: u16, target: &str, host: &str) -> Response {
    raw_get(port, "HTTP/1.1", target, &[&format!("Host: {host}")])
}

#[test]
fn loopback_status_server_answers_only_known_host_names() {
    let dir = TestDir::new("host-check");
    let cluster = dir.start_with(
        support::free_port(),
        &["--workers", "1", "--status-host", ALLOWED],
        &[],
    );
    cluster.wait_ready(1);
    let port = status_server::status_port(&cluster);
    let allowed = [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".into(),
        format!("[::1]:{port}"),
        "localhost".into(),
        format!("LocalHost:{port}"),
        format!("{ALLOWED}:{port}"),
        "METRICS.internal".into(),
    ];
    for host in &allowed {
        let r = with_host(port, "/server-status.json", host);
        assert_eq!(r.status, 200, "Host: {host}: {}", r.text());
    }
    for target in [
        "/server-status.json",
        "/metrics",
        "/server-status?auto",
        "/",
        "/-/reload",
    ] {
        for host in [
            "evil.example",
            &format!("attacker.example:{port}"),
            "localhost.evil.example",
        ] {
            let r = with_host(port, target, host);
            assert_eq!(r.status, 421, "{target} Host: {host}: {}", r.text());
            assert!(r.text().contains("--status-host"), "{}", r.text());
            assert!(!r.text().contains("flora_"), "{}", r.text());
        }
    }
    let r = raw_get(port, "HTTP/1.0", "/metrics", &[]);
    assert_eq!(r.status, 200, "HTTP/1.0 without Host: {}", r.text());
    let r = raw_get(port, "HTTP/1.1", "/metrics", &[]);
    assert_eq!(r.status, 400, "HTTP/1.1 without Host: {}", r.text());
    let r = raw_get(
        port,
        "HTTP/1.1",
        "/metrics",
        &["Host: localhost", "Host: evil.example"],
    );
    assert_eq!(r.status, 400, "two Host headers: {}", r.text());
}

#[test]
fn non_loopback_status_server_answers_any_host_name() {
    let dir = TestDir::new("host-open");
    let cluster = dir.start_with(
        support::free_port(),
        &["--workers", "1", "--status-addr", "0.0.0.0:0"],
        &[],
    );
    cluster.wait_ready(1);
    let port = status_server::status_port(&cluster);
    let r = with_host(port, "/metrics", &format!("web-7.prod.example:{port}"));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_bad_status_host_is_a_usage_error() {
    let dir = TestDir::new("host-bad");
    let (status, stderr) = dir
        .master(support::free_port())
        .args(&["--status-host", "metrics.internal:9337"])
        .run_to_exit(REFUSE_TIMEOUT);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("status_hosts") && stderr.contains("no port"),
        "{stderr}"
    );
}
