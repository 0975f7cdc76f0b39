//! The document every output renders: one scoreboard snapshot plus process statistics and
//! derived figures (uptime, rates, latency quantiles). Serialized as-is for JSON (versioned).

use serde::Serialize;

use super::procfs::{self, ProcStats};
use crate::scoreboard::{
    CustomMetricSnapshot, GuardsSnapshot, HistogramSnapshot, LastReloadSnapshot,
    ListenQueueSnapshot, RouteSnapshot, SlotSnapshot, SlotState, Snapshot, Totals,
};
use crate::scoreboard::{HistorySeries, MasterInfo, UpgradeRecord};

/// Version of the JSON schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Reload counters and the last outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reloads {
    /// Reloads that succeeded.
    pub success: u64,
    /// Reloads rolled back.
    pub rollback: u64,
    /// The last one.
    pub last: Option<LastReloadSnapshot>,
    /// The last canary reload's comparison (the master's record: absent in a reader of
    /// another process, or before any canary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<crate::canary::CanaryReport>,
    /// Canary reloads by verdict (the master's count: absent in a reader of another process).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_verdicts: Option<crate::canary::CanaryCounts>,
    /// While a canary reload observes its workers: both generations' figures so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_window: Option<crate::canary::CanaryWindow>,
}

/// Lifetime rates (like Apache's `ReqPerSec`: totals divided by uptime).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rates {
    /// Requests per second.
    pub requests_per_second: f64,
    /// Bytes sent per second.
    pub bytes_sent_per_second: f64,
    /// Bytes sent per request.
    pub bytes_per_request: f64,
}

/// Request latency estimated from the histogram (as PromQL's `histogram_quantile`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Mean, seconds.
    pub mean_seconds: f64,
    /// Median, seconds.
    pub p50_seconds: f64,
    /// 90th percentile, seconds.
    pub p90_seconds: f64,
    /// 99th percentile, seconds.
    pub p99_seconds: f64,
}

/// One slot that has been used, with its process statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerDoc {
    /// The scoreboard slot.
    #[serde(flatten)]
    pub slot: SlotSnapshot,
    /// Seconds since the current worker was spawned (none when dead).
    pub uptime_seconds: Option<f64>,
    /// CPU and memory of the current worker process.
    pub process: Option<ProcStats>,
}

/// Everything the status outputs show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusDoc {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `flora-cluster/VERSION`.
    pub server_version: String,
    /// Instance name.
    pub instance: String,
    /// Master pid.
    pub master_pid: u32,
    /// Master process statistics.
    pub master_process: Option<ProcStats>,
    /// Generation serving.
    pub generation: u64,
    /// Workers wanted.
    pub target_workers: u64,
    /// When the master started (segment creation), ms since the epoch.
    pub started_unix_ms: u64,
    /// When this document was made, ms since the epoch.
    pub now_unix_ms: u64,
    /// Seconds since the master started.
    pub uptime_seconds: f64,
    /// Reloads.
    pub reloads: Reloads,
    /// The master that answers: `pid`, `version`, `upgrades` {`success`, `rollback`} (its
    /// records: none when a reader in another process could not get them).
    pub master: Option<MasterInfo>,
    /// The last master upgrade, if any.
    pub last_upgrade: Option<UpgradeRecord>,
    /// OTLP pushes: `[succeeded, failed]`.
    pub otlp_exports: [u64; 2],
    /// Sums over all slots.
    pub totals: Totals,
    /// Recycles and kills by reason and the last kill records, oldest first (the master's
    /// records: none when a reader in another process could not get them).
    pub guards: Option<GuardsSnapshot>,
    /// Lifetime rates.
    pub rates: Rates,
    /// Latency from the histogram, when any request finished.
    pub latency: Option<Latency>,
    /// Histogram bucket upper bounds, seconds (the counts are in `totals.histogram`).
    pub histogram_bounds: Vec<f64>,
    /// Slots that have been used, in index order.
    pub workers: Vec<WorkerDoc>,
    /// Custom metrics, combined across workers, in registration order.
    pub custom: Vec<CustomMetricSnapshot>,
    /// Distinct routes the cluster counts (0 = per-route metrics off).
    pub route_limit: usize,
    /// Per-route requests and durations, by route (empty when off).
    pub routes: Vec<RouteSnapshot>,
    /// Each listener's accept queue (empty until the master's first sample).
    pub listen_queues: Vec<ListenQueueSnapshot>,
    /// The master's samples of the last 15 minutes, one a second (empty in a reader of
    /// another process until [`StatusDoc::with_history`]).
    pub history: HistorySeries,
}

/// Estimates quantile `q` (0..=1) from per-bucket counts, interpolating linearly inside the
/// bucket like PromQL's `histogram_quantile`; observations in +Inf report the highest bound.
pub fn quantile(h: &HistogramSnapshot, q: f64) -> Option<f64> {
    h.quantile(q)
}

impl StatusDoc {
    /// Builds the document from a snapshot, reading `/proc` for the live processes.
    pub fn build(snap: Snapshot) -> Self {
        Self::build_with(snap, procfs::read)
    }

