//! Reading the whole segment into an owned [`Snapshot`]: every slot, summed totals, and the
//! connection table read entry by entry under each entry's seqlock.
//!
//! - `mod.rs`: the snapshot's types; [`Counters`] holds the traffic figures a slot and the
//!   totals share.
//! - `read.rs`: reading the header, the slots and their seqlocked entries.
//! - `custom.rs`: the app's metrics combined across slots.
//! - `families.rs`: the list of built-in metric families every output writes.
//! - `guards.rs`: what the worker guards left to show (the master's records).
//! - `queues.rs`: the listeners' accept queues.

mod custom;
pub mod families;
mod guards;
mod queues;
mod read;
mod scale;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::raw::layout::{HISTOGRAM_BOUNDS, HISTOGRAM_BUCKETS};
use super::status;
use super::SlotState;

pub use guards::{
    GuardEvent, GuardKind, GuardsReport, GuardsSnapshot, KillCounts, KillRecord, KilledRequest,
    RecycleCounts, SlotGuards, ThreadSnapshot,
};
pub use queues::ListenQueueSnapshot;
pub(super) use read::{gauge, read_one, take};
pub use scale::ScaleCounts;

/// A request-duration histogram: per-bucket counts (not cumulative) and the sum.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HistogramSnapshot {
    /// Counts per bucket; the last bucket is +Inf. Bounds are [`HISTOGRAM_BOUNDS`].
    pub counts: Vec<u64>,
    /// Sum of all observed durations, seconds.
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    pub(crate) fn empty() -> Self {
        Self {
            counts: vec![0; HISTOGRAM_BUCKETS],
            sum_seconds: 0.0,
        }
    }

    pub(crate) fn add(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.wrapping_add(*b);
        }
        self.sum_seconds += other.sum_seconds;
    }

    /// Total observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, b| a.wrapping_add(*b))
    }

    /// Upper bounds of the buckets (the last, +Inf, is not listed).
    pub fn bounds() -> &'static [f64] {
        &HISTOGRAM_BOUNDS
    }

    /// Estimates quantile `q` (0..=1), interpolating linearly inside the bucket like PromQL's
    /// `histogram_quantile`; observations in +Inf report the highest bound. None when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let bounds = Self::bounds();
        if self.count() == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count() as f64;
        // Counts come from shared memory and may be anything: accumulate as floats.
        let mut seen = 0.0f64;
        for (i, &count) in self.counts.iter().enumerate() {
            if count > 0 && seen + count as f64 >= rank {
                let Some(&upper) = bounds.get(i) else {
                    return bounds.last().copied();
                };
                let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
                let within = (rank - seen) / count as f64;
                return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
            }
            seen += count as f64;
        }
        bounds.last().copied()
    }
}

/// Where a client connected from: an IP address and port, or a Unix socket (no address).
/// Shown and serialized as `127.0.0.1:5000`, `[::1]:5000` or `unix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddr {
    /// A TCP client.
    Ip(SocketAddr),
    /// A client of a Unix-socket listener.
    Unix,
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(a) => a.fmt(f),
            Self::Unix => f.write_str("unix"),
        }
    }
}

impl Serialize for ClientAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClientAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "unix" => Ok(Self::Unix),
            a => a.parse().map(Self::Ip).map_err(serde::de::Error::custom),
        }
    }
}

impl PartialEq<SocketAddr> for ClientAddr {
    fn eq(&self, other: &SocketAddr) -> bool {
        matches!(self, Self::Ip(a) if a == other)
    }
}

/// Finished requests by status counter ([`status::index`]): the exact codes, one "other" per
/// class, no response. Serialized as an object of the counters that are not zero, keyed by
/// their label: `{"200": 10, "404": 2, "4xx": 1, "other": 1}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusCounts(pub [u64; status::COUNTERS]);

impl Default for StatusCounts {
    fn default() -> Self {
        Self([0; status::COUNTERS])
    }
}

impl StatusCounts {
    /// `(label, count)` of every counter that is not zero, in counter order.
    pub fn seen(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, &n)| n != 0)
            .map(|(i, &n)| (status::label(i), n))
    }

    /// Counts by class: 1xx, 2xx, 3xx, 4xx, 5xx, no response.
    pub fn classes(&self) -> [u64; 6] {
        let mut c = [0u64; 6];
        for (i, n) in self.0.iter().enumerate() {
            let k = status::class(i);
            c[k] = c[k].wrapping_add(*n);
        }
        c
    }

    /// All finished requests.
    pub fn total(&self) -> u64 {
        self.0.iter().fold(0u64, |a, n| a.wrapping_add(*n))
    }
}

impl Serialize for StatusCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.seen())
    }
}

