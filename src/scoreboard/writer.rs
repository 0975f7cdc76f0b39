//! Writes into one slot: the tracking hot path (lock-free atomics, no syscalls) and the few
//! master-side writes done when a worker starts or is gone.
//!
//! Orderings: counters and gauges are `Relaxed` (statistics; nothing is published through
//! them). Entries and the last request use a seqlock: claim `seq` even→odd with a CAS, a
//! `Release` fence, `Relaxed` data stores, then `Release`-store the next even value. A writer
//! that finds the seqlock held (two HTTP/2 streams of one connection at once) skips the
//! display update instead of waiting; counters are never skipped.
//!
//! # No locked instruction on the common path
//! A slot has two writer lanes ([`LANES`](super::raw::LANES)): the first thread of the worker that writes it
//! owns [`LANE_OWN`] and updates its counters and its last-request record with plain loads
//! and stores; other threads use [`LANE_SHARED`] with read-modify-writes. An HTTP/1
//! connection's requests come one at a time from the task serving it, so its entry's seqlock
//! is taken with a plain store too ([`write_owned`]). A one-thread worker (the usual
//! preforked set-up) therefore records a request without any atomic read-modify-write on
//! the segment.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{fence, AtomicU64, Ordering::*};
use std::sync::Arc;

use super::clock::fast_ns;
use super::raw::{
    ConnEntry, LastRequest, Slot, SlotCounters, CONN_ENTRIES, HISTOGRAM_BOUNDS, LANE_OWN,
    LANE_SHARED, STATUS_CLASSES,
};
use super::{mono_ns, strings, unix_ms, Scoreboard, SlotState};

/// Runs `f` under the seqlock `seq` if no other writer holds it. Returns whether it ran.
pub(crate) fn try_write(seq: &AtomicU64, f: impl FnOnce()) -> bool {
    let s = seq.load(Relaxed);
    if s & 1 == 1 || seq.compare_exchange(s, s + 1, Relaxed, Relaxed).is_err() {
        return false;
    }
    fence(Release);
    f();
    seq.store(s.wrapping_add(2), Release);
    true
}

/// Runs `f` under the seqlock `seq` whatever state another writer left it in (the master
/// rewriting a header that a worker may have scribbled): readers retry while it is odd.
pub(crate) fn force_write(seq: &AtomicU64, f: impl FnOnce()) {
    let s = seq.load(Relaxed) | 1;
    seq.store(s, Relaxed);
    fence(Release);
    f();
    seq.store(s.wrapping_add(1), Release);
}

/// Runs `f` under the seqlock `seq` for its one writer: plain stores, no CAS. Skips (returns
/// false) when the seqlock is held, which only a rare second writer can do (an app setting
/// infos from another task while the request ends): the pair can then tear the shown
/// strings for one read, never the counters.
pub(crate) fn write_owned(seq: &AtomicU64, f: impl FnOnce()) -> bool {
    let s = seq.load(Relaxed);
    if s & 1 == 1 {
        return false;
    }
    seq.store(s.wrapping_add(1), Relaxed);
    fence(Release);
    f();
    seq.store(s.wrapping_add(2), Release);
    true
}

/// Next thread number of this process (tokens are `pid << 32 | number`, never 0).
static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's token once assigned (0 = not yet). A `const` `Cell` of a plain integer:
    /// reading it is one load, with no lazy-initialisation or destructor state to check.
    static THREAD_TOKEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The calling thread's token (never 0).
#[inline]
fn thread_token() -> u64 {
    THREAD_TOKEN.with(|t| match t.get() {
        0 => {
            let token = (u64::from(std::process::id()) << 32)
                | (NEXT_THREAD.fetch_add(1, Relaxed) & 0xffff_ffff).max(1);
            t.set(token);
            token
        }
        token => token,
    })
}

/// The counters lane the calling thread writes, and whether it writes it alone.
#[derive(Clone, Copy)]
struct Lane<'a> {
    counters: &'a SlotCounters,
    index: usize,
    exclusive: bool,
}

