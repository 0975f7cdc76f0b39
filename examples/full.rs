//! The original example folder in one worker: start-up checks before `ready()`, custom
//! counters, gauges and histograms, per-request infos and per-request counters, an in-app
//! `/stats` route answering from the shared-memory `status()`, and slow routes so the status
//! page shows live in-flight requests.
//!
//! ```text
//! cargo build --examples --bin flora-cluster
//! target/debug/flora-cluster run --workers 2 -- target/debug/examples/full
//! curl 127.0.0.1:1337/slow?ms=5000 &   # then open http://127.0.0.1:9337/server-status
//! curl 127.0.0.1:1337/stats
//! ```
//! It also runs standalone: `cargo run --example full`.
#![deny(warnings)]

use std::convert::Infallible;
use std::time::{Duration, Instant};

use flora_cluster::metrics::{Counter, Gauge, Histogram};
use flora_cluster::scoreboard::{Aggregation, MetricSpec};
use flora_cluster::worker::RequestInfo;
use flora_cluster::Worker;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

#[derive(Clone)]
struct App {
    worker: Worker,
    orders: Counter,
    logins: Counter,
    sessions: Gauge,
    slow: Histogram,
}

fn text(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

async fn handle(app: App, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let info = RequestInfo::current();
    let query = req.uri().query().unwrap_or("").to_string();
    let resp = match req.uri().path() {
        "/stats" => {
            // Read straight from shared memory: the whole cluster, no round trip to the master.
            let snap = app.worker.status();
            let body = serde_json::json!({
                "requests_total": snap.totals.counters.requests_total,
                "in_flight": snap.totals.counters.requests_active,
                "workers_ready": snap.totals.workers_ready,
                "custom": snap.custom,
            });
            text(StatusCode::OK, body.to_string(), "application/json")
        }
        "/slow" => {
            let ms: u64 = query
                .strip_prefix("ms=")
                .and_then(|v| v.parse().ok())
                .unwrap_or(3000)
                .min(60_000);
            if let Some(info) = &info {
                info.set("route", "slow");
                info.set("sleep_ms", &ms.to_string());
            }
            let started = Instant::now();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            app.slow.observe(started.elapsed().as_secs_f64());
            text(StatusCode::OK, "slept\n", "text/plain")
        }
        "/order" => {
            let user = query
                .strip_prefix("user=")
                .unwrap_or("anonymous")
                .to_string();
            if let Some(info) = &info {
                info.set("user", &user);
                // Counted when the response has been sent.
                info.add(&app.orders, 1);
            }
            text(
                StatusCode::CREATED,
                format!("order placed for {user}\n"),
                "text/plain",
            )
        }
        "/login" => {
            app.logins.inc();
            app.sessions.inc();
            text(StatusCode::OK, "welcome\n", "text/plain")
        }
        "/logout" => {
            app.sessions.dec();
            text(StatusCode::OK, "bye\n", "text/plain")
        }
        _ => text(StatusCode::OK, "Hello World\n", "text/plain"),
    };
    Ok(resp)
}

/// Start-up checks: a worker that fails them exits before `ready()`, and a reload to it rolls back.
async fn startup_checks() -> Result<(), String> {
    if std::env::var_os("FULL_FAIL_STARTUP").is_some() {
        return Err("FULL_FAIL_STARTUP is set".into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let worker = Worker::from_env()?;
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "1337".into());
    let listener = worker.listen(&format!("{host}:{port}")).await?;
    let app = App {
        orders: worker
            .counter_with(
                MetricSpec::counter("shop_orders_total", "Orders placed.").label("shop", "main"),
            )
            .await?,
        logins: worker.counter("shop_logins_total", "Logins.").await?,
        sessions: worker
            .gauge(
                "shop_sessions",
                "Sessions open, summed over workers.",
                Aggregation::Sum,
            )
            .await?,
        slow: worker
            .histogram(
                "shop_slow_seconds",
                "Duration of /slow.",
                &[0.1, 0.5, 1.0, 5.0],
            )
            .await?,
        worker: worker.clone(),
    };
    if let Err(e) = startup_checks().await {
        eprintln!("full: start-up check failed: {e}");
        std::process::exit(3);
    }
    worker.ready().await?;
    let service = hyper::service::service_fn(move |req| handle(app.clone(), req));
    worker.serve(listener, service).await?;
    Ok(())
}
