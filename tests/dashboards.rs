//! The Grafana dashboards and Prometheus alert rules in `dashboards/`:
//! - the rules pass `promtool check rules`, and their unit tests pass `promtool test rules` and
//!   have a firing and a quiet case for every alert;
//! - both dashboards validate against the JSON schema generated from Grafana's own types
//!   (`dashboards/schema/generate.sh`), and broken copies of them do not;
//! - the dashboards are consistent (unique ids, grid inside 24 columns without overlaps, one
//!   data source variable, every `$variable` defined and every variable used);
//! - every PromQL expression of both dashboards (panel targets, variable queries, annotations)
//!   and of the alert rules, evaluated by a real Prometheus scraping a real 2-worker cluster
//!   under traffic, succeeds and returns data (for `<query> <comparison> <threshold>`: each side
//!   that is not a number); the rules evaluate without error and stay quiet; after a worker is
//!   killed and the cluster reloaded, the annotation queries show those events, and the
//!   rollback annotations stay empty.
//!
//! Helpers: `dashboards/texts.rs` (PromQL text), `dashboards/probes.rs` (what is asked of
//! Prometheus), `dashboards/consistency.rs`.

mod support;

/// The helpers in `tests/dashboards/`.
mod dashboards {
    pub mod consistency;
    pub mod probes;
    pub mod texts;
}
use dashboards::{consistency, probes, texts};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use consistency::check_consistency;
use flora_cluster::scoreboard::SlotState;
use probes::{plan, run_probe, Probe};
use serde_json::Value;
use support::http;
use support::poll;
use support::tools::{self, require_tool, run_tool, PrometheusServer, ToolOutput};
use support::workers::Traffic;
use support::{wait_for, Cluster, Http, TestDir, START_TIMEOUT};
use texts::{
    alert_cases, alert_names, label_values_args, promql_texts, substitute, Expr, Kind,
    GRAFANA_GLOBALS,
};

