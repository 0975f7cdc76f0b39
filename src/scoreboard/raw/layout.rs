//! The `#[repr(C)]` segment layout: the header, the slots, the custom-metric registry, the
//! sizes that pin them, and [`ShmSafe`], the promise that a type may live in shared memory.
//!
//! Everything here is plain data made of atomics. Any bit pattern is a valid value of every
//! type in this file (all fields are `AtomicU64`), so a segment that another process filled
//! with garbage can be *read* safely: readers clamp lengths and validate values themselves.
//!
//! The segment is:
//!
//! ```text
//! [ Header (2560 B) | Slot 0 | ... | Slot S-1 | Registry | RouteName × R | RouteCells × S·LANES·(R+1) ]
//! ```
//!
//! The route parts are empty unless per-route metrics are on (R = the route limit).

use std::sync::atomic::AtomicU64;

/// `b"FLORASB\0"` read as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"FLORASB\0");
/// Bumped whenever the layout below changes in any way.
pub const VERSION: u64 = 6;
/// Cache line size the slots are aligned to.
pub const CACHE_LINE: usize = 64;
/// Entries in each slot's table of open connections.
pub const CONN_ENTRIES: usize = 64;
/// Bytes kept of a request method.
pub const METHOD_BYTES: usize = 16;
/// Bytes kept of a request path (longer paths are truncated and flagged).
pub const PATH_BYTES: usize = 128;
/// Per-request app infos kept per connection entry.
pub const INFO_COUNT: usize = 4;
/// Bytes kept of a route template (`/users/{id}`).
pub const ROUTE_BYTES: usize = 64;
/// Most distinct routes a cluster can count (`--route-limit`).
pub const MAX_ROUTES: usize = 1024;
/// Bytes kept of an info key.
pub const INFO_KEY_BYTES: usize = 16;
/// Bytes kept of an info value.
pub const INFO_VALUE_BYTES: usize = 48;
/// Bytes kept of the instance name in the header.
pub const NAME_BYTES: usize = 64;
/// Bytes kept of the last reload's rollback reason.
pub const REASON_BYTES: usize = 192;
/// Bytes kept of the management address.
pub const ADDR_BYTES: usize = 64;
/// Upper bounds (seconds) of the request-duration histogram buckets; one more bucket is +Inf.
pub const HISTOGRAM_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Histogram buckets including +Inf.
pub const HISTOGRAM_BUCKETS: usize = HISTOGRAM_BOUNDS.len() + 1;
/// Status counters per lane: the exact codes, one "other" per class, no response
/// (`scoreboard::status` names them).
pub const STATUS_COUNTERS: usize = 33;
/// Bit of a stored client's port word: the client came over a Unix socket.
pub const CLIENT_UNIX: u64 = 1 << 17;
/// Custom metric cells reserved in every slot.
pub const CUSTOM_CELLS: usize = 1024;

/// A string stored as atomic words: `len` (bit 63 = truncated) plus the bytes.
#[repr(C)]
pub struct AtomicStr<const W: usize> {
    /// Length in bytes; bit 63 set when the original was truncated.
    pub len: AtomicU64,
    /// The bytes, packed little-endian into words.
    pub words: [AtomicU64; W],
}

/// One key/value info an app attached to its in-flight request.
#[repr(C)]
pub struct InfoCell {
    /// The key.
    pub key: AtomicStr<{ INFO_KEY_BYTES / 8 }>,
    /// The value.
    pub value: AtomicStr<{ INFO_VALUE_BYTES / 8 }>,
}

