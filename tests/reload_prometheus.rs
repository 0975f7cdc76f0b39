//! Counters stay exact and monotonic through rolling and canary reloads, as a real
//! Prometheus sees them. 4 demo workers with `--reload-batch 1` and `--slots 5` (so every
//! batch but the first reuses a slot an old worker left) serve keep-alive `wrk` load plus clients that
//! open a connection per request, while Prometheus scrapes the master every second. In turn:
//! a good rolling reload; a rolling reload whose third new worker fails at start-up (rolled
//! back, the old workers restored); a canary of a release answering 500 on every 4th
//! request (rolled back); a canary of a good release (promoted). Each reply says so.
//!
//! At the end Prometheus holds exactly the master's last `/metrics` values, no counter
//! series ever went down (`resets()` = 0 over the whole run), the reload counters match the
//! four reloads, no client request failed (the bad canary's 500s are answers) and the
//! cluster counted at least every answer the clients got. Prometheus is made to scrape
//! between the steps; a scrape of `/metrics` every 50 ms also checks the moments between
//! its scrapes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flora_cluster::scoreboard::SlotState;
use support::exposition::{parse_value, Exposition};
use support::guards::client::{LoopResult, RateLoop, Wrk};
use support::status_server::{scrape, status_port};
use support::tools::PrometheusServer;
use support::{get, poll, wait_until, Cluster, TestDir};

/// Workers (and `--slots` is one more: one spare slot for a batch of 1).
const WORKERS: usize = 4;
/// wrk's run if nobody stops it (it is stopped after the last reload).
const WRK_MAX_SECS: u64 = 120;
/// Longest run of the new-connection clients.
const CHURN_MAX_RUN: Duration = Duration::from_secs(120);
/// Requests a second of each new-connection client (it goes slower when answers are slow).
const CHURN_RATE: u32 = 400;
/// Longest wait for Prometheus' first scrape (target updates are batched every 5 s).
const SCRAPED_TIMEOUT: Duration = Duration::from_secs(40);
/// Longest wait for Prometheus to have scraped the final values.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait for a step's workers to settle after its reply.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Prometheus' range for the whole run (the test takes well under it).
const WHOLE_RUN: &str = "10m";
/// Scrape job name.
const JOB: &str = "flora";
/// The counter families compared series by series with Prometheus.
const COUNTERS: [&str; 5] = [
    "flora_http_requests_total",
    "flora_connections_total",
    "flora_reloads_total",
    "flora_canary_reloads_total",
    "flora_worker_restarts_total",
];
/// Pause between two scrapes of [`FastScrape`].
const FAST_SCRAPE_EVERY: Duration = Duration::from_millis(50);
/// Counter samples that do restart by design: a process counter of a replaced worker.
const RESTARTING: [&str; 1] = ["process_cpu_seconds_total"];

/// Slots with a live worker (starting, ready or draining).
fn live_workers(cluster: &Cluster) -> usize {
    let live = |s: &&flora_cluster::scoreboard::SlotSnapshot| {
        s.pid != 0
            && matches!(
                s.state,
                SlotState::Starting | SlotState::Ready | SlotState::Draining
            )
    };
    cluster.snapshot().slots.iter().filter(live).count()
}

/// Waits until Prometheus scraped `reloads` reloads in all: it saw this step's counters.
fn wait_scraped(prom: &PrometheusServer, reloads: u32) {
    let what = format!("Prometheus to see {reloads} reloads");
    poll(CATCH_UP_TIMEOUT, &what, || {
        match prom.query_scalar("sum(flora_reloads_total)") {
            Some(n) if n == f64::from(reloads) => Ok(()),
            other => Err(format!("sum(flora_reloads_total) = {other:?}")),
        }
    });
}

/// Waits until exactly the 4 workers of `generation` run, all ready, nothing else live.
fn settle_on(cluster: &Cluster, generation: u64) {
    let what = format!("only the {WORKERS} ready workers of generation {generation}");
    wait_until(SETTLE_TIMEOUT, &what, || {
        cluster.ready_pids_of(generation).len() == WORKERS && live_workers(cluster) == WORKERS
    });
    assert_eq!(cluster.snapshot().generation, generation);
}

/// A request on a new connection answers `body`.
fn assert_serves(port: u16, body: &str) {
    for _ in 0..8 {
        assert_eq!(get(port, "/").expect("a request").text(), body);
    }
}

/// stdout of a control command, with stderr when something is off.
fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Labels of a series without those Prometheus adds.
type Series = BTreeMap<String, String>;

