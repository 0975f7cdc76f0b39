//! Unit tests of the OTLP push.
use super::*;
use crate::exporter::procfs::ProcStats;
use crate::metrics::{Counter, Gauge as CustomGauge, Histogram as CustomHistogram};
use crate::scoreboard::{Aggregation, MetricSpec, SlotState, HISTOGRAM_BOUNDS};
use std::collections::BTreeMap;

const NOW: u64 = 1_800_000_000_123_456_789;
const CPU: ProcStats = ProcStats {
    cpu_seconds: 1.5,
    rss_bytes: 1 << 20,
};

/// Two ready workers: slot 0 finished 200, 200, 404 and keeps its connection open, slot 1
/// finished a 500; custom counter (5, in slot 1), histogram (0.05, 0.5, 2 with bounds 0.1
/// and 1) and gauge (2.5); one OTLP push succeeded and two failed; slot 1 sent a heartbeat
/// 3 ms late, slot 0 was recycled for its age and killed once for its heartbeat.
fn sample() -> StatusDoc {
    let dir = tempfile::tempdir().expect("tempdir");
    let sb = Scoreboard::create(&dir.path().join("s"), "web", 2).expect("create");
    sb.set_target_workers(2);
    let w = |i: usize| sb.writer(i).expect("writer");
    for i in 0..2 {
        sb.slot_spawned(i, 4100 + i as u32, 1);
        w(i).set_state(SlotState::Ready);
    }
    let conn = w(0).conn_open(([127, 0, 0, 1], 5000).into());
    for status in [200, 200, 404] {
        conn.request_begin("GET", "/", 11).finish(status, 10);
    }
    w(1).conn_open(([127, 0, 0, 1], 5001).into())
        .request_begin("GET", "/", 11)
        .finish(500, 1);
    let spec = MetricSpec::counter("jobs_total", "Jobs.").label("queue", "mail");
    Counter::new(w(1), sb.register(&spec).expect("counter")).add(5);
    let spec = MetricSpec::histogram("job_seconds", "Job time.", &[0.1, 1.0]);
    let h = CustomHistogram::new(w(0), sb.register(&spec).expect("hist"), &[0.1, 1.0]);
    [0.05, 0.5, 2.0].into_iter().for_each(|v| h.observe(v));
    let spec = MetricSpec::gauge("queue_depth", "Depth.", Aggregation::Sum);
    CustomGauge::new(w(0), sb.register(&spec).expect("gauge"), Aggregation::Sum).set(2.5);
    for ok in [true, false, false] {
        sb.record_otlp_export(ok);
    }
    let hour = std::time::Duration::from_secs(3600);
    sb.record_heartbeat(1, 4101, std::time::Duration::from_millis(3), hour);
    sb.record_recycle(0, "age");
    sb.record_kill(0, 4100, "heartbeat", "no heartbeat");
    let queue = crate::scoreboard::QueueSample {
        length: 3,
        limit: 128,
        drops: Some(2),
    };
    sb.record_listen_queues(&[("127.0.0.1:8080".into(), queue)]);
    StatusDoc::build_with(sb.snapshot(), |_| Some(CPU))
}

fn metrics(req: &ExportMetricsServiceRequest) -> &[Metric] {
    &req.resource_metrics[0].scope_metrics[0].metrics
}

fn find<'a>(req: &'a ExportMetricsServiceRequest, name: &str) -> &'a Data {
    let found: Vec<_> = metrics(req).iter().filter(|m| m.name == name).collect();
    assert_eq!(found.len(), 1, "{name} once in {:?}", names(req));
    found[0].data.as_ref().expect("data")
}

fn names(req: &ExportMetricsServiceRequest) -> Vec<&str> {
    metrics(req).iter().map(|m| m.name.as_str()).collect()
}

fn attr_map(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    let text = |v: &Option<AnyValue>| match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => panic!("not a string attribute: {other:?}"),
    };
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

fn has(kvs: &[KeyValue], want: &[(&str, &str)]) -> bool {
    let got = attr_map(kvs);
    want.iter()
        .all(|(k, v)| got.get(*k).map(String::as_str) == Some(*v))
}

fn kind(d: &Data) -> &'static str {
    match d {
        Data::Sum(_) => "sum",
        Data::Gauge(_) => "gauge",
        Data::Histogram(_) => "histogram",
        _ => "other",
    }
}

