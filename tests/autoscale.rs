//! Autoscaling with real processes: `--workers-min 2 --workers-max 5 --scale-down-after 3`.
//! Many keep-alive clients (as `wrk` runs them) repeating a slow request grow the cluster
//! from 2 to 5, although their connections stay with the first two workers; while that load goes on no
//! scale event happens; once it stops the cluster shrinks back to 2, and stays there while
//! idle. A steady load between the thresholds (2 requests in flight on 3 workers: under the
//! 3/4 per worker that adds one, over the 1 that removes one) causes no event either. A real
//! Prometheus scrapes the master all along: `flora_scale_events_total` is
//! exact (3 up for busy, 3 down for idle) and never went down (`resets()` = 0).

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::exposition::Exposition;
use support::status_server::{scrape, status_port};
use support::tools::PrometheusServer;
use support::{hold_for, poll, wait_until, Cluster, Http, TestDir};

/// Concurrent keep-alive clients of the load (far more requests in flight than 5 workers).
const CLIENTS: usize = 24;
/// The slow request each client repeats.
const SLOW_PATH: &str = "/slow?ms=150";
/// Longest wait for the cluster to grow to its maximum or shrink to its minimum.
const STEP_TIMEOUT: Duration = Duration::from_secs(40);
/// Longest wait for Prometheus' first scrape (target updates are batched every 5 s).
const SCRAPED_TIMEOUT: Duration = Duration::from_secs(40);
/// Longest wait for Prometheus to have scraped the final values.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a steady phase is watched: more than twice `--scale-down-after`.
const STEADY_WINDOW: Duration = Duration::from_secs(7);
/// Scrape job name.
const JOB: &str = "flora";
const FAMILY: &str = "flora_scale_events_total";

/// Keep-alive clients repeating a slow request until stopped (a new connection only after
/// an error).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok) = (stop.clone(), ok.clone());
                std::thread::spawn(move || {
                    let mut conn = None;
                    while !stop.load(Ordering::Relaxed) {
                        let c = match conn.take() {
                            Some(c) => Ok(c),
                            None => Http::connect(port),
                        };
                        let answer = c.and_then(|mut c| c.get(SLOW_PATH).map(|r| (c, r)));
                        match answer {
                            Ok((c, r)) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                conn = Some(c);
                            }
                            // A refused or reset connection: a new one after a pause.
                            _ => std::thread::sleep(Duration::from_millis(20)),
                        }
                    }
                })
            })
            .collect();
        Self { stop, ok, threads }
    }

    /// Stops the clients (each finishes its request, bounded by the client's I/O timeout);
    /// returns the requests answered.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("a load thread");
        }
        self.ok.load(Ordering::Relaxed)
    }
}

fn metrics(cluster: &Cluster) -> Exposition {
    scrape(status_port(cluster), None).expo
}

/// `{direction/reason: count}` of a scrape.
fn events(expo: &Exposition) -> BTreeMap<String, f64> {
    expo.named(FAMILY)
        .map(|s| {
            let key = format!("{}/{}", s.labels["direction"], s.labels["reason"]);
            (key, s.value)
        })
        .collect()
}

/// The same from Prometheus.
fn prom_events(prom: &PrometheusServer) -> BTreeMap<String, f64> {
    prom.query(FAMILY)
        .iter()
        .map(|r| {
            let m = &r["metric"];
            let key = format!(
                "{}/{}",
                m["direction"].as_str().unwrap_or(""),
                m["reason"].as_str().unwrap_or("")
            );
            let value = r["value"][1]
                .as_str()
                .and_then(support::exposition::parse_value)
                .unwrap_or(f64::NAN);
            (key, value)
        })
        .collect()
}

fn target(cluster: &Cluster) -> u64 {
    cluster.snapshot().target_workers
}

/// Watches `window`: the target stays `n` and no scale event is counted (each scrape's
/// counts equal `before`).
fn steady(cluster: &Cluster, n: u64, before: &BTreeMap<String, f64>, what: &str) {
    hold_for(STEADY_WINDOW, || {
        assert_eq!(target(cluster), n, "{what}: the target moved");
        let now = events(&metrics(cluster));
        assert_eq!(&now, before, "{what}: a scale event happened");
    });
}

