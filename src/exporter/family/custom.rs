//! The app's families: its registered series grouped by name, in registration order.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::{unit_of, Buckets, Family, Kind, Labels, Sample, Value};
use crate::scoreboard::names;
use crate::scoreboard::CustomMetricSnapshot;

/// A series' sample; none for a gauge no worker has set.
fn sample(m: &CustomMetricSnapshot) -> Option<Sample<'_>> {
    let value = match (&m.histogram, m.value) {
        (Some(h), _) => Value::Histogram(Buckets {
            bounds: &h.bounds,
            counts: &h.counts,
            sum: h.sum,
        }),
        // Counters are sums of u64 cells: whole numbers (`as` saturates).
        (None, Some(v)) if m.kind == "counter" => Value::Int(v as u64),
        (None, Some(v)) => Value::Float(v),
        (None, None) => return None,
    };
    Some(Sample {
        labels: Labels::registered(&m.labels),
        value,
        start_unix_ms: None,
    })
}

/// The app's families: its series grouped by name, in registration order, each family of
/// the kind of its first series.
///
/// Registration keeps one kind per name and refuses a series that only differs from another
/// by empty label values, but a reader that is not the master reads the registry from shared
/// memory: a series of another kind than its family's and a repeat of a series written
/// already (see [`names::same_series`]) are left out here, so every family stays consistent
/// whatever the segment holds. Names that break the exposition rules are the Prometheus
/// encoder's to leave out (`prometheus::exposable`).
pub(super) fn families(custom: &[CustomMetricSnapshot]) -> Vec<Family<'_>> {
    // Name → its place in `out`.
    let mut index: HashMap<&str, usize, FnvBuild> = HashMap::default();
    let mut out: Vec<Family<'_>> = Vec::new();
    for m in custom {
        let kind = match m.kind {
            "counter" => Kind::Counter,
            "histogram" => Kind::Histogram,
            _ => Kind::Gauge,
        };
        let at = *index.entry(m.name.as_str()).or_insert_with(|| {
            out.push(Family {
                name: &m.name,
                kind,
                unit: unit_of(&m.name),
                help: &m.help,
                samples: Vec::new(),
            });
            out.len() - 1
        });
        let Some(family) = out.get_mut(at) else {
            continue;
        };
        let repeated = || {
            let mut written = family.samples.iter().map(|s| s.labels.registered);
            written.any(|l| names::same_series(l, &m.labels))
        };
        if family.kind == kind && !repeated() {
            family.samples.extend(sample(m));
        }
    }
    out
}

/// FNV-1a: a few instructions per byte for the short names hashed on every scrape. The names
/// are at most [`MAX_SERIES`](crate::scoreboard::MAX_SERIES), so even keys chosen to collide
/// cost little.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Builds [`Fnv`] hashers.
pub(crate) type FnvBuild = BuildHasherDefault<Fnv>;
