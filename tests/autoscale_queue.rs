//! Autoscaling on the listen queue: the only worker stops accepting (`SIGSTOP`) while
//! connections keep arriving, so nothing is in flight but the master's listen-queue sampler
//! sees them wait. The autoscaler adds a worker for reason `queue`, the new worker takes the
//! waiting connections, and the queue empties.

mod support;

use std::time::Duration;

use support::backlog::{tcp_connects, Stopped};
use support::exposition::Exposition;
use support::status_server::{scrape, status_port};
use support::{free_port, poll, wait_until, TestDir};

/// Longest wait for the scale-up and for the queue to drain.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn value(expo: &Exposition, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    expo.named(family)
        .find(|s| s.has_labels(labels))
        .map(|s| s.value)
}

#[test]
fn a_waiting_queue_adds_a_worker_that_drains_it() {
    let dir = TestDir::new("autoscale-queue");
    let port = free_port();
    let mut cluster = dir.start_with(
        port,
        &[
            "--workers-min",
            "1",
            "--workers-max",
            "3",
            "--scale-down-after",
            "600",
        ],
        &[],
    );
    let status = status_port(&cluster);
    let listener = format!("127.0.0.1:{port}");
    let pids = cluster.wait_ready(1);
    let stopped = Stopped::all(pids.clone());
    let conns = tcp_connects(port, 20);

    let up = [("direction", "up"), ("reason", "queue")];
    poll(STEP_TIMEOUT, "a scale-up for the queue", || {
        let expo = scrape(status, None).expo;
        let queue = value(&expo, "flora_scale_events_total", &up).unwrap_or(0.0);
        let target = value(&expo, "flora_target_workers", &[]).unwrap_or(0.0);
        if queue >= 1.0 && target >= 2.0 {
            Ok(())
        } else {
            Err(format!("up/queue {queue}, target {target}"))
        }
    });
    // The new worker accepts what waited; the stopped one took nothing.
    wait_until(STEP_TIMEOUT, "the queue drained by the new worker", || {
        let expo = scrape(status, None).expo;
        value(
            &expo,
            "flora_listen_queue_length",
            &[("listener", &listener)],
        ) == Some(0.0)
    });
    let snap = cluster.snapshot();
    assert!(
        snap.slots
            .iter()
            .any(|s| s.pid != 0 && !pids.contains(&s.pid) && s.counters.conns_total > 0),
        "a new worker accepted the waiting connections"
    );
    let expo = scrape(status, None).expo;
    assert_eq!(
        value(&expo, "flora_scale_events_total", &[("reason", "busy")]),
        Some(0.0),
        "nothing was in flight: the queue alone moved the target"
    );
    drop(conns);
    drop(stopped);
    cluster.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        cluster.wait_exit(STEP_TIMEOUT).success(),
        "{}",
        cluster.stderr()
    );
}
