//! The HTML status page end to end: a real two-worker cluster with requests in flight, the
//! page fetched from the master's status server over plain HTTP, then rendered by real
//! headless Chromium (a screenshot and the DOM). Hostile request paths must come out escaped.
//!
//! Chromium is required: a missing `/usr/bin/chromium` fails the test with a message naming
//! scripts/test.sh, which installs it. The screenshot is kept as
//! `target/test-artifacts/status-page.png`.

mod support;

use support::chromium;
use support::{free_port, get, wait_until, Cluster, Http, TestDir, START_TIMEOUT};

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
    chromium::run(&dir.scratch(""), "shot", &mode, url);
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(png.starts_with(PNG_MAGIC), "not a PNG");
    assert!(png.len() > MIN_SCREENSHOT_BYTES, "{} bytes", png.len());
    std::fs::write(chromium::artifact("status-page.png"), &png).expect("save the screenshot");

    let dom = chromium::run(&dir.scratch(""), "dom", "--dump-dom", url);
    assert!(dom.contains("<table id=\"workers\">"), "{dom}");
    for pid in pids {
        let cell = format!(">{pid}<");
        assert!(dom.contains(&cell), "worker {pid} not in the DOM");
    }
    assert!(!dom.to_ascii_lowercase().contains("<script"), "{dom}");
}

#[test]
fn status_page_is_escaped_and_renders_in_chromium() {
    chromium::require();
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
