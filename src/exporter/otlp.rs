//! OTLP/HTTP push of every built-in and custom metric (protobuf, optional gzip), read from the
//! scoreboard at each interval. A down or slow collector never blocks the master: each push
//! has a timeout, failures are counted (`flora_otlp_exports_total{result="failure"}`) and
//! logged at most once a minute.
//!
//! # What is sent
//! Every `interval`, [`run`] takes one snapshot, turns it into one `ExportMetricsServiceRequest`
//! ([`encode`], a pure function) and POSTs it to the endpoint as `application/x-protobuf`. One
//! resource (the configured attributes plus `service.name`, `host.name`,
//! `service.instance.id`), one scope (`flora-cluster`, the crate version), and the metrics of
//! the Prometheus output under the same names, labels becoming attributes:
//!
//! | Prometheus | OTLP |
//! |---|---|
//! | counter | `Sum`, monotonic, cumulative, start = master start (CPU time: process start) |
//! | gauge, info (value 1) | `Gauge` |
//! | histogram | `Histogram`, cumulative, same `explicit_bounds`, per-bucket counts, +Inf last |
//!
//! Integer counters and gauges are `as_int` points, CPU seconds and custom gauges `as_double`.
//!
//! # Why the protobuf types and not the SDK
//! We build the messages from the official `opentelemetry-proto` types instead of registering
//! observable instruments with the OpenTelemetry SDK and its OTLP exporter. Our data is already
//! aggregated: the scoreboard holds cumulative counters and bucketed histograms written by the
//! workers, and the SDK would only re-aggregate numbers we already hold. Above all, the
//! OpenTelemetry metrics API has no observable (asynchronous) histogram, so through the SDK our
//! histograms could not keep their buckets: they would have to become gauges or be replayed
//! as fake observations. Building the request directly keeps the exact bounds and counts, and
//! costs one snapshot and one HTTP request per interval.
//!
//! # Failure handling
//! The push runs in its own task; each one is bounded by [`push_timeout`] (connect included),
//! and the next one waits for the next tick. A 2xx answer is a success; anything else (refused
//! connection, timeout, non-2xx) is a failure, counted in the segment and logged as a warning
//! at most once per [`FAILURE_LOG_INTERVAL`] with the number of failures since the last one.

use std::error::Error as StdError;
use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_ENCODING, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point::Value, AggregationTemporality, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;

use super::StatusDoc;
use crate::config::Config;
use crate::scoreboard::{HistogramSnapshot, Scoreboard, SlotSnapshot, SlotState};

/// `Content-Type` of an OTLP/HTTP protobuf body.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/x-protobuf";
/// Instrumentation scope of every metric.
pub const SCOPE_NAME: &str = "flora-cluster";
/// Longest a push may take (the interval, when shorter, bounds it too): OTLP exporters default
/// to 10 s, and a push never overlaps the next one.
pub const MAX_PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one warning about failing pushes per this long: a collector that is down for an
/// hour must not flood the log with one line per interval.
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Shortest interval used, whatever the settings say (`tokio::time::interval` panics on 0).
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Idle pooled connections to the collector are closed after this long (below the usual
/// server idle timeouts, so a push rarely meets a connection the collector just closed).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of a collector's answer read (an export response is a few bytes).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Most characters of an error answer quoted in the log.
const MAX_QUOTED_CHARS: usize = 200;

/// Settings of the push, from [`Config`].
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// Full URL, e.g. `http://127.0.0.1:4318/v1/metrics`.
    pub endpoint: String,
    /// Time between pushes.
    pub interval: Duration,
    /// Extra HTTP headers.
    pub headers: Vec<(String, String)>,
    /// Gzip the body.
    pub gzip: bool,
    /// Resource attributes (defaults filled in).
    pub resource: Vec<(String, String)>,
}

