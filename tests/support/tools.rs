//! Real tools the exporter tests check the status server with: `promtool`, a `prometheus`
//! server, `prometheus-apache-exporter` and Python's `prometheus_client` OpenMetrics parser.
//! Also a raw HTTP/1.1 request helper (any method, extra headers), a parser of the text
//! exposition formats and a background traffic generator.
//!
//! A missing tool fails the test with a message naming what installs it (scripts/test.sh);
//! nothing is skipped. Every child process sits in a [`ChildGuard`] (SIGTERM, bounded wait,
//! SIGKILL, reap on drop).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use super::{free_port, kill_and_reap, wait_child, wait_for, Cluster, Http, Response, IO_TIMEOUT};

/// Longest run of one tool invocation (`promtool`, the Python parser): they take milliseconds.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a started tool server (prometheus, apache exporter) to answer HTTP.
pub const TOOL_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a tool server to exit after SIGTERM before it is SIGKILLed.
pub const TOOL_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Env var naming the Python interpreter that has `prometheus_client` (set by scripts/test.sh).
pub const PYTHON_ENV: &str = "FLORA_TEST_PYTHON";

// ---------------------------------------------------------------------------------------
// Tools on PATH
// ---------------------------------------------------------------------------------------

/// The path of `cmd` on `PATH`; panics (the test fails) when it is missing, naming the
/// Debian `package` that scripts/test.sh installs.
pub fn require_tool(cmd: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(cmd))
        .find(|p| is_executable(p))
        .unwrap_or_else(|| {
            panic!(
                "`{cmd}` is not on PATH: scripts/test.sh installs it (Debian package \
                 `{package}`; run scripts/test.sh as root once, or \
                 `apt-get install --no-install-recommends {package}`)"
            )
        })
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

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

