//! The HTML status page end to end: a real two-worker cluster with requests in flight, the
//! page fetched from the master's status server over plain HTTP, then rendered by real
//! headless Chromium (a screenshot and the DOM). Hostile request paths must come out escaped.
//!
//! Chromium is required: a missing `/usr/bin/chromium` fails the test with a message naming
//! scripts/test.sh, which installs it. The screenshot is kept as
//! `target/test-artifacts/status-page.png`.

mod support;

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use support::{
    free_port, get, kill_and_reap, wait_child, wait_until, Cluster, Http, TestDir, START_TIMEOUT,
};

/// The browser, as the Debian package installs it.
const CHROMIUM: &str = "/usr/bin/chromium";
/// Longest one headless Chromium run may take: a cold start on a busy 2-core machine takes a
/// few seconds, so this only catches a hung browser (it is then killed and reaped).
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for Chromium's helper processes to exit after the browser did.
const HELPERS_EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// A request that stays in flight long enough for every check below.
const SLOW: &str = "/slow?ms=8000";
/// A PNG file starts with these bytes.
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
/// A rendered page is far larger than this; a blank or error page is smaller.
const MIN_SCREENSHOT_BYTES: usize = 10 * 1024;

/// Paths a client may send. Hyper rejects raw `<` and `>` with 400 (then nothing is
/// recorded); the percent-encoded form is recorded as sent; quotes and `&` pass raw.
const HOSTILE_PATHS: [&str; 3] = [
    "/<script>x</script>",
    "/%3Cscript%3Ealert(1)%3C/script%3E",
    "/x\"onmouseover='alert(1)'&y",
];

/// The test's own HTML escaping, independent of the crate's.
fn escaped(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The port of the master's status server.
fn status_port(cluster: &Cluster) -> u16 {
    let url = cluster.status_url();
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in status url {url}"))
}

/// `GET target` on the status server; asserts a 200 HTML answer and returns its body.
fn page(status_port: u16, target: &str) -> String {
    let resp = get(status_port, target).unwrap_or_else(|e| panic!("GET {target}: {e}"));
    assert_eq!(resp.status, 200, "GET {target}: {}", resp.text());
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("text/html"),
        "GET {target}: content-type {ct:?}"
    );
    let body = resp.text();
    assert!(!body.to_ascii_lowercase().contains("<script"), "{body}");
    body
}

/// Whether some slot's last finished request has exactly `path`.
fn last_paths_contain(cluster: &Cluster, path: &str) -> bool {
    cluster
        .snapshot()
        .slots
        .iter()
        .any(|s| s.last_request.as_ref().is_some_and(|l| l.path == path))
}

/// Sends `path` to the workers. If a worker recorded it, the page must show it escaped and
/// never raw. Returns whether it was recorded.
fn probe(cluster: &Cluster, status: u16, path: &str) -> bool {
    let mut c = Http::connect(cluster.port).expect("connect to the workers");
    c.send_get(path).expect("send the probe");
    // Hyper may answer 400 to a malformed target, or just close the connection.
    let answered = c.read_response().map(|r| r.status).unwrap_or(0);
    c.close();
    if answered != 200 {
        assert!(
            !last_paths_contain(cluster, path),
            "{path} answered {answered}"
        );
        return false;
    }
    wait_until(START_TIMEOUT, &format!("{path} recorded"), || {
        last_paths_contain(cluster, path)
    });
    let body = page(status, "/server-status");
    assert!(body.contains(&escaped(path)), "{path} not shown escaped");
    if escaped(path) != path {
        assert!(!body.contains(path), "{path} shown raw");
    }
    true
}

/// Connections whose in-flight request carries the demo's `sleep_ms` info.
fn sleeping_requests(cluster: &Cluster) -> usize {
    let snap = cluster.snapshot();
    let conns = snap.slots.iter().flat_map(|s| &s.connections);
    conns
        .filter_map(|c| c.request.as_ref())
        .filter(|r| r.infos.iter().any(|(k, _)| k == "sleep_ms"))
        .count()
}

/// Pids of the processes in process group `pgid` (field 5 of `/proc/PID/stat`).
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pgrp = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 1..];
        rest.split_whitespace().nth(2)?.parse().ok()
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pgrp(pid) == Some(pgid) && support::proc_state(pid) != Some('Z'))
        .collect()
}

