//! Connections and requests: [`ConnGuard`] and [`RequestGuard`] record into the slot's
//! counters, its connection table and its last request. This is the tracking hot path: one
//! `request_begin` and one `record` per request, no locked instruction on one thread.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::Arc;

use super::lane::Lane;
use super::SlotWriter;
use crate::scoreboard::clock::fast_ns;
use crate::scoreboard::raw::layout::{
    ConnEntry, Slot, CLIENT_UNIX, CONN_ENTRIES, HISTOGRAM_BOUNDS, INFO_KEY_BYTES,
};
use crate::scoreboard::seqlock::{try_write, write_owned};
use crate::scoreboard::{status, strings};

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

impl SlotWriter {
    /// Records an accepted connection from `peer` and claims a table entry for it.
    pub fn conn_open(&self, peer: SocketAddr) -> ConnGuard {
        self.conn_open_words(addr_words(peer))
    }

    /// Records a connection accepted on a Unix socket (its client is shown as `unix`) and
    /// claims a table entry for it.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let sb = flora_cluster::scoreboard::Scoreboard::create(&dir.path().join("s"), "t", 1).unwrap();
    /// let conn = sb.writer(0).unwrap().conn_open_unix();
    /// let snap = sb.snapshot();
    /// assert_eq!(snap.slots[0].connections[0].client.to_string(), "unix");
    /// # drop(conn);
    /// ```
    pub fn conn_open_unix(&self) -> ConnGuard {
        self.conn_open_words([0, 0, CLIENT_UNIX])
    }

    fn conn_open_words(&self, peer: [u64; 3]) -> ConnGuard {
        let lane = Lane::of(self.slot());
        lane.add(&lane.counters.conns_open, 1);
        lane.add(&lane.counters.conns_total, 1);
        let entry = self.claim_entry();
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
                e.route.len.store(0, Relaxed);
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
            route: 0,
            sequential,
            done: false,
            body_bytes: 0,
        }
    }

    /// Shows `route` (a route template such as `/users/{id}`, truncated to
    /// [`crate::scoreboard::ROUTE_BYTES`]) as the route of the connection's in-flight request.
    /// Display only: per-route metrics count a route set on the [`RequestGuard`].
    pub fn set_route(&self, route: &str) {
        if let Some(e) = self.inner.entry(self.inner.writer.slot()) {
            try_write(&e.seq, || strings::write(&e.route, route));
        }
    }

    /// Whether `other` is a handle on the same connection.
    pub fn same_conn(&self, other: &ConnGuard) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Sets an app info on the connection's in-flight request (shown beside it while it is in
    /// flight). Keys and
    /// values are truncated to [`crate::scoreboard::INFO_KEY_BYTES`] /
    /// [`crate::scoreboard::INFO_VALUE_BYTES`]; at
    /// most [`crate::scoreboard::INFO_COUNT`] infos are kept (a repeated key replaces its value).
    /// Returns false when the info could not be stored (table full, or untracked connection).
    pub fn set_info(&self, key: &str, value: &str) -> bool {
        let Some(e) = self.inner.entry(self.inner.writer.slot()) else {
            return false;
        };
        let key = strings::truncate_at_char(key, INFO_KEY_BYTES);
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
    /// Route id for per-route metrics (0 = none; see `scoreboard::routes`).
    route: u32,
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

    /// Sets the request's route template (`/users/{id}`): shown with the request and its
    /// last-request record, and, when the cluster counts routes, the route its metrics count
    /// under. Never pass a raw path unless its values are few: the cluster's route table is
    /// capped, and requests past the cap count as `route="other"`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let sb = flora_cluster::scoreboard::Scoreboard::create(&dir.path().join("s"), "t", 1).unwrap();
    /// let conn = sb.writer(0).unwrap().conn_open(([127, 0, 0, 1], 1).into());
    /// let mut req = conn.request_begin("GET", "/users/42", 11);
    /// req.set_route("/users/{id}");
    /// let snap = sb.snapshot();
    /// assert_eq!(snap.slots[0].connections[0].request.as_ref().unwrap().route, "/users/{id}");
    /// ```
    pub fn set_route(&mut self, route: &str) {
        let inner = &self.conn.inner;
        if let Some(e) = inner.entry(inner.writer.slot()) {
            let show = || strings::write(&e.route, route);
            if self.sequential {
                write_owned(&e.seq, show);
            } else {
                try_write(&e.seq, show);
            }
        }
        self.route = inner.writer.route_id(route);
    }

    /// When the request began (monotonic ns): tells requests of one connection apart (HTTP/2
    /// streams overlap).
    pub fn started_ns(&self) -> u64 {
        self.start_ns
    }

    /// Requests this process finished so far: its own count in process memory, which no
    /// other worker can write (the heartbeat sends it; `--max-requests` is decided on it).
    pub(crate) fn finished_in_process() -> u64 {
        super::finished::total()
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
        // requests_total is the sum of the status counters: one add fewer per request.
        lane.add(&c.status[status::index(self.status)], 1);
        lane.add(&c.histogram[bucket_index(dur)], 1);
        lane.add(&c.duration_sum_ns, dur);
        super::finished::count_one();
        if self.route != 0 {
            inner
                .writer
                .record_route(lane, self.route, self.status, dur);
        }
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
            copy_words(
                &e.route.words,
                &last.route.words,
                &e.route.len,
                &last.route.len,
            );
        });
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(100_000), 0);
        assert_eq!(bucket_index(100_001), 1);
        assert_eq!(bucket_index(500_000), 2);
        assert_eq!(bucket_index(10_000_000_000), 15);
        assert_eq!(bucket_index(u64::MAX), 16);
    }
}