/// The request in flight on a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestSnapshot {
    /// Method (truncated to [`super::METHOD_BYTES`]).
    pub method: String,
    /// Path without the query string (truncated to [`super::PATH_BYTES`]).
    pub path: String,
    /// Whether the path was truncated.
    pub path_truncated: bool,
    /// Route template the app set (truncated to [`super::ROUTE_BYTES`]; empty = unknown).
    pub route: String,
    /// `HTTP/1.0`, `HTTP/1.1`, `HTTP/2`, … or empty when unknown.
    pub version: String,
    /// Seconds since the request started.
    pub age_seconds: f64,
    /// Requests in flight on this connection (HTTP/2 may have several; one is shown).
    pub in_flight: u64,
    /// App-set key/value infos.
    pub infos: Vec<(String, String)>,
}

/// One open connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnSnapshot {
    /// Entry index in the slot's table.
    pub entry: usize,
    /// Client address (`unix` for a Unix-socket client).
    pub client: ClientAddr,
    /// Seconds since the connection was accepted.
    pub age_seconds: f64,
    /// Seconds since the connection last finished a request (0 while one is in flight).
    pub idle_seconds: f64,
    /// Requests finished on it.
    pub requests: u64,
    /// Its in-flight request, if any.
    pub request: Option<RequestSnapshot>,
}

/// The last request a slot finished.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastRequestSnapshot {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Route template (empty = unknown).
    pub route: String,
    /// Status code (0 = no response was sent).
    pub status: u16,
    /// Duration, seconds.
    pub duration_seconds: f64,
    /// When it finished, ms since the Unix epoch.
    pub finished_unix_ms: u64,
    /// Response body bytes.
    pub bytes_sent: u64,
    /// Client address (`unix` for a Unix-socket client).
    pub client: ClientAddr,
}

/// The traffic figures of one slot, or of all slots summed (counters of dead and retired
/// slots included, so they never go down). Gauges read 0 while a sum over lanes is negative.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counters {
    /// Connections open now.
    pub conns_open: u64,
    /// Connections accepted (slot lifetime).
    pub conns_total: u64,
    /// Connections not shown in the connection table because it was full.
    pub conn_overflow: u64,
    /// Requests in flight now.
    pub requests_active: u64,
    /// Requests finished (slot lifetime).
    pub requests_total: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Finished requests by class: 1xx, 2xx, 3xx, 4xx, 5xx, other (no response); derived
    /// from `codes`.
    pub status: [u64; 6],
    /// Finished requests by exact code (the common ones), other code of a class, or none.
    pub codes: StatusCounts,
    /// Request durations.
    pub histogram: HistogramSnapshot,
    /// TLS handshakes that failed.
    pub tls_handshake_failures: u64,
    /// Requests counted as the overflow route because the route table was full.
    pub route_overflow: u64,
    /// Requests answered 503 because they ran past the request timeout.
    pub request_timeouts: u64,
}

impl Counters {
    /// All zero, with every histogram bucket present.
    pub(crate) fn zero() -> Self {
        Self {
            histogram: HistogramSnapshot::empty(),
            ..Self::default()
        }
    }

    /// Adds `other` (wrapping, like the writers). Destructured so that a new field cannot be
    /// left out of the sum.
    pub(crate) fn add(&mut self, other: &Self) {
        let Self {
            conns_open,
            conns_total,
            conn_overflow,
            requests_active,
            requests_total,
            bytes_in,
            bytes_out,
            status,
            codes,
            histogram,
            tls_handshake_failures,
            route_overflow,
            request_timeouts,
        } = other;
        let add = |a: &mut u64, b: &u64| *a = a.wrapping_add(*b);
        add(&mut self.conns_open, conns_open);
        add(&mut self.conns_total, conns_total);
        add(&mut self.conn_overflow, conn_overflow);
        add(&mut self.requests_active, requests_active);
        add(&mut self.requests_total, requests_total);
        add(&mut self.bytes_in, bytes_in);
        add(&mut self.bytes_out, bytes_out);
        self.status
            .iter_mut()
            .zip(status)
            .for_each(|(a, b)| add(a, b));
        self.codes
            .0
            .iter_mut()
            .zip(&codes.0)
            .for_each(|(a, b)| add(a, b));
        self.histogram.add(histogram);
        add(&mut self.tls_handshake_failures, tls_handshake_failures);
        add(&mut self.route_overflow, route_overflow);
        add(&mut self.request_timeouts, request_timeouts);
    }
}

/// One slot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlotSnapshot {
    /// Slot index.
    pub index: usize,
    /// Worker pid (0 = none).
    pub pid: u32,
    /// State.
    pub state: SlotState,
    /// Generation of the (last) worker.
    pub generation: u64,
    /// When the current worker was spawned, ms since the epoch (0 = never).
    pub started_unix_ms: u64,
    /// Respawns of this slot after unexpected exits.
    pub restarts: u64,
    /// Connections, requests, bytes, status classes and durations (flattened in JSON).
    #[serde(flatten)]
    pub counters: Counters,
    /// Open connections with their in-flight requests.
    pub connections: Vec<ConnSnapshot>,
    /// Last finished request.
    pub last_request: Option<LastRequestSnapshot>,
    /// Event-loop lag of the current worker, seconds: how late its last heartbeat timer fired,
    /// or how overdue its next heartbeat is when that is longer (none: not ready yet, no
    /// worker, or a reader without the master's records).
    pub event_loop_lag_seconds: Option<f64>,
    /// The last recycle or kill of the slot's worker (kept across respawns).
    pub last_guard_event: Option<GuardEvent>,
}

