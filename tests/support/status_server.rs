//! The master's status server: its port, `/metrics` scrapes (parsed), content types, and
//! reading custom series and `?auto` keys out of status documents.

use std::collections::BTreeMap;

use super::exposition::{parse_value, Exposition};
use super::http::get_with;
use super::{Cluster, Response};

/// The port of `http://127.0.0.1:PORT` ([`Cluster::status_url`]).
pub fn status_port(cluster: &Cluster) -> u16 {
    let url = cluster.status_url();
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("status URL without a port: {url}"))
}

/// `Accept` header Prometheus 2.42 sends (prefers OpenMetrics).
pub const PROMETHEUS_ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
/// Content type of the Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics 1.0.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One `/metrics` scrape: the raw response plus its parsed samples.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The response.
    pub resp: Response,
    /// The body text.
    pub text: String,
    /// The body parsed.
    pub expo: Exposition,
}

/// GETs `/metrics` (with `Accept: accept` when given); panics unless 200 and parseable.
pub fn scrape(port: u16, accept: Option<&str>) -> Scrape {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
    let resp = get_with(port, "/metrics", &headers);
    let text = resp.text();
    assert_eq!(resp.status, 200, "GET /metrics answered:\n{text}");
    let expo = Exposition::parse(&text)
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n----- scrape -----\n{text}"));
    Scrape { resp, text, expo }
}

/// The entries of the `custom` array of a status document (master JSON, CLI `--json` or the
/// in-app `/status`) named `name` whose label set is exactly `labels` (any order).
pub fn custom_series<'a>(
    doc: &'a serde_json::Value,
    name: &str,
    labels: &[(&str, &str)],
) -> Vec<&'a serde_json::Value> {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort();
    doc["custom"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|m| m["name"] == name)
                .filter(|m| {
                    let mut got: Vec<(String, String)> = m["labels"]
                        .as_array()
                        .map(|ls| {
                            ls.iter()
                                .map(|p| {
                                    (
                                        p[0].as_str().unwrap_or_default().to_string(),
                                        p[1].as_str().unwrap_or_default().to_string(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    got.sort();
                    got == want
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The `value` of the one custom series `name{labels}` in `doc`: `Some(None)` when the series
/// exists without a value (an unset gauge), `None` when there is no such series. Panics when
/// the series is listed more than once.
pub fn custom_value(
    doc: &serde_json::Value,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<Option<f64>> {
    let found = custom_series(doc, name, labels);
    assert!(
        found.len() <= 1,
        "custom series {name}{labels:?} listed {} times: {doc}",
        found.len()
    );
    found.first().map(|m| m["value"].as_f64())
}

/// The per-worker values of the custom series `name{labels}` in `doc`, by slot.
pub fn custom_per_worker(
    doc: &serde_json::Value,
    name: &str,
    labels: &[(&str, &str)],
) -> BTreeMap<usize, f64> {
    let found = custom_series(doc, name, labels);
    let Some(m) = found.first() else {
        panic!("no custom series {name}{labels:?} in {doc}");
    };
    m["per_worker"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|w| {
                    let slot = w["slot"].as_u64().expect("per_worker slot") as usize;
                    (slot, w["value"].as_f64().expect("per_worker value"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The value of line `key: value` of a `/server-status?auto` page.
pub fn auto_value(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .and_then(|v| parse_value(v.trim()))
}
