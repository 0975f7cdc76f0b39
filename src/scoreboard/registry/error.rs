//! Why a registration failed: [`MetricError`], sent back to workers over the control channel.

use serde::{Deserialize, Serialize};

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
