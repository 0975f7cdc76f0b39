//! A standalone worker serves on a Unix socket (`worker.listen("unix:PATH")`): HTTP/1.1 and
//! HTTP/2 (prior knowledge) through `curl --unix-socket`, every request tracked in its slot.
//!
//! The worker is this test binary itself, started again with `FLORA_UNIX_WORKER=PATH` and only
//! the `worker_entry` test selected.

mod support;

use std::convert::Infallible;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use flora_cluster::Worker;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::Response;
use support::{kill_and_reap, wait_for, TestDir};

/// The socket path the re-started test binary listens on.
const WORKER_ENV: &str = "FLORA_UNIX_WORKER";
/// Longest wait for the worker to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The worker side: runs only in the re-started test binary. `/count` answers the requests
/// this worker's slot has counted so far.
#[test]
fn worker_entry() {
    let Ok(path) = std::env::var(WORKER_ENV) else {
        return;
    };
    support::self_worker::run_worker(async move {
        let worker = Worker::from_env().expect("worker");
        let listener = worker
            .listen(&format!("unix:{path}"))
            .await
            .expect("listen");
        let w = worker.clone();
        let svc = hyper::service::service_fn(move |req| {
            let body = match req.uri().path() {
                "/count" => {
                    let snap = w.status();
                    let c = &snap.slots[0];
                    format!("{} {}\n", c.counters.requests_total, c.connections.len())
                }
                _ => format!("hello {:?}\n", req.version()),
            };
            async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
        });
        worker.serve(listener, svc).await.expect("serve");
    });
}

/// Kills and reaps the worker however the test ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        kill_and_reap(&mut self.0);
    }
}

fn start_worker(sock: &Path) -> Reaped {
    let argv = support::self_worker::self_worker_argv();
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .env(WORKER_ENV, sock)
        .stdout(Stdio::null())
        .spawn()
        .expect("start the worker");
    Reaped(child)
}

fn curl(sock: &Path, extra: &[&str], urls: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10", "--unix-socket"])
        .arg(sock)
        .args(extra)
        .args(urls)
        .output()
        .expect("run curl")
}

fn text(out: &Output) -> String {
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_unix_socket_serves_http1_and_http2_and_tracks_requests() {
    let dir = TestDir::new("serve-unix");
    let sock = dir.scratch("http.sock");
    let _worker = start_worker(&sock);
    wait_for(START_TIMEOUT, "the worker to answer on its socket", || {
        let out = curl(&sock, &[], &["http://x/"]);
        out.status.success().then_some(())
    });
    assert_eq!(
        text(&curl(&sock, &["--http1.1"], &["http://x/"])),
        "hello HTTP/1.1\n"
    );
    assert_eq!(
        text(&curl(&sock, &["--http2-prior-knowledge"], &["http://x/"])),
        "hello HTTP/2.0\n"
    );
    // Two requests on one keep-alive connection, then the count: all tracked, with the
    // connection open while `/count` runs.
    let out = text(&curl(
        &sock,
        &["--http1.1"],
        &["http://x/a", "http://x/b", "http://x/count"],
    ));
    let counted: Vec<&str> = out.lines().collect();
    assert_eq!(counted[..2], ["hello HTTP/1.1", "hello HTTP/1.1"]);
    let mut figures = counted[2]
        .split(' ')
        .map(|n| n.parse::<u64>().expect("number"));
    let (requests, conns) = (figures.next(), figures.next());
    // The wait's requests (at least one), two checks, two more; `/count` itself is in flight.
    assert!(requests >= Some(5), "requests counted: {requests:?}");
    assert_eq!(conns, Some(1), "the open connection is tracked");
}