    /// As [`StatusDoc::build`] with another source of process statistics (tests).
    pub fn build_with(snap: Snapshot, proc_of: impl Fn(u32) -> Option<ProcStats>) -> Self {
        let now = snap.taken_unix_ms;
        let uptime = now.saturating_sub(snap.created_unix_ms) as f64 / 1000.0;
        let t = &snap.totals;
        let per_sec = |v: u64| if uptime > 0.0 { v as f64 / uptime } else { 0.0 };
        let rates = Rates {
            requests_per_second: per_sec(t.counters.requests_total),
            bytes_sent_per_second: per_sec(t.counters.bytes_out),
            bytes_per_request: if t.counters.requests_total > 0 {
                t.counters.bytes_out as f64 / t.counters.requests_total as f64
            } else {
                0.0
            },
        };
        let latency = quantile(&t.counters.histogram, 0.5).map(|p50| Latency {
            mean_seconds: t.counters.histogram.sum_seconds
                / t.counters.histogram.count().max(1) as f64,
            p50_seconds: p50,
            p90_seconds: quantile(&t.counters.histogram, 0.9).unwrap_or(p50),
            p99_seconds: quantile(&t.counters.histogram, 0.99).unwrap_or(p50),
        });
        let workers = snap
            .slots
            .iter()
            .filter(|s| s.state != SlotState::Empty)
            .map(|s| {
                let live = s.pid != 0 && s.state != SlotState::Dead;
                WorkerDoc {
                    uptime_seconds: (live && s.started_unix_ms > 0)
                        .then(|| now.saturating_sub(s.started_unix_ms) as f64 / 1000.0),
                    process: if live { proc_of(s.pid) } else { None },
                    slot: s.clone(),
                }
            })
            .collect();
        Self {
            schema_version: SCHEMA_VERSION,
            server_version: format!("flora-cluster/{}", env!("CARGO_PKG_VERSION")),
            master_process: proc_of(snap.master_pid),
            instance: snap.instance,
            master_pid: snap.master_pid,
            generation: snap.generation,
            target_workers: snap.target_workers,
            started_unix_ms: snap.created_unix_ms,
            now_unix_ms: now,
            uptime_seconds: uptime,
            master: snap.master,
            last_upgrade: snap.last_upgrade,
            otlp_exports: [snap.otlp_exports_ok, snap.otlp_exports_failed],
            reloads: Reloads {
                success: snap.reloads_success,
                rollback: snap.reloads_rollback,
                last: snap.last_reload,
                canary: snap.last_canary,
                canary_verdicts: snap.canary_counts,
                canary_window: snap.canary_window,
            },
            totals: snap.totals,
            guards: snap.guards,
            rates,
            latency,
            histogram_bounds: HistogramSnapshot::bounds().to_vec(),
            workers,
            custom: snap.custom,
            route_limit: snap.route_limit,
            routes: snap.routes,
            listen_queues: snap.listen_queues,
            history: HistorySeries::default(),
        }
    }