/// One open connection and its in-flight request. Written by the worker that owns the slot,
/// under the entry's seqlock (`seq` odd while a write is in progress); read by anyone.
#[repr(C, align(64))]
pub struct ConnEntry {
    /// Seqlock sequence: even = stable, odd = being written. Writers claim it with a CAS
    /// even→odd and publish with a store of the next even value (Release). The task serving
    /// an HTTP/1 connection, the one writer of its entry while its requests come one at a
    /// time, takes it with a plain store instead of the CAS.
    pub seq: AtomicU64,
    /// 1 while the entry describes an open connection.
    pub in_use: AtomicU64,
    /// Client IP as 16 bytes (IPv4 mapped into IPv6).
    pub client_ip: [AtomicU64; 2],
    /// Client port (low 16 bits) and address family: bit 16 set = IPv6, bit 17 set = a Unix
    /// socket client (no address; see [`CLIENT_UNIX`]).
    pub client_port: AtomicU64,
    /// Monotonic ns when the connection was accepted.
    pub opened_ns: AtomicU64,
    /// Monotonic ns when the connection last finished a request (or opened).
    pub idle_since_ns: AtomicU64,
    /// Requests finished on this connection.
    pub requests: AtomicU64,
    /// Requests in flight on this connection, outside the seqlock: stored (HTTP/1, one at a
    /// time) or updated with `fetch_add` (HTTP/2 streams).
    pub inflight: AtomicU64,
    /// Monotonic ns when the shown in-flight request started.
    pub req_start_ns: AtomicU64,
    /// HTTP version of the shown request (10, 11, 20, 30; 0 = unknown).
    pub req_version: AtomicU64,
    /// Method of the shown request.
    pub method: AtomicStr<{ METHOD_BYTES / 8 }>,
    /// Path of the shown request (no query string).
    pub path: AtomicStr<{ PATH_BYTES / 8 }>,
    /// Route template of the shown request, as the app set it (empty = unknown).
    pub route: AtomicStr<{ ROUTE_BYTES / 8 }>,
    /// App-set infos of the shown request.
    pub infos: [InfoCell; INFO_COUNT],
}

/// The last finished request of a slot (like Apache's per-worker "last request"), under a seqlock.
#[repr(C, align(64))]
pub struct LastRequest {
    /// Seqlock sequence (same protocol as [`ConnEntry::seq`]).
    pub seq: AtomicU64,
    /// Response status code (0 = none yet, or no response).
    pub status: AtomicU64,
    /// Duration in ns.
    pub duration_ns: AtomicU64,
    /// Monotonic ns when it finished (0 = no request yet).
    pub finished_mono_ns: AtomicU64,
    /// Response body bytes sent.
    pub bytes_sent: AtomicU64,
    /// Client IP.
    pub client_ip: [AtomicU64; 2],
    /// Client port and family, as in [`ConnEntry::client_port`].
    pub client_port: AtomicU64,
    /// HTTP version.
    pub version: AtomicU64,
    /// Method.
    pub method: AtomicStr<{ METHOD_BYTES / 8 }>,
    /// Path.
    pub path: AtomicStr<{ PATH_BYTES / 8 }>,
    /// Route template (empty = unknown).
    pub route: AtomicStr<{ ROUTE_BYTES / 8 }>,
}

/// Writer lanes per slot: see [`SlotCounters`].
pub const LANES: usize = 2;
/// The lane of the slot's owner thread: written with plain loads and stores, no
/// read-modify-write (only that thread ever writes it).
pub const LANE_OWN: usize = 0;
/// The lane every other thread of the worker writes, with atomic read-modify-writes.
pub const LANE_SHARED: usize = 1;

