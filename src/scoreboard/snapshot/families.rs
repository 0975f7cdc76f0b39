//! The built-in metric families: the one list every output writes (Prometheus text,
//! OpenMetrics, OTLP) and that registration keeps custom metrics away from.
//!
//! Each entry names a family, its kind and help text, and the [`Source`] of its samples. The
//! exporter turns a snapshot into families by walking this list (`exporter::family`), so a new
//! per-worker counter is one more entry with a [`Source::Worker`] reader: every output, the
//! name checks and the tests pick it up from here.

use super::{ListenQueueSnapshot, SlotSnapshot};

/// The kind of a family, as far as its names go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Written `F_total`; family `F`.
    Counter,
    /// Written `F`.
    Gauge,
    /// Written `F_bucket`, `F_count`, `F_sum`.
    Histogram,
    /// Written `F_info` (a gauge in the text format); family `F`.
    Info,
}

/// Where the samples of a built-in family come from.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Source {
    /// One sample per used slot, labelled `worker`, read from the slot.
    Worker(fn(&SlotSnapshot) -> u64),
    /// One sample per used slot and status counter seen, labelled `worker` and `code`
    /// (`"404"`, `"4xx"` for the class's other codes, `"other"` for no response).
    StatusCodes,
    /// One histogram per used slot, labelled `worker`: the request durations.
    Durations,
    /// Value 1 for each slot with a process, labelled `worker`, `pid` and `generation`.
    WorkerInfo,
    /// Workers by `state`: starting, ready, draining.
    WorkersByState,
    /// The workers the master keeps running.
    TargetWorkers,
    /// Reloads by `outcome`: success, rollback.
    Reloads,
    /// Canary reloads by `verdict`: promote, rollback (the master's records).
    CanaryReloads,
    /// OTLP pushes by `result`: success, failure.
    OtlpExports,
    /// The generation serving.
    Generation,
    /// The master's start, seconds since the epoch.
    StartTime,
    /// CPU seconds of the master and each worker process, labelled `worker`.
    ProcessCpu,
    /// Resident memory of the master and each worker process, labelled `worker`.
    ProcessMemory,
    /// Per-route requests by `route` and `code` (only with per-route metrics on).
    RouteRequests,
    /// Per-route request durations by `route` (only with per-route metrics on).
    RouteDurations,
    /// Requests counted as the overflow route, per `worker` (only with per-route metrics on).
    RouteOverflow,
    /// Recycles by `reason`: memory, max_requests, age (the master's records).
    Recycles,
    /// Kills by `reason`: heartbeat, shutdown_timeout (the master's records).
    Kills,
    /// Each live worker's event-loop lag in seconds, labelled `worker` (once it is ready:
    /// readiness counts as a first heartbeat).
    EventLoopLag,
    /// One sample per listener, labelled `listener`, read from its accept queue (`None`:
    /// no sample, as the drops of a Unix listener).
    Listener(fn(&ListenQueueSnapshot) -> Option<u64>),
    /// Autoscaling's target changes by `direction` and `reason` (the master's records).
    ScaleEvents,
    /// Master upgrades by `outcome`: success, rollback (the master's records).
    MasterUpgrades,
    /// Value 1 for the master that answers, labelled `version` and `pid` (its own record).
    MasterInfo,
}

impl Builtin {
    /// Whether the family exists only with per-route metrics on (never written without).
    pub fn per_route(&self) -> bool {
        matches!(
            self.source,
            Source::RouteRequests | Source::RouteDurations | Source::RouteOverflow
        )
    }
}

/// The built-in families written for a cluster with (`routes`) or without per-route metrics.
pub fn written(routes: bool) -> impl Iterator<Item = &'static Builtin> {
    BUILTIN.iter().filter(move |b| routes || !b.per_route())
}

/// One built-in family.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// Name of its samples in the text format (counters end in `_total`, infos in `_info`).
    pub name: &'static str,
    /// Kind.
    pub kind: Kind,
    /// Help text.
    pub help: &'static str,
    /// Where its samples come from.
    pub source: Source,
}

const fn family(name: &'static str, kind: Kind, help: &'static str, source: Source) -> Builtin {
    Builtin {
        name,
        kind,
        help,
        source,
    }
}