    /// The document with the master's history ([`crate::Scoreboard::history`]).
    ///
    /// ```
    /// use flora_cluster::{exporter::StatusDoc, Scoreboard};
    /// let sb = Scoreboard::create_sealed("web", 1).unwrap();
    /// let doc = StatusDoc::build(sb.snapshot()).with_history(sb.history());
    /// assert_eq!(doc.history.capacity, 900);
    /// ```
    pub fn with_history(mut self, history: HistorySeries) -> Self {
        self.history = history;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(counts: &[(usize, u64)]) -> HistogramSnapshot {
        let mut h = HistogramSnapshot {
            counts: vec![0; HistogramSnapshot::bounds().len() + 1],
            sum_seconds: 0.0,
        };
        for &(i, c) in counts {
            h.counts[i] = c;
        }
        h
    }

    /// The JSON names other tools read: `guards` at the top, the lag and last guard event
    /// per worker, kill records with the connection table's request objects plus the client.
    #[test]
    fn json_carries_the_guards_with_hostile_strings_escaped() {
        use crate::scoreboard::{Scoreboard, SlotState, ThreadSnapshot};
        let evil = "\"}</script>\u{1b}[2J\n\\";
        let sb = Scoreboard::create_sealed("j", 2).expect("create");
        sb.slot_spawned(1, 4101, 3);
        sb.writer(1).expect("writer").set_state(SlotState::Ready);
        let conn = sb
            .writer(1)
            .expect("writer")
            .conn_open(([127, 0, 0, 1], 9).into());
        let req = conn.request_begin("GET", &format!("/p{evil}"), 11);
        assert!(req.set_info("why", evil));
        let hour = std::time::Duration::from_secs(3600);
        sb.record_heartbeat(1, 4101, std::time::Duration::from_micros(2500), hour);
        sb.record_recycle(1, "max_requests");
        let (id, _) = sb.record_kill(1, 4101, "heartbeat", evil).expect("master");
        let thread = ThreadSnapshot {
            tid: 7,
            name: evil.into(),
            state: "D".into(),
            wchan: "futex_wait_queue".into(),
            syscall: "202 0x1".into(),
        };
        sb.set_kill_threads(id, vec![thread]);
        let snap = sb.snapshot();
        drop(req);
        let text = serde_json::to_string(&StatusDoc::build_with(snap, |_| None)).expect("json");
        assert!(!text.contains('\u{1b}') && !text.contains('\n'), "{text}");
        let doc: serde_json::Value = serde_json::from_str(&text).expect("parse");
        let g = &doc["guards"];
        assert_eq!(
            g["recycles"],
            serde_json::json!({"memory": 0, "max_requests": 1, "age": 0})
        );
        assert_eq!(
            g["kills"],
            serde_json::json!({"heartbeat": 1, "shutdown_timeout": 0})
        );
        let r = &g["kill_records"][0];
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
            k.sort();
            k
        };
        let want = "detail generation pid reason requests slot threads unix_ms";
        assert_eq!(keys(r).join(" "), want);
        assert_eq!(
            (r["slot"].as_u64(), r["pid"].as_u64()),
            (Some(1), Some(4101))
        );
        assert_eq!(
            (r["generation"].as_u64(), r["detail"].as_str()),
            (Some(3), Some(evil))
        );
        let killed = &r["requests"][0];
        assert_eq!(killed["path"].as_str(), Some(format!("/p{evil}").as_str()));
        assert_eq!(killed["infos"][0], serde_json::json!(["why", evil]));
        assert_eq!(killed["client"], "127.0.0.1:9");
        let mut request = keys(&doc["workers"][0]["connections"][0]["request"]);
        request.push("client".into());
        request.sort();
        assert_eq!(
            keys(killed),
            request,
            "a connection's request object plus the client"
        );
        let t = &r["threads"][0];
        assert_eq!(keys(t).join(" "), "name state syscall tid wchan");
        assert_eq!(
            (t["tid"].as_u64(), t["name"].as_str()),
            (Some(7), Some(evil))
        );
        let w = &doc["workers"][0];
        assert_eq!(w["event_loop_lag_seconds"].as_f64(), Some(0.0025));
        let e = &w["last_guard_event"];
        assert_eq!(keys(e).join(" "), "kind reason unix_ms");
        assert_eq!(
            (e["kind"].as_str(), e["reason"].as_str()),
            (Some("kill"), Some("heartbeat"))
        );
    }

    /// `master` {pid, version, upgrades} and `last_upgrade` (or null) at the top.
    #[test]
    fn json_carries_the_master_and_its_last_upgrade() {
        use crate::scoreboard::{Scoreboard, UpgradeOutcomeKind, UpgradeRecord};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        let sb = Scoreboard::create(&path, "j", 1).expect("create");
        let json =
            |snap| serde_json::to_value(StatusDoc::build_with(snap, |_| None)).expect("json");
        let doc = json(sb.snapshot());
        let master = serde_json::json!({
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "upgrades": {"success": 0, "rollback": 0},
        });
        assert_eq!(doc["master"], master);
        assert!(doc["last_upgrade"].is_null() && doc.get("last_upgrade").is_some());
        sb.record_upgrade(UpgradeRecord {
            outcome: UpgradeOutcomeKind::Success,
            from_pid: 4121,
            to_pid: Some(4188),
            from_version: "0.9.0".into(),
            to_version: Some("0.9.1".into()),
            duration_ms: 640,
            reason: None,
            finished_unix_ms: 7,
        });
        let doc = json(sb.snapshot());
        assert_eq!(doc["master"]["upgrades"]["success"], 1);
        let want = serde_json::json!({
            "outcome": "success", "from_pid": 4121, "to_pid": 4188, "from_version": "0.9.0",
            "to_version": "0.9.1", "duration_ms": 640, "reason": null, "finished_unix_ms": 7,
        });
        assert_eq!(doc["last_upgrade"], want);
        // A reader in another process without the master's answer: both null.
        let reader = Scoreboard::open_read_only(&path).expect("open");
        let doc = json(reader.snapshot());
        assert!(doc["master"].is_null() && doc["last_upgrade"].is_null());
    }

    #[test]
    fn quantiles_interpolate_like_promql() {
        assert_eq!(quantile(&hist(&[]), 0.5), None);
        // 10 observations in (0, 0.1 ms]: the median is half-way.
        let q = quantile(&hist(&[(0, 10)]), 0.5).unwrap();
        assert!((q - 0.00005).abs() < 1e-12, "{q}");
        // 90 fast, 10 in (5 ms, 10 ms]: p99 inside the slow bucket.
        let h = hist(&[(0, 90), (6, 10)]);
        let p99 = quantile(&h, 0.99).unwrap();
        assert!(p99 > 0.005 && p99 <= 0.01, "{p99}");
        assert!(quantile(&h, 0.5).unwrap() <= 0.0001);
        // Everything in +Inf: the highest finite bound.
        assert_eq!(quantile(&hist(&[(16, 3)]), 0.5), Some(10.0));
    }
}
