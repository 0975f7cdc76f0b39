//! Text helpers of tests/dashboards.rs: where the PromQL of a dashboard is, what an alert-rule
//! expression compares, which metrics and variables a text uses, and the alert names of the
//! rule files. Pure functions over the files' text, unit-tested at the end of this file.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Values substituted for Grafana's built-in variables.
pub const GRAFANA_GLOBALS: &[(&str, &str)] = &[
    ("__rate_interval", "30s"),
    ("__interval", "15s"),
    ("__interval_ms", "15000"),
    ("__range", "5m"),
];

/// Alert names of a rules file (`- alert: NAME` lines).
pub fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_string())
        .collect()
}

/// For each `alertname` of a promtool test file: how many cases expect no alert
/// (`exp_alerts: []`) and how many expect alerts.
pub fn alert_cases(tests: &str) -> BTreeMap<String, (usize, usize)> {
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("exp_alerts:") {
            let name = current
                .take()
                .expect("exp_alerts without an alertname before it");
            let entry = cases.entry(name).or_default();
            let rest = rest.split('#').next().unwrap_or_default().trim();
            if rest == "[]" {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
    }
    cases
}

/// Where a PromQL text is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A panel target's `expr`: plots values, must return data.
    Panel,
    /// A query variable's `label_values(SELECTOR, LABEL)`.
    Variable,
    /// A Prometheus annotation: `<query> <comparison> <threshold>`, an event where it holds.
    Annotation,
    /// An alerting rule: `<query> <comparison> <threshold>`.
    Alert,
}

/// A PromQL text (or a Grafana `label_values(…)` variable query) and where it comes from.
#[derive(Debug, Clone)]
pub struct Expr {
    /// Where it is used.
    pub kind: Kind,
    /// File and panel, variable, annotation or alert name, for messages.
    pub source: String,
    /// The text as written, variables included.
    pub text: String,
}

/// Every panel, rows' children included.
pub fn all_panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// Names of the variables a text uses (`$name`, `${name}`, `${name:format}`).
pub fn variables_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let (name, len) = if let Some(braced) = rest.strip_prefix('{') {
            let end = braced.find('}').unwrap_or(braced.len());
            let inner = &braced[..end];
            (inner.split([':', '.']).next().unwrap_or_default(), end + 2)
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], end)
        };
        if !name.is_empty() {
            out.push(name.to_string());
        }
        rest = &rest[len.min(rest.len())..];
    }
    out
}

/// Every PromQL text of a dashboard and where it is.
pub fn promql_texts(file: &str, d: &Value) -> Vec<Expr> {
    let mut out = Vec::new();
    for p in all_panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_else(|| {
                panic!("{file}: panel {} has a target without expr", p["title"])
            });
            out.push(Expr {
                kind: Kind::Panel,
                source: format!("{file} panel {} target {}", p["title"], t["refId"]),
                text: expr.to_string(),
            });
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap_or_else(|| panic!("{file}: variable {} has no query", v["name"]));
            out.push(Expr {
                kind: Kind::Variable,
                source: format!("{file} variable {}", v["name"]),
                text: q.to_string(),
            });
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = a["expr"].as_str().or(a["target"]["expr"].as_str()) {
            out.push(Expr {
                kind: Kind::Annotation,
                source: format!("{file} annotation {}", a["name"]),
                text: expr.to_string(),
            });
        }
    }
    out
}

