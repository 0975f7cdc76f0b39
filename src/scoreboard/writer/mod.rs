//! Writes into one slot: the tracking hot path (lock-free atomics, no syscalls) and the few
//! master-side writes done when a worker starts or is gone.
//!
//! - this file: [`SlotWriter`], a worker's handle on its slot;
//! - `conn`: [`ConnGuard`] and [`RequestGuard`], the per-connection and per-request hot path;
//! - `finished`: the requests this process finished, in process memory (the heartbeat's count);
//! - `lane`: which copy of the slot's counters the calling thread writes;
//! - `lifecycle`: the master's writes around a worker's life.
//!
//! Orderings: counters and gauges are `Relaxed` (statistics; nothing is published through
//! them). Entries and the last request use a seqlock (`super::seqlock`). A writer that finds
//! the seqlock held (two HTTP/2 streams of one connection at once) skips the display update
//! instead of waiting; counters are never skipped.
//!
//! # No locked instruction on the common path
//! A slot has two writer lanes (`LANES`): the first thread of the worker that writes it owns
//! `LANE_OWN` and updates its counters and its last-request record with plain loads and
//! stores; other threads use `LANE_SHARED` with read-modify-writes. An HTTP/1 connection's
//! requests come one at a time from the task serving it, so its entry's seqlock is taken with
//! a plain store too (`seqlock::write_owned`). A one-thread worker (the usual preforked
//! set-up) therefore records a request without any atomic read-modify-write on the segment.

mod conn;
mod finished;
mod lane;
mod lifecycle;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering::*};

pub use conn::{ConnGuard, RequestGuard};
use lane::Lane;

use super::raw::layout::{Slot, ROUTE_CELLS, STATUS_COUNTERS};
use super::{Scoreboard, SlotState};

/// Writer of one slot, held by the worker that owns it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SlotWriter {
    sb: Scoreboard,
    index: usize,
}

impl SlotWriter {
    pub(crate) fn new(sb: Scoreboard, index: usize) -> Self {
        Self { sb, index }
    }

    #[inline]
    fn slot(&self) -> &Slot {
        // The index was checked against the segment in `Scoreboard::writer`.
        self.sb
            .slot(self.index)
            .expect("slot index checked at construction")
    }

    /// This slot's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The scoreboard this writer belongs to.
    pub fn scoreboard(&self) -> &Scoreboard {
        &self.sb
    }

    /// Whether this slot's worker is draining (it set [`SlotState::Draining`]).
    pub fn is_draining(&self) -> bool {
        SlotState::from_raw(self.slot().state.load(Relaxed)) == SlotState::Draining
    }

    /// Sets the slot's state (the worker sets Ready and Draining).
    pub fn set_state(&self, state: SlotState) {
        self.slot().state.store(state.to_raw(), Release);
    }

    /// Adds to the bytes-received counter.
    #[inline]
    pub fn add_bytes_in(&self, n: u64) {
        let lane = Lane::of(self.slot());
        lane.add(&lane.counters.bytes_in, n);
    }

    /// Adds to the bytes-received and bytes-sent counters at once.
    #[inline]
    pub fn add_bytes(&self, bytes_in: u64, bytes_out: u64) {
        let lane = Lane::of(self.slot());
        lane.add(&lane.counters.bytes_in, bytes_in);
        lane.add(&lane.counters.bytes_out, bytes_out);
    }

    /// Adds to the bytes-sent counter.
    #[inline]
    pub fn add_bytes_out(&self, n: u64) {
        let lane = Lane::of(self.slot());
        lane.add(&lane.counters.bytes_out, n);
    }

    /// Counts a TLS handshake that failed (the connection is dropped without a request).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let sb = flora_cluster::scoreboard::Scoreboard::create(&dir.path().join("s"), "t", 1).unwrap();
    /// let writer = sb.writer(0).unwrap();
    /// writer.tls_handshake_failed();
    /// assert_eq!(sb.snapshot().totals.counters.tls_handshake_failures, 1);
    /// ```
    #[inline]
    pub fn tls_handshake_failed(&self) {
        let lane = Lane::of(self.slot());
        lane.add(&lane.counters.tls_handshake_failures, 1);
    }

    /// Counts a request answered 503 because it ran past the request timeout
    /// (`flora_request_timeouts_total`; the request itself is recorded by its guard).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let sb = flora_cluster::scoreboard::Scoreboard::create(&dir.path().join("s"), "t", 1).unwrap();
    /// let writer = sb.writer(0).unwrap();
    /// writer.request_timed_out();
    /// assert_eq!(sb.snapshot().totals.counters.request_timeouts, 1);
    /// ```
    #[inline]
    pub fn request_timed_out(&self) {
        let lane = Lane::of(self.slot());
        lane.add(&lane.counters.request_timeouts, 1);
    }

    /// The route id of `route` (0 when the cluster does not count routes).
    pub(crate) fn route_id(&self, route: &str) -> u32 {
        if self.sb.inner.map.route_limit() == 0 {
            return 0;
        }
        super::routes::id(&self.sb.inner, route)
    }

    /// Counts a finished request under route id `route` (not 0).
    #[inline(never)]
    fn record_route(&self, lane: Lane<'_>, route: u32, status: u16, dur_ns: u64) {
        let seg = &self.sb.inner;
        let Some(cells) = super::routes::cells(seg, self.index, lane.index(), route) else {
            return;
        };
        let c = &cells.cells;
        lane.add(&c[super::status::index(status)], 1);
        lane.add(&c[STATUS_COUNTERS + conn::bucket_index(dur_ns)], 1);
        lane.add(&c[ROUTE_CELLS - 1], dur_ns);
        if super::routes::is_overflow(seg, route) {
            lane.add(&lane.counters.route_overflow, 1);
        }
    }

    /// Cell `i` of this slot's custom metric cells.
    #[inline]
    pub(crate) fn custom_cell(&self, i: usize) -> Option<&AtomicU64> {
        self.slot().custom.get(i)
    }

    /// Connections open in this slot now.
    pub fn conns_open(&self) -> u64 {
        conns_open(self.slot())
    }

    /// Whether this worker holds more than its share of open connections among the ready
    /// workers of its generation: `(mine, fewest among the others)`, `None` without peers.
    pub(crate) fn conn_share(&self) -> Option<(u64, u64)> {
        let me = self.slot();
        let generation = me.generation.load(Relaxed);
        let mine = conns_open(me);
        let mut fewest: Option<u64> = None;
        for i in (0..self.sb.slot_count()).filter(|&i| i != self.index) {
            let Some(s) = self.sb.slot(i) else { break };
            if SlotState::from_raw(s.state.load(Relaxed)) == SlotState::Ready
                && s.generation.load(Relaxed) == generation
            {
                let open = conns_open(s);
                fewest = Some(fewest.map_or(open, |f| f.min(open)));
            }
        }
        fewest.map(|f| (mine, f))
    }
}

/// Connections open in `slot` now (both lanes).
fn conns_open(slot: &Slot) -> u64 {
    super::snapshot::gauge(slot, |c| &c.conns_open)
}
