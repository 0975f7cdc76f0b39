//! OTLP/HTTP push of every built-in and custom metric (protobuf, optional gzip), read from the
//! scoreboard at each interval. A down or slow collector never blocks the master: each push
//! has a timeout, failures are counted (`flora_otlp_exports_total{result="failure"}`) and
//! logged at most once a minute.
//!
//! # What is sent
//! Every `interval`, [`run`] takes one snapshot, turns it into one `ExportMetricsServiceRequest`
//! (`encode`, a pure function) and POSTs it to the endpoint as `application/x-protobuf`. One
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
//! With `--otlp-names otel` ([`OtlpNames::Otel`]), [`encode_otel_families`] adds
//! `http.server.request.duration` and `http.server.active_requests` of the OpenTelemetry HTTP
//! semantic conventions, and the resource gets `process.pid` and `telemetry.sdk.*`.
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
use crate::config::{Config, OtlpNames};
use crate::scoreboard::Scoreboard;

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
    /// Which names: with [`OtlpNames::Otel`] also the HTTP semantic conventions.
    pub names: OtlpNames,
    /// `url.scheme` of the conventional metrics: `https` when the workers get a certificate.
    pub scheme: &'static str,
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
        if cfg.otlp_names == OtlpNames::Otel {
            otel::add_resource(&mut resource);
        }
        Some(Self {
            endpoint,
            interval: Duration::from_secs_f64(cfg.otlp_interval),
            headers: pairs(&cfg.otlp_headers),
            gzip: cfg.otlp_gzip,
            resource,
            names: cfg.otlp_names,
            scheme: if cfg.tls_cert.is_some() {
                "https"
            } else {
                "http"
            },
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
        let families = super::family::Families::of(&doc);
        let payload = match cfg.names {
            OtlpNames::Prometheus => encode_families(&families, &cfg.resource, unix_nanos()),
            OtlpNames::Otel => {
                encode_otel_families(&families, &cfg.resource, unix_nanos(), cfg.scheme)
            }
        }
        .encode_to_vec();
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

mod encode;
mod otel;
pub use encode::{encode, encode_families};
pub use otel::{encode_otel_families, ACTIVE_REQUESTS, REQUEST_DURATION};

#[cfg(test)]
#[path = "otel_tests.rs"]
mod otel_tests;
#[cfg(test)]
mod tests;
