//! Custom metrics: what an app registers (name, help, kind, labels), validation, cell
//! allocation in the segment's registry, and reading the registered series back.
//!
//! The registry has one writer (the master; a standalone worker for its private segment), so
//! two workers registering the same name at once get the same series. Entries are written once
//! and published with a Release store of their `state`; readers Acquire it.

use std::sync::atomic::Ordering::{Relaxed, Release};

use serde::{Deserialize, Serialize};

use super::raw::layout::{
    MetricEntry, Registry, CUSTOM_CELLS, MAX_BUCKETS, MAX_SERIES, METRIC_HELP_BYTES,
    METRIC_LABELS_BYTES, METRIC_NAME_BYTES,
};
use super::{load_acquire, names, strings, Scoreboard, Segment};

impl Segment {
    /// Registered series (see [`Scoreboard::registered`]).
    pub(crate) fn registered(&self) -> Vec<EntryView> {
        match &self.truth {
            Some(t) => t.registry().entries.clone(),
            None => self.map.registry().map(entries).unwrap_or_default(),
        }
    }
}

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
    fn code(self) -> u64 {
        match self {
            Self::Sum => 0,
            Self::Max => 1,
            Self::Min => 2,
            Self::Latest => 3,
        }
    }

    fn from_code(c: u64) -> Self {
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
    fn code(&self) -> u64 {
        match self {
            Self::Counter => 1,
            Self::Gauge { .. } => 2,
            Self::Histogram { .. } => 3,
        }
    }

    /// Cells one series of this kind uses in each slot.
    fn cells(&self) -> usize {
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

/// Why a registration failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MetricError {
    /// The name is not a valid Prometheus name, or breaks a naming rule.
    #[error("invalid metric name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// The rule it breaks.
        reason: String,
    },
    /// The name belongs to flora-cluster's own metrics.
    #[error(
        "metric name {0:?} clashes with flora-cluster's built-in metrics (flora_* and process_*)"
    )]
    Reserved(String),
    /// A label name or value is not acceptable.
    #[error("invalid label {label:?} of {name:?}: {reason}")]
    InvalidLabel {
        /// The metric.
        name: String,
        /// The label.
        label: String,
        /// Why.
        reason: String,
    },
    /// A text is longer than the segment keeps.
    #[error("{what} of {name:?} is {len} bytes, the limit is {max}")]
    TooLong {
        /// The metric.
        name: String,
        /// Which text.
        what: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Histogram buckets are not usable.
    #[error("invalid buckets of {name:?}: {reason}")]
    Buckets {
        /// The metric.
        name: String,
        /// Why.
        reason: String,
    },
    /// The name's family or one of its sample names is taken by another registered metric
    /// (e.g. gauge `foo` and counter `foo_total` are both family `foo` in OpenMetrics).
    #[error("metric name {name:?} clashes with the registered metric {other:?}: both would use the name {clash:?}")]
    Collision {
        /// The metric being registered.
        name: String,
        /// The registered metric it clashes with.
        other: String,
        /// The name both would use.
        clash: String,
    },
    /// The name is registered already with another kind, help or buckets.
    #[error("metric {0:?} is already registered with a different kind, help or buckets")]
    ShapeMismatch(String),
    /// The registry or the cells are exhausted.
    #[error("the custom metric registry is full ({0})")]
    Full(String),
    /// The registration could not reach the master.
    #[error("cannot register {name:?}: {reason}")]
    Unavailable {
        /// The metric.
        name: String,
        /// Why.
        reason: String,
    },
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

    fn sorted_labels(&self) -> Vec<(String, String)> {
        let mut l = self.labels.clone();
        l.sort();
        l
    }

    fn encoded_labels(&self) -> String {
        encode_labels(&self.sorted_labels())
    }
}

fn encode_labels(labels: &[(String, String)]) -> String {
    let sep = LABEL_SEP.to_string();
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(&sep)
}