fn number(d: &Data, want: &[(&str, &str)]) -> Value {
    let points = match d {
        Data::Sum(s) => &s.data_points,
        Data::Gauge(g) => &g.data_points,
        _ => panic!("not a number metric: {d:?}"),
    };
    let p: Vec<_> = points.iter().filter(|p| has(&p.attributes, want)).collect();
    assert_eq!(p.len(), 1, "one point with {want:?} in {points:?}");
    p[0].value.expect("value")
}

fn hist<'a>(d: &'a Data, want: &[(&str, &str)]) -> &'a HistogramDataPoint {
    let Data::Histogram(h) = d else {
        panic!("not a histogram: {d:?}")
    };
    let p: Vec<_> = h
        .data_points
        .iter()
        .filter(|p| has(&p.attributes, want))
        .collect();
    assert_eq!(p.len(), 1, "one point with {want:?}");
    p[0]
}

#[test]
fn every_family_of_the_text_output_with_its_kind_and_flags() {
    let doc = sample();
    let req = encode(&doc, &[], NOW);
    let start = doc.started_unix_ms * 1_000_000;
    // The Prometheus output is the reference: the same families, under the same names.
    let text = super::super::prometheus::render(&doc, super::super::Format::Text);
    let mut want: BTreeMap<String, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), if t == "counter" { "sum" } else { t }))
        .collect();
    // The push counter, whether or not the text output lists it.
    want.insert("flora_otlp_exports_total".into(), "sum");
    let got: BTreeMap<String, &str> = metrics(&req)
        .iter()
        .map(|m| (m.name.clone(), kind(m.data.as_ref().expect("data"))))
        .collect();
    assert_eq!(got, want);
    assert_eq!(got.len(), metrics(&req).len(), "a name twice");
    for m in metrics(&req) {
        match m.data.as_ref().expect("data") {
            Data::Sum(s) => {
                assert!(s.is_monotonic, "{}", m.name);
                assert_eq!(s.aggregation_temporality, 2, "{} cumulative", m.name);
                for p in &s.data_points {
                    assert_eq!(p.time_unix_nano, NOW, "{}", m.name);
                    let worker_cpu = m.name == "process_cpu_seconds_total"
                        && !has(&p.attributes, &[("worker", "master")]);
                    assert!(worker_cpu || p.start_time_unix_nano == start, "{}", m.name);
                    assert!(p.start_time_unix_nano >= start, "{}", m.name);
                }
            }
            Data::Histogram(h) => {
                assert_eq!(h.aggregation_temporality, 2, "{} cumulative", m.name);
                assert!(h
                    .data_points
                    .iter()
                    .all(|p| p.start_time_unix_nano == start));
            }
            Data::Gauge(g) => assert!(g.data_points.iter().all(|p| p.time_unix_nano == NOW)),
            other => panic!("unexpected {other:?}"),
        }
    }
    let units: Vec<(&str, &str)> = metrics(&req)
        .iter()
        .filter(|m| !m.unit.is_empty())
        .map(|m| (m.name.as_str(), m.unit.as_str()))
        .collect();
    assert!(units.contains(&("flora_http_request_duration_seconds", "s")));
    assert!(units.contains(&("flora_http_sent_bytes_total", "By")));
}

