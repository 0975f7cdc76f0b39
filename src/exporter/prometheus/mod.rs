//! Prometheus exposition: text format 0.0.4 (what `promtool` and curl users read) and
//! OpenMetrics 1.0 (what Prometheus asks for): an encoder of the [`Families`] of a
//! [`StatusDoc`]; cost is O(slots + metrics), and it never talks to a worker.
//!
//! We render both formats ourselves instead of going through a client library's registry:
//! the official `prometheus-client` crate writes only OpenMetrics and the `prometheus` crate
//! has no OpenMetrics at all, while both would rebuild registry objects on every scrape just to
//! print numbers we already hold in one snapshot. Both outputs are checked in the tests with
//! the real parsers (`promtool check metrics`, Python `prometheus_client`'s OpenMetrics parser).

use std::collections::HashSet;
use std::fmt::Write;

use super::family::{Buckets, Families, Family, FnvBuild, Kind, LabelValue, Labels, Value};
use super::model::StatusDoc;
use crate::scoreboard::names;

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
    /// The `le` values of `le_bounds`, formatted once for every series of a histogram family.
    le: Vec<String>,
    le_bounds: Vec<f64>,
}

/// A sample value as written: a whole number, or a float already formatted by [`float`].
enum Num<'s> {
    Int(u64),
    Text(&'s str),
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

/// Appends `{k="v",…}` (nothing when there are no labels), values escaped.
pub(crate) fn push_labels<'a>(
    out: &mut String,
    labels: impl Iterator<Item = (&'a str, LabelValue<'a>)>,
) {
    let mut any = false;
    for (i, (k, v)) in labels.enumerate() {
        out.push(if i == 0 { '{' } else { ',' });
        out.push_str(k);
        out.push_str("=\"");
        match v {
            LabelValue::Str(v) => push_escaped(out, v),
            LabelValue::Int(n) => push_u64(out, n),
        }
        out.push('"');
        any = true;
    }
    if any {
        out.push('}');
    }
}

/// Appends `n` in decimal (without going through `fmt`: this runs for most samples).
fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        start -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(digits.get(start..).unwrap_or_default()).unwrap_or_default());
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
    /// metrics `_info`). OpenMetrics names the family by [`names::family`]; every family
    /// written has one (built-ins: see the tests; custom metrics: [`exposable`]).
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

    /// Writes `name` + `suffix`, the labels (plus `le` when given) and the value straight into
    /// the output: no allocation per sample.
    fn sample_with(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &Labels<'_>,
        le: Option<&str>,
        value: Num<'_>,
    ) {
        let out = &mut self.out;
        out.push_str(name);
        out.push_str(suffix);
        push_labels(
            out,
            labels.iter().chain(le.map(|l| ("le", LabelValue::Str(l)))),
        );
        out.push(' ');
        match value {
            Num::Int(n) => push_u64(out, n),
            Num::Text(t) => out.push_str(t),
        }
        out.push('\n');
    }

    /// A histogram's `_bucket` (cumulative, `le` from the bounds, +Inf last), `_sum` and
    /// `_count` lines.
    fn histogram(&mut self, name: &str, labels: &Labels<'_>, h: &Buckets<'_>) {
        if self.le_bounds != h.bounds {
            self.le_bounds = h.bounds.to_vec();
            self.le = h.bounds.iter().map(|b| format!("{b}")).collect();
        }
        let les = std::mem::take(&mut self.le);
        let mut cumulative = 0u64;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative = cumulative.wrapping_add(*count);
            let le = les.get(i).map_or("+Inf", String::as_str);
            self.sample_with(name, "_bucket", labels, Some(le), Num::Int(cumulative));
        }
        self.le = les;
        self.sample_with(name, "_sum", labels, None, Num::Text(&float(h.sum)));
        self.sample_with(name, "_count", labels, None, Num::Int(cumulative));
    }
}

/// Renders every metric of the contract (see the README's metric table).
pub fn render(doc: &StatusDoc, format: Format) -> String {
    encode(&Families::of(doc), format)
}

/// Writes `families` in `format`.
pub fn encode(families: &Families<'_>, format: Format) -> String {
    let samples: usize = families.list.iter().map(|f| f.samples.len()).sum();
    let mut w = Writer {
        out: String::with_capacity(4096 + samples * 64),
        format,
        le: Vec::new(),
        le_bounds: Vec::new(),
    };
    for f in families
        .builtin()
        .iter()
        .chain(exposable(families.custom()))
    {
        w.family(f.name, f.kind, f.help);
        for s in &f.samples {
            match &s.value {
                Value::Int(n) => w.sample_with(f.name, "", &s.labels, None, Num::Int(*n)),
                Value::Float(v) => {
                    w.sample_with(f.name, "", &s.labels, None, Num::Text(&float(*v)));
                }
                Value::Histogram(h) => w.histogram(f.name, &s.labels, h),
            }
        }
    }
    if format == Format::OpenMetrics {
        w.out.push_str("# EOF\n");
    }
    w.out
}

/// The app's families that can be written, in order.
///
/// Registration refuses clashing names, but the registry lives in shared memory: a family
/// that breaks a naming rule or clashes with an earlier family is left out here, so the output
/// stays valid whatever the segment holds. Among names that keep the rules (no family ends in
/// a reserved suffix, only counters' in `_total`), two families clash only when their family
/// names are equal, or when one counter's family is another counter's name (`x_total_total`
/// and `x_total`): two sets of names answer that without building any string.
pub(crate) fn exposable<'f, 'a>(custom: &'f [Family<'a>]) -> impl Iterator<Item = &'f Family<'a>> {
    let mut families: HashSet<&str, FnvBuild> = HashSet::default();
    let mut counter_names: HashSet<&str, FnvBuild> = HashSet::default();
    custom.iter().filter(move |f| {
        let (name, kind) = (f.name, f.kind);
        let Some(family) = names::family(name, kind) else {
            return false;
        };
        let clash = names::broken_rule(name, kind).is_some()
            || families.contains(family)
            || counter_names.contains(family)
            || (kind == Kind::Counter && families.contains(name));
        if !clash {
            families.insert(family);
            if kind == Kind::Counter {
                counter_names.insert(name);
            }
        }
        !clash
    })
}

#[cfg(test)]
mod tests;
