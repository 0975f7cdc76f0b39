//! Watching guards act: the guards' part of the status JSON and of `/metrics`, worker RSS
//! from `/proc`, and [`Watch`], a thread that reads the scoreboard every few ms and keeps
//! the fewest ready workers, the most starting ones, every worker's peak RSS and a timeline
//! of the slots.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flora_cluster::scoreboard::{ScoreboardReader, SlotState, Snapshot};
use serde_json::Value;

use crate::support::exposition::Exposition;
use crate::support::status_server::{scrape, status_port};
use crate::support::{http, Cluster};

/// One MiB.
pub const MIB: u64 = 1 << 20;
/// Pause between two reads of the scoreboard by [`Watch`].
const WATCH_EVERY: Duration = Duration::from_millis(10);
/// Most timeline lines [`Watch`] keeps.
const TIMELINE_MAX: usize = 400;

/// The master's status JSON (`/server-status.json`).
pub fn status_json(cluster: &Cluster) -> Value {
    http::get_json(status_port(cluster), "/server-status.json")
}

/// The master's `/metrics` (text format), parsed.
pub fn metrics(cluster: &Cluster) -> Exposition {
    scrape(status_port(cluster), None).expo
}

/// The master's status page (HTML).
pub fn status_page(cluster: &Cluster) -> String {
    let resp = http::get_with(status_port(cluster), "/server-status", &[]);
    assert_eq!(resp.status, 200, "GET /server-status: {}", resp.text());
    resp.text()
}

/// Sum of the samples named `name` that carry every label of `labels` (0 when none does).
pub fn metric_sum(expo: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    expo.named(name)
        .filter(|s| s.has_labels(labels))
        .map(|s| s.value)
        .sum()
}

/// Whether some sample named `name` carries every label of `labels`.
pub fn has_series(expo: &Exposition, name: &str, labels: &[(&str, &str)]) -> bool {
    expo.named(name).any(|s| s.has_labels(labels))
}

/// `guards.GROUP.REASON` of the status JSON (`recycles.memory`, `kills.heartbeat`, …); panics
/// with the `guards` object when it is not a number.
pub fn guard_count(doc: &Value, group: &str, reason: &str) -> u64 {
    doc["guards"][group][reason].as_u64().unwrap_or_else(|| {
        panic!(
            "no guards.{group}.{reason} in the status JSON: {}",
            doc["guards"]
        )
    })
}

