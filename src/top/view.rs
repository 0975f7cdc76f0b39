//! The view model of `flora-cluster top`: what two samples an interval apart show (rates are
//! differences, quantiles come from the histogram's growth over the interval). Pure: the
//! samples are read elsewhere (`run.rs`).

use std::collections::BTreeMap;

use crate::exporter::procfs::ProcStats;
use crate::scoreboard::{ClientAddr, HistogramSnapshot, SlotState, Snapshot};

/// One reading: a scoreboard snapshot and the CPU time and memory of its live processes.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The scoreboard.
    pub snap: Snapshot,
    /// `/proc` figures by pid (processes gone or unreadable are missing).
    pub procs: BTreeMap<u32, ProcStats>,
}

/// The order of the worker rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    /// By slot index (`s`).
    #[default]
    Slot,
    /// Busiest first (`r`: requests per second).
    Requests,
    /// Most CPU first (`c`).
    Cpu,
    /// Most resident memory first (`m`).
    Memory,
}

impl SortKey {
    /// The key for a keypress, if it is one of `s`, `r`, `c`, `m`.
    pub fn from_key(key: char) -> Option<Self> {
        match key {
            's' => Some(Self::Slot),
            'r' => Some(Self::Requests),
            'c' => Some(Self::Cpu),
            'm' => Some(Self::Memory),
            _ => None,
        }
    }

    /// How the footer names it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Slot => "slot",
            Self::Requests => "req/s",
            Self::Cpu => "cpu",
            Self::Memory => "memory",
        }
    }
}

/// The whole cluster over the interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterLine {
    /// Requests finished per second (none on the first sample).
    pub requests_per_second: Option<f64>,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Median duration of the requests finished in the interval, seconds.
    pub p50_seconds: Option<f64>,
    /// 99th percentile of the same, seconds.
    pub p99_seconds: Option<f64>,
    /// 5xx answers per second (none on the first sample).
    pub errors_per_second: Option<f64>,
    /// 5xx answers since the master started.
    pub errors_total: u64,
    /// Accept queues summed over the listeners: length and limit (none before the master's
    /// first sample).
    pub queue: Option<(u64, u64)>,
    /// Workers ready.
    pub ready: u64,
    /// Workers wanted.
    pub target: u64,
}

/// One worker.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    /// Slot index.
    pub slot: usize,
    /// Worker pid (0: none).
    pub pid: u32,
    /// State.
    pub state: SlotState,
    /// Generation.
    pub generation: u64,
    /// Requests finished per second (none on the first sample).
    pub requests_per_second: Option<f64>,
    /// Requests in flight now.
    pub in_flight: u64,
    /// 99th percentile of the requests it finished in the interval, seconds.
    pub p99_seconds: Option<f64>,
    /// CPU use over the interval, percent of one core (none: first sample or new process).
    pub cpu_percent: Option<f64>,
    /// Resident memory, bytes.
    pub rss_bytes: Option<u64>,
    /// Respawns of the slot.
    pub restarts: u64,
}

/// One request in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRow {
    /// Slot of the worker serving it.
    pub slot: usize,
    /// That worker's pid.
    pub pid: u32,
    /// Seconds since it started.
    pub age_seconds: f64,
    /// Method.
    pub method: String,
    /// Path (no query string).
    pub path: String,
    /// Route template (empty: unknown).
    pub route: String,
    /// Client.
    pub client: ClientAddr,
    /// The app's infos.
    pub infos: Vec<(String, String)>,
}

/// Everything one frame shows.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// Instance name.
    pub instance: String,
    /// Master pid.
    pub master_pid: u32,
    /// Whether the master is gone (the scoreboard is stale).
    pub stale: bool,
    /// Generation serving.
    pub generation: u64,
    /// Seconds between the two samples (0: one sample only).
    pub interval_secs: f64,
    /// The cluster line.
    pub cluster: ClusterLine,
    /// Workers, in `sort` order.
    pub workers: Vec<WorkerRow>,
    /// Requests in flight, longest-running first.
    pub requests: Vec<RequestRow>,
    /// The worker order.
    pub sort: SortKey,
    /// Whether the display is frozen (`p`).
    pub paused: bool,
    /// Whether the key help shows (`h`).
    pub help: bool,
    /// One frame to stdout (`--once`): no key footer.
    pub once: bool,
}

/// `later - earlier` bucket by bucket (a slot reused by a new worker never goes negative).
fn growth(earlier: &HistogramSnapshot, later: &HistogramSnapshot) -> HistogramSnapshot {
    HistogramSnapshot {
        counts: later
            .counts
            .iter()
            .enumerate()
            .map(|(i, n)| n.saturating_sub(earlier.counts.get(i).copied().unwrap_or(0)))
            .collect(),
        sum_seconds: (later.sum_seconds - earlier.sum_seconds).max(0.0),
    }
}

