//! An axum `Router` handed to `Worker::serve` as it is: the routes it matched show as
//! templates (`/items/{id}`) with the in-flight and the last request on the status page, in
//! the JSON and in `flora-cluster status`; `code="404"` counts exactly; and with
//! `--route-metrics` a scanner sending thousands of distinct paths adds no series beyond the
//! app's own routes (unmatched paths have no route; matched ones count under their template).
//!
//! The worker is this test binary itself, started again with `FLORA_AXUM_WORKER` set and only
//! the `worker_entry` test selected.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use flora_cluster::Worker;
use support::http::{self, Http};
use support::status_server;
use support::tools::{self, Lints};
use support::{wait_for, TestDir};
use tokio::sync::Notify;

/// Set in the re-started test binary that runs the worker.
const WORKER_ENV: &str = "FLORA_AXUM_WORKER";
/// Longest a held request waits for its release (a failed test never hangs the worker).
const HOLD_MAX: Duration = Duration::from_secs(20);
/// Longest wait for something to show in the scoreboard or on /metrics.
const SHOW_TIMEOUT: Duration = Duration::from_secs(15);
/// Distinct paths the scanner sends (half matching `/items/{id}`, half matching nothing).
const SCANNED: u64 = 2000;

async fn item(Path(id): Path<u64>) -> String {
    format!("item {id}\n")
}

async fn hold(State(release): State<Arc<Notify>>, Path(_id): Path<u64>) -> &'static str {
    let _ = tokio::time::timeout(HOLD_MAX, release.notified()).await;
    "held\n"
}

async fn release(State(release): State<Arc<Notify>>) -> &'static str {
    release.notify_waiters();
    "released\n"
}

/// An app written the way axum apps are: nothing flora-specific in it.
fn router() -> Router {
    Router::new()
        .route("/items/{id}", get(item))
        .route("/hold/{id}", get(hold))
        .route("/release", get(release))
        .with_state(Arc::new(Notify::new()))
}

/// The worker side: runs only in the re-started test binary.
#[test]
fn worker_entry() {
    if std::env::var(WORKER_ENV).is_err() {
        return;
    }
    support::self_worker::run_worker(async move {
        let worker = Worker::from_env().expect("worker");
        let port = std::env::var("PORT").expect("PORT");
        let listener = worker
            .listen(&format!("127.0.0.1:{port}"))
            .await
            .expect("listen");
        worker.serve(listener, router()).await.expect("serve");
    });
}

/// Value of the series `name{labels}` on `text` (exact label text), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn routes_show_as_templates_codes_count_exactly_and_route_series_stay_capped() {
    let dir = TestDir::new("axum-routes");
    let port = support::free_port();
    let cluster = dir
        .master(port)
        .args(&["--workers", "1", "--route-metrics"])
        .program(&support::self_worker::self_worker_argv())
        .env(WORKER_ENV, "1")
        .start();
    cluster.wait_ready(1);
    let status = status_server::status_port(&cluster);

    // In flight: the template beside the path, in the snapshot, JSON, HTML and `status`.
    let held = std::thread::spawn(move || http::get(port, "/hold/42").expect("held request"));
    wait_for(SHOW_TIMEOUT, "the held request with its route", || {
        let snap = cluster.snapshot();
        let r = snap.slots[0]
            .connections
            .iter()
            .filter_map(|c| c.request.as_ref())
            .find(|r| r.path == "/hold/42")?
            .clone();
        (r.route == "/hold/{id}").then_some(())
    });
    let json = http::get_json(status, "/server-status.json").to_string();
    assert!(json.contains("\"/hold/{id}\""), "JSON: {json}");
    let html = http::get(status, "/server-status")
        .expect("status page")
        .text();
    assert!(
        html.contains("<code class=\"route\" title=\"route\">/hold/{id}</code>"),
        "status page: {html}"
    );
    let out = dir.ctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/hold/{id}"), "status: {text}");
    assert_eq!(http::get(port, "/release").expect("release").status, 200);
    assert_eq!(held.join().expect("held").status, 200);

    // A scanner: distinct paths, half on a route, half on none (404).
    let mut c = Http::connect(port).expect("connect");
    for i in 0..SCANNED {
        let (path, want) = if i % 2 == 0 {
            (format!("/items/{i}"), 200)
        } else {
            (format!("/scan/{i}/x.php"), 404)
        };
        assert_eq!(c.get(&path).expect("GET").status, want, "{path}");
    }
    c.close();
    let half = (SCANNED / 2) as f64;
    let scrape = support::poll(SHOW_TIMEOUT, "the scan counted", || {
        let s = status_server::scrape(status, None);
        match value(
            &s.text,
            "flora_http_requests_total{worker=\"0\",code=\"404\"}",
        ) {
            Some(n) if n == half => Ok(s),
            other => Err(format!("404s: {other:?}\n{}", s.text)),
        }
    });
    let text = &scrape.text;
    // Exact codes: the 404s on their own series, the 200s on theirs (the scan plus the
    // held request and its release).
    assert_eq!(
        value(text, "flora_http_requests_total{worker=\"0\",code=\"200\"}"),
        Some(half + 2.0),
        "{text}"
    );
    // The route families hold the app's routes only: never a scanned path.
    let routes: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("flora_http_route_requests_total{"))
        .filter_map(|l| l.split("route=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        routes.into_iter().collect::<Vec<_>>(),
        ["/hold/{id}", "/items/{id}", "/release"],
        "{text}"
    );
    assert_eq!(
        value(
            text,
            "flora_http_route_requests_total{route=\"/items/{id}\",code=\"200\"}"
        ),
        Some(half),
        "{text}"
    );
    assert_eq!(
        value(text, "flora_http_route_overflow_total{worker=\"0\"}"),
        Some(0.0),
        "{text}"
    );
    tools::assert_promtool(text, Lints::None, "axum routes");
}