impl<'a> Lane<'a> {
    /// The lane of the calling thread in `slot`: the owner's lane if this thread owns it
    /// (or claims it now), the shared one otherwise.
    #[inline]
    fn of(slot: &'a Slot) -> Self {
        let owner = &slot.counters[LANE_OWN].owner;
        let me = thread_token();
        let current = owner.load(Relaxed);
        let exclusive = me != 0
            && (current == me
                || (current == 0 && owner.compare_exchange(0, me, Relaxed, Relaxed).is_ok()));
        let index = if exclusive { LANE_OWN } else { LANE_SHARED };
        Self {
            counters: &slot.counters[index],
            index,
            exclusive,
        }
    }

    /// Adds `n` (wrapping: `u64::MAX` subtracts one) to a counter of this lane.
    #[inline]
    fn add(self, counter: &AtomicU64, n: u64) {
        if self.exclusive {
            counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
        } else {
            counter.fetch_add(n, Relaxed);
        }
    }

    /// Writes the lane's last-request record under its seqlock.
    #[inline]
    fn write_last(self, slot: &Slot, f: impl FnOnce(&LastRequest)) {
        let last = &slot.last[self.index];
        if self.exclusive {
            write_owned(&last.seq, || f(last));
        } else {
            try_write(&last.seq, || f(last));
        }
    }
}

/// Subtracts one from a gauge, as a wrapping add.
const MINUS_ONE: u64 = u64::MAX;

/// Histogram bounds in ns (bucket `i` holds durations `<= BOUNDS_NS[i]`).
const BOUNDS_NS: [u64; HISTOGRAM_BOUNDS.len()] = {
    let mut ns = [0u64; HISTOGRAM_BOUNDS.len()];
    let mut i = 0;
    while i < ns.len() {
        ns[i] = (HISTOGRAM_BOUNDS[i] * 1e9) as u64;
        i += 1;
    }
    ns
};

/// Index of the histogram bucket for a duration in ns.
pub(crate) fn bucket_index(ns: u64) -> usize {
    // Most requests of a fast service land in the first bucket: skip the search for them.
    if ns <= BOUNDS_NS[0] {
        return 0;
    }
    BOUNDS_NS.partition_point(|&b| b < ns)
}

/// Status class index: 0..=4 for 1xx..5xx, 5 for anything else (no response).
pub(crate) fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => STATUS_CLASSES - 1,
    }
}

/// A client address as the segment stores it: IP (IPv4 mapped into IPv6) in two words, then
/// port and family (bit 16 = IPv6).
fn addr_words(addr: SocketAddr) -> [u64; 3] {
    let (bytes, v6) = match addr.ip() {
        IpAddr::V4(v4) => (v4.to_ipv6_mapped().octets(), 0),
        IpAddr::V6(v6) => (v6.octets(), 1 << 16),
    };
    let (hi, lo) = bytes.split_at(8);
    [
        u64::from_be_bytes(hi.try_into().unwrap_or_default()),
        u64::from_be_bytes(lo.try_into().unwrap_or_default()),
        u64::from(addr.port()) | v6,
    ]
}

