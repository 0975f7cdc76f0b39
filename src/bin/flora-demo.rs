//! `flora-demo`: a hyper worker on the flora-cluster worker API, with flags to misbehave and
//! routes that drive the custom-metric API (used by the tests and the quick start).
//!
//! Routes: `/` → `Hello World\n` (or `--body`), `/pid`, `/slot`, `/slow?ms=N`,
//! `/info?ms=N&KEY=VALUE…` (sets request infos, then sleeps), `/code/N` (answers status N;
//! route `/code/{n}`), `/route/ANY` (route = the raw path), `/status` (the in-app
//! `status()` as JSON), and the custom-metric routes `/m/register?kind=counter|gauge|histogram
//! &name=N[&help=H][&agg=sum|max|min|latest][&dead=1][&buckets=0.1,1][&label=K:V]`,
//! `/m/add?name=N&n=K`, `/m/set?name=N&v=X`, `/m/observe?name=N&v=X`, `/m/defer?name=N&n=K`
//! (counted when the request ends), `/m/defer-late?name=N&n=K&ms=M` (the same add, made by a
//! task M ms after the response). For the descriptor tests: `/child-fds` (the open descriptors
//! a program started by the worker sees: `ls -l /proc/self/fd`) and `/from-env-again` (what a
//! second `Worker::from_env()` returns). `--error-every N` makes every Nth request to `/`
//! (per worker) answer 500: a bad release for the canary tests. Built with the `tls` feature it serves HTTPS when the
//! master has `--tls-cert`/`--tls-key`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use flora_cluster::metrics::{Counter, Gauge, Histogram};
use flora_cluster::scoreboard::{Aggregation, MetricKind, MetricSpec};
use flora_cluster::worker::{RequestInfo, Worker};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};

