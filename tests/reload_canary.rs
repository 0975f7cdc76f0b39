//! Canary reloads (`flora-cluster reload --canary K --canary-secs S`, 2 workers, 1 canary)
//! under keep-alive `wrk` load plus clients that open a connection per request (a canary
//! only gets new connections: wrk's keep-alive ones stay with the old workers): a release whose `/` answers 500 on every 4th request is
//! rolled back with the figures in the outcome (and the status JSON), the old workers never
//! stop; a good release is promoted and serves every slot. No connection fails in either;
//! the cluster's counters never go down while it happens. Bad canary flags are refused.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flora_cluster::canary::Verdict;
use flora_cluster::control::{self, Outcome, Reply, Request};
use flora_cluster::scoreboard::SlotState;
use support::guards::client::Wrk;
use support::status_server::status_port;
use support::{get, wait_until, Cluster, TestDir, START_TIMEOUT};

const WORKERS: usize = 2;
/// wrk's run if nobody stops it (it is stopped once the reload settled).
const WRK_MAX_SECS: u64 = 120;
/// The canary's window.
const SECS: f64 = 2.0;
/// The whole reload: the window, then a rolling promotion with drains.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(90);
/// Pacing of the counter sampler.
const SAMPLE_EVERY: Duration = Duration::from_millis(5);

/// Threads that each `GET /` on a new connection in a loop until stopped.
struct Churn {
    stop: Arc<AtomicBool>,
    /// Answers, 5xx answers, failures (no answer).
    counts: Arc<[AtomicU64; 3]>,
    threads: Vec<JoinHandle<()>>,
}

