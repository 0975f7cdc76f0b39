//! `/metrics` asked for with Prometheus' `Accept` header answers OpenMetrics 1.0 that the
//! reference parser (Python `prometheus_client`) accepts, with the right family types.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::status_server;
use support::status_server::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_ACCEPT};
use support::tools::{self, OmFamily};
use support::workers::Traffic;
use support::{wait_until, TestDir};

/// Requests the traffic must have answered before the scrape (so histograms have data).
const WARMUP: u64 = 30;
/// Longest wait for the warm-up.
const WARMUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Families as OpenMetrics names them (counters without `_total`) and their types. The info
/// metric may be a gauge `flora_worker_info` or an OpenMetrics info `flora_worker`.
const FAMILIES: &[(&str, &str)] = &[
    ("flora_http_requests", "counter"),
    ("flora_http_requests_in_flight", "gauge"),
    ("flora_http_request_duration_seconds", "histogram"),
    ("flora_http_received_bytes", "counter"),
    ("flora_http_sent_bytes", "counter"),
    ("flora_connections_open", "gauge"),
    ("flora_connections", "counter"),
    ("flora_workers", "gauge"),
    ("flora_worker_restarts", "counter"),
    ("flora_reloads", "counter"),
    ("flora_generation", "gauge"),
    ("flora_start_time_seconds", "gauge"),
    ("process_cpu_seconds", "counter"),
    ("process_resident_memory_bytes", "gauge"),
];

fn normalized(ct: &str) -> String {
    ct.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

fn check_types(families: &[OmFamily], text: &str) {
    let types: BTreeMap<&str, &str> = families
        .iter()
        .map(|f| (f.name.as_str(), f.typ.as_str()))
        .collect();
    for (name, typ) in FAMILIES {
        assert_eq!(
            types.get(name),
            Some(typ),
            "family {name} as the OpenMetrics parser sees it; all: {types:?}\n{text}"
        );
    }
    let info = [("flora_worker_info", "gauge"), ("flora_worker", "info")];
    assert!(
        info.iter().any(|(n, t)| types.get(n) == Some(t)),
        "no flora_worker_info gauge nor flora_worker info family: {types:?}\n{text}"
    );
}

fn check_samples(families: &[OmFamily], text: &str) {
    let requests = families
        .iter()
        .find(|f| f.name == "flora_http_requests")
        .expect("flora_http_requests");
    let total: f64 = requests
        .samples
        .iter()
        .filter(|s| s.name == "flora_http_requests_total")
        .map(|s| s.value)
        .sum();
    assert!(total >= WARMUP as f64, "requests counted: {total}\n{text}");
    let hist = families
        .iter()
        .find(|f| f.name == "flora_http_request_duration_seconds")
        .expect("histogram");
    assert!(
        hist.samples
            .iter()
            .any(|s| s.labels.get("le").is_some_and(|le| le == "+Inf")),
        "histogram without a +Inf bucket\n{text}"
    );
}

#[test]
fn openmetrics_is_negotiated_and_parses_with_the_reference_parser() {
    tools::python_with_prometheus_client();
    let dir = TestDir::new("exp-om");
    let cluster = dir.start(support::free_port(), 2, &[]);
    cluster.wait_ready(2);
    let status = status_server::status_port(&cluster);
    let traffic = Traffic::start(cluster.port);
    wait_until(WARMUP_TIMEOUT, "traffic warm-up", || {
        traffic.sent() >= WARMUP
    });

    let s = status_server::scrape(status, Some(PROMETHEUS_ACCEPT));
    let ct = s.resp.header("content-type").unwrap_or("<none>");
    assert_eq!(
        normalized(ct),
        normalized(OPENMETRICS_CONTENT_TYPE),
        "Content-Type"
    );
    assert!(
        s.text.ends_with("# EOF\n"),
        "does not end with `# EOF\\n`:\n{}",
        s.text
    );
    assert_eq!(s.text.matches("# EOF").count(), 1, "# EOF more than once");
    let dups = s.expo.duplicate_series();
    assert!(dups.is_empty(), "duplicated series {dups:?}\n{}", s.text);

    let families = tools::parse_openmetrics_with_python(&s.text).unwrap_or_else(|e| {
        panic!(
            "prometheus_client rejects the OpenMetrics text:\n{e}\n----- scrape -----\n{}",
            s.text
        )
    });
    check_types(&families, &s.text);
    check_samples(&families, &s.text);

    // Without that Accept header the same path answers the 0.0.4 text format.
    let plain = status_server::scrape(status, None);
    let ct = plain.resp.header("content-type").unwrap_or("<none>");
    assert_eq!(normalized(ct), normalized(status_server::TEXT_CONTENT_TYPE));
    assert!(!plain.text.contains("# EOF"), "text format with # EOF");
    let errors = traffic.errors();
    traffic.stop();
    assert!(errors.is_empty(), "the traffic saw errors: {errors:?}");
}
