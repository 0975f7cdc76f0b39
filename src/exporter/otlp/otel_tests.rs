//! Unit tests of the conventional names (`--otlp-names otel`).
use super::*;
use crate::exporter::family::Families;
use crate::scoreboard::{Scoreboard, SlotState, HISTOGRAM_BOUNDS};

const NOW: u64 = 1_800_000_000_123_456_789;

/// Two ready workers (route metrics on, at most 2 routes): worker 0 served `/a/{id}` twice
/// (200, 404) and `/b` once, worker 1 served `/c` (the overflow route) and one request with
/// no route; worker 1 has one request in flight.
fn doc() -> StatusDoc {
    let dir = tempfile::tempdir().expect("tempdir");
    let sb = Scoreboard::create_with_routes(&dir.path().join("s"), "web", 2, 2).expect("create");
    for i in 0..2 {
        sb.slot_spawned(i, 4100 + i as u32, 1);
        sb.writer(i).expect("writer").set_state(SlotState::Ready);
    }
    let c0 = sb
        .writer(0)
        .expect("w0")
        .conn_open(([127, 0, 0, 1], 1).into());
    for (route, status) in [("/a/{id}", 200), ("/a/{id}", 404), ("/b", 200)] {
        let mut req = c0.request_begin("GET", "/x", 11);
        req.set_route(route);
        req.finish(status, 0);
    }
    let c1 = sb
        .writer(1)
        .expect("w1")
        .conn_open(([127, 0, 0, 1], 2).into());
    let mut req = c1.request_begin("POST", "/c", 20);
    req.set_route("/c");
    req.finish(500, 0);
    c1.request_begin("GET", "/none", 11).finish(404, 0);
    let _open = c1.request_begin("GET", "/slow", 11);
    StatusDoc::build_with(sb.snapshot(), |_| None)
}

fn attrs(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                other => panic!("not a string: {other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn pairs(want: &[(&str, &str)]) -> Vec<(String, String)> {
    want.iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn metric<'a>(req: &'a ExportMetricsServiceRequest, name: &str) -> &'a Metric {
    let ms = &req.resource_metrics[0].scope_metrics[0].metrics;
    let found: Vec<_> = ms.iter().filter(|m| m.name == name).collect();
    assert_eq!(found.len(), 1, "{name} once");
    found[0]
}

#[test]
fn request_duration_is_a_cumulative_histogram_in_seconds_per_route() {
    let doc = doc();
    let req = encode_otel_families(&Families::of(&doc), &[], NOW, "https");
    let m = metric(&req, REQUEST_DURATION);
    assert_eq!(m.unit, "s");
    let Some(Data::Histogram(h)) = &m.data else {
        panic!("not a histogram: {m:?}")
    };
    assert_eq!(
        h.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    let by: Vec<_> = h
        .data_points
        .iter()
        .map(|p| (attrs(&p.attributes), p.count))
        .collect();
    // Routes that fit get `http.route`; the overflow route and the request without a route
    // make one point without it. No method, status code or protocol version: not recorded
    // with the durations.
    assert_eq!(
        by,
        vec![
            (
                pairs(&[("url.scheme", "https"), ("http.route", "/a/{id}")]),
                2
            ),
            (pairs(&[("url.scheme", "https"), ("http.route", "/b")]), 1),
            (pairs(&[("url.scheme", "https")]), 2),
        ]
    );
    for p in &h.data_points {
        assert_eq!(p.explicit_bounds, HISTOGRAM_BOUNDS.to_vec());
        assert!(
            p.explicit_bounds.iter().all(|b| *b > 0.0 && *b <= 60.0),
            "seconds"
        );
        assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
        assert_eq!(p.start_time_unix_nano, doc.started_unix_ms * 1_000_000);
        assert_eq!(p.time_unix_nano, NOW);
        assert!(p.sum.is_some_and(|s| s >= 0.0));
    }
}

#[test]
fn active_requests_is_a_non_monotonic_sum_of_every_worker() {
    let doc = doc();
    let req = encode_otel_families(&Families::of(&doc), &[], NOW, "http");
    let m = metric(&req, ACTIVE_REQUESTS);
    assert_eq!(m.unit, "{request}");
    let Some(Data::Sum(s)) = &m.data else {
        panic!("not a sum: {m:?}")
    };
    assert!(!s.is_monotonic);
    assert_eq!(
        s.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    assert_eq!(s.data_points.len(), 1);
    let p = &s.data_points[0];
    assert_eq!(attrs(&p.attributes), pairs(&[("url.scheme", "http")]));
    assert_eq!(p.value, Some(Value::AsInt(1)));
}

#[test]
fn the_prometheus_names_are_still_sent() {
    let doc = doc();
    let families = Families::of(&doc);
    let plain = encode_families(&families, &[], NOW);
    let otel = encode_otel_families(&families, &[], NOW, "http");
    let names = |r: &ExportMetricsServiceRequest| -> Vec<String> {
        r.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .map(|m| m.name.clone())
            .collect()
    };
    let mut want = vec![REQUEST_DURATION.to_string(), ACTIVE_REQUESTS.to_string()];
    want.extend(names(&plain));
    assert_eq!(names(&otel), want);
    assert!(!names(&plain).iter().any(|n| n.starts_with("http.")));
}

#[test]
fn without_route_metrics_one_point_has_every_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sb = Scoreboard::create(&dir.path().join("s"), "web", 1).expect("create");
    sb.slot_spawned(0, 4100, 1);
    let c = sb
        .writer(0)
        .expect("w")
        .conn_open(([127, 0, 0, 1], 1).into());
    for status in [200, 404, 500] {
        c.request_begin("GET", "/", 11).finish(status, 0);
    }
    let doc = StatusDoc::build_with(sb.snapshot(), |_| None);
    let req = encode_otel_families(&Families::of(&doc), &[], NOW, "http");
    let Some(Data::Histogram(h)) = &metric(&req, REQUEST_DURATION).data else {
        panic!("not a histogram")
    };
    assert_eq!(h.data_points.len(), 1);
    assert_eq!(h.data_points[0].count, 3);
    assert_eq!(
        attrs(&h.data_points[0].attributes),
        pairs(&[("url.scheme", "http")])
    );
}

#[test]
fn resource_gets_the_conventional_attributes_unless_set() {
    let mut r = vec![("process.pid".to_string(), "1".to_string())];
    otel::add_resource(&mut r);
    let keys: Vec<_> = r.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "process.pid",
            "telemetry.sdk.name",
            "telemetry.sdk.language",
            "telemetry.sdk.version"
        ]
    );
    assert_eq!(r[0].1, "1", "a value set by hand wins");
}

#[test]
fn names_come_from_the_config() {
    let cfg = Config {
        otlp_endpoint: Some("http://127.0.0.1:4318/v1/metrics".into()),
        otlp_names: OtlpNames::Otel,
        ..Config::default()
    };
    let o = OtlpConfig::from_config(&cfg).expect("endpoint");
    assert_eq!((o.names, o.scheme), (OtlpNames::Otel, "http"));
    let pid = std::process::id().to_string();
    assert!(o.resource.contains(&("process.pid".to_string(), pid)));
    let o = OtlpConfig::from_config(&Config {
        otlp_names: OtlpNames::Prometheus,
        tls_cert: Some("c.pem".into()),
        tls_key: Some("k.pem".into()),
        ..cfg
    })
    .expect("endpoint");
    assert_eq!((o.names, o.scheme), (OtlpNames::Prometheus, "https"));
    assert!(!o.resource.iter().any(|(k, _)| k == "process.pid"));
}