fn pairs(v: &[String]) -> Vec<(String, String)> {
    v.iter()
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

impl OtlpConfig {
    /// The push settings, or `None` when no endpoint is configured.
    pub fn from_config(cfg: &Config) -> Option<Self> {
        let endpoint = cfg.otlp_endpoint.clone()?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let mut resource = pairs(&cfg.otlp_resource);
        for (k, v) in [
            ("service.name", cfg.name.clone()),
            ("host.name", host.clone()),
            ("service.instance.id", format!("{host}:{}", cfg.name)),
        ] {
            if !resource.iter().any(|(key, _)| key == k) {
                resource.push((k.to_string(), v));
            }
        }
        Some(Self {
            endpoint,
            interval: Duration::from_secs_f64(cfg.otlp_interval),
            headers: pairs(&cfg.otlp_headers),
            gzip: cfg.otlp_gzip,
            resource,
        })
    }
}

/// Why one push failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The endpoint or an extra header does not make a valid HTTP request.
    #[error("invalid request (check --otlp-endpoint and --otlp-header): {0}")]
    Request(#[source] hyper::http::Error),
    /// Compressing the body failed.
    #[error("gzip the body: {0}")]
    Gzip(#[source] std::io::Error),
    /// Connecting to the collector or sending the request failed.
    #[error("send to the collector: {0}")]
    Send(#[source] hyper_util::client::legacy::Error),
    /// Reading the collector's answer failed.
    #[error("read the collector's answer: {0}")]
    Answer(#[source] Box<dyn StdError + Send + Sync>),
    /// No complete answer within the push timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The collector answered with a status other than 2xx.
    #[error("collector answered {status}: {body:?}")]
    Status {
        /// The status.
        status: StatusCode,
        /// The start of its body, printable characters only.
        body: String,
    },
}

/// The error and its sources on one line (hyper's errors put the cause in the sources).
fn chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = c.source();
    }
    s
}

/// Timeout of one push: the interval, at most [`MAX_PUSH_TIMEOUT`].
pub fn push_timeout(interval: Duration) -> Duration {
    interval.clamp(MIN_INTERVAL, MAX_PUSH_TIMEOUT)
}

/// Rate limit of the failure warnings.
#[derive(Debug, Default)]
struct FailureLog {
    /// When the last warning was logged.
    last_warn: Option<Instant>,
    /// Failures since the last warning.
    unreported: u64,
    /// Whether the current run of failures was warned about (then its end is logged).
    warned: bool,
}

impl FailureLog {
    /// Counts a failure at `now`; returns the failures to report when a warning is due.
    fn failure(&mut self, now: Instant) -> Option<u64> {
        self.unreported += 1;
        let due = self
            .last_warn
            .is_none_or(|t| now.saturating_duration_since(t) >= FAILURE_LOG_INTERVAL);
        if !due {
            return None;
        }
        self.last_warn = Some(now);
        self.warned = true;
        Some(std::mem::take(&mut self.unreported))
    }

    /// Counts a success; `true` when it ends a run of failures that was warned about.
    fn success(&mut self) -> bool {
        std::mem::take(&mut self.warned)
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client(timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector)
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data)?;
    enc.finish()
}

/// The POST of `payload` (protobuf) to the endpoint, with the extra headers, gzipped if asked.
///
/// # Errors
/// [`ExportError::Request`] for an invalid endpoint or header, [`ExportError::Gzip`].
pub fn request(cfg: &OtlpConfig, payload: Vec<u8>) -> Result<Request<Full<Bytes>>, ExportError> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(cfg.endpoint.as_str())
        .header(CONTENT_TYPE, PROTOBUF_CONTENT_TYPE);
    for (name, value) in &cfg.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let body = if cfg.gzip {
        req = req.header(CONTENT_ENCODING, "gzip");
        gzip(&payload).map_err(ExportError::Gzip)?
    } else {
        payload
    };
    req.body(Full::new(Bytes::from(body)))
        .map_err(ExportError::Request)
}

/// Sends `req` and reads the answer, all within `timeout`.
async fn send(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<(), ExportError> {
    let exchange = async {
        let resp = client.request(req).await.map_err(ExportError::Send)?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes);
        if status.is_success() {
            // Read to the end so the connection can be reused; a partial success is logged.
            let body = body.map_err(ExportError::Answer)?;
            log_partial_success(&body);
            return Ok(());
        }
        let quoted = body.unwrap_or_default();
        let text: String = String::from_utf8_lossy(&quoted)
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_QUOTED_CHARS)
            .collect();
        Err(ExportError::Status { status, body: text })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(ExportError::Timeout(timeout)))
}

