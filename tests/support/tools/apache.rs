//! A real `prometheus-apache-exporter` reading a `?auto` status page.

use std::process::Command;

use tempfile::TempDir;

use super::{require_tool, wait_http_ok, ChildGuard};
use crate::support::free_port;
use crate::support::status_server::{scrape, Scrape};

/// A real `prometheus-apache-exporter` reading a `?auto` status page.
#[derive(Debug)]
pub struct ApacheExporter {
    /// The child.
    pub guard: ChildGuard,
    /// Its HTTP port on 127.0.0.1.
    pub port: u16,
    _dir: TempDir,
}

impl ApacheExporter {
    /// Starts the exporter on `scrape_uri`; returns once its `/metrics` answers.
    pub fn start(scrape_uri: &str) -> Self {
        let bin = require_tool("prometheus-apache-exporter", "prometheus-apache-exporter");
        let dir = tempfile::Builder::new()
            .prefix("flora-apache-exporter-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let mut cmd = Command::new(bin);
        // 0.12 names its listen flag --telemetry.address (not --web.listen-address).
        cmd.arg(format!("--scrape_uri={scrape_uri}"))
            .arg(format!("--telemetry.address=127.0.0.1:{port}"))
            .arg("--telemetry.endpoint=/metrics")
            .current_dir(dir.path());
        let mut guard = ChildGuard::spawn(
            "prometheus-apache-exporter",
            &mut cmd,
            dir.path().join("log"),
        );
        wait_http_ok(&mut guard, port, "/metrics");
        Self {
            guard,
            port,
            _dir: dir,
        }
    }

    /// Scrapes the exporter's `/metrics` (which makes it read the status page once).
    pub fn scrape(&mut self) -> Scrape {
        self.guard.assert_running();
        scrape(self.port, None)
    }
}