/// Byte offset and length of each comparison operator at the top level of `expr` (outside
/// parentheses, braces, brackets, strings and comments).
pub fn top_level_comparisons(expr: &str) -> Vec<(usize, usize)> {
    let b = expr.as_bytes();
    let (mut depth, mut i, mut out) = (0i32, 0usize, Vec::new());
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            if c == b'\\' && q != b'`' {
                i += 1;
            } else if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        let eq_next = b.get(i + 1) == Some(&b'=');
        match c {
            b'"' | b'\'' | b'`' => quote = Some(c),
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth -= 1,
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'<' | b'>' if depth == 0 => {
                let len = if eq_next { 2 } else { 1 };
                out.push((i, len));
                i += len;
                continue;
            }
            b'=' | b'!' if depth == 0 && eq_next => {
                out.push((i, 2));
                i += 2;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The right-hand side of a comparison without its `bool`, `on (…)`, `ignoring (…)`,
/// `group_left (…)` and `group_right (…)` modifiers.
pub fn strip_modifiers(mut rhs: &str) -> &str {
    'outer: loop {
        rhs = rhs.trim_start();
        for kw in ["bool", "on", "ignoring", "group_left", "group_right"] {
            let Some(after) = rhs.strip_prefix(kw) else {
                continue;
            };
            if after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            rhs = after.trim_start();
            if rhs.starts_with('(') {
                let close = rhs.find(')').expect("unbalanced modifier");
                rhs = &rhs[close + 1..];
            }
            continue 'outer;
        }
        return rhs.trim();
    }
}

/// Metric names an expression uses (ours all start with `flora_` or `process_`; strings skipped).
pub fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    // Odd pieces between double quotes are label values and regexes.
    for part in expr.split('"').step_by(2) {
        for word in part.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if word.starts_with("flora_") || word.starts_with("process_") {
                out.insert(word.to_string());
            }
        }
    }
    out
}

/// `label_values(SELECTOR, LABEL)` → (SELECTOR, LABEL).
pub fn label_values_args(query: &str) -> (String, String) {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unsupported variable query {query:?} (only label_values)"));
    let comma = inner
        .rfind(',')
        .unwrap_or_else(|| panic!("label_values without a selector: {query:?}"));
    (
        inner[..comma].trim().to_string(),
        inner[comma + 1..].trim().to_string(),
    )
}

/// Replaces the dashboard variables in `text` by the values of this test.
pub fn substitute(text: &str, values: &BTreeMap<&str, String>) -> String {
    let mut out = text.to_string();
    // Longest names first, so `$instance` is not taken for a prefix of another name.
    let mut names: Vec<&&str> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        out = out
            .replace(&format!("${{{name}}}"), &values[*name])
            .replace(&format!("${name}"), &values[*name]);
    }
    assert!(
        !out.contains('$'),
        "{text:?}: a variable is left after substitution: {out:?}"
    );
    out
}

#[test]
fn promql_helpers_split_comparisons_and_find_names() {
    let cases: &[(&str, &[&str])] = &[
        ("up{job=\"flora\"} == 0", &["=="]),
        ("sum(rate(x{code!=\"5xx\", a=~\"b\"}[5m])) > 0.05", &[">"]),
        ("a / b > bool 1", &[">"]),
        ("a < on (job, instance) b", &["<"]),
        ("histogram_quantile(0.99, sum by (le) (rate(x[5m])))", &[]),
        ("a >= 1 and b <= 2", &[">=", "<="]),
        ("x{a=\">\"} != 3 # > comment", &["!="]),
    ];
    for (expr, want) in cases {
        let got: Vec<&str> = top_level_comparisons(expr)
            .iter()
            .map(|(at, len)| &expr[*at..at + len])
            .collect();
        assert_eq!(&got, want, "{expr}");
    }
    assert_eq!(strip_modifiers(" on (job, instance) b"), "b");
    assert_eq!(strip_modifiers(" bool ignoring(x) group_left(y) c"), "c");
    assert_eq!(strip_modifiers(" ongoing_metric"), "ongoing_metric");
    assert_eq!(
        variables_in("rate(x{a=\"$job\", b=~\"${instance}\"}[$__rate_interval]) ${x:csv}"),
        ["job", "instance", "__rate_interval", "x"]
    );
    assert_eq!(
        metrics_in("sum(rate(flora_a_total{x=\"flora_b\"}[1m])) / process_c"),
        BTreeSet::from(["flora_a_total".to_string(), "process_c".to_string()])
    );
    assert_eq!(
        label_values_args("label_values(flora_x{job=\"a\", b=\"c\"}, worker)"),
        (
            "flora_x{job=\"a\", b=\"c\"}".to_string(),
            "worker".to_string()
        )
    );
}
