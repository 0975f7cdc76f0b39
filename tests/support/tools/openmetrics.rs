//! Python's `prometheus_client` OpenMetrics parser, the strict reference parser, run on a
//! text and read back as families.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{is_executable, run_tool, TOOL_TIMEOUT};
use crate::support::exposition::{parse_value, Sample};

/// Env var naming the Python interpreter that has `prometheus_client` (set by scripts/test.sh).
pub const PYTHON_ENV: &str = "FLORA_TEST_PYTHON";

/// The Python interpreter with `prometheus_client` ([`PYTHON_ENV`], else the venv
/// scripts/test.sh creates at `target/test-venv`); panics when there is none.
pub fn python_with_prometheus_client() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python");
    let py = match std::env::var_os(PYTHON_ENV) {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            assert!(
                is_executable(&p),
                "{PYTHON_ENV}={} is not an executable: scripts/test.sh creates \
                 target/test-venv with prometheus_client and exports its python",
                p.display()
            );
            p
        }
        _ if is_executable(&venv) => venv,
        _ => panic!(
            "{PYTHON_ENV} is not set and target/test-venv does not exist: scripts/test.sh \
             creates that venv with prometheus_client and exports {PYTHON_ENV} (by hand: \
             python3 -m venv target/test-venv && target/test-venv/bin/pip install \
             prometheus_client && export {PYTHON_ENV}=$PWD/target/test-venv/bin/python)"
        ),
    };
    let out = run_tool(
        Command::new(&py).args(["-c", "import prometheus_client.openmetrics.parser"]),
        b"",
        TOOL_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "{} cannot import prometheus_client (scripts/test.sh installs it into \
         target/test-venv): {}",
        py.display(),
        out.stderr
    );
    py
}

/// Parses the OpenMetrics text on stdin with the reference parser and prints every family as
/// JSON (values as strings, so +Inf and NaN survive).
const OPENMETRICS_PARSE_PY: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = []
for f in text_string_to_metric_families(sys.stdin.read()):
    families.append({
        "name": f.name,
        "type": f.type,
        "samples": [[s.name, dict(s.labels), repr(float(s.value))] for s in f.samples],
    })
print(json.dumps(families))
"#;

/// One metric family as the OpenMetrics reference parser sees it.
#[derive(Debug, Clone)]
pub struct OmFamily {
    /// Family name (without `_total` for counters, `_info` for infos).
    pub name: String,
    /// `counter`, `gauge`, `histogram`, `info`, `unknown`, …
    pub typ: String,
    /// The samples.
    pub samples: Vec<Sample>,
}

/// Parses `text` with `prometheus_client.openmetrics.parser`; `Err` holds the parser's
/// stderr when it rejects the text.
pub fn parse_openmetrics_with_python(text: &str) -> Result<Vec<OmFamily>, String> {
    let py = python_with_prometheus_client();
    let out = run_tool(
        Command::new(py).args(["-c", OPENMETRICS_PARSE_PY]),
        text.as_bytes(),
        TOOL_TIMEOUT,
    );
    if !out.status.success() {
        return Err(format!("{}\n{}", out.status, out.stderr));
    }
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .map_err(|e| format!("parser output is not JSON ({e}): {}", out.stdout))?;
    let families = v.as_array().ok_or("parser output is not a JSON array")?;
    Ok(families.iter().map(om_family).collect())
}

fn om_family(f: &serde_json::Value) -> OmFamily {
    let samples = f["samples"]
        .as_array()
        .map(|a| a.iter().map(om_sample).collect())
        .unwrap_or_default();
    OmFamily {
        name: f["name"].as_str().unwrap_or_default().to_string(),
        typ: f["type"].as_str().unwrap_or_default().to_string(),
        samples,
    }
}

fn om_sample(s: &serde_json::Value) -> Sample {
    let labels = s[1]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    Sample {
        name: s[0].as_str().unwrap_or_default().to_string(),
        labels,
        value: parse_value(s[2].as_str().unwrap_or_default()).unwrap_or(f64::NAN),
    }
}
