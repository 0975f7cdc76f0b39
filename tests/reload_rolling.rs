//! Rolling reloads (`--reload-batch 1`, 4 workers): under keep-alive `wrk` load a reload
//! loses no request and never runs more than 5 worker processes, even with room for more
//! slots; a new generation whose third worker fails at start-up is rolled back, the reply
//! says so, and all 4 old workers serve again. A batch of 0 is refused at once.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flora_cluster::scoreboard::SlotState;
use support::guards::client::Wrk;
use support::{get, wait_for, wait_until, Cluster, TestDir, START_TIMEOUT};

/// Workers, and the batch.
const WORKERS: usize = 4;
const PEAK: usize = WORKERS + 1;
/// wrk's run if nobody stops it (it is stopped after the reload).
const WRK_MAX_SECS: u64 = 120;
/// A rolling reload of 4 batches, each waiting for an old worker's drain.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(90);
/// How often the process count is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(2);

/// Live (not zombie) children of `master`, from `/proc/*/stat`.
fn live_children(master: u32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut f = rest.split_whitespace();
            let (state, ppid) = (f.next(), f.next());
            state != Some("Z") && ppid == Some(master.to_string().as_str())
        })
        .count()
}

/// Slots of the scoreboard with a worker (starting, ready or draining).
fn occupied_slots(cluster: &Cluster) -> usize {
    let busy = |s: &&flora_cluster::scoreboard::SlotSnapshot| {
        s.pid != 0
            && matches!(
                s.state,
                SlotState::Starting | SlotState::Ready | SlotState::Draining
            )
    };
    cluster.snapshot().slots.iter().filter(busy).count()
}