/// What a finished tool printed.
#[derive(Debug)]
pub struct ToolOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `cmd` with `input` on stdin to completion, at most `timeout` (then it is killed and
/// the call panics). Stdout and stderr are drained by threads, so big outputs cannot block.
pub fn run_tool(cmd: &mut Command, input: &[u8], timeout: Duration) -> ToolOutput {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    // A tool that exits early closes its stdin: the write error is not the test's concern.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out_reader = drain(child.stdout.take().expect("stdout"));
    let err_reader = drain(child.stderr.take().expect("stderr"));
    let Some(status) = wait_child(&mut child, timeout) else {
        kill_and_reap(&mut child);
        panic!("{cmd:?} did not finish in {timeout:?}");
    };
    let _ = writer.join();
    ToolOutput {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// `promtool check metrics` on `text` (rc 0 clean, 3 lint problems, 1 parse error).
pub fn promtool_check_metrics(text: &str) -> ToolOutput {
    let promtool = require_tool("promtool", "prometheus");
    run_tool(
        Command::new(promtool).args(["check", "metrics"]),
        text.as_bytes(),
        TOOL_TIMEOUT,
    )
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

// ---------------------------------------------------------------------------------------
// Raw HTTP
// ---------------------------------------------------------------------------------------

/// The port of `http://127.0.0.1:PORT` ([`Cluster::status_url`]).
pub fn status_port(cluster: &Cluster) -> u16 {
    let url = cluster.status_url();
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("status URL without a port: {url}"))
}

/// Sends one `method target` request with `headers` and `Connection: close` to
/// 127.0.0.1:`port`, reads to EOF and parses the answer. The body is de-chunked; for HEAD it
/// is whatever bytes followed the head (there should be none).
pub fn request(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> io::Result<Response> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if method != "GET" && method != "HEAD" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    let raw = raw_exchange(port, req.as_bytes())?;
    parse_response(&raw, method == "HEAD")
}

/// `GET target` with `headers`; panics unless it gets a response (any status).
pub fn get_with(port: u16, target: &str, headers: &[(&str, &str)]) -> Response {
    request(port, "GET", target, headers)
        .unwrap_or_else(|e| panic!("GET {target} on 127.0.0.1:{port}: {e}"))
}

/// Connects with the test timeouts set.
pub fn connect(port: u16) -> io::Result<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// Writes `bytes`, half-closes, reads everything until EOF.
pub fn raw_exchange(port: u16, bytes: &[u8]) -> io::Result<Vec<u8>> {
    let mut s = connect(port)?;
    s.write_all(bytes)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// Parses a full HTTP/1.1 response read up to EOF.
pub fn parse_response(raw: &[u8], head_only: bool) -> io::Result<Response> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| {
        bad(format!(
            "no end of head in {:?}",
            String::from_utf8_lossy(raw)
        ))
    })?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut resp = Response {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    };
    if head_only {
        return Ok(resp);
    }
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    if chunked {
        resp.body = dechunk(&resp.body).map_err(bad)?;
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad(format!("content-length {len:?}")))?;
        if resp.body.len() < len {
            return Err(bad(format!(
                "body {} < content-length {len}",
                resp.body.len()
            )));
        }
        resp.body.truncate(len);
    }
    Ok(resp)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = find(data, b"\r\n").ok_or("chunk size line without CRLF")?;
        let line = String::from_utf8_lossy(&data[..eol]).into_owned();
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {line:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Percent-encodes `s` for a URL query value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Text exposition (Prometheus 0.0.4 and OpenMetrics samples)
// ---------------------------------------------------------------------------------------

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Sample name (with `_bucket`, `_total`, … suffixes).
    pub name: String,
    /// Labels by name.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// `name{a="x",b="y"}` with sorted labels: the series identity.
    pub fn series(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }

    /// Whether every `(name, value)` of `want` is among the labels.
    pub fn has_labels(&self, want: &[(&str, &str)]) -> bool {
        want.iter()
            .all(|(k, v)| self.labels.get(*k).is_some_and(|x| x == v))
    }
}

/// A parsed exposition: samples in order plus the `# TYPE` declarations in order.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Every sample, in text order.
    pub samples: Vec<Sample>,
    /// `(family, type)` for every `# TYPE` line, in text order.
    pub types: Vec<(String, String)>,
    /// Family names of every `# HELP` line.
    pub helps: Vec<String>,
}

/// Suffixes a sample may add to its family's name.
const SUFFIXES: [&str; 6] = ["_bucket", "_count", "_sum", "_total", "_created", "_info"];

impl Exposition {
    /// Parses the text; `Err` names the first line it cannot read.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut e = Self::default();
        for (n, line) in text.lines().enumerate() {
            let err = |m: &str| format!("line {}: {m}: {line:?}", n + 1);
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, typ) = rest.split_once(' ').ok_or_else(|| err("TYPE"))?;
                e.types.push((name.to_string(), typ.trim().to_string()));
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                e.helps.push(name.to_string());
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                e.samples.push(parse_sample(line).map_err(|m| err(&m))?);
            }
        }
        Ok(e)
    }

    /// The declared type of `family`.
    pub fn type_of(&self, family: &str) -> Option<&str> {
        self.types
            .iter()
            .find(|(n, _)| n == family)
            .map(|(_, t)| t.as_str())
    }

    /// The declared family a sample name belongs to (itself, or itself minus a suffix).
    pub fn family_of(&self, sample: &str) -> String {
        if self.type_of(sample).is_some() {
            return sample.to_string();
        }
        SUFFIXES
            .iter()
            .filter_map(|s| sample.strip_suffix(s))
            .find(|base| self.type_of(base).is_some())
            .unwrap_or(sample)
            .to_string()
    }

    /// Samples named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// Sum of all samples named `name` (0 when there is none).
    pub fn sum(&self, name: &str) -> f64 {
        self.named(name).map(|s| s.value).sum()
    }

    /// The value of the first sample named `name` that has all labels `want`.
    pub fn value(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.named(name)
            .find(|s| s.has_labels(want))
            .map(|s| s.value)
    }

    /// Series (name + labels) that appear more than once.
    pub fn duplicate_series(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut dups = BTreeSet::new();
        for s in &self.samples {
            let key = s.series();
            if !seen.insert(key.clone()) {
                dups.insert(key);
            }
        }
        dups.into_iter().collect()
    }

    /// Families whose samples are not one contiguous group, or that are declared twice.
    pub fn scattered_families(&self) -> Vec<String> {
        let mut bad = BTreeSet::new();
        let mut declared = BTreeSet::new();
        for (name, _) in &self.types {
            if !declared.insert(name.clone()) {
                bad.insert(format!("{name} (TYPE declared twice)"));
            }
        }
        let mut done = BTreeSet::new();
        let mut current: Option<String> = None;
        for s in &self.samples {
            let fam = self.family_of(&s.name);
            if current.as_deref() != Some(fam.as_str()) {
                if let Some(prev) = current.take() {
                    done.insert(prev);
                }
                if done.contains(&fam) {
                    bad.insert(format!("{fam} (samples in more than one group)"));
                }
                current = Some(fam);
            }
        }
        bad.into_iter().collect()
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or("no value after the metric name")?;
    let name = line[..name_end].to_string();
    if name.is_empty() {
        return Err("empty metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    // Value, then an optional timestamp (and in OpenMetrics an optional exemplar).
    let value_text = rest.split_whitespace().next().ok_or("no value")?;
    let value = parse_value(value_text).ok_or_else(|| format!("bad value {value_text:?}"))?;
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Parses `a="x",b="y"}` (after the `{`); returns the labels and the text after `}`.
fn parse_labels(mut s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(tail) = s.strip_prefix('}') {
            return Ok((labels, tail));
        }
        let (key, after) = s.split_once('=').ok_or("label without '='")?;
        let after = after.strip_prefix('"').ok_or("label value without '\"'")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("dangling escape".into()),
                },
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        if labels.insert(key.trim().to_string(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        s = &after[end + 1..];
    }
}

/// Parses a sample value, including `+Inf`, `-Inf` and `NaN`.
pub fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

// ---------------------------------------------------------------------------------------
// Scraping the status server
// ---------------------------------------------------------------------------------------

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

/// GETs `target` and parses the body as JSON; panics unless 200 and JSON.
pub fn get_json(port: u16, target: &str) -> serde_json::Value {
    let resp = get_with(port, target, &[]);
    assert_eq!(resp.status, 200, "GET {target}: {}", resp.text());
    serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("GET {target} is not JSON ({e}):\n{}", resp.text()))
}

/// Sends exactly `k` `GET /` requests to the workers on `port`, each answered 200: half on
/// one keep-alive connection, the rest one per new connection.
pub fn send_requests(port: u16, k: u64) {
    let keepalive = k / 2;
    let mut c = Http::connect(port).expect("connect to the workers");
    for i in 0..keepalive {
        let r = c
            .get("/")
            .unwrap_or_else(|e| panic!("keep-alive request {i}: {e}"));
        assert_eq!(r.status, 200, "keep-alive request {i}");
    }
    c.close();
    for i in keepalive..k {
        let r = super::get(port, "/").unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(r.status, 200, "request {i}");
    }
}

// ---------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------

/// A tool server child: stdout and stderr go to one log file. On drop: SIGTERM, wait up to
/// [`TOOL_STOP_TIMEOUT`], SIGKILL, reap; the log is printed when the test is failing.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
    log: PathBuf,
}

impl ChildGuard {
    /// Spawns `cmd` (stdin closed, output to `log`).
    pub fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Self {
        let out = File::create(&log).expect("create tool log");
        let err = out.try_clone().expect("clone tool log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Self {
            child,
            name: name.to_string(),
            log,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the child logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log when the child has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!(
                "{} exited early ({st}); its log:\n{}",
                self.name,
                self.log()
            );
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- {} log -----\n{}\n----- end -----",
                self.name,
                self.log()
            );
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let pid = Pid::from_raw(self.child.id() as i32);
            let _ = signal::kill(pid, Signal::SIGTERM);
            if wait_child(&mut self.child, TOOL_STOP_TIMEOUT).is_none() {
                eprintln!("{} ignored SIGTERM: SIGKILL", self.name);
            }
        }
        kill_and_reap(&mut self.child);
    }
}

