//! Encoding a status document as an OTLP `ExportMetricsServiceRequest`.

#[allow(clippy::wildcard_imports, reason = "the parent module's imports")]
use super::*;

/// Collects the metrics of one request: every point gets the same `time`; counters start at
/// `start` unless told otherwise.
pub(super) struct Metrics {
    start: u64,
    now: u64,
    out: Vec<Metric>,
}

pub(super) fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

pub(super) fn attrs(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
    pairs.iter().map(|(k, v)| kv(k, v)).collect()
}

pub(super) fn int(v: u64) -> Value {
    Value::AsInt(i64::try_from(v).unwrap_or(i64::MAX))
}

pub(super) fn ms_to_ns(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

/// UCUM unit of a metric, from the Prometheus naming convention of its name.
pub(super) fn unit_of(name: &str) -> &'static str {
    let base = name.strip_suffix("_total").unwrap_or(name);
    if base.ends_with("_seconds") {
        "s"
    } else if base.ends_with("_bytes") {
        "By"
    } else {
        ""
    }
}

impl Metrics {
    fn point(&self, pairs: &[(&str, &str)], value: Value, start: u64) -> NumberDataPoint {
        NumberDataPoint {
            attributes: attrs(pairs),
            start_time_unix_nano: start,
            time_unix_nano: self.now,
            value: Some(value),
            ..Default::default()
        }
    }

    /// A point of a counter that started with the master.
    fn count(&self, pairs: &[(&str, &str)], value: Value) -> NumberDataPoint {
        self.point(pairs, value, self.start)
    }

    /// A point of a gauge (no start time).
    fn level(&self, pairs: &[(&str, &str)], value: Value) -> NumberDataPoint {
        self.point(pairs, value, 0)
    }

    fn histogram_point(
        &self,
        pairs: &[(&str, &str)],
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
    ) -> Option<HistogramDataPoint> {
        if counts.len() != bounds.len() + 1 {
            return None;
        }
        let count = counts.iter().fold(0u64, |a, c| a.wrapping_add(*c));
        Some(HistogramDataPoint {
            attributes: attrs(pairs),
            start_time_unix_nano: self.start,
            time_unix_nano: self.now,
            count,
            // OTLP: no sum when negative values were recorded.
            sum: (sum.is_finite() && sum >= 0.0).then_some(if count == 0 { 0.0 } else { sum }),
            bucket_counts: counts.to_vec(),
            explicit_bounds: bounds.to_vec(),
            ..Default::default()
        })
    }

    /// Adds a metric unless it has no points (OTLP receivers drop empty metrics anyway).
    fn add(&mut self, name: &str, help: &str, empty: bool, data: Data) {
        if !empty {
            self.out.push(Metric {
                name: name.to_string(),
                description: help.to_string(),
                unit: unit_of(name).to_string(),
                data: Some(data),
                ..Default::default()
            });
        }
    }

    fn counter(&mut self, name: &str, help: &str, data_points: Vec<NumberDataPoint>) {
        let empty = data_points.is_empty();
        let sum = Sum {
            data_points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        };
        self.add(name, help, empty, Data::Sum(sum));
    }

    fn gauge(&mut self, name: &str, help: &str, data_points: Vec<NumberDataPoint>) {
        let empty = data_points.is_empty();
        self.add(name, help, empty, Data::Gauge(Gauge { data_points }));
    }

    fn histogram(&mut self, name: &str, help: &str, data_points: Vec<HistogramDataPoint>) {
        let empty = data_points.is_empty();
        let h = Histogram {
            data_points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        };
        self.add(name, help, empty, Data::Histogram(h));
    }
}

