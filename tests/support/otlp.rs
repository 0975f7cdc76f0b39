//! A real OTLP/HTTP receiver (tests/support/otlp_receiver.py: the official OpenTelemetry
//! protobuf definitions behind `http.server`) and readers of the exports it records.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::tools::{self, ChildGuard};
use super::TestDir;

/// Longest wait for a push showing what the test expects (a few intervals; generous for a
/// loaded 2-core machine).
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for the receiver to listen.
pub const RECEIVER_START_TIMEOUT: Duration = Duration::from_secs(20);
/// The Python module the receiver needs.
pub const OTLP_MODULE: &str = "opentelemetry.proto.collector.metrics.v1.metrics_service_pb2";

/// The Python interpreter with `opentelemetry-proto` ([`tools::PYTHON_ENV`], else the venv
/// scripts/test.sh creates); fails the test, saying what installs it, when there is none.
pub fn python_with_otlp_proto() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python");
    let py = std::env::var_os(tools::PYTHON_ENV)
        .filter(|p| !p.is_empty())
        .map_or(venv, PathBuf::from);
    let how = "scripts/test.sh installs the PyPI package opentelemetry-proto into \
               target/test-venv and exports FLORA_TEST_PYTHON (by hand: python3 -m venv \
               target/test-venv && target/test-venv/bin/pip install opentelemetry-proto)";
    assert!(py.is_file(), "no Python at {}: {how}", py.display());
    let out = tools::run_tool(
        Command::new(&py).args(["-c", &format!("import {OTLP_MODULE}")]),
        b"",
        tools::TOOL_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "{} cannot import {OTLP_MODULE}: {how}\n{}",
        py.display(),
        out.stderr
    );
    py
}

/// tests/support/otlp_receiver.py, running; every export it got is a JSON line in `out`.
pub struct Receiver {
    /// The receiver's process.
    pub guard: ChildGuard,
    /// Its port.
    pub port: u16,
    out: PathBuf,
}

impl Receiver {
    /// Starts a receiver answering `status` to every well-formed export.
    pub fn start(dir: &TestDir, status: u16) -> Self {
        let py = python_with_otlp_proto();
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/otlp_receiver.py");
        let (out, ready) = (dir.scratch("otlp.jsonl"), dir.scratch("otlp.port"));
        let mut cmd = Command::new(py);
        cmd.arg(script)
            .arg("--out")
            .arg(&out)
            .arg("--ready")
            .arg(&ready)
            .args(["--status", &status.to_string()]);
        let mut guard = ChildGuard::spawn("otlp_receiver", &mut cmd, dir.scratch("otlp.log"));
        let port = super::wait_for(
            RECEIVER_START_TIMEOUT,
            "the OTLP receiver to listen",
            || {
                guard.assert_running();
                std::fs::read_to_string(&ready).ok()?.trim().parse().ok()
            },
        );
        Self { guard, port, out }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1/metrics", self.port)
    }

    /// Every export received so far (complete lines only), oldest first.
    pub fn exports(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record {l:?}: {e}")))
            .collect()
    }

    /// Polls until an export satisfies `pick` (which returns `Err(why not)` otherwise).
    pub fn wait_export<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Value) -> Result<T, String>,
    ) -> T {
        super::poll(PUSH_TIMEOUT, what, || {
            self.guard.assert_running();
            let exports = self.exports();
            let mut last = format!("{} exports, none yet", exports.len());
            for e in exports.iter().rev() {
                match pick(e) {
                    Ok(v) => return Ok(v),
                    Err(why) => last = why,
                }
            }
            Err(last)
        })
    }
}

/// The one resource of an export.
pub fn resource(export: &Value) -> &Value {
    let resources = export["resources"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    assert_eq!(resources.len(), 1, "one resource: {export}");
    &resources[0]
}

/// Metric `name` of an export (the one scope), if present.
pub fn metric<'a>(export: &'a Value, name: &str) -> Option<&'a Value> {
    let scopes = resource(export)["scopes"].as_array()?;
    assert_eq!(scopes.len(), 1, "one scope: {export}");
    let found: Vec<&Value> = scopes[0]["metrics"]
        .as_array()?
        .iter()
        .filter(|m| m["name"] == name)
        .collect();
    assert!(found.len() <= 1, "{name} twice in one export");
    found.first().copied()
}

pub fn points(m: &Value) -> &[Value] {
    m["points"].as_array().map_or(&[][..], Vec::as_slice)
}

/// Sum of the values of a number metric's points.
pub fn total(m: &Value) -> f64 {
    points(m).iter().filter_map(|p| p["value"].as_f64()).sum()
}

pub fn assert_monotonic_cumulative_sum(m: &Value, value_type: &str) {
    assert_eq!(m["type"], "sum", "{m}");
    assert_eq!(m["is_monotonic"], true, "{m}");
    assert_eq!(m["temporality"], "cumulative", "{m}");
    for p in points(m) {
        assert_eq!(p["value_type"], value_type, "{m}");
        let start = p["start_time_unix_nano"].as_u64().unwrap_or(0);
        let time = p["time_unix_nano"].as_u64().unwrap_or(0);
        assert!(
            start > 0 && start <= time,
            "start {start}, time {time}: {m}"
        );
    }
}