/// Counters and gauges a worker writes into its slot, one copy per lane ([`LANES`]): the
/// first thread of the worker that writes the slot owns [`LANE_OWN`] and updates it with a
/// plain load and store (no locked instruction); any other thread uses [`LANE_SHARED`] with
/// `fetch_add`. Readers add the lanes up (wrapping: a gauge raised on one lane and lowered on
/// the other still sums right). Counters only grow for the slot's lifetime (a respawned
/// worker continues them); gauges are reset by the master when the worker is gone. All
/// Relaxed: they are statistics, no other data is published through them.
#[repr(C, align(64))]
pub struct SlotCounters {
    /// Gauge: connections open now.
    pub conns_open: AtomicU64,
    /// Counter: connections accepted.
    pub conns_total: AtomicU64,
    /// Counter: connections that found the connection table full (not shown, still counted).
    pub conn_overflow: AtomicU64,
    /// Gauge: requests in flight now.
    pub requests_active: AtomicU64,
    /// Unused: finished requests are the sum of `status` (one atomic add fewer per request).
    pub requests_total: AtomicU64,
    /// Counter: bytes read from clients (whole connection, headers included).
    pub bytes_in: AtomicU64,
    /// Counter: bytes written to clients (whole connection, headers included).
    pub bytes_out: AtomicU64,
    /// Counter: finished requests by status, indexed by `scoreboard::status::index`.
    pub status: [AtomicU64; STATUS_COUNTERS],
    /// Counter: request durations per bucket (not cumulative; last = +Inf).
    pub histogram: [AtomicU64; HISTOGRAM_BUCKETS],
    /// Counter: sum of request durations in ns.
    pub duration_sum_ns: AtomicU64,
    /// Counter: TLS handshakes that failed (bad client hello, timeout, closed mid-handshake).
    pub tls_handshake_failures: AtomicU64,
    /// Counter: requests counted as `route="other"` because the route table was full.
    pub route_overflow: AtomicU64,
    /// Counter: requests answered 503 by the worker because they ran past `--request-timeout`.
    pub request_timeouts: AtomicU64,
    /// Reserved for later counters (zero).
    pub reserved: [AtomicU64; 2],
    /// In [`LANE_OWN`] only: the token of the thread that owns the lane (pid << 32 | thread
    /// number in that process; 0 = not claimed yet). Claimed with a CAS by the worker, reset
    /// by the master whenever a worker starts or is gone.
    pub owner: AtomicU64,
}

/// One worker's slot.
#[repr(C, align(64))]
pub struct Slot {
    /// Pid of the worker (0 = none). Master-written at spawn.
    pub pid: AtomicU64,
    /// [`crate::scoreboard::SlotState`] as a number. Master writes Starting/Dead/Empty; the
    /// worker writes Ready/Draining. Release on write, Acquire on read.
    pub state: AtomicU64,
    /// Generation of the worker. Master-written at spawn.
    pub generation: AtomicU64,
    /// Wall-clock ms since the epoch of the current worker's spawn. Master-written.
    pub started_unix_ms: AtomicU64,
    /// Monotonic ns of the current worker's spawn. Master-written.
    pub started_mono_ns: AtomicU64,
    /// Counter: times this slot was respawned after an unexpected exit. Master-written.
    pub restarts: AtomicU64,
    /// Raw wait status of the last worker that exited from this slot (+1; 0 = none). Master-written.
    pub last_exit: AtomicU64,
    /// Bitmap of claimed [`ConnEntry`]s (bit i = entry i). Claimed with CAS (AcqRel) by the
    /// worker, cleared with `fetch_and` (Release) after the entry's `in_use` went to 0.
    pub conn_bitmap: AtomicU64,
    /// Worker-written counters and gauges, per writer lane (see [`SlotCounters`]).
    pub counters: [SlotCounters; LANES],
    /// Last finished request per writer lane (the newer one is the slot's last request).
    pub last: [LastRequest; LANES],
    /// Open connections.
    pub conns: [ConnEntry; CONN_ENTRIES],
    /// Cells of custom metrics, indexed by the registry.
    pub custom: [AtomicU64; CUSTOM_CELLS],
}