/// Scrape job name the dashboards' `$job` defaults to and the alert rules select.
const JOB: &str = "flora";
/// The dashboards, in `dashboards/`.
const DASHBOARDS: [&str; 2] = ["flora-overview.json", "flora-worker.json"];
/// The schema `dashboards/schema/generate.sh` writes, relative to the repository.
const SCHEMA: &str = "target/grafana-schema/dashboard.schema.json";
/// A counter the test registers through the demo worker, standing in for an app's own metric.
const CUSTOM_METRIC: &str = "demo_orders_total";
/// Longest wait for Prometheus' first successful scrape (it lands 5-6 s after its start).
const SCRAPED_TIMEOUT: Duration = Duration::from_secs(40);
/// Longest wait, after the first scrape, for every expression to return data (rate() needs two
/// samples inside its window; scrapes come every second).
const DATA_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the rules to have been evaluated and for no alert to be active.
const RULES_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two rounds of queries while waiting for data.
const ROUND_PAUSE: Duration = Duration::from_millis(250);
/// Every annotation of the dashboards, by name, and whether it must show an event once the test
/// has killed the worker in slot 0 and reloaded the cluster (no reload is rolled back).
const EVENTS: &[(&str, bool)] = &[
    ("Worker restarts", true),
    ("Restarts of this worker", true),
    ("Reloads (success)", true),
    ("Generation changes", true),
    ("Master started", true),
    ("Reloads (rolled back)", false),
    ("Canary rolled back", false),
    ("Master upgrades (success)", false),
    ("Master upgrades (rolled back)", false),
];
/// Step of the range queries that evaluate annotations as Grafana does (`$__interval` below).
const ANNOTATION_STEP_SECS: u64 = 15;
/// Longest wait for the events to show in the annotation queries.
const EVENTS_TIMEOUT: Duration = Duration::from_secs(40);
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dashboards_dir() -> PathBuf {
    repo().join("dashboards")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn load_dashboard(name: &str) -> Value {
    let path = dashboards_dir().join(name);
    serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn show(out: &ToolOutput) -> String {
    format!(
        "{}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status, out.stdout, out.stderr
    )
}

// ---------------------------------------------------------------------------------------
// promtool
// ---------------------------------------------------------------------------------------

fn promtool(args: &[&str]) -> ToolOutput {
    let out = tools::promtool(args, b"");
    println!(
        "$ promtool {}\n{}{}",
        args.join(" "),
        out.stdout,
        out.stderr
    );
    out
}

#[test]
fn alert_rules_pass_promtool_and_every_alert_is_unit_tested() {
    let check = promtool(&["check", "rules", "dashboards/alerts.yml"]);
    assert!(
        check.status.success(),
        "promtool check rules: {}",
        show(&check)
    );
    let tested = promtool(&["test", "rules", "dashboards/alerts_test.yml"]);
    assert!(
        tested.status.success(),
        "promtool test rules: {}",
        show(&tested)
    );

    let names = alert_names(&read(&dashboards_dir().join("alerts.yml")));
    assert!(
        check
            .stdout
            .contains(&format!("SUCCESS: {} rules found", names.len())),
        "promtool found another number of rules than the {} alerts listed: {}",
        names.len(),
        check.stdout
    );
    let cases = alert_cases(&read(&dashboards_dir().join("alerts_test.yml")));
    for name in &names {
        let (quiet, firing) = cases.get(name).copied().unwrap_or_default();
        assert!(
            quiet > 0 && firing > 0,
            "alerts_test.yml must test {name} both firing and quiet (has {firing} firing and \
             {quiet} quiet cases)"
        );
    }
    // A misspelt alertname would pass promtool with `exp_alerts: []`: reject it here.
    for name in cases.keys() {
        assert!(
            names.contains(name),
            "alerts_test.yml tests {name}, which alerts.yml does not define ({names:?})"
        );
    }
}

// ---------------------------------------------------------------------------------------
// JSON schema
// ---------------------------------------------------------------------------------------

fn schema_path() -> PathBuf {
    let path = repo().join(SCHEMA);
    assert!(
        path.is_file(),
        "{} is missing: run dashboards/schema/generate.sh (scripts/test.sh does; it installs \
         @grafana/schema, ts-json-schema-generator and ajv into target/grafana-schema)",
        path.display()
    );
    path
}

/// `node dashboards/schema/validate.mjs SCHEMA FILES…`.
fn validate(files: &[PathBuf]) -> ToolOutput {
    let node = require_tool("node", "nodejs");
    run_tool(
        Command::new(node)
            .arg(dashboards_dir().join("schema/validate.mjs"))
            .arg(schema_path())
            .args(files),
        b"",
        tools::TOOL_TIMEOUT,
    )
}

type Mutation = fn(&mut Value);

/// Broken copies of the overview: what is changed, and a piece of the error it must cause.
const BROKEN: &[(&str, Mutation, &str)] = &[
    (
        "a panel's gridPos is a string",
        |d| d["panels"][0]["gridPos"] = Value::from("x"),
        "/panels/0/gridPos must be object",
    ),
    (
        "an unknown top-level key",
        |d| d["pannels"] = Value::Array(Vec::new()),
        "must NOT have additional properties (pannels)",
    ),
    (
        "an unknown key in a panel",
        |d| d["panels"][1]["titel"] = Value::from("Requests"),
        "must NOT have additional properties (titel)",
    ),
    (
        "schemaVersion is a string",
        |d| d["schemaVersion"] = Value::from("39"),
        "/schemaVersion must be number",
    ),
    (
        "schemaVersion is missing",
        |d| {
            d.as_object_mut().map(|o| o.remove("schemaVersion"));
        },
        "must have required property 'schemaVersion'",
    ),
    (
        "a variable of an unknown type",
        |d| d["templating"]["list"][1]["type"] = Value::from("querry"),
        "/templating/list/1/type must be equal to one of the allowed values",
    ),
    (
        "a Prometheus annotation's enable is a string",
        |d| d["annotations"]["list"][1]["enable"] = Value::from("yes"),
        "/annotations/list/1/enable must be boolean",
    ),
];

#[test]
fn dashboards_validate_against_grafanas_schema_and_broken_copies_do_not() {
    let files: Vec<PathBuf> = DASHBOARDS
        .iter()
        .map(|d| dashboards_dir().join(d))
        .collect();
    let out = validate(&files);
    assert!(out.status.success(), "validate.mjs: {}", show(&out));
    for f in &files {
        assert!(
            out.stdout.contains(&format!("{}: valid", f.display())),
            "{} not reported valid: {}",
            f.display(),
            show(&out)
        );
    }
    println!("{}", out.stdout);

    let scratch = tempfile::tempdir().expect("tempdir");
    for (i, (what, mutate, expected)) in BROKEN.iter().enumerate() {
        let mut doc = load_dashboard(DASHBOARDS[0]);
        mutate(&mut doc);
        let path = scratch.path().join(format!("broken-{i}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json")).expect("write");
        let out = validate(std::slice::from_ref(&path));
        assert_eq!(
            out.status.code(),
            Some(1),
            "a copy with {what} must fail validation: {}",
            show(&out)
        );
        assert!(
            out.stderr.contains(expected),
            "a copy with {what} must be reported as {expected:?}: {}",
            show(&out)
        );
        println!("broken copy ({what}): rejected, {expected:?}");
    }
}

// ---------------------------------------------------------------------------------------
// consistency
// ---------------------------------------------------------------------------------------

#[test]
fn dashboards_are_consistent() {
    for file in DASHBOARDS {
        check_consistency(file, &load_dashboard(file));
    }
    let worker = load_dashboard("flora-worker.json");
    let vars = worker["templating"]["list"].as_array().expect("templating");
    let w = vars
        .iter()
        .find(|v| v["name"] == "worker")
        .expect("worker variable");
    assert!(
        w["query"]["query"]
            .as_str()
            .is_some_and(|q| q.starts_with("label_values(flora_http_requests_total")
                && q.ends_with(", worker)")),
        "the worker variable lists the worker label of flora_http_requests_total: {w}"
    );
}

// ---------------------------------------------------------------------------------------
// every expression against a real Prometheus
// ---------------------------------------------------------------------------------------

/// The alerting rules Prometheus loaded from alerts.yml, as its API shows them.
fn loaded_alert_rules(prom: &PrometheusServer) -> Vec<Value> {
    let data = prom.api("/api/v1/rules");
    data["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["type"] == "alerting")
        .collect()
}

/// Registers the custom counter on one worker (over one keep-alive connection, so both calls
/// reach the same process) and counts 3.
fn register_custom_metric(port: u16) {
    let mut c = Http::connect(port).expect("connect to the workers");
    for target in [
        format!("/m/register?kind=counter&name={CUSTOM_METRIC}&help=Orders."),
        format!("/m/add?name={CUSTOM_METRIC}&n=3"),
    ] {
        let r = c
            .get(&target)
            .unwrap_or_else(|e| panic!("GET {target}: {e}"));
        assert_eq!(r.status, 200, "GET {target}: {}", r.text());
    }
    c.close();
}

/// The `instance` label of the master's target, once Prometheus has scraped it.
fn scraped_instance(prom: &PrometheusServer) -> String {
    let up = format!("up{{job=\"{JOB}\"}} == 1");
    poll(
        SCRAPED_TIMEOUT,
        "Prometheus' first scrape of the master",
        || {
            let r = prom.query(&up);
            r.first()
                .and_then(|s| s["metric"]["instance"].as_str().map(String::from))
                .ok_or_else(|| prom.targets())
        },
    )
}

/// Names of the metrics Prometheus stores for the job.
fn exported_metrics(prom: &PrometheusServer) -> BTreeSet<String> {
    let selector = http::url_encode(&format!("{{job=\"{JOB}\"}}"));
    prom.api(&format!(
        "/api/v1/label/__name__/values?match%5B%5D={selector}"
    ))
    .as_array()
    .expect("metric names")
    .iter()
    .filter_map(|v| v.as_str().map(String::from))
    .collect()
}

/// Every PromQL text of the dashboards, with the variables substituted.
fn dashboard_exprs(values: &BTreeMap<&str, String>) -> Vec<(Expr, String)> {
    DASHBOARDS
        .iter()
        .flat_map(|file| promql_texts(file, &load_dashboard(file)))
        .map(|e| {
            let text = substitute(&e.text, values);
            (e, text)
        })
        .collect()
}

/// Every alerting rule as Prometheus parsed it from alerts.yml (labels and annotations checked).
fn alert_exprs(prom: &PrometheusServer, alerts_yml: &Path) -> Vec<(Expr, String)> {
    let rules = poll(RULES_TIMEOUT, "Prometheus to load alerts.yml", || {
        Some(loaded_alert_rules(prom))
            .filter(|r| !r.is_empty())
            .ok_or_else(|| "no alerting rule loaded".to_string())
    });
    let names = alert_names(&read(alerts_yml));
    assert_eq!(rules.len(), names.len(), "alerting rules loaded: {rules:?}");
    rules
        .iter()
        .map(|r| {
            let name = r["name"].as_str().expect("rule name");
            let severity = r["labels"]["severity"].as_str().unwrap_or("");
            assert!(
                ["critical", "warning"].contains(&severity),
                "{name}: severity {severity:?}"
            );
            for key in ["summary", "description"] {
                let text = r["annotations"][key].as_str().unwrap_or("");
                assert!(!text.is_empty(), "{name}: annotation {key}");
            }
            let text = r["query"].as_str().expect("rule query").to_string();
            let e = Expr {
                kind: Kind::Alert,
                source: format!("alerts.yml {name}"),
                text: text.clone(),
            };
            (e, text)
        })
        .collect()
}

/// Runs the probes until each has answered once (at most [`DATA_TIMEOUT`]), then all once
/// more; returns, per expression, the most results any of its probes returned.
fn wait_for_data(
    prom: &PrometheusServer,
    exprs: &[(Expr, String)],
    probes: &[(usize, Probe)],
) -> BTreeMap<usize, usize> {
    let deadline = Instant::now() + DATA_TIMEOUT;
    let mut waiting: Vec<usize> = (0..probes.len()).collect();
    while !waiting.is_empty() {
        let mut why = Vec::new();
        waiting.retain(|&p| match run_probe(prom, &probes[p].1) {
            Ok(_) => false,
            Err(e) => {
                why.push(format!("{}: {e}", exprs[probes[p].0].0.source));
                true
            }
        });
        if waiting.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} probes still have no data after {DATA_TIMEOUT:?}:\n{}",
            waiting.len(),
            probes.len(),
            why.join("\n")
        );
        std::thread::sleep(ROUND_PAUSE);
    }
    let mut returned: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, probe) in probes {
        let got = run_probe(prom, probe)
            .unwrap_or_else(|e| panic!("{}: no longer returns data: {e}", exprs[*i].0.source));
        let n = returned.entry(*i).or_default();
        *n = (*n).max(got.len());
    }
    returned
}