/// Polls `cond` every [`super::POLL_INTERVAL`] until it returns `Ok`; after `timeout` panics
/// naming `what` and showing the last `Err` (the context a failure needs, e.g. a scrape).
pub fn poll<T>(timeout: Duration, what: &str, mut cond: impl FnMut() -> Result<T, String>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let last = match cond() {
            Ok(v) => return v,
            Err(e) => e,
        };
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last observation:\n{last}"
        );
        std::thread::sleep(super::POLL_INTERVAL);
    }
}

/// Polls `GET path` on 127.0.0.1:`port` until it answers 200, checking that `guard` runs.
fn wait_http_ok(guard: &mut ChildGuard, port: u16, path: &str) {
    let what = format!("{} to answer GET {path} on port {port}", guard.name);
    wait_until_with(guard, &what, |_| {
        request(port, "GET", path, &[]).is_ok_and(|r| r.status == 200)
    });
}

fn wait_until_with(guard: &mut ChildGuard, what: &str, mut cond: impl FnMut(&ChildGuard) -> bool) {
    wait_for(TOOL_START_TIMEOUT, what, || {
        guard.assert_running();
        cond(&*guard).then_some(())
    });
}

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

// ---------------------------------------------------------------------------------------
// Background traffic
// ---------------------------------------------------------------------------------------

