//! A worker of a real master tries every colliding name: the clashing registrations are
//! refused with a clear error, and what was accepted (gauges named `Uptime`, `BusyWorkers`,
//! `Scoreboard`, a name whose `?auto` key would be `Load1`, a counter `y_total_total`) breaks
//! nothing: the real `prometheus-apache-exporter` answers 200 reading `/server-status?auto`
//! with the master's own `Uptime`, `promtool` finds no parse error in `/metrics`, the Python
//! reference parser accepts the OpenMetrics, and a real Prometheus scraping it keeps `up` at 1.

mod support;

use std::time::Duration;

use support::tools::{self, ApacheExporter, Lints, PrometheusServer};
use support::{http, status_server, workers};
use support::{Http, TestDir};

/// Longest wait for Prometheus' first scrapes (its first one lands 5–6 s after start).
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(30);
/// A value no real counter of a fresh master reaches: shows a custom line shadowing one.
const BOGUS: &str = "987654";

/// Registrations refused, with a word their error must contain.
const REFUSED: [(&str, &str); 9] = [
    ("kind=counter&name=_total", "family name is empty"),
    (
        "kind=counter&name=foo_total",
        "clashes with the registered metric \"foo\"",
    ),
    (
        "kind=counter&name=h_total",
        "clashes with the registered metric \"h\"",
    ),
    ("kind=counter&name=h_count_total", "reserved"),
    (
        "kind=counter&name=x_total_total",
        "clashes with the registered metric \"x_total\"",
    ),
    ("kind=gauge&name=process_cpu_seconds", "built-in"),
    (
        "kind=counter&name=process_resident_memory_bytes_total",
        "built-in",
    ),
    ("kind=histogram&name=flora_worker", "built-in"),
    ("kind=gauge&name=g&label=k:", "empty value"),
];

/// Accepted registrations (registered before [`REFUSED`]); the gauges named like an Apache
/// key are set to [`BOGUS`].
const ACCEPTED: [&str; 9] = [
    "kind=gauge&name=foo",
    "kind=histogram&name=h&buckets=1",
    "kind=counter&name=x_total",
    "kind=counter&name=y_total_total",
    "kind=gauge&name=Uptime",
    "kind=gauge&name=BusyWorkers",
    "kind=gauge&name=Scoreboard",
    "kind=gauge&name=Load1:x",
    "kind=gauge&name=g",
];

fn register_all(c: &mut Http) {
    for q in ACCEPTED {
        let r = workers::call(c, &format!("/m/register?{q}&help=Demo."));
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        let name = q.split("name=").nth(1).and_then(|n| n.split('&').next());
        let name = name.unwrap_or_default();
        if q.contains("gauge") {
            let apache_key = name.starts_with(|c: char| c.is_ascii_uppercase());
            let v = if apache_key { BOGUS } else { "1" };
            workers::call_ok(c, &format!("/m/set?name={name}&v={v}"));
        }
    }
    workers::call_ok(c, "/m/add?name=y_total_total&n=3");
    for (q, needle) in REFUSED {
        let r = workers::call(c, &format!("/m/register?{q}&help=Demo."));
        assert_eq!(r.status, 422, "{q} must be refused: {}", r.text());
        assert!(
            r.text().contains(needle),
            "{q}: {:?} lacks {needle:?}",
            r.text()
        );
    }
}

fn check_auto(status: u16) {
    let auto = http::get_with(status, "/server-status?auto", &[]).text();
    // Our own lines (flora writes no `Load1`), never a custom one.
    for (key, want) in [
        ("Uptime", 1),
        ("BusyWorkers", 1),
        ("Scoreboard", 1),
        ("Load1", 0),
    ] {
        let n = auto
            .lines()
            .filter(|l| l.split(':').next().map(str::trim) == Some(key))
            .count();
        assert_eq!(n, want, "{key} lines in ?auto:\n{auto}");
    }
    assert!(
        !auto.contains(BOGUS),
        "a custom line shadows an Apache key:\n{auto}"
    );
    let mut exporter =
        ApacheExporter::start(&format!("http://127.0.0.1:{status}/server-status?auto"));
    let s = exporter.scrape();
    assert_eq!(
        s.expo.value("apache_up", &[]),
        Some(1.0),
        "{}\n{auto}",
        s.text
    );
    let uptime = s
        .expo
        .value("apache_uptime_seconds_total", &[])
        .unwrap_or(f64::NAN);
    assert!(
        uptime < 3600.0,
        "uptime {uptime} is not the master's\n{}",
        s.text
    );
    assert!(
        s.expo
            .value("apache_scrape_failures_total", &[])
            .is_none_or(|v| v == 0.0),
        "{}",
        s.text
    );
}

fn check_metrics(status: u16) {
    let text = status_server::scrape(status, None);
    // rc 3 = lint only: `BusyWorkers` is camel case, `Load1:x` has a colon.
    let style = |l: &str| {
        (l.starts_with("BusyWorkers ") && l.contains("camelCase"))
            || (l.starts_with("Load1:x ") && l.contains("':'"))
    };
    tools::assert_promtool(&text.text, Lints::Only(&style), "scrape");
    assert!(
        text.expo.duplicate_series().is_empty(),
        "{:?}",
        text.expo.duplicate_series()
    );
    assert!(
        text.expo.scattered_families().is_empty(),
        "{:?}",
        text.expo.scattered_families()
    );
    let om = status_server::scrape(status, Some(status_server::PROMETHEUS_ACCEPT));
    let fams = tools::parse_openmetrics_with_python(&om.text)
        .unwrap_or_else(|e| panic!("the reference parser rejects /metrics: {e}\n{}", om.text));
    for (family, typ) in [
        ("foo", "gauge"),
        ("h", "histogram"),
        ("x", "counter"),
        ("y_total", "counter"),
    ] {
        let f = fams.iter().find(|f| f.name == family);
        assert_eq!(
            f.map(|f| f.typ.as_str()),
            Some(typ),
            "{family}\n{}",
            om.text
        );
    }
}

fn check_prometheus(status: u16) {
    let prom = PrometheusServer::start("flora", &format!("127.0.0.1:{status}"));
    let v = support::poll(
        PROMETHEUS_TIMEOUT,
        "Prometheus ingests y_total_total",
        || match (prom.query_scalar("up"), prom.query_scalar("y_total_total")) {
            (Some(1.0), Some(y)) => Ok(y),
            (up, y) => Err(format!(
                "up {up:?}, y_total_total {y:?}\n{}",
                prom.targets()
            )),
        },
    );
    assert_eq!(v, 3.0);
}

#[test]
fn colliding_names_are_refused_and_every_reader_keeps_working() {
    let dir = TestDir::new("collide");
    let cluster = dir.start(support::free_port(), 1, &[]);
    cluster.wait_ready(1);
    let status = status_server::status_port(&cluster);
    let mut c = Http::connect(cluster.port).expect("connect to the worker");
    register_all(&mut c);
    check_auto(status);
    check_metrics(status);
    check_prometheus(status);
    c.close();
}
