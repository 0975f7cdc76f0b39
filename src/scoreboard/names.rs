//! Metric family names by the OpenMetrics rules, shared by registration and the renderers.
//!
//! A family is what OpenMetrics' `# TYPE` line names. A counter registered as `jobs_total` is
//! family `jobs` with sample `jobs_total` (one `_total` is stripped, so `x_total_total` is
//! family `x_total`); a histogram `h` writes `h_bucket`, `h_count` and `h_sum`; a gauge `g`
//! writes `g`; an info `x_info` is family `x`. `_created` samples are reserved for counters and
//! histograms. Two families clash when a name of one (family or sample) is a name of the other:
//! the reference parser rejects such output and Prometheus may mark the target down. So a
//! registration is refused when it would clash with a built-in family ([`BUILTIN`]) or with
//! another registered metric, and family names may not end in a reserved suffix.
//!
//! ```
//! use flora_cluster::scoreboard::names::{self, Kind};
//! assert_eq!(names::family("jobs_total", Kind::Counter), Some("jobs"));
//! assert_eq!(names::family("x_total_total", Kind::Counter), Some("x_total"));
//! assert!(names::clash("foo", Kind::Gauge, "foo_total", Kind::Counter).is_some());
//! assert!(names::clash("h", Kind::Histogram, "h_count_total", Kind::Counter).is_some());
//! ```

pub use super::snapshot::families::{Kind, BUILTIN};
use super::{MetricError, MetricKind, MetricSpec};

impl From<&MetricKind> for Kind {
    fn from(k: &MetricKind) -> Self {
        match k {
            MetricKind::Counter => Self::Counter,
            MetricKind::Gauge { .. } => Self::Gauge,
            MetricKind::Histogram { .. } => Self::Histogram,
        }
    }
}

/// Prefix of every flora-cluster metric; custom metrics may not use it.
pub const RESERVED_PREFIX: &str = "flora_";

/// Suffixes a family name may not end in (OpenMetrics sample suffixes).
pub const RESERVED_SUFFIXES: [&str; 5] = ["_count", "_sum", "_bucket", "_created", "_info"];

/// The OpenMetrics family of a metric written as `name`: one `_total` stripped from a
/// counter, `_info` from an info. `None` when the name does not fit the kind or the family
/// would be empty.
pub fn family(name: &str, kind: Kind) -> Option<&str> {
    let family = match kind {
        Kind::Counter => name.strip_suffix("_total")?,
        Kind::Info => name.strip_suffix("_info")?,
        Kind::Gauge | Kind::Histogram => name,
    };
    (!family.is_empty()).then_some(family)
}

/// The suffixes a family of `kind` adds to its name (`""`: the family name itself, which is
/// taken too).
fn suffixes(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Counter => &["", "_total", "_created"],
        Kind::Gauge => &[""],
        Kind::Histogram => &["", "_bucket", "_count", "_sum", "_created"],
        Kind::Info => &["", "_info"],
    }
}

/// Every name family `family` of `kind` takes in either format: the family itself and each
/// sample name it writes or reserves.
pub fn taken(family: &str, kind: Kind) -> Vec<String> {
    suffixes(kind)
        .iter()
        .map(|s| format!("{family}{s}"))
        .collect()
}

/// Whether `a` + `sa` and `b` + `sb` are the same text (without building either).
fn concat_eq(a: &str, sa: &str, b: &str, sb: &str) -> bool {
    a.len() + sa.len() == b.len() + sb.len()
        && a.bytes().chain(sa.bytes()).eq(b.bytes().chain(sb.bytes()))
}

/// The first name that metric `a` (written as `a`, of `ka`) and metric `b` would both take,
/// if any.
pub fn clash(a: &str, ka: Kind, b: &str, kb: Kind) -> Option<String> {
    let (fa, fb) = (family(a, ka)?, family(b, kb)?);
    // Every suffix starts after the family: two families that differ within the shorter
    // one's length never clash (the quick answer for almost every pair).
    let k = fa.len().min(fb.len());
    if fa.as_bytes()[..k] != fb.as_bytes()[..k] {
        return None;
    }
    suffixes(ka).iter().find_map(|sa| {
        suffixes(kb)
            .iter()
            .any(|sb| concat_eq(fa, sa, fb, sb))
            .then(|| format!("{fa}{sa}"))
    })
}