fn store_addr(ip: &[AtomicU64; 2], port: &AtomicU64, words: [u64; 3]) {
    ip[0].store(words[0], Relaxed);
    ip[1].store(words[1], Relaxed);
    port.store(words[2], Relaxed);
}

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

    /// Adds to the bytes-sent counter.
    #[inline]
    pub fn add_bytes_out(&self, n: u64) {
        let lane = Lane::of(self.slot());
        lane.add(&lane.counters.bytes_out, n);
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

    /// Records an accepted connection from `peer` and claims a table entry for it.
    pub fn conn_open(&self, peer: SocketAddr) -> ConnGuard {
        let lane = Lane::of(self.slot());
        lane.add(&lane.counters.conns_open, 1);
        lane.add(&lane.counters.conns_total, 1);
        let entry = self.claim_entry();
        let peer = addr_words(peer);
        match entry {
            Some(i) => {
                let e = &self.slot().conns[i];
                let now = fast_ns();
                try_write(&e.seq, || {
                    store_addr(&e.client_ip, &e.client_port, peer);
                    e.opened_ns.store(now, Relaxed);
                    e.idle_since_ns.store(now, Relaxed);
                    e.requests.store(0, Relaxed);
                    e.req_start_ns.store(0, Relaxed);
                    e.inflight.store(0, Relaxed);
                    for info in &e.infos {
                        info.key.len.store(0, Relaxed);
                    }
                    e.in_use.store(1, Relaxed);
                });
            }
            None => lane.add(&lane.counters.conn_overflow, 1),
        }
        ConnGuard {
            inner: Arc::new(ConnInner {
                writer: self.clone(),
                entry,
                peer,
                has_pending: std::sync::atomic::AtomicBool::new(false),
                pending: std::sync::Mutex::new(Vec::new()),
                had_infos: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    fn claim_entry(&self) -> Option<usize> {
        let bitmap = &self.slot().conn_bitmap;
        let all: u64 = if CONN_ENTRIES == 64 {
            u64::MAX
        } else {
            (1u64 << CONN_ENTRIES) - 1
        };
        let mut bm = bitmap.load(Relaxed);
        loop {
            let free = !bm & all;
            if free == 0 {
                return None;
            }
            let i = free.trailing_zeros() as usize;
            match bitmap.compare_exchange_weak(bm, bm | (1 << i), AcqRel, Relaxed) {
                Ok(_) => return Some(i),
                Err(now) => bm = now,
            }
        }
    }
}

#[derive(Debug)]
struct ConnInner {
    writer: SlotWriter,
    entry: Option<usize>,
    /// The client's address as stored in the segment (see [`addr_words`]).
    peer: [u64; 3],
    /// Custom counter increments deferred to the end of the current request.
    has_pending: std::sync::atomic::AtomicBool,
    pending: std::sync::Mutex<Vec<(usize, u64)>>,
    /// Whether an info was set since the last request began (so there is something to clear).
    had_infos: std::sync::atomic::AtomicBool,
}

impl ConnInner {
    /// This connection's table entry in `slot` (its writer's slot), if it got one.
    fn entry<'a>(&self, slot: &'a Slot) -> Option<&'a ConnEntry> {
        self.entry.and_then(|i| slot.conns.get(i))
    }
}

impl Drop for ConnInner {
    fn drop(&mut self) {
        let slot = self.writer.slot();
        // Adds deferred after the connection's last request ended count now.
        let pending = self
            .pending
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (cell, n) in pending.drain(..) {
            if let Some(c) = slot.custom.get(cell) {
                c.fetch_add(n, Relaxed);
            }
        }
        let lane = Lane::of(slot);
        lane.add(&lane.counters.conns_open, MINUS_ONE);
        if let (Some(i), Some(e)) = (self.entry, self.entry(slot)) {
            // The last handle is gone: nobody else writes this entry any more.
            try_write(&e.seq, || e.in_use.store(0, Relaxed));
            slot.conn_bitmap.fetch_and(!(1u64 << i), Release);
        }
    }
}

/// An open connection in the scoreboard; dropping the last clone closes it.
#[derive(Debug, Clone)]
pub struct ConnGuard {
    inner: Arc<ConnInner>,
}

impl ConnGuard {
    /// The slot writer this connection belongs to.
    pub fn writer(&self) -> &SlotWriter {
        &self.inner.writer
    }

    /// Adds `n` to custom cell `cell` of this slot when the current request ends, or when the
    /// connection closes if no request ends first (used by [`crate::worker::RequestInfo::add`]).
    pub fn defer_add(&self, cell: usize, n: u64) {
        if let Ok(mut p) = self.inner.pending.lock() {
            p.push((cell, n));
            self.inner.has_pending.store(true, Relaxed);
        }
    }

    /// Starts tracking a request on this connection. `version` is 9, 10, 11, 20 or 30.
    ///
    /// HTTP/1 (a `version` below 20) requests of one connection must come one at a time, as
    /// HTTP/1 itself orders them (each begins after the previous one ended): their entry
    /// updates then take no atomic read-modify-write. Requests that can overlap on one
    /// connection (HTTP/2 streams) must pass 20 or 30.
    pub fn request_begin(&self, method: &str, path: &str, version: u8) -> RequestGuard {
        let slot = self.inner.writer.slot();
        let lane = Lane::of(slot);
        lane.add(&lane.counters.requests_active, 1);
        let start = fast_ns();
        let sequential = version < 20;
        if let Some(e) = self.inner.entry(slot) {
            let show = || {
                e.req_start_ns.store(start, Relaxed);
                e.req_version.store(u64::from(version), Relaxed);
                strings::write(&e.method, method);
                strings::write(&e.path, path);
                // The previous request's infos, if it had any, do not belong to this one.
                if self.inner.had_infos.load(Relaxed) {
                    self.inner.had_infos.store(false, Relaxed);
                    for info in &e.infos {
                        info.key.len.store(0, Relaxed);
                    }
                }
            };
            if sequential {
                // Under the seqlock with the method and path, so readers see them together;
                // stored anyway if the seqlock was held (the count matters more than the view).
                if !write_owned(&e.seq, || {
                    show();
                    e.inflight.store(1, Relaxed);
                }) {
                    e.inflight.store(1, Relaxed);
                }
            } else {
                // Shown first, counted after: a reader may miss the new stream for a moment
                // but never pairs the count with the previous request's method and path.
                try_write(&e.seq, show);
                e.inflight.fetch_add(1, Relaxed);
            }
        }
        RequestGuard {
            conn: self.clone(),
            start_ns: start,
            status: 0,
            sequential,
            done: false,
            body_bytes: 0,
        }
    }

    /// Sets an app info on the connection's in-flight request (shown beside it while it is in
    /// flight). Keys and
    /// values are truncated to [`super::INFO_KEY_BYTES`] / [`super::INFO_VALUE_BYTES`]; at
    /// most [`super::INFO_COUNT`] infos are kept (a repeated key replaces its value).
    /// Returns false when the info could not be stored (table full, or untracked connection).
    pub fn set_info(&self, key: &str, value: &str) -> bool {
        let Some(e) = self.inner.entry(self.inner.writer.slot()) else {
            return false;
        };
        let key = strings::truncate_at_char(key, super::INFO_KEY_BYTES);
        self.inner.had_infos.store(true, Relaxed);
        let mut stored = false;
        try_write(&e.seq, || {
            let found = e.infos.iter().find(|c| {
                let len = c.key.len.load(Relaxed);
                len == 0 || strings::equals(&c.key, key)
            });
            if let Some(cell) = found {
                strings::write(&cell.value, value);
                strings::write(&cell.key, key);
                stored = true;
            }
        });
        stored
    }
}

/// An in-flight request; finishing or dropping it records the request.
#[derive(Debug)]
pub struct RequestGuard {
    conn: ConnGuard,
    start_ns: u64,
    status: u16,
    /// An HTTP/1 request: the only writer of its connection's entry.
    sequential: bool,
    done: bool,
    /// Response body bytes produced so far (recorded when the guard drops).
    body_bytes: u64,
}

impl RequestGuard {
    /// Remembers the response status (recorded when the guard finishes or drops).
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    /// The connection this request belongs to.
    pub fn conn(&self) -> &ConnGuard {
        &self.conn
    }

    /// Sets an app info on the request; see [`ConnGuard::set_info`].
    pub fn set_info(&self, key: &str, value: &str) -> bool {
        self.conn.set_info(key, value)
    }

    /// Adds `n` to the response body bytes recorded when the guard finishes or drops.
    pub fn add_body_bytes(&mut self, n: u64) {
        self.body_bytes = self.body_bytes.wrapping_add(n);
    }

    /// Records the request as finished with the status set before and `body_bytes` sent.
    pub fn finish_with_bytes(mut self, body_bytes: u64) {
        self.record(body_bytes);
    }

    /// Records the request as finished with `status` and `body_bytes` sent.
    pub fn finish(mut self, status: u16, body_bytes: u64) {
        self.status = status;
        self.record(body_bytes);
    }

    fn record(&mut self, body_bytes: u64) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let inner = &self.conn.inner;
        let slot = inner.writer.slot();
        let now = fast_ns();
        let dur = now.saturating_sub(self.start_ns);
        let lane = Lane::of(slot);
        let c = lane.counters;
        lane.add(&c.requests_active, MINUS_ONE);
        // requests_total is the sum of the status classes: one add fewer per request.
        lane.add(&c.status[status_class(self.status)], 1);
        lane.add(&c.histogram[bucket_index(dur)], 1);
        lane.add(&c.duration_sum_ns, dur);
        if inner.has_pending.load(Relaxed) && inner.has_pending.swap(false, Relaxed) {
            if let Ok(mut p) = inner.pending.lock() {
                for (cell, n) in p.drain(..) {
                    if let Some(c) = slot.custom.get(cell) {
                        c.fetch_add(n, Relaxed);
                    }
                }
            }
        }
        let Some(e) = inner.entry(slot) else { return };
        let finished = || {
            // Single writer under the seqlock: a plain load and store, no atomic add.
            e.requests.store(e.requests.load(Relaxed) + 1, Relaxed);
            e.idle_since_ns.store(now, Relaxed);
        };
        if self.sequential {
            if !write_owned(&e.seq, || {
                finished();
                e.inflight.store(0, Relaxed);
            }) {
                e.inflight.store(0, Relaxed);
            }
        } else {
            e.inflight.fetch_sub(1, Relaxed);
            try_write(&e.seq, finished);
        }
        lane.write_last(slot, |last| {
            last.status.store(u64::from(self.status), Relaxed);
            last.duration_ns.store(dur, Relaxed);
            last.finished_mono_ns.store(now, Relaxed);
            last.bytes_sent.store(body_bytes, Relaxed);
            last.version.store(e.req_version.load(Relaxed), Relaxed);
            store_addr(&last.client_ip, &last.client_port, inner.peer);
            copy_words(
                &e.method.words,
                &last.method.words,
                &e.method.len,
                &last.method.len,
            );
            copy_words(&e.path.words, &last.path.words, &e.path.len, &last.path.len);
        });
    }
}

/// Connections open in `slot` now (both lanes).
fn conns_open(slot: &Slot) -> u64 {
    super::snapshot::gauge(slot, |c| &c.conns_open)
}

/// Copies a stored string: only the words its length uses.
fn copy_words(src: &[AtomicU64], dst: &[AtomicU64], src_len: &AtomicU64, dst_len: &AtomicU64) {
    let len = src_len.load(Relaxed);
    let words = (((len & !(1 << 63)) as usize).div_ceil(8)).min(src.len());
    for (s, d) in src[..words].iter().zip(dst) {
        d.store(s.load(Relaxed), Relaxed);
    }
    dst_len.store(len, Relaxed);
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        // hyper drops a body at its end without polling it again (a `Full` after its one
        // frame): the bytes it produced are recorded here.
        self.record(self.body_bytes);
    }
}