#[test]
fn load_grows_the_cluster_to_max_and_idleness_shrinks_it_back() {
    let dir = TestDir::new("autoscale");
    let port = support::free_port();
    let cluster = dir
        .master(port)
        .args(&[
            "--workers-min",
            "2",
            "--workers-max",
            "5",
            "--scale-down-after",
            "3",
        ])
        .demo(&[])
        .start();
    cluster.wait_ready(2);
    assert_eq!(target(&cluster), 2, "starts at --workers-min");
    let zero = events(&metrics(&cluster));
    assert_eq!(
        zero.len(),
        5,
        "every direction/reason pair from the start: {zero:?}"
    );
    assert!(zero.values().all(|v| *v == 0.0), "{zero:?}");

    let prom = PrometheusServer::start(JOB, &format!("127.0.0.1:{}", status_port(&cluster)));
    wait_until(SCRAPED_TIMEOUT, "Prometheus' first scrape", || {
        prom.query_scalar(&format!("up{{job=\"{JOB}\"}}")) == Some(1.0)
    });

    // Load: grows to the maximum, one worker at a time.
    let load = Load::start(port, CLIENTS);
    let began = Instant::now();
    wait_until(STEP_TIMEOUT, "the target to reach 5", || {
        target(&cluster) == 5
    });
    let grew_in = began.elapsed();
    cluster.wait_ready(5);
    let grown = events(&metrics(&cluster));
    assert_eq!(grown.get("up/busy"), Some(&3.0), "{grown:?}");
    assert_eq!(grown.values().sum::<f64>(), 3.0, "only 3 ups: {grown:?}");
    // The same load goes on: nothing moves.
    steady(&cluster, 5, &grown, "steady load");
    let answered = load.stop();
    assert!(answered > 0, "the load was answered");
    let idle_from = Instant::now();

    // Idle: back to the minimum, one worker per idle window.
    wait_until(STEP_TIMEOUT, "the target to shrink to 2", || {
        target(&cluster) == 2
    });
    let shrank_in = idle_from.elapsed();
    let shrunk = events(&metrics(&cluster));
    assert_eq!(shrunk.get("down/idle"), Some(&3.0), "{shrunk:?}");
    assert_eq!(shrunk.values().sum::<f64>(), 6.0, "{shrunk:?}");
    steady(&cluster, 2, &shrunk, "idle at the minimum");

    // Prometheus saw exactly these counts, never going down.
    poll(
        CATCH_UP_TIMEOUT,
        "Prometheus to scrape the final counts",
        || {
            let got = prom_events(&prom);
            if got == shrunk {
                Ok(())
            } else {
                Err(format!("/metrics {shrunk:?}, Prometheus {got:?}"))
            }
        },
    );
    let expr = format!("sum(resets({FAMILY}[5m]))");
    assert_eq!(
        prom.query_scalar(&expr),
        Some(0.0),
        "{expr}; targets {}",
        prom.targets()
    );
    let peak = prom.query_scalar("max_over_time(flora_target_workers[5m])");
    assert_eq!(peak, Some(5.0), "flora_target_workers followed the target");
    // Measured, not asserted (speed belongs in a benchmark).
    eprintln!(
        "2 -> 5 in {grew_in:.1?} under load, 5 -> 2 in {shrank_in:.1?} idle; \
         {answered} requests answered; events {shrunk:?}"
    );
}

#[test]
fn a_steady_load_between_the_thresholds_causes_no_scale_event() {
    let dir = TestDir::new("autoscale-steady");
    let port = support::free_port();
    let cluster = dir
        .master(port)
        .args(&[
            "--workers-min",
            "2",
            "--workers-max",
            "5",
            "--workers",
            "3",
            "--scale-down-after",
            "3",
        ])
        .demo(&[])
        .start();
    cluster.wait_ready(3);
    let before = events(&metrics(&cluster));
    // Two clients, each with a request in flight nearly all the time.
    let load = Load::start(port, 2);
    wait_until(STEP_TIMEOUT, "the load to be answered", || {
        load.ok.load(Ordering::Relaxed) >= 10
    });
    steady(&cluster, 3, &before, "2 requests in flight on 3 workers");
    let answered = load.stop();
    eprintln!("steady phase: {answered} requests answered, no scale event");
}
