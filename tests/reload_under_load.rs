//! Reloads under load lose nothing: keep-alive clients hammer a 2-worker cluster while it is
//! reloaded 5 times; every request gets a 200 and no connection fails. A correctness test: it
//! counts, it does not time.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{wait_until, Http, TestDir, START_TIMEOUT};

/// Client connections (each a thread with one keep-alive connection at a time).
const CLIENTS: usize = 8;
/// Reloads during the run.
const RELOADS: usize = 5;
/// Upper bound on requests per client, whatever happens.
const MAX_PER_CLIENT: u64 = 200_000;
/// Upper bound on the whole run.
const MAX_RUN: Duration = Duration::from_secs(90);

#[test]
fn five_reloads_under_load_lose_no_request() {
    let dir = TestDir::new("reload-load");
    let port = support::free_port();
    let cluster = dir.start(port, 2, &[]);
    cluster.wait_ready(2);

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let reconnects = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, answered, reconnects, failures) = (
                stop.clone(),
                answered.clone(),
                reconnects.clone(),
                failures.clone(),
            );
            std::thread::spawn(move || {
                let mut conn = match Http::connect(port) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        failures.lock().unwrap().push(format!("connect: {e}"));
                        None
                    }
                };
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed)
                    && sent < MAX_PER_CLIENT
                    && started.elapsed() < MAX_RUN
                {
                    let Some(c) = conn.as_mut() else { break };
                    sent += 1;
                    match c.get("/") {
                        Ok(r) if r.status == 200 && r.text() == "Hello World\n" => {
                            answered.fetch_add(1, Ordering::Relaxed);
                            if r.header("connection") == Some("close") {
                                // The server asked us to go: a clean hand-over, not a failure.
                                reconnects.fetch_add(1, Ordering::Relaxed);
                                conn = Http::connect(port)
                                    .map_err(|e| {
                                        failures.lock().unwrap().push(format!("reconnect: {e}"))
                                    })
                                    .ok();
                            }
                        }
                        Ok(r) => failures.lock().unwrap().push(format!(
                            "status {} body {:?}",
                            r.status,
                            r.text()
                        )),
                        Err(e) => {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("request {sent}: {e}"));
                            conn = Http::connect(port).ok();
                        }
                    }
                }
            })
        })
        .collect();

    // Let the load run, then reload five times, each waiting for its outcome.
    wait_until(START_TIMEOUT, "load running", || {
        answered.load(Ordering::Relaxed) > 500
    });
    let mut outcomes = Vec::new();
    for _ in 0..RELOADS {
        let before = answered.load(Ordering::Relaxed);
        let out = dir.ctl(&["reload"]);
        outcomes.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        assert!(
            out.status.success(),
            "reload failed: {outcomes:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Traffic flows between reloads (the new generation serves).
        wait_until(START_TIMEOUT, "requests after a reload", || {
            answered.load(Ordering::Relaxed) > before + 300
        });
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    let total = answered.load(Ordering::Relaxed);
    eprintln!(
        "{total} requests answered, {} hand-overs by Connection: close, 0 expected failures, reloads: {outcomes:?}",
        reconnects.load(Ordering::Relaxed)
    );
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert_eq!(cluster.snapshot().generation, 1 + RELOADS as u64);
    assert!(
        reconnects.load(Ordering::Relaxed) > 0,
        "old workers handed their connections over"
    );
    // Every answered request is in the scoreboard (finished requests are counted a moment later).
    wait_until(
        START_TIMEOUT,
        "scoreboard total equals answered requests",
        || cluster.snapshot().totals.counters.requests_total == total,
    );
}