/// Master-side writes: the master writes a slot only around its worker's life.
impl Scoreboard {
    /// A worker was spawned into `index`.
    pub(crate) fn slot_spawned(&self, index: usize, pid: u32, generation: u64) {
        let Some(s) = self.slot(index) else { return };
        let started = unix_ms();
        self.with_slot_truth(index, |t| {
            t.pid = pid;
            t.generation = generation;
            t.started_unix_ms = started;
            t.state = SlotState::Starting;
        });
        s.pid.store(u64::from(pid), Relaxed);
        s.generation.store(generation, Relaxed);
        s.started_unix_ms.store(started, Relaxed);
        s.started_mono_ns.store(mono_ns(), Relaxed);
        // The owner's lane was released when the slot's last worker was gone (`slot_exited`;
        // a new segment starts released): resetting it here could race with the new worker,
        // already running, claiming it.
        self.reset_gauges(index);
        s.state.store(SlotState::Starting.to_raw(), Release);
    }

    /// The worker of `index` is gone: reset its gauges and connection table, keep counters.
    pub(crate) fn slot_exited(&self, index: usize, wait_status: i32) {
        let Some(s) = self.slot(index) else { return };
        self.with_slot_truth(index, |t| {
            t.pid = 0;
            t.state = SlotState::Dead;
        });
        s.state.store(SlotState::Dead.to_raw(), Release);
        s.pid.store(0, Relaxed);
        s.last_exit
            .store(u64::from(wait_status as u32) + 1, Relaxed);
        for lane in &s.counters {
            lane.conns_open.store(0, Relaxed);
            lane.requests_active.store(0, Relaxed);
        }
        s.counters[LANE_OWN].owner.store(0, Relaxed);
        for e in &s.conns {
            // A worker killed mid-write leaves the seqlock odd: make it even again.
            let seq = e.seq.load(Relaxed);
            e.seq.store((seq | 1).wrapping_add(1), Relaxed);
            e.in_use.store(0, Relaxed);
            e.inflight.store(0, Relaxed);
        }
        for last in &s.last {
            let seq = last.seq.load(Relaxed);
            if seq & 1 == 1 {
                last.seq.store(seq.wrapping_add(1), Relaxed);
            }
        }
        s.conn_bitmap.store(0, Release);
    }

