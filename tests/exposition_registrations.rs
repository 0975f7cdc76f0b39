//! Property: whatever sequence of registrations a real segment accepts, every output stays
//! valid. Names are drawn to hit the clashes (`_total`, `foo`/`foo_total`, `h`/`h_total`,
//! `x_total_total`, reserved suffixes, built-in names, Apache keys); each case registers
//! against a `Scoreboard::create` segment, renders the text format, OpenMetrics and `?auto`,
//! and checks in process: no family declared twice, no duplicated series, every accepted series
//! shown, `?auto` keys unique. Then the real parsers: `promtool check metrics` on each case's
//! text (no parse error) and one run of the Python OpenMetrics reference parser over every
//! case's OpenMetrics at once (accepted, no family or series twice).

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Mutex;

use flora_cluster::exporter::{apache, prometheus, Format, StatusDoc};
use flora_cluster::scoreboard::{Aggregation, MetricSpec, Scoreboard};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::exposition::Exposition;
use support::tools::{self, Lints};

/// Cases generated; each is checked by one `promtool` run (tens of ms each).
const CASES: u32 = 48;

/// Names that clash with each other, with built-ins, or with `?auto` keys.
const NAMES: [&str; 34] = [
    "_total",
    "__total",
    "foo",
    "foo_total",
    "h",
    "h_total",
    "h_count",
    "h_count_total",
    "h_bucket_total",
    "x",
    "x_total",
    "x_total_total",
    "a_created",
    "a_created_total",
    "i",
    "i_info",
    "i_info_total",
    "process_cpu_seconds",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_resident_memory_bytes_total",
    "flora_workers",
    "flora_worker",
    "Uptime",
    "BusyWorkers",
    "busyworkers",
    "Scoreboard",
    "ServerVersion",
    "Load1",
    "app:Uptime",
    "app:a",
    "app:b",
    "g",
    "g_total",
];
/// Label sets: none, plain, empty value (equal to none for Prometheus), a colon.
const LABELS: [&[(&str, &str)]; 5] = [
    &[],
    &[("k", "a")],
    &[("k", "")],
    &[("k", "x:y")],
    &[("k", "a"), ("j", "")],
];

