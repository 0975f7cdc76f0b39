//! Per-route metrics stay capped: a scanner sending thousands of distinct paths to an app
//! that names routes by raw path fills the cluster's route table, and everything past it
//! counts as `route="other"` (and in `flora_http_route_overflow_total`); the exposition stays
//! promtool-clean and the routes show on the status page and in JSON.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::http::Http;
use support::status_server;
use support::tools::{self, Lints};
use support::{http, TestDir};

/// The cluster's route cap in this test.
const LIMIT: usize = 16;
/// Distinct raw paths the scanner sends.
const SCANNED: u64 = 2000;
/// Keep-alive connections the scanner spreads them over.
const CONNS: u64 = 4;
/// Longest wait for answered requests to show in the counters.
const COUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `n` requests to distinct `/route/…` paths from connection `c` (paths `c`, `c + CONNS`…).
fn scan(port: u16, c: u64) {
    let mut http = Http::connect(port).expect("connect");
    for i in (c..SCANNED).step_by(CONNS as usize) {
        let r = http.get(&format!("/route/scan-{i}")).expect("GET");
        assert_eq!(r.status, 200);
    }
    http.close();
}

#[test]
fn routes_stay_capped_under_a_scan() {
    let dir = TestDir::new("routes");
    let limit = LIMIT.to_string();
    let args = ["--workers", "2", "--route-metrics", "--route-limit", &limit];
    let cluster = dir.start_with(support::free_port(), &args, &[]);
    cluster.wait_ready(2);
    let status = status_server::status_port(&cluster);
    for _ in 0..3 {
        assert_eq!(
            http::get(cluster.port, "/code/404").expect("GET").status,
            404
        );
    }
    let scanners: Vec<_> = (0..CONNS)
        .map(|c| {
            let port = cluster.port;
            std::thread::spawn(move || scan(port, c))
        })
        .collect();
    for s in scanners {
        s.join().expect("scanner");
    }
    let want = SCANNED + 3;
    let s = support::poll(COUNT_TIMEOUT, "every routed request counted", || {
        let s = status_server::scrape(status, None);
        let n = s.expo.sum("flora_http_route_requests_total");
        (n == want as f64).then_some(s.clone()).ok_or(s.text)
    });
    tools::assert_promtool(&s.text, Lints::None, "route metrics");
    let dups = s.expo.duplicate_series();
    assert!(dups.is_empty(), "duplicated series {dups:?}");

    let routes: BTreeSet<String> = s
        .expo
        .named("flora_http_route_requests_total")
        .filter_map(|x| x.labels.get("route").cloned())
        .collect();
    assert!(routes.contains("other"), "{routes:?}");
    assert!(routes.contains("/code/{n}"), "{routes:?}");
    assert_eq!(routes.len(), LIMIT + 1, "the cap plus other: {routes:?}");
    let other = s
        .expo
        .value(
            "flora_http_route_requests_total",
            &[("route", "other"), ("code", "200")],
        )
        .expect("other");
    // `/code/{n}` took one entry, the first LIMIT - 1 scanned paths the rest.
    let fitted = (LIMIT - 1) as f64;
    assert_eq!(other, SCANNED as f64 - fitted, "{}", s.text);
    assert_eq!(s.expo.sum("flora_http_route_overflow_total"), other);
    let not_found = s.expo.value(
        "flora_http_route_requests_total",
        &[("route", "/code/{n}"), ("code", "404")],
    );
    assert_eq!(not_found, Some(3.0));
    // The same through the OpenMetrics reference parser.
    tools::python_with_prometheus_client();
    let om = status_server::scrape(status, Some(status_server::PROMETHEUS_ACCEPT));
    let families = tools::parse_openmetrics_with_python(&om.text).expect("OpenMetrics parses");
    let om_routes: BTreeSet<String> = families
        .iter()
        .filter(|f| f.name == "flora_http_route_requests")
        .flat_map(|f| {
            f.samples
                .iter()
                .filter_map(|x| x.labels.get("route").cloned())
        })
        .collect();
    assert_eq!(om_routes, routes, "{}", om.text);
    let histograms: BTreeSet<String> = s
        .expo
        .named("flora_http_route_request_duration_seconds_count")
        .filter_map(|x| x.labels.get("route").cloned())
        .collect();
    assert_eq!(histograms, routes, "one histogram per route");

    // JSON: the routes, and the last request's route beside its path.
    let json = http::get_json(status, "/server-status.json");
    assert_eq!(json["route_limit"], LIMIT);
    let listed = json["routes"].as_array().expect("routes").len();
    assert_eq!(listed, LIMIT + 1);
    let lasts: Vec<&str> = json["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter_map(|w| w["last_request"]["route"].as_str())
        .collect();
    assert!(
        lasts.iter().any(|r| r.starts_with("/route/scan-")),
        "{lasts:?}"
    );

    // The status page shows an in-flight request's route next to its path.
    let mut held = Http::connect(cluster.port).expect("connect");
    held.send_get("/info?ms=3000").expect("send");
    let page = support::poll(COUNT_TIMEOUT, "the in-flight request on the page", || {
        let page = http::get(status, "/server-status").expect("page").text();
        let shown = page.contains("<code class=\"path\">/info</code> <code class=\"route\"");
        shown.then_some(page.clone()).ok_or(page)
    });
    assert!(page.contains("title=\"route\">/info</code>"));
    let done = held.read_response().expect("answer");
    assert_eq!(done.status, 200);
}
