//! Custom metrics: what an app registers (name, help, kind, labels), validation, cell
//! allocation in the segment's registry, and reading the registered series back.
//!
//! The registry has one writer (the master; a standalone worker for its private segment), so
//! two workers registering the same name at once get the same series. Entries are written once
//! and published with a Release store of their `state`; readers Acquire it.

mod error;
mod spec;

use std::sync::atomic::Ordering::{Relaxed, Release};

use serde::{Deserialize, Serialize};

pub use error::MetricError;
use spec::{decode_labels, encode_labels};
pub use spec::{Aggregation, MetricKind, MetricSpec, MAX_LABELS};

use super::raw::layout::{MetricEntry, Registry, CUSTOM_CELLS, MAX_BUCKETS, MAX_SERIES};
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}