/// Prints every expression with how much it returned, and the totals.
fn report(exprs: &[(Expr, String)], returned: &BTreeMap<usize, usize>, probes: usize) {
    for (i, (e, text)) in exprs.iter().enumerate() {
        println!(
            "ok {:<10} {:>3} result(s)  {}  |  {}",
            format!("{:?}", e.kind),
            returned[&i],
            e.source,
            text.replace('\n', " ")
        );
    }
    let count = |k: Kind| exprs.iter().filter(|(e, _)| e.kind == k).count();
    println!(
        "evaluated {} expressions ({} panel targets, {} variable queries, {} annotations, {} \
         alert rules) with {probes} probes",
        exprs.len(),
        count(Kind::Panel),
        count(Kind::Variable),
        count(Kind::Annotation),
        count(Kind::Alert),
    );
}

/// The `custom_metric` variable lists the app's metric and none of the built-in ones.
fn check_custom_metric_variable(prom: &PrometheusServer, values: &BTreeMap<&str, String>) {
    let var = promql_texts(DASHBOARDS[0], &load_dashboard(DASHBOARDS[0]))
        .into_iter()
        .find(|e| e.kind == Kind::Variable && e.source.contains("custom_metric"))
        .expect("custom_metric variable");
    let (selector, label) = label_values_args(&substitute(&var.text, values));
    let custom = run_probe(prom, &Probe::LabelValues { selector, label }).expect("custom");
    let builtin = |n: &String| n.starts_with("flora_") || n.starts_with("process_") || n == "up";
    assert!(
        custom.contains(&CUSTOM_METRIC.to_string()) && !custom.iter().any(builtin),
        "custom_metric values: {custom:?}"
    );
}