/// One registration: name, kind (0 counter, 1 gauge, 2 histogram), labels, help variant.
type Reg = (&'static str, u8, usize, u8);

fn spec(&(name, kind, labels, help): &Reg) -> MetricSpec {
    let help = if help == 0 { "Help." } else { "Other help." };
    let mut s = match kind {
        0 => MetricSpec::counter(name, help),
        1 => MetricSpec::gauge(name, help, Aggregation::Max),
        _ => MetricSpec::histogram(name, help, &[0.5, 1.0]),
    };
    for (k, v) in LABELS[labels] {
        s = s.label(*k, *v);
    }
    s
}

fn registrations() -> impl Strategy<Value = Vec<Reg>> {
    let reg = (
        prop::sample::select(NAMES.to_vec()),
        0u8..3,
        0..LABELS.len(),
        0u8..2,
    );
    prop::collection::vec(reg, 1..16)
}

/// What one case rendered, for the subprocess checks.
struct Rendered {
    regs: Vec<Reg>,
    text: String,
    om: String,
}

/// Registers `regs` on a fresh segment and renders every format; the accepted specs too.
fn render(regs: &[Reg]) -> (Vec<MetricSpec>, String, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sb = Scoreboard::create(&dir.path().join("p.scoreboard"), "prop", 2).expect("segment");
    let accepted: Vec<MetricSpec> = regs
        .iter()
        .map(spec)
        .filter(|s| sb.register(s).is_ok())
        .collect();
    let snap = sb.snapshot();
    let slots = snap.slots.clone();
    let mut doc = StatusDoc::build_with(snap, |_| None);
    // Every series gets a sample (an unset gauge has none).
    for (i, m) in doc.custom.iter_mut().enumerate() {
        m.value = Some(m.value.unwrap_or(i as f64));
    }
    let text = prometheus::render(&doc, Format::Text);
    let om = prometheus::render(&doc, Format::OpenMetrics);
    let auto = apache::render(&doc, &slots);
    (accepted, text, om, auto)
}

/// The key an Apache tool reads from a `?auto` line: the text before the first `:`.
fn auto_key(line: &str) -> &str {
    line.split(':').next().unwrap_or(line).trim()
}

/// The sample name and label set that show a series in the text format.
fn shown_as(s: &MetricSpec) -> (String, Vec<(String, String)>) {
    let name = match s.kind {
        flora_cluster::scoreboard::MetricKind::Histogram { .. } => format!("{}_count", s.name),
        _ => s.name.clone(),
    };
    let mut labels = s.labels.clone();
    labels.sort();
    (name, labels)
}

fn check_in_process(regs: &[Reg]) -> Result<Rendered, TestCaseError> {
    let (accepted, text, om, auto) = render(regs);
    let expo = Exposition::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
    prop_assert!(
        expo.duplicate_series().is_empty(),
        "{:?}\n{text}",
        expo.duplicate_series()
    );
    prop_assert!(
        expo.scattered_families().is_empty(),
        "{:?}\n{text}",
        expo.scattered_families()
    );
    let om_types = Exposition::parse(&om).map_err(|e| TestCaseError::fail(format!("{e}\n{om}")))?;
    let families: BTreeSet<&String> = om_types.types.iter().map(|(n, _)| n).collect();
    prop_assert_eq!(families.len(), om_types.types.len(), "family twice\n{}", om);
    for s in &accepted {
        let (name, labels) = shown_as(s);
        let found = expo.samples.iter().any(|x| {
            x.name == name
                && x.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .eq(labels.clone())
        });
        prop_assert!(found, "accepted {:?} is not shown\n{}", s, text);
    }
    let keys: Vec<String> = auto
        .lines()
        .map(|l| auto_key(l).to_ascii_lowercase())
        .collect();
    let unique: BTreeSet<&String> = keys.iter().collect();
    prop_assert_eq!(unique.len(), keys.len(), "?auto key twice\n{}", auto);
    Ok(Rendered {
        regs: regs.to_vec(),
        text,
        om,
    })
}

/// Parses a JSON list of OpenMetrics texts; prints per text the error or every sample.
const BATCH_PY: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for text in json.load(sys.stdin):
    try:
        fams = list(text_string_to_metric_families(text))
        out.append({"families": [f.name for f in fams],
                    "series": [[s.name, sorted((k, v) for k, v in s.labels.items() if v != "")]
                               for f in fams for s in f.samples]})
    except Exception as e:
        out.append({"error": repr(e)})
print(json.dumps(out))
"#;

fn check_with_python(cases: &[Rendered]) {
    let py = tools::python_with_prometheus_client();
    let input = serde_json::to_vec(&cases.iter().map(|c| &c.om).collect::<Vec<_>>()).expect("json");
    let out = tools::run_tool(
        Command::new(py).args(["-c", BATCH_PY]),
        &input,
        tools::TOOL_TIMEOUT,
    );
    assert!(out.status.success(), "python: {}", out.stderr);
    let results: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).expect("parser JSON");
    assert_eq!(results.len(), cases.len());
    for (case, r) in cases.iter().zip(&results) {
        let ctx = || format!("registrations {:?}\n{}", case.regs, case.om);
        assert!(
            r.get("error").is_none(),
            "the reference parser rejects: {}\n{}",
            r["error"],
            ctx()
        );
        let fams = r["families"].as_array().expect("families");
        let fam_set: BTreeSet<String> = fams.iter().map(ToString::to_string).collect();
        assert_eq!(fam_set.len(), fams.len(), "a family twice\n{}", ctx());
        let series = r["series"].as_array().expect("series");
        let set: BTreeSet<String> = series.iter().map(ToString::to_string).collect();
        assert_eq!(set.len(), series.len(), "a series twice\n{}", ctx());
    }
}

fn check_with_promtool(cases: &[Rendered]) {
    for case in cases {
        // 0 clean, 3 lint only (camel case, colons); 1 is a parse error.
        let context = format!("registrations {:?}", case.regs);
        tools::assert_promtool(&case.text, Lints::Any, &context);
    }
}

#[test]
fn every_accepted_sequence_of_registrations_renders_valid_output() {
    let cases = Mutex::new(Vec::new());
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&registrations(), |regs| {
        let rendered = check_in_process(&regs)?;
        cases.lock().expect("cases").push(rendered);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let cases = cases.into_inner().expect("cases");
    check_with_python(&cases);
    check_with_promtool(&cases);
}
