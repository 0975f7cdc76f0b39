//! SIGTERM, SIGINT and SIGQUIT stop the cluster gracefully: exit status 0, every worker gone,
//! in-flight requests finished; a second SIGTERM during the stop forces it.

mod support;

use std::net::TcpStream;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::{wait_until, Cluster, Http, TestDir, EXIT_TIMEOUT};

/// After the master exited, its workers must already be gone; this only absorbs /proc lag.
const WORKERS_GONE_TIMEOUT: Duration = Duration::from_secs(3);

/// Starts 2 workers, checks they serve, stops the master with `sig` and checks the outcome.
fn stops_gracefully_on(sig: Signal, tag: &str) {
    let dir = TestDir::new(tag);
    let mut cluster = dir.start(support::free_port(), 2, &[]);
    let pids = cluster.wait_ready(2);
    assert_eq!(support::get(cluster.port, "/").expect("GET /").status, 200);

    cluster.signal(sig);
    let status = cluster.wait_exit(EXIT_TIMEOUT);
    assert!(
        status.success(),
        "master exit after {sig}: {status:?}\n{}",
        cluster.stderr()
    );
    Cluster::wait_pids_gone(&pids, WORKERS_GONE_TIMEOUT);
    // Nobody holds the listening socket any more.
    assert!(
        TcpStream::connect(cluster.addr()).is_err(),
        "port {} still accepts connections after the stop",
        cluster.port
    );
}

#[test]
fn sigterm_stops_gracefully() {
    stops_gracefully_on(Signal::SIGTERM, "sigterm");
}

#[test]
fn sigint_stops_gracefully() {
    stops_gracefully_on(Signal::SIGINT, "sigint");
}

#[test]
fn sigquit_stops_gracefully() {
    stops_gracefully_on(Signal::SIGQUIT, "sigquit");
}

#[test]
fn sigterm_removes_segment_and_keeps_lock() {
    let dir = TestDir::new("sigterm-files");
    let mut cluster = dir.start(support::free_port(), 1, &[]);
    cluster.wait_ready(1);
    assert!(dir.segment_path().exists(), "no segment while running");
    assert!(dir.lock_path().exists(), "no lock file while running");

    cluster.signal(Signal::SIGTERM);
    let status = cluster.wait_exit(EXIT_TIMEOUT);
    assert!(status.success(), "master exit: {status:?}");
    assert!(
        !dir.segment_path().exists(),
        "segment left behind after a clean stop"
    );
    // The lock file is kept: removing it before the lock is released would let two masters
    // each lock a different file of the same name.
    assert!(
        dir.lock_path().exists(),
        "the lock file was removed at a clean stop"
    );
}

#[test]
fn sigterm_lets_in_flight_request_finish() {
    let dir = TestDir::new("sigterm-drain");
    let mut cluster = dir.start(support::free_port(), 2, &[]);
    let pids = cluster.wait_ready(2);
    let mut slow = slow_request_in_flight(&cluster, 1500);

    cluster.signal(Signal::SIGTERM);
    let r = slow
        .read_response()
        .expect("the in-flight request was cut by the stop");
    assert_eq!(r.status, 200);
    let status = cluster.wait_exit(EXIT_TIMEOUT);
    assert!(status.success(), "master exit: {status:?}");
    Cluster::wait_pids_gone(&pids, WORKERS_GONE_TIMEOUT);
}

#[test]
fn second_sigterm_forces_the_stop() {
    let dir = TestDir::new("sigterm-force");
    // The drain could last 60 s and the request 50 s: only the second SIGTERM ends it sooner.
    let mut cluster = dir.start_with(
        support::free_port(),
        &["--workers", "2", "--shutdown-timeout", "60"],
        &[],
    );
    let pids = cluster.wait_ready(2);
    let slow = slow_request_in_flight(&cluster, 50000);

    cluster.signal(Signal::SIGTERM);
    // The stop is under way once a worker drains or the idle one has exited.
    wait_until(
        Duration::from_secs(10),
        "the graceful stop to begin",
        || {
            let snap = cluster.snapshot();
            snap.slots
                .iter()
                .any(|s| s.state == flora_cluster::scoreboard::SlotState::Draining)
                || pids.iter().any(|p| !support::pid_alive(*p))
        },
    );
    assert!(
        cluster.try_exit().is_none(),
        "master exited before the slow request ended"
    );
    cluster.signal(Signal::SIGTERM);
    let status = cluster.wait_exit(Duration::from_secs(10));
    eprintln!("forced stop exit status: {status:?}");
    Cluster::wait_pids_gone(&pids, WORKERS_GONE_TIMEOUT);
    drop(slow);
}

/// Sends `/slow?ms=MS` on a new connection and waits until the scoreboard shows it in flight.
fn slow_request_in_flight(cluster: &Cluster, ms: u64) -> Http {
    let mut slow = Http::connect(cluster.port).expect("connect");
    slow.send_get(&format!("/slow?ms={ms}"))
        .expect("send /slow");
    wait_until(
        Duration::from_secs(10),
        "the slow request to be in flight",
        || {
            cluster
                .snapshot()
                .slots
                .iter()
                .any(|s| s.counters.requests_active > 0)
        },
    );
    slow
}
