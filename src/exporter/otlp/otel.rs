//! The OpenTelemetry HTTP semantic conventions (`--otlp-names otel`): one more encoder over
//! the same [`Families`], adding `http.server.request.duration` and
//! `http.server.active_requests` to the Prometheus-named metrics.
//!
//! Only attributes the scoreboard records are sent. Durations and in-flight counts are kept
//! per worker (and per route template with route metrics), not per method, status code or
//! protocol version, so `http.request.method`, `http.response.status_code` and
//! `network.protocol.version` are left out rather than invented. `url.scheme` comes from
//! whether the workers serve TLS; `http.route` from the route families, where the
//! overflow route and requests outside any route make one point without `http.route`.

#[allow(clippy::wildcard_imports, reason = "the parent module's imports")]
use super::*;
use crate::exporter::family::{Families, Family, LabelValue, Value as FamilyValue};
use crate::scoreboard::OVERFLOW_ROUTE;

/// The conventional duration histogram.
pub const REQUEST_DURATION: &str = "http.server.request.duration";
/// The conventional in-flight gauge (an UpDownCounter).
pub const ACTIVE_REQUESTS: &str = "http.server.active_requests";
/// The flora family the duration histogram is read from.
const DURATIONS: &str = "flora_http_request_duration_seconds";
/// The per-route durations (route metrics on).
const ROUTE_DURATIONS: &str = "flora_http_route_request_duration_seconds";
/// The in-flight requests per worker.
const IN_FLIGHT: &str = "flora_http_requests_in_flight";

/// Bucket counts and sum of a histogram, added up over samples.
#[derive(Debug, Clone, Default, PartialEq)]
struct Total {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
}

impl Total {
    fn add(&mut self, value: &FamilyValue<'_>) {
        let FamilyValue::Histogram(b) = value else {
            return;
        };
        if b.counts.len() != b.bounds.len() + 1 {
            return;
        }
        if self.counts.is_empty() {
            self.bounds = b.bounds.to_vec();
            self.counts = vec![0; b.counts.len()];
        }
        if self.bounds != b.bounds {
            return;
        }
        for (t, c) in self.counts.iter_mut().zip(b.counts) {
            *t = t.wrapping_add(*c);
        }
        self.sum += b.sum;
    }

    /// `self` less `other`, bucket by bucket (never below 0: the two are read at slightly
    /// different moments).
    fn minus(&self, other: &Self) -> Self {
        if other.counts.len() != self.counts.len() {
            return self.clone();
        }
        Self {
            bounds: self.bounds.clone(),
            counts: (self.counts.iter().zip(&other.counts))
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            sum: (self.sum - other.sum).max(0.0),
        }
    }

    fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, c| a.wrapping_add(*c))
    }
}

fn family<'f, 'a>(families: &'f Families<'a>, name: &str) -> Option<&'f Family<'a>> {
    families.builtin().iter().find(|f| f.name == name)
}

fn point(total: &Total, attributes: Vec<KeyValue>, start: u64, now: u64) -> HistogramDataPoint {
    let count = total.count();
    HistogramDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now,
        count,
        sum: (total.sum.is_finite() && total.sum >= 0.0).then_some(if count == 0 {
            0.0
        } else {
            total.sum
        }),
        bucket_counts: total.counts.clone(),
        explicit_bounds: total.bounds.clone(),
        ..Default::default()
    }
}

