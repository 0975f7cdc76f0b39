//! One model of every metric the outputs write: a list of families (name, kind, unit, help,
//! and samples with labels; histograms as buckets, sum and count), built once per request
//! from a [`StatusDoc`] by [`Families::of`].
//!
//! Prometheus text 0.0.4, OpenMetrics, OTLP and the app lines of `?auto` are encoders of this
//! list; none of them names a built-in metric. The built-in families come from
//! [`families::BUILTIN`] in the order listed there,
//! then the app's, grouped by name in registration order. The JSON, HTML
//! and terminal views show the [`StatusDoc`] itself: connections, per-worker values and
//! derived figures that are not metrics.
//!
//! ```
//! use flora_cluster::exporter::family::{Families, Kind};
//! use flora_cluster::exporter::StatusDoc;
//! use flora_cluster::scoreboard::Scoreboard;
//! let dir = tempfile::tempdir().unwrap();
//! let sb = Scoreboard::create(&dir.path().join("s"), "web", 2).unwrap();
//! let doc = StatusDoc::build_with(sb.snapshot(), |_| None);
//! let families = Families::of(&doc);
//! let first = &families.builtin()[0];
//! assert_eq!((first.kind, first.samples.len()), (Kind::Counter, 0)); // no worker yet
//! assert!(families.custom().is_empty());
//! ```

mod build;
mod custom;

use std::fmt;

pub(crate) use custom::{Fnv, FnvBuild};

pub use crate::scoreboard::names::Kind;

use super::model::StatusDoc;
use crate::scoreboard::families::{self, BUILTIN};

/// Every family of one document: the built-in ones, then the app's.
#[derive(Debug, Clone)]
pub struct Families<'a> {
    /// When the master started, ms since the epoch: where every counter and histogram starts
    /// unless its sample says otherwise.
    pub start_unix_ms: u64,
    /// The families, built-in first.
    pub list: Vec<Family<'a>>,
    /// How many of `list` are built-in.
    builtin: usize,
}

impl<'a> Families<'a> {
    /// The families of `doc`: the built-in list, then the app's metrics that can be written.
    pub fn of(doc: &'a StatusDoc) -> Self {
        let mut list = Vec::with_capacity(BUILTIN.len() + doc.custom.len());
        let builtin = families::written(doc.route_limit > 0);
        list.extend(builtin.map(|b| build::builtin(b, doc)));
        let builtin = list.len();
        list.extend(custom::families(&doc.custom));
        Self {
            start_unix_ms: doc.started_unix_ms,
            list,
            builtin,
        }
    }

    /// The app's families only (for outputs that write no built-in family).
    pub fn of_app(doc: &'a StatusDoc) -> Self {
        Self {
            start_unix_ms: doc.started_unix_ms,
            list: custom::families(&doc.custom),
            builtin: 0,
        }
    }

    /// The built-in families.
    pub fn builtin(&self) -> &[Family<'a>] {
        self.list.get(..self.builtin).unwrap_or_default()
    }

    /// The app's families.
    pub fn custom(&self) -> &[Family<'a>] {
        self.list.get(self.builtin..).unwrap_or_default()
    }
}

/// One metric family.
#[derive(Debug, Clone)]
pub struct Family<'a> {
    /// Name of its samples in the text format (counters end in `_total`).
    pub name: &'a str,
    /// Kind.
    pub kind: Kind,
    /// UCUM unit from the name's suffix (`s`, `By`), or empty.
    pub unit: &'static str,
    /// Help text.
    pub help: &'a str,
    /// Its series (may be empty: the family is still declared where the format allows).
    pub samples: Vec<Sample<'a>>,
}

/// One series of a family.
#[derive(Debug, Clone)]
pub struct Sample<'a> {
    /// Its labels.
    pub labels: Labels<'a>,
    /// Its value.
    pub value: Value<'a>,
    /// When it started counting, ms since the epoch, if not with the master (a worker's CPU
    /// time starts with its process). Only counters and histograms have a start.
    pub start_unix_ms: Option<u64>,
}

/// The value of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// A whole number.
    Int(u64),
    /// A float.
    Float(f64),
    /// A histogram.
    Histogram(Buckets<'a>),
}

/// A histogram's buckets: per-bucket counts (not cumulative), the last one +Inf.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Buckets<'a> {
    /// Upper bounds (+Inf implied).
    pub bounds: &'a [f64],
    /// Counts per bucket.
    pub counts: &'a [u64],
    /// Sum of the observed values.
    pub sum: f64,
}

impl Buckets<'_> {
    /// Total observations (wrapping, like the writers).
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, c| a.wrapping_add(*c))
    }
}

/// A label value: text, or a number written in decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelValue<'a> {
    /// Text (escaped by each encoder as its format needs).
    Str(&'a str),
    /// A number (never needs escaping).
    Int(u64),
}

impl fmt::Display for LabelValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => f.write_str(s),
            Self::Int(n) => write!(f, "{n}"),
        }
    }
}

/// Most labels a built-in series has (`worker`, `pid`, `generation`).
const MAX_FIXED: usize = 3;

/// The labels of a sample: a few fixed ones (built-in families) or the registered set of an
/// app's series. Copying them allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct Labels<'a> {
    fixed: [(&'static str, LabelValue<'a>); MAX_FIXED],
    len: usize,
    registered: &'a [(String, String)],
}

impl<'a> Labels<'a> {
    /// No labels.
    pub const NONE: Labels<'static> = Labels {
        fixed: [("", LabelValue::Int(0)); MAX_FIXED],
        len: 0,
        registered: &[],
    };

    /// Up to three fixed labels, in this order.
    pub fn new<const N: usize>(pairs: [(&'static str, LabelValue<'a>); N]) -> Self {
        const { assert!(N <= MAX_FIXED, "at most three fixed labels") };
        let mut fixed = [("", LabelValue::Int(0)); MAX_FIXED];
        fixed[..N].copy_from_slice(&pairs);
        Self {
            fixed,
            len: N,
            registered: &[],
        }
    }

    /// The labels an app registered (sorted by name).
    pub fn registered(pairs: &'a [(String, String)]) -> Self {
        Self {
            fixed: [("", LabelValue::Int(0)); MAX_FIXED],
            len: 0,
            registered: pairs,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0 && self.registered.is_empty()
    }

    /// The labels in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, LabelValue<'a>)> + '_ {
        let fixed = self.fixed.iter().take(self.len).copied();
        let registered = self.registered.iter();
        fixed.chain(registered.map(|(k, v)| (k.as_str(), LabelValue::Str(v.as_str()))))
    }
}

/// UCUM unit of a metric, from the Prometheus naming convention of its name.
pub fn unit_of(name: &str) -> &'static str {
    let base = name.strip_suffix("_total").unwrap_or(name);
    if base.ends_with("_seconds") {
        "s"
    } else if base.ends_with("_bytes") {
        "By"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests;
