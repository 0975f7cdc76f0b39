//! The request timeout (`--request-timeout`, [`crate::Worker::set_request_timeout`]): a
//! request whose handler has not produced its response head within the timeout is answered
//! `503 Service Unavailable` (the worker is the app server, not a gateway, so not 504) with an
//! empty body, and its handler's future is dropped. A body that already started streaming is
//! not cut.
//!
//! No per-request cost while handlers answer in their first poll: a request arms a deadline
//! (a tokio timer, made then) only when its handler returns `Pending`, so the clock is read and
//! the timer made only for requests that wait anyway. The timeout counts from that first poll,
//! which comes right after the request's head was read.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH};
use hyper::{Response, StatusCode};

/// The status a timed-out request is answered with.
pub(crate) const TIMED_OUT: StatusCode = StatusCode::SERVICE_UNAVAILABLE;

/// One request's deadline: nothing until its handler first waits, then a timer.
#[derive(Debug)]
pub(crate) struct Deadline {
    /// The request timeout (`None`: none).
    timeout: Option<Duration>,
    /// Made on the handler's first `Pending`.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Deadline {
    /// A deadline `timeout` after the handler's first wait (`None`: never).
    #[inline]
    pub(crate) const fn new(timeout: Option<Duration>) -> Self {
        Self {
            timeout,
            sleep: None,
        }
    }

    /// Call after the handler returned `Pending`: ready once the deadline passed (the first
    /// call arms it and registers `cx`'s waker, so the task is polled again then).
    #[inline]
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(timeout) = self.timeout else {
            return Poll::Pending;
        };
        self.sleep
            .get_or_insert_with(|| arm(timeout))
            .as_mut()
            .poll(cx)
    }

    /// Whether the timer exists (the handler waited at least once).
    #[cfg(test)]
    pub(crate) fn armed(&self) -> bool {
        self.sleep.is_some()
    }
}

/// The timer of a request whose handler waits (out of line: the first poll stays small).
#[cold]
#[inline(never)]
fn arm(timeout: Duration) -> Pin<Box<tokio::time::Sleep>> {
    Box::pin(tokio::time::sleep(timeout))
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

#[cfg(test)]
mod tests;