/// Segment header, written by the master once at creation (magic last, Release).
#[repr(C, align(64))]
pub struct Header {
    /// [`MAGIC`].
    pub magic: AtomicU64,
    /// [`VERSION`].
    pub version: AtomicU64,
    /// [`layout_hash`] of the writer.
    pub layout_hash: AtomicU64,
    /// `size_of::<Header>()`.
    pub header_size: AtomicU64,
    /// `size_of::<Slot>()`.
    pub slot_size: AtomicU64,
    /// Number of slots.
    pub slot_count: AtomicU64,
    /// Total size in bytes.
    pub total_size: AtomicU64,
    /// Pid of the master.
    pub master_pid: AtomicU64,
    /// Wall-clock ms since the epoch at creation.
    pub created_unix_ms: AtomicU64,
    /// Generation now serving. Master-written.
    pub generation: AtomicU64,
    /// Workers the master wants running. Master-written.
    pub target_workers: AtomicU64,
    /// Instance name.
    pub name: AtomicStr<{ NAME_BYTES / 8 }>,
    /// Counter: reloads that succeeded. Master-written.
    pub reloads_success: AtomicU64,
    /// Counter: reloads rolled back. Master-written.
    pub reloads_rollback: AtomicU64,
    /// Seqlock over the `last_reload_*` fields (protocol as [`ConnEntry::seq`]).
    pub last_reload_seq: AtomicU64,
    /// Outcome of the last reload: 0 none, 1 success, 2 rollback.
    pub last_reload_outcome: AtomicU64,
    /// Generation the last reload started.
    pub last_reload_generation: AtomicU64,
    /// Wall-clock ms since the epoch when the last reload ended.
    pub last_reload_unix_ms: AtomicU64,
    /// Why the last reload was rolled back.
    pub last_reload_reason: AtomicStr<{ REASON_BYTES / 8 }>,
    /// The master's management HTTP address (empty when off). Master-written at start.
    pub status_addr: AtomicStr<{ ADDR_BYTES / 8 }>,
    /// Counter: OTLP pushes that succeeded. Master-written.
    pub otlp_exports_ok: AtomicU64,
    /// Counter: OTLP pushes that failed (collector down, slow, or refusing). Master-written.
    pub otlp_exports_failed: AtomicU64,
    /// Routes the segment can count (0 = per-route metrics off). Master-written at creation.
    pub route_limit: AtomicU64,
    /// Reserved for later master-written fields.
    pub reserved: [AtomicU64; 1],
    /// The accept queues of the first [`MAX_LISTENERS`] listeners, as the master samples
    /// them. Master-written.
    pub listen_queues: [ListenQueueEntry; MAX_LISTENERS],
}

/// Listeners whose accept queue the segment shows (the master's own outputs show all).
pub const MAX_LISTENERS: usize = 16;
/// Bytes of a listener's name in the segment (`127.0.0.1:8080`, `unix:/path`); longer names
/// are truncated there.
pub const LISTENER_NAME_BYTES: usize = 72;
/// [`ListenQueueEntry::flags`]: the entry holds a listener.
pub const QUEUE_USED: u64 = 1;
/// [`ListenQueueEntry::flags`]: `drops` is known (TCP listeners).
pub const QUEUE_DROPS: u64 = 2;

/// One listener's accept queue. Master-written under `seq` (protocol as [`ConnEntry::seq`]).
#[repr(C)]
pub struct ListenQueueEntry {
    /// Seqlock.
    pub seq: AtomicU64,
    /// [`QUEUE_USED`] | [`QUEUE_DROPS`].
    pub flags: AtomicU64,
    /// Connections waiting for `accept`.
    pub length: AtomicU64,
    /// The highest length sampled since the last scrape of `/metrics`.
    pub peak: AtomicU64,
    /// The backlog limit.
    pub limit: AtomicU64,
    /// Connections the listener dropped, in total (64 bits; the kernel's 32-bit counter
    /// unwrapped).
    pub drops: AtomicU64,
    /// The listener's address.
    pub name: AtomicStr<{ LISTENER_NAME_BYTES / 8 }>,
}

/// Cells of one route in one slot lane: the status counters ([`STATUS_COUNTERS`]), the
/// duration histogram ([`HISTOGRAM_BUCKETS`], not cumulative) and the duration sum in ns.
pub const ROUTE_CELLS: usize = STATUS_COUNTERS + HISTOGRAM_BUCKETS + 1;

