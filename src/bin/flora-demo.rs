//! `flora-demo`: a hyper worker on the flora-cluster worker API, with flags to misbehave
//! (used by the tests and the quick start).
//!
//! Routes: `/` → `Hello World\n` (or `--body`), `/pid`, `/slot`, `/slow?ms=N`.

use std::convert::Infallible;
use std::time::Duration;

use clap::Parser;
use flora_cluster::worker::{RequestInfo, Worker};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};

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
}

async fn handle(
    req: Request<Incoming>,
    body: Bytes,
    slot: usize,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = match req.uri().path() {
        "/pid" => Bytes::from(std::process::id().to_string()),
        "/slot" => Bytes::from(slot.to_string()),
        "/slow" => {
            let ms = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000u64)
                .min(60_000);
            if let Some(info) = RequestInfo::of(&req) {
                info.set("sleep_ms", &ms.to_string());
            }
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Bytes::from("slow\n")
        }
        _ => body,
    };
    let mut resp = Response::new(Full::new(text));
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
    let listener = worker.listen(&format!("{host}:{port}")).await?;
    if let Some(ms) = args.crash_after_ms.filter(|_| misbehave) {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            std::process::exit(3);
        });
    }
    let body = Bytes::from(args.body);
    let slot = worker.slot();
    let service = hyper::service::service_fn(move |req| handle(req, body.clone(), slot));
    worker.serve(listener, service).await
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
