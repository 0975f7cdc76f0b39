//! The Apache `mod_status` compatible page (`/server-status?auto`) is read correctly by the
//! real `prometheus-apache-exporter`: it is up and counts exactly the requests sent.

mod support;

use std::time::Duration;

use support::tools::ApacheExporter;
use support::TestDir;
use support::{http, status_server, workers};

/// Requests sent (odd, so an off-by-one or a double count cannot hide).
const K: u64 = 37;
/// Longest wait for answered requests to show through the exporter.
const COUNT_TIMEOUT: Duration = Duration::from_secs(15);

#[test]
fn apache_exporter_reads_server_status_auto() {
    let dir = TestDir::new("exp-apache");
    let cluster = dir.start(support::free_port(), 2, &[]);
    cluster.wait_ready(2);
    let status = status_server::status_port(&cluster);
    let auto = http::get_with(status, "/server-status?auto", &[]);
    assert_eq!(auto.status, 200, "/server-status?auto: {}", auto.text());
    let uri = format!("http://127.0.0.1:{status}/server-status?auto");
    let mut exporter = ApacheExporter::start(&uri);

    let idle = exporter.scrape();
    assert_eq!(
        idle.expo.value("apache_up", &[]),
        Some(1.0),
        "apache_up before traffic\n----- exporter -----\n{}\n----- ?auto -----\n{}",
        idle.text,
        auto.text()
    );
    workers::send_requests(cluster.port, K);

    let s = support::poll(COUNT_TIMEOUT, "apache_accesses_total == K", || {
        let s = exporter.scrape();
        let n = s.expo.value("apache_accesses_total", &[]);
        if n == Some(K as f64) {
            return Ok(s);
        }
        let auto = http::get_with(status, "/server-status?auto", &[]).text();
        Err(format!(
            "apache_accesses_total {n:?}, want {K}\n{}\n----- ?auto -----\n{auto}",
            s.text
        ))
    });
    let auto = http::get_with(status, "/server-status?auto", &[]).text();
    assert_eq!(
        s.expo.value("apache_up", &[]),
        Some(1.0),
        "{}\n{auto}",
        s.text
    );
    let workers = s.expo.sum("apache_workers");
    assert!(
        workers >= 2.0,
        "apache_workers (busy+idle) {workers}\n{}\n{auto}",
        s.text
    );
    let uptime = s.expo.value("apache_uptime_seconds_total", &[]);
    assert!(
        uptime.is_some(),
        "no apache_uptime_seconds_total\n{}\n{auto}",
        s.text
    );
}
