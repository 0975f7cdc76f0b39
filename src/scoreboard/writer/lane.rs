//! Writer lanes: which copy of a slot's counters the calling thread writes. The first thread
//! of a worker that writes the slot owns [`LANE_OWN`] and writes it with plain loads and
//! stores; every other thread shares [`LANE_SHARED`] with read-modify-writes.

use std::sync::atomic::{AtomicU64, Ordering::*};

use crate::scoreboard::raw::layout::{LastRequest, Slot, SlotCounters, LANE_OWN, LANE_SHARED};
use crate::scoreboard::seqlock::{try_write, write_owned};

/// Next thread number of this process (tokens are `pid << 32 | number`, never 0).
static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's token once assigned (0 = not yet). A `const` `Cell` of a plain integer:
    /// reading it is one load, with no lazy-initialisation or destructor state to check.
    static THREAD_TOKEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The calling thread's token (never 0).
#[inline]
pub(super) fn thread_token() -> u64 {
    THREAD_TOKEN.with(|t| match t.get() {
        0 => {
            let token = (u64::from(std::process::id()) << 32)
                | (NEXT_THREAD.fetch_add(1, Relaxed) & 0xffff_ffff).max(1);
            t.set(token);
            token
        }
        token => token,
    })
}

/// The counters lane the calling thread writes, and whether it writes it alone.
#[derive(Clone, Copy)]
pub(super) struct Lane<'a> {
    pub(super) counters: &'a SlotCounters,
    index: usize,
    exclusive: bool,
}

impl<'a> Lane<'a> {
    /// The lane of the calling thread in `slot`: the owner's lane if this thread owns it
    /// (or claims it now), the shared one otherwise.
    #[inline]
    pub(super) fn of(slot: &'a Slot) -> Self {
        let owner = &slot.counters[LANE_OWN].owner;
        let me = thread_token();
        let current = owner.load(Relaxed);
        let exclusive = me != 0
            && (current == me
                || (current == 0 && owner.compare_exchange(0, me, Relaxed, Relaxed).is_ok()));
        let index = if exclusive { LANE_OWN } else { LANE_SHARED };
        Self {
            counters: &slot.counters[index],
            index,
            exclusive,
        }
    }

    /// Which lane this is (`LANE_OWN` or `LANE_SHARED`).
    #[inline]
    pub(super) fn index(self) -> usize {
        self.index
    }

    /// Adds `n` (wrapping: `u64::MAX` subtracts one) to a counter of this lane.
    #[inline]
    pub(super) fn add(self, counter: &AtomicU64, n: u64) {
        if self.exclusive {
            counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
        } else {
            counter.fetch_add(n, Relaxed);
        }
    }

    /// Writes the lane's last-request record under its seqlock.
    #[inline]
    pub(super) fn write_last(self, slot: &Slot, f: impl FnOnce(&LastRequest)) {
        let last = &slot.last[self.index];
        if self.exclusive {
            write_owned(&last.seq, || f(last));
        } else {
            try_write(&last.seq, || f(last));
        }
    }
}