/// `http.server.request.duration`: the cluster's durations, split by route when the route
/// families are there; `None` before any worker.
fn request_duration(families: &Families<'_>, scheme: &KeyValue, stamp: [u64; 2]) -> Option<Metric> {
    let [start, now] = stamp;
    let mut total = Total::default();
    for s in &family(families, DURATIONS)?.samples {
        total.add(&s.value);
    }
    if total.counts.is_empty() {
        return None;
    }
    let mut points = Vec::new();
    let mut routed = Total::default();
    for s in family(families, ROUTE_DURATIONS).map_or(&[][..], |f| &f.samples) {
        let Some((_, LabelValue::Str(route))) = s.labels.iter().find(|(k, _)| *k == "route") else {
            continue;
        };
        if route == OVERFLOW_ROUTE {
            continue;
        }
        let mut one = Total::default();
        one.add(&s.value);
        routed.add(&s.value);
        let attributes = vec![scheme.clone(), super::encode::kv("http.route", route)];
        points.push(point(&one, attributes, start, now));
    }
    let rest = total.minus(&routed);
    if points.is_empty() || rest.count() > 0 {
        points.push(point(&rest, vec![scheme.clone()], start, now));
    }
    Some(Metric {
        name: REQUEST_DURATION.to_string(),
        description: "Duration of HTTP server requests.".to_string(),
        unit: "s".to_string(),
        data: Some(Data::Histogram(Histogram {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    })
}

/// `http.server.active_requests`: the in-flight requests of every worker added up.
fn active_requests(families: &Families<'_>, scheme: &KeyValue, stamp: [u64; 2]) -> Option<Metric> {
    let [start, now] = stamp;
    let f = family(families, IN_FLIGHT)?;
    if f.samples.is_empty() {
        return None;
    }
    let n = f.samples.iter().fold(0u64, |a, s| match s.value {
        FamilyValue::Int(n) => a.saturating_add(n),
        _ => a,
    });
    let point = NumberDataPoint {
        attributes: vec![scheme.clone()],
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(Value::AsInt(i64::try_from(n).unwrap_or(i64::MAX))),
        ..Default::default()
    };
    Some(Metric {
        name: ACTIVE_REQUESTS.to_string(),
        description: "Number of active HTTP server requests.".to_string(),
        unit: "{request}".to_string(),
        data: Some(Data::Sum(Sum {
            data_points: vec![point],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: false,
        })),
        ..Default::default()
    })
}

/// As [`encode_families`](super::encode_families), plus the two conventional metrics
/// (`scheme`: `http` or `https`, the `url.scheme` of every point) at the head of the scope.
///
/// ```
/// use flora_cluster::exporter::family::Families;
/// use flora_cluster::exporter::otlp::encode_otel_families;
/// use flora_cluster::exporter::StatusDoc;
/// use flora_cluster::scoreboard::Scoreboard;
/// let dir = tempfile::tempdir().unwrap();
/// let sb = Scoreboard::create(&dir.path().join("s"), "web", 2).unwrap();
/// let doc = StatusDoc::build_with(sb.snapshot(), |_| None);
/// let req = encode_otel_families(&Families::of(&doc), &[], 1, "http");
/// let names: Vec<_> = req.resource_metrics[0].scope_metrics[0].metrics.iter().map(|m| &m.name).collect();
/// assert!(!names.iter().any(|n| n.starts_with("http.server"))); // no worker yet
/// ```
pub fn encode_otel_families(
    families: &Families<'_>,
    resource: &[(String, String)],
    now_unix_nanos: u64,
    scheme: &str,
) -> ExportMetricsServiceRequest {
    let mut req = encode_families(families, resource, now_unix_nanos);
    let scheme = super::encode::kv("url.scheme", scheme);
    let stamp = [
        families.start_unix_ms.saturating_mul(1_000_000),
        now_unix_nanos,
    ];
    let conventional = [
        request_duration(families, &scheme, stamp),
        active_requests(families, &scheme, stamp),
    ];
    if let Some(scope) = req
        .resource_metrics
        .first_mut()
        .and_then(|r| r.scope_metrics.first_mut())
    {
        scope
            .metrics
            .splice(0..0, conventional.into_iter().flatten());
    }
    req
}

/// The conventional resource attributes the push knows, where not set by hand: the
/// master's `process.pid` and the `telemetry.sdk.*` of the code that encodes the metrics.
pub(super) fn add_resource(resource: &mut Vec<(String, String)>) {
    for (k, v) in [
        ("process.pid", std::process::id().to_string()),
        ("telemetry.sdk.name", SCOPE_NAME.to_string()),
        ("telemetry.sdk.language", "rust".to_string()),
        (
            "telemetry.sdk.version",
            env!("CARGO_PKG_VERSION").to_string(),
        ),
    ] {
        if !resource.iter().any(|(key, _)| key == k) {
            resource.push((k.to_string(), v));
        }
    }
}