#[test]
fn values_buckets_and_attributes() {
    let req = encode(&sample(), &[], NOW);
    let requests = find(&req, "flora_http_requests_total");
    let cases = [("0", "200", 2), ("0", "404", 1), ("1", "500", 1)];
    for (worker, code, n) in cases {
        let v = number(requests, &[("worker", worker), ("code", code)]);
        assert_eq!(v, Value::AsInt(n), "worker {worker} {code}");
    }
    let Data::Sum(sum) = requests else {
        panic!("not a sum")
    };
    assert_eq!(sum.data_points.len(), 3, "only the codes seen");
    let open = find(&req, "flora_connections_open");
    assert_eq!(number(open, &[("worker", "0")]), Value::AsInt(1));
    let durations = find(&req, "flora_http_request_duration_seconds");
    for (worker, n) in [("0", 3), ("1", 1)] {
        let p = hist(durations, &[("worker", worker)]);
        assert_eq!(p.explicit_bounds, HISTOGRAM_BOUNDS.to_vec());
        assert_eq!(p.bucket_counts.len(), HISTOGRAM_BOUNDS.len() + 1);
        assert_eq!((p.count, p.bucket_counts.iter().sum::<u64>()), (n, n));
        assert!(p.sum.is_some_and(|s| s >= 0.0));
    }
    let jobs = find(&req, "jobs_total");
    assert_eq!(number(jobs, &[("queue", "mail")]), Value::AsInt(5));
    let p = hist(find(&req, "job_seconds"), &[]);
    assert_eq!(
        (p.explicit_bounds.clone(), p.bucket_counts.clone()),
        (vec![0.1, 1.0], vec![1, 1, 1])
    );
    assert_eq!(p.count, 3);
    assert!(
        p.sum.is_some_and(|s| (s - 2.55).abs() < 1e-9),
        "{:?}",
        p.sum
    );
    assert_eq!(number(find(&req, "queue_depth"), &[]), Value::AsDouble(2.5));
    // The guards' families go out like the others.
    let kills = find(&req, "flora_worker_kills_total");
    assert_eq!(number(kills, &[("reason", "heartbeat")]), Value::AsInt(1));
    assert_eq!(
        number(kills, &[("reason", "shutdown_timeout")]),
        Value::AsInt(0)
    );
    let recycles = find(&req, "flora_worker_recycles_total");
    assert_eq!(number(recycles, &[("reason", "age")]), Value::AsInt(1));
    let lag = find(&req, "flora_worker_event_loop_lag_seconds");
    assert_eq!(number(lag, &[("worker", "1")]), Value::AsDouble(0.003));
    let exports = find(&req, "flora_otlp_exports_total");
    assert_eq!(number(exports, &[("result", "success")]), Value::AsInt(1));
    assert_eq!(number(exports, &[("result", "failure")]), Value::AsInt(2));
    let cpu = find(&req, "process_cpu_seconds_total");
    assert_eq!(number(cpu, &[("worker", "master")]), Value::AsDouble(1.5));
    assert_eq!(number(cpu, &[("worker", "1")]), Value::AsDouble(1.5));
    let info = find(&req, "flora_worker_info");
    let want = [("worker", "1"), ("pid", "4101"), ("generation", "1")];
    assert_eq!(number(info, &want), Value::AsInt(1));
    let workers = find(&req, "flora_workers");
    assert_eq!(number(workers, &[("state", "ready")]), Value::AsInt(2));
    assert_eq!(
        number(find(&req, "flora_target_workers"), &[]),
        Value::AsInt(2)
    );
}

#[test]
fn resource_scope_and_wire_round_trip() {
    let resource = [
        ("service.name".to_string(), "web".to_string()),
        ("deployment.environment".to_string(), "test".to_string()),
    ];
    let req = encode(&sample(), &resource, NOW);
    assert_eq!(req.resource_metrics.len(), 1);
    let rm = &req.resource_metrics[0];
    let attrs = attr_map(&rm.resource.as_ref().expect("resource").attributes);
    assert_eq!(attrs, resource.iter().cloned().collect());
    assert_eq!(rm.scope_metrics.len(), 1);
    let scope = rm.scope_metrics[0].scope.as_ref().expect("scope");
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        (SCOPE_NAME, env!("CARGO_PKG_VERSION"))
    );
    let wire = req.encode_to_vec();
    assert_eq!(
        ExportMetricsServiceRequest::decode(wire.as_slice()).expect("decode"),
        req
    );
}

#[test]
fn empty_scoreboard_sends_no_empty_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sb = Scoreboard::create(&dir.path().join("s"), "web", 1).expect("create");
    let req = encode(&StatusDoc::build_with(sb.snapshot(), |_| None), &[], NOW);
    assert!(!names(&req).contains(&"flora_http_requests_total"));
    assert!(names(&req).contains(&"flora_otlp_exports_total"));
    for m in metrics(&req) {
        let n = match m.data.as_ref().expect("data") {
            Data::Sum(s) => s.data_points.len(),
            Data::Gauge(g) => g.data_points.len(),
            Data::Histogram(h) => h.data_points.len(),
            _ => 0,
        };
        assert!(n > 0, "{} has no points", m.name);
    }
}