fn log_partial_success(body: &[u8]) {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
    let Ok(resp) = ExportMetricsServiceResponse::decode(body) else {
        return;
    };
    if let Some(p) = resp.partial_success.filter(|p| p.rejected_data_points > 0) {
        tracing::debug!(
            "OTLP collector rejected {} data points: {}",
            p.rejected_data_points,
            p.error_message
        );
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Pushes every `interval` until the task is dropped. Never returns on its own and never
/// panics: every failure is counted and logged (rate-limited).
pub async fn run(cfg: OtlpConfig, sb: Scoreboard) {
    let interval = cfg.interval.max(MIN_INTERVAL);
    let timeout = push_timeout(interval);
    let client = http_client(timeout);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = FailureLog::default();
    tracing::info!(
        "OTLP push to {} every {interval:?}{}",
        cfg.endpoint,
        if cfg.gzip { " (gzip)" } else { "" }
    );
    loop {
        ticks.tick().await;
        let doc = StatusDoc::build(sb.snapshot());
        let payload = encode(&doc, &cfg.resource, unix_nanos()).encode_to_vec();
        let result = match request(&cfg, payload) {
            Ok(req) => send(&client, req, timeout).await,
            Err(e) => Err(e),
        };
        sb.record_otlp_export(result.is_ok());
        match result {
            Ok(()) if failures.success() => {
                tracing::info!("OTLP push to {} works again", cfg.endpoint);
            }
            Ok(()) => {}
            Err(e) => {
                if let Some(n) = failures.failure(Instant::now()) {
                    tracing::warn!(
                        "OTLP push to {} failed: {} ({n} failures since the last warning; \
                         at most one warning a minute)",
                        cfg.endpoint,
                        chain(&e)
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/// Collects the metrics of one request: every point gets the same `time`; counters start at
/// `start` unless told otherwise.
struct Metrics {
    start: u64,
    now: u64,
    out: Vec<Metric>,
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn attrs(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
    pairs.iter().map(|(k, v)| kv(k, v)).collect()
}

fn int(v: u64) -> Value {
    Value::AsInt(i64::try_from(v).unwrap_or(i64::MAX))
}

fn ms_to_ns(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

/// UCUM unit of a metric, from the Prometheus naming convention of its name.
fn unit_of(name: &str) -> &'static str {
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

const CODES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// A per-worker metric read from one slot field: name, counter (else gauge), help, getter.
type SlotMetric = (&'static str, bool, &'static str, fn(&SlotSnapshot) -> u64);

const SLOT_METRICS: [SlotMetric; 7] = [
    (
        "flora_http_requests_in_flight",
        false,
        "HTTP requests being served now.",
        |s| s.requests_active,
    ),
    (
        "flora_http_received_bytes_total",
        true,
        "Bytes read from clients, headers included.",
        |s| s.bytes_in,
    ),
    (
        "flora_http_sent_bytes_total",
        true,
        "Bytes written to clients, headers included.",
        |s| s.bytes_out,
    ),
    (
        "flora_connections_open",
        false,
        "Client connections open now.",
        |s| s.conns_open,
    ),
    (
        "flora_connections_total",
        true,
        "Client connections accepted.",
        |s| s.conns_total,
    ),
    (
        "flora_connections_untracked_total",
        true,
        "Connections not shown in the connection table because it was full.",
        |s| s.conn_overflow,
    ),
    (
        "flora_worker_restarts_total",
        true,
        "Respawns of the worker slot after unexpected exits.",
        |s| s.restarts,
    ),
];

fn worker_metrics(m: &mut Metrics, doc: &StatusDoc) {
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
                .zip(s.status)
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
            let h = &s.histogram;
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

fn cluster_metrics(m: &mut Metrics, doc: &StatusDoc) {
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

fn process_metrics(m: &mut Metrics, doc: &StatusDoc) {
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
fn custom_metrics(m: &mut Metrics, doc: &StatusDoc) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporter::procfs::ProcStats;
    use crate::metrics::{Counter, Gauge as CustomGauge, Histogram as CustomHistogram};
    use crate::scoreboard::{Aggregation, MetricSpec, HISTOGRAM_BOUNDS};
    use std::collections::BTreeMap;

    const NOW: u64 = 1_800_000_000_123_456_789;
    const CPU: ProcStats = ProcStats {
        cpu_seconds: 1.5,
        rss_bytes: 1 << 20,
    };

    /// Two ready workers: slot 0 finished 200, 200, 404 and keeps its connection open, slot 1
    /// finished a 500; custom counter (5, in slot 1), histogram (0.05, 0.5, 2 with bounds 0.1
    /// and 1) and gauge (2.5); one OTLP push succeeded and two failed.
    fn sample() -> StatusDoc {
        let dir = tempfile::tempdir().expect("tempdir");
        let sb = Scoreboard::create(&dir.path().join("s"), "web", 2).expect("create");
        sb.set_target_workers(2);
        let w = |i: usize| sb.writer(i).expect("writer");
        for i in 0..2 {
            sb.slot_spawned(i, 4100 + i as u32, 1);
            w(i).set_state(SlotState::Ready);
        }
        let conn = w(0).conn_open(([127, 0, 0, 1], 5000).into());
        for status in [200, 200, 404] {
            conn.request_begin("GET", "/", 11).finish(status, 10);
        }
        w(1).conn_open(([127, 0, 0, 1], 5001).into())
            .request_begin("GET", "/", 11)
            .finish(500, 1);
        let spec = MetricSpec::counter("jobs_total", "Jobs.").label("queue", "mail");
        Counter::new(w(1), sb.register(&spec).expect("counter")).add(5);
        let spec = MetricSpec::histogram("job_seconds", "Job time.", &[0.1, 1.0]);
        let h = CustomHistogram::new(w(0), sb.register(&spec).expect("hist"), &[0.1, 1.0]);
        [0.05, 0.5, 2.0].into_iter().for_each(|v| h.observe(v));
        let spec = MetricSpec::gauge("queue_depth", "Depth.", Aggregation::Sum);
        CustomGauge::new(w(0), sb.register(&spec).expect("gauge")).set(2.5);
        for ok in [true, false, false] {
            sb.record_otlp_export(ok);
        }
        StatusDoc::build_with(sb.snapshot(), |_| Some(CPU))
    }

    fn metrics(req: &ExportMetricsServiceRequest) -> &[Metric] {
        &req.resource_metrics[0].scope_metrics[0].metrics
    }

    fn find<'a>(req: &'a ExportMetricsServiceRequest, name: &str) -> &'a Data {
        let found: Vec<_> = metrics(req).iter().filter(|m| m.name == name).collect();
        assert_eq!(found.len(), 1, "{name} once in {:?}", names(req));
        found[0].data.as_ref().expect("data")
    }

    fn names(req: &ExportMetricsServiceRequest) -> Vec<&str> {
        metrics(req).iter().map(|m| m.name.as_str()).collect()
    }

    fn attr_map(kvs: &[KeyValue]) -> BTreeMap<String, String> {
        let text = |v: &Option<AnyValue>| match v.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            other => panic!("not a string attribute: {other:?}"),
        };
        kvs.iter()
            .map(|kv| (kv.key.clone(), text(&kv.value)))
            .collect()
    }

    fn has(kvs: &[KeyValue], want: &[(&str, &str)]) -> bool {
        let got = attr_map(kvs);
        want.iter()
            .all(|(k, v)| got.get(*k).map(String::as_str) == Some(*v))
    }

    fn kind(d: &Data) -> &'static str {
        match d {
            Data::Sum(_) => "sum",
            Data::Gauge(_) => "gauge",
            Data::Histogram(_) => "histogram",
            _ => "other",
        }
    }

    fn number(d: &Data, want: &[(&str, &str)]) -> Value {
        let points = match d {
            Data::Sum(s) => &s.data_points,
            Data::Gauge(g) => &g.data_points,
            _ => panic!("not a number metric: {d:?}"),
        };
        let p: Vec<_> = points.iter().filter(|p| has(&p.attributes, want)).collect();
        assert_eq!(p.len(), 1, "one point with {want:?} in {points:?}");
        p[0].value.expect("value")
    }

    fn hist<'a>(d: &'a Data, want: &[(&str, &str)]) -> &'a HistogramDataPoint {
        let Data::Histogram(h) = d else {
            panic!("not a histogram: {d:?}")
        };
        let p: Vec<_> = h
            .data_points
            .iter()
            .filter(|p| has(&p.attributes, want))
            .collect();
        assert_eq!(p.len(), 1, "one point with {want:?}");
        p[0]
    }

    #[test]
    fn every_family_of_the_text_output_with_its_kind_and_flags() {
        let doc = sample();
        let req = encode(&doc, &[], NOW);
        let start = doc.started_unix_ms * 1_000_000;
        // The Prometheus output is the reference: the same families, under the same names.
        let text = super::super::prometheus::render(&doc, super::super::Format::Text);
        let mut want: BTreeMap<String, &str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(n, t)| (n.to_string(), if t == "counter" { "sum" } else { t }))
            .collect();
        // The push counter, whether or not the text output lists it.
        want.insert("flora_otlp_exports_total".into(), "sum");
        let got: BTreeMap<String, &str> = metrics(&req)
            .iter()
            .map(|m| (m.name.clone(), kind(m.data.as_ref().expect("data"))))
            .collect();
        assert_eq!(got, want);
        assert_eq!(got.len(), metrics(&req).len(), "a name twice");
        for m in metrics(&req) {
            match m.data.as_ref().expect("data") {
                Data::Sum(s) => {
                    assert!(s.is_monotonic, "{}", m.name);
                    assert_eq!(s.aggregation_temporality, 2, "{} cumulative", m.name);
                    for p in &s.data_points {
                        assert_eq!(p.time_unix_nano, NOW, "{}", m.name);
                        let worker_cpu = m.name == "process_cpu_seconds_total"
                            && !has(&p.attributes, &[("worker", "master")]);
                        assert!(worker_cpu || p.start_time_unix_nano == start, "{}", m.name);
                        assert!(p.start_time_unix_nano >= start, "{}", m.name);
                    }
                }
                Data::Histogram(h) => {
                    assert_eq!(h.aggregation_temporality, 2, "{} cumulative", m.name);
                    assert!(h
                        .data_points
                        .iter()
                        .all(|p| p.start_time_unix_nano == start));
                }
                Data::Gauge(g) => assert!(g.data_points.iter().all(|p| p.time_unix_nano == NOW)),
                other => panic!("unexpected {other:?}"),
            }
        }
        let units: Vec<(&str, &str)> = metrics(&req)
            .iter()
            .filter(|m| !m.unit.is_empty())
            .map(|m| (m.name.as_str(), m.unit.as_str()))
            .collect();
        assert!(units.contains(&("flora_http_request_duration_seconds", "s")));
        assert!(units.contains(&("flora_http_sent_bytes_total", "By")));
    }

    #[test]
    fn values_buckets_and_attributes() {
        let req = encode(&sample(), &[], NOW);
        let requests = find(&req, "flora_http_requests_total");
        let cases = [
            ("0", "2xx", 2),
            ("0", "4xx", 1),
            ("1", "5xx", 1),
            ("1", "2xx", 0),
        ];
        for (worker, code, n) in cases {
            let v = number(requests, &[("worker", worker), ("code", code)]);
            assert_eq!(v, Value::AsInt(n), "worker {worker} {code}");
        }
        let open = find(&req, "flora_connections_open");
        assert_eq!(number(open, &[("worker", "0")]), Value::AsInt(1));
        let durations = find(&req, "flora_http_request_duration_seconds");
        for (worker, n) in [("0", 3), ("1", 1)] {
            let p = hist(durations, &[("worker", worker)]);
            assert_eq!(p.explicit_bounds, HISTOGRAM_BOUNDS.to_vec());
            assert_eq!(p.bucket_counts.len(), HISTOGRAM_BOUNDS.len() + 1);
            assert_eq!((p.count, p.bucket_counts.iter().sum::<u64>()), (n, n));
            assert!(p.sum.is_some_and(|s| s >= 0.0));
        }
        let jobs = find(&req, "jobs_total");
        assert_eq!(number(jobs, &[("queue", "mail")]), Value::AsInt(5));
        let p = hist(find(&req, "job_seconds"), &[]);
        assert_eq!(
            (p.explicit_bounds.clone(), p.bucket_counts.clone()),
            (vec![0.1, 1.0], vec![1, 1, 1])
        );
        assert_eq!(p.count, 3);
        assert!(
            p.sum.is_some_and(|s| (s - 2.55).abs() < 1e-9),
            "{:?}",
            p.sum
        );
        assert_eq!(number(find(&req, "queue_depth"), &[]), Value::AsDouble(2.5));
        let exports = find(&req, "flora_otlp_exports_total");
        assert_eq!(number(exports, &[("result", "success")]), Value::AsInt(1));
        assert_eq!(number(exports, &[("result", "failure")]), Value::AsInt(2));
        let cpu = find(&req, "process_cpu_seconds_total");
        assert_eq!(number(cpu, &[("worker", "master")]), Value::AsDouble(1.5));
        assert_eq!(number(cpu, &[("worker", "1")]), Value::AsDouble(1.5));
        let info = find(&req, "flora_worker_info");
        let want = [("worker", "1"), ("pid", "4101"), ("generation", "1")];
        assert_eq!(number(info, &want), Value::AsInt(1));
        let workers = find(&req, "flora_workers");
        assert_eq!(number(workers, &[("state", "ready")]), Value::AsInt(2));
        assert_eq!(
            number(find(&req, "flora_target_workers"), &[]),
            Value::AsInt(2)
        );
    }

    #[test]
    fn resource_scope_and_wire_round_trip() {
        let resource = [
            ("service.name".to_string(), "web".to_string()),
            ("deployment.environment".to_string(), "test".to_string()),
        ];
        let req = encode(&sample(), &resource, NOW);
        assert_eq!(req.resource_metrics.len(), 1);
        let rm = &req.resource_metrics[0];
        let attrs = attr_map(&rm.resource.as_ref().expect("resource").attributes);
        assert_eq!(attrs, resource.iter().cloned().collect());
        assert_eq!(rm.scope_metrics.len(), 1);
        let scope = rm.scope_metrics[0].scope.as_ref().expect("scope");
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            (SCOPE_NAME, env!("CARGO_PKG_VERSION"))
        );
        let wire = req.encode_to_vec();
        assert_eq!(
            ExportMetricsServiceRequest::decode(wire.as_slice()).expect("decode"),
            req
        );
    }

    #[test]
    fn empty_scoreboard_sends_no_empty_metrics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sb = Scoreboard::create(&dir.path().join("s"), "web", 1).expect("create");
        let req = encode(&StatusDoc::build_with(sb.snapshot(), |_| None), &[], NOW);
        assert!(!names(&req).contains(&"flora_http_requests_total"));
        assert!(names(&req).contains(&"flora_otlp_exports_total"));
        for m in metrics(&req) {
            let n = match m.data.as_ref().expect("data") {
                Data::Sum(s) => s.data_points.len(),
                Data::Gauge(g) => g.data_points.len(),
                Data::Histogram(h) => h.data_points.len(),
                _ => 0,
            };
            assert!(n > 0, "{} has no points", m.name);
        }
    }

    #[test]
    fn failure_warnings_are_rate_limited() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut log = FailureLog::default();
        // (seconds, failed?, warning with this count, recovery logged)
        let steps = [
            (0, true, Some(1), false),
            (10, true, None, false),
            (59, true, None, false),
            (60, true, Some(3), false),
            (61, false, None, true),
            (62, false, None, false),
            (70, true, None, false),
            (119, false, None, false),
            (121, true, Some(2), false),
        ];
        for (s, failed, warn, recovered) in steps {
            if failed {
                assert_eq!(log.failure(at(s)), warn, "at {s} s");
            } else {
                assert_eq!(log.success(), recovered, "at {s} s");
            }
        }
    }

    #[test]
    fn push_timeout_is_the_interval_at_most_ten_seconds() {
        for (interval_ms, want_ms) in [(0, 100), (500, 500), (10_000, 10_000), (60_000, 10_000)] {
            let got = push_timeout(Duration::from_millis(interval_ms));
            assert_eq!(
                got,
                Duration::from_millis(want_ms),
                "interval {interval_ms} ms"
            );
        }
    }

    fn config(endpoint: &str, gzip: bool) -> OtlpConfig {
        OtlpConfig {
            endpoint: endpoint.into(),
            interval: Duration::from_secs(1),
            headers: vec![("authorization".into(), "Bearer t".into())],
            gzip,
            resource: Vec::new(),
        }
    }

    #[test]
    fn request_headers_and_gzip() {
        use std::io::Read as _;
        let payload = encode(&sample(), &[], NOW).encode_to_vec();
        let req = request(
            &config("http://127.0.0.1:4318/v1/metrics", true),
            payload.clone(),
        )
        .expect("request");
        let h = req.headers();
        assert_eq!(
            (req.method(), req.uri().path()),
            (&Method::POST, "/v1/metrics")
        );
        assert_eq!(h[CONTENT_TYPE], PROTOBUF_CONTENT_TYPE);
        assert_eq!(h[CONTENT_ENCODING], "gzip");
        assert_eq!(h["authorization"], "Bearer t");
        let body = collect_body(req.into_body());
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(body.as_slice())
            .read_to_end(&mut plain)
            .expect("gunzip");
        assert_eq!(plain, payload);
        let req = request(&config("http://h/v1/metrics", false), payload.clone()).expect("plain");
        assert!(req.headers().get(CONTENT_ENCODING).is_none());
        let mut bad = config("http://h/v1/metrics", false);
        bad.headers.push(("bad header".into(), "x".into()));
        assert!(matches!(
            request(&bad, payload.clone()),
            Err(ExportError::Request(_))
        ));
        assert!(matches!(
            request(&config("not a url", false), payload),
            Err(ExportError::Request(_))
        ));
    }

    fn collect_body(body: Full<Bytes>) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(body.collect())
            .expect("body")
            .to_bytes()
            .to_vec()
    }

    /// A collector that answers every connection with `answer` (after reading the request head).
    async fn fake_collector(answer: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        format!("http://{addr}/v1/metrics")
    }

    #[tokio::test]
    async fn push_outcomes() {
        let timeout = Duration::from_millis(300);
        let client = http_client(timeout);
        let push = |endpoint: String| {
            let client = client.clone();
            async move {
                let req = request(&config(&endpoint, false), b"x".to_vec()).expect("request");
                send(&client, req, timeout).await
            }
        };
        let ok = fake_collector("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        assert!(push(ok).await.is_ok());
        let err = fake_collector("HTTP/1.1 500 Oops\r\ncontent-length: 5\r\n\r\nboom\n").await;
        let got = push(err).await;
        assert!(
            matches!(&got, Err(ExportError::Status { status, body }) if status.as_u16() == 500 && body == "boom"),
            "{got:?}"
        );
        // Accepted by the kernel, never answered: the push gives up at its timeout.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/v1/metrics", silent.local_addr().expect("addr"));
        assert!(matches!(push(url).await, Err(ExportError::Timeout(_))));
        // Nothing listening.
        let port = silent.local_addr().expect("addr").port();
        drop(silent);
        let got = push(format!("http://127.0.0.1:{port}/v1/metrics")).await;
        assert!(matches!(&got, Err(ExportError::Send(_))), "{got:?}");
        let msg = chain(&got.expect_err("refused"));
        assert!(msg.contains("onnect"), "{msg}");
    }
}
