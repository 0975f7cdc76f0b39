//! Open connections: their count, the drain, and the entries the coarse timer arms.
//!
//! A connection counts as open from its accept ([`Drain::enter`]). A hyper connection's future checks one flag when hyper has nothing to do (no channel polled per
//! request). To reach idle connections, each registers its task's waker once with its entry;
//! the drain sets the flag and wakes them all, the timer's sweeper wakes those whose deadline
//! passed ([`super::timer`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

use super::timer::{with_entry, Clock, NEVER};

/// A hyper connection that can be asked to finish gracefully.
pub(super) trait Graceful: Future {
    /// HTTP/1: close once idle (now if idle); HTTP/2: GOAWAY, then close when streams end.
    fn shut_down(self: Pin<&mut Self>);
}

/// One connection's header-read deadline (ms on the coarse clock).
#[derive(Debug)]
pub(super) struct Entry {
    clock: Arc<Clock>,
    deadline: AtomicU64,
    /// Whether the sweeper should wake the connection when the deadline passed (set while
    /// hyper waits on it; cleared by the wake).
    armed: AtomicBool,
}

impl Entry {
    /// Sets the deadline.
    pub(super) fn set_deadline(&self, ms: u64) {
        self.deadline.store(ms, Ordering::Relaxed);
    }

    /// Ready once the deadline passed; else armed, so the sweeper wakes the connection then.
    pub(super) fn poll_deadline(&self) -> Poll<()> {
        if self.clock.now_ms() >= self.deadline.load(Ordering::Relaxed) {
            return Poll::Ready(());
        }
        self.armed.store(true, Ordering::Relaxed);
        Poll::Pending
    }
}

/// Open connections of one `serve` call and the drain signal.
#[derive(Debug)]
pub(super) struct Drain {
    clock: Arc<Clock>,
    draining: AtomicBool,
    open: AtomicUsize,
    wakers: Mutex<Wakers>,
    closed: Notify,
    /// Told when the drain starts (connections still before hyper: a handshake, the
    /// protocol check).
    started: Notify,
}

#[derive(Debug, Default)]
struct Wakers {
    entries: Vec<Option<(Arc<Entry>, Waker)>>,
    free: Vec<usize>,
}

impl Drain {
    /// No connections yet; their deadlines are on `clock`.
    pub(super) fn new(clock: Arc<Clock>) -> Self {
        Self {
            clock,
            draining: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            wakers: Mutex::default(),
            closed: Notify::new(),
            started: Notify::new(),
        }
    }

    /// Connections open now.
    pub(super) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn wakers(&self) -> std::sync::MutexGuard<'_, Wakers> {
        self.wakers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes (once) the connections whose deadline is at or before `now`.
    pub(super) fn wake_expired(&self, now: u64) {
        for (entry, waker) in self.wakers().entries.iter().flatten() {
            if entry.deadline.load(Ordering::Relaxed) <= now
                && entry.armed.swap(false, Ordering::Relaxed)
            {
                waker.wake_by_ref();
            }
        }
    }

    /// Shuts every connection down gracefully and waits until all are closed.
    pub(super) async fn shut_down_all(&self) {
        self.draining.store(true, Ordering::Release);
        self.started.notify_waiters();
        for (_, w) in self.wakers().entries.iter().flatten() {
            w.wake_by_ref();
        }
        loop {
            let closed = self.closed.notified();
            if self.open() == 0 {
                return;
            }
            closed.await;
        }
    }

    /// Resolves once the drain has started: a connection that has not reached hyper yet (no
    /// request bytes, a TLS handshake) gives up then instead of holding the drain.
    pub(super) async fn started(&self) {
        loop {
            let started = self.started.notified();
            if self.draining.load(Ordering::Acquire) {
                return;
            }
            started.await;
        }
    }

    /// Counts a connection as open until the returned guard is dropped: take it as soon as
    /// the connection is accepted (before a protocol check or a TLS handshake).
    pub(super) fn enter(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::AcqRel);
        Open(self.clone())
    }

    /// Wraps a hyper connection: shut down gracefully when the drain says so.
    pub(super) fn watch<C: Graceful>(self: &Arc<Self>, conn: C) -> Watched<C> {
        Watched {
            conn,
            drain: self.clone(),
            entry: Some(Arc::new(Entry {
                clock: self.clock.clone(),
                deadline: AtomicU64::new(NEVER),
                armed: AtomicBool::new(false),
            })),
            key: None,
            waker: None,
            shutting: false,
        }
    }

    fn register(&self, key: &mut Option<usize>, entry: Option<&Arc<Entry>>, waker: &Waker) {
        let Some(entry) = entry else { return };
        let mut w = self.wakers();
        let item = Some((entry.clone(), waker.clone()));
        match *key {
            Some(k) => w.entries[k] = item,
            None => {
                let k = match w.free.pop() {
                    Some(k) => {
                        w.entries[k] = item;
                        k
                    }
                    None => {
                        w.entries.push(item);
                        w.entries.len() - 1
                    }
                };
                *key = Some(k);
            }
        }
    }

    fn release(&self, key: Option<usize>) {
        if let Some(k) = key {
            let mut w = self.wakers();
            w.entries[k] = None;
            w.free.push(k);
        }
    }
}

/// An open connection (see [`Drain::enter`]).
#[derive(Debug)]
pub(super) struct Open(Arc<Drain>);

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection future under the drain (see [`Drain::watch`]).
    pub(super) struct Watched<C> {
        #[pin]
        conn: C,
        drain: Arc<Drain>,
        // Its entry; lent to the thread-local while the connection is polled.
        entry: Option<Arc<Entry>>,
        key: Option<usize>,
        waker: Option<Waker>,
        shutting: bool,
    }

    impl<C> PinnedDrop for Watched<C> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            this.drain.release(*this.key);
        }
    }
}

impl<C: Graceful> Future for Watched<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        loop {
            if !*this.shutting && this.drain.draining.load(Ordering::Acquire) {
                *this.shutting = true;
                this.conn.as_mut().shut_down();
            }
            let conn = this.conn.as_mut();
            if let Poll::Ready(out) = with_entry(this.entry, || conn.poll(cx)) {
                return Poll::Ready(out);
            }
            if this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                return Poll::Pending;
            }
            // First wait (or a new task waker): register, then look at the flag again so a
            // drain that started meanwhile is not missed.
            this.drain
                .register(this.key, this.entry.as_ref(), cx.waker());
            *this.waker = Some(cx.waker().clone());
            if *this.shutting || !this.drain.draining.load(Ordering::Acquire) {
                return Poll::Pending;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::worker::serve::timer::CoarseTimer;

    /// A connection that stays pending until asked to shut down.
    struct Idle {
        shut: bool,
    }

    impl Future for Idle {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
            if self.shut {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    impl Graceful for Idle {
        fn shut_down(self: Pin<&mut Self>) {
            self.get_mut().shut = true;
        }
    }

    #[tokio::test]
    async fn the_drain_reaches_idle_connections_and_waits_for_them() {
        let drain = Arc::new(Drain::new(CoarseTimer::new(Duration::from_secs(1)).clock()));
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let d = drain.clone();
                let open = d.enter();
                tokio::spawn(async move {
                    d.watch(Idle { shut: false }).await;
                    drop(open);
                })
            })
            .collect();
        tokio::task::yield_now().await; // each task runs once and waits
        assert_eq!(drain.open(), 3);
        tokio::time::timeout(Duration::from_secs(5), drain.shut_down_all())
            .await
            .expect("every idle connection was shut down");
        assert_eq!(drain.open(), 0);
        for t in tasks {
            t.await.expect("connection task");
        }
    }
}