/// A demo worker.
#[derive(Debug, Parser)]
struct Args {
    /// Exit with CODE before becoming ready (a failed start-up check).
    #[arg(long, value_name = "CODE")]
    exit_at_start: Option<i32>,
    /// Exit with status 3 this many ms after becoming ready.
    #[arg(long, value_name = "MS")]
    crash_after_ms: Option<u64>,
    /// Apply the misbehaviour flags only in this slot.
    #[arg(long, value_name = "K")]
    only_slot: Option<usize>,
    /// Never become ready.
    #[arg(long)]
    never_ready: bool,
    /// Body of `/`.
    #[arg(long, default_value = "Hello World\n")]
    body: String,
    /// Serve without any tracking (the benchmarks' baseline).
    #[arg(long)]
    no_tracking: bool,
    /// After a shutdown request, hang forever instead of exiting (a stuck worker; the master
    /// must kill it after its shutdown timeout).
    #[arg(long)]
    hang_on_shutdown: bool,
    /// Answer every Nth request to `/` with 500 (a bad release, for canary reloads).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    error_every: Option<u64>,
    /// Runtime threads of this worker process (preforked workers scale by process count; one
    /// thread each avoids cross-thread wake-ups).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Clone)]
enum Handle {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

#[derive(Clone)]
struct App {
    worker: Worker,
    body: Bytes,
    metrics: Arc<Mutex<HashMap<String, Handle>>>,
    /// `--error-every N` and the requests to `/` so far.
    error_every: Option<(u64, Arc<std::sync::atomic::AtomicU64>)>,
}

type Reply = (StatusCode, String);

fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn spec_of(q: &[(String, String)]) -> Result<MetricSpec, String> {
    let name = param(q, "name").ok_or("name missing")?;
    let help = param(q, "help").unwrap_or("demo metric");
    let mut spec = match param(q, "kind").unwrap_or("counter") {
        "counter" => MetricSpec::counter(name, help),
        "gauge" => {
            let agg = match param(q, "agg").unwrap_or("sum") {
                "max" => Aggregation::Max,
                "min" => Aggregation::Min,
                "latest" => Aggregation::Latest,
                _ => Aggregation::Sum,
            };
            let g = MetricSpec::gauge(name, help, agg);
            if param(q, "dead") == Some("1") {
                g.count_dead()
            } else {
                g
            }
        }
        "histogram" => {
            let buckets: Result<Vec<f64>, _> = param(q, "buckets")
                .unwrap_or("0.1,1")
                .split(',')
                .filter(|b| !b.is_empty())
                .map(str::parse)
                .collect();
            MetricSpec::histogram(name, help, &buckets.map_err(|e| format!("buckets: {e}"))?)
        }
        other => return Err(format!("unknown kind {other}")),
    };
    for (_, v) in q.iter().filter(|(k, _)| k == "label") {
        let (lk, lv) = v.split_once(':').unwrap_or((v, ""));
        spec = spec.label(lk, lv);
    }
    Ok(spec)
}

async fn register(app: &App, q: &[(String, String)]) -> Reply {
    let spec = match spec_of(q) {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, e),
    };
    let handle = match &spec.kind {
        MetricKind::Counter => app
            .worker
            .counter_with(spec.clone())
            .await
            .map(Handle::Counter),
        MetricKind::Gauge { .. } => app.worker.gauge_with(spec.clone()).await.map(Handle::Gauge),
        _ => app
            .worker
            .histogram_with(spec.clone())
            .await
            .map(Handle::Histogram),
    };
    match handle {
        Ok(h) => {
            if let Ok(mut m) = app.metrics.lock() {
                m.insert(spec.name.clone(), h);
            }
            (StatusCode::OK, "registered\n".into())
        }
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")),
    }
}

fn update(app: &App, op: &str, q: &[(String, String)], info: Option<&RequestInfo>) -> Reply {
    let name = param(q, "name").unwrap_or("");
    let Some(handle) = app.metrics.lock().ok().and_then(|m| m.get(name).cloned()) else {
        return (
            StatusCode::NOT_FOUND,
            format!("metric {name} is not registered here\n"),
        );
    };
    let n: u64 = param(q, "n").and_then(|v| v.parse().ok()).unwrap_or(1);
    let v: f64 = param(q, "v").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    match (op, handle) {
        ("add", Handle::Counter(c)) => c.add(n),
        ("defer", Handle::Counter(c)) => match info {
            Some(info) => info.add(&c, n),
            None => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no request info\n".into(),
                )
            }
        },
        ("defer-late", Handle::Counter(c)) => match info {
            Some(info) => {
                let info = info.clone();
                let ms = param(q, "ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(100u64);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
                    info.add(&c, n);
                });
            }
            None => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no request info\n".into(),
                )
            }
        },
        ("set", Handle::Gauge(g)) => g.set(v),
        ("observe", Handle::Histogram(h)) => h.observe(v),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                format!("{op} does not fit {name}\n"),
            )
        }
    }
    (StatusCode::OK, "ok\n".into())
}

