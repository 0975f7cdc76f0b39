//! Automatic tracking: a service wrapper that records each request, and a body wrapper that
//! ends the request when its body is fully sent or dropped (byte counting on the socket is in
//! `counting.rs`). The same wrapper applies the request timeout (`deadline.rs`).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::Service;
use hyper::{Request, Response, Version};

use super::deadline::{self, TimeoutMs};
use crate::scoreboard::{ConnGuard, RequestGuard};

thread_local! {
    /// The request whose handler is running on this thread: set by [`TrackedFuture::poll`]
    /// around the app's response future (like a tokio task-local), so a handler finds its
    /// request without anything allocated per request.
    static CURRENT: Cell<Option<RequestGuard>> = const { Cell::new(None) };
}

/// Runs `f` with `guard` as this thread's current request, then takes it back (also when
/// `f` panics), restoring whatever was current before.
fn with_current<R>(guard: &mut Option<RequestGuard>, f: impl FnOnce() -> R) -> R {
    struct Restore<'a> {
        slot: &'a mut Option<RequestGuard>,
        outer: Option<RequestGuard>,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let outer = self.outer.take();
            if let Ok(mine) = CURRENT.try_with(|c| c.replace(outer)) {
                *self.slot = mine;
            }
        }
    }
    match CURRENT.try_with(|c| c.replace(guard.take())) {
        Ok(outer) => {
            let _restore = Restore { slot: guard, outer };
            f()
        }
        // Thread-locals torn down (thread exit): run untracked-as-current.
        Err(_) => f(),
    }
}

/// Handle on the in-flight request of a handler: lets it attach key/value infos, shown on the
/// status page beside the request, and counters added when the request ends.
///
/// ```
/// # use flora_cluster::worker::RequestInfo;
/// # async fn handler(_req: hyper::Request<()>) {
/// // In the response future of a request served by `Worker::serve` (the `async` block of a
/// // `service_fn`); `None` elsewhere.
/// if let Some(info) = RequestInfo::current() {
///     info.set("user", "42");
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RequestInfo {
    conn: ConnGuard,
    /// Its request's start (`RequestGuard::started_ns`): which request of the connection.
    request: u64,
}

impl RequestInfo {
    /// The request whose handler is running now: call it in the response future of a
    /// request served by [`super::Worker::serve`] (the `async` block of a `service_fn`, while
    /// it is polled — like a tokio task-local; not in a task the handler spawned, nor in the
    /// synchronous part of `Service::call`). The returned handle can be kept and moved
    /// anywhere, e.g. into such a task. `None` outside a handler and when tracking is off.
    pub fn current() -> Option<Self> {
        CURRENT
            .try_with(|c| {
                let guard = c.take();
                let info = guard.as_ref().map(|g| Self {
                    conn: g.conn().clone(),
                    request: g.started_ns(),
                });
                c.set(guard);
                info
            })
            .ok()
            .flatten()
    }

    /// Sets `key` to `value` on the request (truncated to the documented limits; a repeated
    /// key replaces its value). Returns false when it could not be stored (all info cells
    /// taken, or the connection is not in the table).
    pub fn set(&self, key: &str, value: &str) -> bool {
        self.conn.set_info(key, value)
    }

    /// Sets the request's route template (`/users/{id}`), shown next to its path on the
    /// status page, in JSON and in `status`; with per-route metrics on, the request counts
    /// under it. Called from the request's handler (its response future), the route counts;
    /// from elsewhere (a task holding this handle) it is only shown. Pass a template, never
    /// a raw path: routes past the cluster's cap count as `route="other"`.
    ///
    /// ```
    /// # use flora_cluster::worker::RequestInfo;
    /// # async fn handler(_req: hyper::Request<()>) {
    /// if let Some(info) = RequestInfo::current() {
    ///     info.set_route("/users/{id}");
    /// }
    /// # }
    /// ```
    pub fn set_route(&self, route: &str) {
        let on_guard = CURRENT
            .try_with(|c| {
                let mut guard = c.take();
                // Its own request only: another HTTP/2 stream of the connection may be the
                // one running now.
                let mine = guard
                    .as_mut()
                    .filter(|g| g.conn().same_conn(&self.conn) && g.started_ns() == self.request);
                let set = mine.map(|g| g.set_route(route)).is_some();
                c.set(guard);
                set
            })
            .unwrap_or(false);
        if !on_guard {
            self.conn.set_route(route);
        }
    }

    /// Adds `n` to `counter` when this request ends (its response body is sent or dropped) —
    /// the original's `req.flora.status.increment`. An add made after the request ended (from
    /// a task that kept this handle) counts when the next request on the connection ends, or
    /// when the connection is closed and the last handle on it dropped.
    pub fn add(&self, counter: &crate::metrics::Counter, n: u64) {
        self.conn.defer_add(counter.cell_index(), n);
    }
}