/// Whether `name` of `kind` would clash with a built-in family (or use the `flora_` prefix).
pub fn clashes_with_builtin(name: &str, kind: Kind) -> bool {
    let first = name.as_bytes().first();
    name.starts_with(RESERVED_PREFIX)
        || BUILTIN
            .iter()
            .filter(|b| b.name.as_bytes().first() == first)
            .any(|b| clash(name, kind, b.name, b.kind).is_some())
}

/// A naming rule a metric breaks (see [`check_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// The `flora_` prefix, or a name a built-in family takes.
    Builtin,
    /// A counter not ending in `_total`.
    CounterSuffix,
    /// Nothing before the counter's `_total`.
    EmptyFamily,
    /// A family ending in a reserved suffix (`_total` only for other kinds than counters).
    ReservedSuffix(&'static str),
}

/// The first naming rule `name` of `kind` breaks, without looking at other registrations
/// (and without allocating).
pub fn broken_rule(name: &str, kind: Kind) -> Option<Broken> {
    if name.starts_with(RESERVED_PREFIX) {
        return Some(Broken::Builtin);
    }
    if kind == Kind::Counter && !name.ends_with("_total") {
        return Some(Broken::CounterSuffix);
    }
    let Some(family) = family(name, kind) else {
        return Some(Broken::EmptyFamily);
    };
    if kind != Kind::Counter && family.ends_with("_total") {
        return Some(Broken::ReservedSuffix("_total"));
    }
    if let Some(s) = RESERVED_SUFFIXES.iter().find(|s| family.ends_with(*s)) {
        return Some(Broken::ReservedSuffix(s));
    }
    clashes_with_builtin(name, kind).then_some(Broken::Builtin)
}

