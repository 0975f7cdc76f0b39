//! `Worker::serve` takes tower services: a real `axum::Router` (shared state, path parameters,
//! a `middleware::from_fn`, a `tower-http` layer) runs under the master, and
//! `RequestInfo::current()` finds its request inside the handler and inside the middleware;
//! a bare tower service's `poll_ready` is driven (also when it first answers `Pending`) before
//! each request is called.
//!
//! The workers are this test binary itself, started again with `FLORA_TOWER_WORKER` set and
//! only the `worker_entry` test selected.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use flora_cluster::worker::RequestInfo;
use flora_cluster::Worker;
use hyper::header::{HeaderName, HeaderValue};
use support::{get as http_get, kill_and_reap, wait_for, Http, TestDir, START_TIMEOUT};
use tokio::sync::Notify;
use tower_http::set_header::SetResponseHeaderLayer;

/// Which worker the re-started test binary runs: `axum` or `gate`.
const WORKER_ENV: &str = "FLORA_TOWER_WORKER";
/// Longest a held request waits for its release (a failed test never hangs the worker).
const HOLD_MAX: Duration = Duration::from_secs(20);
/// Longest wait for a held request to show in the scoreboard.
const SHOW_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct AppState {
    hits: Arc<AtomicU64>,
    release: Arc<Notify>,
}

/// Middleware: tags the request (through `RequestInfo`) and the response.
async fn tag(req: Request, next: Next) -> Response {
    let seen = RequestInfo::current().is_some_and(|i| i.set("mw", "from_fn"));
    let mut resp = next.run(req).await;
    let value = HeaderValue::from_static(if seen { "seen" } else { "missing" });
    resp.headers_mut().insert("x-mw", value);
    resp
}

/// Handler: records the user id on the request, waits for `/release`, answers JSON.
async fn hold_user(State(state): State<AppState>, Path(id): Path<u32>) -> Json<serde_json::Value> {
    let hits = state.hits.fetch_add(1, Ordering::Relaxed) + 1;
    let current = RequestInfo::current().is_some_and(|i| i.set("user", &id.to_string()));
    let _ = tokio::time::timeout(HOLD_MAX, state.release.notified()).await;
    Json(serde_json::json!({ "id": id, "hits": hits, "current": current }))
}

async fn release(State(state): State<AppState>) -> &'static str {
    state.release.notify_waiters();
    "released\n"
}

fn router() -> Router {
    let state = AppState {
        hits: Arc::new(AtomicU64::new(0)),
        release: Arc::new(Notify::new()),
    };
    Router::new()
        .route("/users/{id}/hold", get(hold_user))
        .route("/release", get(release))
        .layer(middleware::from_fn(tag))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("x-layer"),
            HeaderValue::from_static("tower-http"),
        ))
        .with_state(state)
}

/// A tower service that is not ready on its first `poll_ready` (it wakes itself) and answers
/// 500 when called before it said ready.
#[derive(Clone, Default)]
struct Gate {
    polls: u8,
}

impl tower_service::Service<hyper::Request<hyper::body::Incoming>> for Gate {
    type Response = hyper::Response<String>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.polls = self.polls.saturating_add(1);
        if self.polls == 1 {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let (status, body) = match self.polls {
            0 | 1 => (500, "called before ready\n".to_string()),
            n => (200, format!("ready after {n} polls\n")),
        };
        let mut resp = hyper::Response::new(body);
        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
        std::future::ready(Ok(resp))
    }
}

/// The worker side: runs only in the re-started test binary.
#[test]
fn worker_entry() {
    let Ok(which) = std::env::var(WORKER_ENV) else {
        return;
    };
    support::self_worker::run_worker(async move {
        let worker = Worker::from_env().expect("worker");
        let port = std::env::var("PORT").expect("PORT");
        let listener = worker
            .listen(&format!("127.0.0.1:{port}"))
            .await
            .expect("listen");
        match which.as_str() {
            "axum" => worker.serve(listener, router()).await,
            _ => worker.serve(listener, Gate::default()).await,
        }
        .expect("serve");
    });
}

/// Kills and reaps the standalone worker however the test ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        kill_and_reap(&mut self.0);
    }
}

#[test]
fn an_axum_router_under_the_master_sees_its_request_in_handler_and_middleware() {
    let dir = TestDir::new("tower-axum");
    let port = support::free_port();
    let cluster = dir
        .master(port)
        .args(&["--workers", "1"])
        .program(&support::self_worker::self_worker_argv())
        .env(WORKER_ENV, "axum")
        .start();
    cluster.wait_ready(1);

    let held = thread::spawn(move || {
        let mut c = Http::connect(port).expect("connect");
        c.get("/users/7/hold").expect("held request")
    });
    let infos = wait_for(SHOW_TIMEOUT, "the held request with its infos", || {
        let snap = cluster.snapshot();
        let req = snap.slots[0]
            .connections
            .iter()
            .filter_map(|c| c.request.as_ref())
            .find(|r| r.path == "/users/7/hold")?
            .clone();
        let mut infos = req.infos;
        infos.sort();
        (infos.len() == 2).then_some(infos)
    });
    assert_eq!(
        infos,
        [("mw", "from_fn"), ("user", "7")].map(|(k, v)| (k.to_string(), v.to_string()))
    );

    let rel = http_get(port, "/release").expect("release");
    assert_eq!(rel.status, 200);
    let resp = held.join().expect("held request thread");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.header("x-layer"),
        Some("tower-http"),
        "tower-http layer"
    );
    assert_eq!(resp.header("x-mw"), Some("seen"), "RequestInfo in from_fn");
    let body: serde_json::Value = serde_json::from_str(&resp.text()).expect("json body");
    assert_eq!(
        body,
        serde_json::json!({ "id": 7, "hits": 1, "current": true })
    );

    let missing = http_get(port, "/nope").expect("404");
    assert_eq!(missing.status, 404);
    let last = wait_for(SHOW_TIMEOUT, "the 404 as the last request", || {
        let snap = cluster.snapshot();
        let last = snap.slots[0].last_request.clone()?;
        (last.path == "/nope").then_some(last)
    });
    assert_eq!(last.status, 404);
}

#[test]
fn a_tower_service_is_called_only_after_poll_ready() {
    let port = support::free_port();
    let argv = support::self_worker::self_worker_argv();
    let child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env(WORKER_ENV, "gate")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the standalone worker");
    let mut child = Reaped(child);
    let first = wait_for(START_TIMEOUT, "the standalone worker to answer", || {
        http_get(port, "/").ok()
    });
    let mut c = Http::connect(port).expect("connect");
    let second = c.get("/again").expect("keep-alive request");
    drop(c);
    kill_and_reap(&mut child.0);
    for resp in [first, second] {
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.text(), "ready after 2 polls\n");
    }
}