/// One entry of the cluster-wide route table. Claimed by any worker: `state` CAS 0 → 1, the
/// name written, then `state` 2 with Release. A worker that dies between leaves the entry at 1
/// for good (readers skip it). Readers validate the name: any worker may scribble it.
#[repr(C)]
pub struct RouteName {
    /// 0 free, 1 being written, 2 published.
    pub state: AtomicU64,
    /// The route template.
    pub name: AtomicStr<{ ROUTE_BYTES / 8 }>,
}

/// The counters of one route in one lane of one slot (same lane rules as [`SlotCounters`]).
#[repr(C)]
pub struct RouteCells {
    /// Status counters, then histogram buckets, then the duration sum (ns).
    pub cells: [AtomicU64; ROUTE_CELLS],
}

/// Series (metric name + label set) the registry holds.
pub const MAX_SERIES: usize = 256;
/// Bytes of a custom metric name.
pub const METRIC_NAME_BYTES: usize = 64;
/// Bytes of a custom metric's help text.
pub const METRIC_HELP_BYTES: usize = 128;
/// Bytes of a custom metric's encoded label set.
pub const METRIC_LABELS_BYTES: usize = 128;
/// Buckets of a custom histogram (besides +Inf).
pub const MAX_BUCKETS: usize = 16;

/// One registered series. Written once by the registry's single writer (the master, or a
/// standalone worker) before `state` is set to 1 with Release; never changed afterwards.
#[repr(C, align(64))]
pub struct MetricEntry {
    /// 0 = free, 1 = published (Release on write, Acquire on read).
    pub state: AtomicU64,
    /// 1 counter, 2 gauge, 3 histogram.
    pub kind: AtomicU64,
    /// Gauges: aggregation (0 sum, 1 max, 2 min, 3 latest) | (count dead workers << 8).
    pub flags: AtomicU64,
    /// First cell of the series in every slot's `custom` array.
    pub cell: AtomicU64,
    /// Cells used: counter 1; gauge 2 (value bits, set-at ns); histogram buckets + 2 (+Inf, sum).
    pub cells: AtomicU64,
    /// Histogram buckets used.
    pub bucket_count: AtomicU64,
    /// Histogram upper bounds, f64 bits.
    pub buckets: [AtomicU64; MAX_BUCKETS],
    /// Metric name.
    pub name: AtomicStr<{ METRIC_NAME_BYTES / 8 }>,
    /// Help text.
    pub help: AtomicStr<{ METRIC_HELP_BYTES / 8 }>,
    /// Label set, `name=value` pairs joined by `\u{1f}`.
    pub labels: AtomicStr<{ METRIC_LABELS_BYTES / 8 }>,
}

/// The custom-metric registry at the end of the segment.
#[repr(C, align(64))]
pub struct Registry {
    /// Entries published (a prefix of `entries`); Release after an entry's `state`.
    pub count: AtomicU64,
    /// Next free cell in the slots' `custom` arrays.
    pub next_cell: AtomicU64,
    /// Reserved.
    pub reserved: [AtomicU64; 6],
    /// The series.
    pub entries: [MetricEntry; MAX_SERIES],
}

const _: () = assert!(std::mem::size_of::<Header>() == 512 + MAX_LISTENERS * 128);
const _: () = assert!(std::mem::size_of::<ListenQueueEntry>() == 128);
const _: () = assert!(std::mem::size_of::<ConnEntry>() == 640);
const _: () = assert!(std::mem::size_of::<LastRequest>() == 320);
const _: () = assert!(std::mem::size_of::<RouteName>() == 80);
const _: () = assert!(std::mem::size_of::<RouteCells>() == ROUTE_CELLS * 8);
const _: () = assert!(std::mem::size_of::<SlotCounters>() == 512);
const _: () = assert!(std::mem::size_of::<Slot>() % CACHE_LINE == 0);
const _: () = assert!(CONN_ENTRIES <= 64, "conn_bitmap is one u64");
const _: () = assert!(std::mem::size_of::<MetricEntry>() == 576);
const _: () = assert!(std::mem::size_of::<Registry>() == 64 + MAX_SERIES * 576);

