//! The master pushes its metrics over OTLP/HTTP to a real receiver built on the official
//! OpenTelemetry protobuf definitions (PyPI `opentelemetry-proto` behind `http.server`,
//! tests/support/otlp_receiver.py): every request counted once, in the right OTLP types, with
//! the scoreboard's histogram buckets, the resource attributes and the app's custom metrics;
//! gzip bodies decode; and a collector that is down, answers 500 or never answers costs the
//! cluster nothing but counted, rate-limited failures.

mod support;

use flora_cluster::scoreboard::HISTOGRAM_BOUNDS;
use serde_json::Value;
use support::otlp::{
    assert_monotonic_cumulative_sum, metric, points, resource, total, Receiver, PUSH_TIMEOUT,
};
use support::{http, status_server, workers};
use support::{Cluster, Http, TestDir};

/// Requests sent in the main test (odd, so an off-by-one or a double count cannot hide);
/// two of them are the custom-metric calls.
const K: u64 = 37;
/// Push interval given to the master, seconds.
const INTERVAL: &str = "0.5";
/// Failed pushes the failure tests wait for while checking that the cluster keeps serving.
const FAILED_PUSHES: u64 = 4;

/// `(succeeded, failed)` pushes as the master's status server reports them.
fn pushes(status_port: u16) -> (u64, u64) {
    let doc = http::get_json(status_port, "/server-status.json");
    let n = |i: usize| {
        doc["otlp_exports"][i]
            .as_u64()
            .unwrap_or_else(|| panic!("otlp_exports: {doc}"))
    };
    (n(0), n(1))
}

fn start_cluster(dir: &TestDir, endpoint: &str, extra: &[&str]) -> Cluster {
    let mut args = vec![
        "--workers",
        "2",
        "--otlp-endpoint",
        endpoint,
        "--otlp-interval",
        INTERVAL,
    ];
    args.extend_from_slice(extra);
    let cluster = dir.start_with(support::free_port(), &args, &[]);
    cluster.wait_ready(2);
    cluster
}

/// Registers `demo_jobs_total` and adds 5, on one keep-alive connection (two requests).
fn count_demo_jobs(port: u16) {
    let mut c = Http::connect(port).expect("connect to the workers");
    for target in [
        "/m/register?kind=counter&name=demo_jobs_total",
        "/m/add?name=demo_jobs_total&n=5",
    ] {
        let r = c
            .get(target)
            .unwrap_or_else(|e| panic!("GET {target}: {e}"));
        assert_eq!(r.status, 200, "GET {target}: {}", r.text());
    }
    c.close();
}

/// An export whose `flora_http_requests_total` sums to `want` (panics if one shows more).
fn export_with_requests(rx: &mut Receiver, want: u64) -> Value {
    let what = format!("an export with sum(flora_http_requests_total) == {want}");
    rx.wait_export(&what, |e| {
        let Some(m) = metric(e, "flora_http_requests_total") else {
            return Err(format!("no flora_http_requests_total in {e}"));
        };
        let n = total(m);
        assert!(n <= want as f64, "{n} requests pushed, {want} sent: {m}");
        if n == want as f64 {
            Ok(e.clone())
        } else {
            Err(format!("{n} requests in the last export"))
        }
    })
}

