//! Unit tests of the Prometheus renderer: negotiation, escaping, and family names (the
//! built-in list is exact, OpenMetrics names each family by the rules of `scoreboard::names`,
//! clashing custom entries are left out).
use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::scoreboard::{CustomMetricSnapshot, Scoreboard, WorkerValue};

fn type_lines(text: &str) -> BTreeSet<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, ty) = l.split_once(' ').unwrap_or((l, ""));
            (name.to_string(), ty.to_string())
        })
        .collect()
}

fn empty_doc() -> StatusDoc {
    let dir = tempfile::tempdir().expect("tempdir");
    let sb = Scoreboard::create(&dir.path().join("s"), "t", 2).expect("create");
    StatusDoc::build_with(sb.snapshot(), |_| None)
}

#[test]
fn builtin_list_is_exactly_what_is_written() {
    let doc = empty_doc();
    let ty = |k: Kind, om: bool| match k {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
        Kind::Info if om => "info",
        Kind::Info => "gauge",
    };
    // Without per-route metrics (the default) the route families are not written.
    let text: BTreeSet<_> = crate::scoreboard::families::written(false)
        .map(|b| (b.name.to_string(), ty(b.kind, false).to_string()))
        .collect();
    assert_eq!(type_lines(&render(&doc, Format::Text)), text);
    let om: BTreeSet<_> = crate::scoreboard::families::written(false)
        .map(|b| {
            let family = names::family(b.name, b.kind).expect("built-in family");
            (family.to_string(), ty(b.kind, true).to_string())
        })
        .collect();
    assert_eq!(type_lines(&render(&doc, Format::OpenMetrics)), om);
}

fn custom(name: &str, kind: &'static str, labels: &[(&str, &str)]) -> CustomMetricSnapshot {
    CustomMetricSnapshot {
        name: name.into(),
        help: String::new(),
        kind,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        aggregation: None,
        value: Some(1.0),
        per_worker: Vec::<WorkerValue>::new(),
        histogram: None,
    }
}

#[test]
fn openmetrics_families_strip_one_total() {
    let mut doc = empty_doc();
    doc.custom = vec![custom("x_total_total", "counter", &[])];
    let om = render(&doc, Format::OpenMetrics);
    assert!(
        om.contains("# TYPE x_total counter\nx_total_total 1\n"),
        "{om}"
    );
    let text = render(&doc, Format::Text);
    assert!(text.contains("# TYPE x_total_total counter\n"), "{text}");
}

#[test]
fn clashing_entries_of_a_spoiled_registry_are_left_out() {
    let mut doc = empty_doc();
    doc.custom = vec![
        custom("foo", "gauge", &[]),
        custom("foo_total", "counter", &[]),
        custom("process_cpu_seconds", "gauge", &[]),
        custom("flora_x", "gauge", &[]),
        custom("_total", "counter", &[]),
        custom("g", "gauge", &[("a", "1")]),
        custom("g", "gauge", &[("a", "1"), ("b", "")]),
        custom("g", "counter", &[("a", "2")]),
        custom("g", "gauge", &[("a", "3")]),
    ];
    let families = Families::of(&doc);
    let kept: Vec<(&str, usize)> = exposable(families.custom())
        .map(|f| (f.name, f.samples.len()))
        .collect();
    assert_eq!(kept, vec![("foo", 1), ("g", 2)]);
    let om = render(&doc, Format::OpenMetrics);
    assert_eq!(om.matches("# TYPE foo ").count(), 1, "{om}");
    assert!(!om.contains("foo_total"), "{om}");
}

#[test]
fn negotiation() {
    assert_eq!(Format::negotiate(None), Format::Text);
    assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
    assert_eq!(
        Format::negotiate(Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")),
        Format::OpenMetrics
    );
    assert_eq!(
        Format::negotiate(Some("application/openmetrics-text; q=0")),
        Format::Text
    );
}

#[test]
fn escaping_and_floats() {
    assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    assert_eq!(float(0.0005), "0.0005");
    assert_eq!(float(10.0), "10");
    assert_eq!(float(f64::INFINITY), "+Inf");
    assert_eq!(labels(&[]), "");
    assert_eq!(labels(&[("a", "x"), ("b", "\"")]), "{a=\"x\",b=\"\\\"\"}");
}

#[test]
fn integers_in_decimal() {
    for n in [0, 7, 10, 1_234_567, u64::MAX] {
        let mut out = String::from("x");
        push_u64(&mut out, n);
        assert_eq!(out, format!("x{n}"));
    }
}

proptest! {
    #[test]
    fn escaped_labels_never_break_the_line(v in ".*") {
        let e = escape_label(&v);
        prop_assert!(!e.contains('\n'));
        // Every quote is escaped.
        let bytes = e.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'"' {
                let backslashes = bytes[..i].iter().rev().take_while(|c| **c == b'\\').count();
                prop_assert!(backslashes % 2 == 1);
            }
        }
    }
}