    /// Counts a respawn of `index`.
    pub(crate) fn slot_restarted(&self, index: usize) {
        let Some(s) = self.slot(index) else { return };
        match self.with_slot_truth(index, |t| {
            t.restarts += 1;
            t.restarts
        }) {
            Some(n) => s.restarts.store(n, Relaxed),
            None => {
                s.restarts.fetch_add(1, Relaxed);
            }
        }
    }

    /// Updates the creator's record of slot `index` (none in other processes).
    fn with_slot_truth<T>(
        &self,
        index: usize,
        f: impl FnOnce(&mut super::segment::SlotTruth) -> T,
    ) -> Option<T> {
        let truth = self.segment().truth.as_ref()?;
        let mut slots = truth.slots();
        slots.get_mut(index).map(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_classes() {
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(100_000), 0);
        assert_eq!(bucket_index(100_001), 1);
        assert_eq!(bucket_index(500_000), 2);
        assert_eq!(bucket_index(10_000_000_000), 15);
        assert_eq!(bucket_index(u64::MAX), 16);
        for (code, class) in [(100, 0), (200, 1), (204, 1), (302, 2), (404, 3), (503, 4)] {
            assert_eq!(status_class(code), class);
        }
        assert_eq!(status_class(0), 5);
        assert_eq!(status_class(600), 5);
    }

    #[test]
    fn seqlock_skips_when_held() {
        let seq = AtomicU64::new(0);
        assert!(try_write(&seq, || {
            assert!(!try_write(&seq, || ()));
        }));
        assert_eq!(seq.load(Relaxed), 2);
    }

    #[test]
    fn owned_seqlock_writes_and_skips_when_held() {
        let seq = AtomicU64::new(4);
        assert!(write_owned(&seq, || assert_eq!(seq.load(Relaxed), 5)));
        assert_eq!(seq.load(Relaxed), 6);
        seq.store(7, Relaxed);
        assert!(!write_owned(&seq, || panic!("ran under a held seqlock")));
        assert_eq!(seq.load(Relaxed), 7);
    }

    fn segment(slots: usize) -> (tempfile::TempDir, Scoreboard) {
        let dir = tempfile::tempdir().expect("tempdir");
        let sb = Scoreboard::create(&dir.path().join("s"), "t", slots).expect("segment");
        (dir, sb)
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:4000".parse().expect("addr")
    }

    #[test]
    fn first_writing_thread_owns_the_plain_lane_others_share_the_atomic_one() {
        let (_dir, sb) = segment(1);
        let w = sb.writer(0).expect("writer");
        let conn = w.conn_open(peer());
        conn.request_begin("GET", "/", 11).finish(200, 1);
        let slot = sb.slot(0).expect("slot");
        assert_eq!(slot.counters[LANE_OWN].owner.load(Relaxed), thread_token());
        assert_eq!(slot.counters[LANE_OWN].status[1].load(Relaxed), 1);
        let w2 = w.clone();
        std::thread::spawn(move || {
            w2.conn_open(peer())
                .request_begin("GET", "/b", 11)
                .finish(404, 0);
        })
        .join()
        .expect("thread");
        assert_eq!(slot.counters[LANE_SHARED].status[3].load(Relaxed), 1);
        assert_eq!(slot.counters[LANE_OWN].status[3].load(Relaxed), 0);
        // The other thread's request finished last: it is the slot's last request.
        let snap = sb.snapshot();
        let last = snap.slots[0].last_request.as_ref().expect("last request");
        assert_eq!((last.path.as_str(), last.status), ("/b", 404));
        assert_eq!(snap.slots[0].counters.requests_total, 2);
        drop(conn);
        assert_eq!(sb.snapshot().slots[0].counters.conns_open, 0);
    }

    #[test]
    fn threads_on_one_slot_lose_no_count() {
        let (_dir, sb) = segment(1);
        let w = sb.writer(0).expect("writer");
        const THREADS: u64 = 4;
        const EACH: u64 = 5_000;
        // Connections opened on one thread and closed on another: the gauge is raised on one
        // lane and lowered on the other, and still sums to zero.
        let conns: Vec<ConnGuard> = (0..THREADS).map(|_| w.conn_open(peer())).collect();
        let handles: Vec<_> = conns
            .into_iter()
            .map(|conn| {
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        let mut r =
                            conn.request_begin("GET", "/x", if i % 2 == 0 { 11 } else { 20 });
                        r.set_status(200);
                        r.finish_with_bytes(3);
                        conn.writer().add_bytes_out(10);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        let s = &sb.snapshot().slots[0];
        assert_eq!(s.counters.requests_total, THREADS * EACH);
        assert_eq!(s.counters.status[1], THREADS * EACH);
        assert_eq!(
            s.counters.histogram.counts.iter().sum::<u64>(),
            THREADS * EACH
        );
        assert_eq!(s.counters.bytes_out, THREADS * EACH * 10);
        assert_eq!(
            (
                s.counters.requests_active,
                s.counters.conns_open,
                s.counters.conns_total
            ),
            (0, 0, THREADS)
        );
    }

    #[test]
    fn a_new_worker_claims_the_owner_lane_afresh() {
        let (_dir, sb) = segment(1);
        let w = sb.writer(0).expect("writer");
        w.conn_open(peer())
            .request_begin("GET", "/", 11)
            .finish(200, 0);
        let owner = &sb.slot(0).expect("slot").counters[LANE_OWN].owner;
        assert_ne!(owner.load(Relaxed), 0);
        sb.slot_exited(0, 0);
        assert_eq!(owner.load(Relaxed), 0);
        owner.store(12345, Relaxed); // a foreign token: this thread must use the shared lane
        w.conn_open(peer())
            .request_begin("GET", "/", 11)
            .finish(200, 0);
        let slot = sb.slot(0).expect("slot");
        assert_eq!(slot.counters[LANE_SHARED].status[1].load(Relaxed), 1);
        sb.slot_spawned(0, 1, 2);
        assert_eq!(
            owner.load(Relaxed),
            12345,
            "a spawn leaves the lane to the running worker"
        );
        assert_eq!(sb.snapshot().slots[0].counters.requests_total, 2);
    }
}
