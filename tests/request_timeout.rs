//! The request timeout with real processes: a handler that sleeps (asynchronously) past the
//! timeout is answered 503 with an empty body within about the timeout, over HTTP/1, HTTP/2
//! (each stream its own deadline: three streams of one connection, a hyper client) and TLS; the same worker then goes on
//! serving; the master's `/metrics` counts every timed-out request as a 503 and in
//! `flora_request_timeouts_total`; a handler that waits less than the timeout is not cut.
//!
//! The workers are this test binary itself, started again with `FLORA_TIMEOUT_WORKER` set and
//! only the `worker_entry` test selected.

mod support;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use flora_cluster::Worker;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper::client::conn::http2;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::status_server::{scrape, status_port};
use support::tls::{curl, scratch_cert};
use support::{get, wait_for, Cluster, Http, TestDir, IO_TIMEOUT};

/// Set (to anything) in the environment of the re-started test binary: run the worker.
const WORKER_ENV: &str = "FLORA_TIMEOUT_WORKER";
/// The request timeout under test, in ms.
const TIMEOUT_SECS: &str = "2";
/// What a handler past the timeout must be answered within: about the timeout, well before
/// its own sleep of 10 s ends.
const ANSWERED_AFTER: Duration = Duration::from_millis(1500);
const ANSWERED_BEFORE: Duration = Duration::from_secs(5);
/// Longest wait for the counters to show the requests (they count when a body ends).
const COUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// `/` answers the worker's pid; `/sleep/{ms}` sleeps that long (asynchronously), then 200.
async fn app(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match req.uri().path().strip_prefix("/sleep/") {
        Some(ms) => {
            let ms = ms.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            format!("slept {ms} ms\n")
        }
        None => std::process::id().to_string(),
    };
    Ok(Response::new(Full::new(Bytes::from(body))))
}

/// The worker side: runs only in the re-started test binary.
#[test]
fn worker_entry() {
    if std::env::var_os(WORKER_ENV).is_none() {
        return;
    }
    support::self_worker::run_worker(async move {
        let worker = Worker::from_env().expect("worker");
        let port = std::env::var("PORT").expect("PORT");
        let listener = worker
            .listen(&format!("127.0.0.1:{port}"))
            .await
            .expect("listen");
        let listener = match worker.tls_from_config().expect("tls config") {
            Some(tls) => listener.with_tls(tls),
            None => listener,
        };
        let svc = hyper::service::service_fn(app);
        worker.serve(listener, svc).await.expect("serve");
    });
}

/// A master with one self-started worker under the request timeout (HTTPS with `tls`).
fn start(dir: &TestDir, port: u16, tls: bool) -> Cluster {
    let mut master = dir
        .master(port)
        .args(&["--workers", "1", "--request-timeout", TIMEOUT_SECS])
        .program(&support::self_worker::self_worker_argv())
        .env(WORKER_ENV, "1");
    if tls {
        master = master.tls(&scratch_cert(dir, "timeout"));
    }
    master.start()
}

fn assert_answered_in_time(what: &str, elapsed: Duration) {
    assert!(
        (ANSWERED_AFTER..ANSWERED_BEFORE).contains(&elapsed),
        "{what} answered after {elapsed:?}"
    );
}

/// Waits until the master's `/metrics` counts `n` requests with code 503 and `n` request
/// timeouts.
fn wait_counted(cluster: &Cluster, n: f64) {
    let port = status_port(cluster);
    wait_for(COUNT_TIMEOUT, &format!("{n} timeouts in /metrics"), || {
        let expo = scrape(port, None).expo;
        let code_503: f64 = expo
            .named("flora_http_requests_total")
            .filter(|s| s.has_labels(&[("code", "503")]))
            .map(|s| s.value)
            .sum();
        let timeouts = expo.sum("flora_request_timeouts_total");
        (code_503 == n && timeouts == n).then_some(())
    });
}

/// One HTTP/2 stream's answer.
#[derive(Debug)]
struct Stream {
    path: &'static str,
    status: u16,
    elapsed: Duration,
    content_length: Option<String>,
    body: Bytes,
}