impl Churn {
    fn start(port: u16, threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Arc<[AtomicU64; 3]> = Arc::default();
        let threads = (0..threads)
            .map(|_| {
                let (stop, counts) = (stop.clone(), counts.clone());
                std::thread::spawn(move || {
                    let begun = Instant::now();
                    while !stop.load(Ordering::Relaxed) && begun.elapsed() < RELOAD_TIMEOUT * 2 {
                        match get(port, "/") {
                            Ok(r) => {
                                counts[0].fetch_add(1, Ordering::Relaxed);
                                if r.status >= 500 {
                                    counts[1].fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(_) => drop(counts[2].fetch_add(1, Ordering::Relaxed)),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            counts,
            threads,
        }
    }

    /// Stops the threads; returns (answers, 5xx, failures).
    fn stop(mut self) -> (u64, u64, u64) {
        self.halt();
        let c = |i: usize| self.counts[i].load(Ordering::Relaxed);
        (c(0), c(1), c(2))
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Slots with a live worker of `generation`.
fn live_of(cluster: &Cluster, generation: u64) -> usize {
    let live = |s: &&flora_cluster::scoreboard::SlotSnapshot| {
        s.pid != 0 && s.generation == generation && s.state != SlotState::Dead
    };
    cluster.snapshot().slots.iter().filter(live).count()
}

/// Runs `call` on a thread while sampling the scoreboard: the totals (requests, 5xx) and
/// every slot's request count never go down. Returns its result and the samples taken.
fn sampling<T: Send>(cluster: &Cluster, call: impl FnOnce() -> T + Send) -> (T, usize) {
    std::thread::scope(|s| {
        let job = s.spawn(call);
        let (mut samples, mut last) = (0, cluster.snapshot());
        let begun = Instant::now();
        while !job.is_finished() && begun.elapsed() < RELOAD_TIMEOUT {
            let snap = cluster.snapshot();
            let (a, b) = (&last.totals.counters, &snap.totals.counters);
            assert!(b.requests_total >= a.requests_total, "requests went down");
            assert!(b.status[4] >= a.status[4], "5xx went down");
            for (x, y) in last.slots.iter().zip(&snap.slots) {
                let (p, n) = (x.counters.requests_total, y.counters.requests_total);
                assert!(n >= p, "slot {} requests went down: {p} -> {n}", y.index);
            }
            last = snap;
            samples += 1;
            if samples % 20 == 0 && !WINDOW_SEEN.with(|w| w.get()) {
                let doc = status_json(cluster);
                let window = &doc["reloads"]["canary_window"];
                WINDOW_SEEN.with(|w| w.set(window["new"]["generation"] == 2));
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
        (job.join().expect("reload thread"), samples)
    })
}

thread_local! {
    /// Whether the sampler saw a canary window in the status JSON (this test thread's).
    static WINDOW_SEEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn status_json(cluster: &Cluster) -> serde_json::Value {
    let text = get(status_port(cluster), "/server-status.json")
        .expect("status JSON")
        .text();
    serde_json::from_str(&text).expect("JSON")
}

/// Waits until wrk's requests reached the cluster.
fn wait_traffic(cluster: &Cluster) {
    let before = cluster.snapshot().totals.counters.requests_total;
    wait_until(START_TIMEOUT, "load on the cluster", || {
        cluster.snapshot().totals.counters.requests_total > before + 100
    });
}

#[test]
fn a_release_answering_500s_is_rolled_back_with_its_figures() {
    let dir = TestDir::new("canary-bad");
    let port = support::free_port();
    let v1 = dir.demo_script("worker.sh", "", "--body v1");
    let cluster = dir.start_program(port, &["--workers", "2"], &[v1.to_str().unwrap()]);
    let old = cluster.wait_ready(WORKERS);
    dir.demo_script("worker.sh", "", "--body v2 --error-every 4");
    let mut wrk = Wrk::start(port, "/", 2, 8, WRK_MAX_SECS);
    let churn = Churn::start(port, 2);
    wait_traffic(&cluster);
    // The library's way: a canary request on the control socket.
    let socket = control::socket_path(&dir.runtime_dir(), &dir.name);
    let req = Request::Canary {
        workers: 1,
        secs: SECS,
        max_error_ratio: Some(0.05),
        max_p99_ratio: None,
        min_requests: None,
    };
    let (reply, samples) = sampling(&cluster, || {
        control::call(&socket, &req, RELOAD_TIMEOUT).expect("a reply")
    });
    // While observed, the status JSON showed the canary's figures so far.
    let seen = WINDOW_SEEN.with(|w| w.get());
    assert!(
        seen,
        "no canary_window in the status JSON during the observation"
    );
    let Reply {
        ok: true,
        reload: Some(outcome),
        ..
    } = reply
    else {
        panic!("no reload outcome: {reply:?}");
    };
    eprintln!("{samples} samples; {outcome:?}");
    assert_eq!(outcome.outcome, Outcome::Rollback);
    let reason = outcome.reason.clone().unwrap_or_default();
    assert!(reason.starts_with("canary: 5xx ratio"), "{reason}");
    let c = outcome.canary.clone().expect("the canary's figures");
    assert_eq!(c.verdict, Some(Verdict::Rollback));
    let (o, n) = (c.old.expect("old figures"), c.new.expect("new figures"));
    assert_eq!((o.generation, n.generation), (1, 2));
    assert!(o.requests >= 20 && n.requests >= 20, "{o:?} {n:?}");
    assert_eq!(o.errors_5xx, 0);
    // One canary worker, every 4th of its requests to `/` fails.
    let off = (n.errors_5xx * 4).abs_diff(n.requests);
    assert!(off <= 8, "{} 5xx of {} requests", n.errors_5xx, n.requests);
    assert!(n.error_ratio > o.error_ratio + 0.05);
    // The canary drains; the old workers never stopped.
    wait_until(START_TIMEOUT, "generation 2 gone", || {
        live_of(&cluster, 2) == 0
    });
    assert_eq!(cluster.ready_pids_of(1), old);
    assert!(wrk.running(), "wrk's run ended before the rollback settled");
    let report = wrk.stop();
    let (answers, errors, failed) = churn.stop();
    eprintln!(
        "wrk: {} requests, {} non-2xx; new connections: {answers} answers, {errors} 5xx, {failed} failed",
        report.requests, report.non_2xx
    );
    assert!(
        report.requests > 0 && report.socket_errors == [0; 4],
        "{}",
        report.text
    );
    assert_eq!(failed, 0, "requests without an answer");
    assert!(errors > 0, "the bad canary's 500s reached a client");
    let snap = cluster.snapshot();
    let served_5xx = snap.totals.counters.status[4];
    assert!(
        report.non_2xx + errors <= served_5xx,
        "more 5xx seen than served"
    );
    assert!(snap.totals.counters.requests_total >= report.requests + answers);
    assert_eq!(snap.generation, 1);
    assert_eq!(snap.reloads_rollback, 1);
    let doc = status_json(&cluster);
    let shown = &doc["reloads"]["canary"];
    assert_eq!(shown["verdict"], "rollback", "{shown}");
    assert_eq!(shown["new"]["errors_5xx"], n.errors_5xx);
    // `flora-cluster status --json` asks the master for its records.
    let out = dir.ctl(&["status", "--json"]);
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(cli["reloads"]["canary"], *shown);
    assert_eq!(cli["reloads"]["canary_verdicts"]["rollback"], 1);
    let page = get(status_port(&cluster), "/server-status")
        .expect("page")
        .text();
    assert!(page.contains("Last canary") && page.contains("rolled back"));
    for _ in 0..20 {
        assert_eq!(get(port, "/").expect("a request").text(), "v1");
    }
}

#[test]
fn a_good_release_is_promoted_to_every_slot() {
    let dir = TestDir::new("canary-good");
    let port = support::free_port();
    let v1 = dir.demo_script("worker.sh", "", "--body v1");
    let cluster = dir.start_program(port, &["--workers", "2"], &[v1.to_str().unwrap()]);
    let old = cluster.wait_ready(WORKERS);
    // More canaries than workers: refused, nothing started.
    let out = dir.ctl(&["reload", "--canary", "3", "--canary-secs", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at most the worker count 2"), "{stderr}");
    dir.demo_script("worker.sh", "", "--body v2");
    let mut wrk = Wrk::start(port, "/", 2, 8, WRK_MAX_SECS);
    let churn = Churn::start(port, 2);
    wait_traffic(&cluster);
    let (out, samples) = sampling(&cluster, || {
        // The canary serves only new connections, the old workers mostly wrk's keep-alive
        // ones: a p99 ratio that tolerates that mix on a shared machine.
        let args = [
            "--canary",
            "1",
            "--canary-secs",
            "2",
            "--canary-max-p99-ratio",
            "20",
        ];
        dir.ctl(&[&["reload"][..], &args].concat())
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{samples} samples; {stdout}");
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("canary promoted: within the limits | old gen 1: "),
        "{stdout}"
    );
    assert!(
        stdout.contains("reload succeeded: generation 2 serving"),
        "{stdout}"
    );
    wait_until(START_TIMEOUT, "2 ready workers of generation 2", || {
        cluster.ready_pids_of(2).len() == WORKERS
    });
    Cluster::wait_pids_gone(&old, START_TIMEOUT);
    assert!(wrk.running(), "wrk's run ended before the reload did");
    let report = wrk.stop();
    let (answers, errors, failed) = churn.stop();
    eprintln!(
        "wrk: {} requests; new connections: {answers} answers, {errors} 5xx, {failed} failed",
        report.requests
    );
    report.assert_clean();
    assert_eq!(
        (errors, failed),
        (0, 0),
        "new-connection clients saw failures"
    );
    let snap = cluster.snapshot();
    assert_eq!(snap.totals.counters.status[4], 0);
    assert!(snap.totals.counters.requests_total >= report.requests + answers);
    assert_eq!((snap.generation, snap.reloads_success), (2, 1));
    assert_eq!(
        status_json(&cluster)["reloads"]["canary"]["verdict"],
        "promote"
    );
    for _ in 0..20 {
        assert_eq!(get(port, "/").expect("a request").text(), "v2");
    }
}

#[test]
fn bad_canary_flags_are_refused() {
    let dir = TestDir::new("canary-flags");
    for (args, says) in [
        (&["--canary", "0", "--canary-secs", "1"][..], ">= 1"),
        (&["--canary", "1"][..], "--canary-secs"),
        (
            &["--canary", "1", "--canary-secs", "0"][..],
            "must be seconds",
        ),
        (
            &["--canary", "1", "--canary-secs", "NaN"][..],
            "must be seconds",
        ),
        (
            &[
                "--canary",
                "1",
                "--canary-secs",
                "1",
                "--canary-max-error-ratio",
                "2",
            ][..],
            "[0, 1]",
        ),
        (
            &[
                "--canary",
                "1",
                "--canary-secs",
                "1",
                "--canary-max-p99-ratio",
                "-1",
            ][..],
            "> 0",
        ),
        (&["--canary-secs", "1"][..], "--canary"),
    ] {
        let mut all = vec!["reload"];
        all.extend(args);
        let out = dir.ctl(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
