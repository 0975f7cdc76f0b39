//! Handles of custom metrics registered by a worker ([`crate::Worker::counter`],
//! [`crate::Worker::gauge`], [`crate::Worker::histogram`], [`crate::Worker::register`]).
//!
//! Each handle writes into the calling worker's own slot with lock-free atomics (no syscall, no
//! lock); readers combine the slots: counters and histograms are summed over every slot (they
//! survive respawns, so they never go down), gauges are combined by their [`Aggregation`].
//!
//! ```no_run
//! # async fn f(worker: flora_cluster::Worker) -> Result<(), flora_cluster::Error> {
//! use flora_cluster::scoreboard::Aggregation;
//! let jobs = worker.counter("jobs_done_total", "Jobs finished.").await?;
//! let depth = worker.gauge("queue_depth", "Jobs waiting.", Aggregation::Max).await?;
//! let took = worker.histogram("job_seconds", "Job duration.", &[0.01, 0.1, 1.0]).await?;
//! jobs.inc();
//! depth.set(12.0);
//! took.observe(0.042);
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

pub use crate::scoreboard::Aggregation;
use crate::scoreboard::{mono_ns, Registered, SlotWriter};

fn add_f64(cell: &AtomicU64, v: f64) {
    let _ = cell.fetch_update(Relaxed, Relaxed, |bits| {
        Some((f64::from_bits(bits) + v).to_bits())
    });
}

/// A custom counter: adds into this worker's cell.
#[derive(Debug, Clone)]
pub struct Counter {
    writer: SlotWriter,
    cell: usize,
}

impl Counter {
    pub(crate) fn new(writer: SlotWriter, at: Registered) -> Self {
        Self {
            writer,
            cell: at.cell,
        }
    }

    fn cell(&self) -> Option<&AtomicU64> {
        self.writer.custom_cell(self.cell)
    }

    /// Adds 1.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        if let Some(c) = self.cell() {
            c.fetch_add(n, Relaxed);
        }
    }

    /// This worker slot's count (the cluster-wide sum is in the snapshot).
    pub fn get(&self) -> u64 {
        self.cell().map_or(0, |c| c.load(Relaxed))
    }

    pub(crate) fn cell_index(&self) -> usize {
        self.cell
    }
}

/// A custom gauge: this worker's value, combined across workers by its aggregation.
#[derive(Debug, Clone)]
pub struct Gauge {
    writer: SlotWriter,
    cell: usize,
    /// `latest` needs the time of each set; the others only whether it was set.
    timed: bool,
}

impl Gauge {
    pub(crate) fn new(writer: SlotWriter, at: Registered, aggregation: Aggregation) -> Self {
        Self {
            writer,
            cell: at.cell,
            timed: aggregation == Aggregation::Latest,
        }
    }

    fn mark_set(&self) {
        if let Some(c) = self.writer.custom_cell(self.cell + 1) {
            // A clock read only where the aggregation needs it: it costs more than the rest.
            let stamp = if self.timed { mono_ns().max(1) } else { 1 };
            c.store(stamp, Relaxed);
        }
    }

    /// Sets this worker's value.
    #[inline]
    pub fn set(&self, v: f64) {
        if let Some(c) = self.writer.custom_cell(self.cell) {
            c.store(v.to_bits(), Relaxed);
        }
        self.mark_set();
    }

    /// Adds `v` (negative to subtract) to this worker's value.
    #[inline]
    pub fn add(&self, v: f64) {
        if let Some(c) = self.writer.custom_cell(self.cell) {
            add_f64(c, v);
        }
        self.mark_set();
    }

    /// Adds 1.
    pub fn inc(&self) {
        self.add(1.0);
    }

    /// Subtracts 1.
    pub fn dec(&self) {
        self.add(-1.0);
    }

    /// This worker's value.
    pub fn get(&self) -> f64 {
        self.writer
            .custom_cell(self.cell)
            .map_or(0.0, |c| f64::from_bits(c.load(Relaxed)))
    }
}

/// A custom histogram with fixed buckets.
#[derive(Debug, Clone)]
pub struct Histogram {
    writer: SlotWriter,
    cell: usize,
    bounds: Arc<[f64]>,
}

impl Histogram {
    pub(crate) fn new(writer: SlotWriter, at: Registered, bounds: &[f64]) -> Self {
        Self {
            writer,
            cell: at.cell,
            bounds: bounds.into(),
        }
    }

    /// Records one observation.
    #[inline]
    pub fn observe(&self, v: f64) {
        let bucket = self.bounds.partition_point(|&b| b < v);
        if let Some(c) = self.writer.custom_cell(self.cell + bucket) {
            c.fetch_add(1, Relaxed);
        }
        if let Some(sum) = self.writer.custom_cell(self.cell + self.bounds.len() + 1) {
            add_f64(sum, v);
        }
    }
}
