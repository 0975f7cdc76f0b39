//! The samples of each built-in family, read from the document as its [`Source`] says.

use super::{unit_of, Buckets, Family, LabelValue, Labels, Sample, Value};
use crate::exporter::model::StatusDoc;
use crate::exporter::procfs::ProcStats;
use crate::scoreboard::families::{Builtin, Source};
use crate::scoreboard::{HistogramSnapshot, SlotSnapshot, SlotState};

/// The states [`Source::WorkersByState`] counts.
const STATES: [SlotState; 3] = [SlotState::Starting, SlotState::Ready, SlotState::Draining];

/// The family of built-in `b` with its samples from `doc`.
pub(super) fn builtin<'a>(b: &Builtin, doc: &'a StatusDoc) -> Family<'a> {
    Family {
        name: b.name,
        kind: b.kind,
        unit: unit_of(b.name),
        help: b.help,
        samples: samples(b.source, doc),
    }
}

fn samples(source: Source, doc: &StatusDoc) -> Vec<Sample<'_>> {
    let [ok, failed] = doc.otlp_exports;
    match source {
        Source::Worker(get) => per_worker(doc, |s| Value::Int(get(s))),
        Source::StatusCodes => status_codes(doc),
        Source::Durations => per_worker(doc, durations),
        Source::WorkerInfo => worker_info(doc),
        Source::WorkersByState => workers_by_state(doc),
        Source::TargetWorkers => vec![plain(Value::Int(doc.target_workers))],
        Source::Reloads => by(
            "outcome",
            [
                ("success", doc.reloads.success),
                ("rollback", doc.reloads.rollback),
            ],
        ),
        Source::CanaryReloads => doc
            .reloads
            .canary_verdicts
            .map_or_else(Vec::new, |c| by("verdict", c.by_verdict())),
        Source::MasterUpgrades => doc
            .master
            .as_ref()
            .map_or_else(Vec::new, |m| by("outcome", m.upgrades.by_outcome())),
        Source::MasterInfo => doc.master.as_ref().map_or_else(Vec::new, |m| {
            let version = ("version", LabelValue::Str(m.version.as_str()));
            let pid = ("pid", LabelValue::Int(u64::from(m.pid)));
            vec![sample(Labels::new([version, pid]), Value::Int(1))]
        }),
        Source::OtlpExports => by("result", [("success", ok), ("failure", failed)]),
        Source::Generation => vec![plain(Value::Int(doc.generation))],
        Source::StartTime => vec![plain(Value::Float(doc.started_unix_ms as f64 / 1000.0))],
        Source::ProcessCpu => processes(doc, |p| Value::Float(p.cpu_seconds)),
        Source::ProcessMemory => processes(doc, |p| Value::Int(p.rss_bytes)),
        Source::RouteRequests => route_requests(doc),
        Source::RouteDurations => route_durations(doc),
        Source::RouteOverflow => per_worker(doc, |s| Value::Int(s.counters.route_overflow)),
        Source::Recycles => doc
            .guards
            .as_ref()
            .map_or_else(Vec::new, |g| by("reason", g.recycles.by_reason())),
        Source::Kills => doc
            .guards
            .as_ref()
            .map_or_else(Vec::new, |g| by("reason", g.kills.by_reason())),
        Source::ScaleEvents => doc.guards.as_ref().map_or_else(Vec::new, |g| {
            g.scale_events
                .by_label()
                .into_iter()
                .map(|(direction, reason, n)| {
                    let labels = Labels::new([
                        ("direction", LabelValue::Str(direction)),
                        ("reason", LabelValue::Str(reason)),
                    ]);
                    sample(labels, Value::Int(n))
                })
                .collect()
        }),
        Source::EventLoopLag => slots(doc)
            .filter_map(|s| {
                let lag = s.event_loop_lag_seconds?;
                Some(sample(Labels::new([worker(s)]), Value::Float(lag)))
            })
            .collect(),
        Source::Listener(get) => doc
            .listen_queues
            .iter()
            .filter_map(|q| {
                let listener = ("listener", LabelValue::Str(q.listener.as_str()));
                Some(sample(Labels::new([listener]), Value::Int(get(q)?)))
            })
            .collect(),
    }
}

fn sample<'a>(labels: Labels<'a>, value: Value<'a>) -> Sample<'a> {
    Sample {
        labels,
        value,
        start_unix_ms: None,
    }
}