/// Samples the master's live children every [`SAMPLE_EVERY`] until stopped; keeps the most.
struct PeakWatch {
    stop: Arc<AtomicBool>,
    most: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl PeakWatch {
    fn start(master: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let most = Arc::new(AtomicUsize::new(0));
        let (st, m) = (stop.clone(), most.clone());
        let thread = std::thread::spawn(move || {
            let begun = Instant::now();
            while !st.load(Ordering::Relaxed) && begun.elapsed() < RELOAD_TIMEOUT * 2 {
                m.fetch_max(live_children(master), Ordering::Relaxed);
                // Pacing the sampler, not waiting for a condition.
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        Self {
            stop,
            most,
            thread: Some(thread),
        }
    }

    fn most(&self) -> usize {
        self.most.load(Ordering::Relaxed)
    }

    fn stop(mut self) -> usize {
        self.halt();
        self.most()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PeakWatch {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Runs `flora-cluster reload` on a thread, sampling the scoreboard while it runs; returns
/// its output and the most occupied slots seen.
fn reload_sampling(dir: &TestDir, cluster: &Cluster) -> (std::process::Output, usize) {
    std::thread::scope(|s| {
        let reload = s.spawn(|| dir.ctl(&["reload"]));
        let mut most = 0;
        let begun = Instant::now();
        while !reload.is_finished() && begun.elapsed() < RELOAD_TIMEOUT {
            most = most.max(occupied_slots(cluster));
            std::thread::sleep(SAMPLE_EVERY);
        }
        let out = reload.join().expect("reload thread");
        (out, most)
    })
}

#[test]
fn one_at_a_time_under_load_loses_nothing_and_never_runs_more_than_five() {
    let dir = TestDir::new("reload-rolling");
    let port = support::free_port();
    // The default slots (2 × 4 + 2) leave room for a whole generation: the batch holds it.
    let cluster = dir.start_with(
        port,
        &["--workers", "4", "--reload-batch", "1"],
        &["--body", "v1"],
    );
    let old = cluster.wait_ready(WORKERS);
    let watch = PeakWatch::start(cluster.pid);
    let mut wrk = Wrk::start(port, "/", 2, 16, WRK_MAX_SECS);
    let (out, most_slots) = reload_sampling(&dir, &cluster);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "reload: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Traffic reaches the new generation, then the load stops.
    wait_until(START_TIMEOUT, "4 ready workers of generation 2", || {
        cluster.ready_pids_of(2).len() == WORKERS
    });
    assert!(wrk.running(), "wrk's run ended before the reload did");
    let report = wrk.stop();
    let most = watch.stop();
    eprintln!(
        "wrk: {} requests; most worker processes {most}, most occupied slots {most_slots}; {stdout}",
        report.requests
    );
    report.assert_clean();
    assert!(
        most <= PEAK,
        "{most} worker processes at once, more than {PEAK}"
    );
    assert!(most_slots <= PEAK, "{most_slots} occupied slots at once");
    assert!(most > WORKERS, "the sampler never saw the extra worker");
    assert_eq!(cluster.snapshot().generation, 2);
    Cluster::wait_pids_gone(&old, START_TIMEOUT);
}

#[test]
fn a_failing_third_worker_restores_all_four_old_workers() {
    let dir = TestDir::new("reload-rolling-fail");
    let port = support::free_port();
    let script = dir.demo_script("worker.sh", "", "--body v1");
    // Exactly workers + 1 slots: enough for a rolling reload.
    let cluster = dir.start_program(
        port,
        &["--workers", "4", "--slots", "5", "--reload-batch", "1"],
        &[script.to_str().unwrap()],
    );
    let old = cluster.wait_ready(WORKERS);
    // The new program counts its starts; the third exits at start-up.
    let counter = dir.scratch("starts");
    let prelude = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {c}; [ $n -eq 3 ] && exit 7",
        c = counter.display()
    );
    dir.demo_script("worker.sh", &prelude, "--body v2");
    let watch = PeakWatch::start(cluster.pid);
    let mut wrk = Wrk::start(port, "/", 2, 16, WRK_MAX_SECS);
    let (out, most_slots) = reload_sampling(&dir, &cluster);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "reload must exit 1 on rollback: {stdout}"
    );
    assert!(
        stdout.contains("rolled back")
            && stdout.contains("exit code 7")
            && stdout.contains("2 old workers respawn"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap_or_default().trim(),
        "3"
    );
    // Two old workers were drained by the first two batches: the restore brings back four.
    let restored = wait_for(START_TIMEOUT, "4 ready workers of generation 1", || {
        let pids = cluster.ready_pids_of(1);
        (pids.len() == WORKERS).then_some(pids)
    });
    let kept = restored.iter().filter(|p| old.contains(p)).count();
    assert_eq!(
        kept, 2,
        "two old workers served on, two respawned: {old:?} -> {restored:?}"
    );
    wait_until(START_TIMEOUT, "generation 2 gone", || {
        occupied_slots(&cluster) == WORKERS
    });
    assert!(wrk.running(), "wrk's run ended before the rollback settled");
    let report = wrk.stop();
    let most = watch.stop();
    eprintln!(
        "wrk: {} requests; most processes {most}; {stdout}",
        report.requests
    );
    report.assert_clean();
    assert!(
        most <= PEAK && most_slots <= PEAK,
        "{most} processes, {most_slots} slots"
    );
    assert_eq!(cluster.snapshot().generation, 1);
    for _ in 0..20 {
        assert_eq!(get(port, "/").expect("a request").text(), "v1");
    }
}

#[test]
fn a_batch_of_zero_or_without_its_slots_is_refused() {
    let dir = TestDir::new("reload-rolling-flags");
    for (args, says) in [
        (
            &["--workers", "2", "--reload-batch", "0"][..],
            "reload_batch",
        ),
        (
            &["--workers", "4", "--slots", "5", "--reload-batch", "2"][..],
            "--slots 6",
        ),
    ] {
        let (status, stderr) = dir
            .master(support::free_port())
            .args(args)
            .demo(&[])
            .run_to_exit(Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