/// Every series of `family` in a scrape.
fn scraped(expo: &Exposition, family: &str) -> BTreeMap<Series, f64> {
    expo.named(family)
        .map(|s| (s.labels.clone(), s.value))
        .collect()
}

/// Every series of `family` in Prometheus now, without `job` and `instance`.
fn stored(prom: &PrometheusServer, family: &str) -> BTreeMap<Series, f64> {
    prom.query(family)
        .iter()
        .map(|r| {
            let labels: Series = r["metric"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| !["__name__", "job", "instance"].contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let v = r["value"][1]
                .as_str()
                .and_then(parse_value)
                .unwrap_or(f64::NAN);
            (labels, v)
        })
        .collect()
}

/// Whether samples named `name` must never go down: counters and histogram counts (but
/// [`RESTARTING`]).
fn only_grows(expo: &Exposition, name: &str) -> bool {
    let cumulative = match expo.type_of(&expo.family_of(name)) {
        Some("counter") => true,
        Some("histogram") => name.ends_with("_count") || name.ends_with("_bucket"),
        _ => false,
    };
    cumulative && !RESTARTING.contains(&name)
}

/// Scrapes `/metrics` every [`FAST_SCRAPE_EVERY`] on a thread until stopped (Prometheus
/// scrapes each second, a reload's batch can be quicker) and notes every series that only
/// grows ([`only_grows`]) but went down since it was last seen, gone in between or not.
struct FastScrape {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(u64, Vec<String>)>>,
}

impl FastScrape {
    fn start(status: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let (begun, mut scrapes, mut down) = (Instant::now(), 0, Vec::new());
            let mut seen: BTreeMap<String, f64> = BTreeMap::new();
            while !st.load(Ordering::Relaxed) && begun.elapsed() < CHURN_MAX_RUN {
                let expo = scrape(status, None).expo;
                scrapes += 1;
                for s in expo.samples.iter().filter(|s| only_grows(&expo, &s.name)) {
                    let series = s.series();
                    if let Some(was) = seen.insert(series.clone(), s.value) {
                        if s.value < was {
                            down.push(format!("{series}: {was} -> {}", s.value));
                        }
                    }
                }
                // Pacing the scrapes, not waiting for a condition.
                std::thread::sleep(FAST_SCRAPE_EVERY);
            }
            (scrapes, down)
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the thread; returns the scrapes taken and the series that went down.
    fn stop(mut self) -> (u64, Vec<String>) {
        self.halt().expect("the scraping thread panicked")
    }

    fn halt(&mut self) -> Option<(u64, Vec<String>)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take()?.join().ok()
    }
}

impl Drop for FastScrape {
    fn drop(&mut self) {
        self.halt();
    }
}

/// What the new-connection clients saw: (answers, 5xx answers, failures without an answer).
fn churn_outcome(loops: Vec<RateLoop>) -> (u64, u64, Vec<String>) {
    let (mut answers, mut errors_5xx, mut failed) = (0, 0, Vec::new());
    for seen in loops.into_iter().map(RateLoop::stop) {
        let LoopResult { ok, failures, .. } = seen;
        answers += ok;
        for f in failures {
            // RateLoop reports a non-200 answer as "PATH: status N ...", an error otherwise.
            if f.starts_with("/: status 5") {
                answers += 1;
                errors_5xx += 1;
            } else {
                failed.push(f);
            }
        }
    }
    (answers, errors_5xx, failed)
}

#[test]
fn counters_stay_exact_and_monotonic_through_rolling_and_canary_reloads() {
    let begun = Instant::now();
    let dir = TestDir::new("reload-prom");
    let port = support::free_port();
    let v1 = dir.demo_script("worker.sh", "", "--body v1");
    let cluster = dir.start_program(
        port,
        &["--workers", "4", "--slots", "5", "--reload-batch", "1"],
        &[v1.to_str().unwrap()],
    );
    cluster.wait_ready(WORKERS);
    let status = status_port(&cluster);
    let fast = FastScrape::start(status);
    let prom = PrometheusServer::start(JOB, &format!("127.0.0.1:{status}"));
    let mut wrk = Wrk::start(port, "/", 2, 8, WRK_MAX_SECS);
    let churn: Vec<RateLoop> = (0..2)
        .map(|_| RateLoop::start(port, "/", CHURN_RATE, CHURN_MAX_RUN))
        .collect();
    wait_until(SCRAPED_TIMEOUT, "Prometheus' first scrape", || {
        prom.query_scalar(&format!("up{{job=\"{JOB}\"}}")) == Some(1.0)
    });
    eprintln!("first scrape at {:?}", begun.elapsed());
    // Prometheus saw the cluster before any reload.
    assert_eq!(
        prom.query_scalar("sum(flora_reloads_total)"),
        Some(0.0),
        "{}",
        prom.targets()
    );

    // 1. A good rolling reload: generation 2.
    dir.demo_script("worker.sh", "", "--body v2");
    let out = dir.ctl(&["reload"]);
    let text = said(&out);
    assert!(out.status.success(), "good rolling reload: {text}");
    assert!(
        text.contains("reload succeeded: generation 2 serving"),
        "{text}"
    );
    settle_on(&cluster, 2);
    assert_serves(port, "v2");
    wait_scraped(&prom, 1);
    eprintln!("step 1 done at {:?}", begun.elapsed());

    // 2. A rolling reload whose third new worker exits at start-up: generation 3 rolls back,
    //    the two old workers its first batches drained are respawned.
    let counter = dir.scratch("starts");
    let prelude = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {c}; [ $n -eq 3 ] && exit 7",
        c = counter.display()
    );
    dir.demo_script("worker.sh", &prelude, "--body v3");
    let out = dir.ctl(&["reload"]);
    let text = said(&out);
    assert_eq!(out.status.code(), Some(1), "failing rolling reload: {text}");
    assert!(
        text.contains("rolled back")
            && text.contains("exit code 7")
            && text.contains("2 old workers respawn"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap_or_default().trim(),
        "3"
    );
    settle_on(&cluster, 2);
    assert_serves(port, "v2");
    wait_scraped(&prom, 2);
    eprintln!("step 2 done at {:?}", begun.elapsed());

    // 3. A canary (1 worker, 2 s) of a release answering 500 on every 4th request:
    //    generation 4 rolls back, the old workers never stopped.
    dir.demo_script("worker.sh", "", "--body v4 --error-every 4");
    let old = cluster.ready_pids_of(2);
    let out = dir.ctl(&[
        "reload",
        "--canary",
        "1",
        "--canary-secs",
        "2",
        "--canary-max-error-ratio",
        "0.05",
    ]);
    let text = said(&out);
    assert_eq!(out.status.code(), Some(1), "bad canary: {text}");
    assert!(text.contains("canary rolled back: 5xx ratio"), "{text}");
    assert!(
        text.contains("reload rolled back: canary: 5xx ratio"),
        "{text}"
    );
    settle_on(&cluster, 2);
    assert_eq!(cluster.ready_pids_of(2), old, "an old worker stopped");
    assert_serves(port, "v2");
    wait_scraped(&prom, 3);
    eprintln!("step 3 done at {:?}", begun.elapsed());

    // 4. A canary of a good release, promoted: generation 5 rolls out. The canary serves
    //    only new connections, the old workers mostly wrk's keep-alive ones: a p99 ratio
    //    that tolerates that mix on a shared machine.
    dir.demo_script("worker.sh", "", "--body v5");
    let out = dir.ctl(&[
        "reload",
        "--canary",
        "1",
        "--canary-secs",
        "2",
        "--canary-max-p99-ratio",
        "20",
    ]);
    let text = said(&out);
    assert!(out.status.success(), "good canary: {text}");
    assert!(
        text.contains("canary promoted: within the limits"),
        "{text}"
    );
    assert!(
        text.contains("reload succeeded: generation 5 serving"),
        "{text}"
    );
    settle_on(&cluster, 5);
    assert_serves(port, "v5");
    wait_scraped(&prom, 4);
    eprintln!("step 4 done at {:?}", begun.elapsed());

    // The load stops: no request failed; the bad canary's 500s are answers.
    assert!(wrk.running(), "wrk's run ended before the reloads did");
    let report = wrk.stop();
    let (answers, churn_5xx, failed) = churn_outcome(churn);
    eprintln!(
        "wrk: {} requests, {} non-2xx; new connections: {answers} answers, {churn_5xx} 5xx, \
         {} failed",
        report.requests,
        report.non_2xx,
        failed.len()
    );
    assert!(
        report.requests > 0 && report.socket_errors == [0; 4],
        "wrk saw socket errors:\n{}",
        report.text
    );
    assert!(failed.is_empty(), "requests without an answer: {failed:?}");
    assert!(churn_5xx > 0, "the bad canary's 500s reached no client");

    let (fast_scrapes, went_down) = fast.stop();
    eprintln!("{fast_scrapes} scrapes of /metrics every {FAST_SCRAPE_EVERY:?}");
    assert!(went_down.is_empty(), "counters went down: {went_down:#?}");

    // Prometheus ends on exactly the master's final values.
    let last = poll(
        CATCH_UP_TIMEOUT,
        "Prometheus to scrape the final values",
        || {
            let expo = scrape(status, None).expo;
            let differ: Vec<String> = COUNTERS
                .iter()
                .filter_map(|family| {
                    let (want, got) = (scraped(&expo, family), stored(&prom, family));
                    (want != got)
                        .then(|| format!("{family}: /metrics {want:?}, Prometheus {got:?}"))
                })
                .collect();
            if differ.is_empty() {
                Ok(expo)
            } else {
                Err(differ.join("\n"))
            }
        },
    );
    for family in COUNTERS {
        assert!(
            last.named(family).next().is_some(),
            "no {family} in /metrics"
        );
    }

    // A canary counts in flora_reloads_total by how its reload ended (the core records
    // every reload's outcome, canary or not): the bad canary as a rollback, the promoted one
    // as a success once its rolling reload committed. So 2 successes (the good rolling
    // reload, the promoted canary) and 2 rollbacks (the failed batch, the bad canary).
    let outcome = |o: &str| last.value("flora_reloads_total", &[("outcome", o)]);
    assert_eq!(
        (outcome("success"), outcome("rollback")),
        (Some(2.0), Some(2.0))
    );
    let verdict = |v: &str| last.value("flora_canary_reloads_total", &[("verdict", v)]);
    assert_eq!(
        (verdict("promote"), verdict("rollback")),
        (Some(1.0), Some(1.0))
    );
    let snap = cluster.snapshot();
    assert_eq!((snap.reloads_success, snap.reloads_rollback), (2, 2));
    assert_eq!(snap.generation, 5);

    // The cluster counted at least every answer the clients got (and every 5xx they saw).
    let requests = last.sum("flora_http_requests_total");
    let answered = report.requests + answers;
    assert!(
        requests >= answered as f64,
        "{requests} requests counted < {answered} answered"
    );
    let counted_5xx: f64 = last
        .named("flora_http_requests_total")
        .filter(|s| s.labels.get("code").is_some_and(|c| c.starts_with('5')))
        .map(|s| s.value)
        .sum();
    assert!(
        counted_5xx >= (report.non_2xx + churn_5xx) as f64,
        "{counted_5xx} 5xx counted < {} + {churn_5xx} seen",
        report.non_2xx
    );
    // Each new-connection request had a connection of its own.
    let connections = last.sum("flora_connections_total");
    assert!(
        connections >= answers as f64,
        "{connections} connections counted < {answers} new-connection answers"
    );
    let restarts = last.sum("flora_worker_restarts_total");
    eprintln!(
        "/metrics: {requests} requests ({counted_5xx} 5xx), {connections} connections, \
         {restarts} restarts"
    );

    // No counter series ever went down in Prometheus over the whole run: the five above
    // and every other counter or histogram sample the master exposes.
    let mut names: BTreeSet<String> = COUNTERS.iter().map(|f| f.to_string()).collect();
    for s in last.samples.iter().filter(|s| only_grows(&last, &s.name)) {
        names.insert(s.name.clone());
    }
    for name in &names {
        let expr = format!("sum(resets({name}[{WHOLE_RUN}]))");
        assert_eq!(
            prom.query_scalar(&expr),
            Some(0.0),
            "{expr}: Prometheus saw a counter go down"
        );
    }
    // Prometheus kept the whole run: it saw the reload counters at 0 and at 4.
    let range = format!("sum(flora_reloads_total)[{WHOLE_RUN}:1s]");
    assert_eq!(
        prom.query_scalar(&format!("min_over_time({range})")),
        Some(0.0)
    );
    assert_eq!(
        prom.query_scalar(&format!("max_over_time({range})")),
        Some(4.0)
    );
    // For contrast: a process counter starts again with each new worker in a slot.
    let cpu_resets = prom.query_scalar(&format!(
        "sum(resets(process_cpu_seconds_total[{WHOLE_RUN}]))"
    ));
    eprintln!("resets() of process_cpu_seconds_total: {cpu_resets:?}");
    let scrapes = prom.query_scalar(&format!(
        "count_over_time(up{{job=\"{JOB}\"}}[{WHOLE_RUN}])"
    ));
    eprintln!(
        "resets() = 0 for {} sample names over {scrapes:?} scrapes, {:?} in all: {names:?}",
        names.len(),
        begun.elapsed()
    );
}