impl View {
    /// The view of the interval from `prev` to `cur` (pass the same sample twice for a
    /// first frame without rates).
    pub fn between(prev: &Sample, cur: &Sample, sort: SortKey) -> Self {
        let (p, c) = (&prev.snap, &cur.snap);
        let secs = c.taken_unix_ms.saturating_sub(p.taken_unix_ms) as f64 / 1000.0;
        let rate = |before: u64, after: u64| {
            (secs > 0.0).then(|| after.saturating_sub(before) as f64 / secs)
        };
        let (pt, ct) = (&p.totals.counters, &c.totals.counters);
        let hist = growth(&pt.histogram, &ct.histogram);
        let queue = (!c.listen_queues.is_empty()).then(|| {
            c.listen_queues.iter().fold((0u64, 0u64), |(l, m), q| {
                (l.saturating_add(q.length), m.saturating_add(q.limit))
            })
        });
        let cluster = ClusterLine {
            requests_per_second: rate(pt.requests_total, ct.requests_total),
            in_flight: ct.requests_active,
            p50_seconds: hist.quantile(0.5),
            p99_seconds: hist.quantile(0.99),
            errors_per_second: rate(pt.status[4], ct.status[4]),
            errors_total: ct.status[4],
            queue,
            ready: c.totals.workers_ready,
            target: c.target_workers,
        };
        let mut workers: Vec<WorkerRow> = c
            .slots
            .iter()
            .filter(|s| s.state != SlotState::Empty)
            .map(|s| {
                let before = p.slots.get(s.index);
                let counters = before.map(|b| &b.counters);
                let same_pid = before.is_some_and(|b| b.pid == s.pid) && s.pid != 0;
                let proc_now = cur.procs.get(&s.pid).filter(|_| s.state != SlotState::Dead);
                let proc_then = prev.procs.get(&s.pid).filter(|_| same_pid);
                let cpu = match (proc_then, proc_now) {
                    (Some(a), Some(b)) if secs > 0.0 => {
                        Some((b.cpu_seconds - a.cpu_seconds).max(0.0) / secs * 100.0)
                    }
                    _ => None,
                };
                WorkerRow {
                    slot: s.index,
                    pid: s.pid,
                    state: s.state,
                    generation: s.generation,
                    requests_per_second: rate(
                        counters.map_or(s.counters.requests_total, |b| b.requests_total),
                        s.counters.requests_total,
                    ),
                    in_flight: s.counters.requests_active,
                    p99_seconds: counters
                        .map_or_else(
                            || s.counters.histogram.clone(),
                            |b| growth(&b.histogram, &s.counters.histogram),
                        )
                        .quantile(0.99),
                    cpu_percent: cpu,
                    rss_bytes: proc_now.map(|p| p.rss_bytes),
                    restarts: s.restarts,
                }
            })
            .collect();
        sort_workers(&mut workers, sort);
        let mut requests: Vec<RequestRow> = c
            .slots
            .iter()
            .flat_map(|s| {
                s.connections.iter().filter_map(move |conn| {
                    let r = conn.request.as_ref()?;
                    Some(RequestRow {
                        slot: s.index,
                        pid: s.pid,
                        age_seconds: r.age_seconds,
                        method: r.method.clone(),
                        path: r.path.clone(),
                        route: r.route.clone(),
                        client: conn.client,
                        infos: r.infos.clone(),
                    })
                })
            })
            .collect();
        requests.sort_by(|a, b| b.age_seconds.total_cmp(&a.age_seconds));
        Self {
            instance: c.instance.clone(),
            master_pid: c.master_pid,
            stale: false,
            generation: c.generation,
            interval_secs: secs,
            cluster,
            workers,
            requests,
            sort,
            paused: false,
            help: false,
            once: false,
        }
    }

    /// Orders the worker rows by `sort` (the frame is not sampled again).
    pub fn resort(&mut self, sort: SortKey) {
        self.sort = sort;
        sort_workers(&mut self.workers, sort);
    }
}

/// Sorts rows by `key`, highest first (slot: ascending); ties and unknowns by slot.
pub fn sort_workers(rows: &mut [WorkerRow], key: SortKey) {
    let figure = |w: &WorkerRow| -> f64 {
        match key {
            SortKey::Slot => 0.0,
            SortKey::Requests => w.requests_per_second.unwrap_or(-1.0),
            SortKey::Cpu => w.cpu_percent.unwrap_or(-1.0),
            SortKey::Memory => w.rss_bytes.map_or(-1.0, |b| b as f64),
        }
    };
    rows.sort_by(|a, b| figure(b).total_cmp(&figure(a)).then(a.slot.cmp(&b.slot)));
}