/// Kills the worker in slot 0 (the master respawns it in the same slot), then reloads.
fn cause_events(dir: &TestDir, cluster: &Cluster) {
    let old = cluster.snapshot().slots[0].pid;
    support::kill9(old);
    wait_for(START_TIMEOUT, "slot 0 respawned and ready", || {
        let s = cluster.snapshot().slots[0].clone();
        (s.pid != old && s.pid != 0 && s.state == SlotState::Ready).then_some(())
    });
    let out = dir.ctl(&["reload"]);
    assert!(
        out.status.success(),
        "reload: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Points a range query over the last 10 minutes returns, at the annotation step.
fn range_points(prom: &PrometheusServer, promql: &str) -> usize {
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let data = prom.api(&format!(
        "/api/v1/query_range?query={}&start={}&end={end}&step={ANNOTATION_STEP_SECS}",
        http::url_encode(promql),
        end - 600
    ));
    data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|series| series["values"].as_array().map_or(0, Vec::len))
        .sum()
}

/// Evaluates every annotation query as Grafana does (a range query at the annotation step):
/// those of [`EVENTS`] marked `true` show the events [`cause_events`] caused, the others none.
fn check_annotation_events(prom: &PrometheusServer, exprs: &[(Expr, String)]) {
    let annotations: Vec<(&str, bool, &str)> = exprs
        .iter()
        .filter(|(e, _)| e.kind == Kind::Annotation)
        .map(|(e, text)| {
            let name = e.source.rsplit(" annotation ").next().unwrap_or_default();
            let name = name.trim_matches('"');
            let (_, expected) = EVENTS
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("annotation {name:?} is not listed in EVENTS"));
            (e.source.as_str(), *expected, text.as_str())
        })
        .collect();
    poll(EVENTS_TIMEOUT, "the annotations to show the events", || {
        let mut missing = Vec::new();
        for (source, expected, text) in &annotations {
            let points = range_points(prom, text);
            assert!(
                *expected || points == 0,
                "{source} shows {points} event point(s) but nothing of the kind happened: {text}"
            );
            if *expected && points == 0 {
                missing.push(format!("{source}: no event yet"));
            }
        }
        missing.is_empty().then_some(()).ok_or(missing.join("\n"))
    });
    for (source, expected, _) in &annotations {
        let what = if *expected {
            "shows the event"
        } else {
            "stays empty"
        };
        println!("annotation {source}: {what}");
    }
}

