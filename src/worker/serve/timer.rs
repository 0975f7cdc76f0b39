//! A coarse timer for hyper's header-read timeout (the slowloris guard).
//!
//! hyper arms a header-read timer for every request of a keep-alive connection. With tokio's
//! timer that is a clock read, a timer-wheel insertion and a removal per request. Here "now"
//! is one relaxed load of a clock refreshed by one sweeper task per `serve`, and arming is one
//! relaxed store into the connection's entry ([`super::drain::Entry`]), found through a
//! thread-local set while the connection is polled; the sweeper wakes the connections whose
//! deadline passed. Deadlines fire up to one tick late (a tick is a quarter of the limit, at
//! most [`MAX_TICK`]).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::drain::{Drain, Entry};

/// Longest pause between two sweeps.
const MAX_TICK: Duration = Duration::from_millis(500);
/// Shortest pause between two sweeps.
const MIN_TICK: Duration = Duration::from_millis(10);
/// A disarmed deadline.
pub(super) const NEVER: u64 = u64::MAX;

thread_local! {
    /// The entry of the connection being polled on this thread (set by `Watched::poll`).
    static CURRENT: Cell<Option<Arc<Entry>>> = const { Cell::new(None) };
}

/// Runs `f` with `entry` as this thread's current connection entry, then takes it back (also
/// when `f` panics).
pub(super) fn with_entry<R>(entry: &mut Option<Arc<Entry>>, f: impl FnOnce() -> R) -> R {
    struct Restore<'a> {
        slot: &'a mut Option<Arc<Entry>>,
        outer: Option<Arc<Entry>>,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let outer = self.outer.take();
            if let Ok(mine) = CURRENT.try_with(|c| c.replace(outer)) {
                *self.slot = mine;
            }
        }
    }
    match CURRENT.try_with(|c| c.replace(entry.take())) {
        Ok(outer) => {
            let _restore = Restore { slot: entry, outer };
            f()
        }
        Err(_) => f(),
    }
}

/// The coarse clock: milliseconds since `base`, refreshed by the sweeper.
#[derive(Debug)]
pub(super) struct Clock {
    /// Unique in the process (the per-thread cache's key; an address could be reused).
    id: u64,
    base: Instant,
    now_ms: AtomicU64,
}

/// Ids of clocks made so far.
static NEXT_CLOCK: AtomicU64 = AtomicU64::new(1);

impl Clock {
    /// Milliseconds since the start, as of the last sweep.
    pub(super) fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }
}

/// hyper's [`hyper::rt::Timer`] on the coarse clock. Clones share the clock.
#[derive(Debug, Clone)]
pub(super) struct CoarseTimer {
    clock: Arc<Clock>,
    tick: Duration,
    /// The header-read limit: hyper asks for `now() + limit` once per request.
    limit: Duration,
    /// The same in ms.
    limit_ms: u64,
}

/// This thread's last answer to `now()` and the deadline `now() + limit`: hyper asks for
/// those once per request, and `Instant` arithmetic costs more than the rest of the timer.
#[derive(Debug, Clone, Copy)]
struct Cached {
    /// The clock's id.
    clock: u64,
    ms: u64,
    now: Instant,
    deadline: Instant,
}

thread_local! {
    static CACHED: Cell<Option<Cached>> = const { Cell::new(None) };
}

impl CoarseTimer {
    /// A timer for deadlines around `limit` (swept about 4 times per `limit`).
    pub(super) fn new(limit: Duration) -> Self {
        Self {
            clock: Arc::new(Clock {
                id: NEXT_CLOCK.fetch_add(1, Ordering::Relaxed),
                base: Instant::now(),
                now_ms: AtomicU64::new(0),
            }),
            tick: (limit / 4).clamp(MIN_TICK, MAX_TICK),
            limit,
            limit_ms: u64::try_from(limit.as_millis()).unwrap_or(NEVER - 1),
        }
    }

    /// `now()` and `now() + limit` as of the clock's last tick (cached per thread).
    fn cached(&self) -> Cached {
        let clock = self.clock.id;
        let ms = self.now_ms();
        let hit = CACHED
            .try_with(Cell::get)
            .ok()
            .flatten()
            .filter(|c| c.clock == clock && c.ms == ms);
        hit.unwrap_or_else(|| {
            let now = self.clock.base + Duration::from_millis(ms);
            let fresh = Cached {
                clock,
                ms,
                now,
                deadline: now + self.limit,
            };
            let _ = CACHED.try_with(|c| c.set(Some(fresh)));
            fresh
        })
    }

