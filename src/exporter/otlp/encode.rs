//! Encoding the [`Families`] of a status document as an OTLP `ExportMetricsServiceRequest`.

#[allow(clippy::wildcard_imports, reason = "the parent module's imports")]
use super::*;
use crate::exporter::family::{self, Buckets, Families, Family, Kind, LabelValue, Labels, Sample};

pub(super) fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn attrs(labels: &Labels<'_>) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(k, v)| match v {
            LabelValue::Str(v) => kv(k, v),
            LabelValue::Int(n) => kv(k, &n.to_string()),
        })
        .collect()
}

/// An integer point (saturating: OTLP integers are signed).
fn int(v: u64) -> Value {
    Value::AsInt(i64::try_from(v).unwrap_or(i64::MAX))
}

fn ms_to_ns(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

/// Stamps every point of one request: the same `time`; counters and histograms start at
/// `start` unless their sample says otherwise.
struct Stamp {
    start: u64,
    now: u64,
}

impl Stamp {
    fn start_of(&self, s: &Sample<'_>) -> u64 {
        s.start_unix_ms.map_or(self.start, ms_to_ns)
    }

    /// A number point; gauges (`start` false) have no start time.
    fn number(&self, s: &Sample<'_>, start: bool) -> Option<NumberDataPoint> {
        let value = match s.value {
            family::Value::Int(n) => int(n),
            family::Value::Float(v) => Value::AsDouble(v),
            family::Value::Histogram(_) => return None,
        };
        Some(NumberDataPoint {
            attributes: attrs(&s.labels),
            start_time_unix_nano: if start { self.start_of(s) } else { 0 },
            time_unix_nano: self.now,
            value: Some(value),
            ..Default::default()
        })
    }

    fn histogram(&self, s: &Sample<'_>) -> Option<HistogramDataPoint> {
        let family::Value::Histogram(h) = s.value else {
            return None;
        };
        let Buckets {
            bounds,
            counts,
            sum,
        } = h;
        if counts.len() != bounds.len() + 1 {
            return None;
        }
        let count = h.count();
        Some(HistogramDataPoint {
            attributes: attrs(&s.labels),
            start_time_unix_nano: self.start_of(s),
            time_unix_nano: self.now,
            count,
            // OTLP: no sum when negative values were recorded.
            sum: (sum.is_finite() && sum >= 0.0).then_some(if count == 0 { 0.0 } else { sum }),
            bucket_counts: counts.to_vec(),
            explicit_bounds: bounds.to_vec(),
            ..Default::default()
        })
    }

    /// The metric of family `f`, or none when it has no points (OTLP receivers drop empty
    /// metrics anyway). Counters are cumulative monotonic sums; gauges and infos gauges.
    fn metric(&self, f: &Family<'_>) -> Option<Metric> {
        let data = match f.kind {
            Kind::Counter => Data::Sum(Sum {
                data_points: f
                    .samples
                    .iter()
                    .filter_map(|s| self.number(s, true))
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
            Kind::Gauge | Kind::Info => Data::Gauge(Gauge {
                data_points: f
                    .samples
                    .iter()
                    .filter_map(|s| self.number(s, false))
                    .collect(),
            }),
            Kind::Histogram => Data::Histogram(Histogram {
                data_points: f.samples.iter().filter_map(|s| self.histogram(s)).collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        };
        let empty = match &data {
            Data::Sum(s) => s.data_points.is_empty(),
            Data::Gauge(g) => g.data_points.is_empty(),
            Data::Histogram(h) => h.data_points.is_empty(),
            _ => true,
        };
        (!empty).then(|| Metric {
            name: f.name.to_string(),
            description: f.help.to_string(),
            unit: f.unit.to_string(),
            data: Some(data),
            ..Default::default()
        })
    }
}

/// The request for one push: the metrics of `doc` under one resource with `resource` as its
/// attributes, stamped `now_unix_nanos`. Pure; see the module docs for the mapping.
pub fn encode(
    doc: &StatusDoc,
    resource: &[(String, String)],
    now_unix_nanos: u64,
) -> ExportMetricsServiceRequest {
    encode_families(&Families::of(doc), resource, now_unix_nanos)
}

/// As [`encode`], from the families.
pub fn encode_families(
    families: &Families<'_>,
    resource: &[(String, String)],
    now_unix_nanos: u64,
) -> ExportMetricsServiceRequest {
    let stamp = Stamp {
        start: ms_to_ns(families.start_unix_ms),
        now: now_unix_nanos,
    };
    let scope = ScopeMetrics {
        scope: Some(InstrumentationScope {
            name: SCOPE_NAME.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        }),
        metrics: families
            .list
            .iter()
            .filter_map(|f| stamp.metric(f))
            .collect(),
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