/// The naming rules of one metric, without looking at other registrations: counters end in
/// `_total`, the family is not empty and ends in no reserved suffix (nor in `_total`, except
/// for counters), and no built-in family is touched. The grammar is checked by the caller.
///
/// # Errors
/// [`MetricError::InvalidName`] for a broken rule, [`MetricError::Reserved`] for a clash with
/// a built-in family.
pub fn check_name(name: &str, kind: &MetricKind) -> Result<(), MetricError> {
    let bad = |reason: String| {
        Err(MetricError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    let kind = Kind::from(kind);
    let all = "the suffixes _total, _bucket, _sum, _count, _created and _info are reserved";
    match broken_rule(name, kind) {
        None => Ok(()),
        Some(Broken::Builtin) => Err(MetricError::Reserved(name.to_string())),
        Some(Broken::CounterSuffix) => bad("counter names end in _total".into()),
        Some(Broken::EmptyFamily) => {
            bad("the family name is empty: put a name before _total".into())
        }
        Some(Broken::ReservedSuffix(_)) if kind != Kind::Counter => bad(all.into()),
        Some(Broken::ReservedSuffix(s)) => {
            let family = family(name, kind).unwrap_or(name);
            bad(format!("the family name {family:?} ends in {s}: {all}"))
        }
    }
}

/// Labels as Prometheus identifies a series: sorted, empty values dropped (an empty value is
/// the same as no label).
pub fn series_key(labels: &[(String, String)]) -> Vec<(&str, &str)> {
    let mut key: Vec<(&str, &str)> = labels
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    key.sort_unstable();
    key
}

/// Whether Prometheus reads label sets `a` and `b` as one series (an empty value is no label).
/// Allocates only when a set is not sorted by name (the registry stores them sorted).
pub fn same_series(a: &[(String, String)], b: &[(String, String)]) -> bool {
    let sorted = |l: &[(String, String)]| l.windows(2).all(|w| w[0].0 <= w[1].0);
    if sorted(a) && sorted(b) {
        let set_a = a.iter().filter(|(_, v)| !v.is_empty());
        set_a.eq(b.iter().filter(|(_, v)| !v.is_empty()))
    } else {
        series_key(a) == series_key(b)
    }
}

/// Checks `spec` against the registered series `existing`: its names must not clash with
/// another metric's, and a series of the same metric must not differ only by empty label
/// values (Prometheus would read both as one series). Same-name shape checks are the caller's.
///
/// # Errors
/// [`MetricError::Collision`] or [`MetricError::InvalidLabel`].
pub fn check_collision<'a>(
    existing: impl IntoIterator<Item = &'a MetricSpec>,
    spec: &MetricSpec,
) -> Result<(), MetricError> {
    let kind = Kind::from(&spec.kind);
    let mut sorted = spec.labels.clone();
    sorted.sort();
    for e in existing {
        if e.name == spec.name {
            let mut theirs = e.labels.clone();
            theirs.sort();
            if theirs != sorted && series_key(&theirs) == series_key(&sorted) {
                return Err(MetricError::InvalidLabel {
                    name: spec.name.clone(),
                    label: sorted
                        .iter()
                        .chain(&theirs)
                        .find(|(_, v)| v.is_empty())
                        .map(|(k, _)| k.clone())
                        .unwrap_or_default(),
                    reason: "an empty value is the same as no label, and that series is registered already".into(),
                });
            }
            continue;
        }
        if let Some(clash) = clash(&spec.name, kind, &e.name, Kind::from(&e.kind)) {
            return Err(MetricError::Collision {
                name: spec.name.clone(),
                other: e.name.clone(),
                clash,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoreboard::Aggregation;

    fn gauge(n: &str) -> MetricSpec {
        MetricSpec::gauge(n, "", Aggregation::Sum)
    }

    #[test]
    fn families() {
        for (name, kind, want) in [
            ("jobs_total", Kind::Counter, Some("jobs")),
            ("x_total_total", Kind::Counter, Some("x_total")),
            ("_total", Kind::Counter, None),
            ("jobs", Kind::Counter, None),
            ("__total", Kind::Counter, Some("_")),
            ("flora_worker_info", Kind::Info, Some("flora_worker")),
            ("h", Kind::Histogram, Some("h")),
            ("g_total", Kind::Gauge, Some("g_total")),
        ] {
            assert_eq!(family(name, kind), want, "{name}");
        }
    }

    #[test]
    fn name_rules() {
        let ok = [
            MetricSpec::counter("x_total_total", ""),
            MetricSpec::counter("__total", ""),
            gauge("process_cpu"),
            gauge("Uptime"),
        ];
        for s in ok {
            assert_eq!(check_name(&s.name, &s.kind), Ok(()), "{s:?}");
        }
        let bad = [
            (MetricSpec::counter("_total", ""), "empty"),
            (MetricSpec::counter("jobs", ""), "end in _total"),
            (MetricSpec::counter("h_count_total", ""), "ends in _count"),
            (MetricSpec::counter("a_info_total", ""), "ends in _info"),
            (gauge("a_created"), "reserved"),
            (gauge("a_total"), "reserved"),
            (gauge("process_cpu_seconds"), "built-in"),
            (gauge("process_resident_memory_bytes"), "built-in"),
            (
                MetricSpec::counter("process_resident_memory_bytes_total", ""),
                "built-in",
            ),
            (
                MetricSpec::histogram("process_cpu_seconds", "", &[1.0]),
                "built-in",
            ),
            (gauge("flora_anything"), "built-in"),
        ];
        for (s, needle) in bad {
            let msg = check_name(&s.name, &s.kind).unwrap_err().to_string();
            assert!(msg.contains(needle), "{s:?}: {msg}");
        }
    }

    #[test]
    fn collisions() {
        let registered = [
            gauge("foo"),
            MetricSpec::histogram("h", "", &[1.0]),
            MetricSpec::counter("x_total", ""),
            gauge("g").label("a", "1"),
        ];
        let clashing = [
            (MetricSpec::counter("foo_total", ""), "foo"),
            (MetricSpec::counter("h_total", ""), "h"),
            (MetricSpec::counter("x_total_total", ""), "x_total"),
            (gauge("x"), "x"),
        ];
        for (s, clash) in clashing {
            let err = check_collision(&registered, &s).unwrap_err();
            assert!(
                matches!(&err, MetricError::Collision { clash: c, .. } if c == clash),
                "{s:?}: {err}"
            );
        }
        for s in [
            gauge("foo").label("b", "2"),
            gauge("g"),
            gauge("g").label("a", "2"),
            MetricSpec::counter("foo2_total", ""),
        ] {
            assert_eq!(check_collision(&registered, &s), Ok(()), "{s:?}");
        }
        let twin = gauge("g").label("a", "1").label("b", "");
        let err = check_collision(&registered, &twin).unwrap_err();
        assert!(err.to_string().contains("empty value"), "{err}");
    }
}