/// The descriptors a program started by this worker holds (`ls -l /proc/self/fd` in it).
async fn child_fds() -> Reply {
    let out = tokio::process::Command::new("ls")
        .args(["-l", "/proc/self/fd"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .await;
    match out {
        Ok(out) => (
            StatusCode::OK,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot run ls: {e}\n"),
        ),
    }
}

/// `/code/N`: answers status N (100..=999; 1xx codes are answered 200 by hyper's rules).
fn code(n: &str) -> Reply {
    match n.parse().ok().and_then(|n| StatusCode::from_u16(n).ok()) {
        Some(status) => (status, format!("{n}\n")),
        None => (StatusCode::BAD_REQUEST, "bad code\n".into()),
    }
}

/// The route template of `path`, as an app's router would name it: the fixed routes as
/// themselves, `/code/{n}`, and `/route/…` by its raw path (a badly named route, for the
/// route-cap tests); none for anything else.
fn route_of(path: &str) -> Option<&str> {
    match path {
        p if p.starts_with("/code/") => Some("/code/{n}"),
        p if p.starts_with("/route/") => Some(p),
        "/" | "/pid" | "/slot" | "/slow" | "/info" | "/status" => Some(path),
        _ => None,
    }
}

async fn route(app: &App, req: &Request<Incoming>) -> Reply {
    let q = query(req);
    let info = RequestInfo::current();
    if let (Some(info), Some(route)) = (&info, route_of(req.uri().path())) {
        info.set_route(route);
    }
    if let Some((n, seen)) = app.error_every.as_ref().filter(|_| req.uri().path() == "/") {
        if (seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1) % n == 0 {
            return (StatusCode::INTERNAL_SERVER_ERROR, "bad release\n".into());
        }
    }
    match req.uri().path() {
        "/pid" => (StatusCode::OK, std::process::id().to_string()),
        "/slot" => (StatusCode::OK, app.worker.slot().to_string()),
        "/slow" | "/info" => {
            let ms = param(&q, "ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000u64)
                .min(60_000);
            if let Some(info) = info {
                info.set("sleep_ms", &ms.to_string());
                for (k, v) in q.iter().filter(|(k, _)| k != "ms") {
                    info.set(k, v);
                }
            }
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (StatusCode::OK, "slow\n".into())
        }
        "/status" => match serde_json::to_string(&app.worker.status()) {
            Ok(json) => (StatusCode::OK, json),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        "/m/register" => register(app, &q).await,
        "/m/add" => update(app, "add", &q, info.as_ref()),
        "/m/defer" => update(app, "defer", &q, info.as_ref()),
        "/m/defer-late" => update(app, "defer-late", &q, info.as_ref()),
        "/child-fds" => child_fds().await,
        "/from-env-again" => match Worker::from_env() {
            Ok(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "a second Worker::from_env() succeeded\n".into(),
            ),
            Err(e) => (StatusCode::OK, format!("{e}\n")),
        },
        "/m/set" => update(app, "set", &q, info.as_ref()),
        "/m/observe" => update(app, "observe", &q, info.as_ref()),
        p if p.starts_with("/code/") => code(&p["/code/".len()..]),
        _ => (
            StatusCode::OK,
            String::from_utf8_lossy(&app.body).into_owned(),
        ),
    }
}

async fn handle(app: App, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, text) = route(&app, &req).await;
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    Ok(resp)
}

async fn run(args: Args) -> Result<(), flora_cluster::Error> {
    let worker = Worker::from_env()?;
    let misbehave = args.only_slot.is_none_or(|s| s == worker.slot());
    if misbehave {
        if let Some(code) = args.exit_at_start {
            eprintln!(
                "flora-demo: start-up check failed (slot {}), exiting {code}",
                worker.slot()
            );
            std::process::exit(code);
        }
        if args.never_ready {
            worker.shutdown_requested().await;
            return Ok(());
        }
    }
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "1337".into());
    // LISTEN (any address, e.g. unix:/run/app/http.sock) wins over HOST and PORT.
    let addr = std::env::var("LISTEN").unwrap_or_else(|_| format!("{host}:{port}"));
    let listener = worker.listen(&addr).await?;
    // HTTPS when the master was given --tls-cert/--tls-key (built with the `tls` feature).
    #[cfg(feature = "tls")]
    let listener = match worker.tls_from_config()? {
        Some(tls) => listener.with_tls(tls),
        None => listener,
    };
    worker.set_tracking(!args.no_tracking);
    if let Some(ms) = args.crash_after_ms.filter(|_| misbehave) {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            std::process::exit(3);
        });
    }
    let app = App {
        worker: worker.clone(),
        body: Bytes::from(args.body),
        metrics: Arc::new(Mutex::new(HashMap::new())),
        error_every: args.error_every.map(|n| (n, Arc::default())),
    };
    let service = hyper::service::service_fn(move |req| handle(app.clone(), req));
    worker.serve(listener, service).await?;
    if args.hang_on_shutdown && misbehave {
        eprintln!(
            "flora-demo: hanging instead of exiting (slot {})",
            worker.slot()
        );
        std::future::pending::<()>().await;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flora-demo: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flora-demo: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
