//! Prometheus exposition: text format 0.0.4 (what `promtool` and curl users read) and
//! OpenMetrics 1.0 (what Prometheus asks for). A pure function of a [`StatusDoc`]; cost is
//! O(slots + metrics), and it never talks to a worker.
//!
//! We render both formats ourselves instead of going through a client library's registry:
//! the official `prometheus-client` crate writes only OpenMetrics and the `prometheus` crate
//! has no OpenMetrics at all, while both would rebuild registry objects on every scrape just to
//! print numbers we already hold in one snapshot. Both outputs are checked in the tests with
//! the real parsers (`promtool check metrics`, Python `prometheus_client`'s OpenMetrics parser).

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use super::model::StatusDoc;
use crate::scoreboard::names::{self, Kind};
use crate::scoreboard::{CustomMetricSnapshot, HistogramSnapshot, SlotState};

/// `Content-Type` of the text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of OpenMetrics.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4.
    Text,
    /// OpenMetrics 1.0.
    OpenMetrics,
}

impl Format {
    /// Picks the format an `Accept` header asks for (OpenMetrics when it is listed with q > 0).
    pub fn negotiate(accept: Option<&str>) -> Self {
        let wants_om = accept.is_some_and(|a| {
            a.split(',').any(|part| {
                let mut params = part.split(';').map(str::trim);
                params.next() == Some("application/openmetrics-text")
                    && !params.any(|p| p.replace(' ', "") == "q=0")
            })
        });
        if wants_om {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }

    /// The matching `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Text => TEXT_CONTENT_TYPE,
            Self::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// Writes one metric family at a time in the chosen format.
struct Writer {
    out: String,
    format: Format,
}

/// Escapes a label value (backslash, double quote, newline).
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    push_escaped(&mut s, v);
    s
}

/// Appends `v` escaped as a label value (no allocation when nothing needs escaping).
fn push_escaped(out: &mut String, v: &str) {
    if !v.contains(['\\', '"', '\n']) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Formats a float the way both formats accept (`+Inf`, `NaN`, shortest round-trip digits).
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

impl Writer {
    /// Starts the family of metric `name` (for counters the name includes `_total`; for info
    /// metrics `_info`). OpenMetrics names the family by [`names::family`]; every name passed
    /// here has one (built-ins: see the tests; custom metrics: [`exposable`]).
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let om_family = names::family(name, kind).unwrap_or(name);
        let (family, ty) = match (self.format, kind) {
            (Format::OpenMetrics, Kind::Counter) => (om_family, "counter"),
            (Format::OpenMetrics, Kind::Info) => (om_family, "info"),
            (_, Kind::Counter) => (name, "counter"),
            (_, Kind::Gauge) | (Format::Text, Kind::Info) => (name, "gauge"),
            (_, Kind::Histogram) => (name, "histogram"),
        };
        let _ = writeln!(self.out, "# HELP {family} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {family} {ty}");
    }

    fn sample(&mut self, name: &str, pairs: &[(&str, &str)], value: impl std::fmt::Display) {
        self.sample_with(name, "", pairs, None, value);
    }

    /// Writes `name` + `suffix`, the labels (plus `le` when given) and the value straight into
    /// the output: no allocation per sample.
    fn sample_with(
        &mut self,
        name: &str,
        suffix: &str,
        pairs: &[(&str, &str)],
        le: Option<&str>,
        value: impl std::fmt::Display,
    ) {
        let out = &mut self.out;
        out.push_str(name);
        out.push_str(suffix);
        let all = pairs.iter().copied().chain(le.map(|l| ("le", l)));
        for (i, (k, v)) in all.enumerate() {
            out.push(if i == 0 { '{' } else { ',' });
            out.push_str(k);
            out.push_str("=\"");
            push_escaped(out, v);
            out.push('"');
        }
        if !pairs.is_empty() || le.is_some() {
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }

    /// A histogram from per-bucket counts (not cumulative, +Inf last) and `bounds`.
    fn histogram(
        &mut self,
        name: &str,
        pairs: &[(&str, &str)],
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
    ) {
        let mut cumulative = 0u64;
        let mut le = String::new();
        for (i, count) in counts.iter().enumerate() {
            cumulative = cumulative.wrapping_add(*count);
            le.clear();
            match bounds.get(i) {
                Some(b) => {
                    let _ = write!(le, "{b}");
                }
                None => le.push_str("+Inf"),
            }
            self.sample_with(name, "_bucket", pairs, Some(&le), cumulative);
        }
        self.sample_with(name, "_sum", pairs, None, float(sum));
        self.sample_with(name, "_count", pairs, None, cumulative);
    }
}

/// Renders every metric of the contract (see the README's metric table).
pub fn render(doc: &StatusDoc, format: Format) -> String {
    let mut w = Writer {
        out: String::with_capacity(4096 + doc.workers.len() * 2048),
        format,
    };
    worker_metrics(&mut w, doc);
    cluster_metrics(&mut w, doc);
    process_metrics(&mut w, doc);
    custom_metrics(&mut w, doc);
    if format == Format::OpenMetrics {
        w.out.push_str("# EOF\n");
    }
    w.out
}

/// A per-worker metric read straight from one slot field.
type SimpleMetric = (
    &'static str,
    Kind,
    &'static str,
    fn(&crate::scoreboard::SlotSnapshot) -> u64,
);

const CODES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

fn worker_metrics(w: &mut Writer, doc: &StatusDoc) {
    let slots: Vec<(String, &crate::scoreboard::SlotSnapshot)> = doc
        .workers
        .iter()
        .map(|d| (d.slot.index.to_string(), &d.slot))
        .collect();
    w.family(
        "flora_http_requests_total",
        Kind::Counter,
        "HTTP requests finished, by status class.",
    );
    for (id, s) in &slots {
        for (code, n) in CODES.iter().zip(s.counters.status) {
            w.sample(
                "flora_http_requests_total",
                &[("worker", id), ("code", code)],
                n,
            );
        }
    }
    let simple: [SimpleMetric; 7] = [
        (
            "flora_http_requests_in_flight",
            Kind::Gauge,
            "HTTP requests being served now.",
            |s| s.counters.requests_active,
        ),
        (
            "flora_http_received_bytes_total",
            Kind::Counter,
            "Bytes read from clients, headers included.",
            |s| s.counters.bytes_in,
        ),
        (
            "flora_http_sent_bytes_total",
            Kind::Counter,
            "Bytes written to clients, headers included.",
            |s| s.counters.bytes_out,
        ),
        (
            "flora_connections_open",
            Kind::Gauge,
            "Client connections open now.",
            |s| s.counters.conns_open,
        ),
        (
            "flora_connections_total",
            Kind::Counter,
            "Client connections accepted.",
            |s| s.counters.conns_total,
        ),
        (
            "flora_connections_untracked_total",
            Kind::Counter,
            "Connections not shown in the connection table because it was full.",
            |s| s.counters.conn_overflow,
        ),
        (
            "flora_worker_restarts_total",
            Kind::Counter,
            "Respawns of the worker slot after unexpected exits.",
            |s| s.restarts,
        ),
    ];
    for (name, kind, help, get) in simple {
        w.family(name, kind, help);
        for (id, s) in &slots {
            w.sample(name, &[("worker", id)], get(s));
        }
    }
    w.family(
        "flora_http_request_duration_seconds",
        Kind::Histogram,
        "Time from request start until its response body was sent.",
    );
    for (id, s) in &slots {
        w.histogram(
            "flora_http_request_duration_seconds",
            &[("worker", id)],
            HistogramSnapshot::bounds(),
            &s.counters.histogram.counts,
            s.counters.histogram.sum_seconds,
        );
    }
    w.family(
        "flora_worker_info",
        Kind::Info,
        "The process in each worker slot.",
    );
    for (id, s) in slots.iter().filter(|(_, s)| s.pid != 0) {
        let (pid, generation) = (s.pid.to_string(), s.generation.to_string());
        w.sample(
            "flora_worker_info",
            &[("worker", id), ("pid", &pid), ("generation", &generation)],
            1,
        );
    }
}

fn cluster_metrics(w: &mut Writer, doc: &StatusDoc) {
    w.family("flora_workers", Kind::Gauge, "Workers by state.");
    for state in [SlotState::Starting, SlotState::Ready, SlotState::Draining] {
        let n = doc.workers.iter().filter(|d| d.slot.state == state).count();
        w.sample("flora_workers", &[("state", state.as_str())], n);
    }
    w.family(
        "flora_target_workers",
        Kind::Gauge,
        "Workers the master keeps running.",
    );
    w.sample("flora_target_workers", &[], doc.target_workers);
    w.family("flora_reloads_total", Kind::Counter, "Reloads by outcome.");
    w.sample(
        "flora_reloads_total",
        &[("outcome", "success")],
        doc.reloads.success,
    );
    w.sample(
        "flora_reloads_total",
        &[("outcome", "rollback")],
        doc.reloads.rollback,
    );
    w.family(
        "flora_otlp_exports_total",
        Kind::Counter,
        "OTLP metric pushes by result.",
    );
    let [ok, failed] = doc.otlp_exports;
    w.sample("flora_otlp_exports_total", &[("result", "success")], ok);
    w.sample("flora_otlp_exports_total", &[("result", "failure")], failed);
    w.family(
        "flora_generation",
        Kind::Gauge,
        "Worker generation serving now.",
    );
    w.sample("flora_generation", &[], doc.generation);
    w.family(
        "flora_start_time_seconds",
        Kind::Gauge,
        "Start time of the master, seconds since the epoch.",
    );
    w.sample(
        "flora_start_time_seconds",
        &[],
        float(doc.started_unix_ms as f64 / 1000.0),
    );
}

fn process_metrics(w: &mut Writer, doc: &StatusDoc) {
    let procs: Vec<(String, super::procfs::ProcStats)> = doc
        .master_process
        .map(|p| ("master".to_string(), p))
        .into_iter()
        .chain(
            doc.workers
                .iter()
                .filter_map(|d| d.process.map(|p| (d.slot.index.to_string(), p))),
        )
        .collect();
    w.family(
        "process_cpu_seconds_total",
        Kind::Counter,
        "User and system CPU time of the process (a replaced worker starts again from 0).",
    );
    for (id, p) in &procs {
        w.sample(
            "process_cpu_seconds_total",
            &[("worker", id)],
            float(p.cpu_seconds),
        );
    }
    w.family(
        "process_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory of the process.",
    );
    for (id, p) in &procs {
        w.sample(
            "process_resident_memory_bytes",
            &[("worker", id)],
            p.rss_bytes,
        );
    }
}

/// The custom families that can be written, each with its series, in registration order.
///
/// Registration refuses clashing names, but the registry lives in shared memory: a family
/// that breaks a naming rule or clashes with an earlier family, a series of another kind than
/// its family's, and a repeated series are left out here, so the output stays valid whatever
/// the segment holds. Among names that keep the rules (no family ends in a reserved suffix,
/// only counters' in `_total`), two families clash only when their family names are equal,
/// or when one counter's family is another counter's name (`x_total_total` and `x_total`):
/// two sets of names answer that without building any string.
pub(crate) fn exposable(
    custom: &[CustomMetricSnapshot],
) -> Vec<(Kind, Vec<&CustomMetricSnapshot>)> {
    let mut families: HashSet<&str> = HashSet::new();
    let mut counter_names: HashSet<&str> = HashSet::new();
    // Name → its place in `out`, or `None` when the family is left out.
    let mut index: HashMap<&str, Option<usize>> = HashMap::new();
    let mut out: Vec<(Kind, Vec<&CustomMetricSnapshot>)> = Vec::new();
    for m in custom {
        let kind = match m.kind {
            "counter" => Kind::Counter,
            "histogram" => Kind::Histogram,
            _ => Kind::Gauge,
        };
        let name = m.name.as_str();
        let at = *index.entry(name).or_insert_with(|| {
            let family = names::family(name, kind)?;
            let clash = names::broken_rule(name, kind).is_some()
                || families.contains(family)
                || counter_names.contains(family)
                || (kind == Kind::Counter && families.contains(name));
            if clash {
                return None;
            }
            families.insert(family);
            if kind == Kind::Counter {
                counter_names.insert(name);
            }
            out.push((kind, Vec::new()));
            Some(out.len() - 1)
        });
        let Some((family_kind, list)) = at.and_then(|i| out.get_mut(i)) else {
            continue;
        };
        if *family_kind == kind
            && !list
                .iter()
                .any(|s| names::same_series(&s.labels, &m.labels))
        {
            list.push(m);
        }
    }
    out
}

/// The app's own metrics, combined across workers, under the names they registered.
fn custom_metrics(w: &mut Writer, doc: &StatusDoc) {
    for (kind, series) in exposable(&doc.custom) {
        let name = series[0].name.as_str();
        w.family(name, kind, &series[0].help);
        for m in series {
            let pairs: Vec<(&str, &str)> = m
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            match (&m.histogram, m.value) {
                (Some(h), _) => w.histogram(name, &pairs, &h.bounds, &h.counts, h.sum),
                (None, Some(v)) => w.sample(name, &pairs, float(v)),
                (None, None) => {}
            }
        }
    }
}

#[cfg(test)]
#[path = "prometheus_tests.rs"]
mod tests;