/// The request for one push: the metrics of `doc` under one resource with `resource` as its
/// attributes, stamped `now_unix_nanos`. Pure; see the module docs for the mapping.
pub fn encode(
    doc: &StatusDoc,
    resource: &[(String, String)],
    now_unix_nanos: u64,
) -> ExportMetricsServiceRequest {
    let mut m = Metrics {
        start: ms_to_ns(doc.started_unix_ms),
        now: now_unix_nanos,
        out: Vec::new(),
    };
    worker_metrics(&mut m, doc);
    cluster_metrics(&mut m, doc);
    process_metrics(&mut m, doc);
    custom_metrics(&mut m, doc);
    let scope = ScopeMetrics {
        scope: Some(InstrumentationScope {
            name: SCOPE_NAME.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        }),
        metrics: m.out,
        schema_url: String::new(),
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource.iter().map(|(k, v)| kv(k, v)).collect(),
                ..Default::default()
            }),
            scope_metrics: vec![scope],
            schema_url: String::new(),
        }],
    }
}

pub(super) const CODES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// A per-worker metric read from one slot field: name, counter (else gauge), help, getter.
pub(super) type SlotMetric = (&'static str, bool, &'static str, fn(&SlotSnapshot) -> u64);

pub(super) const SLOT_METRICS: [SlotMetric; 7] = [
    (
        "flora_http_requests_in_flight",
        false,
        "HTTP requests being served now.",
        |s| s.counters.requests_active,
    ),
    (
        "flora_http_received_bytes_total",
        true,
        "Bytes read from clients, headers included.",
        |s| s.counters.bytes_in,
    ),
    (
        "flora_http_sent_bytes_total",
        true,
        "Bytes written to clients, headers included.",
        |s| s.counters.bytes_out,
    ),
    (
        "flora_connections_open",
        false,
        "Client connections open now.",
        |s| s.counters.conns_open,
    ),
    (
        "flora_connections_total",
        true,
        "Client connections accepted.",
        |s| s.counters.conns_total,
    ),
    (
        "flora_connections_untracked_total",
        true,
        "Connections not shown in the connection table because it was full.",
        |s| s.counters.conn_overflow,
    ),
    (
        "flora_worker_restarts_total",
        true,
        "Respawns of the worker slot after unexpected exits.",
        |s| s.restarts,
    ),
];

pub(super) fn worker_metrics(m: &mut Metrics, doc: &StatusDoc) {
    let slots: Vec<(String, &SlotSnapshot)> = doc
        .workers
        .iter()
        .map(|d| (d.slot.index.to_string(), &d.slot))
        .collect();
    let requests = slots
        .iter()
        .flat_map(|(id, s)| {
            CODES
                .iter()
                .zip(s.counters.status)
                .map(|(code, n)| m.count(&[("worker", id), ("code", code)], int(n)))
        })
        .collect();
    let help = "HTTP requests finished, by status class.";
    m.counter("flora_http_requests_total", help, requests);
    for (name, is_counter, help, get) in SLOT_METRICS {
        let points = slots
            .iter()
            .map(|(id, s)| {
                let start = if is_counter { m.start } else { 0 };
                m.point(&[("worker", id)], int(get(s)), start)
            })
            .collect();
        if is_counter {
            m.counter(name, help, points);
        } else {
            m.gauge(name, help, points);
        }
    }
    let bounds = HistogramSnapshot::bounds();
    let durations = slots
        .iter()
        .filter_map(|(id, s)| {
            let h = &s.counters.histogram;
            m.histogram_point(&[("worker", id)], bounds, &h.counts, h.sum_seconds)
        })
        .collect();
    let help = "Time from request start until its response body was sent.";
    m.histogram("flora_http_request_duration_seconds", help, durations);
    let infos = slots
        .iter()
        .filter(|(_, s)| s.pid != 0)
        .map(|(id, s)| {
            let (pid, generation) = (s.pid.to_string(), s.generation.to_string());
            let pairs = [
                ("worker", id.as_str()),
                ("pid", &pid),
                ("generation", &generation),
            ];
            m.level(&pairs, int(1))
        })
        .collect();
    m.gauge(
        "flora_worker_info",
        "The process in each worker slot.",
        infos,
    );
}

