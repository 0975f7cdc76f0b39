//! A real Prometheus server scrapes the master's `/metrics` (it negotiates OpenMetrics) and
//! answers PromQL over the cluster's series.

mod support;

use std::time::Duration;

use support::tools::PrometheusServer;
use support::workers::Traffic;
use support::{wait_for, TestDir};

/// Longest wait for Prometheus to have scraped the cluster (its first scrape lands 5-6 s
/// after start: target updates are batched every 5 s).
const SCRAPED_TIMEOUT: Duration = Duration::from_secs(40);
/// Scrape job name in the Prometheus config.
const JOB: &str = "flora";

#[test]
fn prometheus_scrapes_the_cluster_and_answers_promql() {
    let dir = TestDir::new("exp-prom");
    let cluster = dir.start(support::free_port(), 2, &[]);
    cluster.wait_ready(2);
    let status_addr = cluster
        .status_url()
        .trim_start_matches("http://")
        .to_string();
    let traffic = Traffic::start(cluster.port);
    let prom = PrometheusServer::start(JOB, &status_addr);

    let requests = "sum(flora_http_requests_total)";
    let total = wait_for(
        SCRAPED_TIMEOUT,
        "Prometheus to store flora_http_requests_total > 0",
        || {
            let v = prom.query_scalar(requests).filter(|v| *v > 0.0);
            if v.is_none() {
                // A scrape that failed shows in the target's lastError: stop waiting then.
                let targets = prom.targets();
                assert!(
                    !targets.contains("\"health\":\"down\""),
                    "Prometheus cannot scrape {status_addr}: {targets}"
                );
            }
            v
        },
    );
    assert!(total > 0.0);
    let up = prom.query_scalar(&format!("up{{job=\"{JOB}\"}}"));
    assert_eq!(up, Some(1.0), "up: targets {}", prom.targets());
    let samples = prom.query_scalar(&format!("scrape_samples_scraped{{job=\"{JOB}\"}}"));
    assert!(
        samples.is_some_and(|n| n > 0.0),
        "samples scraped: {samples:?}"
    );

    // Series of every kind made it through Prometheus' parser, labels intact.
    let by_worker = prom.query("sum by (worker) (flora_http_requests_total)");
    assert!(!by_worker.is_empty(), "no per-worker series");
    let hist = prom.query_scalar("sum(flora_http_request_duration_seconds_count)");
    assert!(hist.is_some_and(|n| n > 0.0), "histogram count: {hist:?}");
    let generation = prom.query_scalar("flora_generation");
    assert_eq!(generation, Some(1.0), "flora_generation");
    let master = prom.query("process_resident_memory_bytes{worker=\"master\"}");
    assert_eq!(master.len(), 1, "master memory series: {master:?}");

    let errors = traffic.errors();
    traffic.stop();
    assert!(errors.is_empty(), "the traffic saw errors: {errors:?}");
}
