//! The status server answers bad requests with the right errors (404, 405 + Allow, 400/431 or
//! a close), HEAD without a body, routes on the path only, and keeps serving while broken,
//! oversized or stalled clients are connected.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use support::status_server::TEXT_CONTENT_TYPE;
use support::{http, status_server};
use support::{Response, TestDir};

/// Stalled clients held open while others are served (the status server must not serve one
/// connection at a time).
const SLOWLORIS_CLIENTS: usize = 8;
/// Requests answered while the stalled clients are held.
const REQUESTS_WHILE_STALLED: usize = 10;
/// Size of the oversized header value.
const BIG_HEADER: usize = 100 * 1024;

fn normalized(ct: &str) -> String {
    ct.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

fn req(port: u16, method: &str, target: &str) -> Response {
    http::request(port, method, target, &[]).unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

/// The server still answers `GET /metrics` (after `after`).
fn assert_still_serving(port: u16, after: &str) {
    let r = http::request(port, "GET", "/metrics", &[])
        .unwrap_or_else(|e| panic!("GET /metrics after {after}: {e}"));
    assert_eq!(r.status, 200, "GET /metrics after {after}: {}", r.text());
}

/// What a bad request got: a status, or the connection closed without one.
#[derive(Debug)]
enum Outcome {
    Status(u16, String),
    Closed(String),
}

/// Sends `bytes` on a new connection and classifies the answer; a connection left open with
/// no answer until the read timeout fails the test.
fn send_raw(port: u16, bytes: &[u8]) -> Outcome {
    let mut s = http::connect(port).expect("connect to the status server");
    if let Err(e) = s.write_all(bytes) {
        // The server may reset the connection while the request is still being written.
        return Outcome::Closed(format!("write: {e}"));
    }
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) if out.is_empty() => Outcome::Closed("EOF without a response".into()),
        Ok(_) => match http::parse_response(&out, true) {
            Ok(r) => Outcome::Status(r.status, String::from_utf8_lossy(&out).into_owned()),
            Err(e) => panic!(
                "not an HTTP response ({e}): {:?}",
                String::from_utf8_lossy(&out)
            ),
        },
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("no answer and no close within the read timeout ({e}); got {out:?}")
        }
        Err(e) => Outcome::Closed(format!("read: {e}")),
    }
}

fn check_routing(port: u16) {
    for target in ["/nope", "/metricsx", "/nope?metrics", "/server-statusx"] {
        let r = req(port, "GET", target);
        assert_eq!(r.status, 404, "GET {target}: {}", r.text());
    }
    let r = req(port, "GET", "/metrics?x=1");
    assert_eq!(r.status, 200, "GET /metrics?x=1: {}", r.text());
    let ct = r.header("content-type").unwrap_or("<none>");
    assert_eq!(
        normalized(ct),
        normalized(TEXT_CONTENT_TYPE),
        "/metrics?x=1"
    );
    assert!(
        r.text().contains("flora_http_requests_total"),
        "{}",
        r.text()
    );
}

fn check_methods(port: u16) {
    for (method, target) in [
        ("POST", "/metrics"),
        ("PUT", "/metrics"),
        ("DELETE", "/server-status.json"),
        ("POST", "/server-status?auto"),
    ] {
        let r = req(port, method, target);
        assert_eq!(r.status, 405, "{method} {target}: {}", r.text());
        let allow = r
            .header("allow")
            .unwrap_or_else(|| panic!("{method} {target}: no Allow"));
        let allowed: Vec<String> = allow.split(',').map(|m| m.trim().to_uppercase()).collect();
        assert!(
            allowed.contains(&"GET".into()) && allowed.contains(&"HEAD".into()),
            "{method} {target}: Allow: {allow}"
        );
    }
}

fn check_head(port: u16) {
    let get = req(port, "GET", "/metrics");
    let head = req(port, "HEAD", "/metrics");
    assert_eq!(head.status, 200, "HEAD /metrics");
    assert!(
        head.body.is_empty(),
        "HEAD /metrics sent a body of {} bytes: {:?}",
        head.body.len(),
        head.text()
    );
    assert_eq!(
        head.header("content-type"),
        get.header("content-type"),
        "HEAD vs GET type"
    );
}

fn check_garbage(port: u16) {
    match send_raw(port, b"GARBAGE\r\n\r\n") {
        Outcome::Status(400, _) | Outcome::Closed(_) => {}
        Outcome::Status(code, raw) => {
            panic!("GARBAGE answered {code}, want 400 or a close:\n{raw}")
        }
    }
    assert_still_serving(port, "a malformed request line");
}

fn check_big_header(port: u16) {
    let mut bytes = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ".to_vec();
    bytes.resize(bytes.len() + BIG_HEADER, b'a');
    bytes.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    match send_raw(port, &bytes) {
        Outcome::Status(431 | 400, _) => {}
        Outcome::Closed(how) => eprintln!("big header: connection closed ({how})"),
        Outcome::Status(code, raw) => {
            let head: String = raw.lines().take(8).collect::<Vec<_>>().join("\n");
            panic!("a {BIG_HEADER}-byte header answered {code}, want 431, 400 or a close:\n{head}")
        }
    }
    assert_still_serving(port, "an oversized header");
}

fn check_slowloris(port: u16) {
    let partial: [&[u8]; 3] = [b"GET /metr", b"GET /metrics HTTP/1.1\r\nHost: x\r\n", b""];
    let stalled: Vec<TcpStream> = (0..SLOWLORIS_CLIENTS)
        .map(|i| {
            let mut s = http::connect(port).expect("connect a stalled client");
            s.write_all(partial[i % partial.len()])
                .expect("partial request");
            s
        })
        .collect();
    // Every request must be answered within the socket read timeout while they stall.
    for i in 0..REQUESTS_WHILE_STALLED {
        let r = http::request(port, "GET", "/metrics", &[]).unwrap_or_else(|e| {
            panic!("GET /metrics #{i} while {SLOWLORIS_CLIENTS} clients stall: {e}")
        });
        assert_eq!(r.status, 200, "GET /metrics #{i} while clients stall");
    }
    drop(stalled);
    assert_still_serving(port, "stalled clients went away");
}

/// A one-worker cluster and its status port (the cluster is dropped before its dir).
struct Fixture {
    cluster: support::Cluster,
    _dir: TestDir,
    port: u16,
}

fn start(tag: &str) -> Fixture {
    let dir = TestDir::new(tag);
    let cluster = dir.start(support::free_port(), 1, &[]);
    cluster.wait_ready(1);
    let port = status_server::status_port(&cluster);
    Fixture {
        cluster,
        _dir: dir,
        port,
    }
}

#[test]
fn unknown_paths_are_404_and_query_strings_do_not_change_routing() {
    let f = start("exp-http-route");
    check_routing(f.port);
}

#[test]
fn other_methods_are_405_with_allow_and_head_has_no_body() {
    let f = start("exp-http-method");
    check_methods(f.port);
    check_head(f.port);
}

#[test]
fn malformed_and_oversized_requests_are_refused_and_serving_goes_on() {
    let f = start("exp-http-bad");
    check_garbage(f.port);
    check_big_header(f.port);
    f.cluster.wait_ready(1);
}

#[test]
fn stalled_clients_do_not_block_others() {
    let f = start("exp-http-slow");
    check_slowloris(f.port);
    f.cluster.wait_ready(1);
}
