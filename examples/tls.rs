//! HTTPS with HTTP/2 and HTTP/1.1: answers `Hello over TLS (HTTP/x)` on `HOST:PORT`
//! (defaults 127.0.0.1:8443).
//!
//! Under a master, the certificate and key are the master's `--tls-cert`/`--tls-key` (each
//! generation reads them at start, so a reload serves renewed files):
//!
//! ```text
//! cargo build --features tls --example tls --bin flora-cluster
//! target/debug/flora-cluster run -w 2 --tls-cert cert.pem --tls-key key.pem -- target/debug/examples/tls
//! curl -k --http2 https://127.0.0.1:8443/
//! ```
//!
//! Standalone, pass the files as arguments: `cargo run --features tls --example tls -- cert.pem key.pem`.
#![deny(warnings)]

use std::convert::Infallible;

use flora_cluster::worker::{TlsConfig, Worker};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), flora_cluster::Error> {
    let worker = Worker::from_env()?;
    let tls = match worker.tls_from_config()? {
        Some(tls) => tls,
        None => {
            let mut files = std::env::args().skip(1);
            let (Some(cert), Some(key)) = (files.next(), files.next()) else {
                eprintln!("usage: tls CERT.pem KEY.pem (or run it under flora-cluster --tls-cert/--tls-key)");
                std::process::exit(2);
            };
            TlsConfig::from_pem_files(cert, key)?
        }
    };
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "8443".into());
    let listener = worker
        .listen(&format!("{host}:{port}"))
        .await?
        .with_tls(tls);
    let hello = hyper::service::service_fn(|req: Request<Incoming>| async move {
        let body = format!("Hello over TLS ({:?})\n", req.version());
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
    });
    worker.serve(listener, hello).await
}