#[test]
fn pushes_every_metric_to_a_real_otlp_receiver() {
    let dir = TestDir::new("otlp-push");
    let mut rx = Receiver::start(&dir, 200);
    let extra = ["--otlp-resource", "deployment.environment=test"];
    let cluster = start_cluster(&dir, &rx.endpoint(), &extra);
    count_demo_jobs(cluster.port);
    workers::send_requests(cluster.port, K - 2);
    let e = export_with_requests(&mut rx, K);

    assert_eq!(e["content_type"], "application/x-protobuf", "{e}");
    assert_eq!(e["content_encoding"], Value::Null, "{e}");
    assert_eq!(e["answered"], 200, "{e}");
    let attrs = &resource(&e)["attributes"];
    assert_eq!(attrs["service.name"], dir.name.as_str(), "{attrs}");
    assert_eq!(attrs["deployment.environment"], "test", "{attrs}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert_eq!(attrs["host.name"], host.trim(), "{attrs}");
    let scope = &resource(&e)["scopes"][0];
    assert_eq!(scope["name"], "flora-cluster", "{scope}");

    let requests = metric(&e, "flora_http_requests_total").expect("requests");
    assert_monotonic_cumulative_sum(requests, "as_int");
    for p in points(requests) {
        let a = &p["attributes"];
        assert!(a["worker"].is_string() && a["code"].is_string(), "{p}");
    }

    let durations = metric(&e, "flora_http_request_duration_seconds").expect("histogram");
    assert_eq!(durations["type"], "histogram", "{durations}");
    assert_eq!(durations["temporality"], "cumulative", "{durations}");
    let mut observed = 0;
    for p in points(durations) {
        let bounds: Vec<f64> =
            serde_json::from_value(p["explicit_bounds"].clone()).expect("bounds");
        assert_eq!(bounds, HISTOGRAM_BOUNDS, "{durations}");
        let counts: Vec<u64> = serde_json::from_value(p["bucket_counts"].clone()).expect("counts");
        assert_eq!(counts.len(), HISTOGRAM_BOUNDS.len() + 1, "{durations}");
        assert_eq!(
            p["count"].as_u64(),
            Some(counts.iter().sum()),
            "{durations}"
        );
        observed += counts.iter().sum::<u64>();
    }
    assert_eq!(observed, K, "{durations}");

    let open = metric(&e, "flora_connections_open").expect("connections open");
    assert_eq!(open["type"], "gauge", "{open}");
    let jobs = metric(&e, "demo_jobs_total").expect("the custom counter");
    assert_monotonic_cumulative_sum(jobs, "as_int");
    assert_eq!(total(jobs), 5.0, "{jobs}");

    // Every family of the master's Prometheus output is in the export, as the same kind.
    let status = status_server::status_port(&cluster);
    let scrape = status_server::scrape(status, None);
    for (family, typ) in &scrape.expo.types {
        let m = metric(&e, family).unwrap_or_else(|| panic!("{family} ({typ}) not pushed"));
        let want = if typ == "counter" {
            "sum"
        } else {
            typ.as_str()
        };
        assert_eq!(m["type"], want, "{family}: {m}");
    }
    let exports = metric(&e, "flora_otlp_exports_total").expect("push counter");
    assert_monotonic_cumulative_sum(exports, "as_int");
    // Every export so far was well-formed and accepted, and the master counted them so (the
    // receiver records an export before it answers: it may hold one the master has not
    // counted yet, never fewer).
    let (ok, failed) = pushes(status);
    let got = rx.exports();
    for x in &got {
        assert!(x.get("error").is_none() && x["answered"] == 200, "{x}");
    }
    assert!(
        ok >= 1 && failed == 0 && got.len() as u64 >= ok,
        "pushes: {ok} ok, {failed} failed; {} received",
        got.len()
    );
}

#[test]
fn gzip_bodies_decode() {
    let dir = TestDir::new("otlp-gzip");
    let mut rx = Receiver::start(&dir, 200);
    let cluster = start_cluster(&dir, &rx.endpoint(), &["--otlp-gzip"]);
    workers::send_requests(cluster.port, 5);
    let e = export_with_requests(&mut rx, 5);
    assert_eq!(e["content_encoding"], "gzip", "{e}");
    let (sent, decoded) = (e["body_bytes"].as_u64(), e["decoded_bytes"].as_u64());
    assert!(
        sent < decoded,
        "a gzip body of {sent:?} bytes for {decoded:?} bytes of protobuf"
    );
    for x in rx.exports() {
        assert_eq!(x["content_encoding"], "gzip", "{x}");
        assert!(x.get("error").is_none() && x["answered"] == 200, "{x}");
    }
}

/// While pushes to `endpoint` keep failing: the workers answer every request, the status
/// server answers, the failures are counted and the master runs on; one warning at most.
fn survives_a_failing_collector(dir: &TestDir, endpoint: &str) {
    let mut cluster = start_cluster(dir, endpoint, &[]);
    let status = status_server::status_port(&cluster);
    let mut served = 0u64;
    let what = format!("{FAILED_PUSHES} failed pushes while the cluster serves");
    support::poll(PUSH_TIMEOUT, &what, || {
        let r = support::get(cluster.port, "/").expect("a request while pushes fail");
        assert_eq!(r.status, 200, "{}", r.text());
        served += 1;
        let exited = cluster.try_exit();
        assert!(exited.is_none(), "the master exited ({exited:?})");
        match pushes(status) {
            (0, failed) if failed >= FAILED_PUSHES => Ok(()),
            (0, failed) => Err(format!("{failed} failed pushes")),
            (ok, _) => panic!("{ok} pushes to {endpoint} succeeded"),
        }
    });
    assert!(support::pid_alive(cluster.pid), "master gone");
    let what = format!("sum(flora_http_requests_total) == {served} on the master's /metrics");
    support::poll(PUSH_TIMEOUT, &what, || {
        let s = status_server::scrape(status, None);
        let n = s.expo.sum("flora_http_requests_total");
        (n == served as f64)
            .then_some(())
            .ok_or(format!("{n}\n{}", s.text))
    });
    // Rate-limited: one warning a minute at most (exactly one at the default log level).
    let stderr = cluster.stderr();
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("OTLP push to") && l.contains("failed"))
        .count();
    let want = if std::env::var_os("RUST_LOG").is_some() {
        0..=1
    } else {
        1..=1
    };
    assert!(
        want.contains(&warnings),
        "{warnings} failure warnings:\n{stderr}"
    );
}

#[test]
fn collector_down_costs_nothing() {
    let dir = TestDir::new("otlp-down");
    // A port nobody listens on.
    let endpoint = format!("http://127.0.0.1:{}/v1/metrics", support::free_port());
    survives_a_failing_collector(&dir, &endpoint);
}

#[test]
fn collector_answering_500_costs_nothing() {
    let dir = TestDir::new("otlp-500");
    let rx = Receiver::start(&dir, 500);
    survives_a_failing_collector(&dir, &rx.endpoint());
    // The bodies were fine: only the status failed them.
    let got = rx.exports();
    assert!(got.len() as u64 >= FAILED_PUSHES, "{got:?}");
    for x in got {
        assert!(x["answered"] == 500 && x.get("error").is_none(), "{x}");
    }
}

#[test]
fn collector_never_answering_costs_nothing() {
    let dir = TestDir::new("otlp-silent");
    // Connections complete in the kernel's backlog; nobody ever reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    survives_a_failing_collector(&dir, &format!("http://127.0.0.1:{port}/v1/metrics"));
    drop(silent);
}
