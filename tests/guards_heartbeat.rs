//! `--heartbeat-timeout`: a worker whose runtime is blocked by a synchronous call (its only
//! thread in `std::thread::sleep`) is killed after the heartbeat timeout — SIGTERM cannot
//! reach the blocked runtime, so SIGKILL after the shutdown timeout — and its slot respawned
//! within heartbeat + shutdown timeout + a margin, while the other worker serves every
//! request. Before the kill the master saved a record
//! of what the worker was doing: the blocked request's path and infos and its threads from
//! `/proc`, in the JSON, on the status page and in `flora_worker_kills_total`. An idle
//! cluster with heartbeats kills nobody, and its event-loop lag gauge stays small.
//!
//! The workers are this test binary itself (`support::guards`).

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::guards::client::{fresh_get, RateLoop};
use support::guards::watch::{
    has_series, kill_records, metric_sum, metrics, status_json, status_page, worker_doc,
};
use support::guards::{worker_entry as guards_worker, GuardCluster};
use support::{hold_for, pid_alive, wait_for, wait_until, TestDir, START_TIMEOUT};

/// `--heartbeat-timeout`.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
/// `--shutdown-timeout`.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// The request that blocks a worker (longer than the whole test).
const BLOCK_PATH: &str = "/block/60000";
/// Slack over heartbeat + shutdown timeout for the kill on a busy 2-core machine.
const KILL_MARGIN: Duration = Duration::from_secs(5);
/// The earliest the blocked worker may be gone after its block was seen: a heartbeat can
/// have arrived up to a quarter of the timeout before the block, then SIGKILL waits for the
/// shutdown timeout (less a little for how late the block was seen).
const KILL_NOT_BEFORE: Duration = Duration::from_millis(3000);
/// Longest wait for a request to show in the scoreboard or a record in the JSON.
const SHOW_TIMEOUT: Duration = Duration::from_secs(10);
/// Rate of the fresh-connection requests that must all succeed meanwhile.
const LOAD_PER_SEC: u32 = 50;
/// Requests the load must get answered after the replacement is ready.
const AFTER_REPLACED: u64 = 20;
/// How long the idle cluster is watched for a false heartbeat kill.
const IDLE_WATCH: Duration = Duration::from_secs(5);
/// Most event-loop lag an idle worker may show.
const IDLE_LAG_MAX_SECS: f64 = 0.5;

/// The worker side: runs only in the re-started test binary.
#[test]
fn worker_entry() {
    guards_worker();
}

fn secs(d: Duration) -> String {
    d.as_secs().to_string()
}

/// The slot and pid serving `path` with `job=blocker` among its infos, once it shows.
fn wait_blocked(cluster: &GuardCluster, path: &str) -> (usize, u32) {
    wait_for(SHOW_TIMEOUT, "the blocking request in flight", || {
        let snap = cluster.snapshot();
        snap.slots.iter().find_map(|s| {
            let blocking = s
                .connections
                .iter()
                .filter_map(|c| c.request.as_ref())
                .any(|r| {
                    r.path == path && r.infos.iter().any(|(k, v)| k == "job" && v == "blocker")
                });
            blocking.then_some((s.index, s.pid))
        })
    })
}