/// Decodes a label set as stored (tolerates garbage: pairs without `=` are dropped).
pub(crate) fn decode_labels(s: &str) -> Vec<(String, String)> {
    s.split(LABEL_SEP)
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Where a registered series lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// Registry entry.
    pub entry: usize,
    /// First cell in each slot's custom array.
    pub cell: usize,
    /// Cells used.
    pub cells: usize,
}

/// A registered series read back from the registry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EntryView {
    pub spec: MetricSpec,
    pub at: Registered,
}

fn read_entry(e: &MetricEntry, index: usize) -> Option<EntryView> {
    if load_acquire(&e.state) != 1 {
        return None;
    }
    let flags = e.flags.load(Relaxed);
    let kind = match e.kind.load(Relaxed) {
        1 => MetricKind::Counter,
        2 => MetricKind::Gauge {
            aggregation: Aggregation::from_code(flags),
            count_dead: flags & (1 << 8) != 0,
        },
        3 => {
            let n = (e.bucket_count.load(Relaxed) as usize).min(MAX_BUCKETS);
            MetricKind::Histogram {
                buckets: e.buckets[..n]
                    .iter()
                    .map(|b| f64::from_bits(b.load(Relaxed)))
                    .collect(),
            }
        }
        _ => return None,
    };
    let cell = e.cell.load(Relaxed) as usize;
    let cells = e.cells.load(Relaxed) as usize;
    // A corrupt entry pointing outside the cells is ignored.
    if cell.checked_add(cells).is_none_or(|end| end > CUSTOM_CELLS) || cells != kind.cells() {
        return None;
    }
    let spec = MetricSpec {
        name: strings::read(&e.name).0,
        help: strings::read(&e.help).0,
        kind,
        labels: decode_labels(&strings::read(&e.labels).0),
    };
    // An entry that would not pass registration (a corrupt segment) is never shown: every
    // output stays valid exposition.
    spec.validate().ok()?;
    Some(EntryView {
        spec,
        at: Registered {
            entry: index,
            cell,
            cells,
        },
    })
}

/// Every published entry, in registration order.
pub(crate) fn entries(reg: &Registry) -> Vec<EntryView> {
    let n = (load_acquire(&reg.count) as usize).min(MAX_SERIES);
    reg.entries[..n]
        .iter()
        .enumerate()
        .filter_map(|(i, e)| read_entry(e, i))
        .collect()
}

impl Scoreboard {
    /// Registers a series. The same name, labels and shape again returns the same series.
    ///
    /// The registry has a single writer: call this only from the process that owns the segment
    /// (the master; a standalone worker for its private segment; a benchmark or test for its
    /// own). Workers register through [`crate::Worker::register`], which asks the master.
    ///
    /// # Errors
    /// Validation errors, [`MetricError::ShapeMismatch`], [`MetricError::Full`].
    pub fn register(&self, spec: &MetricSpec) -> Result<Registered, MetricError> {
        spec.validate()?;
        let (Some(truth), Some(reg)) = (&self.segment().truth, self.registry()) else {
            return Err(MetricError::Unavailable {
                name: spec.name.clone(),
                reason: "only the process that created the scoreboard registers metrics \
                         (workers register through Worker::register)"
                    .into(),
            });
        };
        // Counts, offsets and existing series come from this process's own record, never from
        // the segment, which every worker can write.
        let mut local = truth.registry();
        let labels = spec.sorted_labels();
        names::check_collision(local.entries.iter().map(|e| &e.spec), spec)?;
        for existing in &local.entries {
            let e = &existing.spec;
            if e.name != spec.name {
                continue;
            }
            if e.kind != spec.kind || e.help != spec.help {
                return Err(MetricError::ShapeMismatch(spec.name.clone()));
            }
            if e.labels == labels {
                return Ok(existing.at);
            }
        }
        let index = local.entries.len();
        if index >= MAX_SERIES {
            return Err(MetricError::Full(format!("{MAX_SERIES} series")));
        }
        let cells = spec.kind.cells();
        let cell = local.next_cell;
        if cell.saturating_add(cells) > CUSTOM_CELLS {
            return Err(MetricError::Full(format!(
                "{CUSTOM_CELLS} cells per worker"
            )));
        }
        let at = Registered {
            entry: index,
            cell,
            cells,
        };
        local.entries.push(EntryView {
            spec: MetricSpec {
                labels: labels.clone(),
                ..spec.clone()
            },
            at,
        });
        local.next_cell = cell + cells;
        // The segment's copy, for readers in other processes (workers' in-app status, CLI).
        write_entry(&reg.entries[index], spec, &labels, cell, cells);
        reg.next_cell.store(local.next_cell as u64, Relaxed);
        reg.count.store(local.entries.len() as u64, Release);
        Ok(at)
    }