/// Every metric the exporters write themselves, in the order they write them.
pub const BUILTIN: [Builtin; 34] = [
    family(
        "flora_http_requests_total",
        Kind::Counter,
        "HTTP requests finished by status code (4xx: other codes of the class; other: no response).",
        Source::StatusCodes,
    ),
    family(
        "flora_http_requests_in_flight",
        Kind::Gauge,
        "HTTP requests being served now.",
        Source::Worker(|s| s.counters.requests_active),
    ),
    family(
        "flora_http_received_bytes_total",
        Kind::Counter,
        "Bytes read from clients, headers included.",
        Source::Worker(|s| s.counters.bytes_in),
    ),
    family(
        "flora_http_sent_bytes_total",
        Kind::Counter,
        "Bytes written to clients, headers included.",
        Source::Worker(|s| s.counters.bytes_out),
    ),
    family(
        "flora_connections_open",
        Kind::Gauge,
        "Client connections open now.",
        Source::Worker(|s| s.counters.conns_open),
    ),
    family(
        "flora_connections_total",
        Kind::Counter,
        "Client connections accepted.",
        Source::Worker(|s| s.counters.conns_total),
    ),
    family(
        "flora_connections_untracked_total",
        Kind::Counter,
        "Connections not shown in the connection table because it was full.",
        Source::Worker(|s| s.counters.conn_overflow),
    ),
    family(
        "flora_tls_handshake_failures_total",
        Kind::Counter,
        "TLS handshakes that failed (0 without TLS).",
        Source::Worker(|s| s.counters.tls_handshake_failures),
    ),
    family(
        "flora_request_timeouts_total",
        Kind::Counter,
        "Requests answered 503 by their worker because they ran past the request timeout.",
        Source::Worker(|s| s.counters.request_timeouts),
    ),
    family(
        "flora_worker_restarts_total",
        Kind::Counter,
        "Respawns of the worker slot after unexpected exits.",
        Source::Worker(|s| s.restarts),
    ),
    family(
        "flora_worker_recycles_total",
        Kind::Counter,
        "Workers recycled by a guard, by reason (memory, max_requests, age); counted once per worker when its recycle begins.",
        Source::Recycles,
    ),
    family(
        "flora_worker_kills_total",
        Kind::Counter,
        "Workers the master killed, by reason (heartbeat: a blocked event loop; shutdown_timeout: still draining).",
        Source::Kills,
    ),
    family(
        "flora_worker_event_loop_lag_seconds",
        Kind::Gauge,
        "How late the worker's event loop ran its last heartbeat, or how overdue the next one is.",
        Source::EventLoopLag,
    ),
    family(
        "flora_listen_queue_length",
        Kind::Gauge,
        "Connections waiting in the listener's accept queue for a worker's accept (sampled at 10 Hz).",
        Source::Listener(|q| Some(q.length)),
    ),
    family(
        "flora_listen_queue_peak",
        Kind::Gauge,
        "The longest accept queue sampled since the previous scrape of /metrics.",
        Source::Listener(|q| Some(q.peak)),
    ),
    family(
        "flora_listen_queue_limit",
        Kind::Gauge,
        "The listener's accept-queue limit (--backlog, capped by net.core.somaxconn).",
        Source::Listener(|q| Some(q.limit)),
    ),
    family(
        "flora_listen_drops_total",
        Kind::Counter,
        "Connections a TCP listener dropped (a full accept queue refuses handshakes) since the master started.",
        Source::Listener(|q| q.drops),
    ),
    family(
        "flora_http_request_duration_seconds",
        Kind::Histogram,
        "Time from request start until its response body was sent.",
        Source::Durations,
    ),
    family(
        "flora_http_route_requests_total",
        Kind::Counter,
        "HTTP requests finished per route template and status code (route metrics on).",
        Source::RouteRequests,
    ),
    family(
        "flora_http_route_request_duration_seconds",
        Kind::Histogram,
        "Time from request start until its response body was sent, per route template.",
        Source::RouteDurations,
    ),
    family(
        "flora_http_route_overflow_total",
        Kind::Counter,
        "Requests counted as route=\"other\" because the cluster's route table was full.",
        Source::RouteOverflow,
    ),
    family(
        "flora_worker_info",
        Kind::Info,
        "The process in each worker slot.",
        Source::WorkerInfo,
    ),
    family(
        "flora_workers",
        Kind::Gauge,
        "Workers by state.",
        Source::WorkersByState,
    ),
    family(
        "flora_target_workers",
        Kind::Gauge,
        "Workers the master keeps running.",
        Source::TargetWorkers,
    ),
    family(
        "flora_scale_events_total",
        Kind::Counter,
        "Target worker count changes while autoscaling, by direction (up, down) and reason (busy, queue, idle, manual).",
        Source::ScaleEvents,
    ),
    family(
        "flora_reloads_total",
        Kind::Counter,
        "Reloads by outcome.",
        Source::Reloads,
    ),
    family(
        "flora_canary_reloads_total",
        Kind::Counter,
        "Canary reloads by verdict (a crash or a canary not ready counts as rollback).",
        Source::CanaryReloads,
    ),
    family(
        "flora_master_upgrades_total",
        Kind::Counter,
        "Master upgrades (flora-cluster upgrade) by outcome: the new master took over, or it was rolled back.",
        Source::MasterUpgrades,
    ),
    family(
        "flora_master_info",
        Kind::Info,
        "The master process that answers: its version and pid.",
        Source::MasterInfo,
    ),
    family(
        "flora_otlp_exports_total",
        Kind::Counter,
        "OTLP metric pushes by result.",
        Source::OtlpExports,
    ),
    family(
        "flora_generation",
        Kind::Gauge,
        "Worker generation serving now.",
        Source::Generation,
    ),
    family(
        "flora_start_time_seconds",
        Kind::Gauge,
        "Start time of the master, seconds since the epoch.",
        Source::StartTime,
    ),
    family(
        "process_cpu_seconds_total",
        Kind::Counter,
        "User and system CPU time of the process (a replaced worker starts again from 0).",
        Source::ProcessCpu,
    ),
    family(
        "process_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory of the process.",
        Source::ProcessMemory,
    ),
];
