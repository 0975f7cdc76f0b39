//! What an app registers: [`MetricSpec`] (name, help, kind, labels), its validation and the
//! encoding of its label set in the segment.

use serde::{Deserialize, Serialize};

use super::MetricError;
use crate::scoreboard::names;
use crate::scoreboard::raw::layout::{
    MAX_BUCKETS, METRIC_HELP_BYTES, METRIC_LABELS_BYTES, METRIC_NAME_BYTES,
};

/// Labels a series may have.
pub const MAX_LABELS: usize = 4;
/// Separator of label pairs in the encoded label set.
const LABEL_SEP: char = '\u{1f}';

/// How a gauge's per-worker values combine into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// Sum over workers.
    Sum,
    /// Largest value.
    Max,
    /// Smallest value.
    Min,
    /// The value set most recently by any worker.
    Latest,
}

impl Aggregation {
    pub(super) fn code(self) -> u64 {
        match self {
            Self::Sum => 0,
            Self::Max => 1,
            Self::Min => 2,
            Self::Latest => 3,
        }
    }

    pub(super) fn from_code(c: u64) -> Self {
        match c & 0xff {
            1 => Self::Max,
            2 => Self::Min,
            3 => Self::Latest,
            _ => Self::Sum,
        }
    }

    /// `sum`, `max`, `min` or `latest`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sum => "sum",
            Self::Max => "max",
            Self::Min => "min",
            Self::Latest => "latest",
        }
    }
}

/// The kind of a custom metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MetricKind {
    /// A monotonic counter (integer increments); its name must end in `_total`.
    Counter,
    /// A gauge (f64).
    Gauge {
        /// How workers' values combine.
        aggregation: Aggregation,
        /// Whether the last value of a worker that is gone still counts.
        count_dead: bool,
    },
    /// A histogram with the given bucket upper bounds (+Inf is implied).
    Histogram {
        /// Strictly increasing, finite, at most 16.
        buckets: Vec<f64>,
    },
}

impl MetricKind {
    pub(super) fn code(&self) -> u64 {
        match self {
            Self::Counter => 1,
            Self::Gauge { .. } => 2,
            Self::Histogram { .. } => 3,
        }
    }

    /// Cells one series of this kind uses in each slot.
    pub(super) fn cells(&self) -> usize {
        match self {
            Self::Counter => 1,
            Self::Gauge { .. } => 2,
            Self::Histogram { buckets } => buckets.len() + 2,
        }
    }
}

/// What to register: a series of a custom metric.
///
/// ```
/// use flora_cluster::scoreboard::{Aggregation, MetricSpec};
/// let jobs = MetricSpec::counter("jobs_done_total", "Jobs finished.").label("queue", "mail");
/// assert!(jobs.validate().is_ok());
/// assert!(MetricSpec::gauge("flora_mine", "x", Aggregation::Max).validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    /// Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`, at most 64 bytes, not `flora_…`).
    pub name: String,
    /// Help text (at most 128 bytes).
    pub help: String,
    /// Kind and its parameters.
    pub kind: MetricKind,
    /// Fixed label values of this series (at most 4; sorted by name on registration).
    pub labels: Vec<(String, String)>,
}