/// `guards.kill_records` of the status JSON (empty when missing).
pub fn kill_records(doc: &Value) -> Vec<Value> {
    doc["guards"]["kill_records"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The `workers` entry of `doc` whose pid is `pid`.
pub fn worker_doc(doc: &Value, pid: u32) -> Option<Value> {
    doc["workers"]
        .as_array()?
        .iter()
        .find(|w| w["pid"].as_u64() == Some(u64::from(pid)))
        .cloned()
}

/// Resident set size of `pid` in bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Pids of the slots in `state`.
pub fn pids_in(snap: &Snapshot, state: SlotState) -> Vec<u32> {
    snap.slots
        .iter()
        .filter(|s| s.state == state && s.pid != 0)
        .map(|s| s.pid)
        .collect()
}

/// One line per used slot: `slot:state:pid`.
pub fn describe(snap: &Snapshot) -> String {
    snap.slots
        .iter()
        .filter(|s| s.state != SlotState::Empty)
        .map(|s| format!("{}:{:?}:{}", s.index, s.state, s.pid))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a [`Watch`] saw.
#[derive(Debug, Clone, Default)]
pub struct WatchReport {
    /// Scoreboard reads.
    pub polls: u64,
    /// Fewest slots Ready at once.
    pub min_ready: usize,
    /// Most slots Starting at once.
    pub max_starting: usize,
    /// Most slots Draining at once.
    pub max_draining: usize,
    /// Every worker pid seen.
    pub pids: BTreeSet<u32>,
    /// Peak RSS per worker pid (bytes), when sampled.
    pub peak_rss: BTreeMap<u32, u64>,
    /// The slots each time they changed: `+SECONDS slot:state:pid …`.
    pub timeline: Vec<String>,
}

impl WatchReport {
    /// The timeline as text (for failure messages).
    pub fn timeline(&self) -> String {
        self.timeline.join("\n")
    }

    /// Recycles ran one at a time and never left fewer than `target` workers ready.
    pub fn assert_one_recycle_at_a_time(&self, target: usize) {
        assert!(
            self.min_ready >= target && self.max_starting <= 1,
            "min ready {}, max starting {}:\n{}",
            self.min_ready,
            self.max_starting,
            self.timeline()
        );
    }
}

/// A thread reading the scoreboard every [`WATCH_EVERY`] until stopped (on drop too).
#[derive(Debug)]
pub struct Watch {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<WatchReport>>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// Starts watching `cluster`'s scoreboard; with `sample_rss` it also reads each live
    /// worker's RSS on every round.
    pub fn start(cluster: &Cluster, sample_rss: bool) -> Self {
        let reader = cluster.scoreboard();
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(WatchReport {
            min_ready: usize::MAX,
            ..WatchReport::default()
        }));
        let (st, rep) = (stop.clone(), report.clone());
        let thread = std::thread::spawn(move || watch(&reader, &st, &rep, sample_rss));
        Self {
            stop,
            report,
            thread: Some(thread),
        }
    }

    /// What it saw so far.
    pub fn report(&self) -> WatchReport {
        self.report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops and joins the thread; returns what it saw.
    pub fn stop(mut self) -> WatchReport {
        self.halt();
        self.report()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.halt();
    }
}

fn watch(reader: &ScoreboardReader, stop: &AtomicBool, report: &Mutex<WatchReport>, rss: bool) {
    let begun = Instant::now();
    let mut last = String::new();
    while !stop.load(Ordering::Relaxed) {
        let snap = reader.snapshot();
        let line = describe(&snap);
        let mut r = report.lock().unwrap_or_else(PoisonError::into_inner);
        r.polls += 1;
        r.min_ready = r.min_ready.min(pids_in(&snap, SlotState::Ready).len());
        r.max_starting = r
            .max_starting
            .max(pids_in(&snap, SlotState::Starting).len());
        r.max_draining = r
            .max_draining
            .max(pids_in(&snap, SlotState::Draining).len());
        for s in snap.slots.iter().filter(|s| s.pid != 0) {
            r.pids.insert(s.pid);
            if rss && s.state != SlotState::Dead {
                if let Some(b) = rss_bytes(s.pid) {
                    let peak = r.peak_rss.entry(s.pid).or_default();
                    *peak = (*peak).max(b);
                }
            }
        }
        if line != last && r.timeline.len() < TIMELINE_MAX {
            r.timeline
                .push(format!("+{:.3}s {line}", begun.elapsed().as_secs_f64()));
            last = line;
        }
        drop(r);
        std::thread::sleep(WATCH_EVERY);
    }
}

/// Reasons of `flora_worker_recycles_total` (and `guards.recycles` in the JSON).
pub const RECYCLE_REASONS: [&str; 3] = ["memory", "max_requests", "age"];
/// Reasons of `flora_worker_kills_total` (and `guards.kills` in the JSON).
pub const KILL_REASONS: [&str; 2] = ["heartbeat", "shutdown_timeout"];
/// Longest wait for the JSON and `/metrics` to agree on the guards' counts.
const AGREE_TIMEOUT: Duration = Duration::from_secs(10);

/// The guards' counts by reason — `recycles` (`flora_worker_recycles_total`) and `kills`
/// (`flora_worker_kills_total`) — once the status JSON and `/metrics` show the same values
/// (read one after the other, so polled until a guard that acted in between is in both).
pub fn guard_counts(cluster: &Cluster) -> BTreeMap<String, u64> {
    crate::support::poll(
        AGREE_TIMEOUT,
        "JSON and /metrics to agree on the guards",
        || {
            let doc = status_json(cluster);
            let expo = metrics(cluster);
            let mut counts = BTreeMap::new();
            let mut differ = Vec::new();
            let groups = [
                (
                    "recycles",
                    "flora_worker_recycles_total",
                    &RECYCLE_REASONS[..],
                ),
                ("kills", "flora_worker_kills_total", &KILL_REASONS[..]),
            ];
            for (group, family, reasons) in groups {
                for reason in reasons {
                    let json = guard_count(&doc, group, reason);
                    let metric = metric_sum(&expo, family, &[("reason", reason)]);
                    if metric != json as f64 {
                        differ.push(format!("{group}.{reason}: JSON {json}, {family} {metric}"));
                    }
                    counts.insert(format!("{group}.{reason}"), json);
                }
            }
            if differ.is_empty() {
                Ok(counts)
            } else {
                Err(differ.join("; "))
            }
        },
    )
}

/// Checks `counts` (from [`guard_counts`]): `recycles.WANT` at least `min`, every other
/// recycle reason and every kill reason 0.
pub fn assert_only_recycles(counts: &BTreeMap<String, u64>, want: &str, min: u64) {
    let key = format!("recycles.{want}");
    assert!(
        counts.get(&key).is_some_and(|n| *n >= min),
        "fewer than {min} {key}: {counts:?}"
    );
    let others: Vec<_> = counts
        .iter()
        .filter(|(k, v)| **k != key && **v != 0)
        .collect();
    assert!(others.is_empty(), "other guards acted: {others:?}");
}

/// Waits until `n` workers are Ready in any slots (recycled workers move to spare slots,
/// so [`Cluster::wait_ready`]'s first `n` slots do not do); returns their pids.
pub fn wait_ready_anywhere(cluster: &Cluster, n: usize, timeout: Duration) -> Vec<u32> {
    crate::support::wait_for(timeout, &format!("{n} ready workers"), || {
        let ready = pids_in(&cluster.snapshot(), SlotState::Ready);
        (ready.len() == n && ready.iter().all(|p| crate::support::pid_alive(*p))).then_some(ready)
    })
}