/// Types that may live in the shared segment.
///
/// # Safety
/// Implementors are `#[repr(C)]`, contain no pointers, only atomics (or arrays/structs of
/// them), and every bit pattern — including all zeroes — is a valid value.
pub unsafe trait ShmSafe {}
// SAFETY: AtomicU64 has the size and alignment of u64; every bit pattern is valid, so any
// value another process stores is one too, and its accesses are atomic across processes.
unsafe impl ShmSafe for AtomicU64 {}
// SAFETY: repr(C) structs made only of AtomicU64 (arrays); see the field lists above. Any
// bytes a worker writes anywhere in them still form a valid value.
unsafe impl ShmSafe for Header {}
// SAFETY: as above (part of the header).
unsafe impl ShmSafe for ListenQueueEntry {}
// SAFETY: as above.
unsafe impl ShmSafe for Slot {}
// SAFETY: as above.
unsafe impl ShmSafe for Registry {}
// SAFETY: as above.
unsafe impl ShmSafe for RouteName {}
// SAFETY: as above.
unsafe impl ShmSafe for RouteCells {}

/// FNV-1a over the numbers that define the layout; two builds agree only when they lay
/// the segment out identically.
pub const fn layout_hash() -> u64 {
    let parts: [u64; 19] = [
        VERSION,
        MAX_LISTENERS as u64,
        std::mem::size_of::<ListenQueueEntry>() as u64,
        std::mem::size_of::<Header>() as u64,
        std::mem::size_of::<Slot>() as u64,
        std::mem::size_of::<ConnEntry>() as u64,
        std::mem::size_of::<LastRequest>() as u64,
        std::mem::size_of::<SlotCounters>() as u64,
        CONN_ENTRIES as u64,
        PATH_BYTES as u64,
        INFO_COUNT as u64,
        HISTOGRAM_BUCKETS as u64,
        STATUS_COUNTERS as u64,
        CUSTOM_CELLS as u64,
        std::mem::size_of::<MetricEntry>() as u64,
        MAX_SERIES as u64,
        MAX_BUCKETS as u64,
        ROUTE_BYTES as u64,
        ROUTE_CELLS as u64,
    ];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < parts.len() {
        let mut b = 0;
        while b < 8 {
            h ^= (parts[i] >> (b * 8)) & 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
            b += 1;
        }
        i += 1;
    }
    h
}

/// Size in bytes of a segment with `slots` slots and room for `routes` routes: header,
/// slots, registry, route table, route cells (no route parts when `routes` is 0).
pub const fn segment_size(slots: usize, routes: usize) -> usize {
    route_cells_offset(slots, routes) + route_cells_len(slots, routes)
}

/// Offset of the route table.
pub const fn route_table_offset(slots: usize) -> usize {
    registry_offset(slots) + std::mem::size_of::<Registry>()
}

/// Offset of the first [`RouteCells`].
pub const fn route_cells_offset(slots: usize, routes: usize) -> usize {
    route_table_offset(slots) + routes * std::mem::size_of::<RouteName>()
}

/// Route cells: per slot and lane, one per route plus `other`.
const fn route_cells_len(slots: usize, routes: usize) -> usize {
    if routes == 0 {
        0
    } else {
        slots * LANES * (routes + 1) * std::mem::size_of::<RouteCells>()
    }
}

/// Offset of the custom-metric registry in a segment with `slots` slots.
pub const fn registry_offset(slots: usize) -> usize {
    std::mem::size_of::<Header>() + slots * std::mem::size_of::<Slot>()
}

#[cfg(test)]
#[path = "layout_tests.rs"]
mod tests;