/// Every rule evaluates without error on the live data, and the healthy cluster raises nothing.
fn check_rules_healthy_and_quiet(prom: &PrometheusServer) {
    poll(RULES_TIMEOUT, "every rule evaluated and healthy", || {
        let rules = loaded_alert_rules(prom);
        for r in &rules {
            let error = r["lastError"].as_str().unwrap_or("");
            assert!(error.is_empty(), "rule {} failed: {error}", r["name"]);
        }
        let healthy = rules.iter().all(|r| r["health"] == "ok");
        healthy.then_some(()).ok_or_else(|| format!("{rules:?}"))
    });
    poll(
        RULES_TIMEOUT,
        "no active alert on a healthy cluster",
        || {
            let alerts = prom.api("/api/v1/alerts");
            let active = alerts["alerts"].as_array().cloned().unwrap_or_default();
            active
                .is_empty()
                .then_some(())
                .ok_or_else(|| format!("active alerts: {active:?}"))
        },
    );
}

/// A few 404s and 503s from each worker: the error panels and the 5xx ratio select codes by
/// class (`code=~"5.."`), and a code has a series only once it was answered (few enough to
/// keep the 5xx alert quiet under the traffic).
fn answer_errors_on_every_worker(port: u16) {
    for (slot, mut c) in support::workers::conns_by_slot(port, &[0, 1]) {
        for code in [404, 503] {
            let r = support::workers::call(&mut c, &format!("/code/{code}"));
            assert_eq!(r.status, code, "slot {slot}");
        }
        c.close();
    }
}

#[test]
fn every_dashboard_and_alert_expression_returns_data_from_a_real_cluster() {
    let dir = TestDir::new("dashboards");
    // Route metrics on: the demo names its routes, so the route panels have data.
    let args = ["--workers", "2", "--route-metrics"];
    let cluster = dir.start_with(support::free_port(), &args, &[]);
    cluster.wait_ready(2);
    register_custom_metric(cluster.port);
    answer_errors_on_every_worker(cluster.port);
    let status_addr = cluster
        .status_url()
        .trim_start_matches("http://")
        .to_string();
    let traffic = Traffic::start(cluster.port);
    let alerts_yml = dashboards_dir().join("alerts.yml");
    let prom = PrometheusServer::start_with_rules(JOB, &status_addr, &[&alerts_yml]);

    let instance = scraped_instance(&prom);
    assert_eq!(instance, status_addr, "targets {}", prom.targets());
    let exported = exported_metrics(&prom);
    assert!(exported.contains(CUSTOM_METRIC), "scraped: {exported:?}");

    // The values Grafana would put in for the variables.
    let values: BTreeMap<&str, String> = [
        ("job", JOB.to_string()),
        ("instance", instance),
        ("worker", "0".to_string()),
        ("custom_metric", CUSTOM_METRIC.to_string()),
    ]
    .into_iter()
    .chain(GRAFANA_GLOBALS.iter().map(|(k, v)| (*k, v.to_string())))
    .collect();
    let mut exprs = dashboard_exprs(&values);
    exprs.extend(alert_exprs(&prom, &alerts_yml));

    let probes: Vec<(usize, Probe)> = exprs
        .iter()
        .enumerate()
        .flat_map(|(i, (e, text))| plan(e, text, &exported).into_iter().map(move |p| (i, p)))
        .collect();
    let returned = wait_for_data(&prom, &exprs, &probes);
    report(&exprs, &returned, probes.len());
    check_custom_metric_variable(&prom, &values);
    check_rules_healthy_and_quiet(&prom);

    let errors = traffic.errors();
    traffic.stop();
    assert!(errors.is_empty(), "the traffic saw errors: {errors:?}");

    // The annotation queries mark real events.
    cause_events(&dir, &cluster);
    check_annotation_events(&prom, &exprs);
}
