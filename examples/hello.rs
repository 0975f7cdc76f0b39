//! The original `worker.js`: answers `Hello World\n` (text/plain) on `HOST:PORT` from the
//! environment (defaults 127.0.0.1 and 1337), or on `LISTEN` when set (any address
//! `Worker::listen` takes, e.g. `unix:/run/hello.sock`). Runs under a master or standalone:
//! `cargo run --example hello`.
#![deny(warnings)]

use std::convert::Infallible;

use flora_cluster::Worker;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), flora_cluster::Error> {
    let worker = Worker::from_env()?;
    // The benchmarks' untracked baseline: the same server with no scoreboard writes.
    if std::env::var_os("HELLO_UNTRACKED").is_some() {
        worker.set_tracking(false);
    }
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "1337".into());
    let addr = std::env::var("LISTEN").unwrap_or_else(|_| format!("{host}:{port}"));
    let listener = worker.listen(&addr).await?;
    let hello = hyper::service::service_fn(|_req| async {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"Hello World\n")));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        Ok::<_, Infallible>(resp)
    });
    worker.serve(listener, hello).await
}