/// Checks one kill record against the blocked worker.
fn check_record(rec: &Value, slot: usize, pid: u32) {
    assert_eq!(rec["reason"], "heartbeat", "{rec:#}");
    assert_eq!(rec["slot"].as_u64(), Some(slot as u64), "{rec:#}");
    assert_eq!(rec["pid"].as_u64(), Some(u64::from(pid)), "{rec:#}");
    assert!(rec["generation"].as_u64().is_some(), "generation: {rec:#}");
    assert!(
        rec["unix_ms"].as_u64().is_some_and(|t| t > 0),
        "unix_ms: {rec:#}"
    );
    assert!(
        rec["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "detail: {rec:#}"
    );
    let requests = rec["requests"].as_array().expect("kill record requests");
    let blocked = requests
        .iter()
        .find(|r| r["path"] == BLOCK_PATH)
        .unwrap_or_else(|| panic!("the record lacks {BLOCK_PATH}: {rec:#}"));
    assert_eq!(blocked["method"], "GET", "{rec:#}");
    let infos = blocked["infos"].as_array().expect("request infos");
    assert!(
        infos.iter().any(|p| p[0] == "job" && p[1] == "blocker"),
        "the record lacks the info job=blocker: {rec:#}"
    );
    let threads = rec["threads"].as_array().expect("kill record threads");
    assert!(!threads.is_empty(), "no threads in the record: {rec:#}");
    assert!(
        threads
            .iter()
            .any(|t| t["tid"].as_u64() == Some(u64::from(pid))),
        "the main thread (tid = pid) is not in the record: {rec:#}"
    );
    for t in threads {
        for field in ["name", "state", "wchan", "syscall"] {
            assert!(!t[field].is_null(), "thread without {field}: {rec:#}");
        }
    }
}

#[test]
fn a_blocked_worker_is_killed_with_a_record_and_replaced_while_the_other_serves() {
    let dir = TestDir::new("guards-hb");
    let port = support::free_port();
    let cluster = GuardCluster::start(
        &dir,
        port,
        &[
            "--workers",
            "2",
            "--heartbeat-timeout",
            &secs(HEARTBEAT_TIMEOUT),
            "--shutdown-timeout",
            &secs(SHUTDOWN_TIMEOUT),
        ],
    );
    let first = cluster.wait_ready(2);

    let blocker = std::thread::spawn(move || fresh_get(port, BLOCK_PATH));
    let (slot, blocked) = wait_blocked(&cluster, BLOCK_PATH);
    let seen_at = Instant::now();
    let healthy = *first
        .iter()
        .find(|p| **p != blocked)
        .expect("the other worker");
    // Only now: a connection the blocked worker accepted in the same turn would hang.
    let load = RateLoop::start(port, "/pid", LOAD_PER_SEC, Duration::from_secs(60));

    let deadline = HEARTBEAT_TIMEOUT + SHUTDOWN_TIMEOUT + KILL_MARGIN;
    wait_until(
        deadline,
        &format!("the blocked worker {blocked} killed"),
        || !pid_alive(blocked),
    );
    let gone_after = seen_at.elapsed();
    assert!(
        gone_after >= KILL_NOT_BEFORE,
        "the blocked worker was gone {gone_after:?} after its block was seen: killed before \
         the heartbeat timeout, or SIGKILLed without waiting for the shutdown timeout"
    );
    let left = deadline.saturating_sub(seen_at.elapsed());
    let replacement = wait_for(left, "the slot respawned and ready", || {
        let s = cluster.snapshot().slots[slot].clone();
        let ok = s.pid != blocked && s.pid != 0 && pid_alive(s.pid);
        (ok && s.state == flora_cluster::scoreboard::SlotState::Ready).then_some(s.pid)
    });
    let at = load.ok();
    wait_until(START_TIMEOUT, "requests after the replacement", || {
        load.ok() >= at + AFTER_REPLACED
    });
    let seen = load.stop();
    eprintln!(
        "blocked {blocked} (slot {slot}) gone after {gone_after:?}, replaced by {replacement}; \
         load: {} answered, {} connections closed unsent, by pid {:?}",
        seen.ok, seen.unsent, seen.bodies
    );
    assert!(
        seen.failures.is_empty(),
        "requests failed while one worker was blocked: {:?}",
        seen.failures
    );
    let answered_by: Vec<u32> = seen.bodies.keys().filter_map(|b| b.parse().ok()).collect();
    assert!(
        answered_by
            .iter()
            .all(|p| *p == healthy || *p == replacement),
        "answers from {answered_by:?}; expected only {healthy} and {replacement}"
    );
    assert!(
        answered_by.contains(&healthy),
        "the other worker did not serve"
    );
    let blocked_answer = blocker.join().expect("blocker thread");
    assert!(
        blocked_answer.is_err(),
        "the blocked request was answered: {blocked_answer:?}"
    );

    // The kill record, in the JSON.
    let doc = wait_for(SHOW_TIMEOUT, "one kill record in the JSON", || {
        let doc = status_json(&cluster);
        (!kill_records(&doc).is_empty()).then_some(doc)
    });
    let records = kill_records(&doc);
    assert_eq!(records.len(), 1, "kill records: {records:#?}");
    check_record(&records[0], slot, blocked);
    assert_eq!(
        doc["guards"]["kills"]["heartbeat"].as_u64(),
        Some(1),
        "{}",
        doc["guards"]
    );
    let slot_doc = worker_doc(&doc, replacement).expect("the replacement in the JSON");
    assert_eq!(
        slot_doc["last_guard_event"]["reason"], "heartbeat",
        "the slot's last guard event: {slot_doc:#}"
    );
    assert_eq!(slot_doc["last_guard_event"]["kind"], "kill", "{slot_doc:#}");

    // In /metrics, on the status page, in the log.
    let expo = metrics(&cluster);
    let kills = metric_sum(
        &expo,
        "flora_worker_kills_total",
        &[("reason", "heartbeat")],
    );
    assert_eq!(
        kills, 1.0,
        "flora_worker_kills_total{{reason=\"heartbeat\"}}"
    );
    let page = status_page(&cluster);
    assert!(
        page.contains(BLOCK_PATH) && page.contains("heartbeat"),
        "the status page does not show the kill record:\n{page}"
    );
    assert!(
        cluster.stderr().contains("heartbeat"),
        "the master's log does not mention the heartbeat kill:\n{}",
        cluster.stderr()
    );
}

#[test]
fn an_idle_cluster_with_heartbeats_kills_nobody_and_shows_a_small_lag() {
    let dir = TestDir::new("guards-hb-idle");
    let cluster = GuardCluster::start(
        &dir,
        support::free_port(),
        &[
            "--workers",
            "2",
            "--heartbeat-timeout",
            &secs(HEARTBEAT_TIMEOUT),
        ],
    );
    let mut pids = cluster.wait_ready(2);
    pids.sort_unstable();
    // The gauge shows once the first heartbeats arrived.
    wait_until(SHOW_TIMEOUT, "an event-loop lag sample per worker", || {
        metrics(&cluster)
            .named("flora_worker_event_loop_lag_seconds")
            .count()
            >= 2
    });

    hold_for(IDLE_WATCH, || {
        let snap = cluster.snapshot();
        let mut now =
            support::guards::watch::pids_in(&snap, flora_cluster::scoreboard::SlotState::Ready);
        now.sort_unstable();
        assert_eq!(now, pids, "the ready workers changed while idle");
    });

    let expo = metrics(&cluster);
    for reason in ["heartbeat", "shutdown_timeout"] {
        let labels = [("reason", reason)];
        assert!(
            has_series(&expo, "flora_worker_kills_total", &labels),
            "no flora_worker_kills_total{{reason=\"{reason}\"}} series"
        );
        assert_eq!(metric_sum(&expo, "flora_worker_kills_total", &labels), 0.0);
    }
    let lags: Vec<f64> = expo
        .named("flora_worker_event_loop_lag_seconds")
        .map(|s| s.value)
        .collect();
    assert!(
        lags.len() >= 2 && lags.iter().all(|l| (0.0..IDLE_LAG_MAX_SECS).contains(l)),
        "event-loop lag of idle workers: {lags:?}"
    );
    let doc = status_json(&cluster);
    assert_eq!(
        doc["guards"]["kills"]["heartbeat"].as_u64(),
        Some(0),
        "{}",
        doc["guards"]
    );
    assert!(kill_records(&doc).is_empty(), "{}", doc["guards"]);
    for pid in &pids {
        let w = worker_doc(&doc, *pid).expect("worker in the JSON");
        let lag = w["event_loop_lag_seconds"].as_f64();
        assert!(
            lag.is_some_and(|l| (0.0..IDLE_LAG_MAX_SECS).contains(&l)),
            "event_loop_lag_seconds of {pid}: {w:#}"
        );
    }
}
