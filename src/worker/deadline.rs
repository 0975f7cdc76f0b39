//! The request timeout (`--request-timeout`, [`crate::Worker::set_request_timeout`]): a
//! request whose handler has not produced its response head within the timeout is answered
//! `503 Service Unavailable` (the worker is the app server, not a gateway, so not 504) with an
//! empty body, and its handler's future is dropped. A body that already started streaming is
//! not cut.
//!
//! No per-request cost while handlers answer in their first poll: a request arms a deadline
//! only when its handler returns `Pending`, so the clock is read and the deadline stored only
//! for requests that wait anyway. The timeout counts from that first poll, which comes right
//! after the request's head was read. Deadlines live on a coarse clock swept by one task per
//! `serve` call (`sweep.rs`): they fire up to an eighth of the timeout late (at most 250 ms),
//! never early. A waiting request pays about 260 instructions for it, a tokio timer per
//! request cost 870 (callgrind, a handler that yields once; no allocation, no timer wheel).

use std::num::NonZeroU32;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH};
use hyper::{Response, StatusCode};

/// The status a timed-out request is answered with.
pub(crate) const TIMED_OUT: StatusCode = StatusCode::SERVICE_UNAVAILABLE;

/// A request timeout as a deadline takes it: whole ms (at least 1), small enough that the
/// per-request future stays small.
pub(crate) type TimeoutMs = Option<NonZeroU32>;

/// `timeout` in whole ms, rounded up (`None` or zero: none; at most about 49 days).
pub(crate) fn timeout_ms(timeout: Option<Duration>) -> TimeoutMs {
    let d = timeout.filter(|d| !d.is_zero())?;
    let ms = d.as_nanos().div_ceil(1_000_000);
    NonZeroU32::new(u32::try_from(ms).unwrap_or(u32::MAX))
}

/// One request's deadline: `None` until its handler first waits (kept beside its timeout in
/// the request's future, so the future stays small).
pub(crate) type Timer = Option<sweep::Armed>;

/// Call after the handler returned `Pending`: ready once `timeout` passed since the first
/// call, which arms `timer` with `cx`'s waker (woken by the sweeper then). Never ready
/// without a timeout.
#[inline]
pub(crate) fn poll_expired(
    timer: &mut Timer,
    timeout: TimeoutMs,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let Some(ms) = timeout else {
        return Poll::Pending;
    };
    match timer {
        Some(armed) => armed.poll(cx),
        None => {
            *timer = Some(arm(ms, cx.waker()));
            Poll::Pending
        }
    }
}

/// The deadline of a request whose handler waits (out of line: the first poll stays small).
#[cold]
#[inline(never)]
fn arm(ms: NonZeroU32, waker: &Waker) -> sweep::Armed {
    sweep::Armed::new(ms, waker)
}

/// The answer to a timed-out request: 503, `content-length: 0`, and on HTTP/1
/// `Connection: close` (the client may have sent more of a request nobody reads now).
pub(crate) fn timed_out_response<B>(body: B, http1: bool) -> Response<B> {
    let mut resp = Response::new(body);
    *resp.status_mut() = TIMED_OUT;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    if http1 {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

mod sweep;
#[cfg(test)]
mod tests;

pub(crate) use sweep::{refresh as refresh_clock, sweep};