    /// The shared clock.
    pub(super) fn clock(&self) -> Arc<Clock> {
        self.clock.clone()
    }

    /// The sweeper: refreshes the clock and wakes the connections of `drain` whose deadline
    /// passed. Run it in a task for as long as the connections run.
    pub(super) async fn run_sweeper(self, drain: Arc<Drain>) {
        let mut every = tokio::time::interval(self.tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let now = self.ms(Instant::now());
            self.clock.now_ms.store(now, Ordering::Relaxed);
            drain.wake_expired(now);
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn ms(&self, at: Instant) -> u64 {
        // u64 arithmetic (`as_millis` is a u128 one).
        let d = at.saturating_duration_since(self.clock.base);
        d.as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(d.subsec_millis()))
    }

    /// A sleep until `deadline` (ms): the connection's own entry when called while a watched
    /// connection is polled (no allocation: a zero-sized box), else a stand-alone sleep.
    fn sleep_ms(&self, deadline: u64) -> Pin<Box<dyn hyper::rt::Sleep>> {
        if with_current(|e| e.set_deadline(deadline)).is_some() {
            return Box::pin(ConnSleep);
        }
        Box::pin(FallbackSleep {
            at: self.clock.base + Duration::from_millis(deadline),
            sleep: None,
        })
    }
}

/// Runs `f` on the entry of the connection being polled on this thread, if any.
fn with_current<R>(f: impl FnOnce(&Entry) -> R) -> Option<R> {
    CURRENT
        .try_with(|c| {
            let entry = c.take();
            let out = entry.as_deref().map(f);
            c.set(entry);
            out
        })
        .ok()
        .flatten()
}

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let d = u64::try_from(duration.as_millis()).unwrap_or(NEVER - 1);
        self.sleep_ms(self.now_ms().saturating_add(d))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let c = self.cached();
        if deadline == c.deadline {
            return self.sleep_ms(c.ms.saturating_add(self.limit_ms));
        }
        self.sleep_ms(self.ms(deadline))
    }

    fn now(&self) -> Instant {
        self.cached().now
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        let ms = self.ms(new_deadline);
        if sleep.is::<ConnSleep>() && with_current(|e| e.set_deadline(ms)).is_some() {
            return;
        }
        *sleep = self.sleep_ms(ms);
    }
}

/// The header-read sleep of a watched connection: its deadline lives in the connection's
/// entry, which the sweeper watches. Zero-sized, so hyper's box of it allocates nothing.
#[derive(Debug)]
struct ConnSleep;

impl hyper::rt::Sleep for ConnSleep {}

impl Future for ConnSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match with_current(Entry::poll_deadline) {
            Some(done) => done,
            // Polled outside its connection (hyper does not): wake again, and look then.
            None => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

/// A sleep made outside a watched connection: a tokio sleep, created when first polled.
#[derive(Debug)]
struct FallbackSleep {
    at: Instant,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl hyper::rt::Sleep for FallbackSleep {}

impl Future for FallbackSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let at = this.at;
        this.sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at.into())))
            .as_mut()
            .poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    #[tokio::test]
    async fn a_sleep_outside_a_connection_fires_after_its_deadline_and_a_reset_moves_it() {
        let timer = CoarseTimer::new(Duration::from_millis(40));
        let drain = Arc::new(Drain::new(timer.clock()));
        let sweeper = tokio::spawn(timer.clone().run_sweeper(drain));
        let start = Instant::now();
        timer.sleep(Duration::from_millis(30)).await;
        assert!(start.elapsed() >= Duration::from_millis(20));

        let mut s = timer.sleep_until(timer.now() + Duration::from_secs(3600));
        let quick = tokio::time::timeout(Duration::from_millis(100), s.as_mut()).await;
        assert!(quick.is_err(), "an hour-long sleep is still pending");
        timer.reset(&mut s, timer.now() + Duration::from_millis(20));
        let fired = tokio::time::timeout(Duration::from_secs(5), s).await;
        assert!(fired.is_ok(), "the reset sleep fires");
        sweeper.abort();
    }
}