fn version_code(v: Version) -> u8 {
    match v {
        Version::HTTP_09 => 9,
        Version::HTTP_10 => 10,
        Version::HTTP_11 => 11,
        Version::HTTP_2 => 20,
        Version::HTTP_3 => 30,
        _ => 0,
    }
}

/// Wraps the app's service: every request is tracked from call to the end of its body, and
/// answered 503 when its handler runs past the request timeout. Without a connection guard
/// (tracking off) only the timeout applies.
#[derive(Debug, Clone)]
pub(crate) struct TrackedService<S> {
    inner: S,
    /// The connection's scoreboard entry (`None`: untracked, the timeout only).
    conn: Option<ConnGuard>,
    /// Record the query string with the path.
    show_query: bool,
    /// The request timeout (`None`: none).
    timeout: TimeoutMs,
}

impl<S> TrackedService<S> {
    pub(crate) fn new(
        inner: S,
        conn: Option<ConnGuard>,
        show_query: bool,
        timeout: Option<Duration>,
    ) -> Self {
        Self {
            inner,
            conn,
            show_query,
            timeout: deadline::timeout_ms(timeout),
        }
    }
}

impl<S, B> Service<Request<Incoming>> for TrackedService<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let guard = self.conn.as_ref().map(|conn| {
            let uri = req.uri();
            let target = match (self.show_query, uri.path_and_query()) {
                (true, Some(pq)) => pq.as_str(),
                _ => uri.path(),
            };
            conn.request_begin(req.method().as_str(), target, version_code(req.version()))
        });
        let http1 = req.version() < Version::HTTP_2;
        TrackedFuture::new(self.inner.call(req), guard, http1, self.timeout)
    }
}

pin_project_lite::pin_project! {
    /// The app's response future; hands the request guard to the response body. Past its
    /// deadline it answers 503 ([`super::deadline`]); hyper then drops it, and with it the
    /// app's future (a finished response future is dropped at once, before its answer is
    /// written).
    pub(crate) struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<RequestGuard>,
        // Answered with `Connection: close` when the worker drains or the request timed out.
        http1: bool,
        timeout: TimeoutMs,
        timer: deadline::Timer,
    }
}

impl<F> TrackedFuture<F> {
    /// The future of one request: `guard` its scoreboard record (`None`: untracked),
    /// `timeout` the request timeout (`None`: none).
    #[inline]
    pub(crate) fn new(
        inner: F,
        guard: Option<RequestGuard>,
        http1: bool,
        timeout: TimeoutMs,
    ) -> Self {
        Self {
            inner,
            guard,
            http1,
            timeout,
            timer: None,
        }
    }

    /// Whether its deadline is armed (a timer exists).
    #[cfg(test)]
    pub(crate) fn armed(&self) -> bool {
        self.timer.is_some()
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        match with_current(this.guard, || inner.poll(cx)) {
            Poll::Ready(res) => {
                // An error drops the guard: recorded as a request without response.
                let guard = this.guard.take();
                Poll::Ready(match res {
                    Ok(resp) => Ok(track_response(resp, guard, *this.http1)),
                    Err(e) => Err(e),
                })
            }
            // Only a request whose handler waits arms a deadline (the first time here).
            Poll::Pending => {
                ready!(deadline::poll_expired(this.timer, *this.timeout, cx));
                Poll::Ready(Ok(timed_out(this.guard.take(), *this.http1)))
            }
        }
    }
}

/// The answer to a request past its deadline (its handler's future is dropped): 503 with an
/// empty body, recorded with that status and counted as a timeout.
#[cold]
#[inline(never)]
fn timed_out<B>(mut guard: Option<RequestGuard>, http1: bool) -> Response<TrackedBody<B>> {
    if let Some(g) = guard.as_mut() {
        g.set_status(deadline::TIMED_OUT.as_u16());
        g.conn().writer().request_timed_out();
    }
    tracing::debug!("a request ran past the request timeout: answered 503");
    deadline::timed_out_response(TrackedBody::empty(guard), http1)
}

/// Hands the request guard to the response body; marks HTTP/1 answers of a draining worker
/// `Connection: close`. Takes the response apart once (one move of its head).
fn track_response<B>(
    resp: Response<B>,
    mut guard: Option<RequestGuard>,
    http1: bool,
) -> Response<TrackedBody<B>> {
    let (mut parts, body) = resp.into_parts();
    if let Some(g) = guard.as_mut() {
        g.set_status(parts.status.as_u16());
        if http1 && g.conn().writer().is_draining() {
            parts.headers.insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
        }
    }
    let body = TrackedBody {
        inner: Some(body),
        guard,
    };
    Response::from_parts(parts, body)
}

pin_project_lite::pin_project! {
    /// A response body that records its request when it ends or is dropped. The guard counts
    /// the body bytes as frames go out: hyper drops a body that says it is at its end without
    /// polling it again (a `Full` after its one frame), and the guard's drop records them.
    /// Empty (`inner` is `None`) for the answer to a timed-out request.
    pub struct TrackedBody<B> {
        #[pin]
        inner: Option<B>,
        guard: Option<RequestGuard>,
    }
}