/// GETs `paths` at once as streams of one HTTP/2 connection (prior knowledge, a hyper
/// client), each answer timed from its own request.
fn h2_streams(port: u16, paths: &[&'static str]) -> Vec<Stream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        let streams: Vec<_> = paths
            .iter()
            .map(|&path| tokio::spawn(h2_get(send.clone(), port, path)))
            .collect();
        let mut answers = Vec::new();
        for s in streams {
            let answer = tokio::time::timeout(IO_TIMEOUT, s).await;
            answers.push(answer.expect("answered in time").expect("stream task"));
        }
        answers
    })
}

async fn h2_get(
    mut send: http2::SendRequest<Empty<Bytes>>,
    port: u16,
    path: &'static str,
) -> Stream {
    let req = Request::get(format!("http://127.0.0.1:{port}{path}"))
        .body(Empty::new())
        .expect("request");
    let started = Instant::now();
    let resp = send.send_request(req).await.expect("an answer");
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    let content_length = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Stream {
        path,
        status,
        elapsed,
        content_length,
        body,
    }
}

#[test]
fn a_handler_past_the_timeout_is_answered_503_over_http1_and_each_http2_stream() {
    let dir = TestDir::new("req-timeout");
    let port = support::free_port();
    let cluster = start(&dir, port, false);
    let pid = cluster.wait_ready(1)[0];

    // HTTP/1: 503, empty, and the connection is closed after it.
    let mut c = Http::connect(port).expect("connect");
    let started = Instant::now();
    let resp = c.get("/sleep/10000").expect("an answer");
    assert_answered_in_time("HTTP/1", started.elapsed());
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(resp.header("content-length"), Some("0"));
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(resp.body.is_empty());
    assert!(
        c.get("/").is_err(),
        "the connection was closed after the 503"
    );

    // HTTP/2, three streams of one connection: only the one past the timeout is cut.
    for t in h2_streams(port, &["/sleep/10000", "/sleep/100", "/"]) {
        if t.path == "/sleep/10000" {
            assert_eq!((t.status, t.body.len()), (503, 0), "{t:?}");
            assert_eq!(t.content_length.as_deref(), Some("0"), "{t:?}");
            assert_answered_in_time("HTTP/2", t.elapsed);
        } else {
            assert_eq!(t.status, 200, "{t:?}");
            assert!(t.elapsed < ANSWERED_AFTER, "{t:?}");
        }
    }

    // The same worker goes on serving; a handler that waits less than the timeout is not cut.
    let again = get(port, "/").expect("/ after the timeouts");
    assert_eq!((again.status, again.pid()), (200, pid));
    let short = get(port, "/sleep/100").expect("a short sleep");
    assert_eq!(
        (short.status, short.text().as_str()),
        (200, "slept 100 ms\n")
    );
    wait_counted(&cluster, 2.0);
    assert_eq!(cluster.snapshot().slots[0].pid, pid, "never restarted");
}

#[test]
fn over_tls_a_handler_past_the_timeout_is_answered_503_on_both_http_versions() {
    let dir = TestDir::new("req-timeout-tls");
    let port = support::free_port();
    let cluster = start(&dir, port, true);
    let pid = cluster.wait_ready(1)[0];
    let ca = dir.scratch("cert.pem");
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let started = Instant::now();
        let c = curl(port, &ca, &[flag, "-i"], "/sleep/10000");
        assert_answered_in_time(flag, started.elapsed());
        assert!(c.ok, "{}", c.stderr);
        assert_eq!(c.http_version, version);
        let head = c.body.to_ascii_lowercase();
        assert!(head.starts_with(&format!("http/{version} 503")), "{head}");
        assert!(head.contains("content-length: 0\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "an empty body: {head}");
    }
    let c = curl(port, &ca, &["--http2"], "/");
    assert_eq!(c.body.trim(), pid.to_string(), "the same worker answers");
    wait_counted(&cluster, 2.0);
}
