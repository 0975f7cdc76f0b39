//! The deadline over real scoreboard guards and tokio timers: what a timed-out request is
//! answered, what is recorded, and that a handler answering at once arms nothing.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes};
use hyper::Response;

use super::{poll_expired, timeout_ms};
use crate::scoreboard::{RequestGuard, Scoreboard};
use crate::worker::track::{TrackedBody, TrackedFuture};

type Answer = Result<Response<TrackedBody<Full<Bytes>>>, Infallible>;

/// Longest any test here waits for a deadline (a hung test fails instead).
const BOUND: Duration = Duration::from_secs(5);

fn segment() -> (tempfile::TempDir, Scoreboard) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sb = Scoreboard::create(&dir.path().join("s"), "t", 1).expect("segment");
    (dir, sb)
}

fn guard(sb: &Scoreboard, version: u8) -> RequestGuard {
    let conn = sb
        .writer(0)
        .expect("writer")
        .conn_open("127.0.0.1:1".parse().expect("addr"));
    conn.request_begin("GET", "/slow", version)
}

/// Sets its flag when dropped: tells that the handler's future is gone.
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn hello(text: &'static str) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(
        text.as_bytes(),
    ))))
}

/// A handler that waits `wait`, then answers; `dropped` is set when its future goes away.
fn handler(
    wait: Duration,
    dropped: &Arc<AtomicBool>,
) -> impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> {
    let flag = Dropped(dropped.clone());
    async move {
        let _flag = flag;
        tokio::time::sleep(wait).await;
        hello("late\n")
    }
}

async fn body_bytes(resp: Response<TrackedBody<Full<Bytes>>>) -> usize {
    let body = resp.into_body();
    assert!(body.is_end_stream(), "an empty body says so at once");
    assert_eq!(body.size_hint().exact(), Some(0));
    body.collect().await.expect("body").to_bytes().len()
}

/// Sweeps deadlines of `ms` while the returned guard lives (as `serve` does).
fn sweeper(ms: u64) -> impl Drop {
    struct Abort(tokio::task::JoinHandle<()>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let ms = timeout_ms(Some(Duration::from_millis(ms))).expect("a timeout");
    Abort(tokio::spawn(super::sweep(ms)))
}

fn counted(sb: &Scoreboard) -> (Vec<(&'static str, u64)>, u64) {
    let counters = sb.snapshot().totals.counters;
    (counters.codes.seen().collect(), counters.request_timeouts)
}

#[test]
fn timeouts_round_up_to_whole_ms_and_zero_is_none() {
    let ms = |d| timeout_ms(Some(d)).map(std::num::NonZeroU32::get);
    assert_eq!(timeout_ms(None), None);
    assert_eq!(ms(Duration::ZERO), None);
    assert_eq!(ms(Duration::from_nanos(1)), Some(1));
    assert_eq!(ms(Duration::from_micros(2500)), Some(3));
    assert_eq!(ms(Duration::from_secs(2)), Some(2000));
    assert_eq!(ms(Duration::MAX), Some(u32::MAX));
}

#[test]
fn no_timeout_never_expires_and_arms_nothing() {
    let mut timer = None;
    let mut cx = Context::from_waker(Waker::noop());
    assert_eq!(poll_expired(&mut timer, None, &mut cx), Poll::Pending);
    assert!(timer.is_none());
}

#[test]
fn a_handler_ready_in_its_first_poll_arms_no_timer() {
    let (_dir, sb) = segment();
    let fut = TrackedFuture::new(
        std::future::ready(hello("hi\n")),
        Some(guard(&sb, 11)),
        true,
        timeout_ms(Some(Duration::from_millis(1))),
    );
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    // No runtime and no sweeper here: nothing is armed.
    let Poll::Ready(Ok(resp)) = fut.as_mut().poll(&mut cx) else {
        panic!("a ready handler answers in the first poll");
    };
    assert!(!fut.armed());
    assert_eq!(resp.status(), 200);
    drop(resp);
    assert_eq!(counted(&sb), (vec![("200", 1)], 0));
}

#[tokio::test]
async fn a_handler_past_its_deadline_is_dropped_and_answered_503_with_an_empty_body() {
    let (_dir, sb) = segment();
    let _sweeper = sweeper(50);
    let dropped = Arc::new(AtomicBool::new(false));
    let timeout = Duration::from_millis(50);
    let fut = TrackedFuture::new(
        handler(Duration::from_secs(3600), &dropped),
        Some(guard(&sb, 11)),
        true,
        timeout_ms(Some(timeout)),
    );
    let start = Instant::now();
    let resp: Answer = tokio::time::timeout(BOUND, fut).await.expect("answered");
    let resp = resp.expect("no error");
    assert!(start.elapsed() >= timeout, "{:?}", start.elapsed());
    assert!(
        dropped.load(Ordering::SeqCst),
        "the handler's future is gone"
    );
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["content-length"], "0");
    assert_eq!(resp.headers()["connection"], "close");
    assert_eq!(body_bytes(resp).await, 0);
    assert_eq!(counted(&sb), (vec![("503", 1)], 1));
}

#[tokio::test]
async fn an_http2_stream_past_its_deadline_gets_no_connection_header() {
    let (_dir, sb) = segment();
    let _sweeper = sweeper(20);
    let dropped = Arc::new(AtomicBool::new(false));
    let fut = TrackedFuture::new(
        handler(Duration::from_secs(3600), &dropped),
        Some(guard(&sb, 20)),
        false,
        timeout_ms(Some(Duration::from_millis(20))),
    );
    let resp: Answer = tokio::time::timeout(BOUND, fut).await.expect("answered");
    let resp = resp.expect("no error");
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("connection").is_none());
    assert_eq!(resp.headers()["content-length"], "0");
    drop(resp);
    assert_eq!(counted(&sb), (vec![("503", 1)], 1));
}

#[tokio::test]
async fn a_handler_that_waits_but_answers_in_time_is_not_cut() {
    let (_dir, sb) = segment();
    let _sweeper = sweeper(60_000);
    let dropped = Arc::new(AtomicBool::new(false));
    let fut = TrackedFuture::new(
        handler(Duration::from_millis(20), &dropped),
        Some(guard(&sb, 11)),
        true,
        timeout_ms(Some(Duration::from_secs(60))),
    );
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert!(fut.armed(), "a waiting handler arms its deadline");
    let resp: Answer = tokio::time::timeout(BOUND, fut).await.expect("answered");
    let resp = resp.expect("no error");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("connection").is_none());
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"late\n");
    assert_eq!(counted(&sb), (vec![("200", 1)], 0));
}

#[tokio::test]
async fn untracked_the_timeout_still_answers_503_and_counts_nothing() {
    let (_dir, sb) = segment();
    let _sweeper = sweeper(20);
    let dropped = Arc::new(AtomicBool::new(false));
    let fut = TrackedFuture::new(
        handler(Duration::from_secs(3600), &dropped),
        None,
        true,
        timeout_ms(Some(Duration::from_millis(20))),
    );
    let resp: Answer = tokio::time::timeout(BOUND, fut).await.expect("answered");
    let resp = resp.expect("no error");
    assert_eq!(resp.status(), 503);
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(body_bytes(resp).await, 0);
    assert_eq!(counted(&sb), (vec![], 0));
}