fn valid_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl MetricSpec {
    /// A counter (its name must end in `_total`).
    pub fn counter(name: impl Into<String>, help: impl Into<String>) -> Self {
        Self::new(name, help, MetricKind::Counter)
    }

    /// A gauge combined across workers by `aggregation` (live workers only; see
    /// [`MetricSpec::count_dead`]).
    pub fn gauge(
        name: impl Into<String>,
        help: impl Into<String>,
        aggregation: Aggregation,
    ) -> Self {
        Self::new(
            name,
            help,
            MetricKind::Gauge {
                aggregation,
                count_dead: false,
            },
        )
    }

    /// A histogram with `buckets` (upper bounds; +Inf is implied).
    pub fn histogram(name: impl Into<String>, help: impl Into<String>, buckets: &[f64]) -> Self {
        Self::new(
            name,
            help,
            MetricKind::Histogram {
                buckets: buckets.to_vec(),
            },
        )
    }

    fn new(name: impl Into<String>, help: impl Into<String>, kind: MetricKind) -> Self {
        Self {
            name: name.into(),
            help: help.into(),
            kind,
            labels: Vec::new(),
        }
    }

    /// Adds a fixed label value.
    #[must_use]
    pub fn label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((name.into(), value.into()));
        self
    }

    /// Gauges: keep counting the last value of workers that are gone.
    #[must_use]
    pub fn count_dead(mut self) -> Self {
        if let MetricKind::Gauge { count_dead, .. } = &mut self.kind {
            *count_dead = true;
        }
        self
    }

    /// Checks every rule; see [`MetricError`].
    ///
    /// # Errors
    /// The first rule the spec breaks.
    pub fn validate(&self) -> Result<(), MetricError> {
        self.validate_name()?;
        let too_long = |what: &str, len, max| MetricError::TooLong {
            name: self.name.clone(),
            what: what.to_string(),
            len,
            max,
        };
        if self.help.len() > METRIC_HELP_BYTES {
            return Err(too_long("help", self.help.len(), METRIC_HELP_BYTES));
        }
        self.validate_labels()?;
        let encoded = self.encoded_labels();
        if encoded.len() > METRIC_LABELS_BYTES {
            return Err(too_long("label set", encoded.len(), METRIC_LABELS_BYTES));
        }
        if let MetricKind::Histogram { buckets } = &self.kind {
            self.validate_buckets(buckets)?;
        }
        Ok(())
    }

    fn validate_name(&self) -> Result<(), MetricError> {
        let n = &self.name;
        let bad = |reason: &str| {
            Err(MetricError::InvalidName {
                name: n.clone(),
                reason: reason.into(),
            })
        };
        if !valid_metric_name(n) {
            return bad("use [a-zA-Z_:][a-zA-Z0-9_:]*");
        }
        if n.len() > METRIC_NAME_BYTES {
            return bad(&format!("longer than {METRIC_NAME_BYTES} bytes"));
        }
        names::check_name(n, &self.kind)
    }

    fn validate_labels(&self) -> Result<(), MetricError> {
        let bad = |label: &str, reason: &str| {
            Err(MetricError::InvalidLabel {
                name: self.name.clone(),
                label: label.into(),
                reason: reason.into(),
            })
        };
        if self.labels.len() > MAX_LABELS {
            return bad("", &format!("at most {MAX_LABELS} labels"));
        }
        for (i, (k, v)) in self.labels.iter().enumerate() {
            if !valid_label_name(k) || k.starts_with("__") {
                return bad(k, "use [a-zA-Z_][a-zA-Z0-9_]*, not starting with __");
            }
            if ["worker", "le", "quantile"].contains(&k.as_str()) {
                return bad(k, "reserved label name");
            }
            if self.labels[..i].iter().any(|(other, _)| other == k) {
                return bad(k, "given twice");
            }
            if v.contains(LABEL_SEP) || k.contains(LABEL_SEP) {
                return bad(k, "contains the control character U+001F");
            }
        }
        Ok(())
    }

    fn validate_buckets(&self, buckets: &[f64]) -> Result<(), MetricError> {
        let reason = if buckets.is_empty() {
            Some("give at least one bucket".to_string())
        } else if buckets.len() > MAX_BUCKETS {
            Some(format!("at most {MAX_BUCKETS} buckets"))
        } else if buckets.iter().any(|b| !b.is_finite()) {
            Some("bounds must be finite (+Inf is implied)".into())
        } else if buckets.windows(2).any(|w| w[0] >= w[1]) {
            Some("bounds must be strictly increasing".into())
        } else {
            None
        };
        reason.map_or(Ok(()), |reason| {
            Err(MetricError::Buckets {
                name: self.name.clone(),
                reason,
            })
        })
    }

    pub(super) fn sorted_labels(&self) -> Vec<(String, String)> {
        let mut l = self.labels.clone();
        l.sort();
        l
    }

    fn encoded_labels(&self) -> String {
        encode_labels(&self.sorted_labels())
    }
}