/// Client threads sending requests to the workers until stopped: one on a keep-alive
/// connection (`/`, `/pid`), one sending `/slow?ms=50` on new connections, so scrapes see
/// requests in flight. Stopped and joined on drop.
#[derive(Debug)]
pub struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// Starts the client threads against 127.0.0.1:`port`.
    pub fn start(port: u16) -> Self {
        let mut t = Self {
            stop: Arc::new(AtomicBool::new(false)),
            sent: Arc::new(AtomicU64::new(0)),
            errors: Arc::new(Mutex::new(Vec::new())),
            threads: Vec::new(),
        };
        t.spawn(port, false);
        t.spawn(port, true);
        t
    }

    fn spawn(&mut self, port: u16, slow: bool) {
        let (stop, sent, errors) = (self.stop.clone(), self.sent.clone(), self.errors.clone());
        self.threads.push(std::thread::spawn(move || {
            let mut conn: Option<Http> = None;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let result = if slow {
                    super::get(port, "/slow?ms=50")
                } else {
                    let path = if n % 3 == 0 { "/pid" } else { "/" };
                    let c = match conn.take() {
                        Some(c) => Ok(c),
                        None => Http::connect(port),
                    };
                    c.and_then(|mut c| {
                        let r = c.get(path);
                        conn = Some(c);
                        r
                    })
                };
                n += 1;
                match result {
                    Ok(r) if r.status == 200 => {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => errors.lock().unwrap().push(format!("status {}", r.status)),
                    Err(e) => {
                        conn = None;
                        errors.lock().unwrap().push(e.to_string());
                    }
                }
            }
            if let Some(c) = conn {
                c.close();
            }
        }));
    }

    /// Requests answered 200 so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Errors seen so far.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// Stops and joins the threads; returns how many requests were answered 200.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.sent()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Closes the write side of `s` (a half-close), ignoring errors.
pub fn half_close(s: &TcpStream) {
    let _ = s.shutdown(Shutdown::Write);
}

// ---------------------------------------------------------------------------------------
// Custom metrics through the demo worker's routes
// ---------------------------------------------------------------------------------------

/// Longest wait for one keep-alive connection to each wanted worker slot.
pub const SPREAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections held open at most while looking for the wanted slots (each worker's table
/// shows 64; the fairness rule makes a loaded worker yield long before that).
const SPREAD_MAX_SPARE: usize = 120;

/// Sends `GET target` on `c` and returns the response; panics on an I/O error.
pub fn call(c: &mut Http, target: &str) -> Response {
    c.get(target)
        .unwrap_or_else(|e| panic!("GET {target} on a keep-alive connection: {e}"))
}

/// Sends `GET target` on `c`; panics unless it answers 200. Returns the body.
pub fn call_ok(c: &mut Http, target: &str) -> String {
    let r = call(c, target);
    assert_eq!(r.status, 200, "GET {target}: {}", r.text());
    r.text()
}

/// The worker slot `c` reached (`GET /slot`).
pub fn slot_of(c: &mut Http) -> usize {
    let body = call_ok(c, "/slot");
    body.trim()
        .parse()
        .unwrap_or_else(|_| panic!("/slot answered {body:?}"))
}

/// Opens keep-alive connections to the workers on `port`, all held open at once so the
/// workers' fairness rule spreads them, until it holds one to each slot of `slots`. Returns
/// those connections by slot; the spare ones are closed. Panics after [`SPREAD_TIMEOUT`].
pub fn conns_by_slot(port: u16, slots: &[usize]) -> BTreeMap<usize, Http> {
    let deadline = std::time::Instant::now() + SPREAD_TIMEOUT;
    let mut held: BTreeMap<usize, Http> = BTreeMap::new();
    let mut spare: Vec<Http> = Vec::new();
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    while slots.iter().any(|s| !held.contains_key(s)) {
        assert!(
            std::time::Instant::now() < deadline,
            "no connection reached slots {slots:?} in {SPREAD_TIMEOUT:?} (connections per \
             slot: {seen:?})"
        );
        if spare.len() >= SPREAD_MAX_SPARE {
            // Start over: the workers saw the burst end and compare afresh.
            for c in spare.drain(..) {
                c.close();
            }
            std::thread::sleep(super::POLL_INTERVAL);
        }
        let mut c = Http::connect(port).expect("connect to the workers");
        let slot = slot_of(&mut c);
        *seen.entry(slot).or_default() += 1;
        if slots.contains(&slot) && !held.contains_key(&slot) {
            held.insert(slot, c);
        } else {
            spare.push(c);
        }
    }
    for c in spare {
        c.close();
    }
    held
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

/// Waits until `slot` has a Ready worker other than `old_pid`; returns its pid.
pub fn wait_respawn(cluster: &Cluster, slot: usize, old_pid: u32) -> u32 {
    wait_for(
        super::START_TIMEOUT,
        &format!("slot {slot} respawned and ready"),
        || {
            let s = cluster.snapshot().slots[slot].clone();
            let ok = s.pid != old_pid
                && s.pid != 0
                && s.state == flora_cluster::scoreboard::SlotState::Ready
                && super::pid_alive(s.pid);
            ok.then_some(s.pid)
        },
    )
}

// ---------------------------------------------------------------------------------------
// Prometheus with alerting rules, and its JSON API (tests/dashboards.rs)
// ---------------------------------------------------------------------------------------

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
