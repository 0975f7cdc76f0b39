//! The serving path's guards and protocols: a client sending its headers slower than the
//! header-read limit is cut (`FLORA_HEADER_READ_TIMEOUT_MS`, here 600 ms), as are a silent
//! connection and an idle keep-alive one, while prompt requests are served; HTTP/2 with prior
//! knowledge (h2c) and HTTP/1 requests whose first bytes look like the HTTP/2 preface (`P…`)
//! are both served.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use flora_cluster::worker::HEADER_READ_TIMEOUT_ENV;
use support::{Cluster, TestDir};

/// The header-read limit given to the workers.
const LIMIT_MS: &str = "600";
/// Pause between two header bytes of the slow client: 40 bytes take 6 s, ten times the limit.
const SLOW_STEP: Duration = Duration::from_millis(150);
/// Header bytes the slow client has to send.
const SLOW_BYTES: &[u8] = b"X-Slowloris: aaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
/// Longest wait for the worker to close a connection it should cut.
const CUT_TIMEOUT: Duration = Duration::from_secs(10);

fn start(dir: &TestDir) -> Cluster {
    let cluster = dir
        .master(support::free_port())
        .args(&["--workers", "1"])
        .demo(&[])
        .env(HEADER_READ_TIMEOUT_ENV, LIMIT_MS)
        .start();
    cluster.wait_ready(1);
    cluster
}

/// Reads until the peer closes (true) or `timeout` passes (false); fails on a response.
fn closed_within(s: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 512];
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(!text.starts_with("HTTP/1.1 200"), "answered: {text}");
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true, // reset
        }
    }
    false
}

#[test]
fn slow_silent_and_idle_clients_are_cut_prompt_ones_served() {
    let dir = TestDir::new("serve-guard");
    let cluster = start(&dir);
    let port = cluster.port;

    // Prompt: served, also on a second request of the same keep-alive connection.
    let mut c = support::Http::connect(port).expect("connect");
    assert_eq!(c.get("/").expect("first").status, 200);
    assert_eq!(c.get("/").expect("second").status, 200);

    // Slowloris: one header byte every SLOW_STEP; cut long before the headers are complete.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .expect("request line");
    let mut sent = 0;
    let mut cut = false;
    for b in SLOW_BYTES {
        if slow.write_all(&[*b]).is_err() || closed_within(&mut slow, SLOW_STEP) {
            cut = true;
            break;
        }
        sent += 1;
    }
    assert!(
        cut,
        "a client sending {sent} header bytes over {:?} was not cut",
        SLOW_STEP * SLOW_BYTES.len() as u32
    );
    assert!(
        sent < SLOW_BYTES.len(),
        "cut only after the headers were complete"
    );

    // Silent: connects, sends nothing.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    assert!(
        closed_within(&mut silent, CUT_TIMEOUT),
        "silent connection kept"
    );

    // Idle keep-alive: answered once, then sends nothing.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).expect("response");
    assert_eq!(&head, b"HTTP/1.1 200");
    assert!(
        closed_within(&mut idle, CUT_TIMEOUT),
        "idle keep-alive kept"
    );

    // The worker still serves.
    assert_eq!(support::get(port, "/").expect("after").status, 200);
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
        ])
        .args(args)
        .output()
        .expect("run curl");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn h2c_and_http1_requests_that_start_like_the_preface_are_served() {
    let dir = TestDir::new("serve-protocols");
    let cluster = start(&dir);
    let url = format!("http://127.0.0.1:{}/", cluster.port);
    let (out, err) = curl(&["--http2-prior-knowledge", &url]);
    assert_eq!(out, "200 2", "h2c: {err}");
    let (out, err) = curl(&["--http1.1", &url]);
    assert_eq!(out, "200 1.1", "{err}");
    for method in ["POST", "PUT", "PATCH"] {
        let (out, err) = curl(&["--http1.1", "-X", method, "--data", "x", &url]);
        assert!(
            out.ends_with(" 1.1") && !out.starts_with('0'),
            "{method}: {out} {err}"
        );
    }
    // A request line that shares the preface's first bytes, then differs.
    let raw = support::http::raw_exchange(cluster.port, b"PRI / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("PRI request");
    assert!(
        raw.starts_with(b"HTTP/1.1 "),
        "an HTTP/1 answer, not a hang"
    );
}
