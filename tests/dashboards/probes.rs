//! The questions tests/dashboards.rs asks Prometheus about each expression: the whole
//! expression must be valid PromQL, and it (or, for `<query> <comparison> <threshold>`, each
//! side that is not a number) must return data; a `label_values` variable must find series
//! carrying its label.

use std::collections::BTreeSet;

use crate::dashboards::texts::{
    label_values_args, metrics_in, strip_modifiers, top_level_comparisons, Expr, Kind,
};
use crate::support::http::url_encode;
use crate::support::tools::PrometheusServer;

/// One question to Prometheus.
#[derive(Debug, Clone)]
pub enum Probe {
    /// An instant query that must succeed, and return data when `needs_data`.
    Query { promql: String, needs_data: bool },
    /// Series matching `selector` must exist and carry `label`.
    LabelValues { selector: String, label: String },
}

/// The probes that check one expression (`text`, variables substituted). Panics when the
/// expression uses a metric the master does not export (`exported`), or breaks the rule that
/// panels plot values and annotations and alerts have exactly one top-level comparison.
pub fn plan(e: &Expr, text: &str, exported: &BTreeSet<String>) -> Vec<Probe> {
    for m in metrics_in(text) {
        assert!(
            exported.contains(&m),
            "{}: {m} is not exported by the master (it exports {exported:?})",
            e.source
        );
    }
    if e.kind == Kind::Variable {
        let (selector, label) = label_values_args(text);
        return vec![Probe::LabelValues { selector, label }];
    }
    let query = |promql: &str, needs_data: bool| Probe::Query {
        promql: promql.trim().to_string(),
        needs_data,
    };
    let comparisons = top_level_comparisons(text);
    match (e.kind, comparisons.as_slice()) {
        (Kind::Panel, []) => vec![query(text, true)],
        (Kind::Panel, _) => panic!("{}: a panel plots values, not a comparison", e.source),
        (_, [(at, len)]) => {
            // Correctly empty while nothing happens: each side must have data instead.
            let rhs = strip_modifiers(&text[at + len..]);
            let mut probes = vec![query(text, false), query(&text[..*at], true)];
            if rhs.parse::<f64>().is_err() {
                probes.push(query(rhs, true));
            }
            probes
        }
        (_, found) => panic!(
            "{}: needs exactly one top-level comparison (`<query> <op> <threshold>`), has {}: \
             {text}",
            e.source,
            found.len()
        ),
    }
}

/// Runs one probe: `Ok(a line per result)` or `Err(why it does not count yet)`. Invalid PromQL
/// panics at once (the API answers an error whatever the data).
pub fn run_probe(prom: &PrometheusServer, probe: &Probe) -> Result<Vec<String>, String> {
    match probe {
        Probe::Query { promql, needs_data } => {
            let data = prom.api(&format!("/api/v1/query?query={}", url_encode(promql)));
            let results: Vec<String> = match data["resultType"].as_str() {
                Some("vector" | "matrix") => data["result"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| r["metric"].to_string())
                    .collect(),
                _ => vec![data["result"].to_string()], // a scalar or a string
            };
            if *needs_data && results.is_empty() {
                return Err(format!("{promql} returned no data"));
            }
            Ok(results)
        }
        Probe::LabelValues { selector, label } => {
            let values: BTreeSet<String> = prom
                .series(selector)
                .into_iter()
                .filter_map(|s| s.get(label).cloned())
                .collect();
            if values.is_empty() {
                return Err(format!("no series {selector} with label {label}"));
            }
            Ok(values.into_iter().collect())
        }
    }
}