impl<B> TrackedBody<B> {
    /// An empty body (no frame, `content-length: 0`) that records `guard`'s request.
    pub(crate) fn empty(guard: Option<RequestGuard>) -> Self {
        Self { inner: None, guard }
    }
}

/// The body's end: its guard's drop records the request (kept out of line: `poll_frame` stays
/// small enough to be inlined into hyper's write loop).
#[inline(never)]
fn end(guard: &mut Option<RequestGuard>) {
    guard.take();
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            end(this.guard);
            return Poll::Ready(None);
        };
        let res = ready!(inner.poll_frame(cx));
        match &res {
            Some(Ok(frame)) => {
                if let (Some(d), Some(g)) = (frame.data_ref(), this.guard.as_mut()) {
                    g.add_body_bytes(hyper::body::Buf::remaining(d) as u64);
                }
            }
            None => end(this.guard),
            Some(Err(_)) => {}
        }
        Poll::Ready(res)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoreboard::Scoreboard;

    fn snapshot_infos(sb: &Scoreboard) -> Vec<(String, String)> {
        sb.snapshot().slots[0]
            .connections
            .iter()
            .filter_map(|c| c.request.as_ref())
            .flat_map(|r| r.infos.clone())
            .collect()
    }

    #[test]
    fn current_request_only_while_its_future_runs_and_restored_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sb = Scoreboard::create(&dir.path().join("s"), "t", 1).expect("segment");
        let w = sb.writer(0).expect("writer");
        let outer_conn = w.conn_open("127.0.0.1:1".parse().expect("addr"));
        let inner_conn = w.conn_open("127.0.0.1:2".parse().expect("addr"));
        assert!(RequestInfo::current().is_none(), "no handler running");
        let mut outer = Some(outer_conn.request_begin("GET", "/outer", 11));
        let mut inner = Some(inner_conn.request_begin("GET", "/inner", 11));
        with_current(&mut outer, || {
            RequestInfo::current().expect("outer").set("who", "outer");
            with_current(&mut inner, || {
                RequestInfo::current().expect("inner").set("who", "inner");
            });
            // The nested one is back in its own slot, the outer one current again.
            assert!(inner.is_some());
            RequestInfo::current()
                .expect("outer again")
                .set("again", "yes");
        });
        assert!(outer.is_some() && inner.is_some(), "guards handed back");
        assert!(
            RequestInfo::current().is_none(),
            "nothing current after the poll"
        );
        let mut infos = snapshot_infos(&sb);
        infos.sort();
        let want = [("again", "yes"), ("who", "inner"), ("who", "outer")];
        assert_eq!(
            infos,
            want.map(|(k, v)| (k.to_string(), v.to_string())).to_vec()
        );
    }

    #[test]
    fn a_route_set_through_another_streams_handle_does_not_count_for_the_running_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sb = Scoreboard::create_with_routes(&dir.path().join("s"), "t", 1, 4).expect("sb");
        let conn = sb
            .writer(0)
            .expect("writer")
            .conn_open("127.0.0.1:1".parse().expect("addr"));
        // Two HTTP/2 streams of one connection.
        let mut a = Some(conn.request_begin("GET", "/a/1", 20));
        std::thread::sleep(std::time::Duration::from_micros(10));
        let mut b = Some(conn.request_begin("GET", "/b/1", 20));
        let info_a = with_current(&mut a, || RequestInfo::current().expect("a"));
        with_current(&mut b, || {
            RequestInfo::current().expect("b").set_route("/b/{id}");
            info_a.set_route("/a/{id}"); // a's handle while b runs: not b's route
        });
        with_current(&mut a, || info_a.set_route("/a/{id}"));
        if let Some(g) = b.take() {
            g.finish(200, 0);
        }
        if let Some(g) = a.take() {
            g.finish(404, 0);
        }
        let mut counted: Vec<(String, Vec<(String, u64)>)> = sb
            .snapshot()
            .routes
            .iter()
            .map(|r| {
                let codes = r.codes.seen().map(|(c, n)| (c.to_string(), n)).collect();
                (r.route.clone(), codes)
            })
            .collect();
        counted.sort();
        assert_eq!(
            counted,
            [
                ("/a/{id}".to_string(), vec![("404".to_string(), 1)]),
                ("/b/{id}".to_string(), vec![("200".to_string(), 1)]),
            ]
        );
    }

    #[test]
    fn a_panicking_handler_still_hands_its_request_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sb = Scoreboard::create(&dir.path().join("s"), "t", 1).expect("segment");
        let conn = sb
            .writer(0)
            .expect("writer")
            .conn_open("127.0.0.1:1".parse().expect("addr"));
        let mut guard = Some(conn.request_begin("GET", "/", 11));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            with_current(&mut guard, || panic!("handler panicked"));
        }));
        assert!(caught.is_err());
        assert!(guard.is_some(), "the guard is back with its future");
        assert!(RequestInfo::current().is_none());
    }
}