pub(super) fn encode_labels(labels: &[(String, String)]) -> String {
    let sep = LABEL_SEP.to_string();
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(&sep)
}

/// Decodes a label set as stored (tolerates garbage: pairs without `=` are dropped).
pub(super) fn decode_labels(s: &str) -> Vec<(String, String)> {
    s.split(LABEL_SEP)
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn validation_table() {
        let ok = [
            MetricSpec::counter("jobs_total", "Jobs."),
            MetricSpec::counter("a:b_total", ""),
            MetricSpec::gauge("queue_depth", "Depth.", Aggregation::Max).label("queue", "mail"),
            MetricSpec::histogram("job_seconds", "Time.", &[0.1, 1.0, 10.0]),
        ];
        for s in ok {
            assert_eq!(s.validate(), Ok(()), "{s:?}");
        }
        let bad: Vec<(MetricSpec, &str)> = vec![
            (MetricSpec::counter("jobs", "x"), "_total"),
            (MetricSpec::counter("9jobs_total", "x"), "use ["),
            (MetricSpec::counter("jo-bs_total", "x"), "use ["),
            (
                MetricSpec::counter("flora_http_requests_total", "x"),
                "clashes",
            ),
            (
                MetricSpec::counter("process_cpu_seconds_total", "x"),
                "clashes",
            ),
            (
                MetricSpec::gauge("x_total", "x", Aggregation::Sum),
                "reserved",
            ),
            (
                MetricSpec::gauge("g".repeat(65), "x", Aggregation::Sum),
                "longer",
            ),
            (
                MetricSpec::gauge("g", "h".repeat(129), Aggregation::Sum),
                "help",
            ),
            (
                MetricSpec::gauge("g", "x", Aggregation::Sum).label("worker", "1"),
                "reserved label",
            ),
            (
                MetricSpec::gauge("g", "x", Aggregation::Sum).label("__x", "1"),
                "not starting",
            ),
            (
                MetricSpec::gauge("g", "x", Aggregation::Sum)
                    .label("a", "1")
                    .label("a", "2"),
                "twice",
            ),
            (
                MetricSpec::gauge("g", "x", Aggregation::Sum).label("a", "v".repeat(130)),
                "label set",
            ),
            (MetricSpec::histogram("h", "x", &[]), "at least one"),
            (MetricSpec::histogram("h", "x", &[1.0, 1.0]), "increasing"),
            (MetricSpec::histogram("h", "x", &[f64::INFINITY]), "finite"),
            (MetricSpec::histogram("h", "x", &[0.0; 17]), "at most"),
        ];
        for (s, needle) in bad {
            let msg = s.validate().unwrap_err().to_string();
            assert!(msg.contains(needle), "{s:?}: {msg}");
        }
    }

    proptest! {
        #[test]
        fn names_valid_iff_they_match_the_prometheus_grammar(name in "[a-zA-Z_:0-9\\-. ]{0,20}") {
            let spec = MetricSpec::gauge(name.clone(), "", Aggregation::Sum);
            let grammar = valid_metric_name(&name);
            let reserved = name.starts_with("flora_")
                || ["_total", "_bucket", "_sum", "_count", "_created", "_info"].iter().any(|s| name.ends_with(s));
            prop_assert_eq!(spec.validate().is_ok(), grammar && !reserved);
        }

        #[test]
        fn label_values_roundtrip(v in "[^\u{1f}]{0,30}") {
            let spec = MetricSpec::counter("c_total", "").label("k", v.clone());
            prop_assert!(spec.validate().is_ok() || spec.encoded_labels().len() > METRIC_LABELS_BYTES);
            let back = decode_labels(&spec.encoded_labels());
            prop_assert_eq!(back, vec![("k".to_string(), v)]);
        }
    }
}
