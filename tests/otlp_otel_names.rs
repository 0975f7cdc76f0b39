//! `--otlp-names otel`: the push to a real OTLP receiver (tests/support/otlp_receiver.py, the
//! official protobuf definitions) carries `http.server.request.duration` (seconds, cumulative,
//! one point per route template and one for requests outside any) and
//! `http.server.active_requests` (`{request}`, a non-monotonic sum) with only the attributes
//! the scoreboard records, the conventional resource attributes, and still every
//! Prometheus-named metric; without the flag no conventional name is sent.

mod support;

use std::collections::BTreeMap;

use flora_cluster::scoreboard::HISTOGRAM_BOUNDS;
use serde_json::Value;
use support::otlp::{metric, points, resource, total, Receiver};
use support::{workers, Cluster, TestDir};

/// Requests to `/` (route `/`; odd, so an off-by-one cannot hide).
const OK: u64 = 7;
/// Requests to `/code/404` and `/code/500` (route `/code/{n}`).
const CODES: [u16; 3] = [404, 500, 500];
/// Requests to a path with no route (the demo answers them as `/`, without a route).
const NO_ROUTE: u64 = 2;

fn start(dir: &TestDir, rx: &Receiver, extra: &[&str]) -> Cluster {
    let endpoint = rx.endpoint();
    let mut args = vec![
        "--workers",
        "2",
        "--otlp-endpoint",
        &endpoint,
        "--otlp-interval",
        "0.5",
    ];
    args.extend_from_slice(extra);
    let cluster = dir.start_with(support::free_port(), &args, &[]);
    cluster.wait_ready(2);
    cluster
}

/// The last export whose `flora_http_requests_total` sums to `want`.
fn export_with_requests(rx: &mut Receiver, want: u64) -> Value {
    let what = format!("an export with sum(flora_http_requests_total) == {want}");
    rx.wait_export(&what, |e| {
        let n = metric(e, "flora_http_requests_total").map_or(0.0, total);
        assert!(n <= want as f64, "{n} requests pushed, {want} sent");
        (n == want as f64)
            .then(|| e.clone())
            .ok_or(format!("{n} requests in the last export"))
    })
}

fn attrs(p: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(p["attributes"].clone()).unwrap_or_else(|e| panic!("{e}: {p}"))
}

#[test]
fn otel_names_carry_the_conventional_names_units_and_attributes() {
    let dir = TestDir::new("otlp-otel");
    let mut rx = Receiver::start(&dir, 200);
    let cluster = start(&dir, &rx, &["--otlp-names", "otel", "--route-metrics"]);
    workers::send_requests(cluster.port, OK);
    for code in CODES {
        let r = support::get(cluster.port, &format!("/code/{code}")).expect("GET /code");
        assert_eq!(r.status, code, "{}", r.text());
    }
    for _ in 0..NO_ROUTE {
        let r = support::get(cluster.port, "/no/such/route").expect("GET");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let sent = OK + CODES.len() as u64 + NO_ROUTE;
    let e = export_with_requests(&mut rx, sent);

    let d = metric(&e, "http.server.request.duration").expect("http.server.request.duration");
    assert_eq!(
        (&d["type"], &d["unit"], &d["temporality"]),
        (&"histogram".into(), &"s".into(), &"cumulative".into()),
        "{d}"
    );
    let mut by_route = BTreeMap::new();
    for p in points(d) {
        let bounds: Vec<f64> = serde_json::from_value(p["explicit_bounds"].clone()).expect("b");
        assert_eq!(bounds, HISTOGRAM_BOUNDS, "bounds in seconds: {d}");
        let counts: Vec<u64> = serde_json::from_value(p["bucket_counts"].clone()).expect("c");
        assert_eq!(p["count"].as_u64(), Some(counts.iter().sum()), "{p}");
        let mut a = attrs(p);
        assert_eq!(a.remove("url.scheme").as_deref(), Some("http"), "{p}");
        // Nothing the scoreboard does not record with durations (method, status, version).
        let route = a.remove("http.route");
        assert!(a.is_empty(), "unexpected attributes {a:?}: {p}");
        let before = by_route.insert(route, p["count"].as_u64().expect("count"));
        assert!(before.is_none(), "two points for one route: {d}");
    }
    let want = BTreeMap::from([
        (Some("/".to_string()), OK),
        (Some("/code/{n}".to_string()), CODES.len() as u64),
        (None, NO_ROUTE),
    ]);
    assert_eq!(by_route, want, "{d}");
    assert_eq!(by_route.values().sum::<u64>(), sent);

    let a = metric(&e, "http.server.active_requests").expect("http.server.active_requests");
    assert_eq!(
        (
            &a["type"],
            &a["unit"],
            &a["temporality"],
            &a["is_monotonic"]
        ),
        (
            &"sum".into(),
            &"{request}".into(),
            &"cumulative".into(),
            &false.into()
        ),
        "{a}"
    );
    let ps = points(a);
    assert_eq!(ps.len(), 1, "{a}");
    assert_eq!(ps[0]["value_type"], "as_int", "{a}");
    assert_eq!(ps[0]["value"], 0, "no request in flight: {a}");
    let scheme = BTreeMap::from([("url.scheme".to_string(), "http".to_string())]);
    assert_eq!(attrs(&ps[0]), scheme, "{a}");

    let r = &resource(&e)["attributes"];
    assert_eq!(r["service.name"], dir.name.as_str(), "{r}");
    assert!(r["service.instance.id"].is_string(), "{r}");
    assert_eq!(r["process.pid"], cluster.pid.to_string(), "{r}");
    assert_eq!(r["telemetry.sdk.language"], "rust", "{r}");
    assert_eq!(r["telemetry.sdk.name"], "flora-cluster", "{r}");

    // The Prometheus names are still sent beside them.
    for name in [
        "flora_http_request_duration_seconds",
        "flora_http_requests_in_flight",
        "flora_http_route_requests_total",
    ] {
        assert!(metric(&e, name).is_some(), "{name} not pushed");
    }
}

#[test]
fn default_names_are_the_prometheus_ones() {
    let dir = TestDir::new("otlp-prom-names");
    let mut rx = Receiver::start(&dir, 200);
    let cluster = start(&dir, &rx, &[]);
    workers::send_requests(cluster.port, 3);
    let e = export_with_requests(&mut rx, 3);
    let names: Vec<&str> = resource(&e)["scopes"][0]["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(
        names.contains(&"flora_http_request_duration_seconds"),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("http.")), "{names:?}");
    assert!(resource(&e)["attributes"].get("process.pid").is_none());
}