pub(super) fn cluster_metrics(m: &mut Metrics, doc: &StatusDoc) {
    let states = [SlotState::Starting, SlotState::Ready, SlotState::Draining];
    let workers = states
        .iter()
        .map(|state| {
            let n = doc
                .workers
                .iter()
                .filter(|d| d.slot.state == *state)
                .count();
            m.level(&[("state", state.as_str())], int(n as u64))
        })
        .collect();
    m.gauge("flora_workers", "Workers by state.", workers);
    let target = vec![m.level(&[], int(doc.target_workers))];
    m.gauge(
        "flora_target_workers",
        "Workers the master keeps running.",
        target,
    );
    let reloads = vec![
        m.count(&[("outcome", "success")], int(doc.reloads.success)),
        m.count(&[("outcome", "rollback")], int(doc.reloads.rollback)),
    ];
    m.counter("flora_reloads_total", "Reloads by outcome.", reloads);
    let generation = vec![m.level(&[], int(doc.generation))];
    m.gauge(
        "flora_generation",
        "Worker generation serving now.",
        generation,
    );
    let started = Value::AsDouble(doc.started_unix_ms as f64 / 1000.0);
    let help = "Start time of the master, seconds since the epoch.";
    m.gauge(
        "flora_start_time_seconds",
        help,
        vec![m.level(&[], started)],
    );
    let [ok, failed] = doc.otlp_exports;
    let exports = vec![
        m.count(&[("result", "success")], int(ok)),
        m.count(&[("result", "failure")], int(failed)),
    ];
    m.counter(
        "flora_otlp_exports_total",
        "OTLP pushes by result.",
        exports,
    );
}

pub(super) fn process_metrics(m: &mut Metrics, doc: &StatusDoc) {
    // (worker, stats, start): a worker's CPU time starts with its process, not the master.
    let master = doc
        .master_process
        .map(|p| ("master".to_string(), p, m.start));
    let procs: Vec<_> = master
        .into_iter()
        .chain(doc.workers.iter().filter_map(|d| {
            let start = match d.slot.started_unix_ms {
                0 => m.start,
                ms => ms_to_ns(ms),
            };
            d.process.map(|p| (d.slot.index.to_string(), p, start))
        }))
        .collect();
    let cpu = procs
        .iter()
        .map(|(id, p, start)| m.point(&[("worker", id)], Value::AsDouble(p.cpu_seconds), *start))
        .collect();
    let help = "User and system CPU time of the process (a replaced worker starts again from 0).";
    m.counter("process_cpu_seconds_total", help, cpu);
    let rss = procs
        .iter()
        .map(|(id, p, _)| m.level(&[("worker", id)], int(p.rss_bytes)))
        .collect();
    m.gauge(
        "process_resident_memory_bytes",
        "Resident memory of the process.",
        rss,
    );
}

/// The app's own metrics, combined across workers, under the names they registered.
pub(super) fn custom_metrics(m: &mut Metrics, doc: &StatusDoc) {
    let mut names: Vec<&str> = Vec::new();
    for c in &doc.custom {
        if !names.contains(&c.name.as_str()) {
            names.push(&c.name);
        }
    }
    for name in names {
        let series: Vec<_> = doc.custom.iter().filter(|c| c.name == name).collect();
        let Some(first) = series.first() else {
            continue;
        };
        let (kind, help) = (first.kind, first.help.as_str());
        let mut numbers = Vec::new();
        let mut hists = Vec::new();
        for c in &series {
            let pairs: Vec<(&str, &str)> = c
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            match (&c.histogram, c.value) {
                (Some(h), _) => {
                    hists.extend(m.histogram_point(&pairs, &h.bounds, &h.counts, h.sum))
                }
                // Counters are whole numbers (u64 cells); `as` saturates.
                (None, Some(v)) if kind == "counter" => {
                    numbers.push(m.count(&pairs, int(v as u64)))
                }
                (None, Some(v)) => numbers.push(m.level(&pairs, Value::AsDouble(v))),
                (None, None) => {}
            }
        }
        match kind {
            "counter" => m.counter(name, help, numbers),
            "histogram" => m.histogram(name, help, hists),
            _ => m.gauge(name, help, numbers),
        }
    }
}