/// Runs headless Chromium on `url` with `mode` (`--screenshot=…` or `--dump-dom`), in its own
/// process group with a fresh profile under `scratch`; returns its stdout. A run over
/// [`CHROMIUM_TIMEOUT`] is killed (the whole group) and reaped, and fails the test.
fn chromium(scratch: &Path, tag: &str, mode: &str, url: &str) -> String {
    require_chromium();
    let profile = scratch.join(format!("chromium-profile-{tag}"));
    let (out, err) = (
        scratch.join(format!("chromium-{tag}.out")),
        scratch.join(format!("chromium-{tag}.err")),
    );
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
        ])
        .args(["--no-first-run", "--disable-background-networking"])
        .args(["--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--window-size=1280,1000", mode, url])
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("chromium stdout file"))
        .stderr(File::create(&err).expect("chromium stderr file"))
        .process_group(0)
        .spawn()
        .expect("spawn chromium");
    let pgid = child.id();
    let log = || std::fs::read_to_string(&err).unwrap_or_default();
    let Some(status) = wait_child(&mut child, CHROMIUM_TIMEOUT) else {
        // The leader still runs, so the group id is still ours: end the browser and helpers.
        let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
        kill_and_reap(&mut child);
        panic!(
            "chromium {mode} did not finish in {CHROMIUM_TIMEOUT:?}:\n{}",
            log()
        );
    };
    wait_until(HELPERS_EXIT_TIMEOUT, "chromium helpers to exit", || {
        group_members(pgid).is_empty()
    });
    assert!(status.success(), "chromium {mode}: {status}\n{}", log());
    std::fs::read_to_string(&out).expect("chromium stdout")
}

/// `target/test-artifacts/NAME` (the directory is created).
fn artifact(name: &str) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir above CARGO_TARGET_TMPDIR");
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir.join(name)
}

/// Fails unless the browser is installed.
fn require_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: scripts/test.sh installs it (Debian package `chromium`)"
    );
}

/// Sends [`SLOW`] on two keep-alive connections without reading the answers, and waits until
/// both requests are in flight with their `sleep_ms` info.
fn hold_slow_requests(cluster: &Cluster) -> Vec<Http> {
    let held = (0..2)
        .map(|_| {
            let mut c = Http::connect(cluster.port).expect("connect");
            c.send_get(SLOW).expect("send the slow request");
            c
        })
        .collect();
    wait_until(START_TIMEOUT, "2 slow requests with sleep_ms", || {
        sleeping_requests(cluster) == 2
    });
    held
}

/// The page over plain HTTP: both workers, the in-flight requests with their info, and the
/// refresh meta only when asked for.
fn check_page_over_http(status: u16, pids: &[u32]) {
    let body = page(status, "/server-status");
    for pid in pids {
        assert!(body.contains(&format!(">{pid}<")), "worker {pid} missing");
    }
    assert!(
        body.contains("sleep_ms") && body.contains("/slow"),
        "{body}"
    );
    assert!(!body.contains("http-equiv=\"refresh\""));
    let refreshing = page(status, "/server-status?refresh=5");
    assert!(refreshing.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
}

/// The page in Chromium: a non-trivial PNG screenshot (kept as an artifact) and a DOM with
/// the worker table and no script.
fn check_page_in_chromium(dir: &TestDir, url: &str, pids: &[u32]) {
    let shot = dir.scratch("status-page.png");
    let mode = format!("--screenshot={}", shot.display());
    chromium(&dir.scratch(""), "shot", &mode, url);
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(png.starts_with(PNG_MAGIC), "not a PNG");
    assert!(png.len() > MIN_SCREENSHOT_BYTES, "{} bytes", png.len());
    std::fs::write(artifact("status-page.png"), &png).expect("save the screenshot");

    let dom = chromium(&dir.scratch(""), "dom", "--dump-dom", url);
    assert!(dom.contains("<table id=\"workers\">"), "{dom}");
    for pid in pids {
        let cell = format!(">{pid}<");
        assert!(dom.contains(&cell), "worker {pid} not in the DOM");
    }
    assert!(!dom.to_ascii_lowercase().contains("<script"), "{dom}");
}

#[test]
fn status_page_is_escaped_and_renders_in_chromium() {
    require_chromium();
    let dir = TestDir::new("statuspage");
    let port = free_port();
    let cluster = dir.start(port, 2, &[]);
    let pids = cluster.wait_ready(2);
    let status = status_port(&cluster);
    for path in ["/", "/pid", "/", "/hello/world"] {
        assert_eq!(get(port, path).expect(path).status, 200, "{path}");
    }
    let recorded: Vec<&str> = HOSTILE_PATHS
        .into_iter()
        .filter(|p| probe(&cluster, status, p))
        .collect();
    assert!(!recorded.is_empty(), "no hostile path was recorded");
    eprintln!("hostile paths recorded and shown escaped: {recorded:?}");

    let held = hold_slow_requests(&cluster);
    check_page_over_http(status, &pids);
    let url = format!("http://127.0.0.1:{status}/server-status");
    check_page_in_chromium(&dir, &url, &pids);
    for c in held {
        c.close();
    }
}