fn plain(value: Value<'static>) -> Sample<'static> {
    sample(Labels::NONE, value)
}

fn worker(s: &SlotSnapshot) -> (&'static str, LabelValue<'static>) {
    ("worker", LabelValue::Int(s.index as u64))
}

/// The slots that have been used.
fn slots(doc: &StatusDoc) -> impl Iterator<Item = &SlotSnapshot> {
    doc.workers.iter().map(|d| &d.slot)
}

fn per_worker<'a>(
    doc: &'a StatusDoc,
    value: impl Fn(&'a SlotSnapshot) -> Value<'a>,
) -> Vec<Sample<'a>> {
    slots(doc)
        .map(|s| sample(Labels::new([worker(s)]), value(s)))
        .collect()
}

fn durations(s: &SlotSnapshot) -> Value<'_> {
    let h = &s.counters.histogram;
    Value::Histogram(Buckets {
        bounds: HistogramSnapshot::bounds(),
        counts: &h.counts,
        sum: h.sum_seconds,
    })
}

/// One sample per worker and status counter that is not zero: a code once seen stays (the
/// slot's counters only grow), codes never seen add no series.
fn status_codes(doc: &StatusDoc) -> Vec<Sample<'_>> {
    slots(doc)
        .flat_map(|s| {
            s.counters.codes.seen().map(|(code, n)| {
                let labels = Labels::new([worker(s), ("code", LabelValue::Str(code))]);
                sample(labels, Value::Int(n))
            })
        })
        .collect()
}

/// One sample per route and status counter seen (no `worker`: routes are cluster-wide).
fn route_requests(doc: &StatusDoc) -> Vec<Sample<'_>> {
    doc.routes
        .iter()
        .flat_map(|r| {
            r.codes.seen().map(|(code, n)| {
                let route = ("route", LabelValue::Str(r.route.as_str()));
                let labels = Labels::new([route, ("code", LabelValue::Str(code))]);
                sample(labels, Value::Int(n))
            })
        })
        .collect()
}

fn route_durations(doc: &StatusDoc) -> Vec<Sample<'_>> {
    doc.routes
        .iter()
        .map(|r| {
            let labels = Labels::new([("route", LabelValue::Str(r.route.as_str()))]);
            let value = Value::Histogram(Buckets {
                bounds: HistogramSnapshot::bounds(),
                counts: &r.histogram.counts,
                sum: r.histogram.sum_seconds,
            });
            sample(labels, value)
        })
        .collect()
}

fn worker_info(doc: &StatusDoc) -> Vec<Sample<'_>> {
    slots(doc)
        .filter(|s| s.pid != 0)
        .map(|s| {
            let pid = ("pid", LabelValue::Int(u64::from(s.pid)));
            let generation = ("generation", LabelValue::Int(s.generation));
            sample(Labels::new([worker(s), pid, generation]), Value::Int(1))
        })
        .collect()
}

fn workers_by_state(doc: &StatusDoc) -> Vec<Sample<'_>> {
    STATES
        .iter()
        .map(|state| {
            let n = slots(doc).filter(|s| s.state == *state).count() as u64;
            let labels = Labels::new([("state", LabelValue::Str(state.as_str()))]);
            sample(labels, Value::Int(n))
        })
        .collect()
}

/// One sample per value, labelled `key`.
fn by<const N: usize>(key: &'static str, values: [(&'static str, u64); N]) -> Vec<Sample<'static>> {
    values
        .into_iter()
        .map(|(v, n)| sample(Labels::new([(key, LabelValue::Str(v))]), Value::Int(n)))
        .collect()
}

/// The master's process, then each worker's: a worker's counters start with its process.
fn processes(doc: &StatusDoc, value: impl Fn(&ProcStats) -> Value<'static>) -> Vec<Sample<'_>> {
    let master = doc.master_process.map(|p| {
        let labels = Labels::new([("worker", LabelValue::Str("master"))]);
        sample(labels, value(&p))
    });
    let workers = doc.workers.iter().filter_map(|d| {
        let p = d.process?;
        let started = d.slot.started_unix_ms;
        Some(Sample {
            start_unix_ms: (started != 0).then_some(started),
            ..sample(Labels::new([worker(&d.slot)]), value(&p))
        })
    });
    master.into_iter().chain(workers).collect()
}
