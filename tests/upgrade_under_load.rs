//! Five master upgrades in a row under `wrk` keep-alive load (issue 17): each to a fresh copy
//! of the master binary, each exits 0 with a new master pid that the lock file and
//! `status --json` agree on, and the old master is gone. wrk sees no error and no non-2xx,
//! the request total matches wrk's count, a real Prometheus scraping every second never
//! misses a scrape nor sees a counter reset, and the master counts 5 successful upgrades.
//! The upgrade times and wrk's p99 with and without upgrades are printed, not asserted.

mod support;

use std::time::{Duration, Instant};

use support::status_server::status_port;
use support::tools::PrometheusServer;
use support::upgrade::{
    copy_master, lock_pid, marked_pids, ppid, status_master_pid, stop_master, text, upgrade,
    Current, LatencyWrk, Upgraded, MARK_VAR,
};
use support::{pid_alive, wait_for, wait_until, TestDir, START_TIMEOUT};

/// Workers of the cluster.
const WORKERS: usize = 4;
/// Upgrades in the run.
const UPGRADES: usize = 5;
/// Time between two upgrades (and before the first, after the last).
const BETWEEN: Duration = Duration::from_secs(3);
/// wrk's connections (one thread each).
const CONNS: u32 = 8;
/// The baseline run without upgrades.
const BASELINE: Duration = Duration::from_secs(8);
/// wrk's longest run (it is stopped once the upgrades are done).
const WRK_MAX_SECS: u64 = 180;

/// Waits `d` (a pause between steps, not a wait for a condition).
fn pause(d: Duration) {
    let until = Instant::now() + d;
    wait_until(d + Duration::from_secs(5), "pause", || {
        Instant::now() >= until
    });
}

/// The scoreboard's request total once it stopped moving (the last answers are counted a
/// moment after they left).
fn settled_total(cluster: &support::Cluster) -> u64 {
    let mut last = u64::MAX;
    wait_for(START_TIMEOUT, "the request total settles", || {
        let now = cluster.snapshot().totals.counters.requests_total;
        let same = now == last;
        last = now;
        std::thread::sleep(Duration::from_millis(200));
        same.then_some(now)
    })
}

#[test]
fn five_upgrades_under_wrk_lose_nothing_and_prometheus_sees_no_reset() {
    let dir = TestDir::new("up-load");
    let port = support::free_port();
    let cluster = dir
        .master(port)
        .args(&["--workers", &WORKERS.to_string()])
        .env(MARK_VAR, &dir.name)
        .start();
    cluster.wait_ready(WORKERS);
    let first = cluster.pid;
    let current = Current::new(&dir.name, first);
    let prom = PrometheusServer::start("flora", &format!("127.0.0.1:{}", status_port(&cluster)));
    wait_until(Duration::from_secs(30), "first scrape", || {
        prom.query_scalar("up").is_some_and(|v| v == 1.0)
    });
    let copies: Vec<_> = (1..=UPGRADES)
        .map(|i| copy_master(&dir, &format!("flora-cluster-{i}")))
        .collect();

    // The baseline: the same load, no upgrade.
    let wrk = LatencyWrk::start(port, CONNS, WRK_MAX_SECS, dir.scratch("wrk-base"));
    pause(BASELINE);
    let served = || cluster.snapshot().totals.counters.requests_total;
    let base = wrk.stop(served);
    base.report.assert_clean();
    let base_total = settled_total(&cluster);

    // The upgrades, under load for the whole run.
    let started = Instant::now();
    let mut wrk = LatencyWrk::start(port, CONNS, WRK_MAX_SECS, dir.scratch("wrk-up"));
    wait_until(START_TIMEOUT, "wrk's load flowing", || {
        cluster.snapshot().totals.counters.requests_total > base_total + 500
    });
    let mut master = first;
    let mut done = Vec::new();
    for copy in &copies {
        pause(BETWEEN);
        let out = upgrade(&dir, Some(copy));
        assert_eq!(out.status.code(), Some(0), "upgrade: {}", text(&out));
        let up = Upgraded::parse(&String::from_utf8_lossy(&out.stdout));
        eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
        assert_eq!(up.from, master, "{up:?}");
        assert_ne!(up.to, master, "{up:?}");
        assert!(up.exit_ms.is_some(), "the old master still drained: {up:?}");
        assert!(!pid_alive(master), "old master {master} still runs");
        assert_eq!(lock_pid(&dir), up.to, "lock file");
        assert_eq!(status_master_pid(&dir), up.to, "status --json");
        assert!(
            support::proc_cmdline(up.to).contains("run"),
            "{}",
            support::proc_cmdline(up.to)
        );
        assert_eq!(
            std::fs::read_link(format!("/proc/{}/exe", up.to))
                .ok()
                .as_deref(),
            Some(copy.as_path()),
            "the new master runs the copy"
        );
        // Left: the new master and its workers, nothing of the old one.
        wait_until(START_TIMEOUT, "only the new master and its workers", || {
            let pids = marked_pids(&dir.name);
            pids.len() == 1 + WORKERS && pids.iter().all(|p| *p == up.to || ppid(*p) == Some(up.to))
        });
        assert!(wrk.running(), "wrk's run ended during the upgrades");
        master = up.to;
        current.set(master);
        done.push(up);
    }
    pause(BETWEEN);
    let run = wrk.stop(served);
    let elapsed = started.elapsed();

    let times: Vec<String> = done
        .iter()
        .map(|u| format!("{} ms + {} ms", u.ms, u.exit_ms.unwrap_or_default()))
        .collect();
    eprintln!(
        "upgrades (to commit + old master's exit): {times:?}\n\
         wrk p99 without upgrades {:.0} us ({} requests in {BASELINE:?}), \
         with {UPGRADES} upgrades {:.0} us ({} requests in {elapsed:?})",
        base.p99_us, base.report.requests, run.p99_us, run.report.requests
    );
    run.report.assert_clean();

    // Every request is counted once, and only those wrk got answers to (it stopped each
    // connection between two requests).
    let total = settled_total(&cluster);
    let answered = base.report.requests + run.report.requests;
    eprintln!("scoreboard total {total}, wrk answered {answered}");
    assert_eq!(
        total, answered,
        "scoreboard total vs wrk's answered requests"
    );

    // Prometheus: the same total, never a reset, never a failed scrape, 5 upgrades.
    wait_until(Duration::from_secs(15), "a scrape after the run", || {
        prom.query_scalar("sum(flora_http_requests_total)")
            .is_some_and(|v| v as u64 == total)
    });
    let range = format!("{}s", started.elapsed().as_secs() + BASELINE.as_secs() + 30);
    for counter in ["flora_http_requests_total", "flora_connections_total"] {
        let resets = prom.query_scalar(&format!("sum(resets({counter}[{range}]))"));
        assert_eq!(resets, Some(0.0), "{counter} resets seen by Prometheus");
    }
    let up_min = prom.query_scalar(&format!("min_over_time(up[{range}])"));
    assert_eq!(up_min, Some(1.0), "a scrape failed: {}", prom.targets());
    wait_until(
        Duration::from_secs(10),
        "5 successful upgrades counted",
        || {
            prom.query_scalar("flora_master_upgrades_total{outcome=\"success\"}")
                .is_some_and(|v| v == UPGRADES as f64)
        },
    );

    // Stop the last master by pid: nothing of the test is left.
    stop_master(master, &dir.name);
    assert!(marked_pids(&dir.name).is_empty());
}