#[test]
fn failure_warnings_are_rate_limited() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut log = FailureLog::default();
    // (seconds, failed?, warning with this count, recovery logged)
    let steps = [
        (0, true, Some(1), false),
        (10, true, None, false),
        (59, true, None, false),
        (60, true, Some(3), false),
        (61, false, None, true),
        (62, false, None, false),
        (70, true, None, false),
        (119, false, None, false),
        (121, true, Some(2), false),
    ];
    for (s, failed, warn, recovered) in steps {
        if failed {
            assert_eq!(log.failure(at(s)), warn, "at {s} s");
        } else {
            assert_eq!(log.success(), recovered, "at {s} s");
        }
    }
}

#[test]
fn push_timeout_is_the_interval_at_most_ten_seconds() {
    for (interval_ms, want_ms) in [(0, 100), (500, 500), (10_000, 10_000), (60_000, 10_000)] {
        let got = push_timeout(Duration::from_millis(interval_ms));
        assert_eq!(
            got,
            Duration::from_millis(want_ms),
            "interval {interval_ms} ms"
        );
    }
}

fn config(endpoint: &str, gzip: bool) -> OtlpConfig {
    OtlpConfig {
        endpoint: endpoint.into(),
        interval: Duration::from_secs(1),
        headers: vec![("authorization".into(), "Bearer t".into())],
        gzip,
        resource: Vec::new(),
        names: OtlpNames::Prometheus,
        scheme: "http",
    }
}

#[test]
fn request_headers_and_gzip() {
    use std::io::Read as _;
    let payload = encode(&sample(), &[], NOW).encode_to_vec();
    let req = request(
        &config("http://127.0.0.1:4318/v1/metrics", true),
        payload.clone(),
    )
    .expect("request");
    let h = req.headers();
    assert_eq!(
        (req.method(), req.uri().path()),
        (&Method::POST, "/v1/metrics")
    );
    assert_eq!(h[CONTENT_TYPE], PROTOBUF_CONTENT_TYPE);
    assert_eq!(h[CONTENT_ENCODING], "gzip");
    assert_eq!(h["authorization"], "Bearer t");
    let body = collect_body(req.into_body());
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(body.as_slice())
        .read_to_end(&mut plain)
        .expect("gunzip");
    assert_eq!(plain, payload);
    let req = request(&config("http://h/v1/metrics", false), payload.clone()).expect("plain");
    assert!(req.headers().get(CONTENT_ENCODING).is_none());
    let mut bad = config("http://h/v1/metrics", false);
    bad.headers.push(("bad header".into(), "x".into()));
    assert!(matches!(
        request(&bad, payload.clone()),
        Err(ExportError::Request(_))
    ));
    assert!(matches!(
        request(&config("not a url", false), payload),
        Err(ExportError::Request(_))
    ));
}

fn collect_body(body: Full<Bytes>) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(body.collect())
        .expect("body")
        .to_bytes()
        .to_vec()
}

/// A collector that answers every connection with `answer` (after reading the request head).
async fn fake_collector(answer: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 64 * 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    format!("http://{addr}/v1/metrics")
}

#[tokio::test]
async fn push_outcomes() {
    let timeout = Duration::from_millis(300);
    let client = http_client(timeout);
    let push = |endpoint: String| {
        let client = client.clone();
        async move {
            let req = request(&config(&endpoint, false), b"x".to_vec()).expect("request");
            send(&client, req, timeout).await
        }
    };
    let ok = fake_collector("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
    assert!(push(ok).await.is_ok());
    let err = fake_collector("HTTP/1.1 500 Oops\r\ncontent-length: 5\r\n\r\nboom\n").await;
    let got = push(err).await;
    assert!(
        matches!(&got, Err(ExportError::Status { status, body }) if status.as_u16() == 500 && body == "boom"),
        "{got:?}"
    );
    // Accepted by the kernel, never answered: the push gives up at its timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/v1/metrics", silent.local_addr().expect("addr"));
    assert!(matches!(push(url).await, Err(ExportError::Timeout(_))));
    // Nothing listening.
    let port = silent.local_addr().expect("addr").port();
    drop(silent);
    let got = push(format!("http://127.0.0.1:{port}/v1/metrics")).await;
    assert!(matches!(&got, Err(ExportError::Send(_))), "{got:?}");
    let msg = chain(&got.expect_err("refused"));
    assert!(msg.contains("onnect"), "{msg}");
}