    /// Registered series, in registration order: the creator's own record, or (other
    /// processes) the segment's copy, each entry validated.
    pub(crate) fn registered(&self) -> Vec<EntryView> {
        self.segment().registered()
    }

    /// A new worker starts in `slot`: its gauges start unset (unless they count dead workers).
    pub(crate) fn reset_gauges(&self, slot: usize) {
        let Some(s) = self.slot(slot) else { return };
        for e in self.registered() {
            if let MetricKind::Gauge {
                count_dead: false, ..
            } = e.spec.kind
            {
                if let Some(set_at) = s.custom.get(e.at.cell + 1) {
                    set_at.store(0, Relaxed);
                }
            }
        }
    }
}

fn write_entry(
    e: &MetricEntry,
    spec: &MetricSpec,
    labels: &[(String, String)],
    cell: usize,
    cells: usize,
) {
    e.kind.store(spec.kind.code(), Relaxed);
    let flags = match &spec.kind {
        MetricKind::Gauge {
            aggregation,
            count_dead,
        } => aggregation.code() | (u64::from(*count_dead) << 8),
        _ => 0,
    };
    e.flags.store(flags, Relaxed);
    if let MetricKind::Histogram { buckets } = &spec.kind {
        for (dst, b) in e.buckets.iter().zip(buckets) {
            dst.store(b.to_bits(), Relaxed);
        }
        e.bucket_count.store(buckets.len() as u64, Relaxed);
    }
    e.cell.store(cell as u64, Relaxed);
    e.cells.store(cells as u64, Relaxed);
    strings::write(&e.name, &spec.name);
    strings::write(&e.help, &spec.help);
    strings::write(&e.labels, &encode_labels(labels));
    e.state.store(1, Release);
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

    #[test]
    fn register_dedups_and_checks_shape() {
        let dir = tempfile::tempdir().unwrap();
        let sb = Scoreboard::create(&dir.path().join("s"), "t", 2).unwrap();
        let a = sb
            .register(
                &MetricSpec::counter("x_total", "X.")
                    .label("b", "2")
                    .label("a", "1"),
            )
            .unwrap();
        let again = sb
            .register(
                &MetricSpec::counter("x_total", "X.")
                    .label("a", "1")
                    .label("b", "2"),
            )
            .unwrap();
        assert_eq!(a, again);
        let other = sb
            .register(&MetricSpec::counter("x_total", "X.").label("a", "9"))
            .unwrap();
        assert_ne!(a.cell, other.cell);
        assert!(matches!(
            sb.register(&MetricSpec::counter("x_total", "Other help.")),
            Err(MetricError::ShapeMismatch(_))
        ));
        let h = sb
            .register(&MetricSpec::histogram("h", "H.", &[1.0, 2.0]))
            .unwrap();
        assert_eq!(h.cells, 4);
        let all = sb.registered();
        assert_eq!(all.len(), 3);
        assert_eq!(
            all[0].spec.labels,
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
    }

    #[test]
    fn registry_fills_up_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let sb = Scoreboard::create(&dir.path().join("s"), "t", 1).unwrap();
        let mut last = Ok(Registered {
            entry: 0,
            cell: 0,
            cells: 0,
        });
        for i in 0..=MAX_SERIES {
            last = sb.register(&MetricSpec::histogram(format!("h{i}"), "", &[1.0; 1]));
            if last.is_err() {
                break;
            }
        }
        assert!(matches!(last, Err(MetricError::Full(_))), "{last:?}");
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
