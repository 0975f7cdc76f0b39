//! `--request-timeout SECS`: a handler still pending after the timeout (an async sleep of
//! 5 s under a 2 s timeout) is answered 503 by its worker — empty body, `content-length: 0`,
//! `Connection: close` on HTTP/1 — and its future is dropped; the answer counts in
//! `flora_request_timeouts_total` and `flora_http_requests_total{code="503"}`. The worker is
//! unharmed (same pid, serves the next request). A handler that finishes in time is not
//! touched, and neither is a streamed body that started before the timeout and runs past it.
//!
//! The workers are this test binary itself (`support::guards`).

mod support;

use std::time::{Duration, Instant};

use support::guards::client::fresh_get;
use support::guards::watch::{metric_sum, metrics};
use support::guards::{worker_entry as guards_worker, GuardCluster, STREAM_CHUNKS};
use support::{wait_until, Http, TestDir};

/// `--request-timeout`.
const TIMEOUT: Duration = Duration::from_secs(2);
/// A handler that outlives the timeout.
const LATE_PATH: &str = "/sleep/5000";
/// How long the late handler would take: an answer before it is the timeout's.
const LATE: Duration = Duration::from_millis(5000);
/// A handler that finishes in time.
const QUICK_PATH: &str = "/sleep/200";
/// A body streamed over 3.5 s (its head comes at once).
const STREAM_PATH: &str = "/stream/3500";
/// The 503 may come a little before the timeout measured here (the worker's clock starts
/// when the handler first returns pending, after our clock started).
const EARLY_SLACK: Duration = Duration::from_millis(100);
/// Longest wait for the counters.
const COUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// The worker side: runs only in the re-started test binary.
#[test]
fn worker_entry() {
    guards_worker();
}

#[test]
fn a_late_handler_gets_a_503_and_is_dropped_while_the_worker_serves_on() {
    let dir = TestDir::new("guards-reqto");
    let port = support::free_port();
    let cluster = GuardCluster::start(
        &dir,
        port,
        &[
            "--workers",
            "1",
            "--request-timeout",
            &TIMEOUT.as_secs().to_string(),
        ],
    );
    let pid = cluster.wait_ready(1)[0];

    let quick = fresh_get(port, QUICK_PATH).expect("quick request").resp;
    assert_eq!((quick.status, quick.text().as_str()), (200, "slept 200 ms"));

    // On a keep-alive connection: the worker must close it itself.
    let mut c = Http::connect(port).expect("connect");
    let sent = Instant::now();
    let late = c.get(LATE_PATH).expect("an answer to the late request");
    let took = sent.elapsed();
    assert_eq!(late.status, 503, "{late:?}");
    assert!(late.body.is_empty(), "{late:?}");
    assert_eq!(late.header("content-length"), Some("0"), "{late:?}");
    assert_eq!(late.header("connection"), Some("close"), "{late:?}");
    assert!(
        took + EARLY_SLACK >= TIMEOUT && took < LATE,
        "the 503 came after {took:?} (timeout {TIMEOUT:?}, handler {LATE:?})"
    );
    assert!(
        c.get("/").is_err(),
        "the connection stayed open after Connection: close"
    );

    // Unharmed: same worker, serving; the late future was dropped, not finished.
    let again = fresh_get(port, "/pid").expect("/pid").resp;
    assert_eq!(again.text(), pid.to_string());
    let stats = fresh_get(port, "/stats").expect("/stats").resp.text();
    assert!(stats.contains("dropped=1"), "/stats: {stats}");

    // A body that started in time runs to its end.
    let started = Instant::now();
    let stream = fresh_get(port, STREAM_PATH).expect("streamed answer").resp;
    assert_eq!(stream.status, 200, "{stream:?}");
    assert_eq!(stream.text(), "chunk\n".repeat(STREAM_CHUNKS as usize));
    assert!(
        started.elapsed() > TIMEOUT,
        "the stream was not longer than the timeout"
    );

    wait_until(COUNT_TIMEOUT, "the timeout counted", || {
        let expo = metrics(&cluster);
        metric_sum(&expo, "flora_request_timeouts_total", &[]) == 1.0
            && metric_sum(&expo, "flora_http_requests_total", &[("code", "503")]) == 1.0
    });
    let stats = fresh_get(port, "/stats").expect("/stats").resp.text();
    assert!(
        stats.contains("dropped=1"),
        "a later request was dropped: {stats}"
    );
    assert_eq!(cluster.snapshot().slots[0].pid, pid, "the worker changed");
}