/// Sums over every slot (counters of dead and retired slots included, so they never go down).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Connections, requests, bytes, status classes and durations of all workers (flattened
    /// in JSON).
    #[serde(flatten)]
    pub counters: Counters,
    /// Respawns.
    pub restarts: u64,
    /// Workers by state: starting, ready, draining.
    pub workers_starting: u64,
    /// Workers ready.
    pub workers_ready: u64,
    /// Workers draining.
    pub workers_draining: u64,
}

/// One worker's value of a custom counter or gauge.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WorkerValue {
    /// Slot.
    pub slot: usize,
    /// Value.
    pub value: f64,
}

/// A custom histogram summed over workers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomHistogram {
    /// Upper bounds (+Inf implied).
    pub bounds: Vec<f64>,
    /// Counts per bucket, the last one +Inf (not cumulative).
    pub counts: Vec<u64>,
    /// Sum of observed values.
    pub sum: f64,
}

/// A custom metric series, combined across workers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomMetricSnapshot {
    /// Name as registered.
    pub name: String,
    /// Help text.
    pub help: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// Label set (sorted by name).
    pub labels: Vec<(String, String)>,
    /// Gauges: `sum`, `max`, `min` or `latest`.
    pub aggregation: Option<&'static str>,
    /// Counter: the sum; gauge: the combined value (none when no worker set it); histogram: the count.
    pub value: Option<f64>,
    /// Per-worker values (counters: every slot that counted; gauges: the workers that count).
    pub per_worker: Vec<WorkerValue>,
    /// Histogram buckets.
    pub histogram: Option<CustomHistogram>,
}

/// The last reload the master recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastReloadSnapshot {
    /// `success` or `rollback`.
    pub outcome: String,
    /// The generation it started.
    pub generation: u64,
    /// When it ended, ms since the epoch.
    pub finished_unix_ms: u64,
    /// Why it was rolled back (empty on success).
    pub reason: String,
}

/// An owned, point-in-time read of the whole scoreboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// Instance name.
    pub instance: String,
    /// Master pid.
    pub master_pid: u32,
    /// When the segment was created, ms since the epoch.
    pub created_unix_ms: u64,
    /// When this snapshot was taken, ms since the epoch.
    pub taken_unix_ms: u64,
    /// Generation now serving.
    pub generation: u64,
    /// Workers the master wants.
    pub target_workers: u64,
    /// Reloads that succeeded.
    pub reloads_success: u64,
    /// Reloads rolled back.
    pub reloads_rollback: u64,
    /// The last reload, if any.
    pub last_reload: Option<LastReloadSnapshot>,
    /// The last canary reload's comparison: per generation requests, 5xx, p99, crashes, the
    /// limits and the verdict (the master's own record: none in a reader of another process).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_canary: Option<crate::canary::CanaryReport>,
    /// Canary reloads by verdict (the master's own count: none in a reader of another
    /// process).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_counts: Option<crate::canary::CanaryCounts>,
    /// While a canary is observed: both generations' figures so far (the master's own record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_window: Option<crate::canary::CanaryWindow>,
    /// The master that answers: pid, version, upgrade counts (its own record: none in a
    /// reader of another process until it [`Snapshot::apply_master`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<super::MasterInfo>,
    /// The last master upgrade (the master's own record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_upgrade: Option<super::UpgradeRecord>,
    /// The master's management HTTP address (empty when off).
    pub status_addr: String,
    /// OTLP pushes that succeeded.
    pub otlp_exports_ok: u64,
    /// OTLP pushes that failed.
    pub otlp_exports_failed: u64,
    /// Every slot, in index order.
    pub slots: Vec<SlotSnapshot>,
    /// Sums.
    pub totals: Totals,
    /// Custom metrics, in registration order.
    pub custom: Vec<CustomMetricSnapshot>,
    /// Distinct routes the cluster counts (0 = per-route metrics off).
    pub route_limit: usize,
    /// Per-route requests, by route name (empty when per-route metrics are off).
    pub routes: Vec<super::RouteSnapshot>,
    /// Recycles and kills by reason and the last kill records: the master's own records, so
    /// none in a reader of another process until it [`Snapshot::apply_guards`].
    pub guards: Option<GuardsSnapshot>,
    /// The accept queue of each listening socket, as the master last sampled it (empty
    /// until its first sample, and in a standalone worker).
    pub listen_queues: Vec<ListenQueueSnapshot>,
}
