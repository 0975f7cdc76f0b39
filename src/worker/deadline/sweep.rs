//! Armed deadlines on a coarse clock, cheaper than a tokio timer per waiting request (no
//! allocation, no timer wheel): arming is a clock read and an entry in one process-wide
//! table, checking is one relaxed load, disarming (on drop) frees the entry. A sweeper task per
//! `serve` call refreshes the clock and wakes the requests whose deadline passed, up to one
//! tick late ([`tick`]). The clock only lags: a deadline is never seen early.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Longest pause between two sweeps (how late a deadline may fire at most).
const MAX_TICK: Duration = Duration::from_millis(250);
/// Shortest pause between two sweeps.
const MIN_TICK: Duration = Duration::from_millis(5);

/// The clock's zero.
static BASE: OnceLock<Instant> = OnceLock::new();
/// Milliseconds since [`BASE`], as of the last refresh (only grows).
static NOW_MS: AtomicU64 = AtomicU64::new(0);
/// Every armed deadline of the process.
static TABLE: Mutex<Table> = Mutex::new(Table {
    entries: Vec::new(),
    free: Vec::new(),
});

#[derive(Debug)]
struct Table {
    entries: Vec<Option<Entry>>,
    /// Indexes of `None` entries.
    free: Vec<usize>,
}

#[derive(Debug)]
struct Entry {
    at_ms: u64,
    waker: Waker,
    /// Woken by a sweep already (once is enough).
    woken: bool,
}

fn table() -> MutexGuard<'static, Table> {
    TABLE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads the clock into [`NOW_MS`] and returns it.
pub(crate) fn refresh() -> u64 {
    let base = BASE.get_or_init(Instant::now);
    let d = base.elapsed();
    let ms = d
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()));
    NOW_MS.fetch_max(ms, Relaxed).max(ms)
}

/// The pause between two sweeps for `timeout`: an eighth of it, within 5..250 ms.
pub(crate) fn tick(timeout: NonZeroU32) -> Duration {
    (Duration::from_millis(u64::from(timeout.get())) / 8).clamp(MIN_TICK, MAX_TICK)
}

/// Sweeps every [`tick`] of `timeout`: refreshes the clock and wakes the requests whose
/// deadline passed. Run it in a task for as long as requests with that timeout run.
pub(crate) async fn sweep(timeout: NonZeroU32) {
    let mut every = tokio::time::interval(tick(timeout));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = refresh();
        for e in table().entries.iter_mut().flatten() {
            if !e.woken && e.at_ms <= now {
                e.woken = true;
                e.waker.wake_by_ref();
            }
        }
    }
}

/// One armed deadline; dropping it disarms it.
#[derive(Debug)]
pub(crate) struct Armed {
    key: usize,
    at_ms: u64,
}

impl Armed {
    /// A deadline `timeout` from now; `waker` is woken once it passed.
    pub(crate) fn new(timeout: NonZeroU32, waker: &Waker) -> Self {
        // The clock counts whole ms (rounded down): one more, so it never fires early.
        let at_ms = refresh().saturating_add(u64::from(timeout.get()) + 1);
        let entry = Entry {
            at_ms,
            waker: waker.clone(),
            woken: false,
        };
        let mut t = table();
        let key = match t.free.pop() {
            Some(key) => key,
            None => {
                t.entries.push(None);
                t.entries.len() - 1
            }
        };
        if let Some(slot) = t.entries.get_mut(key) {
            *slot = Some(entry);
        }
        Self { key, at_ms }
    }

    /// Ready once the deadline passed (as the coarse clock tells); else keeps `cx`'s waker.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if NOW_MS.load(Relaxed) >= self.at_ms {
            return Poll::Ready(());
        }
        if let Some(Some(e)) = table().entries.get_mut(self.key) {
            if !e.waker.will_wake(cx.waker()) {
                e.waker = cx.waker().clone();
            }
            e.woken = false;
        }
        Poll::Pending
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        let mut t = table();
        if let Some(slot) = t.entries.get_mut(self.key) {
            if slot.take().is_some() {
                t.free.push(self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_an_eighth_of_the_timeout_within_bounds() {
        let t = |ms| tick(NonZeroU32::new(ms).expect("nonzero"));
        assert_eq!(t(1), MIN_TICK);
        assert_eq!(t(800), Duration::from_millis(100));
        assert_eq!(t(2000), MAX_TICK);
    }

    #[test]
    fn a_dropped_deadline_frees_its_entry_for_the_next() {
        let ms = NonZeroU32::new(60_000).expect("nonzero");
        let a = Armed::new(ms, Waker::noop());
        let b = Armed::new(ms, Waker::noop());
        assert_ne!(a.key, b.key);
        let freed = a.key;
        drop(a);
        let c = Armed::new(ms, Waker::noop());
        // Other tests may arm meanwhile: the freed entry is reused unless one took it.
        assert!(c.key == freed || table().entries[freed].is_some());
        assert!(table().entries[b.key].is_some());
        drop((b, c));
    }
}
