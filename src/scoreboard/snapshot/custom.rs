//! The app's metrics, combined across slots: counters and histograms summed over every slot,
//! gauges combined by their aggregation over the workers that count.

use std::sync::atomic::Ordering::Relaxed;

use super::super::{Aggregation, MetricKind, Segment, SlotState};
use super::{CustomHistogram, CustomMetricSnapshot, SlotSnapshot, WorkerValue};

/// Reads cell `cell` of slot `slot` (0 when out of range).
struct Cells<'a> {
    sb: &'a Segment,
    slots: &'a [SlotSnapshot],
}

impl Cells<'_> {
    fn get(&self, slot: usize, cell: usize) -> u64 {
        self.sb
            .slot(slot)
            .and_then(|s| s.custom.get(cell))
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Cell `cell` summed over every slot (wrapping, like the writers).
    fn sum(&self, cell: usize) -> u64 {
        self.slots
            .iter()
            .fold(0u64, |a, s| a.wrapping_add(self.get(s.index, cell)))
    }
}

/// Every registered series, in registration order.
pub(super) fn read(sb: &Segment, slots: &[SlotSnapshot]) -> Vec<CustomMetricSnapshot> {
    let cells = Cells { sb, slots };
    sb.registered()
        .into_iter()
        .map(|e| {
            let mut m = CustomMetricSnapshot {
                name: e.spec.name,
                help: e.spec.help,
                kind: "counter",
                labels: e.spec.labels,
                aggregation: None,
                value: None,
                per_worker: Vec::new(),
                histogram: None,
            };
            let cell = e.at.cell;
            match e.spec.kind {
                MetricKind::Counter => counter(&mut m, &cells, cell),
                MetricKind::Gauge {
                    aggregation,
                    count_dead,
                } => gauge(&mut m, &cells, cell, aggregation, count_dead),
                MetricKind::Histogram { buckets } => histogram(&mut m, &cells, cell, buckets),
            }
            m
        })
        .collect()
}

fn counter(m: &mut CustomMetricSnapshot, cells: &Cells, cell: usize) {
    m.per_worker = cells
        .slots
        .iter()
        .map(|s| WorkerValue {
            slot: s.index,
            value: cells.get(s.index, cell) as f64,
        })
        .filter(|v| v.value != 0.0)
        .collect();
    m.value = Some(cells.sum(cell) as f64);
}

fn live(state: SlotState) -> bool {
    matches!(
        state,
        SlotState::Starting | SlotState::Ready | SlotState::Draining
    )
}

fn gauge(
    m: &mut CustomMetricSnapshot,
    cells: &Cells,
    cell: usize,
    aggregation: Aggregation,
    count_dead: bool,
) {
    m.kind = "gauge";
    m.aggregation = Some(aggregation.as_str());
    // (slot, value, when it was set): a gauge counts once a worker set it.
    let values: Vec<(usize, f64, u64)> = cells
        .slots
        .iter()
        .filter(|s| count_dead || live(s.state))
        .map(|s| {
            let value = f64::from_bits(cells.get(s.index, cell));
            (s.index, value, cells.get(s.index, cell + 1))
        })
        .filter(|(_, v, set_at)| *set_at != 0 && !v.is_nan())
        .collect();
    m.value = combine(aggregation, &values);
    m.per_worker = values
        .iter()
        .map(|&(slot, value, _)| WorkerValue { slot, value })
        .collect();
}

fn histogram(m: &mut CustomMetricSnapshot, cells: &Cells, cell: usize, buckets: Vec<f64>) {
    m.kind = "histogram";
    let n = buckets.len() + 1;
    let counts: Vec<u64> = (0..n).map(|b| cells.sum(cell + b)).collect();
    let sum = cells
        .slots
        .iter()
        .map(|s| f64::from_bits(cells.get(s.index, cell + n)))
        .filter(|v| v.is_finite())
        .sum();
    m.value = Some(counts.iter().fold(0u64, |a, c| a.wrapping_add(*c)) as f64);
    m.histogram = Some(CustomHistogram {
        bounds: buckets,
        counts,
        sum,
    });
}

fn combine(aggregation: Aggregation, values: &[(usize, f64, u64)]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let vs = values.iter().map(|v| v.1);
    Some(match aggregation {
        Aggregation::Sum => vs.sum(),
        Aggregation::Max => vs.fold(f64::NEG_INFINITY, f64::max),
        Aggregation::Min => vs.fold(f64::INFINITY, f64::min),
        Aggregation::Latest => values.iter().max_by_key(|v| v.2).map_or(0.0, |v| v.1),
    })
}
