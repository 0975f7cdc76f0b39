//! A real `prometheus` server scraping one target, optionally with alerting rules, and its
//! JSON API.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

use super::{require_tool, wait_http_ok, ChildGuard};
use crate::support::exposition::parse_value;
use crate::support::free_port;
use crate::support::http::{get_json, request, url_encode};

/// A real Prometheus server scraping one target every second.
#[derive(Debug)]
pub struct PrometheusServer {
    /// The child (dropped first: it must stop before its data dir goes).
    pub guard: ChildGuard,
    /// Its HTTP port on 127.0.0.1.
    pub port: u16,
    _dir: TempDir,
}

impl PrometheusServer {
    /// Starts `prometheus` scraping `target` (`HOST:PORT`, path `/metrics`) as job `job`;
    /// returns once its API is ready (the first scrape comes ~5 s later).
    pub fn start(job: &str, target: &str) -> Self {
        Self::start_with_rules(job, target, &[])
    }

    /// Runs an instant query; returns `data.result` (panics on an API error).
    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let target = format!("/api/v1/query?query={}", url_encode(expr));
        let v = get_json(self.port, &target);
        assert_eq!(v["status"], "success", "query {expr}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The single value of a vector query, when the result has exactly one element.
    pub fn query_scalar(&self, expr: &str) -> Option<f64> {
        match self.query(expr).as_slice() {
            [one] => one["value"][1].as_str().and_then(parse_value),
            _ => None,
        }
    }

    /// `/api/v1/targets` as text (for failure messages).
    pub fn targets(&self) -> String {
        request(self.port, "GET", "/api/v1/targets", &[])
            .map(|r| r.text())
            .unwrap_or_else(|e| format!("GET /api/v1/targets: {e}"))
    }
}

impl PrometheusServer {
    /// Like [`PrometheusServer::start`] (job `job` scraping `target` every second), with
    /// `rule_files` loaded and evaluated every second.
    pub fn start_with_rules(job: &str, target: &str, rule_files: &[&Path]) -> Self {
        let bin = require_tool("prometheus", "prometheus");
        let dir = tempfile::Builder::new()
            .prefix("flora-prometheus-")
            .tempdir()
            .expect("tempdir");
        let rules: String = rule_files
            .iter()
            .map(|p| format!("  - '{}'\n", p.display()))
            .collect();
        let rules = if rules.is_empty() {
            String::new()
        } else {
            format!("rule_files:\n{rules}")
        };
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  \
                 evaluation_interval: 1s\n{rules}scrape_configs:\n  - job_name: \
                 {job}\n    metrics_path: /metrics\n    static_configs:\n      - targets: \
                 ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir.path());
        let mut guard = ChildGuard::spawn("prometheus", &mut cmd, dir.path().join("log"));
        wait_http_ok(&mut guard, port, "/-/ready");
        Self {
            guard,
            port,
            _dir: dir,
        }
    }

    /// `GET target` (an `/api/v1/…` path with its query string, already encoded); returns the
    /// answer's `data` (panics unless the API answered `status: success`).
    pub fn api(&self, target: &str) -> serde_json::Value {
        let v = get_json(self.port, target);
        assert_eq!(v["status"], "success", "GET {target}: {v}");
        v["data"].clone()
    }

    /// The label sets of the series matching `selector` (`/api/v1/series`, all stored time).
    pub fn series(&self, selector: &str) -> Vec<BTreeMap<String, String>> {
        let data = self.api(&format!(
            "/api/v1/series?match%5B%5D={}",
            url_encode(selector)
        ));
        data.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_object())
                    .map(|o| {
                        o.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
